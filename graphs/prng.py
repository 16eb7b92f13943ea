"""Counter-based PRNG inside the graph, driven by the int64 `seed` input.

ONNX's random ops cannot be re-seeded per run, so every random number in the model is a pure
function of (seed, stream path, flat index): the same seed gives the same numbers in every
runtime and in numpy (tests/numpy_reference.py), bit for bit.

Portability decides the arithmetic. Some runtimes have no uint32 Mul (onnxruntime < 1.21), no
BitShift on signed types (onnxruntime), or compute int64 in int32 (OpenVINO's CPU plugin). So
everything here is int32 whose values never need more than 31 bits: 16-bit words, products of a
16-bit word and a 15-bit constant (< 2^31), shifts written as Div by a power of two on
non-negative values, masks as BitwiseAnd.

The hash is a 6-round Feistel network on two 16-bit halves (L, R):

    round r:  L, R = R, L ^ F(R ^ k_r, M_r)      F(x, M) = (t ^ (t / 2^16)) & 0xFFFF,  t = x·M
    k_r = the key's high half (r even) or low half (r odd), xor a round constant C_r

It is a bijection of 32-bit blocks for each key (any Feistel network is), and 4 rounds already
reach full avalanche (every output bit flips with probability 1/2 when any input bit flips).

    key             int32 scalar in [0, 2^31): high half 15 bits, low half 16 bits
    seed_key(seed)  = block(FIXED_KEY, low 32 bits of seed)      (seed and seed + 2^32 coincide)
    derive_key(k, n) = block(k, low 32 bits of n) cut to 31 bits  child key of stream n
    random_bits(k, shape): x_i = block(k, i), i = flat (row-major) index, as (hi16, lo16)
    uniform: m_i = the top 23 bits of x_i, u_i = (2·m_i + 1)·2^-24   exact in float32, in (0, 1)
    randint(k, shape, high) = floor(m_i · high / 2^23)                exact for high <= 2^24

A stream is prefix-stable: drawing shape (2, 3) gives the first 6 numbers of the stream, so (3,)
draws its first 3. Keys have 31 bits, so about 2^15 distinct streams may collide by the birthday
bound; the model uses a few thousand.

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

from graphs.opsets import op, vampnet

# Stream ids (second argument of derive_key). Changing them changes every output for a given seed.
STREAM_MASK = 0
STREAM_COARSE = 1
STREAM_C2F = 2
STREAM_FEEDBACK = 3
MASK_RANDOM = 0
MASK_ROLL = 1
MASK_DROPOUT = 2

# Odd multipliers below 2^15 (so x·M < 2^31 for a 16-bit x) and round constants, one per round.
# Any odd values work; these are digits of well-known hash constants, chosen to be irregular.
MULTIPLIERS = (0x6A5B, 0x4C93, 0x7D2F, 0x5E8B, 0x63A9, 0x45D5)
ROUND_CONSTANTS = (0x9E37, 0x79B9, 0x7F4A, 0x7C15, 0xF39C, 0xC6EF)
SEED_KEY = 0x2545F491  # the fixed key under which the seed itself is hashed
WORD = 65536  # 2^16


@onnxscript.script(vampnet, default_opset=op)
def mix(x: INT32[...], multiplier: INT32) -> INT32[...]:
    """F(x, M) = (t ^ (t / 2^16)) & 0xFFFF with t = x·M < 2^31: the product's high bits fold down."""
    t = x * multiplier
    return op.BitwiseAnd(op.BitwiseXor(t, t / 65536), 0xFFFF)


@onnxscript.script(vampnet, default_opset=op)
def block(key: INT32, high: INT32[...], low: INT32[...]):
    """The keyed 32-bit permutation on (high, low) 16-bit words; returns the two output words.

    Six rounds (L, R) -> (R, L ^ F(R ^ k_r, M_r)), constants from MULTIPLIERS / ROUND_CONSTANTS.
    """
    k_high = key / 65536  # key >= 0: the division is a shift
    k_low = op.BitwiseAnd(key, 0xFFFF)
    m = op.Cast(op.Constant(value_ints=MULTIPLIERS), to=INT32.dtype)
    c = op.Cast(op.Constant(value_ints=ROUND_CONSTANTS), to=INT32.dtype)
    left = op.BitwiseXor(high, k_high)
    right = op.BitwiseXor(low, k_low)
    for_round = op.Concat(op.Reshape(k_high, [1]), op.Reshape(k_low, [1]), axis=0)
    k = op.BitwiseXor(op.Tile(for_round, [3]), c)  # k_high, k_low, k_high, ... xor C_r
    mixed = op.BitwiseXor(left, mix(op.BitwiseXor(right, k[0]), m[0]))
    left = right
    right = mixed
    mixed = op.BitwiseXor(left, mix(op.BitwiseXor(right, k[1]), m[1]))
    left = right
    right = mixed
    mixed = op.BitwiseXor(left, mix(op.BitwiseXor(right, k[2]), m[2]))
    left = right
    right = mixed
    mixed = op.BitwiseXor(left, mix(op.BitwiseXor(right, k[3]), m[3]))
    left = right
    right = mixed
    mixed = op.BitwiseXor(left, mix(op.BitwiseXor(right, k[4]), m[4]))
    left = right
    right = mixed
    mixed = op.BitwiseXor(left, mix(op.BitwiseXor(right, k[5]), m[5]))
    left = right
    right = mixed
    return left, right


