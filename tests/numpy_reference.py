"""Plain-numpy references for the graph functions, used by the tests (no onnx, no onnxscript).

Each function mirrors one graph function of the same name; the graph side must equal these exactly
(integer results bit for bit, the uniforms too, since their last step is exact in float32).
The mask references are written the way upstream writes them (loops and slices over frames), not
the way the graph vectorises them, so that the two are independent derivations.

Sections:
    1. PRNG          (graphs/prng.py)
    2. Masks         (graphs/masks.py)
    3. Stages        (graphs/stages.py: chunking, time stretch, feedback)
    4. Preprocessing (graphs/preprocess.py: julius resampling, audiotools loudness)
    5. Pitch shift   (graphs/pitch.py: torch-pitch-shift's pitch_shift, in numpy float32)
"""
from __future__ import annotations

import math

import numpy as np

# ============================================================================================
# 1. PRNG (graphs/prng.py)
# ============================================================================================

from vampnet_onnx.graphs.prng import MULTIPLIERS, ROUND_CONSTANTS, SEED_KEY


def block(key, high, low):
    """The keyed Feistel permutation on 16-bit words, written with the full product t = x·M."""
    k_high, k_low = (int(k) for k in np.asarray(key).reshape(2))
    assert 0 <= k_high < 2**16 and 0 <= k_low < 2**16
    left = np.asarray(high, np.int64) ^ k_high
    right = np.asarray(low, np.int64) ^ k_low
    for r, (m, c) in enumerate(zip(MULTIPLIERS, ROUND_CONSTANTS)):
        t = (right ^ ((k_high if r % 2 == 0 else k_low) ^ c)) * m
        left, right = right, left ^ ((t ^ (t >> 16)) & 0xFFFF)
    return left, right


def words(n):
    n = np.asarray(n, np.int64) & 0xFFFFFFFF  # the low 32 bits, as the graph's int32 cast keeps
    return n >> 16, n & 0xFFFF


def as_key(high, low) -> np.ndarray:
    return np.array([int(high), int(low)], np.int32)


def seed_key(seed: int) -> np.ndarray:
    return as_key(*block(SEED_KEY, *words(int(seed) & 0xFFFFFFFF)))


def derive_key(key, n: int) -> np.ndarray:
    return as_key(*block(key, *words(int(n) & 0xFFFFFFFF)))


def top23(key, shape) -> np.ndarray:
    count = int(np.prod(shape, dtype=np.int64))
    high, low = block(key, *words(np.arange(count, dtype=np.int64)))
    return ((high << 7) | (low >> 9)).reshape(tuple(shape))


def uniform(key, shape) -> np.ndarray:
    return ((2 * top23(key, shape) + 1).astype(np.float32) * np.float32(2.0**-24)).astype(np.float32)


def exponential(u) -> np.ndarray:
    """−log(u) as graphs/prng.py computes it (float32, the same operations in the same order)."""
    u = np.asarray(u, np.float32)
    f = np.float32
    v = f(1) - u
    series = v * (f(1) + v * (f(0.5) + v * (f(0.33333334) + v * (f(0.25) + v * (f(0.2) + v * (f(0.16666667) + v * f(0.14285715)))))))
    with np.errstate(divide="ignore"):
        return np.where(v < f(0.0625), series, -np.log(u)).astype(np.float32)


def randint(key, shape, high: int) -> np.ndarray:
    high = min(max(int(high), 1), 1 << 23)
    return (top23(key, shape) * high) >> 23  # Python-exact in int64: < 2^47


def key_path(seed: int, *path: int) -> np.ndarray:
    """derive_key applied along a stream path from seed_key(seed)."""
    key = seed_key(seed)
    for n in path:
        key = derive_key(key, n)
    return key


# ============================================================================================
# 2. Masks (graphs/masks.py): upstream vampnet/mask.py semantics, with our PRNG's draws
# ============================================================================================

