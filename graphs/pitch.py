"""Pitch shift inside the graph: torch-pitch-shift 1.2.5's `pitch_shift(x, shift=n, sample_rate)`.

Upstream VampNet's app shifts the preprocessed audio by n semitones (its "pitch shift amount",
−12 … +12) with torch-pitch-shift, which is a phase-vocoder time stretch followed by a resampling:

    STFT      n_fft = sr // 64 (689 at 44.1 kHz), hop = n_fft // 32 (21), rectangular window,
              centred with reflect padding, one-sided: F = 1 + (S − 1) // hop frames
    stretch   torchaudio's phase vocoder at rate r = 2^(−n/12): output step i reads frames
              ⌊t_i⌋ and ⌊t_i⌋ + 1 at t_i = i·r (torch.arange in float32), magnitudes interpolated
              by α = t_i mod 1, phase advanced by the wrapped phase difference of the two frames
              and accumulated along time (cumsum), then polar(magnitude, phase)
    ISTFT     rectangular window, centred, divided by the window envelope (the number of frames
              over each sample); hop·(T − 1) + 1 samples for T stretched frames
    resample  torchaudio Resample(sr, int(sr / 2^(n/12))): windowed sinc (Hann, 6 zero crossings,
              roll-off 0.99) at the rates divided by their gcd; ceil(new·L / orig) samples
    crop or zero-pad to the input length S.

n = 0 (and audio too short for the reflect padding, S <= n_fft // 2, where torch raises) returns
the input unchanged through an `If`; n is clamped to [−12, 12]. docs/pitch-shift.md says how the
result differs numerically from upstream's (measured).

How each step is written, and why:
- STFT and ISTFT are MatMuls with DFT bases gathered from a table of n_fft cosines (as in
  graphs/onsets.py: no ONNX DFT/STFT op, whose support varies between runtimes), folded by the
  symmetry of the DFT (x[m] ± x[N − m]) so each transform is two (N/2 + 1)-wide MatMuls. n_fft
  must be odd (no Nyquist bin), which sr // 64 is at 44.1 kHz; at a codec rate where it is even,
  n_fft is one less (our choice: upstream's app only shifts at 44.1 kHz).
- Frames are gathered as whole blocks of `hop` samples; the overlap-add is a sum of the frames'
  blocks shifted by their offsets, done by one reshaping trick (see `pitch_overlap_add`).
- Memory: the stretch (STFT, vocoder, ISTFT) runs in a Loop over STRETCH_FRAMES stretched frames
  at a time, each iteration computing only the input frames its steps read and carrying the phase
  sum (as limbs) and the signal so far; the resampler runs in a Loop over RESAMPLE_SAMPLES output
  samples. Whole-clip tensors are then only a few copies of the audio, not (frames × 345 bins)
  spectra or (samples × 26 taps) index grids. The signal is carried and grown, not emitted as Loop
  scan outputs, which the ONNX reference evaluator concatenates instead of stacking.
- The time steps reproduce torch's float32 arange bit for bit (see `time_steps`): an ulp of t_i
  moves α by up to 2^-10 at t ≈ 5000.
- angle() is atan2 built from Atan (ONNX has none), with the quadrant fixed by the signs, in
  exact arithmetic on 0/1 flags rather than Where (about ten times slower than a Mul in
  onnxruntime's CPU kernels); the frame masks are products with 0/1 for the same reason.
- The phase accumulation sums the float32 increments, quantised to 2^-24 rad, exactly in integer
  limbs and rounds once to float32, like torch's CPU cumsum (float32 summed in double). Within a
  Loop iteration the limbs are float32 (their partial sums stay below 2^23, so CumSum is exact in
  any order); from one iteration to the next they are carried as int64. A float32 CumSum of the
  increments drifts by many ulps over thousands of frames, and the phases reach ~10^5 rad, where
  one float32 ulp is 0.008 rad.
- The resampler reads, for each output sample, the input samples whose sinc weight is non-zero
  (at most 26 at these rates) instead of torchaudio's (new × (2·width + orig)) convolution kernel,
  which is gigabytes for some shifts. The weights depend only on the output's phase m mod new, so
  they are computed once per phase (a (new, 26) table, new < 2^17), in float32 from an exact
  integer time offset; the samples are gathered as whole runs of 26 from `sliding_windows`
  (an element-wise Gather per tap cost most of the resampler's time). The 25 rate pairs are a
  build-time table indexed by the semitone.
- Integers stay OpenVINO-exact: its CPU plugin holds int64 as int32 and divides through float32.
  So no integer passes 2^31 and no division has a dividend above 2^24 unless it is an exact
  multiple of a power-of-two divisor; products that would pass 2^31 are done in base-2^10 digits
  (time steps, carried in one pass from the lowest digit up), 11-bit limbs (phase) or split at
  256 (resampler). Limits: the time steps are exact
  for fewer than 2^19 frames (S < 11 million samples, 4 minutes); the phase sum is exact below
  2^22 rad (the top bin passes it after ~15 s at +12 semitones, ~60 s at −12) and within one
  float32 ulp beyond, where that ulp is already 0.5 rad in torch's own float32 phase.
"""
import math
from dataclasses import dataclass

import numpy as np
import onnxscript
from onnx import numpy_helper
from onnxscript import BOOL, FLOAT, INT64, graph

from vampnet_onnx.graphs.opsets import op, vampnet
from vampnet_onnx.graphs.preprocess import sliding_windows

