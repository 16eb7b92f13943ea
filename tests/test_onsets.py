"""graphs/onsets.py against librosa 0.11 (the library upstream calls) and upstream's onset masks.

* Fixtures: the detector's frames equal librosa's and the fixture's `onset_frames`, and the mask
  combined as upstream's build_mask does equals the fixture's `mask` (onnxruntime and reference).
* Synthetic signals (clicks, plucks, chords, drums, noise bursts, near-silence, silence, 0.5 s to
  30 s): librosa's onsets found within ±1 frame (≥ 95 %), few extra (≤ 5 %), finite envelopes.
* The parts one by one against librosa/numpy: constants, peak picking, the `wait` rule,
  backtracking, Python slice semantics of the mask.
* Edges: width 0 / negative / beyond T, empty and short audio, batch rows, non-finite audio.
"""
import functools
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

librosa = pytest.importorskip("librosa")

from vampnet_onnx.graphs import masks, onsets  # noqa: E402
from tests.graph_helpers import RUNTIMES, function_model, run_function  # noqa: E402

SR, HOP = 44100, 768
FEATURES = Path(__file__).parent / "fixtures" / "upstream" / "golden-features"
ONSET_CASES = ["tiny_onset_w2", "tiny_onset_music_w1"]
f32, i64 = np.float32, np.int64


def load_case(case: str) -> dict:
    data = dict(np.load(FEATURES / f"{case}.npz"))
    data["meta"] = json.loads(str(data["meta"]))
    return data


def librosa_onsets(y: np.ndarray) -> np.ndarray:
    """Upstream's call (vampnet/mask.py onset_mask)."""
    return librosa.onset.onset_detect(y=y, sr=SR, hop_length=HOP, backtrack=True)


