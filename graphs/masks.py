"""The generation mask, built inside the graph: upstream `Interface.build_mask`.

A mask is int64 (B, K, T): 1 = generate the token, 0 = keep the input's token. Builders, as upstream:

    random_mask      Bernoulli(r) per token: u < r, u from the PRNG
    inpaint_mask     keep the first n_prefix and the last n_suffix frames (n > T keeps everything)
    periodic_mask    keep frames within floor(w/2) of an anchor j ≡ 0 (mod P), 0 ≤ j ≤ T−1 (windows
                     clipped to [0, T−1]; w = 0 acts as 1; an even w keeps w+1 frames), then roll
                     each row by a random offset in [0, P): out[(t + off) mod T] = in[t]; P = 0: off
    dropout_mask     n = int(T·p) random frames per row (duplicates allowed) re-masked in all codebooks
    codebook_unmask  codebooks < ncc kept
    onset prompt     keep [o − W, o + W) around every note onset o of the audio (graphs/onsets.py);
                     computed by the caller, all ones when off
    codebook_unmask  codebooks < ncc kept
    codebook_mask    codebooks ≥ upper generated
    beat prompt      keep frames just after every beat (graphs/beats.py); computed by the caller, all
                     ones when off; applied after the rest, as upstream's app does

    built = codebook_mask(codebook_unmask(dropout(min(random, inpaint, periodic, onset)), ncc), upper)
    build_mask = codebook_mask(min(built, beat), upper)

Deliberate difference from upstream: batch rows are independent, so the periodic roll and the
dropout frames are drawn per row (upstream draws one roll / one frame list for the whole batch).
For B = 1 the semantics are identical; the random numbers come from our PRNG, not PyTorch's.

Parameters are clamped in the graph, by build_mask (a runtime other than ours has no host code to
check them; the builders themselves expect in-range values). The valid ranges and what happens
outside them are the interface table's (vampnet_onnx/interface.py: `low`, `high`, `outside`).

Frame counts from seconds follow upstream's `s2t(x) = ceil(x·sample_rate/hop)`, which Python
computes exactly for a float32 x (the product has at most 36 significant bits). The graph gets the
same integer without float64: `frame_rate` = sample_rate/hop is a float32 constant (the builder
checks that it is exact), and `exact_ceil` rounds the exact product x·frame_rate, recovered as the
sum of two float32 numbers (Dekker's product).

The random streams come from the `key` argument (graphs/prng.py: derive_key(root, STREAM_MASK)):
derive_key(key, MASK_RANDOM) for the random mask, MASK_ROLL for the roll offsets, MASK_DROPOUT for
the dropout frames.

An explicit mask (the model's `mask` input) replaces the builders when it is not empty; `fit_mask`
makes it fit the codes: row b uses mask row b mod Bm, codebooks and frames are cropped or padded with
1 (generate), values are clipped to [0, 1]. A mask with Bm = 0 or Km = 0 (or Tm = 0) has nothing to
keep and fits as all ones; `resolve_mask` sends every empty mask (size 0) to build_mask instead.
"""
import onnxscript
from onnxscript import BOOL, FLOAT, INT32, INT64

from vampnet_onnx.graphs.opsets import op, vampnet
from vampnet_onnx.graphs.prng import MASK_DROPOUT, MASK_RANDOM, MASK_ROLL, derive_key, randint, uniform
from vampnet_onnx.interface import MAX_PERIOD, MAX_SECONDS

SPLITTER = 4097.0  # 2^12 + 1: splits a float32 into two halves of 12 significant bits (Veltkamp)


# --------------------------------------------------------------------------------------------
# Parameter clamping and units
# --------------------------------------------------------------------------------------------


@onnxscript.script(vampnet, default_opset=op)
def clamp_real(x: FLOAT, lo: FLOAT, hi: FLOAT) -> FLOAT:
    """x clipped to [lo, hi]; NaN acts as 0 (then clipped), ±inf become the bounds."""
    x = op.Where(op.IsNaN(x), op.CastLike(0.0, x), x)
    return op.Min(op.Max(x, lo), hi)


