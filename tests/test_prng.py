"""graphs/prng.py: bit-exact across onnxruntime, the ReferenceEvaluator and numpy; sound statistics."""
import numpy as np
import pytest

import tests.numpy_reference as ref
from tests.graph_helpers import run_function
from vampnet_onnx.graphs import prng

INT64_MIN, INT64_MAX = np.iinfo(np.int64).min, np.iinfo(np.int64).max
SEEDS = [0, 42, 2**40 + 7, -5, INT64_MIN, INT64_MAX]
STREAMS = [0, 1, 2, 3, 1000, 2**33 + 1]
RUNTIMES = ["ort", "ref"]


def graph_key(seed: int, *path: int, runtime: str = "ort") -> np.int32:
    key = run_function(prng.seed_key, np.int64(seed), runtime=runtime)
    for n in path:
        key = run_function(prng.derive_key, key, np.int64(n), runtime=runtime)
    return key


# ---------------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_block_matches_numpy(runtime):
    rng = np.random.default_rng(0)
    high = np.concatenate([np.array([0, 0, 0xFFFF, 0x7FFF], np.int32), rng.integers(0, 1 << 16, 4096, np.int32)])
    low = np.concatenate([np.array([0, 1, 0xFFFF, 0x8000], np.int32), rng.integers(0, 1 << 16, 4096, np.int32)])
    for key in [(0, 0), (0, 1), (0xFFFF, 0xFFFF), (1234, 56789)]:
        key = np.array(key, np.int32)
        got_high, got_low = run_function(prng.block, key, high, low, runtime=runtime)
        assert got_high.dtype == np.int32 and got_high.shape == high.shape
        want_high, want_low = ref.block(key, high, low)
        np.testing.assert_array_equal(got_high, want_high)
        np.testing.assert_array_equal(got_low, want_low)


def test_block_is_a_bijection_with_full_avalanche():
    n = np.arange(1 << 18, dtype=np.int64)
    high, low = ref.block((0, 99), *ref.words(n))
    assert np.unique(high << 16 | low).size == n.size
    # flipping any one input bit flips each output bit with probability 1/2
    rng = np.random.default_rng(1)
    x = rng.integers(0, 1 << 32, 20000, dtype=np.int64)
    out = np.stack(ref.block((0, 99), *ref.words(x)))
    for bit in range(32):
        flipped = np.stack(ref.block((0, 99), *ref.words(x ^ (1 << bit))))
        changed = np.concatenate([((out[w] ^ flipped[w]) >> b) & 1 for w in range(2) for b in range(16)])
        rate = changed.reshape(32, -1).mean(axis=1)
        assert np.all(np.abs(rate - 0.5) < 0.02), (bit, rate)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("seed", SEEDS)
def test_seed_key_matches_numpy(seed, runtime):
    got = run_function(prng.seed_key, np.int64(seed), runtime=runtime)
    assert got.dtype == np.int32 and got.shape == (2,)
    np.testing.assert_array_equal(got, ref.seed_key(seed))
    assert (0 <= got).all() and (got < 1 << 16).all()


def test_seed_key_uses_the_low_32_bits():
    # Runtimes that hold int64 in int32 (OpenVINO's CPU plugin) see only these bits, so only they count.
    seeds = [0, 1, 2, 42, -1, -5, 2**31 - 1, 2**31, 2**32 - 2]
    keys = {tuple(ref.seed_key(s)) for s in seeds}
    assert len(keys) == len(seeds)
    for s in [2**32, 2**32 + 42, -(2**32), 42 - 2**40, -1, 2**31, -(2**31)]:
        np.testing.assert_array_equal(ref.seed_key(s), ref.seed_key(s % 2**32))
        np.testing.assert_array_equal(run_function(prng.seed_key, np.int64(s)), ref.seed_key(s))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_derive_key_matches_numpy(runtime):
    for seed in [0, -5, INT64_MAX]:
        key = ref.seed_key(seed)
        for n in STREAMS:
            got = run_function(prng.derive_key, key, np.int64(n), runtime=runtime)
            assert got.dtype == np.int32 and got.shape == (2,)
            np.testing.assert_array_equal(got, ref.derive_key(key, n), err_msg=f"{seed} {n}")


