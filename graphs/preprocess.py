"""Upstream's audio preprocessing inside the graph (docs/preprocessing.md): resampling, loudness.

Upstream `Interface._preprocess` (audiotools' AudioSignal methods), and the app's output loudness:

    resample(model rate)     julius.resample_frac: windowed-sinc interpolation, 24 zero crossings,
                             rolloff 0.945, the rates divided by their gcd
    normalize(−24 LUFS)      gain 10^((−24 − L)/20), L = the BS.1770 loudness of audiotools' Meter
    ensure_max_of_audio(1)   rows whose peak exceeds 1 are scaled down to peak 1
    out.normalize(L_in)      the app gives the generated audio the input's loudness

Every function here takes (B, S) float32 rows and the rate as an int64 scalar tensor (the rate is
a run-time input of the model), so each can be called on its own; `prepare` and `restore` are the
model's two ends. Batch rows are independent.

Resampling (`resample`): julius's kernel for output phase i is sinc(t)·cos(t/48)² with
t = clamp((idx/old − i/new)·min(old, new)·0.945, ±24)·π over input offsets idx, normalised to sum 1;
the input is replicate-padded; output sample j = n·k + i reads input samples k·old + idx. julius
convolves each phase with 2w + old taps, most of them outside the ±24 window (exactly the clamped
value there, which is 1e-23 of the rest): here each output sample gathers only the 2W + 1 taps
around its own position, W = ceil(24·old / (min(old, new)·0.945)), so the cost is the same small
number of taps for any pair of rates (44101 → 44100 has 44100 phases). The output is computed in
pieces of at most TAPS_PER_STEP taps, a Loop's scan outputs laid end to end after it, so the work's
memory does not grow with the input.

Loudness (`loudness`): audiotools' Meter on CPU: K-weighting (a high shelf, then a high pass, RBJ
biquads, filtered exactly as an IIR), 0.4 s blocks every 0.1 s, the end zero-padded so every
sample lies in a block, absolute gate −70 LUFS, relative gate −10 LU; signals shorter than 0.5 s
are zero-padded to 0.5 s first; the result is floored at −70 LUFS (silence: −70). At the common
rates the filter is upstream's float32 one (a table made at build time), at other rates designed
in the graph. The IIR runs block-recursively, one pole at a time (`one_pole`): each 64-sample
block is filtered from rest with one MatMul, and the value each block starts from comes from a
parallel prefix scan over the blocks, so the filter is exact (to float32 rounding) without a
sample-by-sample Loop. The meter filters the signal in segments of SEGMENT_CHUNKS chunks of 0.1 s
(a Loop that carries the filters' state from one segment to the next) and keeps only the sums of
squares per chunk, so its memory does not grow with the input.

Every Loop here carries a single value (a pair is packed into one tensor): onnxscript 0.7.2 lists
a Loop's outputs in the order of a Python set built separately from the one that orders its
inputs, so with several carried variables the outputs can come back bound to the wrong names (it
happened here, depending on the process's string hashing).
"""
import math

import numpy as np
import onnxscript
from onnx import numpy_helper
from onnxscript import BOOL, FLOAT, INT64, graph

from vampnet_onnx.graphs.codec import joined
from vampnet_onnx.graphs.opsets import op, vampnet
from vampnet_onnx.interface import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE

TARGET_LUFS = -24.0  # upstream Interface.loudness
FLOOR_LUFS = -70.0  # audiotools' MIN_LOUDNESS, also BS.1770's absolute gate
RELATIVE_GATE = -10.0
PREPARED_LU = 1e-4  # `prepare` leaves a row this close to −24 LUFS unscaled (normalize_unless_there)
LUFS_OFFSET = -0.691  # BS.1770: L = −0.691 + 10·log10(mean square)
DB_PER_LN = 10.0 / math.log(10.0)  # 10·log10(x) = DB_PER_LN · ln(x)
GAIN_PER_DB = math.log(10.0) / 20.0  # audiotools' GAIN_FACTOR: gain = exp(dB · GAIN_PER_DB)
FLOAT32_MAX = float(np.finfo(np.float32).max)
ZEROS = 24  # julius resample_frac defaults as audiotools calls it
ROLLOFF = 0.945
TAPS_PER_STEP = 1 << 21  # resampler taps gathered per Loop iteration (8 MB of float32)
# Euclid's algorithm needs at most 5 steps per decimal digit of the smaller number (Lamé): 30 for
# rates below 10^6; more steps leave (gcd, 0) unchanged.
EUCLID_STEPS = 32
FILTER_BLOCK_BITS = 6
FILTER_BLOCK = 1 << FILTER_BLOCK_BITS  # samples per block of the block-recursive IIR
SEGMENT_CHUNKS = 64  # loudness filters 6.4 s (64 chunks of 0.1 s) at a time, whatever the length
FIRST_SUMS = 12 + 2 * SEGMENT_CHUNKS  # where the meter's sums start (after the filter state and a zero segment)
# K-weighting (pyloudnorm's constants, as audiotools uses them)
SHELF_A = 10.0 ** (4.0 / 40.0)  # RBJ's A of a +4 dB shelf
SHELF_Q = 1.0 / math.sqrt(2.0)
SHELF_HZ = 1500.0
SHELF_IM_FACTOR = 4.0 - 1.0 / SHELF_Q**2  # the shelf's poles: see k_weighting
HIGH_PASS_Q = 0.5
HIGH_PASS_HZ = 38.0
PI = math.pi
LN2 = math.log(2.0)


