"""graphs/sampling.py: one step of upstream VampNet.generate (schedule, sampler, top-p, re-masking).

The graph functions run in onnxruntime (and the ReferenceEvaluator where noted) and must equal the
numpy references in tests/numpy_reference.py (section 3); those are cross-checked against a few
lines of torch that replicate upstream's exact ops (top-p, mask_by_random_topk, γ).
"""

import numpy as np
import onnxruntime as ort
import pytest
import torch
from scipy import stats

import tests.numpy_reference as R
from vampnet_onnx.graphs import sampling as S
from tests.graph_helpers import function_model, run_function

M = S.MASK_TOKEN
V = 1024

# Upstream's γ tables (upstream's float32 values, printed to 9 significant digits).
GAMMA_TABLES = {
    2: [0.707106769, 1e-10],
    12: [0.991444886, 0.965925813, 0.923879504, 0.866025388, 0.793353319, 0.707106769,
         0.60876143, 0.49999997, 0.382683426, 0.258819073, 0.130526125, 1e-10],
    36: [0.999048233, 0.99619472, 0.991444886, 0.98480773, 0.976296008, 0.965925813, 0.953716934,
         0.939692616, 0.923879504, 0.906307757, 0.887010813, 0.866025388, 0.843391418, 0.819151998,
         0.793353319, 0.766044438, 0.737277329, 0.707106769, 0.675590158, 0.642787576, 0.60876143,
         0.57357645, 0.537299573, 0.49999997, 0.4617486, 0.42261824, 0.382683426, 0.342020035,
         0.300705701, 0.258819073, 0.216439649, 0.173648104, 0.130526125, 0.087155804,
         0.0436193347, 1e-10],
}


class Session:
    """One ORT session for a graph function, reused across many runs (run_function builds one per call)."""

    def __init__(self, fn, *example):
        model = function_model(fn, *[np.asarray(x) for x in example])
        self.sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    def __call__(self, *inputs):
        out = self.sess.run(None, {f"in{i}": np.asarray(x) for i, x in enumerate(inputs)})
        return out[0] if len(out) == 1 else tuple(out)


def f32(x):
    return np.float32(x)


def exp_noise(rng, shape):
    """Exponential(1) draws the way the PRNG side makes them: −log of (0, 1) uniforms."""
    return (-np.log(rng.uniform(2.0**-24, 1.0, size=shape))).astype(np.float32)


def uniforms(rng, shape):
    return rng.uniform(2.0**-24, 1.0, size=shape).astype(np.float32)


# --------------------------------------------------------------------------------------------
# torch replicas of upstream's exact ops (vampnet/modules/transformer.py, branch main)
# --------------------------------------------------------------------------------------------


def torch_gamma(step, steps):
    r = torch.tensor([(step + 1) / steps], dtype=torch.float32)  # scalar_to_batch_tensor, B = 1
    return (r * torch.pi / 2).cos().clamp(1e-10, 1.0)[0].item()


def torch_top_p(logits: np.ndarray, top_p: float) -> np.ndarray:
    logits = torch.tensor(logits)
    sorted_logits, sorted_indices = torch.sort(logits, descending=True)
    cumulative_probs = torch.cumsum(torch.nn.functional.softmax(sorted_logits, dim=-1), dim=-1)
    sorted_indices_to_remove = cumulative_probs > top_p
    sorted_indices_to_remove[..., 1:] = sorted_indices_to_remove[..., :-1].clone()
    sorted_indices_to_remove[..., 0] = 0
    indices_to_remove = sorted_indices_to_remove.scatter(-1, sorted_indices, sorted_indices_to_remove)
    logits[indices_to_remove] = -float("inf")
    return logits.numpy()


def torch_mask_by_random_topk(num_to_mask, probs, temperature, u):
    """Upstream's mask_by_random_topk with the uniform_(1e-20, 1) draw replaced by `u`."""
    num_to_mask = torch.tensor(num_to_mask).reshape(-1, 1)
    probs, temperature = torch.tensor(probs), torch.tensor(temperature)
    noise = torch.tensor(u).clamp(1e-20, 1.0)
    gumbel_noise = -torch.log(-torch.log(noise))
    temperature = temperature.unsqueeze(-1)
    confidence = torch.log(probs) + temperature * gumbel_noise
    sorted_confidence, sorted_idx = confidence.sort(dim=-1)
    cut_off = torch.take_along_dim(sorted_confidence, num_to_mask, axis=-1)
    return (confidence < cut_off).numpy()