def test_derive_key_children_are_distinct():
    key = ref.seed_key(0)
    children = {tuple(ref.derive_key(key, n)) for n in range(2000)}
    assert len(children) == 2000
    # a two-level path is not the same as its reverse, nor as a one-level path
    assert tuple(ref.derive_key(ref.derive_key(key, 1), 2)) != tuple(ref.derive_key(ref.derive_key(key, 2), 1))
    assert tuple(key) not in children


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("seed", SEEDS)
def test_uniform_and_randint_bit_exact(seed, runtime):
    shape = np.array([3, 5, 7], np.int64)
    for path in [(), (0,), (1, 4, 11, 2), (2**33 + 1,)]:
        key = graph_key(seed, *path, runtime=runtime)
        np.testing.assert_array_equal(key, ref.key_path(seed, *path))
        u = run_function(prng.uniform, key, shape, runtime=runtime)
        assert u.dtype == np.float32 and u.shape == (3, 5, 7)
        np.testing.assert_array_equal(u, ref.uniform(key, shape))
        assert u.min() > 0.0 and u.max() < 1.0
        for high in [1, 2, 7, 575, 2**23]:
            r = run_function(prng.randint, key, shape, np.int64(high), runtime=runtime)
            assert r.dtype == np.int64 and r.shape == (3, 5, 7)
            np.testing.assert_array_equal(r, ref.randint(key, shape, high))
            assert r.min() >= 0 and r.max() < high


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_uniform_shapes(runtime):
    key = ref.seed_key(7)
    scalar = run_function(prng.uniform, key, np.zeros(0, np.int64), runtime=runtime)
    assert scalar.shape == () and scalar == ref.uniform(key, [])[()]
    for shape in [[0], [3, 0], [0, 4, 2], [1, 1, 1]]:
        got = run_function(prng.uniform, key, np.array(shape, np.int64), runtime=runtime)
        assert got.shape == tuple(shape)
        np.testing.assert_array_equal(got, ref.uniform(key, shape))
    # streams are prefix-stable: the flat index is what counts, not the shape
    flat = run_function(prng.uniform, key, np.array([12], np.int64), runtime=runtime)
    grid = run_function(prng.uniform, key, np.array([2, 3], np.int64), runtime=runtime)
    np.testing.assert_array_equal(grid.ravel(), flat[:6])


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_randint_high_below_one_acts_as_one(runtime):
    key = ref.seed_key(3)
    for high in [1, 0, -7, INT64_MIN]:
        r = run_function(prng.randint, key, np.array([50], np.int64), np.int64(high), runtime=runtime)
        np.testing.assert_array_equal(r, np.zeros(50, np.int64))


def test_uniform_extremes_are_exact():
    # (2m + 1)·2^-24 for the smallest and largest 23-bit m: never 0, never 1 in float32
    m = np.array([0, (1 << 23) - 1], np.int64)
    u = (2 * m + 1).astype(np.float32) * np.float32(2.0**-24)
    assert u[0] == np.float32(2.0**-24) and u[1] == np.float32(1 - 2.0**-24) and u[1] < 1


def test_repeat_runs_identical():
    key = ref.key_path(42, 1, 0, 3)
    shape = np.array([4, 1000], np.int64)
    a = run_function(prng.uniform, key, shape)
    b = run_function(prng.uniform, key, shape)
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------- statistics

N_STAT = 1 << 21  # 2,097,152 samples


@pytest.fixture(scope="module")
def big_uniforms():
    """Three ORT streams: a root key, a sibling child key, and a different seed's key."""
    shape = np.array([N_STAT], np.int64)
    keys = [ref.key_path(0, 1, 0), ref.key_path(0, 1, 1), ref.key_path(1, 1, 0)]
    return [run_function(prng.uniform, k, shape).astype(np.float64) for k in keys]


def test_uniform_moments(big_uniforms):
    for u in big_uniforms:
        sigma_mean = np.sqrt(1 / 12 / u.size)  # 2.0e-4
        assert abs(u.mean() - 0.5) < 5 * sigma_mean
        assert abs(u.var() - 1 / 12) < 5e-4
        assert u.min() > 0 and u.max() < 1


def test_uniform_chi_square(big_uniforms):
    bins = 64
    for u in big_uniforms:
        counts = np.bincount(np.floor(u * bins).astype(np.int64), minlength=bins)
        expected = u.size / bins
        chi2 = ((counts - expected) ** 2 / expected).sum()
        # chi2(63): mean 63, sd 11.2; 120 is p ≈ 3e-5
        assert chi2 < 120, chi2