MASK_RANDOM, MASK_ROLL, MASK_DROPOUT = 0, 1, 2
SAMPLE_RATE, HOP = 44100, 768
SECONDS_MAX = 1.0e6
PERIOD_MAX = WIDTH_MAX = 1 << 23


def s2t(seconds) -> int:
    """Upstream Interface.s2t on the float32 value (Python float math)."""
    return int(math.ceil(float(np.float32(seconds)) * SAMPLE_RATE / HOP))


def clamp_real(x, lo: float, hi: float) -> np.float32:
    """The documented clamping of real parameters: NaN acts as 0, then clip to [lo, hi]."""
    x = np.float32(x)
    if np.isnan(x):
        x = np.float32(0.0)
    return np.float32(min(max(x, np.float32(lo)), np.float32(hi)))


def clamp_int(x, lo: int, hi: int) -> int:
    return min(max(int(x), lo), hi)


def random_mask(shape, key, intensity) -> np.ndarray:
    return (uniform(key, shape) < np.float32(intensity)).astype(np.int64)


def inpaint_mask(shape, n_prefix: int, n_suffix: int) -> np.ndarray:
    mask = np.ones(shape, np.int64)
    if n_prefix > 0:
        mask[:, :, :n_prefix] = 0
    if n_suffix > 0:
        mask[:, :, -n_suffix:] = 0
    return mask