def detect(y: np.ndarray, runtime: str = "ort") -> np.ndarray:
    """Onset frames of a 1-D signal, from the graph."""
    found = run_function(onsets.onset_detect, y[None].astype(f32), runtime=runtime)
    assert found.dtype == np.bool_ and found.shape == (1, 1 + len(y) // HOP)
    return np.flatnonzero(found[0])


def upstream_onset_mask(onset_frames, shape, width) -> np.ndarray:
    """vampnet/mask.py: mask[:, :, o - width : o + width] = 0 for each onset (Python slices)."""
    mask = np.ones(shape, dtype=np.int64)
    for o in onset_frames:
        mask[:, :, o - width : o + width] = 0
    return mask


# ------------------------------------------------------------------------------ constants


def test_peak_pick_parameters():
    pp = onsets.DETECTOR.peak_pick_params
    assert (pp.pre_max, pp.post_max, pp.pre_avg, pp.post_avg, pp.wait, pp.delta) == (1, 1, 5, 6, 1, 0.07)
    other = onsets.PeakPickParams.for_rate(22050, 512)  # librosa's own defaults: 1, 1, 4, 5, 1
    assert (other.pre_max, other.post_max, other.pre_avg, other.post_avg, other.wait) == (1, 1, 4, 5, 1)


def test_mel_filterbank_and_window_are_librosas():
    import scipy.signal

    expected = librosa.filters.mel(sr=SR, n_fft=2048, n_mels=128, fmax=SR / 2)
    got = onsets.mel_filterbank(SR)
    assert got.dtype == np.float32 and got.shape == (128, 1025)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(onsets.hann_window(2048), scipy.signal.get_window("hann", 2048, fftbins=True))


# ------------------------------------------------------------------------------ fixtures


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("case", ONSET_CASES)
def test_fixture_onsets_equal_librosa(case, runtime):
    g = load_case(case)
    y = g["preprocessed_audio"][0, 0]
    expected = librosa_onsets(y)
    np.testing.assert_array_equal(expected, g["onset_frames"])  # librosa 0.11 reproduces the fixture
    np.testing.assert_array_equal(detect(y, runtime), g["onset_frames"])


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("case", ONSET_CASES)
def test_fixture_mask_equals_upstream(case, runtime):
    """build_mask(onset_mask_width=W, rand_mask_intensity=1, periodic_prompt=0, upper_codebook_mask=3):
    min(random (all ones), onset mask), then codebooks >= 3 generated."""
    g = load_case(case)
    codes, audio, width = g["codes"], g["preprocessed_audio"][:, 0], g["meta"]["onset_mask_width"]
    assert g["meta"]["mask_kwargs"] == {"rand_mask_intensity": 1.0, "periodic_prompt": 0, "upper_codebook_mask": 3}
    onset = run_function(onsets.onset_mask, codes, audio, i64(width), runtime=runtime)
    assert onset.dtype == np.int64 and onset.shape == codes.shape
    np.testing.assert_array_equal(onset, upstream_onset_mask(g["onset_frames"], codes.shape, width))
    ones = np.ones_like(codes)
    mask = run_function(masks.codebook_mask, np.minimum(ones, onset), i64(3), runtime=runtime)
    np.testing.assert_array_equal(mask, g["mask"])
    assert (mask[:, :3] == 0).any()  # the onsets do keep frames


# ------------------------------------------------------------------------------ synthetic signals


def _pluck(rng, freq, dur, decay=0.25):
    t = np.arange(int(dur * SR)) / SR
    tone = sum(0.6**h * np.sin(2 * np.pi * freq * (h + 1) * t + rng.uniform(0, 2 * np.pi)) for h in range(6))
    return tone * np.exp(-t / decay) * np.minimum(1.0, t / 0.002)


def _place(total_s, events, amp):
    y = np.zeros(int(total_s * SR))
    for t0, ev in events:
        i = int(t0 * SR)
        ev = ev[: max(len(y) - i, 0)]
        y[i : i + len(ev)] += amp * ev
    return y


def _clicks(rng, total_s, bpm, jitter=0.0):
    times = np.arange(0.1, total_s, 60 / bpm)
    times = times + rng.uniform(-jitter, jitter, len(times))
    click = np.zeros(300)
    click[:30] = rng.standard_normal(30) * np.exp(-np.arange(30) / 8)
    return _place(total_s, [(t, click) for t in times], 0.8)


def _plucks(rng, total_s, bpm, decay=0.25):
    notes = [110, 147, 196, 220, 262, 330, 392, 440, 523]
    events = [(t, _pluck(rng, rng.choice(notes), 1.5, decay)) for t in np.arange(0.05, total_s, 60 / bpm)]
    return _place(total_s, events, 0.3)


def _chords(rng, total_s, every):
    events = []
    for t in np.arange(0.2, total_s, every):
        root = rng.choice([130.8, 146.8, 164.8, 174.6, 196.0])
        events.append((t, sum(_pluck(rng, root * r, 2.0, 0.5) for r in (1, 1.26, 1.5))))
    return _place(total_s, events, 0.15)


def _noise_bursts(rng, total_s, n):
    length = int(0.08 * SR)
    burst = lambda: rng.standard_normal(length) * np.exp(-np.arange(length) / (0.02 * SR))  # noqa: E731
    return _place(total_s, [(t, burst()) for t in np.sort(rng.uniform(0.1, total_s - 0.2, n))], 0.5)


def _irregular(rng, total_s, n):
    times = np.sort(rng.uniform(0.05, total_s - 0.1, n))
    return _place(total_s, [(t, _pluck(rng, rng.uniform(80, 900), 1.0, rng.uniform(0.05, 0.5))) for t in times], 0.3)


def _drums(rng, total_s, bpm):
    events, n = [], int(0.3 * SR)
    t = np.arange(n) / SR
    for k, t0 in enumerate(np.arange(0.05, total_s, 30 / bpm)):
        if k % 4 == 0:  # kick: falling sine
            ev = np.sin(2 * np.pi * (50 + 100 * np.exp(-t * 30)) * t) * np.exp(-t / 0.12)
        else:  # snare / hat: noise
            ev = rng.standard_normal(n) * np.exp(-t / (0.05 if k % 4 == 2 else 0.01)) * (0.7 if k % 4 == 2 else 0.3)
        events.append((t0, ev))
    return _place(total_s, events, 0.6)


@functools.lru_cache(maxsize=1)
def synthetic_signals(seed: int = 0) -> dict[str, np.ndarray]:
    """Generated once per session (do not modify the arrays)."""
    rng = np.random.default_rng(seed)
    t4, t5 = np.arange(4 * SR) / SR, np.arange(5 * SR) / SR
    signals = {
        "clicks 120 bpm 5 s": _clicks(rng, 5, 120),
        "clicks 90 bpm 10 s, noise floor": _clicks(rng, 10, 90) + 0.003 * rng.standard_normal(10 * SR),
        "clicks 200 bpm jittered 4 s": _clicks(rng, 4, 200, jitter=0.02),
        "plucks 100 bpm 8 s": _plucks(rng, 8, 100),
        "plucks 160 bpm 4 s": _plucks(rng, 4, 160, decay=0.1),
        "plucks 60 bpm 30 s": _plucks(rng, 30, 60, decay=0.6),
        "plucks 240 bpm 6 s": _plucks(rng, 6, 240, decay=0.08),
        "chords every 0.75 s, 6 s": _chords(rng, 6, 0.75),
        "chords every 1.3 s, 12 s": _chords(rng, 12, 1.3),
        "noise bursts 5 s": _noise_bursts(rng, 5, 12),
        "noise bursts 20 s": _noise_bursts(rng, 20, 40),
        "drums 110 bpm 8 s": _drums(rng, 8, 110),
        "drums 140 bpm 15 s": _drums(rng, 15, 140),
        "irregular plucks 15 s": _irregular(rng, 15, 35),
        "irregular plucks 2 s": _irregular(rng, 2, 6),
        "one pluck 0.5 s": _place(0.5, [(0.1, _pluck(rng, 220, 0.4))], 0.3),
        "two notes 1 s": _place(1.0, [(0.1, _pluck(rng, 330, 0.9)), (0.55, _pluck(rng, 440, 0.45))], 0.3),
        "near-silent clicks 3 s": 1e-4 * _clicks(rng, 3, 120) + 1e-6 * rng.standard_normal(3 * SR),
        "near-silent noise 2 s": 1e-7 * rng.standard_normal(2 * SR),
        "silence 3 s": np.zeros(3 * SR),
        "crescendo tone 4 s": 0.3 * (t4 / 4) ** 2 * np.sin(2 * np.pi * 220 * t4),
        "white noise 4 s": 0.1 * rng.standard_normal(4 * SR),
        "tremolo tone 5 s": 0.3 * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t5)) * np.sin(2 * np.pi * 330 * t5),
        "DC offset and clicks 3 s": 0.2 + _clicks(rng, 3, 100),
        "mix 10 s": _plucks(rng, 10, 120) + 0.5 * _drums(rng, 10, 120) + _chords(rng, 10, 2.0),
    }
    return {name: y.astype(np.float32) for name, y in signals.items()}