# --------------------------------------------------------------------------------------------
# Resampling (julius.resample_frac)
# --------------------------------------------------------------------------------------------


@onnxscript.script(vampnet, default_opset=op)
def gcd(a: INT64, b: INT64) -> INT64:
    """Greatest common divisor of two positive integers (Euclid, a fixed number of steps)."""
    pair = op.Concat(op.Reshape(a, [1]), op.Reshape(b, [1]), axis=0)  # one loop-carried value (see the module's docstring)
    for step in range(EUCLID_STEPS):
        x = op.Gather(pair, 0)
        y = op.Gather(pair, 1)
        pair = op.Where(y > 0, op.Concat(op.Reshape(y, [1]), op.Reshape(op.Mod(x, op.Max(y, 1)), [1]), axis=0), pair)
    return op.Gather(pair, 0)


@onnxscript.script(vampnet, default_opset=op)
def half_width(old: INT64, new: INT64) -> INT64:
    """W = ceil(24·old / (min(old, new)·0.945)), exactly: ceil(24000·old / (945·min))."""
    scaled_min = op.Min(old, new) * 945
    return (24000 * old + scaled_min - 1) / scaled_min


@onnxscript.script(vampnet, default_opset=op)
def resample_kernel(old: INT64, new: INT64) -> FLOAT["N", "W"]:
    """julius's kernel for reduced rates old != new, restricted to the taps that can be non-zero:
    row i (output phase i), column r for input offset idx = floor(i·old/new) + r, r in [−W, W]."""
    w = half_width(old, new)
    i = op.Range(0, new, 1)
    base = i * old / new  # floor(i·old/new): the input sample at or before output phase i
    idx = op.Unsqueeze(base, [1]) + op.Unsqueeze(op.Range(-w, w + 1, 1), [0])  # (new, 2W + 1)
    old_f = op.Cast(old, to=FLOAT.dtype)
    phase = op.Cast(i, to=FLOAT.dtype) / op.Cast(new, to=FLOAT.dtype)
    t = (op.Cast(idx, to=FLOAT.dtype) / old_f - op.Unsqueeze(phase, [1])) * (
        op.Cast(op.Min(old, new), to=FLOAT.dtype) * ROLLOFF
    )
    t = op.Clip(t, op.CastLike(-ZEROS, t), op.CastLike(ZEROS, t)) * PI
    window = op.Cos(t / ZEROS / 2.0)
    is_zero = t == op.CastLike(0.0, t)
    sinc = op.Where(is_zero, op.CastLike(1.0, t), op.Sin(t) / op.Where(is_zero, op.CastLike(1.0, t), t))
    kernel = sinc * window * window
    return kernel / op.ReduceSum(kernel, [1], keepdims=1)


@onnxscript.script(vampnet, default_opset=op)
def sliding_windows(x: FLOAT["B", "N"], width: INT64) -> FLOAT["B", "R", "W"]:
    """Every run of `width` consecutive samples as a row: windows[:, r, k] = x[:, r + k] for
    r <= N − width, so that a Gather of rows copies whole runs (an element-wise Gather of the
    same samples is several times slower). `width` copies of x read back as rows one sample
    longer put x[r + k] at row k, column r; a transpose makes the runs rows."""
    B = op.Shape(x, start=0, end=1)
    N = op.Shape(x, start=1, end=2)
    w = op.Reshape(width, op.Constant(value_ints=[1]))
    copies = op.Expand(op.Unsqueeze(x, [1]), op.Concat(B, w, N, axis=0))  # (B, width, N)
    flat = op.Reshape(copies, op.Concat(B, op.Constant(value_ints=[-1]), axis=0))
    flat = op.Pad(flat, op.Concat(op.Constant(value_ints=[0, 0, 0]), w, axis=0))
    skewed = op.Reshape(flat, op.Concat(B, w, N + 1, axis=0))  # row k starts k samples later
    runs = op.Slice(skewed, op.Constant(value_ints=[0]), N - w + 1, op.Constant(value_ints=[2]))
    return op.Transpose(runs, perm=[0, 2, 1])