SAMPLE_RATE = 44100  # VampNet's codec rate
MAX_SEMITONES = 12  # upstream's UI range, −12 … +12
LOWPASS_WIDTH = 6  # torchaudio Resample defaults: zero crossings of the sinc, and roll-off
ROLLOFF = 0.99
# Integer arithmetic stays OpenVINO-safe: its CPU plugin holds int64 as int32 (wrapping at 2^31)
# and divides integers through float32 (exact below 2^24). So every integer here stays below 2^31,
# and a division has a dividend below 2^24 or an exact multiple of the divisor (a power of two).
# torch's float32 arange computes vectorised chunks of ARANGE_LANES values from a float32 base
# (and the tail past the last whole pair of chunks one by one); measured equal to torch 2.13's
# CPU arange bit for bit (tests/test_pitch.py checks it).
ARANGE_LANES = 8
# The stretch and the resampler work through the signal in pieces (Loops), so that their memory
# does not grow with the clip beyond a few copies of the audio itself.
STRETCH_FRAMES = 2048  # stretched frames per iteration: (B, 2048, 345) tensors, ~3 MB each (at most 2^12: exact float32 phase limbs)
RESAMPLE_SAMPLES = 1 << 15  # output samples per iteration: (2^15, 26) tensors, <= 7 MB each
DIGIT_BITS = 10  # exact products i·r as 8 base-2^10 digits of i·r·2^53 (r·2^53 is a 54-bit integer)
DIGITS = 8
_DIGIT_SCALES = [2.0 ** (-DIGIT_BITS * j) for j in range(DIGITS - 2)]  # the 6 digits of a 45-bit float
_RATE_DIGIT_SCALES = [2.0 ** (DIGIT_BITS * d - 53) for d in range(DIGITS)]  # r from its digits
_POWERS_1_20 = [1 << b for b in range(1, 21)]  # ⌊log2 q⌋ for q < 2^21 by comparisons
_POWERS_0_22 = [1 << b for b in range(23)]  # 2^s, the low bits dropped from the fraction
_ULPS = [2.0 ** (b - 24) for b in range(23)]  # float32 ulp 2^(e − 23) at index e + 1
PI, HALF_PI, TWO_PI = math.pi, math.pi / 2, 2 * math.pi


def _tensor(name: str, array: np.ndarray):
    return numpy_helper.from_array(np.ascontiguousarray(array), name)


def stretch_rate(semitones: int) -> float:
    """torch-pitch-shift's TimeStretch rate for a shift of n semitones: float(1 / 2.0 ** (n / 12))."""
    return float(1 / 2.0 ** (float(semitones) / 12))


def resample_rates(sample_rate: int, semitones: int) -> tuple[int, int]:
    """(orig, new) of torch-pitch-shift's Resample(sr, int(sr / 2^(n/12))), divided by their gcd."""
    new = int(sample_rate / 2.0 ** (float(semitones) / 12))
    g = math.gcd(sample_rate, new)
    return sample_rate // g, new // g


