"""Onset detection inside the graph: librosa 0.11's `onset_detect(backtrack=True)`, and the onset mask.

Upstream VampNet's onset prompt (`vampnet/mask.py: onset_mask`) runs

    onsets = librosa.onset.onset_detect(y=audio, sr=44100, hop_length=768, backtrack=True)
    mask = ones_like(codes); for o in onsets: mask[:, :, o - width : o + width] = 0

on the preprocessed mono signal. This module writes that detector in ONNX ops (docs/onsets.md
describes the algorithm, the constants and how its float32 arithmetic differs from librosa's):

    STFT (n_fft 2048, periodic Hann, centred with zero padding)     frames · window, then MatMul
    power mel spectrogram (128 bands, Slaney scale and norm)         MatMul with a constant filterbank
    power_to_db (ref 1, amin 1e-10, top_db 80 below the row's max)
    spectral flux: mean over bands of max(0, S[t] − S[t−1]), shifted right by lag + n_fft//(2·hop)
    normalise to [0, 1] (x − min) / (max + tiny)
    peak_pick: x[n] = max(x[n−pre_max : n+post_max]) and x[n] ≥ mean(x[n−pre_avg : n+post_avg]) + δ,
               greedily keeping peaks more than `wait` frames apart
    backtrack: each peak moves to the last local minimum of the normalised envelope at or before it

Frames: a (B, S) signal has F = 1 + S // hop frames (librosa's count for centred frames); an onset
is a frame index in [0, F). VampNet's audio is a multiple of the hop long, so F = T + 1.

Build-time constants: the sample rate and hop (librosa's peak-picking windows are derived from
them) are Python values captured by `make_onset_detector(sample_rate, hop)`, which returns the graph
functions for that codec. `DETECTOR` is the instance for VampNet's codec (44.1 kHz, hop 768); the
module-level names (`onset_envelope`, `onset_detect`, `onset_mask`, ...) are its functions. One model
holds one instance: the function names are the same in every instance.

STFT as MatMul, not the ONNX STFT/DFT ops: a framed signal times a constant DFT basis uses only
Gather, Mul and MatMul, which every runtime we target supports alike (the ONNX reference
evaluator, onnxruntime CPU and web, OpenVINO), whereas STFT/DFT support and their argument
conventions vary between runtimes and opsets. The basis is folded by the symmetry of the periodic
Hann window (x[n] ± x[N−n]), which halves the multiplications: two MatMuls of (F, N/2 ± 1) by
(N/2 ± 1, N/2 + 1). The basis itself is gathered in the graph from a table of N cosines (8 KB)
with index (n·k mod N), so the model stores no 8 MB matrix; onnxruntime folds it once at load.

No Loop and no If: the sequential `wait` rule is computed in closed form (see `wait_rule`), and
`onset_mask` with width 0 runs the detector on an empty signal (one silent frame: no onsets), so
the cost of a disabled onset prompt is nothing. Everything is float32 and int64 (indices < 2^31 for
any signal shorter than 2^31 samples).

Batch rows are independent: row b of the mask comes from row b of the audio (upstream detects on
row 0 only and applies that to every row; identical for B = 1). A row whose envelope is not finite
(NaN or Inf in the audio) has no onsets (librosa raises on such audio). When librosa's peak
picking finds nothing in a non-zero envelope, upstream crashes in `onset_backtrack` on the empty
list; here that row simply has no onsets.
"""
import math
from dataclasses import dataclass

import numpy as np
import onnxscript
from onnx import numpy_helper
from onnxscript import BOOL, FLOAT, INT64

from vampnet_onnx.graphs.opsets import op, vampnet
from vampnet_onnx.interface import MAX_ONSET_WIDTH

SAMPLE_RATE, HOP = 44100, 768  # VampNet's codec (the model builds its own detector from its config)
N_FFT = 2048
N_MELS = 128
AMIN = 1e-10  # power_to_db floor
TOP_DB = 80.0  # power_to_db dynamic range below the row's maximum
LAG = 1  # spectral flux lag (librosa onset_strength default)
DELTA = 0.07  # peak_pick threshold above the local mean (librosa onset_detect default)
TINY32 = float(np.finfo(np.float32).tiny)  # librosa util.tiny of a float32 envelope
DB_PER_LN = 10.0 / math.log(10.0)  # 10·log10(x) = DB_PER_LN · ln(x)
DB_FLOOR = float(np.float32(10.0) * np.log10(np.float32(AMIN)))  # librosa's float32 10·log10(amin)
WIDTH_MAX = MAX_ONSET_WIDTH  # the interface table's clamp (any larger width keeps the whole signal anyway)
# Closed-form `wait` rule: 2^REACH_DOUBLINGS must exceed the number of peaks one greedy run can
# keep, which is below the number of frames: 2^24 frames > 2^31 samples for any hop >= 128.
REACH_DOUBLINGS = 24