# --------------------------------------------------------------------------------------------
# Schedule
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", sorted(GAMMA_TABLES))
@pytest.mark.parametrize("runtime", ["ort", "ref"])
def test_gamma_tables(steps, runtime):
    table = np.array(GAMMA_TABLES[steps], np.float32)
    for i in range(steps):
        gamma = run_function(S.mask_schedule, np.int64(i), np.int64(steps), runtime=runtime)
        assert gamma.dtype == np.float32 and gamma.shape == ()
        assert gamma == table[i] == R.mask_schedule(i, steps) == f32(torch_gamma(i, steps)), (steps, i)


def test_gamma_matches_numpy_for_all_step_counts():
    """Correctly rounded γ in the graph (float64 cos): ORT = numpy for every (i, S), S <= 64."""
    run = Session(S.mask_schedule, np.int64(0), np.int64(1))
    for steps in range(1, 65):
        for i in range(steps):
            assert run(np.int64(i), np.int64(steps)) == R.mask_schedule(i, steps), (i, steps)
    assert run(np.int64(0), np.int64(0)) == R.mask_schedule(0, 1)  # steps < 1 acts as 1


def test_count_masked_counts_all_codebooks():
    rng = np.random.default_rng(0)
    zm = rng.integers(0, V, size=(3, 14, 9))
    zm[rng.uniform(size=zm.shape) < 0.4] = M
    zm[2] = M
    out = run_function(S.count_masked, zm)
    assert out.dtype == np.int64 and out.tolist() == R.count_masked(zm).tolist()
    assert out[2] == 14 * 9


def schedule_counts(n0, n_tokens, steps, batch_n0=None):
    """Masked count per step, feeding k back as the next step's masked count (no confidence ties)."""
    run = Session(S.num_to_mask, f32(0), np.int64([1]), np.int64([1]), np.array(False), np.int64(1))
    n_masked = np.asarray(n0, np.int64) if batch_n0 is None else np.full(len(n0), n_tokens, np.int64)
    n0 = n_masked.copy() if batch_n0 is None else np.full(len(n0), batch_n0, np.int64)
    counts = []
    for i in range(steps):
        gamma, is_last = R.mask_schedule(i, steps), i == steps - 1
        k = run(gamma, n0, n_masked, np.array(is_last), np.int64(n_tokens))
        ref = R.num_to_mask(gamma, n0, n_masked, is_last, n_tokens)
        assert k.dtype == np.int64 and k.tolist() == ref.tolist(), (i, k, ref)
        counts.append(k.tolist())
        n_masked = k
    return counts


def test_num_to_mask_reproduces_upstream_worked_numbers():
    """Upstream's table: masked counts after each step (incl. upstream's batch-summed N0 for B = 2)."""
    coarse = [2280, 2221, 2124, 1991, 1824, 1626, 1400, 1149, 880, 595, 300, 0]
    assert [c[0] for c in schedule_counts([2300], 2300, 12)] == coarse
    coarse_b2 = [2299, 2298, 2297, 2296, 2295, 2294, 2293, 2292, 1760, 1190, 600, 0]
    counts = schedule_counts([2300, 2300], 2300, 12, batch_n0=4600)
    assert [c[0] for c in counts] == coarse_b2 and [c[1] for c in counts] == coarse_b2
    assert [c[0] for c in schedule_counts([1730], 1730, 2)] == [1223, 0]
    assert [c[0] for c in schedule_counts([1730, 1730], 1730, 2, batch_n0=3460)] == [1729, 0]


