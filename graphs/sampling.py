"""One step of upstream `VampNet.generate` (the body of its step loop): sampling, schedule
and re-masking, as onnxscript functions in the "vampnet" domain.

Layouts:
    logits      (B, N, V) float32, sequence index n = t·C_p + c (time-major, codebook-minor)
    codes       (B, C, T) int64, mask token M = MASK_TOKEN = 1024 (= V of every VampNet model)
    step, steps int64 scalars, step in [0, steps)
All randomness comes in as tensors (the caller draws them from the PRNG):
    q  (B, N, V) exponential(1) noise: upstream's multinomial is exactly argmax(probs / q)
    u  (B, N)    uniform (0, 1) noise for the Gumbel re-masking

Public functions (all in the vampnet domain):
    schedule_ratio(step, steps)                 -> r = fl32((i+1)/S)                    FLOAT ()
    mask_schedule(step, steps)                  -> γ = clamp(cos(r·π/2), 1e-10, 1)      FLOAT ()
    count_masked(zm)                            -> N0 per row (all C codebooks)         INT64 (B,)
    num_to_mask(gamma, n0, n_masked, is_last, n_tokens)  -> k                           INT64 (B,)
    top_p_filter(logits, top_p)                 -> logits with the tail set to −inf     FLOAT (B,N,V)
    sample_tokens(logits, temperature, sample, q) -> (tokens INT64 (B,N), chosen_prob FLOAT (B,N))
    remask(prob, u, k, mask_temp)               -> μ' (True = mask again)              BOOL (B,N)
    generation_step(logits, zm, z, n0, step, steps, temperature, mask_temperature, top_p,
                    sample_cutoff, q, u, n_conditioning) -> (zm_next, out)              INT64 (B,C,T) ×2

Parameter hygiene (inside the graph, so any float a caller passes is safe):
    temperature       NaN or <= 0 -> 1.0 (upstream: `if temperature > 0` else untempered softmax);
                      otherwise clamped to [1e-6, 1e6] (beyond that the softmax is one-hot / uniform
                      anyway; the clamp keeps logits/τ finite for |logits| < 3e32)
    top_p             NaN or >= 1 -> off (no sort at all); < 0 -> 0 (0 keeps only the top-1 token,
                      as upstream generate does for top_p=0.0; the app maps 0 to None before that)
    mask_temperature  NaN or < 0 -> 0; capped at 1e6 (κ·(1−r)·Gumbel stays finite)
    sample_cutoff     any float; sample iff fl32(i/S) <= cutoff (NaN -> never sample, -1 -> argmax)
    steps             < 1 acts as 1;  n_conditioning clamped to [0, C]
    u                 clipped to [1e-20, 1 − 2^-24] (upstream's uniform_(1e-20, 1) range): no ±inf Gumbel

Differences from upstream, all deliberate:
    * N0 is counted per batch row (count_masked), not summed over the batch as upstream does;
      identical for B = 1. Passing n0 = full(B, sum of the rows) reproduces upstream for B > 1.
    * γ is the correctly rounded float32 cosine (see mask_schedule): equal to upstream's tables for
      S = 2, 12, 36; for some other S one step can differ by 1 ulp (torch's float32 cos is not
      correctly rounded), which changes k only if γ·N0 sits within that ulp of an integer.
    * Top-p ties at the nucleus edge keep the lower token ids (torch's sort order is unspecified).
    * sample = fl32(i/S) <= fl32(cutoff) (upstream compares Python floats; same for typed decimals).

Cost notes: top-p sorts the whole vocabulary of every position (TopK k = V): ≈0.5-1 s per step at
B = 2, N = 2300 on 2 cores, hence the If that skips it when off. `q` is only read when sampling,
so in argmax steps any (e.g. empty) tensor may be passed.
"""
import math

import numpy as np
import onnx
import onnxscript
from onnx import numpy_helper
from onnxscript import BOOL, FLOAT, INT64