@onnxscript.script(vampnet, default_opset=op)
def clamp_int(x: INT64, lo: INT64, hi: INT64) -> INT64:
    return op.Min(op.Max(x, lo), hi)


@onnxscript.script(vampnet, default_opset=op)
def two_product(a: FLOAT[...], b: FLOAT[...]):
    """(p, e) with p = fl32(a·b) and p + e = a·b exactly (Dekker; no overflow for |a|, |b| < 1e30).

    Each half has at most 12 significant bits, so every partial product below is exact, also
    where a runtime fuses a multiply and an add.
    """
    ta = a * SPLITTER
    a_high = ta - (ta - a)
    a_low = a - a_high
    tb = b * SPLITTER
    b_high = tb - (tb - b)
    b_low = b - b_high
    p = a * b
    e = ((a_high * b_high - p) + a_high * b_low + a_low * b_high) + a_low * b_low
    return p, e


@onnxscript.script(vampnet, default_opset=op)
def exact_ceil(a: FLOAT[...], b: FLOAT[...]) -> INT64[...]:
    """ceil(a·b) of the exact product p + e: ceil(p) where p is no integer (|e| is smaller than
    p's distance to the next integer), else p + ceil(e)."""
    p, e = two_product(a, b)
    up = op.Ceil(p)
    rest = op.Where(up == p, op.Ceil(e), 0.0)
    return op.Cast(up, to=INT64.dtype) + op.Cast(rest, to=INT64.dtype)


@onnxscript.script(vampnet, default_opset=op)
def exact_floor(a: FLOAT[...], b: FLOAT[...]) -> INT64[...]:
    """floor(a·b) of the exact product p + e: floor(p), or p + floor(e) where p is an integer."""
    p, e = two_product(a, b)
    down = op.Floor(p)
    rest = op.Where(down == p, op.Floor(e), 0.0)
    return op.Cast(down, to=INT64.dtype) + op.Cast(rest, to=INT64.dtype)


@onnxscript.script(vampnet, default_opset=op)
def s2t(seconds: FLOAT, frame_rate: FLOAT) -> INT64:
    """Upstream `ceil(seconds·SR/HOP)`, exactly; seconds already clamped, frame_rate = SR/HOP."""
    return exact_ceil(seconds, frame_rate)


# --------------------------------------------------------------------------------------------
# Builders: each returns int64 (B, K, T) shaped like `codes` (only its shape is used)
# --------------------------------------------------------------------------------------------


@onnxscript.script(vampnet, default_opset=op)
def random_mask(codes: INT64["B", "K", "T"], key: INT32[2], intensity: FLOAT) -> INT64["B", "K", "T"]:
    """Bernoulli(intensity) per token: 1 where u < intensity (u in (0,1): r = 0 → none, r = 1 → all)."""
    u = uniform(key, op.Shape(codes))
    return op.Cast(u < intensity, to=INT64.dtype)


@onnxscript.script(vampnet, default_opset=op)
def inpaint_mask(codes: INT64["B", "K", "T"], n_prefix: INT64, n_suffix: INT64) -> INT64["B", "K", "T"]:
    """Keep the first n_prefix and the last n_suffix frames in every row and codebook."""
    T = op.Squeeze(op.Shape(codes, start=2, end=3))
    t = op.Range(0, T, 1)
    keep = op.Or(t < n_prefix, t >= T - n_suffix)  # python slices: n ≥ T keeps all
    return op.Expand(op.Cast(op.Not(keep), to=INT64.dtype), op.Shape(codes))


@onnxscript.script(vampnet, default_opset=op)
def periodic_keep(t: INT64[...], T: INT64, period: INT64, width: INT64) -> BOOL[...]:
    """Is frame t (0 ≤ t < T) within floor(width/2) of an anchor j = 0, P, 2P, … ≤ T−1? (P ≥ 1)

    Upstream zeroes [max(0, j − w//2), min(T−1, j + w//2) + 1) for every anchor j; frame t is in such
    a window iff the anchor just below it (always ≤ t ≤ T−1) or the one just above it (if ≤ T−1) is
    within w//2. Clipping at 0 and T−1 is automatic since only 0 ≤ t < T are asked about.
    """
    half = width / 2  # w = 0 and w = 1 both give 0: the anchor alone
    r = t % period  # distance to the anchor below
    near_below = r <= half
    near_above = op.And(period - r <= half, t - r + period <= T - 1)
    return op.Or(near_below, near_above)