def match(expected: np.ndarray, got: np.ndarray, tolerance: int = 1) -> tuple[int, int]:
    """(expected onsets with a detection within ±tolerance frames, detections with no such onset)."""
    expected, got = np.unique(expected), np.unique(got)
    found = sum(bool(np.any(np.abs(got - e) <= tolerance)) for e in expected)
    extra = sum(not np.any(np.abs(expected - d) <= tolerance) for d in got)
    return found, extra


def test_synthetic_signals_match_librosa():
    signals = synthetic_signals()
    assert len(signals) >= 20
    total = found_all = extra_all = exact = 0
    report = []
    for name, y in signals.items():
        envelope = run_function(onsets.onset_envelope, y[None])
        assert np.isfinite(envelope).all(), name
        expected, got = np.unique(librosa_onsets(y)), detect(y)
        found, extra = match(expected, got)
        total, found_all, extra_all = total + len(expected), found_all + found, extra_all + extra
        exact += np.array_equal(expected, got)
        report.append(f"{name}: librosa {len(expected)}, found {found}, extra {extra}")
        # per signal: nothing where librosa finds nothing, and most of what it finds elsewhere
        if len(expected) == 0:
            assert len(got) <= 1, report[-1]
        else:
            assert found >= 0.8 * len(expected) and extra <= max(1, 0.2 * len(expected)), report[-1]
    summary = "\n".join(report)
    assert total > 400, summary
    assert found_all >= 0.95 * total, summary
    assert extra_all <= 0.05 * total, summary
    assert exact >= 0.8 * len(signals), summary  # in practice every signal matches frame for frame


def test_envelope_close_to_librosa():
    """The float32 envelope is librosa's to about 1e-6 of its peak (docs/onsets.md)."""
    y = synthetic_signals()["mix 10 s"]
    expected = librosa.onset.onset_strength(y=y, sr=SR, hop_length=HOP)
    for runtime in RUNTIMES:
        got = run_function(onsets.onset_envelope, y[None], runtime=runtime)[0]
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-5 * expected.max()