from vampnet_onnx.graphs.opsets import op, vampnet
from vampnet_onnx.graphs.prng import exponential
from vampnet_onnx.interface import MAX_SAMPLING_STEPS as MAX_STEPS
from vampnet_onnx.interface import MAX_TEMPERATURE, MIN_TEMPERATURE

MASK_TOKEN = 1024  # M = vocab_size; VampNet's vocabulary is the codec's 1024 codes

PI = math.pi  # becomes a float32 constant: torch also multiplies float32 r by fl32(π)
GAMMA_MIN = 1e-10  # upstream clamp(1e-10, 1.0): cos(fl32(π/2)) = −4.37e-8 on the last step
TEMPERATURE_MIN = MIN_TEMPERATURE
TEMPERATURE_MAX = MAX_TEMPERATURE
MASK_TEMPERATURE_MAX = MAX_TEMPERATURE
U_MIN = 1e-20  # upstream draws uniform_(1e-20, 1)
U_MAX = 0.99999994  # 1 − 2^-24, the largest float32 below 1 (= torch.rand's largest value)
POS_INF = math.inf
NEG_INF = -math.inf


# --------------------------------------------------------------------------------------------
# Schedule
# --------------------------------------------------------------------------------------------


def _schedule_tables() -> tuple[onnx.TensorProto, onnx.TensorProto, onnx.TensorProto]:
    """r, γ and the step's progress for every (steps, step), computed here once in float64.

    Indexed [steps, step] for 1 <= steps <= MAX_STEPS, 0 <= step < steps (row 0 and the cells
    past the diagonal are never read). Upstream computes these in Python floats and float32
    tensors; a table keeps float64 out of the graph (some runtimes have no float64 kernels) and
    makes every runtime use the same correctly rounded values:
        r        = fl32((i + 1) / S)                    upstream's ratio (Python float -> float32)
        γ        = clamp(fl32(cos(angle)), 1e-10, 1)    angle = fl32(fl32(r·fl32(π)) / 2), as torch
        progress = fl32(i / S)                          compared with sample_cutoff
    γ is the correctly rounded float32 of the cosine of upstream's float32 angle; torch's float32
    cos is not always correctly rounded, so for a few (i, S) upstream's γ is 1 ulp off ours (for
    S = 2, 12 and 36, the step counts that matter, they agree exactly).
    """
    n = MAX_STEPS + 1
    steps = np.maximum(np.arange(n, dtype=np.float64), 1.0)[:, None]
    step = np.arange(n - 1, dtype=np.float64)[None, :]
    ratio = ((step + 1) / steps).astype(np.float32)
    angle = ((ratio * np.float32(PI)).astype(np.float32) / np.float32(2.0)).astype(np.float32)
    gamma = np.clip(np.cos(angle.astype(np.float64)).astype(np.float32), np.float32(GAMMA_MIN), np.float32(1.0))
    progress = (step / steps).astype(np.float32)
    return (numpy_helper.from_array(ratio, "ratio_table"), numpy_helper.from_array(gamma, "gamma_table"),
            numpy_helper.from_array(progress, "progress_table"))


RATIO_TABLE, GAMMA_TABLE, PROGRESS_TABLE = _schedule_tables()


@onnxscript.script(vampnet, default_opset=op)
def table_index(step: INT64, steps: INT64) -> INT64[2]:
    """[steps, step] for the schedule tables, both clamped into the table."""
    steps = op.Clip(steps, 1, MAX_STEPS)
    step = op.Clip(step, 0, MAX_STEPS - 1)
    return op.Concat(op.Reshape(steps, [1]), op.Reshape(step, [1]), axis=0)


@onnxscript.script(vampnet, default_opset=op)
def schedule_ratio(step: INT64, steps: INT64) -> FLOAT:
    """r = fl32((i + 1) / S): upstream divides Python ints (float64) and stores a float32 tensor."""
    return op.GatherND(op.Constant(value=RATIO_TABLE), table_index(step, steps))