@onnxscript.script(vampnet, default_opset=op)
def periodic_mask(
    codes: INT64["B", "K", "T"], key: INT32[2], period: INT64, width: INT64
) -> INT64["B", "K", "T"]:
    """Periodic prompt, rolled per batch row by randint(0, P); all ones when P = 0 (off)."""
    B = op.Shape(codes, start=0, end=1)
    T = op.Squeeze(op.Shape(codes, start=2, end=3))
    safe_period = op.Max(period, 1)  # Mod by 0 is an error; P = 0 is handled by the Where below
    safe_T = op.Max(T, 1)
    offset = op.Unsqueeze(randint(key, B, safe_period), [1])  # (B, 1)
    # out[(t + off) mod T] = in[t]  ⇔  out[s] = in[(s − off) mod T]; Mod follows the divisor's sign
    source = (op.Range(0, T, 1) - offset) % safe_T  # (B, T)
    keep = periodic_keep(source, T, safe_period, op.Max(width, 0))
    keep = op.And(keep, period > 0)
    row = op.Cast(op.Not(keep), to=INT64.dtype)
    return op.Expand(op.Unsqueeze(row, [1]), op.Shape(codes))


@onnxscript.script(vampnet, default_opset=op)
def dropout_mask(mask: INT64["B", "K", "T"], key: INT32[2], p: FLOAT) -> INT64["B", "K", "T"]:
    """Re-mask n = int(T·p) random frames per row in all codebooks (duplicates allowed)."""
    B = op.Shape(mask, start=0, end=1)
    T = op.Shape(mask, start=2, end=3)
    n = exact_floor(op.Cast(T, to=FLOAT.dtype), p)  # T < 2^24 frames: exact in float32
    n = op.Min(op.Max(n, 0), T)  # p is clamped to [0, 1] by build_mask; this only guards
    frames = randint(key, op.Concat(B, n, axis=0), op.Squeeze(T))  # (B, n)
    zeros = op.Expand(op.CastLike(0, mask), op.Concat(B, T, axis=0))
    ones = op.Expand(op.CastLike(1, mask), op.Shape(frames))
    # 1 at every drawn frame; "max" makes duplicate indices well defined
    hit = op.ScatterElements(zeros, frames, ones, axis=1, reduction="max")  # (B, T)
    return op.Max(mask, op.Unsqueeze(hit, [1]))


@onnxscript.script(vampnet, default_opset=op)
def codebook_unmask(mask: INT64["B", "K", "T"], ncc: INT64) -> INT64["B", "K", "T"]:
    """Keep (0) every token of codebooks < ncc (the conditioning codebooks)."""
    K = op.Squeeze(op.Shape(mask, start=1, end=2))
    k = op.Unsqueeze(op.Range(0, K, 1), [0, 2])  # (1, K, 1)
    return mask * op.Cast(k >= ncc, to=INT64.dtype)


@onnxscript.script(vampnet, default_opset=op)
def codebook_mask(mask: INT64["B", "K", "T"], upper: INT64) -> INT64["B", "K", "T"]:
    """Generate (1) every token of codebooks ≥ upper."""
    K = op.Squeeze(op.Shape(mask, start=1, end=2))
    k = op.Unsqueeze(op.Range(0, K, 1), [0, 2])  # (1, K, 1)
    return op.Max(mask, op.Cast(k >= upper, to=INT64.dtype))


# --------------------------------------------------------------------------------------------
# The mask of the model
# --------------------------------------------------------------------------------------------