@onnxscript.script(vampnet, default_opset=op)
def resample_frac(x: FLOAT["B", "X"], old: INT64, new: INT64, L: INT64) -> FLOAT["B", "M"]:
    """x's first L samples (what follows is never read) resampled from rate `old` to `new` (reduced
    by their gcd, old != new), as julius: M = floor(new·L/old) samples (at least one), sample
    j = new·k + i read around input k·old + i·old/new."""
    kernel = resample_kernel(old, new)
    w = half_width(old, new)
    total = op.Max(new * L / old, 1)
    step = op.Min(op.Max(TAPS_PER_STEP / (2 * w + 1), 1), total)  # samples per piece

    @graph()
    def resample_step(c: INT64, going: BOOL):
        j = op.Range(c * step, op.Min(c * step + step, total), 1)
        phase = op.Mod(j, new)
        centre = j / new * old + phase * old / new  # k·old + floor(i·old/new) <= L − 1: its taps start there in `padded`
        low = op.Gather(centre, 0)  # `centre` grows with j
        high = op.Gather(centre, op.Shape(centre) - 1)
        # padded[low : high + 2W + 1] of the input replicate-padded by W either side, cut from the
        # input itself (never empty: low <= L − 1) and padded here, so that no padded copy of the
        # whole input is ever held
        first = op.Max(low - w, 0)
        last = op.Min(high + w + 1, L)
        segment = op.Pad(op.Slice(x, op.Reshape(first, [1]), op.Reshape(last, [1]), op.Constant(value_ints=[1])),
                         op.Concat(op.Constant(value_ints=[0]), op.Reshape(first - (low - w), [1]), op.Constant(value_ints=[0]),
                                   op.Reshape(high + w + 1 - last, [1]), axis=0), mode="edge")
        samples = op.Gather(sliding_windows(segment, 2 * w + 1), centre - low, axis=1)  # (B, J, 2W + 1)
        piece = op.ReduceSum(samples * op.Gather(kernel, phase, axis=0), [2], keepdims=0)
        # a scan output, not a grown Concat (graphs/codec.py says why); the last piece may be
        # short: zeros to one size, cut off after the Loop
        return op.Identity(going), op.Pad(piece, op.Concat(op.Constant(value_ints=[0, 0, 0]), op.Reshape(step - op.Size(j), [1]), axis=0))

    pieces = op.Loop((total + step - 1) / step, None, body=resample_step)
    return op.Slice(joined(pieces, op.Shape(x, start=0, end=1)), [0], op.Reshape(total, [1]), [1])


@onnxscript.script(vampnet, default_opset=op)
def resample(x: FLOAT["B", "X"], length: INT64[1], old_rate: INT64, new_rate: INT64) -> FLOAT["B", "M"]:
    """julius.resample_frac(x[:, :length], old_rate, new_rate, zeros=24, rolloff=0.945); equal
    rates: x[:, :length] itself."""
    g = gcd(old_rate, new_rate)
    old = old_rate / g
    new = new_rate / g
    if old == new:
        y = op.Slice(x, [0], length, [1])
    else:
        y = resample_frac(x, old, new, op.Squeeze(length))
    return y


# --------------------------------------------------------------------------------------------
# K-weighting: two biquads, filtered exactly (block-recursive IIR)
# --------------------------------------------------------------------------------------------


@onnxscript.script(vampnet, default_opset=op)
def delayed(x: FLOAT["B", "L"], d: INT64) -> FLOAT["B", "L"]:
    """x[n − d] along axis 1 (zeros before the start); d >= 0."""
    padded = op.Pad(x, op.Concat([0], op.Reshape(d, [1]), [0, 0], axis=0))
    return op.Slice(padded, [0], op.Shape(x, start=1, end=2), [1])


@onnxscript.script(vampnet, default_opset=op)
def complex_mul(x: FLOAT[2, "N"], y: FLOAT[2, "N"]) -> FLOAT[2, "N"]:
    """Complex products of (re, im) rows (broadcasting along the other axes)."""
    x_re = op.Gather(x, 0)
    x_im = op.Gather(x, 1)
    y_re = op.Gather(y, 0)
    y_im = op.Gather(y, 1)
    return op.Concat(op.Unsqueeze(x_re * y_re - x_im * y_im, [0]), op.Unsqueeze(x_re * y_im + x_im * y_re, [0]), axis=0)


@onnxscript.script(vampnet, default_opset=op)
def pole_powers(p: FLOAT[2, 1]) -> FLOAT[2, "N"]:
    """p^0 .. p^N of a complex p ((re, im) rows), N = FILTER_BLOCK = 2^6, by doubling."""
    powers = op.Concat(op.Constant(value_floats=[1.0, 0.0]), op.Squeeze(p, [1]), axis=0)
    powers = op.Transpose(op.Reshape(powers, [2, 2]))  # (2, 2): p^0, p^1
    for step in range(FILTER_BLOCK_BITS):
        last = op.Slice(powers, [-1], op.Constant(value_ints=[FILTER_BLOCK + 1]), [1])  # p^n, n = 2^step
        powers = op.Concat(powers, op.Slice(complex_mul(powers, last), [1], op.Constant(value_ints=[FILTER_BLOCK + 1]), [1]), axis=1)
    return powers