@onnxscript.script(vampnet, default_opset=op)
def mask_schedule(step: INT64, steps: INT64) -> FLOAT:
    """γ = clamp(cos(r·π/2), 1e-10, 1) in float32, in upstream's order: r·π, then /2, then cos."""
    return op.GatherND(op.Constant(value=GAMMA_TABLE), table_index(step, steps))


@onnxscript.script(vampnet, default_opset=op)
def is_sampling_step(step: INT64, steps: INT64, sample_cutoff: FLOAT) -> BOOL:
    """Upstream's `(i / S) <= sample_cutoff`, compared in float32 (fl32(i/S) vs the float32 input)."""
    return op.GatherND(op.Constant(value=PROGRESS_TABLE), table_index(step, steps)) <= sample_cutoff


@onnxscript.script(vampnet, default_opset=op)
def count_masked(zm: INT64["B", "C", "T"]) -> INT64["B"]:
    """N0 per row: masked positions over all C codebooks (conditioning ones included, as upstream)."""
    is_mask = op.Cast(zm == MASK_TOKEN, to=INT64.dtype)
    return op.ReduceSum(is_mask, [1, 2], keepdims=0)


@onnxscript.script(vampnet, default_opset=op)
def num_to_mask(
    gamma: FLOAT, n0: INT64["B"], n_masked: INT64["B"], is_last: BOOL, n_tokens: INT64
) -> INT64["B"]:
    """How many of the N predicted positions stay masked after this step.

    k = floor(fl32(γ · N0)) (float32 product, as upstream); on non-final steps
    k = max(1, min(n_masked − 1, k)) so at least one token is fixed and one stays masked; on the
    final step no clamp (γ = 1e-10 gives k = 0). Finally k is kept in [0, N − 1] (0 when N = 0) so
    the sorted-confidence index in `remask` is always valid (upstream would index out of range).
    """
    k = op.Cast(op.Floor(gamma * op.Cast(n0, to=FLOAT.dtype)), to=INT64.dtype)
    at_least_one_each = op.Max(op.Min(n_masked - 1, k), 1)
    k = op.Where(is_last, k, at_least_one_each)
    return op.Max(op.Min(k, n_tokens - 1), 0)


# --------------------------------------------------------------------------------------------
# Sampling (upstream's sample_from_logits)
# --------------------------------------------------------------------------------------------


@onnxscript.script(vampnet, default_opset=op)
def top_p_filter(logits: FLOAT["B", "N", "V"], top_p: FLOAT) -> FLOAT["B", "N", "V"]:
    """Nucleus filter with upstream's semantics; a no-op (and no sort) unless top_p < 1.

    Sort descending, cum = cumsum(softmax(raw, untempered logits)); a token is removed when the
    mass strictly before it already exceeds top_p (upstream's "cum > top_p shifted right by one"),
    so the top-1 token always survives. Removed logits become −inf. Ties are sorted lower token id
    first (TopK's rule; torch's sort gives no guarantee, which only matters for ties at the edge).
    """
    # NaN < 1 is false: NaN turns the filter off, like top_p = None upstream.
    enabled = top_p < 1.0
    if enabled:
        top_p = op.Where(top_p > 0.0, top_p, 0.0)  # negative -> 0: keep the top-1 token only
        vocab = op.Shape(logits, start=2, end=3)
        sorted_logits, order = op.TopK(logits, vocab, axis=2, largest=1, sorted=1)
        probs = op.Softmax(sorted_logits, axis=2)
        # torch's CPU cumsum accumulates in double. Without float64 the same accuracy comes from
        # summing two parts: p's bits above 2^-20 (their running sums are exact in float32) and
        # the rest (under 2^-20 each, so their rounding errors are negligible); one final rounding.
        high = op.Floor(probs * 1048576.0) / 1048576.0
        cum = op.CumSum(high, 2) + op.CumSum(probs - high, 2)
        # mass before each token: cum shifted right by one, 0 in front (never > top_p >= 0)
        n_before = op.Shape(logits, start=2, end=3) - 1
        cum_before = op.Pad(op.Slice(cum, [0], n_before, [2]), [0, 0, 1, 0, 0, 0], 0.0)
        sorted_filtered = op.Where(cum_before > top_p, NEG_INF, sorted_logits)
        # `order` is a permutation of the vocabulary: scattering writes every position back
        filtered = op.ScatterElements(logits, order, sorted_filtered, axis=2)
    else:
        filtered = op.Identity(logits)
    return filtered


