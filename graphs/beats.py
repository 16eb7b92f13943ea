"""Beat tracking inside the graph: librosa 0.11's `beat_track`, and the beat mask.

Upstream VampNet's app can keep the audio just after every beat (its "beat mask"); it tracks the
beats with a separate network (WaveBeat). This model uses librosa's tracker in its place,

    beats = librosa.beat.beat_track(y=audio, sr=44100, hop_length=768, units="frames")

on the preprocessed mono signal, written in ONNX ops (docs/beats.md describes the algorithm and
where float32 can differ from librosa's float64):

    onset envelope   graphs/onsets.py's band flux, aggregated by the MEDIAN over the 128 mel bands
    tempo            autocorrelation tempogram: 8 s Hann windows of the envelope (linear-ramp padded),
                     autocorrelation by a DFT as MatMuls, each window normalised by its maximum;
                     mean over time; argmax of log(1 + 1e6·tg) + log-normal prior (120 BPM, 1 octave),
                     lags faster than 320 BPM excluded. The lag P is the beat period in frames.
    local score      envelope / std, smoothed by a Gaussian of std P/32
    DP               cumscore[i] = score[i] + max over d in [round(P/2), 2P] of
                     cumscore[i − d] − 100·(ln d − ln P)²  (first max = smallest d), backlinks;
                     cumscore is a double-float (hi + lo), as librosa sums in float64
    last beat        the last local maximum of cumscore at or above half their median
    backtrack        follow the backlinks from the last beat (pointer doubling, as onsets' `wait` rule)
    trim             drop the beats before the first / after the last frame whose local score is above
                     half the RMS of the beats' smoothed local scores

Frames as librosa counts them: a (B, S) signal has F = 1 + S // hop frames; VampNet's audio is a
multiple of the hop long, so F = T + 1 for T codec frames.

The DP is sequential, but frame i only reads cumscore up to i − round(P/2), so it runs as a Loop
over blocks of round(P/2) frames (the smallest over the batch), each block vectorised:
F / round(P/2) iterations, about 41 for 10 s and 2 500 for 10 minutes at 120 BPM.

Batch rows are independent. A row with no onset energy (silence, too short, or a non-finite
envelope) has no beats, as librosa returns none (it raises on non-finite audio). Build-time
constants come from the codec's sample rate and hop: `make_beat_tracker(sample_rate, hop)`.
"""
from dataclasses import dataclass

import numpy as np
import onnxscript
from onnxscript import BOOL, FLOAT, INT64

from vampnet_onnx.graphs.masks import clamp_real, two_product
from vampnet_onnx.graphs.onsets import HOP, SAMPLE_RATE, _tensor, hann_window, last_true, make_onset_detector
from vampnet_onnx.graphs.onsets import reach_24, take_rows
from vampnet_onnx.graphs.opsets import op, vampnet
from vampnet_onnx.interface import MAX_BEAT_MS

AC_SIZE_S = 8.0  # tempogram window (librosa tempo's ac_size)
START_BPM, STD_BPM = 120.0, 1.0  # log-normal tempo prior: mean and std in octaves
MAX_TEMPO = 320.0  # BPM; faster lags are excluded
TIGHTNESS = 100.0
# Sentinels, finite (OpenVINO's CPU plugin turned the DP's −inf into NaN): no candidate in the DP,
# and "not a local maximum" when sorting them (1e38, so that two of them still add up finitely)
NONE, ABOVE = -3.0e38, 1.0e38
TINY32 = float(np.finfo(np.float32).tiny)  # librosa util.tiny of a float32 array