@onnxscript.script(vampnet, default_opset=op)
def pole_scan(c: FLOAT[2, "B", "M"], g: FLOAT[2, 1, 1]) -> FLOAT[2, "B", "M"]:
    """s[m] = g·s[m − 1] + c[m] (s[−1] = 0), complex ((re, im) first), along the last axis, by
    parallel prefix (Hillis–Steele): after step k, s[m] sums the last 2^(k+1) terms; step k adds
    g^(2^k)·s[m − 2^k]. ceil(log2 M) + 1 steps."""
    M = op.Shape(c, start=2, end=3)
    steps = op.Squeeze(op.Cast(op.Ceil(op.Log(op.Cast(M, to=FLOAT.dtype)) / LN2), to=INT64.dtype) + 1)
    # g^(2^k) for every step k: one loop-carried value per Loop (see the module's docstring)
    powers = op.Identity(g)  # (K, 2, 1, 1)
    powers = op.Unsqueeze(powers, [0])
    for step in range(steps):
        last = op.Gather(powers, op.Constant(value_ints=[-1]), axis=0)
        powers = op.Concat(powers, op.Unsqueeze(complex_mul(op.Squeeze(last, [0]), op.Squeeze(last, [0])), [0]), axis=0)
    s = op.Identity(c)
    for step in range(steps):
        d = op.Cast(op.Pow(op.Constant(value_float=2.0), op.Cast(step, to=FLOAT.dtype)), to=INT64.dtype)
        earlier = op.Slice(op.Pad(s, op.Concat([0, 0], op.Reshape(d, [1]), [0, 0, 0], axis=0)), [0], M, [2])
        s = s + complex_mul(op.Gather(powers, step, axis=0), earlier)
    return s


@onnxscript.script(vampnet, default_opset=op)
def one_pole(v: FLOAT[2, "B", "L"], p: FLOAT[2, 1]) -> FLOAT[2, "B", "L"]:
    """u[n] = p·u[n − 1] + v[n] (u = 0 before the start), complex ((re, im) first), block by block:

    z = each block of N samples filtered from rest: a MatMul with the Toeplitz matrix of p^k;
    the value s[m] = u[mN − 1] that block m starts from follows s[m + 1] = p^N·s[m] + z[m, N − 1]
    (`pole_scan`); then u[mN + t] = z[m, t] + p^(t+1)·s[m]. One pole at a time keeps every step
    well conditioned, also for the high pass's double pole close to 1."""
    N = op.Constant(value_int=FILTER_BLOCK)
    powers = pole_powers(p)  # (2, N + 1)
    lag = op.Unsqueeze(op.Range(0, N, 1), [0]) - op.Unsqueeze(op.Range(0, N, 1), [1])  # [τ, t] = t − τ
    toeplitz = op.Gather(powers, op.Max(lag, 0), axis=1)  # (2, N, N)
    toeplitz = op.Where(lag >= 0, toeplitz, op.CastLike(0.0, toeplitz))
    L = op.Shape(v, start=2, end=3)
    blocks = (L + N - 1) / N
    padded = op.Pad(v, op.Concat([0, 0, 0, 0, 0], blocks * N - L, axis=0))
    x = op.Reshape(padded, op.Concat(op.Shape(v, start=0, end=2), blocks, op.Reshape(N, [1]), axis=0))  # (2, B, M, N)
    t_re = op.Gather(toeplitz, 0)
    t_im = op.Gather(toeplitz, 1)
    x_re = op.Gather(x, 0)
    x_im = op.Gather(x, 1)
    z = op.Concat(op.Unsqueeze(op.MatMul(x_re, t_re) - op.MatMul(x_im, t_im), [0]),
                  op.Unsqueeze(op.MatMul(x_re, t_im) + op.MatMul(x_im, t_re), [0]), axis=0)  # (2, B, M, N)
    ends = op.Gather(z, op.Constant(value_int=FILTER_BLOCK - 1), axis=3)  # (2, B, M)
    entering = op.Slice(op.Pad(ends, [0, 0, 1, 0, 0, 0]), [0], blocks, [2])  # z[m − 1, N − 1]
    block_power = op.Reshape(op.Gather(powers, op.Constant(value_ints=[FILTER_BLOCK]), axis=1), [2, 1, 1])
    s = op.Unsqueeze(pole_scan(entering, block_power), [3])  # (2, B, M, 1)
    later = op.Reshape(op.Slice(powers, [1], op.Constant(value_ints=[FILTER_BLOCK + 1]), [1]), op.Constant(value_ints=[2, 1, 1, FILTER_BLOCK]))  # p^(t+1)
    u = z + complex_mul(s, later)
    return op.Slice(op.Reshape(u, op.Shape(padded)), [0], L, [2])


@onnxscript.script(vampnet, default_opset=op)
def one_pole_after(v: FLOAT[2, "B", "L"], p: FLOAT[2, 1], last: FLOAT["B", 2]) -> FLOAT[2, "B", "L"]:
    """`one_pole` continuing a filter whose previous output was `last` ((re, im) per row): that
    output enters as p·last added to v's first sample, which is what u[0] = p·u[−1] + v[0] says."""
    entering = op.Unsqueeze(complex_mul(p, op.Transpose(last)), [2])  # (2, B, 1)
    L = op.Shape(v, start=2, end=3)
    return one_pole(v + op.Pad(entering, op.Concat([0, 0, 0, 0, 0], L - 1, axis=0)), p)


