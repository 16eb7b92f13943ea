"""Counter-based PRNG inside the graph, driven by the int64 `seed` input.

ONNX's random ops cannot be re-seeded per run, so every random number in the model is a pure
function of (seed, stream path, flat index): the same seed gives the same numbers in every
runtime and in numpy (tests/numpy_reference.py), bit for bit.

Portability decides the arithmetic. Some runtimes have no uint32 Mul (onnxruntime < 1.21), no
BitShift on signed types (onnxruntime), compute int64 in int32, or even compute integer Mul and
Div through float32 (OpenVINO's CPU plugin does both). So everything here is int32 whose
arithmetic results stay below 2^24, where float32 is exact: 16-bit words, products of an 8-bit
limb and a 15-bit constant, shifts written as Div by a power of two on non-negative values, masks
as BitwiseAnd.

The hash is a 6-round Feistel network on two 16-bit halves (L, R):

    round r:  L, R = R, L ^ F(R ^ k_r, M_r)      F(x, M) = (t ^ (t / 2^16)) & 0xFFFF,  t = x·M
    k_r = the key's high word (r even) or low word (r odd), xor a round constant C_r
    t < 2^31 is never formed: F is computed from the two 8-bit limbs of x (see `mix`).

It is a bijection of 32-bit blocks for each key (any Feistel network is), and 4 rounds already
reach full avalanche (every output bit flips with probability 1/2 when any input bit flips).

    key             int32 (2,): two 16-bit words
    seed_key(seed)  = block(SEED_KEY, low 32 bits of seed)       (seed and seed + 2^32 coincide)
    derive_key(k, n) = block(k, low 32 bits of n)                 child key of stream n
    x_i = block(k, i), i = flat (row-major) index, as two words
    uniform: m_i = the top 23 bits of x_i, u_i = (2·m_i + 1)·2^-24   exact in float32, in (0, 1)
    randint(k, shape, high) = floor(m_i · high / 2^23)                exact for high <= 2^23

A stream is prefix-stable: drawing shape (2, 3) gives the first 6 numbers of the stream, so (3,)
draws its first 3. Keys have 32 bits, so about 2^16 distinct streams may collide by the birthday
bound; the model uses a few thousand. Indices are exact up to 2^24 elements per draw in runtimes
that compute integers in float32 (a coarse step of 8 variations draws 18.8 M).

Stream layout (the `n` of derive_key at each level; one tree for the whole model):

    root = seed_key(seed)
    ├── derive_key(root, STREAM_MASK)       key given to masks.build_mask / resolve_mask
    │   ├── derive_key(., MASK_RANDOM)      random mask: uniforms (B, K, T)
    │   ├── derive_key(., MASK_ROLL)        periodic prompt roll: one offset per batch row (B,)
    │   └── derive_key(., MASK_DROPOUT)     dropout: frame indices (B, n)
    ├── derive_key(root, STREAM_COARSE)     coarse stage (its first feedback pass)
    │   └── derive_key(., chunk) → derive_key(., step) → derive_key(., purpose)
    ├── derive_key(root, STREAM_FEEDBACK)   coarse feedback passes
    │   └── derive_key(., pass) for pass >= 1: a coarse stage key, same layout as coarse
    └── derive_key(root, STREAM_C2F)        coarse-to-fine stage, same layout as coarse

The per-stage layout below the stage key (chunk, step, purpose ids) belongs to the sampling code;
it only has to keep one derive_key level per index so streams never share a path.
"""
import onnxscript
from onnxscript import FLOAT, INT32, INT64

from vampnet_onnx.graphs.opsets import op, vampnet

# Stream ids (second argument of derive_key). Changing them changes every output for a given seed.
STREAM_MASK = 0
STREAM_COARSE = 1
STREAM_C2F = 2
STREAM_FEEDBACK = 3
MASK_RANDOM = 0
MASK_ROLL = 1
MASK_DROPOUT = 2

