"""graphs/masks.py against the upstream-style numpy reference (exact), clamping, fit/resolve."""
import itertools
import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import tests.numpy_reference as ref
from tests.graph_helpers import run_function
from vampnet_onnx.graphs import masks

f32, i64 = np.float32, np.int64
INT64_MIN, INT64_MAX = np.iinfo(np.int64).min, np.iinfo(np.int64).max
SHAPES = [(1, 14, 1), (1, 4, 7), (2, 3, 30), (3, 14, 100)]
GOLDEN = Path(__file__).parent / "fixtures" / "upstream" / "golden"
FRAME_RATE = f32(44100 / 768)  # exact in float32


def codes_of(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 1024, shape, dtype=np.int64)


def build(codes, key, intensity=1.0, prefix=0.0, suffix=0.0, P=7, width=1, dropout=0.0, ncc=0, upper=3, runtime="ort"):
    return run_function(
        masks.build_mask, codes, np.asarray(key, np.int32), f32(intensity), f32(prefix), f32(suffix),
        i64(P), i64(width), f32(dropout), i64(ncc), i64(upper), FRAME_RATE, no_onsets(codes), no_onsets(codes),
        runtime=runtime,
    )  # fmt: skip


def no_onsets(codes):
    """The onset or beat prompt when it is off: all ones (generate), shaped like codes."""
    return np.ones_like(codes)


def build_ref(shape, key, intensity=1.0, prefix=0.0, suffix=0.0, P=7, width=1, dropout=0.0, ncc=0, upper=3):
    return ref.build_mask(shape, key, intensity, prefix, suffix, P, width, dropout, ncc, upper)


def assert_mask(got, expected):
    assert got.dtype == np.int64
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------------------------- units


@pytest.mark.parametrize("runtime", ["ort", "ref"])
@pytest.mark.parametrize("seconds", [0.0, 0.01, 0.1, 1 / 3, 0.5, 1.0, 3.0, 10.0, 17.41, 1e6])
def test_s2t_matches_python(seconds, runtime):
    got = run_function(masks.s2t, f32(seconds), FRAME_RATE, runtime=runtime)
    assert got.dtype == np.int64 and got == ref.s2t(seconds)
    assert got == math.ceil(float(f32(seconds)) * 44100 / 768)


def test_s2t_upstream_values():
    assert run_function(masks.s2t, f32(10.0), FRAME_RATE) == 575
    assert run_function(masks.s2t, f32(3.0), FRAME_RATE) == 173
    assert run_function(masks.s2t, f32(0.0), FRAME_RATE) == 0


@pytest.mark.parametrize("runtime", ["ort", "ref"])
def test_exact_rounding_of_products_without_float64(runtime):
    """ceil/floor of x·c for float32 x, c equal Python's exact rational results, also where the
    float32 product itself rounds onto or across an integer."""
    rng = np.random.default_rng(3)
    rate = np.float32(44100 / 512)  # another codec's frame rate, 14 significant bits
    x = np.concatenate([
        rng.uniform(0, 100, 3000), np.arange(0, 300) * 64 / 3675,  # products at and near integers
        np.float32(np.arange(1, 300) / rate), [0.0, 1e-30, 2.0**-20],
    ]).astype(np.float32)
    x = np.concatenate([x, np.nextafter(x, np.float32(np.inf)), np.nextafter(x, np.float32(0))])
    x = x[(x == 0) | (x >= 1e-30)]  # no subnormals: some runtimes flush them to zero
    for c in [FRAME_RATE, rate, np.float32(0.3), np.float32(1 / 3)]:
        exact = [Fraction(float(v)) * Fraction(float(c)) for v in x]
        ceil = run_function(masks.exact_ceil, x, np.full_like(x, c), runtime=runtime)
        floor = run_function(masks.exact_floor, x, np.full_like(x, c), runtime=runtime)
        np.testing.assert_array_equal(ceil, [math.ceil(e) for e in exact])
        np.testing.assert_array_equal(floor, [math.floor(e) for e in exact])