@pytest.mark.parametrize("sample_rate, hop", [(22050, 512), (44100, 256), (48000, 300)])
def test_other_rates_and_hops(sample_rate, hop):
    """make_onset_detector for another codec: librosa's windows and `wait` (up to 5 frames here)."""
    detector = onsets.make_onset_detector(sample_rate, hop)
    signals = synthetic_signals()
    for name in ("mix 10 s", "plucks 240 bpm 6 s"):
        y = signals[name][: 5 * sample_rate]  # the same samples, read at another rate
        expected = librosa.onset.onset_detect(y=y, sr=sample_rate, hop_length=hop, backtrack=True)
        got = np.flatnonzero(run_function(detector.onset_detect, y[None])[0])
        found, extra = match(expected, got)
        assert found == len(expected) and extra == 0, (name, expected, got)


def test_hop_must_be_large_enough():
    with pytest.raises(ValueError):
        onsets.make_onset_detector(44100, 64)


# ------------------------------------------------------------------------------ the parts


def greedy_wait(candidates: np.ndarray, wait: int) -> np.ndarray:
    kept, last = np.zeros_like(candidates), -np.inf
    for i in np.flatnonzero(candidates):
        if i > last + wait:
            kept[i], last = True, i
    return kept


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_wait_rule_is_the_greedy_scan(runtime):
    rng = np.random.default_rng(1)
    for F in (1, 2, 3, 17, 200):
        for density in (0.1, 0.6, 1.0):
            candidates = rng.random((8, F)) < density
            for wait in (0, 1, 2, 3, 7):
                got = run_function(onsets.wait_rule, candidates, i64(wait), runtime=runtime)
                expected = np.stack([greedy_wait(row, wait) for row in candidates])
                np.testing.assert_array_equal(got, expected, err_msg=f"F={F} density={density} wait={wait}")