def test_uniform_fine_bins_chi_square(big_uniforms):
    # 4096 bins also probe the low-order bits of the 23-bit mantissa
    bins = 4096
    u = big_uniforms[0]
    counts = np.bincount(np.floor(u * bins).astype(np.int64), minlength=bins)
    expected = u.size / bins
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert abs(chi2 - (bins - 1)) < 6 * np.sqrt(2 * (bins - 1)), chi2


def test_uniform_lag_correlation(big_uniforms):
    bound = 5 / np.sqrt(N_STAT)  # 3.5e-3
    for u in big_uniforms:
        for lag in [1, 2, 7, 64]:
            r = np.corrcoef(u[:-lag], u[lag:])[0, 1]
            assert abs(r) < bound, (lag, r)


def test_uniform_cross_key_correlation(big_uniforms):
    bound = 5 / np.sqrt(N_STAT)
    a, b, c = big_uniforms
    for x, y in [(a, b), (a, c), (b, c)]:
        assert abs(np.corrcoef(x, y)[0, 1]) < bound
        # nor shifted by one (a permutation-like relation would show up here)
        assert abs(np.corrcoef(x[:-1], y[1:])[0, 1]) < bound


def test_adjacent_seeds_and_streams_uncorrelated():
    # many short streams from consecutive seeds / stream ids: the first draws must not be related
    n = 2048
    first = np.array([ref.uniform(ref.key_path(s, 0), [2]) for s in range(n)], np.float64)
    assert abs(np.corrcoef(first[:, 0], first[:, 1])[0, 1]) < 5 / np.sqrt(n)
    assert abs(np.corrcoef(first[:-1, 0], first[1:, 0])[0, 1]) < 5 / np.sqrt(n)
    steps = np.array([ref.uniform(ref.key_path(0, 1, 0, i), [1])[0] for i in range(n)], np.float64)
    assert abs(steps.mean() - 0.5) < 5 * np.sqrt(1 / 12 / n)
    assert abs(np.corrcoef(steps[:-1], steps[1:])[0, 1]) < 5 / np.sqrt(n)


def test_randint_uniformity():
    high = 7
    r = run_function(prng.randint, ref.key_path(5, 2), np.array([700000], np.int64), np.int64(high))
    counts = np.bincount(r, minlength=high)
    expected = r.size / high
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert counts.size == high and chi2 < 35  # chi2(6): p ≈ 5e-6


def test_function_models_pass_the_onnx_checker():
    import onnx

    from tests.graph_helpers import function_model

    key, shape = np.array([5, 6], np.int32), np.array([2, 3], np.int64)
    for fn, inputs, elem in [
        (prng.seed_key, [np.int64(1)], onnx.TensorProto.INT32),
        (prng.derive_key, [key, np.int64(1)], onnx.TensorProto.INT32),
        (prng.uniform, [key, shape], onnx.TensorProto.FLOAT),
        (prng.randint, [key, shape, np.int64(9)], onnx.TensorProto.INT64),
    ]:
        model = function_model(fn, *inputs)
        # strict type inference through the local functions (the checker itself wants output
        # shapes, which inference cannot give for a shape that is an input's value)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        if model.graph.output[0].type.tensor_type.HasField("shape"):
            onnx.checker.check_model(model, full_check=True)
        assert model.graph.output[0].type.tensor_type.elem_type == elem


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_exponential_is_accurate_near_one(runtime):
    """−log(u) to a few ulps relative everywhere, also for u within 2^-24 of 1 (where a float32
    Log loses its relative accuracy and runtimes disagree), and equal to the numpy reference."""
    m = np.arange(0, 1 << 23, 97, dtype=np.int64)
    u = np.concatenate([(2 * m + 1) * 2.0**-24, 1 - (2 * np.arange(1, 4096) - 1) * 2.0**-24]).astype(np.float32)
    got = run_function(prng.exponential, u, runtime=runtime)
    exact = -np.log(u.astype(np.float64))
    assert np.max(np.abs(got / exact - 1)) < 8 * 2.0**-24
    near_one = u > 1 - 1 / 16
    np.testing.assert_array_equal(got[near_one], ref.exponential(u)[near_one])