@onnxscript.script(vampnet, default_opset=op)
def biquad(x: FLOAT["B", "L"], b: FLOAT[3], p: FLOAT[2, 1], q: FLOAT[2, 1],
           state: FLOAT["B", 6]) -> tuple[FLOAT["B", "L"], FLOAT["B", 6]]:
    """lfilter(b, a, x) for a = (1 − p·z⁻¹)(1 − q·z⁻¹), p and q complex ((re, im)): the zeros first
    (as torchaudio), then one pole after the other (complex poles: a conjugate pair, whose output is
    real). It continues from `state` (all zeros: from rest) and returns the state after x: per row
    the last two inputs, then the last output of each pole ((re, im))."""
    L = op.Shape(x, start=1, end=2)
    before = op.Concat(op.Slice(state, [0], [2], [1]), x, axis=1)  # x[−2], x[−1], x
    v = (op.Gather(b, 0) * op.Slice(before, [2], L + 2, [1]) + op.Gather(b, 1) * op.Slice(before, [1], L + 1, [1])
         + op.Gather(b, 2) * op.Slice(before, [0], L, [1]))
    v = op.Concat(op.Unsqueeze(v, [0]), op.Unsqueeze(op.Mul(v, op.CastLike(0.0, v)), [0]), axis=0)
    u = one_pole_after(v, p, op.Slice(state, [2], [4], [1]))
    w = one_pole_after(u, q, op.Slice(state, [4], [6], [1]))
    after = op.Concat(op.Slice(before, L, L + 2, [1]), op.Transpose(op.Squeeze(op.Slice(u, [-1], L, [2]), [2])),
                      op.Transpose(op.Squeeze(op.Slice(w, [-1], L, [2]), [2])), axis=1)
    y = op.Gather(w, 0)
    return y, after


def k_weighting_stages(rate: int) -> np.ndarray:
    """Upstream's K-weighting at `rate` as it filters: pyloudnorm's float64 coefficients rounded to
    float32 (torchaudio's lfilter takes them as float32), as (2 stages, 7): b0, b1, b2 and the two
    poles (re, im) of 1 + a1·z⁻¹ + a2·z⁻², found in float64 from the rounded a1, a2. The rounding
    matters: it splits the high pass's double pole (by about 3 % of its distance from 1 at 44.1 kHz),
    which moves the loudness by about 1e-4 LU, enough to change a fine codebook's token."""
    stages = []
    for gain_db, q, fc, kind in ((4.0, SHELF_Q, SHELF_HZ, "high_shelf"), (0.0, HIGH_PASS_Q, HIGH_PASS_HZ, "high_pass")):
        A = 10 ** (gain_db / 40.0)
        w0 = 2.0 * np.pi * (fc / rate)
        alpha = np.sin(w0) / (2.0 * q)
        c = np.cos(w0)
        if kind == "high_shelf":
            b = [A * ((A + 1) + (A - 1) * c + 2 * np.sqrt(A) * alpha), -2 * A * ((A - 1) + (A + 1) * c),
                 A * ((A + 1) + (A - 1) * c - 2 * np.sqrt(A) * alpha)]
            a = [(A + 1) - (A - 1) * c + 2 * np.sqrt(A) * alpha, 2 * ((A - 1) - (A + 1) * c),
                 (A + 1) - (A - 1) * c - 2 * np.sqrt(A) * alpha]
        else:
            b = [(1 + c) / 2, -(1 + c), (1 + c) / 2]
            a = [1 + alpha, -2 * c, 1 - alpha]
        b32 = (np.array(b) / a[0]).astype(np.float32)
        a32 = (np.array(a) / a[0]).astype(np.float32).astype(np.float64)
        poles = np.sort_complex(np.roots(a32))
        stages.append([*b32, poles[0].real, poles[0].imag, poles[1].real, poles[1].imag])
    return np.array(stages, np.float32)


# Rates whose K-weighting is upstream's exactly (float32 coefficients, k_weighting_stages); at other
# rates the graph designs the filter itself (`designed_k_weighting`).
COMMON_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000, 176400, 192000, 352800, 384000)
COMMON_STAGES_TENSOR = numpy_helper.from_array(np.stack([k_weighting_stages(r) for r in COMMON_RATES]),
                                               "k_weighting_stages")  # (R, 2, 7)