# Odd multipliers below 2^15 (an 8-bit limb times one stays below 2^23) and round constants.
# Any odd values work; these are digits of well-known hash constants, chosen to be irregular.
MULTIPLIERS = (0x6A5B, 0x4C93, 0x7D2F, 0x5E8B, 0x63A9, 0x45D5)
ROUND_CONSTANTS = (0x9E37, 0x79B9, 0x7F4A, 0x7C15, 0xF39C, 0xC6EF)
SEED_KEY = (0x2545, 0xF491)  # the fixed key under which the seed itself is hashed
M0, M1, M2, M3, M4, M5 = MULTIPLIERS  # the graph code reads the constants by name
C0, C1, C2, C3, C4, C5 = ROUND_CONSTANTS


@onnxscript.script(vampnet, default_opset=op)
def mix(x: INT32[...], multiplier: INT64) -> INT32[...]:
    """F(x, M) = (t mod 2^16) ^ (t / 2^16) for t = x·M, x < 2^16, M < 2^15, without forming t.

    With x = 256·xh + xl: t = 256·a + b for a = xh·M and b = xl·M (both < 2^23), so
        t mod 2^16 = (256·(a mod 256) + b) mod 2^16     and     t / 2^16 = a / 256 + s / 2^16
    where s = 256·(a mod 256) + b < 2^24: every value stays exact in float32.
    """
    m = op.CastLike(multiplier, x)
    a = (x / 256) * m
    b = op.BitwiseAnd(x, 255) * m
    s = op.BitwiseAnd(a, 255) * 256 + b
    return op.BitwiseXor(op.BitwiseAnd(s, 0xFFFF), a / 256 + s / 65536)


@onnxscript.script(vampnet, default_opset=op)
def feistel_round(left: INT32[...], right: INT32[...], key_word: INT32[1], constant: INT64, multiplier: INT64):
    """(L, R) -> (R, L ^ F(R ^ k, M)) with k = the key word ^ the round constant."""
    k = op.BitwiseXor(key_word, op.CastLike(constant, key_word))
    return right, op.BitwiseXor(left, mix(op.BitwiseXor(right, k), multiplier))


@onnxscript.script(vampnet, default_opset=op)
def block(key: INT32[2], high: INT32[...], low: INT32[...]):
    """The keyed 32-bit permutation on (high, low) 16-bit words; returns the two output words.

    Six Feistel rounds, the key's high and low words taking turns.
    """
    # The key's words as (1,) slices: OpenVINO's CPU plugin reuses a scalar Gather of a
    # loop-carried tensor from the first Loop iteration (measured with 2026.4), a Slice it does not.
    k_high = op.Slice(key, [0], [1])
    k_low = op.Slice(key, [1], [2])
    left, right = op.BitwiseXor(high, k_high), op.BitwiseXor(low, k_low)
    left, right = feistel_round(left, right, k_high, C0, M0)
    left, right = feistel_round(left, right, k_low, C1, M1)
    left, right = feistel_round(left, right, k_high, C2, M2)
    left, right = feistel_round(left, right, k_low, C3, M3)
    left, right = feistel_round(left, right, k_high, C4, M4)
    left, right = feistel_round(left, right, k_low, C5, M5)
    return left, right


@onnxscript.script(vampnet, default_opset=op)
def words(n: INT64[...]):
    """The low 32 bits of n as (high, low) 16-bit words in int32 (negative n wraps).

    The int32 Cast keeps the low 32 bits; everything after it is bitwise or exact in float32.
    """
    n32 = op.Cast(n, to=INT32.dtype)
    low = op.BitwiseAnd(n32, 0xFFFF)
    # bits 16-30 (a multiple of 2^16: exact even in float32), then the sign bit as bit 15
    high = op.BitwiseAnd(n32, 0x7FFF0000) / 65536 + op.Cast(n32 < 0, to=INT32.dtype) * 32768
    return high, low