# --------------------------------------------------------------------------------------------
# Build-time constants (numpy, float64, stored as float32 like librosa's own float32 arrays)
# --------------------------------------------------------------------------------------------


def hann_window(n: int) -> np.ndarray:
    """Periodic Hann window, float64, computed as scipy.signal.get_window('hann', n, fftbins=True)."""
    fac = np.linspace(-np.pi, np.pi, n + 1)[:n]
    return 0.5 + 0.5 * np.cos(fac)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale (librosa hz_to_mel, htk=False): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    mels = f / f_sp
    log_t = f >= min_log_hz
    mels = np.where(log_t, min_log_mel + np.log(np.maximum(f, min_log_hz) / min_log_hz) / logstep, mels)
    return mels


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    freqs = f_sp * m
    log_t = m >= min_log_mel
    return np.where(log_t, min_log_hz * np.exp(logstep * (m - min_log_mel)), freqs)


def mel_filterbank(sample_rate: float, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels, fmin=0, fmax=sr/2, htk=False, norm='slaney'), float32.

    (n_mels, 1 + n_fft // 2). Same arithmetic as librosa: triangles in float64 stored into float32,
    then the Slaney area normalisation applied to the float32 weights and rounded again.
    """
    fmax = float(sample_rate) / 2
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, np.newaxis]
    return weights


@dataclass(frozen=True)
class PeakPickParams:
    """librosa onset_detect's peak_pick defaults for (sr, hop), made integers as peak_pick does (ceil)."""

    pre_max: int
    post_max: int
    pre_avg: int
    post_avg: int
    wait: int
    delta: float

    @classmethod
    def for_rate(cls, sample_rate: float, hop: int) -> "PeakPickParams":
        # the exact Python float expressions of librosa.onset.onset_detect
        return cls(
            pre_max=math.ceil(0.03 * sample_rate // hop),  # 30 ms
            post_max=math.ceil(0.00 * sample_rate // hop + 1),  # 0 ms
            pre_avg=math.ceil(0.10 * sample_rate // hop),  # 100 ms
            post_avg=math.ceil(0.10 * sample_rate // hop + 1),  # 100 ms
            wait=math.ceil(0.03 * sample_rate // hop),  # 30 ms
            delta=DELTA,
        )


def _tensor(name: str, array: np.ndarray):
    return numpy_helper.from_array(np.ascontiguousarray(array), name)


# --------------------------------------------------------------------------------------------
# Rate-independent helpers
# --------------------------------------------------------------------------------------------


@onnxscript.script(vampnet, default_opset=op)
def take_rows(data: INT64["B", "N"], index: INT64["B", "M"]) -> INT64["B", "M"]:
    """data[b, index[b, m]]: GatherElements on axis 1, written as a Gather on the flattened data
    (the reference evaluator's GatherElements fails on axes longer than 64)."""
    n = op.Shape(data, start=1, end=2)
    rows = op.Range(0, op.Squeeze(op.Shape(data, start=0, end=1)), 1)
    offsets = op.Unsqueeze(rows, [1]) * n  # (B, 1)
    return op.Gather(op.Reshape(data, [-1]), index + offsets, axis=0)


@onnxscript.script(vampnet, default_opset=op)
def last_true(flags: BOOL["B", "F"]) -> INT64["B", "F"]:
    """For each t, the largest s <= t with flags[s] (−1 if none): a cumulative max without a Loop.

    rank[t] = number of true flags in [0, t]; the s-th true flag is scattered to slot rank (each
    rank has one true flag, so the scatter is exact), then slot rank[t] is read back.
    """
    flag_i = op.Cast(flags, to=INT64.dtype)
    rank = op.CumSum(flag_i, 1)  # (B, F), 0 before the first true flag
    n = op.Shape(flags, start=1, end=2)
    t = op.Unsqueeze(op.Range(0, op.Squeeze(n), 1), [0])  # (1, F)
    slots = op.Expand(op.CastLike(-1, rank), op.Concat(op.Shape(flags, start=0, end=1), n + 1, axis=0))
    position = op.ScatterElements(
        slots, op.Where(flags, rank, 0), op.Where(flags, op.Expand(t, op.Shape(flags)), -1), axis=1, reduction="max"
    )  # (B, F + 1): position[r] = the r-th true flag (r >= 1); position[0] = −1
    return take_rows(position, rank)


@onnxscript.script(vampnet, default_opset=op)
def reach_step(jump: INT64["B", "N"], reach: INT64["B", "N"]) -> (INT64["B", "N"], INT64["B", "N"]):
    """One pointer-doubling step: reach ∪= jump(reach), then jump = jump ∘ jump."""
    hit = op.ScatterElements(op.Mul(reach, op.CastLike(0, reach)), jump, reach, axis=1, reduction="max")
    return take_rows(jump, jump), op.Max(reach, hit)


@onnxscript.script(vampnet, default_opset=op)
def reach_2(jump: INT64["B", "N"], reach: INT64["B", "N"]) -> (INT64["B", "N"], INT64["B", "N"]):
    jump, reach = reach_step(jump, reach)
    jump, reach = reach_step(jump, reach)
    return jump, reach


@onnxscript.script(vampnet, default_opset=op)
def reach_4(jump: INT64["B", "N"], reach: INT64["B", "N"]) -> (INT64["B", "N"], INT64["B", "N"]):
    jump, reach = reach_2(jump, reach)
    jump, reach = reach_2(jump, reach)
    return jump, reach


@onnxscript.script(vampnet, default_opset=op)
def reach_8(jump: INT64["B", "N"], reach: INT64["B", "N"]) -> (INT64["B", "N"], INT64["B", "N"]):
    jump, reach = reach_4(jump, reach)
    jump, reach = reach_4(jump, reach)
    return jump, reach


@onnxscript.script(vampnet, default_opset=op)
def reach_24(jump: INT64["B", "N"], reach: INT64["B", "N"]) -> INT64["B", "N"]:
    """Every node reachable from `reach` in fewer than 2^24 jumps (REACH_DOUBLINGS)."""
    jump, reach = reach_8(jump, reach)
    jump, reach = reach_8(jump, reach)
    jump, reach = reach_8(jump, reach)
    return reach


@onnxscript.script(vampnet, default_opset=op)
def wait_rule(candidates: BOOL["B", "F"], wait: INT64) -> BOOL["B", "F"]:
    """librosa peak_pick's greedy rule: scan left to right, keep a candidate if it lies more than
    `wait` frames after the last kept one. Closed form, no Loop:

    A "run" is a maximal chain of candidates each at most `wait` after the previous; a run's first
    candidate is always kept, and inside a run the kept ones are first, next(first), next(next(first)),
    ... where next(t) = the first candidate at or after t + wait + 1 (which, past the run's end, is
    the next run's first candidate). So the kept set is everything reachable from the runs' first
    candidates by `next`, found by pointer doubling (reach_24) over frames [0, F], slot F being an
    absorbing "no candidate" node.
    """
    flag_i = op.Cast(candidates, to=INT64.dtype)
    B = op.Shape(candidates, start=0, end=1)
    n = op.Shape(candidates, start=1, end=2)  # [F]
    F = op.Squeeze(n)
    t = op.Unsqueeze(op.Range(0, F, 1), [0])  # (1, F)
    before = op.CumSum(flag_i, 1, exclusive=1)  # candidates in [0, t)
    total = op.ReduceSum(flag_i, [1], keepdims=1)
    before = op.Concat(before, total, axis=1)  # (B, F + 1): candidates in [0, p) for p in [0, F]
    # position[r] = the r-th candidate (0-based), F past the last one
    slots = op.Expand(op.Unsqueeze(F, [0, 1]), op.Concat(B, n + 1, axis=0))
    rank = op.Slice(before, [0], n, [1])
    position = op.ScatterElements(
        slots,
        op.Where(candidates, rank, F),
        op.Where(candidates, op.Expand(t, op.Shape(candidates)), F),
        axis=1,
        reduction="min",
    )
    at_or_after = take_rows(position, before)  # (B, F + 1): first candidate >= p
    p = op.Range(0, F + 1, 1)
    jump = op.Gather(at_or_after, op.Min(p + wait + 1, F), axis=1)  # next(p); next(F) = F
    # a run starts at a candidate with no candidate in [t − wait, t)
    lookback = op.Gather(before, op.Max(op.Range(0, F, 1) - wait, 0), axis=1)
    starts = op.And(candidates, op.Equal(rank, lookback))
    reach = op.Pad(op.Cast(starts, to=INT64.dtype), [0, 0, 0, 1])  # slot F unreached at first
    reach = reach_24(jump, reach)
    return op.Cast(op.Slice(reach, [0], n, [1]), to=BOOL.dtype)


@onnxscript.script(vampnet, default_opset=op)
def backtrack(peaks: BOOL["B", "F"], energy: FLOAT["B", "F"]) -> BOOL["B", "F"]:
    """librosa onset_backtrack: each peak moves to the last local minimum of `energy` at or before it.

    Minima: frames 1 <= t <= F − 2 with energy[t] <= energy[t − 1] and energy[t] < energy[t + 1],
    and frame 0. Result: a (B, F) indicator of the backtracked frames (several peaks may share one).
    """
    n = op.Shape(energy, start=1, end=2)
    prev = op.Pad(energy, [0, 1, 0, 0])  # prev[t] = energy[t − 1] (the pad is never used: t = 0 forced)
    prev = op.Slice(prev, [0], n, [1])
    nxt = op.Slice(op.Pad(energy, [0, 0, 0, 1]), [1], n + 1, [1])  # energy[t + 1]
    interior = op.LessOrEqual(energy, prev)
    interior = op.And(interior, op.Less(energy, nxt))
    t = op.Unsqueeze(op.Range(0, op.Squeeze(n), 1), [0])
    inside = op.And(t >= 1, t <= op.Squeeze(n) - 2)
    minima = op.Or(op.And(interior, inside), t == 0)
    target = last_true(minima)  # >= 0: frame 0 is always a minimum
    zeros = op.Mul(op.Cast(peaks, to=INT64.dtype), op.Constant(value_int=0))
    hit = op.ScatterElements(zeros, target, op.Cast(peaks, to=INT64.dtype), axis=1, reduction="max")
    return op.Cast(hit, to=BOOL.dtype)


@onnxscript.script(vampnet, default_opset=op)
def normalize_envelope(envelope: FLOAT["B", "F"]) -> FLOAT["B", "F"]:
    """librosa onset_detect's normalisation per row: (x − min) / (max + tiny); a non-finite row → 0.

    A constant row (silence) gives 0 / tiny = 0, never NaN.
    """
    finite = op.Not(op.Or(op.IsNaN(envelope), op.IsInf(envelope)))
    row_ok = op.Cast(op.ReduceMin(op.Cast(finite, to=INT64.dtype), [1], keepdims=1), to=BOOL.dtype)
    x = op.Where(row_ok, envelope, op.CastLike(0.0, envelope))
    x = x - op.ReduceMin(x, [1], keepdims=1)
    return x / (op.ReduceMax(x, [1], keepdims=1) + op.CastLike(TINY32, x))


@onnxscript.script(vampnet, default_opset=op)
def slice_mask(onsets: BOOL["B", "F"], n_frames: INT64, width: INT64) -> INT64["B", "T"]:
    """Upstream's `mask[..., o − width : o + width] = 0` for every onset o, with Python slice rules on
    an axis of T = n_frames: a negative start counts from the end (s + T, then clipped at 0), the stop
    is clipped at T, and start >= stop is empty. 1 = generate, 0 = keep. width >= 0.

    Every onset's range is added to a difference array (+1 at start, −1 at stop), whose running
    sum is the number of ranges covering a frame.
    """
    T = n_frames
    F = op.Squeeze(op.Shape(onsets, start=1, end=2))
    o = op.Unsqueeze(op.Range(0, F, 1), [0])  # (1, F)
    start = o - width
    start = op.Where(start < 0, start + T, start)
    start = op.Min(op.Max(start, 0), T)
    stop = op.Min(o + width, T)
    active = op.And(onsets, start < stop)
    one = op.Cast(active, to=INT64.dtype)
    shape = op.Shape(onsets)
    diff_shape = op.Concat(op.Shape(onsets, start=0, end=1), op.Reshape(T + 1, [1]), axis=0)  # (B, T + 1)
    diff = op.Expand(op.Constant(value_int=0), diff_shape)
    diff = op.ScatterElements(diff, op.Expand(start, shape), one, axis=1, reduction="add")
    diff = op.ScatterElements(diff, op.Expand(stop, shape), -one, axis=1, reduction="add")
    covered = op.Slice(op.CumSum(diff, 1), [0], op.Reshape(T, [1]), [1])  # (B, T)
    return op.Cast(covered <= 0, to=INT64.dtype)


# --------------------------------------------------------------------------------------------
# The detector for one (sample rate, hop)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OnsetDetector:
    sample_rate: float
    hop: int
    peak_pick_params: PeakPickParams
    frames: onnxscript.OnnxFunction  # (B, S) audio -> (B, F, N_FFT) windowed frames
    band_flux: onnxscript.OnnxFunction  # (B, S) -> (B, F − lag, n_mels) flux per mel band
    centre_envelope: onnxscript.OnnxFunction  # (B, F − lag) aggregated flux -> (B, F) envelope
    onset_envelope: onnxscript.OnnxFunction  # (B, S) -> (B, F) librosa onset_strength
    peak_candidates: onnxscript.OnnxFunction  # (B, F) normalised envelope -> (B, F) bool, before `wait`
    peak_pick: onnxscript.OnnxFunction  # (B, F) normalised envelope -> (B, F) bool
    onset_detect: onnxscript.OnnxFunction  # (B, S) -> (B, F) bool, backtracked onsets
    onset_mask: onnxscript.OnnxFunction  # (codes (B, K, T), audio (B, S), width) -> (B, K, T) int64


def make_onset_detector(sample_rate: float = SAMPLE_RATE, hop: int = HOP) -> OnsetDetector:
    """The graph functions of librosa's onset detector for one sample rate and hop (constants baked in)."""
    if int(hop) != hop or hop < 128:  # REACH_DOUBLINGS covers 2^31 samples only for hop >= 128
        raise ValueError(f"hop must be an integer >= 128, got {hop}")
    hop = int(hop)
    pp = PeakPickParams.for_rate(sample_rate, hop)
    block = math.gcd(N_FFT, hop)  # frames are gathered as whole blocks of this many samples
    hop_blocks, frame_blocks = hop // block, N_FFT // block
    half = N_FFT // 2
    centre_shift = LAG + N_FFT // (2 * hop)  # leading zeros of the onset envelope
    window = _tensor("hann", hann_window(N_FFT).astype(np.float32))
    m = np.arange(N_FFT)
    cos_table = _tensor("cos_table", np.cos(2 * np.pi * m / N_FFT).astype(np.float32))
    sin_table = _tensor("sin_table", np.sin(2 * np.pi * m / N_FFT).astype(np.float32))
    mel_t = _tensor("mel_basis_t", mel_filterbank(sample_rate).T.copy())  # (1 + N/2, n_mels)
    pre_max, max_kernel = pp.pre_max, pp.pre_max + pp.post_max
    pre_avg, avg_kernel = pp.pre_avg, pp.pre_avg + pp.post_avg
    wait = pp.wait

    @onnxscript.script(vampnet, default_opset=op)
    def frames(audio: FLOAT["B", "S"]) -> FLOAT["B", "F", "N"]:
        """Centred frames (zero padding N/2 each side), times the Hann window: (B, F, N_FFT)."""
        S = op.Shape(audio, start=1, end=2)
        F = S / hop + 1
        x = op.Pad(audio, op.Constant(value_ints=[0, half, 0, half]))  # (B, S + N)
        used = (F - 1) * hop + N_FFT  # <= S + N, a multiple of `block`
        x = op.Slice(x, [0], used, [1])
        blocks_shape = op.Concat(op.Shape(audio, start=0, end=1), used / block, op.Constant(value_ints=[block]), axis=0)
        blocks = op.Reshape(x, blocks_shape)  # (B, used / block, block)
        first = op.Unsqueeze(op.Range(0, op.Squeeze(F), 1) * hop_blocks, [1])  # (F, 1)
        index = first + op.Unsqueeze(op.Range(0, frame_blocks, 1), [0])  # (F, N / block)
        framed = op.Gather(blocks, index, axis=1)  # (B, F, N / block, block)
        frames_shape = op.Concat(op.Shape(framed, start=0, end=2), op.Constant(value_ints=[N_FFT]), axis=0)
        framed = op.Reshape(framed, frames_shape)
        return framed * op.Constant(value=window)

    @onnxscript.script(vampnet, default_opset=op)
    def power_spectrum(framed: FLOAT["B", "F", "N"]) -> FLOAT["B", "F", "K"]:
        """|rfft|² of each frame, (B, F, 1 + N/2), using the symmetry of the periodic window:

        Re X[k] = Σ_{n=0}^{N/2} u[n] cos(2πkn/N),  u = [y0, y1 + y(N−1), ..., y(N/2−1) + y(N/2+1), y(N/2)]
        Im X[k] = −Σ_{n=1}^{N/2−1} v[n] sin(2πkn/N), v[n] = y[n] − y[N − n]
        """
        head = op.Slice(framed, [0], op.Constant(value_ints=[half + 1]), [2])  # y[0 .. N/2]
        # y[N−1], ..., y[N/2+1], then padded to (B, F, N/2 + 1): 0, y[N−1], ..., y[N/2+1], 0
        tail = op.Slice(framed, op.Constant(value_ints=[N_FFT - 1]), op.Constant(value_ints=[half]), [2], [-1])
        tail = op.Pad(tail, op.Constant(value_ints=[0, 0, 1, 0, 0, 1]))
        u = head + tail
        v = op.Slice(head - tail, [1], op.Constant(value_ints=[half]), [2])  # (B, F, N/2 − 1)
        k = op.Range(0, half + 1, 1)  # rows n, columns k
        cos_index = op.Mod(op.Unsqueeze(k, [1]) * op.Unsqueeze(k, [0]), N_FFT)
        cos_basis = op.Gather(op.Constant(value=cos_table), cos_index, axis=0)  # (N/2 + 1, N/2 + 1)
        ks = op.Range(1, half, 1)
        sin_index = op.Mod(op.Unsqueeze(ks, [1]) * op.Unsqueeze(op.Range(0, half + 1, 1), [0]), N_FFT)
        sin_basis = op.Gather(op.Constant(value=sin_table), sin_index, axis=0)  # (N/2 − 1, N/2 + 1)
        re = op.MatMul(u, cos_basis)
        im = op.MatMul(v, sin_basis)
        return re * re + im * im

    @onnxscript.script(vampnet, default_opset=op)
    def band_flux(audio: FLOAT["B", "S"]) -> FLOAT["B", "G", "M"]:
        """librosa onset_strength's rectified spectral flux per mel band, before the aggregation
        over bands: max(0, S[t] − S[t − lag]) of the dB mel spectrogram, (B, F − lag, n_mels)."""
        power = power_spectrum(frames(audio))
        mel = op.MatMul(power, op.Constant(value=mel_t))  # (B, F, n_mels)
        # 10·log10(max(amin, mel)); values at or below amin get librosa's constant exactly (onnxruntime's
        # Log can differ by an ulp between positions of a tensor, which would make silence "flux")
        db = op.Log(op.Max(mel, op.CastLike(AMIN, mel))) * op.CastLike(DB_PER_LN, mel)
        db = op.Where(mel <= op.CastLike(AMIN, mel), op.CastLike(DB_FLOOR, mel), db)
        floor = op.ReduceMax(db, [1, 2], keepdims=1) - op.CastLike(TOP_DB, db)
        db = op.Max(db, floor)
        n = op.Shape(db, start=1, end=2)
        flux = op.Slice(db, op.Constant(value_ints=[LAG]), n, [1]) - op.Slice(db, [0], n - LAG, [1])
        return op.Max(flux, op.CastLike(0.0, flux))

    @onnxscript.script(vampnet, default_opset=op)
    def centre_envelope(aggregated: FLOAT["B", "G"]) -> FLOAT["B", "F"]:
        """The flux aggregated over bands, (B, F − lag), shifted right by lag + n_fft // (2·hop)
        and cut to the F frames (librosa's `center` compensation)."""
        n = op.Shape(aggregated, start=1, end=2) + LAG  # [F]
        envelope = op.Pad(aggregated, op.Constant(value_ints=[0, centre_shift, 0, 0]))
        return op.Slice(envelope, [0], n, [1])  # (B, F)

    @onnxscript.script(vampnet, default_opset=op)
    def onset_envelope(audio: FLOAT["B", "S"]) -> FLOAT["B", "F"]:
        """librosa.onset.onset_strength(y, sr, hop_length=hop) per row (not normalised), (B, F):
        the mean of the band flux over bands."""
        return centre_envelope(op.ReduceMean(band_flux(audio), [2], keepdims=0))

    @onnxscript.script(vampnet, default_opset=op)
    def peak_candidates(x: FLOAT["B", "F"]) -> BOOL["B", "F"]:
        """x[n] == max(x[n − pre_max : n + post_max]) and x[n] >= mean(x[n − pre_avg : n + post_avg]) + δ,
        windows truncated at both ends, as librosa's peak picker (its frame 0 rule is the same rule).

        Windows are gathered, (B, F, window): a clamped index repeats an edge value that is inside
        the truncated window, which leaves the max unchanged; the mean counts valid frames only.
        (Not MaxPool/AveragePool: the reference evaluator mishandles their asymmetric pads.)
        """
        F = op.Squeeze(op.Shape(x, start=1, end=2))
        t = op.Unsqueeze(op.Range(0, F, 1), [1])  # (F, 1)
        max_index = t + op.Unsqueeze(op.Range(0, max_kernel, 1), [0]) - pre_max  # (F, max_kernel)
        local_max = op.ReduceMax(op.Gather(x, op.Min(op.Max(max_index, 0), F - 1), axis=1), [2], keepdims=0)
        avg_index = t + op.Unsqueeze(op.Range(0, avg_kernel, 1), [0]) - pre_avg  # (F, avg_kernel)
        valid = op.And(avg_index >= 0, avg_index < F)
        window = op.Gather(x, op.Min(op.Max(avg_index, 0), F - 1), axis=1)  # (B, F, avg_kernel)
        window = op.Where(valid, window, op.CastLike(0.0, x))
        count = op.Cast(op.ReduceSum(op.Cast(valid, to=INT64.dtype), [1], keepdims=0), to=FLOAT.dtype)  # (F,)
        local_mean = op.ReduceSum(window, [2], keepdims=0) / count
        is_max = op.Equal(x, local_max)
        above = op.GreaterOrEqual(x, local_mean + op.CastLike(DELTA, x))
        return op.And(is_max, above)

    @onnxscript.script(vampnet, default_opset=op)
    def peak_pick(x: FLOAT["B", "F"]) -> BOOL["B", "F"]:
        """librosa.util.peak_pick(x, **onset_detect defaults) per row, as a (B, F) indicator."""
        return wait_rule(peak_candidates(x), op.Constant(value_int=wait))

    @onnxscript.script(vampnet, default_opset=op)
    def onset_detect(audio: FLOAT["B", "S"]) -> BOOL["B", "F"]:
        """librosa.onset.onset_detect(y=row, sr, hop_length=hop, backtrack=True) per row, (B, F) indicator."""
        x = normalize_envelope(onset_envelope(audio))
        return backtrack(peak_pick(x), x)

    @onnxscript.script(vampnet, default_opset=op)
    def onset_mask(codes: INT64["B", "K", "T"], audio: FLOAT["B", "S"], width: INT64) -> INT64["B", "K", "T"]:
        """Upstream onset_mask: all ones, 0 in [o − width, o + width) around every onset o of the
        row's audio (Python slice rules). width <= 0: all ones; width is clipped to 2^24.

        width 0 runs the detector on an empty signal (no cost). audio rows: B or 1.
        """
        w = op.Min(op.Max(width, op.Constant(value_int=0)), op.Constant(value_int=WIDTH_MAX))
        S = op.Shape(audio, start=1, end=2)
        used = op.Where(op.Reshape(w, [1]) > 0, S, op.Constant(value_ints=[0]))
        signal = op.Slice(audio, [0], used, [1])
        onsets = onset_detect(signal)
        row = slice_mask(onsets, op.Squeeze(op.Shape(codes, start=2, end=3)), w)  # (B, T)
        return op.Expand(op.Unsqueeze(row, [1]), op.Shape(codes))

    return OnsetDetector(
        sample_rate=sample_rate,
        hop=hop,
        peak_pick_params=pp,
        frames=frames,
        band_flux=band_flux,
        centre_envelope=centre_envelope,
        onset_envelope=onset_envelope,
        peak_candidates=peak_candidates,
        peak_pick=peak_pick,
        onset_detect=onset_detect,
        onset_mask=onset_mask,
    )


DETECTOR = make_onset_detector(SAMPLE_RATE, HOP)
onset_envelope = DETECTOR.onset_envelope
peak_pick = DETECTOR.peak_pick
onset_detect = DETECTOR.onset_detect
onset_mask = DETECTOR.onset_mask