@onnxscript.script(vampnet, default_opset=op)
def designed_k_weighting(rate: INT64) -> FLOAT[2, 7]:
    """The K-weighting's two stages at any rate, designed in the graph (float32; layout of
    k_weighting_stages). The poles come from the design in closed form (the shelf's are a conjugate
    pair; the high pass has a double pole, a1² = 4·a2 when Q = 1/2), not from the coefficients,
    where a double root would lose half its digits."""
    rate_f = op.Cast(rate, to=FLOAT.dtype)
    A = op.Constant(value_float=SHELF_A)
    root_A = op.Sqrt(A)
    w0 = (2.0 * PI * SHELF_HZ) / rate_f
    cos_w = op.Cos(w0)
    sin_w = op.Sin(w0)
    alpha = sin_w / (2.0 * SHELF_Q)
    a0 = (A + 1.0) - (A - 1.0) * cos_w + 2.0 * root_A * alpha
    b0 = A * ((A + 1.0) + (A - 1.0) * cos_w + 2.0 * root_A * alpha) / a0
    b1 = -2.0 * A * ((A - 1.0) + (A + 1.0) * cos_w) / a0
    b2 = A * ((A + 1.0) + (A - 1.0) * cos_w - 2.0 * root_A * alpha) / a0
    # roots of a0·z² + a1·z + a2: ((A + 1)·cos − (A − 1) ± i·sin·√(A·(4 − 1/Q²))) / a0
    p_re = ((A + 1.0) * cos_w - (A - 1.0)) / a0
    p_im = sin_w * op.Sqrt(A * SHELF_IM_FACTOR) / a0
    shelf = op.Concat(op.Reshape(b0, [1]), op.Reshape(b1, [1]), op.Reshape(b2, [1]), op.Reshape(p_re, [1]),
                      op.Reshape(p_im, [1]), op.Reshape(p_re, [1]), op.Reshape(-p_im, [1]), axis=0)

    w0 = (2.0 * PI * HIGH_PASS_HZ) / rate_f
    cos_w = op.Cos(w0)
    a0 = 1.0 + op.Sin(w0) / (2.0 * HIGH_PASS_Q)
    edge = (1.0 + cos_w) / 2.0 / a0
    pole = cos_w / a0
    no_im = op.CastLike(0.0, pole)
    high_pass = op.Concat(op.Reshape(edge, [1]), op.Reshape(-2.0 * edge, [1]), op.Reshape(edge, [1]),
                          op.Reshape(pole, [1]), op.Reshape(no_im, [1]), op.Reshape(pole, [1]),
                          op.Reshape(no_im, [1]), axis=0)
    return op.Concat(op.Unsqueeze(shelf, [0]), op.Unsqueeze(high_pass, [0]), axis=0)


@onnxscript.script(vampnet, default_opset=op)
def k_weighting_filters(rate: INT64) -> FLOAT[2, 7]:
    """BS.1770's K-weighting at `rate`: pyloudnorm's RBJ high shelf (+4 dB above 1500 Hz, Q 1/√2),
    then its high pass (38 Hz, Q 0.5), normalised by a0 (passband gain 1): upstream's float32
    filter at the COMMON_RATES, designed in the graph at any other rate. Row: b (3), p, q ((re, im))."""
    rates = op.Constant(value_ints=list(COMMON_RATES))
    match = op.Cast(rates == rate, to=INT64.dtype)  # (no int64 ArgMax: onnxruntime 1.17 has none)
    known = op.ReduceSum(match, keepdims=0) > 0
    index = op.ReduceSum(match * op.Range(0, op.Size(rates), 1), keepdims=0)
    table = op.Gather(op.Constant(value=COMMON_STAGES_TENSOR), index)
    return op.Where(known, table, designed_k_weighting(rate))


@onnxscript.script(vampnet, default_opset=op)
def filter_stage(x: FLOAT["B", "L"], stage: FLOAT[7], state: FLOAT["B", 6]) -> tuple[FLOAT["B", "L"], FLOAT["B", 6]]:
    b = op.Slice(stage, [0], [3])
    p = op.Reshape(op.Slice(stage, [3], [5]), [2, 1])
    q = op.Reshape(op.Slice(stage, [5], [7]), [2, 1])
    y, after = biquad(x, b, p, q, state)
    return y, after


@onnxscript.script(vampnet, default_opset=op)
def k_weighting(x: FLOAT["B", "L"], filters: FLOAT[2, 7], state: FLOAT["B", 12]) -> tuple[FLOAT["B", "L"], FLOAT["B", 12]]:
    """x through both of `filters` (`k_weighting_filters`), continuing from `state` (zeros: from
    rest); returns the filtered x and the state after it (`biquad`'s, one per filter)."""
    y, first = filter_stage(x, op.Gather(filters, 0), op.Slice(state, [0], [6], [1]))
    z, second = filter_stage(y, op.Gather(filters, 1), op.Slice(state, [6], [12], [1]))
    after = op.Concat(first, second, axis=1)
    return z, after


# --------------------------------------------------------------------------------------------
# Loudness (audiotools Meter, BS.1770) and the gains
# --------------------------------------------------------------------------------------------


@onnxscript.script(vampnet, default_opset=op)
def to_lufs(mean_square: FLOAT["B", "J"]) -> FLOAT["B", "J"]:
    return LUFS_OFFSET + DB_PER_LN * op.Log(mean_square)


@onnxscript.script(vampnet, default_opset=op)
def gated_mean(z: FLOAT["B", "J"], kept: BOOL["B", "J"]) -> FLOAT["B", 1]:
    """Mean of z over the kept blocks (0 where none is kept)."""
    total = op.ReduceSum(op.Where(kept, z, op.CastLike(0.0, z)), [1], keepdims=1)
    return total / op.Max(op.ReduceSum(op.Cast(kept, to=FLOAT.dtype), [1], keepdims=1), op.CastLike(1.0, z))