def tempo_lags(sample_rate: float, hop: int) -> tuple[int, int]:
    """(window length W of the tempogram, first lag allowed by MAX_TEMPO), as librosa computes them."""
    win = int(int(AC_SIZE_S * sample_rate) // hop)  # time_to_frames(8.0)
    bpms = np.zeros(win)
    bpms[0] = np.inf
    bpms[1:] = 60.0 * sample_rate / (hop * np.arange(1.0, win))
    return win, int(np.argmax(bpms < MAX_TEMPO))


def log_prior(sample_rate: float, hop: int) -> np.ndarray:
    """librosa tempo's prior over lags 0..W−1 (float64; −inf below the first allowed lag)."""
    win, first = tempo_lags(sample_rate, hop)
    lags = np.arange(win, dtype=np.float64)
    with np.errstate(divide="ignore"):
        bpms = 60.0 * sample_rate / (hop * lags)
        prior = -0.5 * ((np.log2(bpms) - np.log2(START_BPM)) / STD_BPM) ** 2
    prior[:first] = -np.inf
    return prior


def split_logs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """ln(d) for d in [0, n) as float32 pairs hi + lo (ln 0 stored as 0: never used)."""
    exact = np.log(np.maximum(np.arange(n, dtype=np.float64), 1.0))
    hi = exact.astype(np.float32)
    lo = (exact - hi.astype(np.float64)).astype(np.float32)
    return hi, lo


@onnxscript.script(vampnet, default_opset=op)
def band_median(flux: FLOAT["B", "G", "M"]) -> FLOAT["B", "G"]:
    """np.median over the last axis: the mean of the two middle values of the sorted bands."""
    n = op.Shape(flux, start=2, end=3)
    ordered, _ = op.TopK(flux, n, axis=2, largest=0)
    low = op.Gather(ordered, op.Squeeze((n - 1) / 2), axis=2)
    high = op.Gather(ordered, op.Squeeze(n / 2), axis=2)
    return (low + high) * op.CastLike(0.5, low)


@onnxscript.script(vampnet, default_opset=op)
def row_has_onsets(envelope: FLOAT["B", "F"]) -> BOOL["B", 1]:
    """librosa's `onset_envelope.any()`, and the envelope finite (librosa raises otherwise)."""
    finite = op.Not(op.Or(op.IsNaN(envelope), op.IsInf(envelope)))
    all_finite = op.ReduceMin(op.Cast(finite, to=INT64.dtype), [1], keepdims=1) > 0
    some = op.ReduceMax(op.Cast(envelope != op.CastLike(0.0, envelope), to=INT64.dtype), [1], keepdims=1) > 0
    return op.And(all_finite, some)


@onnxscript.script(vampnet, default_opset=op)
def local_score(envelope: FLOAT["B", "F"], period: INT64["B"]) -> FLOAT["B", "F"]:
    """librosa's local score: envelope / (std (ddof 1) + tiny), convolved ('same', zero padded) with
    exp(−½ (32·o/P)²), o in [−P, P]. Offsets past P/2 have weights below 1e−55, 0 in float32:
    the sum runs over |o| <= ceil(max P / 2)."""
    n = op.Shape(envelope, start=1, end=2)
    F = op.Squeeze(n)
    mean = op.ReduceMean(envelope, [1], keepdims=1)
    centred = envelope - mean
    dof = op.Cast(op.Max(n - 1, 1), to=FLOAT.dtype)
    std = op.Sqrt(op.ReduceSum(centred * centred, [1], keepdims=1) / dof)
    x = envelope / (std + op.CastLike(TINY32, std))
    reach = (op.ReduceMax(period, keepdims=0) + 1) / 2
    o = op.Range(-reach, reach + 1, 1)  # (R,)
    z = op.Cast(op.Unsqueeze(o, [0]) * 32, to=FLOAT.dtype) / op.Cast(op.Unsqueeze(period, [1]), to=FLOAT.dtype)
    weight = op.Exp(z * z * op.CastLike(-0.5, z))  # (B, R)
    index = op.Unsqueeze(op.Range(0, F, 1), [1]) + op.Unsqueeze(o, [0])  # (F, R)
    inside = op.And(index >= 0, index < F)
    window = op.Gather(x, op.Min(op.Max(index, 0), F - 1), axis=1)  # (B, F, R)
    window = op.Where(inside, window, op.CastLike(0.0, x))
    return op.ReduceSum(window * op.Unsqueeze(weight, [1]), [2], keepdims=0)


@onnxscript.script(vampnet, default_opset=op)
def two_sum(a: FLOAT[...], b: FLOAT[...]):
    """(s, e) with s = fl(a + b) and s + e = a + b exactly (Knuth; additions only)."""
    s = a + b
    b_part = s - a
    return s, (a - (s - b_part)) + (b - b_part)


@onnxscript.script(vampnet, default_opset=op)
def renormalize(hi: FLOAT[...], lo: FLOAT[...]):
    """A double-float hi + lo with |lo| <= ulp(hi)/2, so pairs compare lexicographically."""
    s = hi + lo
    return s, lo - (s - hi)


@onnxscript.script(vampnet, default_opset=op)
def is_greater(a_hi: FLOAT[...], a_lo: FLOAT[...], b_hi: FLOAT[...], b_lo: FLOAT[...]) -> BOOL[...]:
    """a > b for normalised double-floats."""
    return op.Or(a_hi > b_hi, op.And(a_hi == b_hi, a_lo > b_lo))


@onnxscript.script(vampnet, default_opset=op)
def tempo_penalty(d: INT64["D"], period: INT64["B"], log_hi: FLOAT["L"], log_lo: FLOAT["L"]):
    """100·(ln d − ln P)² as a double-float (B, D). ln d − ln P = (hi_d − hi_P) + (lo_d − lo_P) with
    hi_d − hi_P exact (Sterbenz: the logs are within a factor 2 for P >= 6 and d in [P/2, 2P]);
    its square by Dekker's product, the cross term 2·r_hi·r_lo in float32 (it is ~1e−8 of the square)."""
    p = op.Unsqueeze(period, [1])  # (B, 1)
    r_hi = op.Gather(log_hi, d) - op.Gather(log_hi, p)  # (B, D)
    r_lo = op.Gather(log_lo, d) - op.Gather(log_lo, p)
    sq, sq_err = two_product(r_hi, r_hi)
    sq_lo = sq_err + r_hi * r_lo * op.Constant(value_float=2.0)
    tightness = op.CastLike(TIGHTNESS, sq)
    pen, pen_err = two_product(sq, tightness)
    pen_hi, pen_lo = renormalize(pen, pen_err + sq_lo * tightness)
    return pen_hi, pen_lo


@onnxscript.script(vampnet, default_opset=op)
def beat_dp(
    score: FLOAT["B", "F"], period: INT64["B"], log_hi: FLOAT["L"], log_lo: FLOAT["L"]
) -> (FLOAT["B", "F"], FLOAT["B", "F"], INT64["B", "F"]):
    """librosa's `__beat_track_dp`: (cumscore as a double-float hi + lo, backlink), backlink −1
    where there is none.

    Frame i's predecessors are i − d for d in [round(P/2), 2P] (round half to even, as numpy),
    scored cumscore[i − d] − 100·(ln d − ln P)²; the first maximum in librosa's scan (descending
    i − d) is the smallest d. librosa adds in float64; cumscore grows along the path, and two
    paths that differ only in the order of two gaps (a, a + 1 versus a + 1, a) carry the same
    penalties and differ by the local scores alone, which can be 1e−11 between beats. A float32
    sum cannot tell those apart; the double-float sum (about 44 bits) does.
    """
    B = op.Shape(score, start=0, end=1)
    n = op.Shape(score, start=1, end=2)
    F = op.Squeeze(n)
    half = op.Cast(op.Round(op.Cast(period, to=FLOAT.dtype) * op.Constant(value_float=0.5)), to=INT64.dtype)
    block = op.ReduceMin(half, keepdims=0)  # frames that never read each other
    d = op.Range(0, 2 * op.ReduceMax(period, keepdims=0) + 1, 1)  # (D,)
    pen_hi, pen_lo = tempo_penalty(d, period, log_hi, log_lo)  # (B, D)
    pen_hi, pen_lo = op.Unsqueeze(pen_hi, [1]), op.Unsqueeze(pen_lo, [1])  # (B, 1, D)
    d_row = op.Unsqueeze(d, [0])
    allowed = op.And(d_row >= op.Unsqueeze(half, [1]), d_row <= 2 * op.Unsqueeze(period, [1]))
    allowed = op.Unsqueeze(allowed, [1])  # (B, 1, D)
    zero = op.CastLike(0.0, score)
    cum_hi = op.Expand(zero, op.Shape(score))
    cum_lo = cum_hi
    backlink = op.Expand(op.Constant(value_int=-1), op.Concat(B, n, axis=0))
    n_blocks = (F + block - 1) / block
    for b in range(n_blocks):
        i = op.Min(b * block + op.Range(0, block, 1), F - 1)  # (block,); the last block repeats F − 1
        loc = op.Unsqueeze(i, [1]) - op.Unsqueeze(d, [0])  # (block, D)
        at_loc = op.Max(loc, 0)
        c_hi, c_err = two_sum(op.Gather(cum_hi, at_loc, axis=1), -pen_hi)  # (B, block, D)
        c_hi, c_lo = renormalize(c_hi, c_err + (op.Gather(cum_lo, at_loc, axis=1) - pen_lo))
        valid = op.And(loc >= 0, allowed)
        c_hi = op.Where(valid, c_hi, op.CastLike(NONE, c_hi))  # no such predecessor
        c_lo = op.Where(valid, c_lo, zero)
        best_hi = op.ReduceMax(c_hi, [2], keepdims=1)
        ties = c_hi == best_hi
        best_lo = op.ReduceMax(op.Where(ties, c_lo, op.CastLike(NONE, c_lo)), [2], keepdims=1)
        winner = op.And(ties, c_lo == best_lo)
        first = op.ReduceMin(op.Where(winner, d, op.ReduceMax(d, keepdims=0) + 1), [2], keepdims=0)  # smallest d
        best_hi = op.Squeeze(best_hi, [2])
        found = best_hi > op.CastLike(NONE, best_hi)
        here = op.Gather(score, i, axis=1)  # (B, block)
        s_hi, s_err = two_sum(here, op.Where(found, best_hi, zero))
        s_hi, s_lo = renormalize(s_hi, s_err + op.Where(found, op.Squeeze(best_lo, [2]), zero))
        at = op.Expand(op.Unsqueeze(i, [0]), op.Concat(B, op.Shape(i), axis=0))  # (B, block)
        cum_hi = op.ScatterElements(cum_hi, at, s_hi, axis=1)
        cum_lo = op.ScatterElements(cum_lo, at, s_lo, axis=1)
        backlink = op.ScatterElements(backlink, at, op.Where(found, at - first, -1), axis=1)
    # no backlink before the first frame whose score reaches 1 % of the row's maximum
    t = op.Unsqueeze(op.Range(0, F, 1), [0])
    strong = score >= op.ReduceMax(score, [1], keepdims=1) * op.Constant(value_float=0.01)
    first_strong = op.ReduceMin(op.Where(strong, t, F), [1], keepdims=1)
    return cum_hi, cum_lo, op.Where(t < first_strong, -1, backlink)


@onnxscript.script(vampnet, default_opset=op)
def last_beat(cum_hi: FLOAT["B", "F"], cum_lo: FLOAT["B", "F"]) -> INT64["B", 1]:
    """librosa's `__last_beat`: the last local maximum (x[t] > x[t − 1], x[t] >= x[t + 1], edges
    repeated) of cumscore that is >= half the median of all local maxima; F − 1 if none.
    Neighbours are compared as double-floats; the median and threshold in float32 (hi)."""
    n = op.Shape(cum_hi, start=1, end=2)
    F = op.Squeeze(n)
    prev_hi = op.Slice(op.Pad(cum_hi, [0, 1, 0, 0]), [0], n, [1])
    prev_lo = op.Slice(op.Pad(cum_lo, [0, 1, 0, 0]), [0], n, [1])
    next_hi = op.Slice(op.Concat(cum_hi, op.Slice(cum_hi, n - 1, n, [1]), axis=1), [1], n + 1, [1])
    next_lo = op.Slice(op.Concat(cum_lo, op.Slice(cum_lo, n - 1, n, [1]), axis=1), [1], n + 1, [1])
    t = op.Unsqueeze(op.Range(0, F, 1), [0])
    rises = op.And(is_greater(cum_hi, cum_lo, prev_hi, prev_lo), t >= 1)
    peak = op.And(rises, op.Not(is_greater(next_hi, next_lo, cum_hi, cum_lo)))
    ordered, _ = op.TopK(op.Where(peak, cum_hi, op.CastLike(ABOVE, cum_hi)), n, axis=1, largest=0)
    count = op.ReduceSum(op.Cast(peak, to=INT64.dtype), [1], keepdims=1)  # (B, 1)
    low = take_rows(ordered, op.Max(count - 1, 0) / 2)  # (take_rows works for any element type)
    high = take_rows(ordered, op.Min(count / 2, F - 1))
    threshold = (low + high) * op.Constant(value_float=0.25)  # half the median
    chosen = op.ReduceMax(op.Where(op.And(peak, cum_hi >= threshold), t, -1), [1], keepdims=1)
    return op.Where(chosen >= 0, chosen, F - 1)


@onnxscript.script(vampnet, default_opset=op)
def backtrack_beats(backlink: INT64["B", "F"], tail: INT64["B", 1]) -> BOOL["B", "F"]:
    """Every frame on the backlink chain from `tail`: node F absorbs the −1 links."""
    n = op.Shape(backlink, start=1, end=2)
    F = op.Squeeze(n)
    jump = op.Concat(op.Where(backlink < 0, F, backlink), op.Slice(op.Mul(backlink, 0), [0], [1], [1]) + F, axis=1)
    nodes = op.Unsqueeze(op.Range(0, F + 1, 1), [0])
    reach = reach_24(jump, op.Cast(nodes == tail, to=INT64.dtype))
    return op.Cast(op.Slice(reach, [0], n, [1]), to=BOOL.dtype)


@onnxscript.script(vampnet, default_opset=op)
def trim_beats(beats: BOOL["B", "F"], score: FLOAT["B", "F"]) -> BOOL["B", "F"]:
    """librosa's `__trim_beats`: the beats' local scores v_0..v_{m−1}, in order, smoothed as
    np.convolve(v, hanning(5))[2 : F + 2], i.e. s_j = ½v_{j−1} + v_j + ½v_{j+1} for j in [0, m + 2)
    (v = 0 past the ends: m + 2 values, the last two ½v_{m−1} and 0); threshold = ½·RMS(s); beats
    before the first and after the last frame whose score is above it are dropped."""
    n = op.Shape(score, start=1, end=2)
    F = op.Squeeze(n)
    t = op.Unsqueeze(op.Range(0, F, 1), [0])
    zero = op.CastLike(0.0, score)
    position, _ = op.TopK(op.Where(beats, t, F), n, axis=1, largest=0)  # beats in order, then F
    v = op.Where(position < F, take_rows(score, op.Min(position, F - 1)), zero)  # (B, F)
    before = op.Slice(op.Pad(v, [0, 1, 0, 0]), [0], n, [1])
    after = op.Slice(op.Pad(v, [0, 0, 0, 1]), [1], n + 1, [1])
    half = op.Constant(value_float=0.5)
    smooth = before * half + v + after * half  # s_j for j < F; F >= m + 2 (beats are >= 6 frames apart)
    count = op.ReduceSum(op.Cast(beats, to=INT64.dtype), [1], keepdims=1) + 2
    threshold = op.Sqrt(op.ReduceSum(smooth * smooth, [1], keepdims=1) / op.Cast(count, to=FLOAT.dtype)) * half
    above = score > threshold
    first = op.ReduceMin(op.Where(above, t, F), [1], keepdims=1)
    last = op.ReduceMax(op.Where(above, t, -1), [1], keepdims=1)
    return op.And(beats, op.And(t >= first, t <= last))


@onnxscript.script(vampnet, default_opset=op)
def ms_to_frames(ms: FLOAT, frame_rate: FLOAT) -> INT64:
    """ceil(ms · frame_rate / 1000) of the exact product, for 0 <= ms <= MAX_BEAT_MS (the app's
    s2t(ms / 1000); rounding ms / 1000 to float32 first would add a frame where the exact value is
    an integer, e.g. 12 800 ms = 735 frames). p + e = ms·frame_rate exactly; n = ceil(p / 1000) is
    within one of the answer, and the sign of (p − 1000·k) + e (1000·k exact, the difference exact
    where it is small) says on which side of 1000·k the product lies."""
    p, e = two_product(ms, frame_rate)
    thousand = op.CastLike(1000.0, p)
    n = op.Ceil(p / thousand)
    n = op.Where((p - thousand * n) + e > op.CastLike(0.0, p), n + op.CastLike(1.0, n), n)
    below = n - op.CastLike(1.0, n)
    n = op.Where((p - thousand * below) + e <= op.CastLike(0.0, p), below, n)
    return op.Cast(n, to=INT64.dtype)


@dataclass(frozen=True)
class BeatTracker:
    sample_rate: float
    hop: int
    beat_envelope: onnxscript.OnnxFunction  # (B, S) -> (B, F) onset strength, median over bands
    tempo_period: onnxscript.OnnxFunction  # (B, F) envelope -> (B,) beat period in frames (the lag)
    beat_track: onnxscript.OnnxFunction  # (B, S) -> (B, F) bool, librosa's beats
    beat_mask: onnxscript.OnnxFunction  # (codes (B, K, T), audio (B, S), ms) -> (B, K, T) int64


def make_beat_tracker(sample_rate: float = SAMPLE_RATE, hop: int = HOP) -> BeatTracker:
    """The graph functions of librosa's beat tracker for one sample rate and hop (constants baked in)."""
    detector = make_onset_detector(sample_rate, hop)
    band_flux, centre_envelope = detector.band_flux, detector.centre_envelope
    win, _ = tempo_lags(sample_rate, hop)
    ramp = win // 2  # the envelope is padded by a linear ramp from 0 on both sides
    n_dft = 2 * win  # >= 2W − 1: the circular autocorrelation equals the linear one
    bins = n_dft // 2 + 1
    window = _tensor("tempo_window", hann_window(win).astype(np.float32))
    m = np.arange(n_dft)
    cos_table = _tensor("tempo_cos", np.cos(2 * np.pi * m / n_dft).astype(np.float32))
    sin_table = _tensor("tempo_sin", np.sin(2 * np.pi * m / n_dft).astype(np.float32))
    # inverse real DFT of the power spectrum: weight 1 for bins 0 and N/2, 2 between, over N
    fold = np.full(bins, 2.0)
    fold[0] = fold[-1] = 1.0
    fold = _tensor("tempo_fold", (fold / n_dft).astype(np.float32))
    prior = _tensor("tempo_prior", log_prior(sample_rate, hop).astype(np.float32))
    log_hi, log_lo = split_logs(2 * win + 1)
    log_hi, log_lo = _tensor("log_hi", log_hi), _tensor("log_lo", log_lo)
    frame_rate = float(np.float32(sample_rate / hop))
    if frame_rate != sample_rate / hop:
        raise ValueError(f"sample rate {sample_rate} / hop {hop} is not exact in float32")

    @onnxscript.script(vampnet, default_opset=op)
    def beat_envelope(audio: FLOAT["B", "S"]) -> FLOAT["B", "F"]:
        """librosa.onset.onset_strength(y, sr, hop_length=hop, aggregate=np.median) per row."""
        return centre_envelope(band_median(band_flux(audio)))

    @onnxscript.script(vampnet, default_opset=op)
    def tempo_period(envelope: FLOAT["B", "F"]) -> INT64["B"]:
        """librosa.feature.tempo's lag: argmax of the prior-weighted mean autocorrelation tempogram."""
        n = op.Shape(envelope, start=1, end=2)
        F = op.Squeeze(n)
        # np.pad(mode="linear_ramp", end_values=0): ramp[j] = j·(edge / W//2), j < W//2, mirrored
        j = op.Cast(op.Range(0, ramp, 1), to=FLOAT.dtype)
        first = op.Slice(envelope, [0], [1], [1])
        last = op.Slice(envelope, n - 1, n, [1])
        step = op.Constant(value_float=float(ramp))
        left = op.Unsqueeze(j, [0]) * (first / step)
        right = op.Unsqueeze(op.Cast(op.Range(ramp - 1, -1, -1), to=FLOAT.dtype), [0]) * (last / step)
        padded = op.Concat(left, envelope, right, axis=1)  # (B, F + 2·(W//2))
        index = op.Unsqueeze(op.Range(0, F, 1), [1]) + op.Unsqueeze(op.Range(0, win, 1), [0])  # (F, W)
        framed = op.Gather(padded, index, axis=1) * op.Constant(value=window)  # (B, F, W)
        # autocorrelation = inverse DFT of |DFT|², N = 2W
        k = op.Range(0, bins, 1)
        basis_index = op.Mod(op.Unsqueeze(op.Range(0, win, 1), [1]) * op.Unsqueeze(k, [0]), n_dft)  # (W, bins)
        re = op.MatMul(framed, op.Gather(op.Constant(value=cos_table), basis_index, axis=0))
        im = op.MatMul(framed, op.Gather(op.Constant(value=sin_table), basis_index, axis=0))
        power = (re * re + im * im) * op.Constant(value=fold)  # (B, F, bins)
        inverse_index = op.Mod(op.Unsqueeze(k, [1]) * op.Unsqueeze(op.Range(0, win, 1), [0]), n_dft)  # (bins, W)
        ac = op.MatMul(power, op.Gather(op.Constant(value=cos_table), inverse_index, axis=0))  # (B, F, W)
        # util.normalize(norm=inf): divide by the max |value| of each window (below tiny: by 1)
        peak = op.ReduceMax(op.Abs(ac), [2], keepdims=1)
        peak = op.Where(peak < op.CastLike(TINY32, peak), op.CastLike(1.0, peak), peak)
        tempogram = op.ReduceMean(ac / peak, [1], keepdims=0)  # (B, W)
        strength = op.Max(tempogram, op.CastLike(0.0, tempogram)) * op.Constant(value_float=1e6)
        weighted = op.Log(strength + op.CastLike(1.0, strength)) + op.Constant(value=prior)
        return op.ArgMax(weighted, axis=1, keepdims=0)

    @onnxscript.script(vampnet, default_opset=op)
    def beat_track(audio: FLOAT["B", "S"]) -> BOOL["B", "F"]:
        """librosa.beat.beat_track(y=row, sr, hop_length=hop, units="frames") per row, (B, F) indicator."""
        envelope = beat_envelope(audio)
        usable = row_has_onsets(envelope)
        envelope = op.Where(usable, envelope, op.CastLike(0.0, envelope))
        period = tempo_period(envelope)
        score = local_score(envelope, period)
        cum_hi, cum_lo, backlink = beat_dp(score, period, op.Constant(value=log_hi), op.Constant(value=log_lo))
        beats = backtrack_beats(backlink, last_beat(cum_hi, cum_lo))
        return op.And(trim_beats(beats, score), usable)

    @onnxscript.script(vampnet, default_opset=op)
    def beat_mask(codes: INT64["B", "K", "T"], audio: FLOAT["B", "S"], ms: FLOAT) -> INT64["B", "K", "T"]:
        """The app's beat mask: 0 (keep) in frames [b, b + ceil(ms/1000 · sample_rate/hop)) after
        every beat b of the row's audio, cropped to T; 1 elsewhere. ms <= 0 (or NaN): all ones,
        and the tracker does not run."""
        width = ms_to_frames(clamp_real(ms, 0.0, MAX_BEAT_MS), op.Constant(value_float=frame_rate))
        if width > 0:
            beats = beat_track(audio)
            T = op.Shape(codes, start=2, end=3)
            last = op.Slice(last_true(beats), [0], T, [1])  # (B, T): the last beat at or before t
            t = op.Unsqueeze(op.Range(0, op.Squeeze(T), 1), [0])
            keep = op.And(last >= 0, t - last < width)
            mask = op.Expand(op.Unsqueeze(op.Cast(op.Not(keep), to=INT64.dtype), [1]), op.Shape(codes))
        else:
            mask = op.Expand(op.CastLike(1, codes), op.Shape(codes))
        return op.Reshape(mask, op.Shape(codes))  # a no-op that gives type inference the rank

    return BeatTracker(
        sample_rate=sample_rate,
        hop=hop,
        beat_envelope=beat_envelope,
        tempo_period=tempo_period,
        beat_track=beat_track,
        beat_mask=beat_mask,
    )


TRACKER = make_beat_tracker(SAMPLE_RATE, HOP)
beat_envelope = TRACKER.beat_envelope
tempo_period = TRACKER.tempo_period
beat_track = TRACKER.beat_track
beat_mask = TRACKER.beat_mask