@onnxscript.script(vampnet, default_opset=op)
def build_mask(
    codes: INT64["B", "K", "T"],
    key: INT32[2],
    rand_mask_intensity: FLOAT,
    prefix_s: FLOAT,
    suffix_s: FLOAT,
    periodic_prompt: INT64,
    periodic_prompt_width: INT64,
    dropout: FLOAT,
    ncc: INT64,
    upper_codebook_mask: INT64,
    frame_rate: FLOAT,
    onset: INT64["B", "K", "T"],
    beat: INT64["B", "K", "T"],
) -> INT64["B", "K", "T"]:
    """Upstream `Interface.build_mask`, parameters clamped first (module doc), then the app's beat prompt.

    frame_rate: codec frames per second (sample rate / hop), exact in float32.
    onset, beat: the onset and beat prompts (1 generate, 0 keep; all ones when off), shaped like codes.
    """
    K = op.Squeeze(op.Shape(codes, start=1, end=2))
    intensity = clamp_real(rand_mask_intensity, 0.0, 1.0)
    n_prefix = s2t(clamp_real(prefix_s, 0.0, MAX_SECONDS), frame_rate)
    n_suffix = s2t(clamp_real(suffix_s, 0.0, MAX_SECONDS), frame_rate)
    period = clamp_int(periodic_prompt, 0, MAX_PERIOD)
    width = clamp_int(periodic_prompt_width, 0, MAX_PERIOD)
    p_dropout = clamp_real(dropout, 0.0, 1.0)
    n_cond = clamp_int(ncc, 0, K)
    upper = clamp_int(upper_codebook_mask, 0, K)

    mask = random_mask(codes, derive_key(key, MASK_RANDOM), intensity)
    # a frame is kept if any prompt keeps it (upstream mask_and = elementwise min)
    mask = op.Min(mask, inpaint_mask(codes, n_prefix, n_suffix))
    mask = op.Min(mask, periodic_mask(codes, derive_key(key, MASK_ROLL), period, width))
    mask = op.Min(mask, onset)
    mask = dropout_mask(mask, derive_key(key, MASK_DROPOUT), p_dropout)
    mask = codebook_unmask(mask, n_cond)
    # upstream's app: codebook_mask(mask_and(codebook_mask(mask, upper), beat), upper), which is this
    return codebook_mask(op.Min(mask, beat), upper)


@onnxscript.script(vampnet, default_opset=op)
def fit_mask(mask: INT64["Bm", "Km", "Tm"], codes: INT64["B", "K", "T"]) -> INT64["B", "K", "T"]:
    """An explicit mask made to fit codes: rows b mod Bm, crop or pad (with 1) codebooks and frames.

    Never fails for a 3-D mask of any shape: it is first padded to at least (1, K, T) with 1, so an
    empty mask (Bm, Km or Tm = 0) fits as all ones (generate everything).
    """
    mask = op.Min(op.Max(mask, op.CastLike(0, mask)), op.CastLike(1, mask))  # e.g. 2 → 1, −1 → 0
    have = op.Shape(mask)  # [Bm, Km, Tm]
    want = op.Concat(op.Constant(value_ints=[1]), op.Shape(codes, start=1, end=3), axis=0)  # [1, K, T]
    grow = op.Max(want - have, 0)
    pads = op.Concat(op.Constant(value_ints=[0, 0, 0]), grow, axis=0)  # pad at the end only
    mask = op.Pad(mask, pads, op.CastLike(1, mask), mode="constant")
    mask = op.Slice(mask, op.Constant(value_ints=[0, 0]), op.Shape(codes, start=1, end=3), [1, 2])
    rows = op.Range(0, op.Squeeze(op.Shape(codes, start=0, end=1)), 1) % op.Max(
        op.Squeeze(op.Shape(mask, start=0, end=1)), 1
    )
    return op.Gather(mask, rows, axis=0)


@onnxscript.script(vampnet, default_opset=op)
def resolve_mask(mask: INT64["Bm", "Km", "Tm"], built: INT64["B", "K", "T"]) -> INT64["B", "K", "T"]:
    """The mask used: the explicit one fitted to the codes' shape, or, if it is empty, the one
    built from the parameters (both are cheap, so both are computed and one is picked)."""
    return op.Where(op.Size(mask) == 0, built, fit_mask(mask, built))