@pytest.mark.parametrize("steps", [1, 2, 12, 36])
def test_num_to_mask_clamps_on_every_step(steps):
    run = Session(S.num_to_mask, f32(0), np.int64([1]), np.int64([1]), np.array(False), np.int64(1))
    # rows: (N0, masked now) with N fixed per call
    cases = [
        (40, [40, 40, 1, 0, 2, 40, 17, 39]),  # N = 40: N0 = 40 with various masked counts
        (1, [1, 1, 0]),  # N = 1: k must be 0 (the only valid index)
        (3, [3, 1, 0]),
    ]
    for n_tokens, masked in cases:
        n_masked = np.array(masked, np.int64)
        n0 = np.full_like(n_masked, n_tokens)
        n0[1] = 10 * n_tokens  # a row whose N0 also counts masked conditioning codebooks
        for i in range(steps):
            gamma, is_last = R.mask_schedule(i, steps), i == steps - 1
            k = run(gamma, n0, n_masked, np.array(is_last), np.int64(n_tokens))
            assert k.tolist() == R.num_to_mask(gamma, n0, n_masked, is_last, n_tokens).tolist()
            assert ((0 <= k) & (k <= n_tokens - 1)).all()
            if is_last:
                assert (k == 0).all()  # γ = 1e-10: nothing stays masked
            elif n_tokens > 1:
                assert (k >= 1).all()
                assert (k[n_masked >= 2] <= n_masked[n_masked >= 2] - 1).all()
    # upstream's own floor(fl32(γ·N0)) for a large N0, non-clamped
    k = run(f32(0.707106769), np.int64([1730]), np.int64([1730]), np.array(False), np.int64(1730))
    assert k.tolist() == [1223]
    # N = 0 (empty sequence): 0, still a valid index for remask's +inf column
    assert run(f32(0.5), np.int64([0]), np.int64([0]), np.array(False), np.int64(0)).tolist() == [0]


# --------------------------------------------------------------------------------------------
# Top-p
# --------------------------------------------------------------------------------------------


def mass_before(logits):
    """Per token, the (numpy) softmax mass of the tokens sorted before it."""
    order = np.argsort(-logits, axis=-1, kind="stable")
    p = R.softmax32(np.take_along_axis(logits, order, axis=-1)).astype(np.float64)
    before = np.cumsum(p, axis=-1) - p
    out = np.empty_like(before)
    np.put_along_axis(out, order, before, axis=-1)
    return out


def assert_same_nucleus(got, ref, logits, top_p, tol=1e-5):
    """Equal, except that tokens whose mass-before is within `tol` of top_p may flip (float32
    softmax implementations differ by an ulp); kept logits are unchanged."""
    assert got.dtype == np.float32 and got.shape == ref.shape
    kept = ~np.isinf(got)
    assert np.array_equal(got[kept], logits[kept])
    assert (got[~kept] == -np.inf).all()
    differ = np.isinf(got) != np.isinf(ref)
    if differ.any():
        assert (np.abs(mass_before(logits)[differ] - float(np.float32(top_p))) < tol).all()
    assert differ.mean() < 1e-3


@pytest.mark.parametrize("top_p", [0.0, 1e-6, 0.3, 0.9, 0.999, 0.99999])
def test_top_p_matches_reference_and_torch(top_p):
    rng = np.random.default_rng(1)
    logits = (rng.normal(size=(2, 40, V)) * rng.uniform(0.5, 4.0, size=(2, 40, 1))).astype(np.float32)
    ref = R.top_p_filter(logits, top_p)
    assert_same_nucleus(torch_top_p(logits, top_p), ref, logits, top_p)
    for runtime in ("ort", "ref"):
        got = run_function(S.top_p_filter, logits, f32(top_p), runtime=runtime)
        assert_same_nucleus(got, ref, logits, top_p)
    # the top-1 token always survives
    assert (np.isinf(ref).sum(-1) <= V - 1).all()
    assert np.array_equal(np.argmax(ref, -1), np.argmax(logits, -1))


@pytest.mark.parametrize("top_p", [1.0, 1.5, np.inf, np.nan])
def test_top_p_off(top_p):
    logits = np.random.default_rng(2).normal(size=(2, 5, V)).astype(np.float32)
    got = run_function(S.top_p_filter, logits, f32(top_p))
    assert np.array_equal(got, logits) and np.array_equal(R.top_p_filter(logits, top_p), logits)


def test_top_p_negative_acts_as_zero():
    logits = np.random.default_rng(3).normal(size=(2, 5, V)).astype(np.float32)
    got = run_function(S.top_p_filter, logits, f32(-0.5))
    assert np.array_equal(got, run_function(S.top_p_filter, logits, f32(0.0)))
    assert np.array_equal(got, R.top_p_filter(logits, 0.0))
    assert (np.isfinite(got).sum(-1) == 1).all()  # only the top-1 token left