def periodic_mask(shape, key, period: int, width: int) -> np.ndarray:
    """Upstream's loop over anchors, then np.roll per row (ours: one offset per batch row)."""
    B, K, T = shape
    mask = np.ones(shape, np.int64)
    if period == 0:
        return mask
    offsets = randint(key, (B,), period)
    for b in range(B):
        for j in range(T):
            if j % period == 0:
                j0 = max(0, j - width // 2)
                j1 = min(T - 1, j + width // 2) + 1
                mask[b, :, j0:j1] = 0
        mask[b] = np.roll(mask[b], int(offsets[b]), axis=-1)  # out[(t + off) % T] = in[t]
    return mask


def dropout_mask(mask: np.ndarray, key, p) -> np.ndarray:
    mask = mask.copy()
    B, K, T = mask.shape
    n = int(T * float(np.float32(p)))
    frames = randint(key, (B, n), T)
    for b in range(B):
        mask[b][:, frames[b]] = 1
    return mask


def codebook_unmask(mask: np.ndarray, ncc: int) -> np.ndarray:
    mask = mask.copy()
    mask[:, :ncc, :] = 0
    return mask


def codebook_mask(mask: np.ndarray, upper: int) -> np.ndarray:
    mask = mask.copy()
    mask[:, upper:, :] = 1
    return mask


def build_mask(
    shape,
    key,
    rand_mask_intensity=1.0,
    prefix_s=0.0,
    suffix_s=0.0,
    periodic_prompt=7,
    periodic_prompt_width=1,
    dropout=0.0,
    ncc=0,
    upper_codebook_mask=3,
) -> np.ndarray:
    """Upstream build_mask order, after the documented clamping (graphs/masks.py table)."""
    K = shape[1]
    mask = random_mask(shape, derive_key(key, MASK_RANDOM), clamp_real(rand_mask_intensity, 0.0, 1.0))
    n_prefix = s2t(clamp_real(prefix_s, 0.0, SECONDS_MAX))
    n_suffix = s2t(clamp_real(suffix_s, 0.0, SECONDS_MAX))
    mask = np.minimum(mask, inpaint_mask(shape, n_prefix, n_suffix))
    period = clamp_int(periodic_prompt, 0, PERIOD_MAX)
    width = clamp_int(periodic_prompt_width, 0, WIDTH_MAX)
    mask = np.minimum(mask, periodic_mask(shape, derive_key(key, MASK_ROLL), period, width))
    mask = dropout_mask(mask, derive_key(key, MASK_DROPOUT), clamp_real(dropout, 0.0, 1.0))
    mask = codebook_unmask(mask, clamp_int(ncc, 0, K))
    return codebook_mask(mask, clamp_int(upper_codebook_mask, 0, K))


def fit_mask(mask: np.ndarray, shape) -> np.ndarray:
    """Row b ← mask row b mod Bm; codebooks/frames cropped or padded with 1; values clipped to [0, 1]."""
    B, K, T = shape
    mask = np.clip(mask, 0, 1)
    Bm, Km, Tm = mask.shape
    out = np.ones(shape, np.int64)
    if Bm == 0:
        return out
    k, t = min(K, Km), min(T, Tm)
    for b in range(B):
        out[b, :k, :t] = mask[b % Bm, :k, :t]
    return out


def resolve_mask(mask: np.ndarray, shape, key, **params) -> np.ndarray:
    return build_mask(shape, key, **params) if mask.size == 0 else fit_mask(mask, shape)


# ============================================================================================
# 3. Sampling, schedule, re-masking (graphs/sampling.py): upstream VampNet.generate's loop body
#    (generate, sample_from_logits, mask_by_random_topk), written with upstream's per-element float32 operations; noise injected.
# ============================================================================================

MASK_TOKEN = 1024
GAMMA_MIN = np.float32(1e-10)
TEMPERATURE_MIN, TEMPERATURE_MAX = np.float32(1e-6), np.float32(1e6)
MASK_TEMPERATURE_MAX = np.float32(1e6)
U_MIN, U_MAX = np.float32(1e-20), np.float32(1.0 - 2.0**-24)


def schedule_ratio(step: int, steps: int) -> np.float32:
    """r = fl32((i + 1) / S) (Python float division, then a float32 tensor)."""
    return np.float32((int(step) + 1) / max(int(steps), 1))


def mask_schedule(step: int, steps: int) -> np.float32:
    """γ = clamp(cos(r·π/2), 1e-10, 1): float32 angle (r·fl32(π), then /2); its cosine rounded
    once from float64 (correctly rounded; torch's float32 cos is 1 ulp off that for a few (i, S))."""
    angle = schedule_ratio(step, steps) * np.float32(math.pi) / np.float32(2.0)
    gamma = np.float32(math.cos(float(angle)))
    return np.float32(min(max(gamma, GAMMA_MIN), np.float32(1.0)))


def count_masked(zm: np.ndarray) -> np.ndarray:
    """N0 per row over all codebooks (upstream sums this over the batch too; pass
    np.full(B, count_masked(zm).sum()) as n0 to reproduce that)."""
    return (zm == MASK_TOKEN).sum(axis=(1, 2)).astype(np.int64)


def num_to_mask(gamma, n0, n_masked, is_last: bool, n_tokens: int) -> np.ndarray:
    """Upstream: k = floor(fl32(γ·N0)); non-final steps k = max(1, min(n_masked − 1, k));
    then ours: k in [0, N − 1] (so indexing the sorted row never fails)."""
    out = []
    for n0_b, masked_b in zip(np.asarray(n0), np.asarray(n_masked)):
        k = int(np.floor(np.float32(gamma) * np.float32(n0_b)))
        if not is_last:
            k = max(1, min(int(masked_b) - 1, k))
        out.append(max(min(k, int(n_tokens) - 1), 0))
    return np.array(out, np.int64)


def softmax32(x: np.ndarray) -> np.ndarray:
    """float32 softmax over the last axis (max-subtracted, as torch and ORT do)."""
    x = np.asarray(x, np.float32)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True, dtype=np.float32)).astype(np.float32)