@onnxscript.script(vampnet, default_opset=op)
def loudness(x: FLOAT["B", "L"], rate: INT64) -> FLOAT["B"]:
    """Integrated loudness (LUFS) of each row at `rate`, as audiotools' AudioSignal.loudness().

    Blocks of K = floor(0.4·rate) samples every S = floor(0.1·rate) (K = 4S + q, q < 4): each block
    is four chunks of S plus the first q samples of the fifth, so the squares are summed per chunk
    once."""
    L = op.Shape(x, start=1, end=2)
    measured = op.Max(L, op.Reshape(rate / 2, [1]))  # shorter than 0.5 s: zero-padded to 0.5 s
    K = 2 * rate / 5
    S = rate / 10
    n_blocks = (op.Max(measured, op.Reshape(K, [1])) - K + S - 1) / S + 1
    chunks = n_blocks + 4  # covers (n_blocks − 1)·S + K samples
    # The K-weighted squares, summed per chunk, segment by segment (the filter's state carried
    # from one to the next): only a segment's worth of the filter's work is ever held.
    rows = op.Shape(x, start=0, end=1)
    segment = S * SEGMENT_CHUNKS
    segments = (chunks + SEGMENT_CHUNKS - 1) / SEGMENT_CHUNKS
    last = L - 1
    filters = k_weighting_filters(rate)
    in_head = op.Range(0, 4, 1) < K - 4 * S  # the first 4 samples of each chunk (S >= 100)
    # one loop-carried value (see the module's docstring): the filter state (12 per row), then
    # the sums of each segment (chunk sums, then head sums), after a first segment of zeros
    sums = op.Expand(op.Constant(value_float=0.0), op.Concat(rows, op.Constant(value_ints=[FIRST_SUMS]), axis=0))
    for i in range(op.Squeeze(segments)):
        start = op.Reshape(i * segment, [1])
        # the segment, zeros after the end: cut from x and padded here, so that no padded copy
        # of the whole signal is held; a segment wholly after the end (the last can be) cuts
        # x's last sample (never an empty tensor) and zeroes it
        piece = op.Slice(x, op.Min(start, last), start + segment, [1])
        piece = piece * op.Cast(start < L, to=FLOAT.dtype)
        piece = op.Pad(piece, op.Concat([0, 0, 0], segment - op.Shape(piece, start=1, end=2), axis=0))
        y, state = k_weighting(piece, filters, op.Slice(sums, [0], [12], [1]))
        inside = op.Unsqueeze(start + op.Range(0, segment, 1), [0]) < measured  # the end zero-padded after filtering
        square = op.Where(inside, y * y, op.CastLike(0.0, y))
        square = op.Reshape(square, op.Concat(rows, op.Constant(value_ints=[SEGMENT_CHUNKS]), op.Reshape(S, [1]), axis=0))
        chunk = op.ReduceSum(square, [2], keepdims=0)
        head = op.ReduceSum(op.Where(in_head, op.Slice(square, [0], [4], [2]), op.CastLike(0.0, square)), [2], keepdims=0)
        sums = op.Concat(state, op.Slice(sums, [12], op.Shape(sums, start=1, end=2), [1]), chunk, head, axis=1)
    per_segment = op.Reshape(op.Slice(sums, op.Constant(value_ints=[FIRST_SUMS]), op.Shape(sums, start=1, end=2), [1]),
                             op.Concat(rows, segments, op.Constant(value_ints=[2, SEGMENT_CHUNKS]), axis=0))
    chunk_sum = op.Reshape(op.Gather(per_segment, 0, axis=2), op.Concat(rows, [-1], axis=0))  # (B, chunks and more)
    head_sum = op.Reshape(op.Gather(per_segment, 1, axis=2), op.Concat(rows, [-1], axis=0))
    block_sum = (op.Slice(chunk_sum, [0], n_blocks, [1]) + op.Slice(chunk_sum, [1], n_blocks + 1, [1])
                 + op.Slice(chunk_sum, [2], n_blocks + 2, [1]) + op.Slice(chunk_sum, [3], n_blocks + 3, [1])
                 + op.Slice(head_sum, [4], n_blocks + 4, [1]))
    z = block_sum / (op.Cast(rate, to=FLOAT.dtype) * 0.4)  # mean square per block
    l = to_lufs(z)  # −inf for a silent block
    above_absolute = l > FLOOR_LUFS
    relative_gate = to_lufs(gated_mean(z, above_absolute)) + RELATIVE_GATE
    kept = op.And(above_absolute, l > relative_gate)
    mean_square = op.Min(gated_mean(z, kept), op.CastLike(FLOAT32_MAX, z))  # audiotools: inf -> max
    return op.Max(op.Squeeze(to_lufs(mean_square), [1]), op.CastLike(FLOOR_LUFS, z))


@onnxscript.script(vampnet, default_opset=op)
def normalize_loudness(x: FLOAT["B", "L"], rate: INT64, target: FLOAT["B"]) -> FLOAT["B", "L"]:
    """audiotools' normalize(target): each row times 10^((target − loudness)/20)."""
    gain = op.Exp((target - loudness(x, rate)) * GAIN_PER_DB)
    return x * op.Unsqueeze(gain, [1])