def test_top_p_exact_ties_and_edges():
    """K tied tokens (probability exactly 1/K), everything else probability 0: cum = j/K exactly.
    cum > top_p is strict, the first crossing token is kept, and ties go to the lower token id."""
    rng = np.random.default_rng(4)
    K, rows = 8, 6
    logits = np.full((1, rows, V), -1e4, np.float32)
    tied = np.stack([np.sort(rng.choice(V, K, replace=False)) for _ in range(rows)])
    for n in range(rows):
        logits[0, n, tied[n]] = 2.5
    edges = [(0.0, 1), (0.1249, 1), (0.125, 2), (0.126, 2), (0.5, 5), (0.51, 5), (0.875, 8), (0.9, 8), (1.0, V)]
    for top_p, n_kept in edges:
        for runtime in ("ort", "ref"):
            got = run_function(S.top_p_filter, logits, f32(top_p), runtime=runtime)
            assert np.array_equal(got, R.top_p_filter(logits, top_p)), (top_p, runtime)
            kept = np.isfinite(got[0])
            if n_kept < V:
                # exactly the n_kept lowest-id tied tokens survive
                assert (kept.sum(-1) == n_kept).all(), (top_p, kept.sum(-1))
                for n in range(rows):
                    assert np.array_equal(np.flatnonzero(kept[n]), tied[n][:n_kept])
            else:
                assert kept.all()
        if 1 < n_kept < K:  # torch's unstable sort picks other tied ids, but the same number
            assert (np.isfinite(torch_top_p(logits, top_p)).sum(-1) == n_kept).all()


# --------------------------------------------------------------------------------------------
# Sampler
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.7, 1.0, 2.0])
def test_sampler_follows_tempered_softmax(temperature):
    """Chi-square: argmax(p / q) with PRNG-made exponential noise is a draw from softmax(logits/τ)."""
    vocab, n = 16, 40000
    row = np.random.default_rng(5).normal(size=vocab).astype(np.float32) * 1.5
    logits = np.broadcast_to(row, (1, n, vocab)).copy()
    u = R.uniform(R.key_path(11, int(temperature * 10)), (1, n, vocab))  # the project's PRNG stream
    q = (-np.log(u)).astype(np.float32)
    tokens, prob = run_function(S.sample_tokens, logits, f32(temperature), np.array(True), q)
    ref_tokens, ref_prob = R.sample_tokens(logits, temperature, True, q)
    assert tokens.dtype == np.int64 and tokens.shape == (1, n) and prob.shape == (1, n)
    assert (tokens == ref_tokens).mean() > 0.9999  # argmax(p/q) flips only on ulp-level near ties
    expected = R.softmax32(row / f32(temperature)).astype(np.float64)
    expected /= expected.sum()
    counts = np.bincount(tokens.ravel(), minlength=vocab)
    chi2 = stats.chisquare(counts, expected * n)
    assert chi2.pvalue > 1e-3, (chi2, counts, expected * n)
    np.testing.assert_allclose(prob[0], expected[tokens[0]], rtol=1e-5)
    np.testing.assert_allclose(prob, ref_prob, rtol=1e-5)


def test_sampler_matches_reference_on_random_logits():
    rng = np.random.default_rng(6)
    logits = (rng.normal(size=(2, 50, V)) * 3).astype(np.float32)
    q = exp_noise(rng, logits.shape)
    for temperature in (0.5, 1.0, 1.3):
        tokens, prob = run_function(S.sample_tokens, logits, f32(temperature), np.array(True), q)
        ref_tokens, ref_prob = R.sample_tokens(logits, temperature, True, q)
        assert np.array_equal(tokens, ref_tokens)
        np.testing.assert_allclose(prob, ref_prob, rtol=1e-5)


def test_argmax_mode_takes_first_maximum_and_tempered_prob():
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(2, 30, V)).astype(np.float32)
    logits[0, 0, [5, 9, 700]] = 50.0  # tie: token 5
    logits[1, 3, [1000, 1023]] = 60.0  # tie: token 1000
    q = exp_noise(rng, logits.shape)
    for runtime in ("ort", "ref"):
        tokens, prob = run_function(S.sample_tokens, logits, f32(0.8), np.array(False), q, runtime=runtime)
        assert np.array_equal(tokens, np.argmax(logits, -1))
        assert tokens[0, 0] == 5 and tokens[1, 3] == 1000
        ref_tokens, ref_prob = R.sample_tokens(logits, 0.8, False, q)
        assert np.array_equal(tokens, ref_tokens)
        np.testing.assert_allclose(prob, ref_prob, rtol=1e-5)


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan, -np.inf])
def test_non_positive_temperature_is_untempered(bad):
    rng = np.random.default_rng(8)
    logits = rng.normal(size=(1, 20, V)).astype(np.float32)
    q = exp_noise(rng, logits.shape)
    tokens, prob = run_function(S.sample_tokens, logits, f32(bad), np.array(True), q)
    tokens1, prob1 = run_function(S.sample_tokens, logits, f32(1.0), np.array(True), q)
    assert np.array_equal(tokens, tokens1) and np.array_equal(prob, prob1)