@onnxscript.script(vampnet, default_opset=op)
def seed_key(seed: INT64) -> INT32[2]:
    """Root key from the low 32 bits of the seed."""
    high, low = words(seed)
    fixed = op.Cast(op.Constant(value_ints=SEED_KEY), to=INT32.dtype)
    out_high, out_low = block(fixed, high, low)
    return op.Concat(op.Reshape(out_high, [1]), op.Reshape(out_low, [1]), axis=0)


@onnxscript.script(vampnet, default_opset=op)
def derive_key(key: INT32[2], n: INT64) -> INT32[2]:
    """Child key for stream n (n: stage / chunk / step / purpose id, a small non-negative int)."""
    high, low = words(n)
    out_high, out_low = block(key, high, low)
    return op.Concat(op.Reshape(out_high, [1]), op.Reshape(out_low, [1]), axis=0)


@onnxscript.script(vampnet, default_opset=op)
def top23(key: INT32[2], shape: INT64["R"]) -> INT32[...]:
    """The top 23 bits of x_i = block(key, i) for the flat index i, reshaped to `shape`."""
    count = op.ReduceProd(shape, keepdims=0)  # 1 for shape = [] (a scalar)
    high, low = words(op.Range(0, count, 1))
    out_high, out_low = block(key, high, low)
    bits = out_high * 128 + out_low / 512  # 16 + 7 bits
    # allowzero=1: a 0 in `shape` means an empty axis, not "copy the input's dim" (Reshape's default)
    return op.Reshape(bits, shape, allowzero=1)


@onnxscript.script(vampnet, default_opset=op)
def uniform(key: INT32[2], shape: INT64["R"]) -> FLOAT[...]:
    """Uniforms in (0, 1): the top 23 bits m give (2m + 1)·2^-24, exact in float32, never 0 or 1."""
    odd = op.Cast(top23(key, shape) * 2 + 1, to=FLOAT.dtype)  # < 2^24: exact
    return odd * 5.9604644775390625e-08  # 2^-24: exact


@onnxscript.script(vampnet, default_opset=op)
def randint(key: INT32[2], shape: INT64["R"], high: INT64) -> INT64[...]:
    """Integers in [0, high): floor(m · high / 2^23) for the top 23 bits m, in exact integer steps.

    high is clamped to [1, 2^23]. With m = mh·2^12 + ml and high = hh·2^12 + hl (12-bit limbs)
    every partial product and sum stays below 2^24:
        floor(m·high / 2^23) = 2·mh·hh + floor((mh·hl + ml·hh + floor(ml·hl / 2^12)) / 2^11)
    """
    h = op.Cast(op.Min(op.Max(high, 1), 8388608), to=INT32.dtype)
    m = top23(key, shape)
    mh = m / 4096
    ml = op.BitwiseAnd(m, 4095)
    hh = h / 4096
    hl = op.BitwiseAnd(h, 4095)
    middle = mh * hl + ml * hh + (ml * hl) / 4096
    return op.Cast(mh * hh * 2 + middle / 2048, to=INT64.dtype)


@onnxscript.script(vampnet, default_opset=op)
def exponential(u: FLOAT[...]) -> FLOAT[...]:
    """−log(u) for u in (0, 1), accurate to an ulp also where u is near 1.

    There −log(u) ≈ 1 − u is tiny and a float32 Log loses its relative accuracy, differently in
    every runtime; the sampler's winner is decided by exactly these tiny values (argmax p / q).
    So for v = 1 − u < 1/16 (exact: u >= 1/2) the series v + v²/2 + v³/3 + … + v⁷/7 is used,
    plain float32 multiply-adds that every runtime rounds alike.
    """
    v = 1.0 - u
    series = v * (1.0 + v * (0.5 + v * (0.33333334 + v * (0.25 + v * (0.2 + v * (0.16666667 + v * 0.14285715))))))
    return op.Where(v < 0.0625, series, op.Neg(op.Log(u)))