@onnxscript.script(vampnet, default_opset=op)
def sample_tokens(logits: FLOAT["B", "N", "V"], temperature: FLOAT, sample: BOOL, q: FLOAT["B", "N", "V"]):
    """(tokens INT64 (B, N), chosen_prob FLOAT (B, N)), upstream's sample_from_logits after top-p.

    probs = softmax(logits / τ) (τ <= 0 or NaN: untempered); if `sample`, tokens = argmax(probs / q)
    (≡ torch.multinomial with exponential draws q), else argmax(logits) (untempered, first index on
    ties). chosen_prob = probs at the token, also in argmax mode.
    """
    tau = op.Where(temperature > 0.0, temperature, 1.0)
    tau = op.Clip(tau, TEMPERATURE_MIN, TEMPERATURE_MAX)
    probs = op.Softmax(logits / tau, axis=2)
    if sample:
        tokens = op.ArgMax(probs / q, axis=2, keepdims=0, select_last_index=0)
    else:
        tokens = op.ArgMax(logits, axis=2, keepdims=0, select_last_index=0)
    # gather on a 2-D (B·N, V) view: the ReferenceEvaluator's GatherElements is only right in 2-D
    rows_by_vocab = op.Concat(op.Constant(value_ints=[-1]), op.Shape(probs, start=2, end=3), axis=0)
    flat_probs = op.Reshape(probs, rows_by_vocab)
    flat_tokens = op.Reshape(tokens, op.Constant(value_ints=[-1, 1]))
    chosen = op.GatherElements(flat_probs, flat_tokens, axis=1)
    chosen_prob = op.Reshape(chosen, op.Shape(tokens))
    return tokens, chosen_prob


# --------------------------------------------------------------------------------------------
# Re-masking (upstream's mask_by_random_topk)
# --------------------------------------------------------------------------------------------


@onnxscript.script(vampnet, default_opset=op)
def remask(prob: FLOAT["B", "N"], u: FLOAT["B", "N"], k: INT64["B"], mask_temp: FLOAT) -> BOOL["B", "N"]:
    """Upstream's mask_by_random_topk: True where the position is masked again.

    conf = log(p) + t·(−log(−log u)); fixed positions carry p = +inf, hence conf = +inf, and are
    never re-masked. cut = the k-th smallest conf of the row (0-based), re-mask conf < cut (strict:
    ties at the cut re-mask fewer than k).
    """
    u = op.Clip(u, U_MIN, U_MAX)
    gumbel = op.Neg(op.Log(exponential(u)))  # −log(−log u), accurate for u near 1
    conf = op.Log(prob) + mask_temp * gumbel
    # One +inf column: row k of a sort of N + 1 values is valid for every k in [0, N], even N = 0.
    inf_column = op.Expand(op.Constant(value_float=POS_INF), op.Concat(op.Shape(conf, start=0, end=1), [1], axis=0))
    conf_ext = op.Concat(conf, inf_column, axis=1)  # (B, N + 1)
    # Only the k+1 smallest values are needed: a partial ascending sort up to the largest k.
    n_sorted = op.Reshape(op.ReduceMax(k, keepdims=0) + 1, [1])
    ascending, _ = op.TopK(conf_ext, n_sorted, axis=1, largest=0, sorted=1)
    cut = op.GatherElements(ascending, op.Unsqueeze(k, [1]), axis=1)  # (B, 1)
    return conf < cut