# --------------------------------------------------------------------------------------------
# Re-masking
# --------------------------------------------------------------------------------------------


def random_confidences(rng, B, N, fixed_fraction=0.3):
    prob = rng.uniform(1e-4, 1.0, size=(B, N)).astype(np.float32)
    prob[rng.uniform(size=(B, N)) < fixed_fraction] = np.inf  # fixed tokens
    return prob


@pytest.mark.parametrize("mask_temp", [0.0, 1.0, 10.5, 1e3])
def test_remask_exactly_k_never_fixed(mask_temp):
    rng = np.random.default_rng(9)
    B, N = 4, 300
    prob = random_confidences(rng, B, N)
    u = uniforms(rng, (B, N))
    n_masked = np.isfinite(prob).sum(1)
    k = np.array([0, 1, n_masked[2] // 2, n_masked[3] - 1], np.int64)
    mask_temps = np.full(B, mask_temp, np.float32)
    got = run_function(S.remask, prob, u, k, f32(mask_temp))
    assert got.dtype == bool and got.shape == (B, N)
    assert np.array_equal(got, R.remask(prob, u, k, mask_temp))
    assert np.array_equal(got, torch_mask_by_random_topk(k, prob, mask_temps, u))
    assert got.sum(1).tolist() == k.tolist()  # no ties: exactly k
    assert not got[np.isinf(prob)].any()  # never an already-fixed token
    if mask_temp == 0.0:  # deterministic: the k least probable masked tokens
        for b in range(B):
            least = np.argsort(prob[b], kind="stable")[: k[b]]
            assert set(np.flatnonzero(got[b])) == set(least)


def test_remask_ties_give_fewer():
    B, N = 2, 12
    prob = np.full((B, N), 0.25, np.float32)
    prob[:, 0] = 0.1
    prob[:, -3:] = np.inf
    u = np.full((B, N), 0.5, np.float32)
    k = np.array([1, 4], np.int64)  # row 1's cut falls inside the tied block
    got = run_function(S.remask, prob, u, k, f32(0.0))
    assert np.array_equal(got, R.remask(prob, u, k, 0.0))
    assert np.array_equal(got, torch_mask_by_random_topk(k, prob, np.zeros(B, np.float32), u))
    assert got.sum(1).tolist() == [1, 1]  # only the strictly-less token, not 4
    assert got[:, 0].all()


def test_remask_k_beyond_masked_and_extreme_noise():
    """k >= masked count (possible on clamped rows) re-masks every masked token, never fixed ones;
    u at 0 or 1 and a huge temperature stay finite."""
    B, N = 2, 10
    prob = np.full((B, N), 0.5, np.float32)
    prob[:, 5:] = np.inf
    u = np.tile(np.array([0.0, 1.0, 0.5, 1e-30, 0.999], np.float32), (B, 2))
    k = np.array([9, 5], np.int64)
    for mask_temp in (0.0, 1e6):
        got = run_function(S.remask, prob, u, k, f32(mask_temp))
        assert np.array_equal(got, R.remask(prob, u, k, mask_temp))
        assert got[:, :5].all() and not got[:, 5:].any()


def test_remask_empty_sequence():
    got = run_function(S.remask, np.zeros((2, 0), np.float32), np.zeros((2, 0), np.float32),
                       np.zeros(2, np.int64), f32(1.0))
    assert got.shape == (2, 0)


# --------------------------------------------------------------------------------------------
# generation_step
# --------------------------------------------------------------------------------------------


def step_case(rng, B, C, T, cc, mask_fraction=0.7, mask_conditioning=False):
    z = rng.integers(0, V, size=(B, C, T)).astype(np.int64)
    mask = (rng.uniform(size=(B, C, T)) < mask_fraction).astype(np.int64)
    if not mask_conditioning:
        mask[:, :cc] = 0
    zm = np.where(mask == 1, M, z)
    N = T * (C - cc)
    logits = (rng.normal(size=(B, N, V)) * 2.5).astype(np.float32)
    return z, zm, logits, exp_noise(rng, (B, N, V)), uniforms(rng, (B, N))


def run_step(run, logits, zm, z, n0, step, steps, tau=1.0, kappa=10.5, top_p=1.0, cutoff=1.0, q=None, u=None, cc=0):
    args = (logits, zm, z, np.asarray(n0, np.int64), np.int64(step), np.int64(steps), f32(tau), f32(kappa),
            f32(top_p), f32(cutoff), q, u, np.int64(cc))
    return run(*args), R.generation_step(*args)


def check_step_invariants(zm, z, zm_next, out, cc, k=None):
    B, C, T = zm.shape
    assert zm_next.shape == out.shape == (B, C, T) and zm_next.dtype == out.dtype == np.int64
    assert np.array_equal(out[:, :cc], z[:, :cc]) and np.array_equal(zm_next[:, :cc], z[:, :cc])
    pred, pred_next, pred_out = zm[:, cc:], zm_next[:, cc:], out[:, cc:]
    assert ((pred_out >= 0) & (pred_out < V)).all()  # every position filled with a real token
    fixed = pred != M
    assert np.array_equal(pred_out[fixed], pred[fixed]) and np.array_equal(pred_next[fixed], pred[fixed])
    # zm_next = out with some of the previously masked positions masked again
    again = pred_next == M
    assert not (again & fixed).any()
    assert np.array_equal(pred_next[~again], pred_out[~again])
    if k is not None:
        assert again.sum((1, 2)).tolist() == list(k)


@pytest.mark.parametrize("C,cc", [(4, 0), (14, 4)])
def test_generation_step_matches_reference(C, cc):
    rng = np.random.default_rng(10 + C)
    B, T, steps = 2, 7, 12
    z, zm, logits, q, u = step_case(rng, B, C, T, cc, mask_conditioning=(cc > 0))
    run = Session(S.generation_step, logits, zm, z, np.zeros(B, np.int64), np.int64(0), np.int64(1), f32(1), f32(1),
                  f32(1), f32(1), q, u, np.int64(0))
    n0 = R.count_masked(zm)
    settings = [
        dict(),  # upstream defaults: τ 1, κ 10.5, no top-p, always sample
        dict(tau=0.8, kappa=3.0, top_p=0.9),
        dict(cutoff=-1.0, kappa=0.0),  # deterministic decoding
        dict(cutoff=0.5, top_p=0.5, tau=1.5),
    ]
    for setting in settings:
        for step in (0, 1, 5, 6, steps - 1):
            (zm_next, out), (ref_next, ref_out) = run_step(run, logits, zm, z, n0, step, steps, q=q, u=u, cc=cc,
                                                           **setting)
            assert np.array_equal(out, ref_out), (setting, step)
            assert np.array_equal(zm_next, ref_next), (setting, step)
            pred = R.flatten_codes(zm[:, cc:])
            k = R.num_to_mask(R.mask_schedule(step, steps), n0, (pred == M).sum(1), step == steps - 1, pred.shape[1])
            check_step_invariants(zm, z, zm_next, out, cc, k)
            if step == steps - 1:
                assert not (zm_next == M).any()  # k = 0: everything committed


def test_generation_step_flattening_order():
    """n = t·C_p + c: a logit row for position n decides codes[c, t] (argmax, no noise)."""
    B, C, cc, T = 1, 6, 2, 5
    Cp = C - cc
    z = np.arange(B * C * T, dtype=np.int64).reshape(B, C, T)
    zm = z.copy()
    zm[:, cc:] = M
    logits = np.zeros((B, T * Cp, V), np.float32)
    for t in range(T):
        for c in range(Cp):
            logits[0, t * Cp + c, 100 * c + t] = 10.0  # token encodes (c, t)
    q = np.ones_like(logits)
    u = np.full((B, T * Cp), 0.5, np.float32)
    zm_next, out = run_function(S.generation_step, logits, zm, z, np.int64([T * Cp]), np.int64(1), np.int64(2),
                                f32(1), f32(0), f32(1), f32(-1), q, u, np.int64(cc))
    expected = np.array([[100 * c + t for t in range(T)] for c in range(Cp)])
    assert np.array_equal(out[0, cc:], expected) and np.array_equal(out[0, :cc], z[0, :cc])
    assert np.array_equal(zm_next, out)  # last step: nothing re-masked


@pytest.mark.parametrize("C,cc,T,steps,counts", [
    (4, 0, 575, 12, [2280, 2221, 2124, 1991, 1824, 1626, 1400, 1149, 880, 595, 300, 0]),
    (14, 4, 173, 2, [1223, 0]),
])
def test_generation_loop_follows_schedule(C, cc, T, steps, counts):
    """A full chunk through the loop body (ORT), fresh logits per step: masked counts follow the
    upstream's table, the result has no mask token, and matches the numpy loop."""
    rng = np.random.default_rng(12)
    z = rng.integers(0, V, size=(1, C, T)).astype(np.int64)
    zm = z.copy()
    zm[:, cc:] = M
    N = T * (C - cc)
    per_step = [((rng.normal(size=(1, N, V)) * 2).astype(np.float32), exp_noise(rng, (1, N, V)),
                 uniforms(rng, (1, N))) for _ in range(steps)]
    run = Session(S.generation_step, per_step[0][0], zm, z, np.zeros(1, np.int64), np.int64(0), np.int64(1),
                  f32(1), f32(1), f32(1), f32(1), per_step[0][1], per_step[0][2], np.int64(0))
    n0 = run_function(S.count_masked, zm)
    assert n0.tolist() == [N]
    cur = zm
    seen = []
    for i, (logits, q, u) in enumerate(per_step):
        cur, out = run(logits, cur, z, n0, np.int64(i), np.int64(steps), f32(1), f32(10.5), f32(1), f32(1), q, u,
                       np.int64(cc))
        seen.append(int((cur == M).sum()))
    assert seen == counts
    assert not (out == M).any() and np.array_equal(out, cur) and np.array_equal(out[:, :cc], z[:, :cc])
    it = iter(per_step)

    def forward(_zm):
        return next(it)[0]

    noise = {i: (q, u) for i, (_, q, u) in enumerate(per_step)}
    ref = R.generate(forward, z, np.where(zm == M, 1, 0), steps, noise.__getitem__, n_conditioning=cc)
    assert np.array_equal(ref, out)


def test_generation_step_reference_evaluator_agrees():
    rng = np.random.default_rng(13)
    B, C, cc, T = 2, 14, 4, 5
    z, zm, logits, q, u = step_case(rng, B, C, T, cc)
    args = (logits, zm, z, R.count_masked(zm), np.int64(3), np.int64(12), f32(0.9), f32(10.5), f32(0.8),
            f32(1.0), q, u, np.int64(cc))
    got_ort = run_function(S.generation_step, *args, runtime="ort")
    got_ref = run_function(S.generation_step, *args, runtime="ref")
    for a, b, r in zip(got_ort, got_ref, R.generation_step(*args)):
        assert np.array_equal(a, b) and np.array_equal(a, r)


def test_batch_summed_n0_reproduces_upstream_schedule():
    """n0 may be upstream's batch sum (np.full(B, total)): then k follows upstream's B > 1 quirk."""
    rng = np.random.default_rng(14)
    B, C, T, steps = 2, 4, 10, 12
    z, _, logits, q, u = step_case(rng, B, C, T, 0)
    zm = np.full_like(z, M)
    n0 = np.full(B, R.count_masked(zm).sum())
    (zm_next, out), (ref_next, ref_out) = run_step(Session(S.generation_step, logits, zm, z, n0, np.int64(0),
                                                           np.int64(1), f32(1), f32(1), f32(1), f32(1), q, u,
                                                           np.int64(0)), logits, zm, z, n0, 0, steps, q=q, u=u)
    assert np.array_equal(zm_next, ref_next) and np.array_equal(out, ref_out)
    assert (zm_next == M).sum((1, 2)).tolist() == [39, 39]  # min(40 − 1, floor(0.99·80)) per row


# --------------------------------------------------------------------------------------------
# Robustness: any float parameter is safe
# --------------------------------------------------------------------------------------------

EXTREMES = [
    dict(tau=1e-6), dict(tau=1e6), dict(tau=1e-30), dict(tau=np.inf), dict(tau=np.nan), dict(tau=-3.0),
    dict(top_p=1e-9), dict(top_p=0.0), dict(top_p=-1.0), dict(top_p=np.nan), dict(top_p=np.inf),
    dict(kappa=1e30), dict(kappa=np.inf), dict(kappa=np.nan), dict(kappa=-5.0),
    dict(cutoff=np.nan), dict(cutoff=np.inf), dict(cutoff=-np.inf),
    dict(tau=1e-6, top_p=1e-9, kappa=np.inf), dict(tau=1e6, top_p=0.999, kappa=1e30),
]


def test_extreme_parameters_give_valid_tokens():
    rng = np.random.default_rng(15)
    B, C, cc, T, steps = 2, 14, 4, 6, 12
    z, zm, logits, q, u = step_case(rng, B, C, T, cc)
    logits[0, :3] *= 40.0  # large logits, too
    run = Session(S.generation_step, logits, zm, z, np.zeros(B, np.int64), np.int64(0), np.int64(1), f32(1), f32(1),
                  f32(1), f32(1), q, u, np.int64(0))
    sample = Session(S.sample_tokens, logits, f32(1), np.array(True), q)
    n0 = R.count_masked(zm)
    for setting in EXTREMES:
        for step in (0, 4, steps - 1):
            (zm_next, out), (ref_next, ref_out) = run_step(run, logits, zm, z, n0, step, steps, q=q, u=u, cc=cc,
                                                           **setting)
            check_step_invariants(zm, z, zm_next, out, cc)
            assert np.array_equal(out, ref_out) and np.array_equal(zm_next, ref_next), (setting, step)
        tau = setting.get("tau", 1.0)
        tokens, prob = sample(run_function(S.top_p_filter, logits, f32(setting.get("top_p", 1.0))), f32(tau),
                              np.array(True), q)
        assert ((tokens >= 0) & (tokens < V)).all() and np.isfinite(prob).all() and (prob >= 0).all()


@pytest.mark.parametrize("bad,same", [
    (dict(tau=np.nan), dict(tau=1.0)),
    (dict(top_p=np.nan), dict(top_p=1.0)),
    (dict(kappa=np.nan), dict(kappa=0.0)),
    (dict(kappa=-2.0), dict(kappa=0.0)),
    (dict(cutoff=np.nan), dict(cutoff=-1.0)),
])
def test_nan_parameters_take_documented_values(bad, same):
    rng = np.random.default_rng(16)
    z, zm, logits, q, u = step_case(rng, 2, 4, 6, 0)
    run = Session(S.generation_step, logits, zm, z, np.zeros(2, np.int64), np.int64(0), np.int64(1), f32(1), f32(1),
                  f32(1), f32(1), q, u, np.int64(0))
    n0 = R.count_masked(zm)
    a, _ = run_step(run, logits, zm, z, n0, 2, 12, q=q, u=u, **bad)
    b, _ = run_step(run, logits, zm, z, n0, 2, 12, q=q, u=u, **same)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_conditioning_count_is_clamped():
    rng = np.random.default_rng(17)
    z, zm, logits, q, u = step_case(rng, 1, 4, 3, 0)
    n0 = R.count_masked(zm)
    run = Session(S.generation_step, logits, zm, z, n0, np.int64(0), np.int64(1), f32(1), f32(1), f32(1), f32(1),
                  q, u, np.int64(0))
    zero, _ = run_step(run, logits, zm, z, n0, 0, 12, q=q, u=u, cc=0)
    negative, _ = run_step(run, logits, zm, z, n0, 0, 12, q=q, u=u, cc=-3)
    assert np.array_equal(zero[0], negative[0]) and np.array_equal(zero[1], negative[1])


def test_argmax_steps_ignore_q():
    """q is read only when sampling: an empty tensor is fine on argmax steps (saves drawing B·N·V)."""
    rng = np.random.default_rng(18)
    z, zm, logits, q, u = step_case(rng, 2, 4, 6, 0)
    n0 = R.count_masked(zm)
    args = (logits, zm, z, n0, np.int64(2), np.int64(12), f32(1), f32(10.5), f32(1), f32(-1.0))
    for runtime in ("ort", "ref"):
        empty = run_function(S.generation_step, *args, np.zeros(0, np.float32), u, np.int64(0), runtime=runtime)
        full = run_function(S.generation_step, *args, q, u, np.int64(0), runtime=runtime)
        assert np.array_equal(empty[0], full[0]) and np.array_equal(empty[1], full[1])