# ---------------------------------------------------------------------------------- builders


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("intensity", [0.0, 0.3, 0.5, 1.0])
def test_random_mask(shape, intensity):
    key = ref.key_path(3, 0, 0)
    got = run_function(masks.random_mask, codes_of(shape), key, f32(intensity))
    assert_mask(got, ref.random_mask(shape, key, intensity))
    if intensity in (0.0, 1.0):
        assert (got == int(intensity)).all()


def test_random_mask_rate():
    shape = (2, 14, 2000)
    got = run_function(masks.random_mask, codes_of(shape), ref.key_path(1, 0, 0), f32(0.3))
    assert abs(got.mean() - 0.3) < 5 * np.sqrt(0.3 * 0.7 / got.size)


@pytest.mark.parametrize("shape", SHAPES)
def test_inpaint_mask(shape):
    T = shape[2]
    cases = [(0, 0), (1, 0), (0, 1), (2, 3), (T, 0), (0, T), (T + 5, 0), (0, T + 5), (T // 2 + 1, T // 2 + 1), (T, T)]
    for n_prefix, n_suffix in cases:
        got = run_function(masks.inpaint_mask, codes_of(shape), i64(n_prefix), i64(n_suffix))
        assert_mask(got, ref.inpaint_mask(shape, n_prefix, n_suffix))


@pytest.mark.parametrize("shape", [(1, 2, 1), (1, 2, 2), (1, 3, 7), (2, 2, 30), (3, 4, 101)])
@pytest.mark.parametrize("period", [0, 1, 2, 3, 7, 16, 50, 1000])
def test_periodic_mask(shape, period):
    for width, seed in itertools.product([0, 1, 2, 3, 4, 8, 200], [0, 1]):
        key = ref.key_path(seed, 0, 1)
        got = run_function(masks.periodic_mask, codes_of(shape), key, i64(period), i64(width))
        assert_mask(got, ref.periodic_mask(shape, key, period, width))


def test_periodic_mask_widths_unrolled():
    # P = 1 keeps every frame; with the roll undone, odd w keeps w frames per anchor, even w keeps w+1
    shape, P = (1, 1, 60), 10
    key = ref.key_path(9, 0, 1)
    offset = int(ref.randint(key, (1,), P)[0])
    for width, kept_per_anchor in [(0, 1), (1, 1), (2, 3), (3, 3), (4, 5), (5, 5)]:
        got = run_function(masks.periodic_mask, codes_of(shape), key, i64(P), i64(width))
        row = np.roll(got[0, 0], -offset)
        half = width // 2
        expected = np.ones(60, np.int64)
        for j in range(0, 60, P):
            expected[max(0, j - half) : j + half + 1] = 0
        np.testing.assert_array_equal(row, expected)
        assert (1 - row[5:55]).sum() == 5 * kept_per_anchor
    got = run_function(masks.periodic_mask, codes_of(shape), key, i64(1), i64(1))
    assert (got == 0).all()


def test_periodic_mask_rolls_rows_independently():
    shape, P = (16, 2, 40), 7
    key = ref.key_path(4, 0, 1)
    got = run_function(masks.periodic_mask, codes_of(shape), key, i64(P), i64(1))
    offsets = ref.randint(key, (shape[0],), P)
    assert np.unique(offsets).size > 1  # different rows, different rolls
    unrolled = np.ones(40, np.int64)
    unrolled[::P] = 0
    for b in range(shape[0]):
        np.testing.assert_array_equal(got[b, 0], np.roll(unrolled, int(offsets[b])))
        np.testing.assert_array_equal(got[b, 0], got[b, 1])  # all codebooks alike


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("p", [0.0, 0.05, 0.1, 0.5, 0.99, 1.0])
def test_dropout_mask(shape, p):
    key = ref.key_path(2, 0, 2)
    start = ref.random_mask(shape, ref.key_path(2, 0, 0), 0.2)
    got = run_function(masks.dropout_mask, start, key, f32(p))
    expected = ref.dropout_mask(start, key, p)
    assert_mask(got, expected)
    # frames are re-masked whole; at most int(T·p) new frames per row; nothing is unmasked
    assert (got >= start).all()
    T = shape[2]
    for b in range(shape[0]):
        changed = (got[b] != start[b]).any(axis=0)
        assert changed.sum() <= int(T * float(f32(p)))
        assert (got[b][:, changed] == 1).all()


@pytest.mark.parametrize("shape", SHAPES)
def test_codebook_unmask_and_mask(shape):
    K = shape[1]
    start = ref.random_mask(shape, ref.key_path(5, 0, 0), 0.5)
    for n in sorted({0, 1, 3, K - 1, K}):
        assert_mask(run_function(masks.codebook_unmask, start, i64(n)), ref.codebook_unmask(start, n))
        assert_mask(run_function(masks.codebook_mask, start, i64(n)), ref.codebook_mask(start, n))


@pytest.mark.parametrize("shape", [(1, 3, 1), (2, 4, 23)])
def test_builders_in_reference_evaluator(shape):
    """The ReferenceEvaluator runs every builder to the same bits (its op kernels differ from ORT's)."""
    codes, T = codes_of(shape), shape[2]
    key = ref.key_path(1, 0, 1)
    start = ref.random_mask(shape, key, 0.4)
    got = run_function(masks.random_mask, codes, key, f32(0.4), runtime="ref")
    assert_mask(got, start)
    for n_prefix, n_suffix in [(0, 0), (2, 1), (T + 1, T + 1)]:
        got = run_function(masks.inpaint_mask, codes, i64(n_prefix), i64(n_suffix), runtime="ref")
        assert_mask(got, ref.inpaint_mask(shape, n_prefix, n_suffix))
    for period, width in itertools.product([0, 1, 3, 7, 40], [0, 1, 2, 3]):
        got = run_function(masks.periodic_mask, codes, key, i64(period), i64(width), runtime="ref")
        assert_mask(got, ref.periodic_mask(shape, key, period, width))
    for p in [0.0, 0.3, 1.0]:
        got = run_function(masks.dropout_mask, start, key, f32(p), runtime="ref")
        assert_mask(got, ref.dropout_mask(start, key, p))
    for n in [0, 2, shape[1]]:
        assert_mask(run_function(masks.codebook_unmask, start, i64(n), runtime="ref"), ref.codebook_unmask(start, n))
        assert_mask(run_function(masks.codebook_mask, start, i64(n), runtime="ref"), ref.codebook_mask(start, n))


# ---------------------------------------------------------------------------------- build_mask


@pytest.mark.parametrize("shape", SHAPES)
def test_build_mask_matches_reference(shape):
    grid = [
        dict(),  # the model's defaults
        dict(intensity=0.7, prefix=0.05, suffix=0.02, P=5, width=3, dropout=0.2, ncc=1, upper=4),
        dict(intensity=0.3, prefix=10.0, suffix=10.0, P=0),  # prefix + suffix overlap: all kept
        dict(intensity=1.0, prefix=0.0, suffix=0.1, P=200, width=2, dropout=1.0, ncc=2, upper=2),
    ]
    for seed, params in itertools.product([0, -5], grid):
        key = ref.key_path(seed, 0)
        got = build(codes_of(shape), key, **params)
        assert_mask(got, build_ref(shape, key, **params))


def test_build_mask_intensity_extremes():
    shape = (2, 14, 50)
    key = ref.key_path(0, 0)
    # intensity 0: everything kept, except the codebooks >= upper which are always generated
    got = build(codes_of(shape), key, intensity=0.0, P=0, upper=3)
    assert (got[:, :3] == 0).all() and (got[:, 3:] == 1).all()
    # intensity 1 with no prompts: everything generated
    got = build(codes_of(shape), key, intensity=1.0, P=0, upper=14)
    assert (got == 1).all()
    # intensity 1 with prompts: exactly the prompts' kept frames
    got = build(codes_of(shape), key, intensity=1.0, prefix=0.05, P=7, upper=14)
    prompts = np.minimum(
        ref.inpaint_mask(shape, ref.s2t(0.05), 0), ref.periodic_mask(shape, ref.derive_key(key, 1), 7, 1)
    )
    assert_mask(got, prompts)


def test_build_mask_rows_independent():
    shape = (6, 4, 64)
    key = ref.key_path(11, 0)
    got = build(codes_of(shape), key, intensity=1.0, P=9, upper=4)
    rows = {got[b, 0].tobytes() for b in range(shape[0])}
    assert len(rows) > 1  # per-row rolls
    # and the same seed gives the same mask; another seed another one
    np.testing.assert_array_equal(got, build(codes_of(shape), key, intensity=1.0, P=9, upper=4))
    other = build(codes_of(shape), ref.key_path(12, 0), intensity=1.0, P=9, upper=4)
    assert not np.array_equal(got, other)


def test_build_mask_combines_the_onset_prompt_by_min_before_the_codebook_masks():
    """Upstream order: min(random, inpaint, periodic, onset), then dropout, ncc, upper codebooks."""
    shape = (2, 14, 60)
    key = ref.key_path(3, 0)
    codes = codes_of(shape)
    onset = np.ones(shape, np.int64)
    onset[0, :, 10:14] = 0
    onset[1, :, 40:42] = 0
    args = [codes, np.asarray(key, np.int32), f32(0.8), f32(0.05), f32(0.0), i64(7), i64(1), f32(0.0), i64(1), i64(5), FRAME_RATE]
    got = run_function(masks.build_mask, *args, onset, np.ones_like(onset))
    without = build_ref(shape, key, intensity=0.8, prefix=0.05, P=7, ncc=1, upper=5)
    expected = np.minimum(without, onset)
    expected[:, 5:] = 1  # codebooks >= upper are generated whatever the prompts keep
    assert_mask(got, expected)
    assert (got != without).any()


def test_build_mask_applies_the_beat_prompt_last():
    """The app's order: codebook_mask(min(build_mask(...), beat), upper): after dropout and ncc."""
    shape = (2, 14, 60)
    key = ref.key_path(4, 0)
    codes = codes_of(shape)
    beat = np.ones(shape, np.int64)
    beat[0, :, 5:8] = 0
    beat[1, :, 30:33] = 0
    args = [codes, np.asarray(key, np.int32), f32(1.0), f32(0.0), f32(0.0), i64(0), i64(1), f32(0.9), i64(1), i64(4), FRAME_RATE]
    got = run_function(masks.build_mask, *args, np.ones_like(beat), beat)
    without = build_ref(shape, key, intensity=1.0, P=0, dropout=0.9, ncc=1, upper=4)
    expected = np.minimum(without, beat)
    expected[:, 4:] = 1  # codebooks >= upper are generated whatever the beats keep
    assert_mask(got, expected)
    assert (got[:, 1:4] == 0).sum() == 3 * 3 * 2  # kept although dropout re-masked 90 % of the frames


CLAMP_CASES = [
    # (parameter overrides, the documented equivalent in-range parameters)
    (dict(intensity=np.nan), dict(intensity=0.0)),
    (dict(intensity=np.inf), dict(intensity=1.0)),
    (dict(intensity=-np.inf), dict(intensity=0.0)),
    (dict(intensity=2.5), dict(intensity=1.0)),
    (dict(intensity=-0.5), dict(intensity=0.0)),
    (dict(prefix=np.nan, suffix=np.nan), dict(prefix=0.0, suffix=0.0)),
    (dict(prefix=-3.0, suffix=-np.inf), dict(prefix=0.0, suffix=0.0)),
    (dict(prefix=np.inf), dict(prefix=1e6)),
    (dict(suffix=1e30), dict(suffix=1e6)),
    (dict(P=-1), dict(P=0)),
    (dict(P=INT64_MIN), dict(P=0)),
    (dict(P=INT64_MAX), dict(P=1 << 23)),
    (dict(width=-4), dict(width=0)),
    (dict(width=INT64_MAX), dict(width=1 << 23)),
    (dict(width=INT64_MIN, P=INT64_MAX), dict(width=0, P=1 << 23)),
    (dict(dropout=np.nan), dict(dropout=0.0)),
    (dict(dropout=np.inf), dict(dropout=1.0)),
    (dict(dropout=-1.0), dict(dropout=0.0)),
    (dict(dropout=7.0), dict(dropout=1.0)),
    (dict(ncc=-1, upper=-1), dict(ncc=0, upper=0)),
    (dict(ncc=100, upper=100), dict(ncc=14, upper=14)),
    (dict(ncc=INT64_MIN, upper=INT64_MAX), dict(ncc=0, upper=14)),
]


@pytest.mark.parametrize("bad, equivalent", CLAMP_CASES)
def test_build_mask_clamps_parameters(bad, equivalent):
    shape = (2, 14, 40)
    key = ref.key_path(8, 0)
    base = dict(intensity=0.6, prefix=0.05, suffix=0.05, P=6, width=2, dropout=0.1, ncc=1, upper=5)
    got = build(codes_of(shape), key, **{**base, **bad})
    expected = build(codes_of(shape), key, **{**base, **equivalent})
    assert_mask(got, expected)
    assert_mask(got, build_ref(shape, key, **{**base, **bad}))


@pytest.mark.parametrize("runtime", ["ort", "ref"])
def test_build_mask_degenerate_shapes_do_not_crash(runtime):
    key = ref.key_path(0, 0)
    for shape in [(1, 14, 0), (0, 14, 5), (1, 0, 5), (2, 1, 1)]:
        got = build(codes_of(shape), key, intensity=0.5, prefix=0.1, P=7, width=3, dropout=0.5, ncc=1, runtime=runtime)
        assert_mask(got, build_ref(shape, key, intensity=0.5, prefix=0.1, P=7, width=3, dropout=0.5, ncc=1))


def test_build_mask_reference_evaluator_agrees_with_ort():
    shape = (2, 14, 120)
    key = ref.key_path(42, 0)
    params = dict(intensity=0.8, prefix=0.2, suffix=0.3, P=7, width=2, dropout=0.15, ncc=1, upper=5)
    got_ort = build(codes_of(shape), key, **params)
    got_ref = build(codes_of(shape), key, **params, runtime="ref")
    assert_mask(got_ref, got_ort)
    assert_mask(got_ort, build_ref(shape, key, **params))


@pytest.mark.parametrize("name", ["tiny_inpaint_c2f_chunks", "tiny_periodic", "tiny_lora", "tiny_stochastic_seed5"])
def test_build_mask_matches_upstream_golden(name):
    """Upstream's masks: exact without a periodic prompt, else equal up to the random roll."""
    path = GOLDEN / f"{name}.npz"
    if not path.exists():
        pytest.skip(f"{path} missing")
    data = np.load(path)
    kw = json.loads(str(data["meta"]))["mask_kwargs"]
    upstream = data["mask"]
    params = dict(
        intensity=kw.get("rand_mask_intensity", 1.0), prefix=kw.get("prefix_s", 0.0),
        suffix=kw.get("suffix_s", 0.0), P=kw.get("periodic_prompt", 7),
        width=kw.get("periodic_prompt_width", 1), dropout=kw.get("_dropout", 0.0),
        ncc=kw.get("ncc", 0), upper=kw.get("upper_codebook_mask", 3),
    )  # fmt: skip
    got = build(data["codes"], ref.key_path(0, 0), **params)
    assert got.shape == upstream.shape
    if params["P"] == 0:
        assert_mask(got, upstream)
    else:
        # both are the unrolled mask rolled by an offset in [0, P): they differ by a roll in (-P, P)
        P = params["P"]
        assert any(np.array_equal(np.roll(got, d, axis=-1), upstream) for d in range(1 - P, P))


# ---------------------------------------------------------------------------------- fit / resolve

FIT_CASES = [
    ((1, 14, 30), (3, 14, 30)),  # one row for a batch of 3
    ((2, 14, 30), (5, 14, 30)),  # rows b mod 2
    ((4, 14, 30), (2, 14, 30)),  # extra rows dropped
    ((1, 4, 30), (2, 14, 30)),  # missing codebooks generated
    ((1, 20, 30), (1, 14, 30)),  # extra codebooks cropped
    ((2, 14, 10), (2, 14, 30)),  # missing frames generated
    ((2, 14, 50), (2, 14, 30)),  # extra frames cropped
    ((3, 5, 7), (2, 14, 30)),  # everything wrong at once
    ((0, 14, 30), (2, 14, 30)),  # Bm = 0: all generated
    ((1, 0, 30), (2, 14, 30)),  # Km = 0: all generated
    ((1, 14, 0), (2, 14, 30)),  # Tm = 0 (the model's empty default): all generated
    ((1, 14, 30), (1, 14, 1)),
    ((2, 3, 4), (0, 14, 5)),  # B = 0: empty result
]


@pytest.mark.parametrize("runtime", ["ort", "ref"])
@pytest.mark.parametrize("mask_shape, codes_shape", FIT_CASES)
def test_fit_mask(mask_shape, codes_shape, runtime):
    explicit = np.random.default_rng(1).integers(-2, 4, mask_shape, dtype=np.int64)  # values -2..3
    got = run_function(masks.fit_mask, explicit, codes_of(codes_shape), runtime=runtime)
    assert_mask(got, ref.fit_mask(explicit, codes_shape))
    assert set(np.unique(got)) <= {0, 1}


def test_fit_mask_values_and_rows():
    explicit = np.array([[[2, -1, 0, 1]], [[0, 0, 5, -7]]], np.int64)  # (2, 1, 4)
    got = run_function(masks.fit_mask, explicit, codes_of((3, 2, 5)))
    expected = np.array(
        [[[1, 0, 0, 1, 1], [1, 1, 1, 1, 1]], [[0, 0, 1, 0, 1], [1, 1, 1, 1, 1]], [[1, 0, 0, 1, 1], [1, 1, 1, 1, 1]]]
    )
    assert_mask(got, expected)


@pytest.mark.parametrize("runtime", ["ort", "ref"])
def test_resolve_mask_builds_or_fits(runtime):
    shape = (2, 14, 45)
    built = build_ref(shape, ref.key_path(6, 0), intensity=0.9, prefix=0.1, suffix=0.0, P=5, width=1, dropout=0.1,
                      ncc=0, upper=3)
    for empty in [np.zeros((1, 14, 0), np.int64), np.zeros((0, 14, 45), np.int64), np.zeros((2, 0, 0), np.int64)]:
        assert_mask(run_function(masks.resolve_mask, empty, built, runtime=runtime), built)
    explicit = np.random.default_rng(2).integers(0, 2, (1, 14, 40), dtype=np.int64)
    assert_mask(run_function(masks.resolve_mask, explicit, built, runtime=runtime), ref.fit_mask(explicit, shape))


def test_resolve_mask_function_imports_vampnet_domain():
    # onnxscript omits the domain import for calls made only inside If bodies; resolve_mask's
    # vampnet call is at its top level, so its FunctionProto is usable as is
    proto = masks.resolve_mask.to_function_proto()
    assert any(imp.domain == "vampnet" for imp in proto.opset_import)


def test_function_models_pass_the_onnx_checker():
    import onnx

    from tests.graph_helpers import function_model

    shape = (2, 14, 9)
    args = [np.array([1, 2], np.int32), f32(1), f32(0), f32(0), i64(7), i64(1), f32(0), i64(0), i64(3), FRAME_RATE]
    for fn, inputs in [
        (masks.build_mask, [codes_of(shape)] + args + [no_onsets(codes_of(shape))] * 2),
        (masks.resolve_mask, [np.zeros((1, 14, 0), np.int64), codes_of(shape)]),
        (masks.fit_mask, [np.zeros((1, 14, 3), np.int64), codes_of(shape)]),
    ]:
        model = function_model(fn, *inputs)
        onnx.checker.check_model(model, full_check=True)  # strict type/shape inference included
        (out,) = model.graph.output
        assert out.type.tensor_type.elem_type == onnx.TensorProto.INT64