# --------------------------------------------------------------------------------------------
# One generation step
# --------------------------------------------------------------------------------------------


@onnxscript.script(vampnet, default_opset=op)
def generation_step(
    logits: FLOAT["B", "N", "V"],
    zm: INT64["B", "C", "T"],
    z: INT64["B", "C", "T"],
    n0: INT64["B"],
    step: INT64,
    steps: INT64,
    temperature: FLOAT,
    mask_temperature: FLOAT,
    top_p: FLOAT,
    sample_cutoff: FLOAT,
    q: FLOAT["B", "N", "V"],
    u: FLOAT["B", "N"],
    n_conditioning: INT64,
):
    """(zm_next, out), both INT64 (B, C, T): the tokens for the next forward pass (M where still
    masked) and the step's result with every position filled (upstream's output after the last step).

    `logits` is the model's output for `zm`, already viewed as (B, N, V) with N = T·C_p;
    `n0` = count_masked of the starting zm; the conditioning codebooks are re-taken from `z`.
    """
    steps = op.Max(steps, 1)
    r = schedule_ratio(step, steps)
    is_last = step == steps - 1

    # 7.4 sample or take the argmax
    sample = is_sampling_step(step, steps, sample_cutoff)
    sampled, prob = sample_tokens(top_p_filter(logits, top_p), temperature, sample, q)

    # 7.5 zf = flatten(zm[:, C_c:]) in n = t·C_p + c order
    n_codebooks = op.Shape(zm, start=1, end=2)
    c_cond = op.Max(op.Min(op.Reshape(n_conditioning, [1]), n_codebooks), 0)
    zm_pred = op.Slice(zm, c_cond, n_codebooks, [1])  # (B, C_p, T)
    pred_shape = op.Shape(zm_pred)  # [B, C_p, T]
    by_time = op.Transpose(zm_pred, perm=[0, 2, 1])  # (B, T, C_p)
    zf = op.Reshape(by_time, op.Concat(op.Slice(pred_shape, [0], [1]), [-1], axis=0))

    # 7.6-7.8 keep fixed tokens; they get infinite confidence
    masked = zf == MASK_TOKEN
    x = op.Where(masked, sampled, zf)
    prob = op.Where(masked, prob, POS_INF)

    # 7.9-7.10 how many stay masked
    n_masked = op.ReduceSum(op.Cast(masked, to=INT64.dtype), [1], keepdims=0)
    n_tokens = op.Squeeze(op.Shape(zf, start=1, end=2))  # N as a scalar
    k = num_to_mask(mask_schedule(step, steps), n0, n_masked, is_last, n_tokens)

    # 7.11-7.12 re-mask the least confident; t = κ·(1 − r) (exactly 0 on the last step, r = 1)
    kappa = op.Where(mask_temperature > 0.0, mask_temperature, 0.0)  # NaN / negative -> 0
    kappa = op.Min(kappa, MASK_TEMPERATURE_MAX)
    remasked = remask(prob, u, k, kappa * (1.0 - r))
    zf_next = op.Where(remasked, MASK_TOKEN, x)

    # 7.13 and 8: unflatten (B, N) -> (B, C_p, T), put the original conditioning codebooks in front
    time_major_shape = op.Concat(
        op.Slice(pred_shape, [0], [1]), op.Slice(pred_shape, [2], [3]), op.Slice(pred_shape, [1], [2]), axis=0
    )
    z_cond = op.Slice(z, [0], c_cond, [1])
    zm_next = op.Concat(z_cond, op.Transpose(op.Reshape(zf_next, time_major_shape), perm=[0, 2, 1]), axis=1)
    out = op.Concat(z_cond, op.Transpose(op.Reshape(x, time_major_shape), perm=[0, 2, 1]), axis=1)
    return zm_next, out