def phase_advance(hop: int, n_freq: int) -> np.ndarray:
    """torch.linspace(0, π·hop, n_freq) in float32, as torch's CPU kernel computes it: step in
    float32, each value rounded once from start + step·i (first half) or end − step·(n − 1 − i)."""
    end = np.float32(math.pi * hop)
    step = np.float32(end / np.float32(n_freq - 1))
    i = np.arange(n_freq)
    values = np.where(i < n_freq // 2, i * np.float64(step), np.float64(end) - np.float64(step) * (n_freq - 1 - i))
    return values.astype(np.float32)


@dataclass(frozen=True)
class ShiftTable:
    """Per-semitone constants, row n + 12 for n in [−12, 12] (row 12, n = 0, is never used)."""

    rate_digits: np.ndarray  # int64 (25, DIGITS): stretch rate · 2^53 in base 2^10, least significant first
    orig: np.ndarray  # int64: resampling rates over their gcd
    new: np.ndarray
    orig_256: np.ndarray  # int64 (25, 2): ⌊256·orig / new⌋ and 256·orig mod new
    new_256: np.ndarray  # int64 (25, 2): ⌊256·new / orig⌋ and 256·new mod orig
    time_scale: np.ndarray  # float32: sinc time per unit of (j·new − n·orig)
    weight_scale: np.ndarray  # float32: base_freq / orig, torchaudio's kernel scale
    taps: tuple[int, int]  # input offsets [first, last] around ⌊n·orig/new⌋ that can have a weight

    @classmethod
    def for_rate(cls, sample_rate: int) -> "ShiftTable":
        shifts = range(-MAX_SEMITONES, MAX_SEMITONES + 1)
        k = [int(stretch_rate(n) * 2.0**53) if n else 2**53 for n in shifts]
        assert all(stretch_rate(n) * 2.0**53 == kk for n, kk in zip(shifts, k) if n)  # exact
        pairs = [resample_rates(sample_rate, n) for n in shifts]
        base = [min(o, w) * ROLLOFF for o, w in pairs]
        # output sample m sits at input position m·orig/new; weights are non-zero within
        # LOWPASS_WIDTH·orig/base input samples of it
        reach = max(LOWPASS_WIDTH * o / b for (o, w), b in zip(pairs, base))
        assert max(max(o, w) for o, w in pairs) < 2**17  # the resampler's products stay below 2^31
        return cls(
            rate_digits=np.array([[kk >> (DIGIT_BITS * d) & 1023 for d in range(DIGITS)] for kk in k], np.int64),
            orig=np.array([o for o, w in pairs], np.int64),
            new=np.array([w for o, w in pairs], np.int64),
            orig_256=np.array([divmod(256 * o, w) for o, w in pairs], np.int64),
            new_256=np.array([divmod(256 * w, o) for o, w in pairs], np.int64),
            time_scale=np.array([b / (o * w) for (o, w), b in zip(pairs, base)], np.float32),
            weight_scale=np.array([b / o for (o, w), b in zip(pairs, base)], np.float32),
            taps=(-math.floor(reach), math.floor(reach) + 1),
        )


# --------------------------------------------------------------------------------------------
# Rate-independent helpers
# --------------------------------------------------------------------------------------------


@onnxscript.script(vampnet, default_opset=op)
def floor_div(x: INT64["N"], y: INT64) -> INT64["N"]:
    """⌊x / y⌋ for 0 <= x < 2^31, 0 < y, quotient < 2^23: a float32 estimate corrected by one step
    with exact products (int64 Div goes through float32 in OpenVINO, inexact above 2^24)."""
    q = op.Cast(op.Floor(op.Cast(x, to=FLOAT.dtype) / op.Cast(y, to=FLOAT.dtype)), to=INT64.dtype)
    r = x - q * y
    return q - op.Cast(r < 0, to=INT64.dtype) + op.Cast(r >= y, to=INT64.dtype)


@onnxscript.script(vampnet, default_opset=op)
def dft_index(first_row: INT64, end_row: INT64, columns: INT64, n: INT64) -> INT64["R", "C"]:
    """(r·c) mod n for rows r in [first_row, end_row) and columns c in [0, columns): the indices of
    a DFT basis in a table of n values. (Reshape rather than Unsqueeze: ONNX shape inference's data
    propagation gives the product of two Unsqueezed constant Ranges a wrong rank.)"""
    one = op.Constant(value_int=1)
    rows = op.Reshape(op.Range(first_row, end_row, one), op.Constant(value_ints=[-1, 1]))
    cols = op.Reshape(op.Range(op.Constant(value_int=0), columns, one), op.Constant(value_ints=[1, -1]))
    return op.Mod(rows * cols, n)


@onnxscript.script(vampnet, default_opset=op)
def carry_into(c: INT64["N", "D"], digit: INT64, carry: INT64["N"]) -> (INT64["N"], INT64["N"]):
    """Digit `digit` of c plus the carry from below, as (its value in [0, 1024), the carry up)."""
    v = op.Gather(c, digit, axis=1) + carry
    low = op.BitwiseAnd(v, op.Constant(value_int=1023))
    return low, (v - low) / 1024  # an exact multiple of 1024


@onnxscript.script(vampnet, default_opset=op)
def normalise_digits(c: INT64["N", "D"]) -> INT64["N", "D"]:
    """The same value with every base-2^10 digit in [0, 1024), carried from the least significant
    digit up (digits below 2^30, so each digit plus carry stays below 2^31); the values are below
    2^80, so nothing carries out of the top digit."""
    d0, k = carry_into(c, 0, op.Constant(value_int=0))
    d1, k = carry_into(c, 1, k)
    d2, k = carry_into(c, 2, k)
    d3, k = carry_into(c, 3, k)
    d4, k = carry_into(c, 4, k)
    d5, k = carry_into(c, 5, k)
    d6, k = carry_into(c, 6, k)
    d7, k = carry_into(c, 7, k)
    one = op.Constant(value_ints=[1])
    low = op.Concat(op.Unsqueeze(d0, one), op.Unsqueeze(d1, one), op.Unsqueeze(d2, one), op.Unsqueeze(d3, one), axis=1)
    high = op.Concat(op.Unsqueeze(d4, one), op.Unsqueeze(d5, one), op.Unsqueeze(d6, one), op.Unsqueeze(d7, one), axis=1)
    return op.Concat(low, high, axis=1)


@onnxscript.script(vampnet, default_opset=op)
def rate_multiples(count: INT64["N"], rate_digits: INT64["D"]) -> INT64["N", "D"]:
    """Digits (not normalised) of count·r·2^53 for count < 2^20: each product is below 2^30."""
    return op.Unsqueeze(count, [1]) * op.Unsqueeze(rate_digits, [0])


@onnxscript.script(vampnet, default_opset=op)
def float_digits(x: FLOAT["N"]) -> INT64["N", "D"]:
    """Digits of x·2^53 for a float32 x in [0, 2^21) that is a multiple of 2^-24 (x >= 0.5 or 0).

    v = x·2^24 is an integer below 2^45, exact in float32; its base-2^10 digits are
    ⌊v / 2^10j⌋ − 1024·⌊v / 2^10(j+1)⌋, exact float32 operations (powers of two, Floor, and a
    subtraction of two values within a factor of two). x·2^53 = v·2^29 = Σ_j (512·digit_j)·2^10(j+2).
    """
    v = op.Unsqueeze(x * op.Constant(value_float=2.0**24), [1])
    whole = op.Floor(v * op.Constant(value_floats=_DIGIT_SCALES))
    digits = whole - op.Floor(whole * op.Constant(value_float=1 / 1024)) * op.Constant(value_float=1024.0)
    shifted = op.Cast(digits * op.Constant(value_float=512.0), to=INT64.dtype)
    return op.Pad(shifted, op.Constant(value_ints=[0, 2, 0, 0]))


@onnxscript.script(vampnet, default_opset=op)
def whole_part(p: INT64["N", "D"]) -> INT64["N"]:
    """⌊P·2^-53⌋ of normalised digits P: bit 53 is bit 3 of digit 5."""
    return (
        op.Gather(p, 5, axis=1) / 8
        + op.Gather(p, 6, axis=1) * op.Constant(value_int=128)
        + op.Gather(p, 7, axis=1) * op.Constant(value_int=131072)
    )


@onnxscript.script(vampnet, default_opset=op)
def round_digits(c: INT64["N", "D"]) -> FLOAT["N"]:
    """float32(P·2^-53), correctly rounded (to nearest, ties to even), for P·2^-53 = 0 or in
    [0.5, 2^21) given as base-2^10 digits (any digits below 2^30).

    x = q + f with q = ⌊x⌋ < 2^21. For q >= 1, float32 keeps 23 − e fraction bits (e = ⌊log2 q⌋):
    the 24 fraction bits f24 = ⌊f·2^24⌋ lose their s = e + 1 lowest, rounded by those bits and
    a sticky bit for everything below 2^-24. q + kept·2^(e−23) has at most 24 significant bits,
    so the final float32 sum is exact. For q = 0 (x in [0.5, 1)) all 24 bits stay, rounded by
    the bit 2^-25 and the sticky bit below it.
    """
    p = normalise_digits(c)
    p0 = op.Gather(p, 0, axis=1)
    p1 = op.Gather(p, 1, axis=1)
    p2 = op.Gather(p, 2, axis=1)
    p3 = op.Gather(p, 3, axis=1)
    p4 = op.Gather(p, 4, axis=1)
    q = whole_part(p)
    p5_low = op.BitwiseAnd(op.Gather(p, 5, axis=1), op.Constant(value_int=7))
    f24 = p5_low * op.Constant(value_int=2097152) + p4 * 2048 + p3 * 2 + p2 / 512
    sticky24 = op.BitwiseAnd(p2, op.Constant(value_int=511)) + p1 + p0 > 0
    thresholds = op.Constant(value_ints=_POWERS_1_20)
    e = op.ReduceSum(op.Cast(op.Unsqueeze(q, [1]) >= op.Unsqueeze(thresholds, [0]), to=INT64.dtype), [1], keepdims=0)
    step = op.Gather(op.Constant(value_ints=_POWERS_0_22), e + 1)  # 2^s
    kept = f24 / step
    rest = f24 - kept * step
    half = step / 2
    odd = op.BitwiseAnd(kept, op.Constant(value_int=1)) == 1
    up = op.Or(rest > half, op.And(rest == half, op.Or(sticky24, odd)))
    ulp = op.Gather(op.Constant(value_floats=_ULPS), e + 1)  # 2^(e − 23)
    large = op.Cast(q, to=FLOAT.dtype) + op.Cast(kept + op.Cast(up, to=INT64.dtype), to=FLOAT.dtype) * ulp
    guard = op.BitwiseAnd(p2 / 256, op.Constant(value_int=1)) == 1
    sticky25 = op.BitwiseAnd(p2, op.Constant(value_int=255)) + p1 + p0 > 0
    up_small = op.And(guard, op.Or(sticky25, op.BitwiseAnd(f24, op.Constant(value_int=1)) == 1))
    small = op.Cast(f24 + op.Cast(up_small, to=INT64.dtype), to=FLOAT.dtype) * op.Constant(value_float=2.0**-24)
    return op.Where(q > 0, large, small)


@onnxscript.script(vampnet, default_opset=op)
def time_steps(frames: INT64, rate_digits: INT64["D"]) -> FLOAT["T"]:
    """torch.arange(0, frames, r, dtype=float32) on CPU, bit for bit, for r = Σ digit_d·2^(10d − 53).

    torch computes chunks of ARANGE_LANES values as float32(base + k·r) from base = float32(i0·r)
    (i0 the chunk's first index, k < ARANGE_LANES), and the values past the last whole pair of
    chunks as float32(i·r). Both are exact digit sums rounded once (round_digits); the count is
    the number of i with ⌊i·r⌋ < frames (torch: ceil(frames / r)). Exact for frames < 2^19.
    """
    # the count from a float32 estimate of frames / r (off by far less than 1 for frames < 2^19),
    # settled exactly among the candidates around it
    r = op.ReduceSum(op.Cast(rate_digits, to=FLOAT.dtype) * op.Constant(value_floats=_RATE_DIGIT_SCALES), keepdims=0)
    estimate = op.Cast(op.Floor(op.Cast(frames, to=FLOAT.dtype) / r), to=INT64.dtype)
    low = op.Max(estimate - 4, op.Constant(value_int=0))
    candidates = op.Range(low, estimate + 5, op.Constant(value_int=1))
    whole = whole_part(normalise_digits(rate_multiples(candidates, rate_digits)))
    count = low + op.ReduceSum(op.Cast(whole < frames, to=INT64.dtype), keepdims=0)
    i = op.Range(op.Constant(value_int=0), count, op.Constant(value_int=1))
    lanes = op.Constant(value_int=ARANGE_LANES)
    vectorised = count / (lanes * 2) * (lanes * 2)
    # each chunk's base once: chunk u < vectorised / lanes starts at u·lanes, then one per tail index
    chunks = vectorised / lanes
    u = op.Range(op.Constant(value_int=0), chunks + count - vectorised, op.Constant(value_int=1))
    base = round_digits(rate_multiples(op.Where(u < chunks, u * lanes, u - chunks + vectorised), rate_digits))
    vector = i < vectorised
    first = op.Where(vector, i / lanes * lanes, i)
    base = op.Gather(base, op.Where(vector, i / lanes, i - vectorised + chunks))
    return round_digits(float_digits(base) + rate_multiples(i - first, rate_digits))


@onnxscript.script(vampnet, default_opset=op)
def angle(re: FLOAT["B", "T", "K"], im: FLOAT["B", "T", "K"]) -> FLOAT["B", "T", "K"]:
    """atan2(im, re) in (−π, π] from Atan on [0, 1]; angle(0) = 0. (im = −0 gives +π where torch
    gives −π: the same angle modulo 2π, which is all the vocoder uses.)

    The quadrant is fixed with arithmetic rather than Where (several times slower in onnxruntime):
    with a flag s in {0, 1}, |s·c − a| is c − a or a, bit for bit, for 0 <= a <= c."""
    ax = op.Abs(re)
    ay = op.Abs(im)
    small = op.Min(ax, ay)
    large = op.Max(ax, ay)
    a = op.Atan(small / (large + op.Cast(large == op.CastLike(0.0, re), to=FLOAT.dtype)))  # 0/1 for 0/0
    a = op.Abs(op.Cast(ay > ax, to=FLOAT.dtype) * op.CastLike(HALF_PI, re) - a)  # π/2 − a above the diagonal
    a = op.Abs(op.Cast(re < op.CastLike(0.0, re), to=FLOAT.dtype) * op.CastLike(PI, re) - a)  # π − a on the left
    return a - op.Cast(im < op.CastLike(0.0, re), to=FLOAT.dtype) * (a + a)  # −a below the axis


@onnxscript.script(vampnet, default_opset=op)
def phase_limbs(x: FLOAT["B", "T", "K"]) -> (FLOAT["B", "T", "K"], FLOAT["B", "T", "K"], FLOAT["B", "T", "K"]):
    """u = round(x·2^24) (|x| < 128, so |u| < 2^31) as u = top·2^22 + mid·2^11 + low, with
    0 <= mid, low < 2^11, integers held in float32; every step is exact (powers of two, Floor,
    and subtractions whose result has at most 23 significant bits)."""
    u = op.Round(x * op.Constant(value_float=2.0**24))
    top = op.Floor(u * op.Constant(value_float=2.0**-22))
    rest = u - top * op.Constant(value_float=2.0**22)
    mid = op.Floor(rest * op.Constant(value_float=2.0**-11))
    return top, mid, rest - mid * op.Constant(value_float=2.0**11)


@onnxscript.script(vampnet, default_opset=op)
def carry_limbs(
    top: INT64["B", "T", "K"], mid: INT64["B", "T", "K"], low: INT64["B", "T", "K"]
) -> (INT64["B", "T", "K"], INT64["B", "T", "K"], INT64["B", "T", "K"]):
    """The same value top·2^22 + mid·2^11 + low (mid, low >= 0) with mid and low below 2^11."""
    mask = op.Constant(value_int=2047)
    low_bits = op.BitwiseAnd(low, mask)
    mid = mid + (low - low_bits) / 2048  # exact multiples of 2^11
    mid_bits = op.BitwiseAnd(mid, mask)
    return top + (mid - mid_bits) / 2048, mid_bits, low_bits


@onnxscript.script(vampnet, default_opset=op)
def phase_state(phase: FLOAT["B", 1, "K"]) -> INT64["B", 3, "K"]:
    """A phase as the limbs (top, mid, low) that `accumulate_phase` starts from."""
    top, mid, low = phase_limbs(phase)
    return op.Cast(op.Concat(top, mid, low, axis=1), to=INT64.dtype)


@onnxscript.script(vampnet, default_opset=op)
def split_carry(x: FLOAT["B", "T", "K"]) -> (FLOAT["B", "T", "K"], FLOAT["B", "T", "K"]):
    """(⌊x / 2^11⌋, x mod 2^11) of a non-negative integer x < 2^24 held in float32, exactly."""
    carry = op.Floor(x * op.Constant(value_float=2.0**-11))
    return carry, x - carry * op.Constant(value_float=2.0**11)


@onnxscript.script(vampnet, default_opset=op)
def accumulate_phase(
    state: INT64["B", 3, "K"], increments: FLOAT["B", "T", "K"]
) -> (FLOAT["B", "T", "K"], INT64["B", 3, "K"]):
    """phase[t] = start + Σ_{u<t} increments[u], as torch's CPU cumsum (float32 summed in double,
    each output rounded once to float32), from increments quantised to 2^-24 rad; the start is
    given as limbs (`phase_state`), and the limbs of start + Σ increments come back, so a long
    sum is taken in pieces of at most 2^11 steps.

    The quantised values are summed exactly as integer limbs held in float32 (a piece's partial
    sums stay below 2^23, so any summation order is exact), carried, and rounded once:
    top·2^-2 is exact while the phase is below 2^22 rad, and mid·2^-13 + low·2^-24 has 22
    bits, so the float32 sum of the two rounds the exact total (beyond 2^22 rad, within an ulp or
    two). The limbs carried from piece to piece are int64. A float32 CumSum of the increments
    themselves drifts by many ulps over thousands of frames.
    """
    top, mid, low = phase_limbs(increments)
    axis = op.Constant(value_int=1)
    top_sums = op.CumSum(top, axis, exclusive=1)
    mid_sums = op.CumSum(mid, axis, exclusive=1)
    low_sums = op.CumSum(low, axis, exclusive=1)
    start = op.Cast(state, to=FLOAT.dtype)  # mid, low < 2^11; top exact below 2^24
    low_carry, low_bits = split_carry(low_sums + op.Slice(start, [2], [3], [1]))
    mid_carry, mid_bits = split_carry(mid_sums + op.Slice(start, [1], [2], [1]) + low_carry)
    fraction = mid_bits * op.Constant(value_float=2.0**-13) + low_bits * op.Constant(value_float=2.0**-24)
    whole = op.Slice(start, [0], [1], [1]) + (top_sums + mid_carry)
    phase = whole * op.Constant(value_float=0.25) + fraction
    # the piece's totals: the last exclusive sums plus the last limbs (integers, exact), in int64
    last = op.Constant(value_ints=[-1])
    end = op.Constant(value_ints=[2147483647])
    sums = op.Concat(op.Slice(top_sums, last, end, [1]), op.Slice(mid_sums, last, end, [1]), op.Slice(low_sums, last, end, [1]), axis=1)
    limbs = op.Concat(op.Slice(top, last, end, [1]), op.Slice(mid, last, end, [1]), op.Slice(low, last, end, [1]), axis=1)
    total = state + op.Cast(sums + limbs, to=INT64.dtype)
    end_top, end_mid, end_low = carry_limbs(
        op.Slice(total, [0], [1], [1]), op.Slice(total, [1], [2], [1]), op.Slice(total, [2], [3], [1])
    )
    return phase, op.Concat(end_top, end_mid, end_low, axis=1)


# --------------------------------------------------------------------------------------------
# The pitch shifter for one sample rate
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PitchShifter:
    sample_rate: int
    n_fft: int
    hop: int
    table: ShiftTable
    stft: onnxscript.OnnxFunction  # (B, S) -> (re, im) (B, F, n_fft // 2 + 1)
    istft: onnxscript.OnnxFunction  # (re, im) (B, T, K) -> (B, hop·(T − 1) + 1)
    stretch: onnxscript.OnnxFunction  # (B, S) audio, semitone index -> istft(phase vocoder(stft))
    resample: onnxscript.OnnxFunction  # (B, L) audio, semitone index, S -> (B, S)
    pitch_shift: onnxscript.OnnxFunction  # (B, S) audio, semitones -> (B, S)


def make_pitch_shifter(sample_rate: int = SAMPLE_RATE) -> PitchShifter:
    """The graph functions of torch-pitch-shift's pitch_shift for one sample rate (constants baked in)."""
    if int(sample_rate) != sample_rate:
        raise ValueError(f"sample rate must be an integer, got {sample_rate}")
    sample_rate = int(sample_rate)
    # upstream shifts at 44.1 kHz only (n_fft 689); a codec whose rate makes sr // 64 even gets
    # the odd size one below, which the folded transforms need
    n_fft = sample_rate // 64 - (sample_rate // 64 + 1) % 2
    hop = n_fft // 32
    half = n_fft // 2  # centre padding; n_fft = 2·half + 1
    n_freq = half + 1
    blocks = -(-n_fft // hop)  # a frame spans this many hop-sized blocks (the last one partly)
    table = ShiftTable.for_rate(sample_rate)
    window_rate = math.pi / (2 * LOWPASS_WIDTH)  # Hann window of the sinc: cos²(π·t / 12)
    first_tap, last_tap = table.taps
    taps = last_tap - first_tap + 1
    m = np.arange(n_fft)
    cos_table = _tensor("pitch_cos_table", np.cos(2 * np.pi * m / n_fft).astype(np.float32))
    neg_sin_table = _tensor("pitch_neg_sin_table", (-np.sin(2 * np.pi * m / n_fft)).astype(np.float32))
    # inverse: x[m] = (1/N)·(Re X0 + 2·Σ_k (Re Xk·cos − Im Xk·sin)(2πkm/N)), weights 1/N and 2/N
    inv_cos_table = _tensor("pitch_inv_cos_table", (np.cos(2 * np.pi * m / n_fft) / n_fft).astype(np.float32))
    inv_sin_table = _tensor("pitch_inv_sin_table", (2 * np.sin(2 * np.pi * m / n_fft) / n_fft).astype(np.float32))
    inv_weight = _tensor("pitch_inv_weight", np.array([1.0] + [2.0] * half, np.float32)[:, None])
    advance = _tensor("pitch_phase_advance", phase_advance(hop, n_freq))
    rate_digits = _tensor("pitch_rate_digits", table.rate_digits)
    orig_rate = _tensor("pitch_orig_rate", table.orig)
    new_rate = _tensor("pitch_new_rate", table.new)
    orig_256 = _tensor("pitch_orig_256", table.orig_256)
    new_256 = _tensor("pitch_new_256", table.new_256)
    time_scale = _tensor("pitch_time_scale", table.time_scale)
    weight_scale = _tensor("pitch_weight_scale", table.weight_scale)


    @onnxscript.script(vampnet, default_opset=op)
    def frame_blocks(audio: FLOAT["B", "S"]) -> FLOAT["B", "N", hop]:
        """torch.stft's centred signal (reflect-padded by half) zero-padded to F + blocks whole
        blocks of hop samples: frame f is blocks f .. f + blocks − 1 (its first n_fft samples),
        for every frame f <= F (frame F, past the last, is torch's zero padding of the vocoder)."""
        S = op.Shape(audio, start=1, end=2)
        F = (S - 1) / hop + 1
        x = op.Pad(audio, op.Constant(value_ints=[0, half, 0, half]), mode="reflect")  # (B, S + 2·half)
        used = (F + blocks) * hop  # reaches past frame F's last sample (S + 2·half <= used)
        x = op.Slice(op.Pad(x, op.Constant(value_ints=[0, 0, 0, (blocks + 1) * hop])), [0], used, [1])
        return op.Reshape(x, op.Concat(op.Shape(audio, start=0, end=1), used / hop, op.Constant(value_ints=[hop]), axis=0))

    @onnxscript.script(vampnet, default_opset=op)
    def stft_frames(
        source: FLOAT["B", "N", hop], first: INT64, count: INT64
    ) -> (FLOAT["B", "C", "K"], FLOAT["B", "C", "K"]):
        """Frames first .. first + count − 1 of torch.stft(audio, n_fft, hop) as (re, im),
        time-major, from the audio's `frame_blocks`."""
        t = op.Unsqueeze(op.Range(first, first + count, 1), [1])
        index = t + op.Unsqueeze(op.Range(0, blocks, 1), [0])  # (count, blocks)
        framed = op.Gather(source, index, axis=1)  # (B, count, blocks, hop)
        frames_shape = op.Concat(op.Shape(framed, start=0, end=2), op.Constant(value_ints=[blocks * hop]), axis=0)
        framed = op.Reshape(framed, frames_shape)
        # folded DFT: u = [y0, y1 + y(N−1), ..., y(half) + y(half+1)], v[m] = y[m] − y[N − m]
        head = op.Slice(framed, [0], op.Constant(value_ints=[n_freq]), [2])  # y[0 .. half]
        tail = op.Slice(framed, op.Constant(value_ints=[n_fft - 1]), op.Constant(value_ints=[half]), [2], [-1])
        u = head + op.Pad(tail, op.Constant(value_ints=[0, 0, 1, 0, 0, 0]))
        v = op.Slice(head, [1], op.Constant(value_ints=[n_freq]), [2]) - tail  # (B, count, half)
        cos_basis = op.Gather(op.Constant(value=cos_table), dft_index(0, n_freq, n_freq, n_fft), axis=0)  # (K, K)
        sin_index = dft_index(1, n_freq, n_freq, n_fft)
        sin_basis = op.Gather(op.Constant(value=neg_sin_table), sin_index, axis=0)  # (half, K)
        return op.MatMul(u, cos_basis), op.MatMul(v, sin_basis)

    @onnxscript.script(vampnet, default_opset=op)
    def pitch_stft(audio: FLOAT["B", "S"]) -> (FLOAT["B", "F", "K"], FLOAT["B", "F", "K"]):
        """torch.stft(audio, n_fft, hop, return_complex=True) as (re, im), time-major (B, F, K)."""
        F = (op.Squeeze(op.Shape(audio, start=1, end=2)) - 1) / hop + 1
        re, im = stft_frames(frame_blocks(audio), op.Constant(value_int=0), F)
        return re, im

    @onnxscript.script(vampnet, default_opset=op)
    def pitch_overlap_add(frames: FLOAT["B", "T", "N"]) -> FLOAT["B", "L"]:
        """Σ_t frames[t] placed at t·hop: (B, hop·(T + blocks − 1)), frames padded to whole blocks.

        Block b of frame t lands on output block t + b. With the frames as rows (B, blocks, T) of
        blocks, each row padded by `blocks` zero blocks and the whole read back with rows one block
        shorter, row b starts b blocks later; the column sums are the overlap-add.
        """
        B = op.Shape(frames, start=0, end=1)
        T = op.Shape(frames, start=1, end=2)
        x = op.Pad(frames, op.Constant(value_ints=[0, 0, 0, 0, 0, blocks * hop - n_fft]))
        x = op.Reshape(x, op.Concat(B, T, op.Constant(value_ints=[blocks, hop]), axis=0))
        x = op.Transpose(x, perm=[0, 2, 1, 3])  # (B, blocks, T, hop)
        x = op.Pad(x, op.Constant(value_ints=[0, 0, 0, 0, 0, 0, blocks, 0]))  # (B, blocks, T + blocks, hop)
        x = op.Reshape(x, op.Concat(B, op.Constant(value_ints=[-1, hop]), axis=0))
        x = op.Slice(x, [0], (T + blocks - 1) * blocks, [1])
        skewed = op.Concat(B, op.Constant(value_ints=[blocks]), T + blocks - 1, op.Constant(value_ints=[hop]), axis=0)
        x = op.Reshape(x, skewed)
        return op.Reshape(op.ReduceSum(x, [1], keepdims=0), op.Concat(B, op.Constant(value_ints=[-1]), axis=0))

    @onnxscript.script(vampnet, default_opset=op)
    def overlapped_frames(re: FLOAT["B", "T", "K"], im: FLOAT["B", "T", "K"]) -> FLOAT["B", "L"]:
        """The inverse DFTs of the frames, overlap-added: (B, hop·(T + blocks − 1)), the centred
        signal before torch.istft divides by the window envelope and crops."""
        cos_basis = op.Gather(op.Constant(value=inv_cos_table), dft_index(0, n_freq, n_freq, n_fft), axis=0)
        cos_basis = cos_basis * op.Constant(value=inv_weight)
        # rows k = 1 .. half, columns m = 1 .. half: the (half + 1)-column grid without column 0
        sin_index = op.Slice(dft_index(1, n_freq, n_freq, n_fft), [1], op.Constant(value_ints=[n_freq]), [1])
        sin_basis = op.Gather(op.Constant(value=inv_sin_table), sin_index, axis=0)
        c = op.MatMul(re, cos_basis)  # (B, T, K): the cosine half of x[m] = x[N − m], m = 0 .. half
        s = op.MatMul(op.Slice(im, [1], op.Constant(value_ints=[n_freq]), [2]), sin_basis)  # (B, T, half), m >= 1
        front = c - op.Pad(s, op.Constant(value_ints=[0, 0, 1, 0, 0, 0]))  # x[0 .. half]
        back = op.Slice(c, [1], op.Constant(value_ints=[n_freq]), [2]) + s  # x[N − m], m = 1 .. half
        back = op.Slice(back, op.Constant(value_ints=[half - 1]), op.Constant(value_ints=[-n_freq - 1]), [2], [-1])
        return pitch_overlap_add(op.Concat(front, back, axis=2))

    @onnxscript.script(vampnet, default_opset=op)
    def centred_istft(overlapped: FLOAT["B", "N"], T: INT64[1]) -> FLOAT["B", "L"]:
        """torch.istft's output from the overlap-added frames of T frames: hop·(T − 1) + 1 samples
        from `half` on, divided by the window envelope (how many frames cover each sample)."""
        length = (T - 1) * hop + 1
        p = op.Range(0, op.Squeeze(length), 1) + half  # sample p of the uncropped signal
        last = op.Min(p / hop, op.Squeeze(T) - 1)
        first = (op.Max(p - (n_fft - 1), 0) + (hop - 1)) / hop
        envelope = op.Cast(last - first + 1, to=FLOAT.dtype)
        return op.Slice(overlapped, op.Constant(value_ints=[half]), length + half, [1]) / envelope

    @onnxscript.script(vampnet, default_opset=op)
    def pitch_istft(re: FLOAT["B", "T", "K"], im: FLOAT["B", "T", "K"]) -> FLOAT["B", "L"]:
        """torch.istft(spec, n_fft, hop) (rectangular window, centred, no length): (B, hop·(T − 1) + 1)."""
        return centred_istft(overlapped_frames(re, im), op.Shape(re, start=1, end=2))

    @onnxscript.script(vampnet, default_opset=op)
    def pitch_stretch(audio: FLOAT["B", "S"], row: INT64) -> FLOAT["B", "L"]:
        """istft(phase_vocoder(stft(audio), rate, phase_advance)) for table row `row`, as
        torch-pitch-shift's time stretch (torchaudio's phase vocoder), STRETCH_FRAMES stretched
        frames per Loop iteration: each computes the input frames its steps read, their phase
        increments (the phase sum goes on from the previous iteration's limbs), the stretched
        frames and their inverse DFTs, and hands on the overlap it shares with the next."""
        source = frame_blocks(audio)
        F = (op.Squeeze(op.Shape(audio, start=1, end=2)) - 1) / hop + 1
        steps = time_steps(F, op.Gather(op.Constant(value=rate_digits), row, axis=0))  # (T,)
        T = op.Shape(steps)
        last_step = op.Squeeze(T) - 1
        re_0, im_0 = stft_frames(source, op.Constant(value_int=0), op.Constant(value_int=1))
        state_0 = phase_state(angle(re_0, im_0))  # the phase starts at frame 0's angle
        overlap = op.Constant(value_ints=[hop * (blocks - 1)])
        signal_0 = op.Expand(op.Constant(value_float=0.0), op.Concat(op.Shape(audio, start=0, end=1), overlap, axis=0))
        advance_k = op.Constant(value=advance)
        two_pi = op.Constant(value_float=TWO_PI)
        one = op.Constant(value_float=1.0)
        zero = op.Constant(value_float=0.0)
        # the body sees tensors only (onnxscript compares the outer values a body reads by `.value`)
        chunk = op.Constant(value_int=STRETCH_FRAMES)
        chunk_last = op.Constant(value_int=STRETCH_FRAMES - 1)
        signal_padding = op.Constant(value_ints=[0, 0, 0, hop * STRETCH_FRAMES])

        @graph()
        def stretch_step(c: INT64, going: BOOL, state: INT64["B", 3, "K"], signal: FLOAT["B", "V"]):
            i = op.Range(c * chunk, c * chunk + chunk, 1)
            t = op.Gather(steps, op.Min(i, last_step))  # past the last step: silent frames below
            whole = op.Floor(t)
            alpha = op.Unsqueeze(t - whole, [1])  # (C, 1)
            index = op.Cast(whole, to=INT64.dtype)
            first = op.Gather(index, 0)  # the steps grow: frames first .. index[C − 1] + 1 are read
            count = op.Gather(index, chunk_last) - first + 2
            re, im = stft_frames(source, first, count)
            # frame F: zeros, as torch pads (a product with 0/1 rather than a slower Where)
            real = op.Cast(op.Unsqueeze(op.Range(first, first + count, 1) < F, [0, 2]), to=FLOAT.dtype)
            re = re * real
            im = im * real
            phases = angle(re, im)
            norms = op.Sqrt(re * re + im * im)
            local = index - first
            phase = op.Gather(phases, local + 1, axis=1) - op.Gather(phases, local, axis=1) - advance_k
            phase = phase - two_pi * op.Round(phase / two_pi)
            phase, next_state = accumulate_phase(state, phase + advance_k)
            mag = alpha * op.Gather(norms, local + 1, axis=1) + (one - alpha) * op.Gather(norms, local, axis=1)
            mag = mag * op.Cast(op.Unsqueeze(i <= last_step, [1]), to=FLOAT.dtype)
            # this chunk's frames start at hop·c·C, `overlap` samples before the signal so far ends
            out = overlapped_frames(mag * op.Cos(phase), mag * op.Sin(phase))  # (B, hop·(C + blocks − 1))
            start = op.Shape(signal, start=1, end=2) - overlap
            placed = op.Pad(out, op.Concat(op.Constant(value_ints=[0]), start, op.Constant(value_ints=[0, 0]), axis=0))
            return op.Identity(going), next_state, op.Pad(signal, signal_padding) + placed

        chunks = (op.Squeeze(T) + chunk - 1) / chunk
        # (the signal is carried whole: the reference evaluator concatenates Loop scan outputs
        # instead of stacking them)
        state, signal = op.Loop(chunks, None, state_0, signal_0, body=stretch_step)
        return centred_istft(signal, T)

    @onnxscript.script(vampnet, default_opset=op)
    def resample_phases(row: INT64, phases: INT64) -> (FLOAT["P", "D"], INT64["P"]):
        """torchaudio Resample(orig, new)'s weights for output phases p < `phases` of table row
        `row`, and c_p = ⌊p·orig/new⌋. Output m = a·new + p sits at input position
        a·orig + p·orig/new, so its weights depend on p only: w_p[d] = w((d·new − r_p)·base /
        (orig·new)) for input sample a·orig + c_p + d, d in [first_tap, last_tap], r_p = p·orig −
        c_p·new, w(t) = sinc(t)·cos²(πt/12)·base/orig for |t| < 6 (torchaudio's kernel at the same
        times; 0 beyond, where its float32 value is 0)."""
        orig = op.Gather(op.Constant(value=orig_rate), row)
        new = op.Gather(op.Constant(value=new_rate), row)
        p = op.Range(op.Constant(value_int=0), phases, op.Constant(value_int=1))
        # p·orig can pass 2^31 (OpenVINO holds int64 as int32), so it is split at 256:
        # 256·orig = c·new + r from the table
        o_quot = op.Gather(op.Gather(op.Constant(value=orig_256), row, axis=0), 0)
        o_rem = op.Gather(op.Gather(op.Constant(value=orig_256), row, axis=0), 1)
        p_high = p / 256
        partial_p = p_high * o_rem + (p - p_high * 256) * orig  # < 2^27
        k = floor_div(partial_p, new)
        residual = partial_p - k * new  # p·orig − c_p·new, in [0, new)
        d = op.Unsqueeze(op.Range(first_tap, last_tap + 1, 1), [0])  # (1, taps)
        offset = d * new - op.Unsqueeze(residual, [1])  # = j·new − m·orig, exact
        t = op.Cast(offset, to=FLOAT.dtype) * op.Gather(op.Constant(value=time_scale), row)
        zero = op.Constant(value_float=0.0)
        pi_t = t * op.Constant(value_float=PI)
        one = op.Constant(value_float=1.0)
        sinc = op.Where(t == zero, one, op.Sin(pi_t) / op.Where(t == zero, one, pi_t))
        window = op.Cos(t * op.Constant(value_float=window_rate))
        weight = sinc * window * window * op.Gather(op.Constant(value=weight_scale), row)
        weight = op.Where(op.Abs(t) < op.Constant(value_float=float(LOWPASS_WIDTH)), weight, zero)
        return weight, p_high * o_quot + k

    @onnxscript.script(vampnet, default_opset=op)
    def resample_at(
        padded: FLOAT["B", "N"], weights: FLOAT["P", "D"], starts: INT64["P"], row: INT64, m: INT64["M"], produced: INT64
    ) -> FLOAT["B", "M"]:
        """Output samples m of torchaudio Resample(orig, new) for table row `row` (0 from
        `produced` on), from the audio zero-padded by -first_tap samples in front and at least
        last_tap behind, and the phases' weights and c_p (`resample_phases`): out[m] = Σ_d
        audio[a·orig + c_p + d]·w_p[d] for m = a·new + p."""
        orig = op.Gather(op.Constant(value=orig_rate), row)
        new = op.Gather(op.Constant(value=new_rate), row)
        read = op.Min(m, produced - 1)  # samples past `produced` read the last one's taps, then become 0
        a = floor_div(read, new)
        p = read - a * new
        first = a * orig + op.Gather(starts, p)  # its window's first sample in `padded`
        low = op.Gather(first, 0)  # `first` grows with m
        high = op.Gather(first, op.Shape(first) - 1)
        segment = op.Slice(padded, op.Reshape(low, [1]), high + taps, op.Constant(value_ints=[1]))
        samples = op.Gather(sliding_windows(segment, op.Constant(value_int=taps)), first - low, axis=1)  # (B, M, taps)
        out = op.ReduceSum(samples * op.Gather(weights, p, axis=0), [2], keepdims=0)
        return op.Where(m < produced, out, op.Constant(value_float=0.0))

    @onnxscript.script(vampnet, default_opset=op)
    def pitch_resample(audio: FLOAT["B", "L"], row: INT64, out_length: INT64) -> FLOAT["B", "S"]:
        """torchaudio Resample(orig, new) of `audio` for table row `row`, cropped or zero-padded to
        out_length samples (out[m] = 0 past ceil(new·L / orig)), RESAMPLE_SAMPLES outputs per
        Loop iteration; the weights of each output phase are computed once."""
        orig = op.Gather(op.Constant(value=orig_rate), row)
        new = op.Gather(op.Constant(value=new_rate), row)
        L = op.Squeeze(op.Shape(audio, start=1, end=2))
        # produced = ceil(new·L / orig); (L mod orig)·new can pass 2^31, so it is split at 256:
        # 256·new = c·orig + r from the table
        whole = L / orig
        rest = op.Reshape(L - whole * orig, [1])
        n_quot = op.Gather(op.Gather(op.Constant(value=new_256), row, axis=0), 0)
        n_rem = op.Gather(op.Gather(op.Constant(value=new_256), row, axis=0), 1)
        rest_high = rest / 256
        partial = rest_high * n_rem + (rest - rest_high * 256) * new  # < 2^26
        produced = op.Squeeze(whole * new + rest_high * n_quot + floor_div(partial + orig - 1, orig))
        weights, starts = resample_phases(row, op.Min(new, produced))
        padded = op.Pad(audio, op.Constant(value_ints=[0, -first_tap, 0, last_tap + 1]))
        chunk = op.Constant(value_int=RESAMPLE_SAMPLES)
        out_0 = resample_at(padded, weights, starts, row, op.Range(0, chunk, 1), produced)

        @graph()
        def resample_step(c: INT64, going: BOOL, out: FLOAT["B", "M"]):
            m = op.Range(c * chunk + chunk, c * chunk + 2 * chunk, 1)  # chunk 0 is out_0
            return op.Identity(going), op.Concat(out, resample_at(padded, weights, starts, row, m, produced), axis=1)

        chunks = (out_length + chunk - 1) / chunk
        out = op.Loop(chunks - 1, None, out_0, body=resample_step)
        return op.Slice(out, [0], op.Reshape(out_length, [1]), [1])

    @onnxscript.script(vampnet, default_opset=op)
    def pitch_shift(audio: FLOAT["B", "S"], semitones: INT64) -> FLOAT["B", "S"]:
        """torch-pitch-shift's pitch_shift(audio, shift=n, sample_rate), n clamped to [−12, 12];
        the input itself for n = 0 or S <= n_fft // 2."""
        n = op.Min(op.Max(semitones, op.Constant(value_int=-MAX_SEMITONES)), op.Constant(value_int=MAX_SEMITONES))
        S = op.Shape(audio, start=1, end=2)
        shifting = op.And(n != 0, op.Squeeze(S) > half)
        if shifting:
            row = n + MAX_SEMITONES
            shifted = pitch_resample(pitch_stretch(audio, row), row, op.Squeeze(S))
        else:
            shifted = op.Identity(audio)
        return shifted

    return PitchShifter(
        sample_rate=sample_rate,
        n_fft=n_fft,
        hop=hop,
        table=table,
        stft=pitch_stft,
        istft=pitch_istft,
        stretch=pitch_stretch,
        resample=pitch_resample,
        pitch_shift=pitch_shift,
    )


SHIFTER = make_pitch_shifter(SAMPLE_RATE)
pitch_shift = SHIFTER.pitch_shift