def top_p_filter(logits: np.ndarray, top_p) -> np.ndarray:
    """Upstream sample_from_logits' top-p block, on a copy (upstream edits the logits in place).

    Sort descending (ties: lower token id first, like ONNX TopK), cum = cumsum(softmax(sorted raw
    logits)) (torch's CPU cumsum accumulates in float64), remove = cum > top_p shifted right by one
    (top-1 always kept), removed logits = −inf. top_p NaN or >= 1: off; < 0 acts as 0.
    """
    top_p = np.float32(top_p)
    logits = np.array(logits, np.float32)
    if not top_p < 1.0:
        return logits
    top_p = max(top_p, np.float32(0.0))
    order = np.argsort(-logits, axis=-1, kind="stable")
    sorted_logits = np.take_along_axis(logits, order, axis=-1)
    cum = np.cumsum(softmax32(sorted_logits).astype(np.float64), axis=-1).astype(np.float32)
    remove_sorted = cum > top_p
    remove_sorted[..., 1:] = remove_sorted[..., :-1].copy()
    remove_sorted[..., 0] = False
    remove = np.zeros_like(remove_sorted)
    np.put_along_axis(remove, order, remove_sorted, axis=-1)
    logits[remove] = -np.inf
    return logits


def effective_temperature(temperature) -> np.float32:
    """Upstream: softmax(logits / τ) if τ > 0 else softmax(logits); ours also clamps τ to [1e-6, 1e6]."""
    tau = np.float32(temperature)
    tau = tau if tau > 0 else np.float32(1.0)  # NaN > 0 is False
    return np.float32(min(max(tau, TEMPERATURE_MIN), TEMPERATURE_MAX))


def sample_tokens(logits, temperature, sample: bool, q):
    """(tokens (B, N) int64, chosen_prob (B, N) float32): probs = softmax(logits/τ);
    multinomial ≡ argmax(probs / q) with q ~ Exp(1); argmax mode takes argmax(logits)."""
    logits = np.asarray(logits, np.float32)
    probs = softmax32(logits / effective_temperature(temperature))
    if sample:
        tokens = np.argmax(probs / np.asarray(q, np.float32), axis=-1)
    else:
        tokens = np.argmax(logits, axis=-1)
    tokens = tokens.astype(np.int64)
    return tokens, np.take_along_axis(probs, tokens[..., None], axis=-1)[..., 0]


def remask(prob, u, k, mask_temp) -> np.ndarray:
    """Upstream mask_by_random_topk with injected uniforms u (clipped to upstream's [1e-20, 1))."""
    prob = np.asarray(prob, np.float32)
    u = np.clip(np.asarray(u, np.float32), U_MIN, U_MAX)
    with np.errstate(divide="ignore"):
        gumbel = -np.log(-np.log(u))
        conf = np.log(prob) + np.float32(mask_temp) * gumbel
    sorted_conf = np.sort(conf, axis=-1)
    mask = np.zeros(conf.shape, bool)
    for b in range(conf.shape[0]):
        if conf.shape[1] > 0:
            mask[b] = conf[b] < sorted_conf[b, int(k[b])]
    return mask


def effective_mask_temperature(mask_temperature) -> np.float32:
    kappa = np.float32(mask_temperature)
    kappa = kappa if kappa > 0 else np.float32(0.0)
    return np.float32(min(kappa, MASK_TEMPERATURE_MAX))


def flatten_codes(codes: np.ndarray) -> np.ndarray:
    """(B, C_p, T) -> (B, N), n = t·C_p + c (einops "b c t -> b (t c)")."""
    B, Cp, T = codes.shape
    return codes.transpose(0, 2, 1).reshape(B, T * Cp)