def _envelopes(rng):
    """Normalised float32 envelopes with the shapes peak picking meets: spikes, plateaus, ramps."""
    out = []
    for F in (1, 2, 3, 5, 12, 40, 300):
        x = rng.random(F).astype(f32) ** 4
        out.append(x)
        spiky = np.zeros(F, f32)
        spiky[rng.integers(0, F, max(F // 8, 1))] = rng.random(max(F // 8, 1))
        out.append(spiky)
    ramp = np.concatenate([np.zeros(10), np.linspace(0, 1, 15), np.ones(5), np.zeros(20)]).astype(f32)
    stairs = np.repeat(rng.random(30), 3).astype(f32)
    out += [ramp, stairs, np.zeros(50, f32), np.ones(50, f32)]
    return [x / (x.max() + np.finfo(f32).tiny) for x in out]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_peak_pick_matches_librosa(runtime):
    pp = onsets.DETECTOR.peak_pick_params
    kwargs = dict(
        pre_max=pp.pre_max, post_max=pp.post_max, pre_avg=pp.pre_avg, post_avg=pp.post_avg, delta=pp.delta, wait=pp.wait
    )
    for x in _envelopes(np.random.default_rng(2)):
        x = x.astype(f32)
        got = run_function(onsets.peak_pick, x[None], runtime=runtime)[0]
        np.testing.assert_array_equal(np.flatnonzero(got), librosa.util.peak_pick(x, **kwargs), err_msg=str(x))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_backtrack_matches_librosa(runtime):
    rng = np.random.default_rng(3)
    for x in _envelopes(rng):
        for _ in range(3):
            events = np.unique(rng.integers(0, len(x), rng.integers(1, 6)))
            peaks = np.zeros((1, len(x)), bool)
            peaks[0, events] = True
            got = run_function(onsets.backtrack, peaks, x[None].astype(f32), runtime=runtime)[0]
            expected = np.unique(librosa.onset.onset_backtrack(events, x))
            np.testing.assert_array_equal(np.flatnonzero(got), expected)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_slice_mask_follows_python_slices(runtime):
    """Every width from 0 to past 2T, onsets anywhere in [0, T]; negative starts wrap as in Python."""
    rng = np.random.default_rng(4)
    for T in (1, 2, 3, 6, 11):
        rows = np.concatenate([np.eye(T + 1, dtype=bool), rng.random((12, T + 1)) < 0.3])
        for width in range(0, 2 * T + 3):
            got = run_function(onsets.slice_mask, rows, i64(T), i64(width), runtime=runtime)
            expected = np.stack([upstream_onset_mask(np.flatnonzero(r), (1, 1, T), width)[0, 0] for r in rows])
            np.testing.assert_array_equal(got, expected, err_msg=f"T={T} width={width}")


# ------------------------------------------------------------------------------ edges


def test_width_zero_negative_and_huge():
    g = load_case("tiny_onset_w2")
    codes, audio = g["codes"], g["preprocessed_audio"][:, 0]
    for width in (0, -1, -(2**40)):
        assert (run_function(onsets.onset_mask, codes, audio, i64(width)) == 1).all()
    T = codes.shape[2]
    for width in (T, T + 1, 2 * T, 2**40):
        got = run_function(onsets.onset_mask, codes, audio, i64(width))
        clipped = min(width, onsets.WIDTH_MAX)
        np.testing.assert_array_equal(got, upstream_onset_mask(g["onset_frames"], codes.shape, clipped))
    assert (run_function(onsets.onset_mask, codes, audio, i64(2**40)) == 0).all()


@pytest.mark.filterwarnings("ignore:n_fft=2048 is too large")
@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("S", [0, 1, 767, 768, 769, 2047, 2048, 2049, 5000])
def test_short_audio(S, runtime):
    y = (0.3 * np.sin(np.arange(S) / 7.0) * (np.arange(S) > S // 2)).astype(f32)
    got = detect(y, runtime)
    if S > 0:
        np.testing.assert_array_equal(got, librosa_onsets(y))
    codes = np.zeros((1, 14, max(S // HOP, 1)), np.int64)
    mask = run_function(onsets.onset_mask, codes, y[None], i64(2), runtime=runtime)
    assert mask.shape == codes.shape and set(np.unique(mask)) <= {0, 1}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy (reference evaluator) on inf/NaN
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_empty_shapes_and_extreme_audio(runtime):
    empty = np.zeros((0, 100), f32)
    assert run_function(onsets.onset_detect, empty, runtime=runtime).shape == (0, 1)
    no_rows = run_function(onsets.onset_mask, np.zeros((0, 14, 3), i64), empty, i64(2), runtime=runtime)
    assert no_rows.shape == (0, 14, 3)
    no_frames = np.zeros((2, 14, 0), i64)
    no_frames = run_function(onsets.onset_mask, no_frames, np.ones((2, 100), f32), i64(2), runtime=runtime)
    assert no_frames.shape == (2, 14, 0)
    rng = np.random.default_rng(5)
    y = rng.standard_normal((4, 20000)).astype(f32)
    y[0] *= 1e30  # overflows to inf power: not finite, no onsets
    y[1, 100] = np.inf
    y[2] *= 1e-30  # below amin everywhere: silence
    y[3, :10000] = 0
    found = run_function(onsets.onset_detect, y, runtime=runtime)
    assert not found[:3].any()
    np.testing.assert_array_equal(np.flatnonzero(found[3]), librosa_onsets(y[3]))


def test_batch_rows_are_independent():
    signals = synthetic_signals()
    a, b = signals["plucks 100 bpm 8 s"][: 5 * SR], signals["drums 110 bpm 8 s"][: 5 * SR]
    bad = np.full_like(a, np.nan)
    batch = np.stack([a, b, bad, np.zeros_like(a)])
    found = run_function(onsets.onset_detect, batch)
    np.testing.assert_array_equal(np.flatnonzero(found[0]), librosa_onsets(a))
    np.testing.assert_array_equal(np.flatnonzero(found[1]), librosa_onsets(b))
    assert not found[2].any() and not found[3].any()  # non-finite and silent rows: no onsets
    T = len(a) // HOP
    codes = np.zeros((4, 3, T), np.int64)
    mask = run_function(onsets.onset_mask, codes, batch, i64(1))
    for row, y in enumerate([a, b]):
        np.testing.assert_array_equal(mask[row : row + 1], upstream_onset_mask(librosa_onsets(y), (1, 3, T), 1))
    assert (mask[2:] == 1).all()
    # one audio row serves every codes row
    one = run_function(onsets.onset_mask, codes, a[None], i64(1))
    assert (one == mask[0:1]).all()


def test_graph_is_portable():
    """No Loop/If, no float64, opset 20 only: the mask function as the model will hold it."""
    codes, audio = np.zeros((1, 14, 10), np.int64), np.zeros((1, 7680), f32)
    model = function_model(onsets.onset_mask, codes, audio, i64(1))
    onnx.checker.check_model(model, full_check=True)
    assert {(o.domain, o.version) for o in model.opset_import} == {("", 20), ("vampnet", 1)}
    double = onnx.TensorProto.DOUBLE
    for function in model.functions:
        for node in function.node:
            assert node.op_type not in ("Loop", "If", "Scan", "GatherElements"), (function.name, node.op_type)
            for attr in node.attribute:
                assert not (attr.name == "to" and attr.i == double), function.name
                assert not (attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == double), function.name
