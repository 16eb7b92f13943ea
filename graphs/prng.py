"""Counter-based PRNG inside the graph, driven by the int64 `seed` input.

ONNX's random ops cannot be re-seeded per run (onnx-notes §4), so every random number in the model
is a pure function of (seed, stream path, flat index): the same seed gives the same numbers in
onnxruntime, onnx.reference.ReferenceEvaluator and numpy (tests/numpy_reference.py), bit for bit.

Building block: `hash32` = lowbias32 (Chris Wellons' 32-bit integer hash; a bijection of uint32),
computed with uint32 wrap-around Mul, BitShift and BitwiseXor (ORT has BitShift only on unsigned
types, so every key and counter is uint32).

    seed_key(seed)      = hash32(low32(seed) ^ hash32(high32(seed) ^ 0x9E3779B9))    all 64 bits count
    derive_key(key, n)  = hash32(hash32(key ^ 0x85EBCA6B) ^ low32(n))             child key of stream n
    uniform(key, shape) : x_i = hash32(hash32(i) ^ key), i = flat (row-major) index
                          u_i = (2·(x_i >> 9) + 1) · 2^-24                        exact in float32, in (0, 1)
    randint(key, shape, high) = min(floor(u_i · high), high − 1)  (in float64: exact for high < 2^29)

Two hash rounds in `uniform` keep the streams of different keys from being permutations of one
another (one round, hash32(i ^ key), would be). A stream is a prefix-stable sequence: drawing shape
(2, 3) gives the first 6 numbers of the stream, so (3,) draws its first 3. Keys are 32 bits: about
2^16 distinct streams may collide by the birthday bound; the model uses a few thousand.

Stream layout (the `n` of derive_key at each level; one tree for the whole model):

    root = seed_key(seed)
    ├── derive_key(root, STREAM_MASK)       key given to masks.build_mask / resolve_mask
    │   ├── derive_key(., MASK_RANDOM)      random mask: uniforms (B, K, T)
    │   ├── derive_key(., MASK_ROLL)        periodic prompt roll: one offset per batch row (B,)
    │   └── derive_key(., MASK_DROPOUT)     dropout: frame indices (B, n)
    ├── derive_key(root, STREAM_COARSE)     coarse stage
    │   └── derive_key(., chunk) → derive_key(., step) → derive_key(., purpose)
    └── derive_key(root, STREAM_C2F)        coarse-to-fine stage, same layout as coarse

The per-stage layout below the stage key (chunk, step, purpose ids) belongs to the sampling code;
it only has to keep one derive_key level per index so streams never share a path.
"""
import onnxscript
from onnxscript import DOUBLE, FLOAT, INT64, UINT32

from graphs.opsets import op, vampnet

# Stream ids (second argument of derive_key). Changing them changes every output for a given seed.
STREAM_MASK = 0
STREAM_COARSE = 1
STREAM_C2F = 2
MASK_RANDOM = 0
MASK_ROLL = 1
MASK_DROPOUT = 2

# Salts: the seed's high word and key derivation hash their inputs in different domains.
SEED_HI_SALT = 0x9E3779B9  # 2^32 / golden ratio
DERIVE_SALT = 0x85EBCA6B  # murmur3 finaliser constant

LOW32 = 0xFFFFFFFF
TWO_POW_32 = 4294967296


@onnxscript.script(vampnet, default_opset=op)
def hash32(x: UINT32[...]) -> UINT32[...]:
    """lowbias32 on every element (uint32 Mul wraps modulo 2^32, as in C)."""
    x = op.BitwiseXor(x, op.BitShift(x, 16, direction="RIGHT"))
    x = x * 0x7FEB352D
    x = op.BitwiseXor(x, op.BitShift(x, 15, direction="RIGHT"))
    x = x * 0x846CA68B
    x = op.BitwiseXor(x, op.BitShift(x, 16, direction="RIGHT"))
    return x


@onnxscript.script(vampnet, default_opset=op)
def low32(n: INT64[...]) -> UINT32[...]:
    """The low 32 bits of an int64 as uint32 (n mod 2^32; negative n wraps, the Cast stays in range)."""
    return op.Cast(op.BitwiseAnd(n, LOW32), to=UINT32.dtype)


@onnxscript.script(vampnet, default_opset=op)
def seed_key(seed: INT64) -> UINT32:
    """Root key from all 64 bits of the seed.

    No int64 shift exists in ORT, so the high word is (seed - lo) / 2^32: an exact division by a
    constant (no overflow for any seed, INT64_MIN included; never a data-driven divisor).
    """
    lo = op.BitwiseAnd(seed, LOW32)  # in [0, 2^32)
    hi = (seed - lo) / TWO_POW_32  # in [-2^31, 2^31), exact
    hi_key = hash32(op.BitwiseXor(low32(hi), SEED_HI_SALT))
    return hash32(op.BitwiseXor(op.Cast(lo, to=UINT32.dtype), hi_key))


@onnxscript.script(vampnet, default_opset=op)
def derive_key(key: UINT32, n: INT64) -> UINT32:
    """Child key for stream n (n: stage / chunk / step / purpose id, a small non-negative int)."""
    return hash32(op.BitwiseXor(hash32(op.BitwiseXor(key, DERIVE_SALT)), low32(n)))


@onnxscript.script(vampnet, default_opset=op)
def random_bits(key: UINT32, shape: INT64["R"]) -> UINT32[...]:
    """Raw 32-bit stream: x_i = hash32(hash32(i) ^ key) for the flat index i, reshaped to `shape`."""
    count = op.ReduceProd(shape, keepdims=0)  # 1 for shape = [] (a scalar)
    index = low32(op.Range(0, count, 1))
    # allowzero=1: a 0 in `shape` means an empty axis, not "copy the input's dim" (Reshape's default)
    return op.Reshape(hash32(op.BitwiseXor(hash32(index), key)), shape, allowzero=1)


@onnxscript.script(vampnet, default_opset=op)
def uniform(key: UINT32, shape: INT64["R"]) -> FLOAT[...]:
    """Uniforms in (0, 1): the top 23 bits m give (2m + 1)·2^-24, exact in float32, never 0 or 1."""
    top23 = op.BitShift(random_bits(key, shape), 9, direction="RIGHT")
    odd = op.Cast(top23 * 2 + 1, to=FLOAT.dtype)  # < 2^24: exact
    return odd * 5.9604644775390625e-08  # 2^-24: exact


@onnxscript.script(vampnet, default_opset=op)
def randint(key: UINT32, shape: INT64["R"], high: INT64) -> INT64[...]:
    """Integers in [0, high): floor(u·high) in float64 (exact for high < 2^29); high < 1 acts as 1."""
    high = op.Max(high, 1)
    u = op.Cast(uniform(key, shape), to=DOUBLE.dtype)
    draw = op.Cast(op.Floor(u * op.Cast(high, to=DOUBLE.dtype)), to=INT64.dtype)
    return op.Min(draw, high - 1)  # u < 1 already guarantees it; kept as a guard