@onnxscript.script(vampnet, default_opset=op)
def words(n: INT64[...]):
    """The low 32 bits of n as (high, low) 16-bit words in int32 (negative n wraps).

    The int32 Cast keeps the low 32 bits, and the exact division below is the same whether a
    runtime holds the value in int64 or in int32: only the low 32 bits are ever used.
    """
    n32 = op.Cast(n, to=INT32.dtype)
    low = op.BitwiseAnd(n32, 0xFFFF)
    high = op.BitwiseAnd((n32 - low) / 65536, 0xFFFF)  # exact: n32 - low is a multiple of 2^16
    return high, low


@onnxscript.script(vampnet, default_opset=op)
def key_from_words(high: INT32, low: INT32) -> INT32:
    """A 31-bit key from two words (the high word's top bit is dropped so the key stays >= 0)."""
    return op.BitwiseAnd(high, 0x7FFF) * 65536 + low


@onnxscript.script(vampnet, default_opset=op)
def seed_key(seed: INT64) -> INT32:
    """Root key from the low 32 bits of the seed."""
    high, low = words(seed)
    out_high, out_low = block(op.Cast(op.Constant(value_int=SEED_KEY), to=INT32.dtype), high, low)
    return key_from_words(out_high, out_low)


@onnxscript.script(vampnet, default_opset=op)
def derive_key(key: INT32, n: INT64) -> INT32:
    """Child key for stream n (n: stage / chunk / step / purpose id, a small non-negative int)."""
    high, low = words(n)
    out_high, out_low = block(key, high, low)
    return key_from_words(out_high, out_low)


@onnxscript.script(vampnet, default_opset=op)
def top23(key: INT32, shape: INT64["R"]) -> INT32[...]:
    """The top 23 bits of x_i = block(key, i) for the flat index i, reshaped to `shape`."""
    count = op.ReduceProd(shape, keepdims=0)  # 1 for shape = [] (a scalar)
    high, low = words(op.Range(0, count, 1))
    out_high, out_low = block(key, high, low)
    bits = out_high * 128 + out_low / 512  # 16 + 7 bits
    # allowzero=1: a 0 in `shape` means an empty axis, not "copy the input's dim" (Reshape's default)
    return op.Reshape(bits, shape, allowzero=1)


@onnxscript.script(vampnet, default_opset=op)
def uniform(key: INT32, shape: INT64["R"]) -> FLOAT[...]:
    """Uniforms in (0, 1): the top 23 bits m give (2m + 1)·2^-24, exact in float32, never 0 or 1."""
    odd = op.Cast(top23(key, shape) * 2 + 1, to=FLOAT.dtype)  # < 2^24: exact
    return odd * 5.9604644775390625e-08  # 2^-24: exact


@onnxscript.script(vampnet, default_opset=op)
def randint(key: INT32, shape: INT64["R"], high: INT64) -> INT64[...]:
    """Integers in [0, high): floor(m · high / 2^23) for the top 23 bits m, in exact integer steps.

    high is clamped to [1, 2^24]. With m = mh·2^12 + ml and high = hh·2^12 + hl (12-bit limbs)
    every partial product stays below 2^25:
        floor(m·high / 2^23) = 2·mh·hh + floor((mh·hl + ml·hh + floor(ml·hl / 2^12)) / 2^11)
    """
    h = op.Cast(op.Min(op.Max(high, 1), 16777216), to=INT32.dtype)
    m = top23(key, shape)
    mh = m / 4096
    ml = op.BitwiseAnd(m, 4095)
    hh = h / 4096
    hl = op.BitwiseAnd(h, 4095)
    middle = mh * hl + ml * hh + (ml * hl) / 4096
    return op.Cast(mh * hh * 2 + middle / 2048, to=INT64.dtype)