@onnxscript.script(vampnet, default_opset=op)
def normalize_unless_there(x: FLOAT["B", "L"], rate: INT64, target: FLOAT["B"]) -> FLOAT["B", "L"]:
    """normalize_loudness, except that a row already within PREPARED_LU of `target` is kept as it
    is: audio prepared as upstream prepares it passes through unchanged and gives upstream's codes
    (re-measured, it reads a few 1e-5 LU off, and that gain of 1 ± 3e-6 can change a fine token)."""
    change = target - loudness(x, rate)
    gain = op.Where(op.Abs(change) <= PREPARED_LU, op.CastLike(1.0, change), op.Exp(change * GAIN_PER_DB))
    return x * op.Unsqueeze(gain, [1])


@onnxscript.script(vampnet, default_opset=op)
def peak(x: FLOAT["B", "L"]) -> FLOAT["B", 1]:
    """max |x| of each row, no |x| held."""
    return op.Max(op.ReduceMax(x, [1], keepdims=1), op.Neg(op.ReduceMin(x, [1], keepdims=1)))


@onnxscript.script(vampnet, default_opset=op)
def ensure_max_of_audio(x: FLOAT["B", "L"]) -> FLOAT["B", "L"]:
    """Rows whose peak exceeds 1 scaled down to peak 1 (audiotools' ensure_max_of_audio(1.0))."""
    top = peak(x)
    return x * op.Where(top > 1.0, 1.0 / op.Max(top, op.CastLike(1.0, top)), op.CastLike(1.0, top))


@onnxscript.script(vampnet, default_opset=op)
def prepared_by_one_gain(x: FLOAT["B", "L"], rate: INT64, model_rate: INT64, lufs: FLOAT["B"]) -> tuple[BOOL, FLOAT["B", 1]]:
    """Whether `prepare` comes down to one gain for x, whose loudness at `rate` is `lufs`, and that
    gain. It does at the model's own rate when no row peaks above 1 after normalize_unless_there's
    gain: ensure_max_of_audio then multiplies by 1, which changes nothing. (Each row's peak after
    the gain is its peak times the gain, exactly: rounding keeps the order of the products.)"""
    change = op.Unsqueeze(op.CastLike(TARGET_LUFS, lufs) - lufs, [1])  # normalize_unless_there's gain
    gain = op.Where(op.Abs(change) <= PREPARED_LU, op.CastLike(1.0, change), op.Exp(change * GAIN_PER_DB))
    one = op.And(rate == model_rate, op.ReduceMax(peak(x) * gain, keepdims=0) <= 1.0)
    return one, gain


@onnxscript.script(vampnet, default_opset=op)
def finite(x: FLOAT["B", "L"]) -> FLOAT["B", "L"]:
    """NaN and ±inf samples read as 0. The Where runs only when the sum says a sample may not be
    finite: on a whole signal onnxruntime's Where peaked at about two copies of it more than its
    output and masks (docs/performance.md, "Where the memory went")."""
    total = op.ReduceSum(x, keepdims=0)
    if op.Or(op.IsNaN(total), op.IsInf(total)):
        y = op.Where(op.Or(op.IsNaN(x), op.IsInf(x)), op.CastLike(0.0, x), x)
    else:
        y = op.Identity(x)
    return y


@onnxscript.script(vampnet, default_opset=op)
def clamp_rate(sample_rate: INT64) -> INT64:
    return op.Clip(sample_rate, MIN_SAMPLE_RATE, MAX_SAMPLE_RATE)


# --------------------------------------------------------------------------------------------
# The model's two ends
# --------------------------------------------------------------------------------------------


@onnxscript.script(vampnet, default_opset=op)
def prepare(audio: FLOAT["B", "X"], length: INT64[1], rate: INT64, model_rate: INT64) -> FLOAT["B", "M"]:
    """Upstream `_preprocess` of mono rows at `rate`, their first `length` samples: at
    `model_rate`, −24 LUFS, peak <= 1. (Padding to whole hops is the encoder's.)"""
    x = resample(audio, length, rate, model_rate)
    target = op.Expand(op.Constant(value_float=TARGET_LUFS), op.Shape(x, start=0, end=1))
    return ensure_max_of_audio(normalize_unless_there(x, model_rate, target))


@onnxscript.script(vampnet, default_opset=op)
def restore(out: FLOAT["B", "N"], length: INT64[1], model_rate: INT64, rate: INT64, samples: INT64[1],
            target: FLOAT["B"]) -> FLOAT["B", "S"]:
    """The generated audio, the first `length` samples of `out` (zeros may follow them), at the
    input's `rate`, `samples` long (cut, or zero-padded at the end), at the input's loudness
    `target` (the app's out.normalize(loudness_in), measured at `rate`). Each branch makes its
    result itself: a value handed out of an If unchanged is copied by onnxruntime."""
    g = gcd(model_rate, rate)
    old = model_rate / g
    new = rate / g
    if old == new:
        # whole frames are never fewer samples than the input's (times the time stretch), and
        # zeros follow them: one cut
        y = op.Slice(out, [0], samples, [1])
    else:
        resampled = resample_frac(out, old, new, op.Squeeze(length))
        y = op.Pad(op.Slice(resampled, [0], samples, [1]),
                   op.Concat([0, 0, 0], op.Max(samples - op.Shape(resampled, start=1, end=2), 0), axis=0))
    return normalize_loudness(y, rate, target)