def unflatten_codes(flat: np.ndarray, n_codebooks: int) -> np.ndarray:
    B, N = flat.shape
    return flat.reshape(B, N // n_codebooks, n_codebooks).transpose(0, 2, 1)


def generation_step(
    logits, zm, z, n0, step, steps, temperature, mask_temperature, top_p, sample_cutoff, q, u,
    n_conditioning,
):
    """One iteration of upstream generate (its step loop's body) -> (zm_next, out)."""
    steps = max(int(steps), 1)
    C = zm.shape[1]
    cc = min(max(int(n_conditioning), 0), C)
    r = schedule_ratio(step, steps)
    is_last = int(step) == steps - 1
    sample = bool(np.float32(int(step) / steps) <= np.float32(sample_cutoff))
    sampled, prob = sample_tokens(top_p_filter(logits, top_p), temperature, sample, q)
    zf = flatten_codes(zm[:, cc:, :])
    masked = zf == MASK_TOKEN
    x = np.where(masked, sampled, zf)
    prob = np.where(masked, prob, np.float32(np.inf)).astype(np.float32)
    k = num_to_mask(mask_schedule(step, steps), n0, masked.sum(axis=1), is_last, zf.shape[1])
    t = effective_mask_temperature(mask_temperature) * (np.float32(1.0) - r)
    zf_next = np.where(remask(prob, u, k, t), MASK_TOKEN, x)
    keep = z[:, :cc, :]
    zm_next = np.concatenate([keep, unflatten_codes(zf_next, C - cc)], axis=1)
    out = np.concatenate([keep, unflatten_codes(x, C - cc)], axis=1)
    return zm_next.astype(np.int64), out.astype(np.int64)


def generate(forward, z, mask, steps, noise, temperature=1.0, mask_temperature=10.5, top_p=1.0,
             sample_cutoff=1.0, n_conditioning=0, n0=None):
    """Upstream generate's loop around `forward(zm) -> logits (B, N, V)`;
    `noise(i) -> (q, u)` gives step i's draws; n0 defaults to our per-row count."""
    zm = np.where(np.asarray(mask) != 0, MASK_TOKEN, z).astype(np.int64)
    n0 = count_masked(zm) if n0 is None else n0
    out = z
    for i in range(int(steps)):
        q, u = noise(i)
        zm, out = generation_step(forward(zm), zm, z, n0, i, steps, temperature, mask_temperature,
                                  top_p, sample_cutoff, q, u, n_conditioning)
    return out


# ============================================================================================
# 3. Stages (graphs/stages.py): upstream Interface.vamp / coarse_vamp, with a given generator
# ============================================================================================


def stretch_time(x: np.ndarray, factor: int) -> np.ndarray:
    """Upstream `x.repeat_interleave(factor, dim=-1)`."""
    return np.repeat(x, factor, axis=-1)


def stretch_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """Upstream vamp: repeat_interleave, added = ones with added[..., ::f] = 0, mask | added."""
    added = np.ones(mask.shape[:-1] + (mask.shape[-1] * factor,), np.int64)
    added[..., ::factor] = 0
    return (stretch_time(mask, factor).astype(bool) | added.astype(bool)).astype(np.int64)


def with_anchors(mask: np.ndarray) -> np.ndarray:
    """A row that keeps any token keeps the first and last frame of the chunk too."""
    out = mask.copy()
    for b in range(mask.shape[0]):
        if (mask[b] == 0).any():
            out[b, :, 0] = 0
            out[b, :, -1] = 0
    return out


def coarse_stage(codes: np.ndarray, mask: np.ndarray, chunk: int, n_coarse: int, generate_chunk) -> np.ndarray:
    """The coarse stage: codebooks < n_coarse regenerated chunk by chunk by
    `generate_chunk(z_c, m_c, c)` (m_c with the anchors); the others pass through."""
    out = codes.copy()
    for c, start in enumerate(range(0, codes.shape[2], chunk)):
        z_c = codes[:, :n_coarse, start:start + chunk]
        m_c = with_anchors(mask[:, :n_coarse, start:start + chunk])
        out[:, :n_coarse, start:start + chunk] = generate_chunk(z_c, m_c, c)
    return out


def feedback_coarse(codes, mask, passes: int, stage) -> np.ndarray:
    """Upstream vamp's feedback loop: `stage(z, mask, p)` run `passes` times on its own output."""
    z = codes
    for p in range(passes):
        z = stage(z, mask, p)
    return z


# ============================================================================================
# 4. Preprocessing (graphs/preprocess.py)
# ============================================================================================


def julius_resample(x: np.ndarray, old_sr: int, new_sr: int, zeros: int = 24, rolloff: float = 0.945) -> np.ndarray:
    """julius.resample_frac as it computes, in float32: per output phase the full kernel of
    2w + old taps (built and normalised in float32 like julius), the input replicate-padded by w
    on the left and w + old on the right, stride old, phases interleaved, floor(new·L/old) samples.

    Written for clarity, output sample by output sample in chunks (the graph gathers only the
    non-zero taps; this reference computes every one of julius's taps)."""
    x = np.asarray(x, np.float32)
    g = math.gcd(old_sr, new_sr)
    old, new = old_sr // g, new_sr // g
    if old == new:
        return x
    sr = min(old, new) * rolloff
    w = math.ceil(zeros * old / sr)
    idx = np.arange(-w, w + old, dtype=np.float32)
    length = x.shape[-1]
    n_out = int(new * length / old)
    padded = np.concatenate([np.repeat(x[..., :1], w, -1), x, np.repeat(x[..., -1:], w + old, -1)], -1)
    kernels = {}
    y = np.empty(x.shape[:-1] + (n_out,), np.float32)
    for j in range(n_out):
        k, i = divmod(j, new)
        if i not in kernels:
            t = (np.float32(-i / new) + idx / np.float32(old)) * np.float32(sr)
            t = np.clip(t, -zeros, zeros) * np.float32(math.pi)
            window = np.cos(t / np.float32(zeros) / np.float32(2)) ** 2
            with np.errstate(invalid="ignore", divide="ignore"):
                sinc = np.where(t == 0, np.float32(1), np.sin(t) / t)
            kernel = (sinc * window).astype(np.float32)
            kernels[i] = kernel / kernel.sum(dtype=np.float32)
            if len(kernels) > 4096:
                kernels.pop(next(iter(kernels)))
        y[..., j] = padded[..., k * old:k * old + 2 * w + old] @ kernels[i]
    return y


def k_weighting_coefficients(rate: int):
    """pyloudnorm's K-weighting biquads at `rate` (float64): [(b, a) high shelf, (b, a) high pass]."""
    stages = []
    for gain_db, q, fc, kind in ((4.0, 1 / np.sqrt(2), 1500.0, "high_shelf"), (0.0, 0.5, 38.0, "high_pass")):
        A = 10 ** (gain_db / 40.0)
        w0 = 2.0 * np.pi * (fc / rate)
        alpha = np.sin(w0) / (2.0 * q)
        if kind == "high_shelf":
            b = [A * ((A + 1) + (A - 1) * np.cos(w0) + 2 * np.sqrt(A) * alpha),
                 -2 * A * ((A - 1) + (A + 1) * np.cos(w0)),
                 A * ((A + 1) + (A - 1) * np.cos(w0) - 2 * np.sqrt(A) * alpha)]
            a = [(A + 1) - (A - 1) * np.cos(w0) + 2 * np.sqrt(A) * alpha,
                 2 * ((A - 1) - (A + 1) * np.cos(w0)),
                 (A + 1) - (A - 1) * np.cos(w0) - 2 * np.sqrt(A) * alpha]
        else:
            b = [(1 + np.cos(w0)) / 2, -(1 + np.cos(w0)), (1 + np.cos(w0)) / 2]
            a = [1 + alpha, -2 * np.cos(w0), 1 - alpha]
        stages.append((np.array(b) / a[0], np.array(a) / a[0]))
    return stages


def loudness(x: np.ndarray, rate: int, dtype=np.float64, float32_coefficients: bool = False) -> np.ndarray:
    """audiotools' AudioSignal.loudness() of each row of x (B, L) at `rate`, in `dtype` arithmetic
    (float64: the exact value; float32: the filter runs in float32 as torchaudio's lfilter does);
    `float32_coefficients`: the filter's coefficients rounded to float32 first, as upstream's are.

    Shorter than 0.5 s: zero-padded to 0.5 s; K-weighting (scipy lfilter); julius.unfold blocks of
    int(0.4·rate) every int(0.1·rate), the end zero-padded; gates −70 LUFS and −10 LU; floor −70."""
    from scipy.signal import lfilter

    x = np.atleast_2d(np.asarray(x, dtype))
    length = x.shape[1]
    if length < rate / 2:
        x = np.pad(x, ((0, 0), (0, (rate - 2 * length) // 2)))
    for b, a in k_weighting_coefficients(rate):
        if float32_coefficients:
            b, a = b.astype(np.float32), a.astype(np.float32)
        x = lfilter(b.astype(dtype), a.astype(dtype), x, axis=1)
    kernel, stride = int(0.4 * rate), int(0.4 * rate * 0.25)
    n_blocks = math.ceil((max(x.shape[1], kernel) - kernel) / stride) + 1
    x = np.pad(x, ((0, 0), (0, (n_blocks - 1) * stride + kernel - x.shape[1])))
    z = np.stack([(x[:, j * stride:j * stride + kernel].astype(np.float64) ** 2).sum(1) for j in range(n_blocks)], 1)
    z = z / (0.4 * rate)
    out = []
    for row in z:
        with np.errstate(divide="ignore", invalid="ignore"):
            l = -0.691 + 10 * np.log10(row)
            gated = row[l > -70]
            gamma = -0.691 + 10 * np.log10(gated.mean()) - 10 if gated.size else np.nan
            kept = row[(l > -70) & (l > gamma)]
            value = -0.691 + 10 * np.log10(kept.mean()) if kept.size else -np.inf
        out.append(max(value, -70.0))
    return np.array(out)


def preprocess(x: np.ndarray, rate: int, model_rate: int = 44100) -> np.ndarray:
    """Upstream `_preprocess` of mono rows: julius to the model's rate, −24 LUFS, peak <= 1."""
    y = julius_resample(x, rate, model_rate).astype(np.float64)
    y = y * 10 ** ((-24.0 - loudness(y, model_rate, float32_coefficients=True))[:, None] / 20)
    peak = np.abs(y).max(1, keepdims=True)
    return (y / np.where(peak > 1, peak, 1)).astype(np.float32)
# 5. Pitch shift (graphs/pitch.py): torch-pitch-shift 1.2.5's pitch_shift, step by step as torch
#    and torchaudio compute it (np.fft in place of torch's FFT, float64 resampling kernel)
# ============================================================================================


def torch_arange_f32(end: int, step: float, lanes: int = 8) -> np.ndarray:
    """torch.arange(0, end, step, dtype=float32) on CPU: chunks of `lanes` values computed as
    float32(float32(i0·step) + k·step), the tail past the last whole pair of chunks as float32(i·step)."""
    count = math.ceil(end / step)
    i = np.arange(count, dtype=np.int64)
    first = np.where(i < count // (2 * lanes) * (2 * lanes), i // lanes * lanes, i)
    base = (first * step).astype(np.float32).astype(np.float64)
    return (base + (i - first) * step).astype(np.float32)


def torch_linspace_f32(end: float, steps: int) -> np.ndarray:
    """torch.linspace(0, end, steps) in float32 (CPU): each value rounded once from the float32 step."""
    end32 = np.float32(end)
    step = np.float64(np.float32(end32 / np.float32(steps - 1)))
    i = np.arange(steps)
    return np.where(i < steps // 2, i * step, np.float64(end32) - step * (steps - 1 - i)).astype(np.float32)


def phase_vocoder(spec: np.ndarray, rate: float, advance: np.ndarray) -> np.ndarray:
    """torchaudio.functional.phase_vocoder on (B, K, F) complex64, accumulating in float64 like
    torch's CPU cumsum."""
    steps = torch_arange_f32(spec.shape[-1], rate)
    alphas = np.fmod(steps, np.float32(1.0))
    phase_0 = np.angle(spec[..., :1])
    spec = np.pad(spec, ((0, 0), (0, 0), (0, 2)))
    index = steps.astype(np.int64)
    s0, s1 = spec[..., index], spec[..., index + 1]
    two_pi = np.float32(2 * math.pi)
    phase = np.angle(s1) - np.angle(s0) - advance
    phase = phase - two_pi * np.round(phase / two_pi)
    phase = phase + advance
    phase = np.concatenate([phase_0, phase[..., :-1]], axis=-1)
    acc = np.cumsum(phase.astype(np.float64), axis=-1).astype(np.float32)
    mag = alphas * np.abs(s1) + (np.float32(1) - alphas) * np.abs(s0)
    return (mag * np.cos(acc) + 1j * (mag * np.sin(acc))).astype(np.complex64)


def torchaudio_resample(x: np.ndarray, orig_freq: int, new_freq: int) -> np.ndarray:
    """torchaudio.functional.resample (sinc_interp_hann, width 6, roll-off 0.99) of (B, L) float32,
    each output sample summed over its kernel row (weights in float64 rounded to float32, as
    torchaudio's kernel), computed only where the row can be non-zero."""
    g = math.gcd(orig_freq, new_freq)
    orig, new = orig_freq // g, new_freq // g
    base = min(orig, new) * 0.99
    width = math.ceil(6 * orig / base)
    L = x.shape[-1]
    n = np.arange(math.ceil(new * L / orig))
    i, p = n // new, n % new
    # kernel row p, column c (0 <= c < 2·width + orig) reads input sample i·orig + c − width, zero
    # outside [0, L); row p is non-zero only within width + 1 columns of width + p·orig/new
    c = (p * orig // new + width)[:, None] + np.arange(-width - 1, width + 2)[None]
    t = (-p[:, None] / new + (c - width) / orig) * base
    t = np.clip(t, -6, 6)
    window = np.cos(t * math.pi / 6 / 2) ** 2
    t = t * math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = np.where(t == 0, 1.0, np.sin(t) / t) * window * (base / orig)
    kernel = kernel.astype(np.float32)
    j = i[:, None] * orig + c - width
    valid = (c >= 0) & (c < 2 * width + orig) & (j >= 0) & (j < L)
    samples = np.where(valid, x[:, np.clip(j, 0, L - 1)], 0).astype(np.float32)
    return np.einsum("bnt,nt->bn", samples.astype(np.float64), kernel.astype(np.float64)).astype(np.float32)


def pitch_shift(audio: np.ndarray, semitones: int, sample_rate: int = 44100) -> np.ndarray:
    """torch-pitch-shift's pitch_shift(audio[:, None], shift=n, sample_rate)[:, 0] for (B, S) float32."""
    audio = np.asarray(audio, np.float32)
    if semitones == 0:
        return audio.copy()
    B, S = audio.shape
    shift = 2.0 ** (float(semitones) / 12)
    n_fft = sample_rate // 64
    hop = n_fft // 32
    half = n_fft // 2
    x = np.pad(audio, ((0, 0), (half, half)), mode="reflect")
    F = 1 + (x.shape[1] - n_fft) // hop
    frames = x[:, np.arange(F)[:, None] * hop + np.arange(n_fft)[None]]
    spec = np.fft.rfft(frames, axis=-1).astype(np.complex64).transpose(0, 2, 1)  # (B, K, F)
    advance = torch_linspace_f32(math.pi * hop, n_fft // 2 + 1)[:, None]
    spec = phase_vocoder(spec, float(1 / shift), advance)
    T = spec.shape[-1]
    frames = np.fft.irfft(spec.transpose(0, 2, 1), n=n_fft, axis=-1).astype(np.float32)  # (B, T, n_fft)
    y = np.zeros((B, n_fft + hop * (T - 1)), np.float32)
    envelope = np.zeros(y.shape[1], np.float32)
    for t in range(T):
        y[:, t * hop:t * hop + n_fft] += frames[:, t]
        envelope[t * hop:t * hop + n_fft] += 1
    y = y[:, half:-half] / envelope[half:-half]
    y = torchaudio_resample(y, sample_rate, int(sample_rate / shift))
    if y.shape[1] >= S:
        return y[:, :S]
    return np.pad(y, ((0, 0), (0, S - y.shape[1])))
