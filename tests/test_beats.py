"""graphs/beats.py against librosa 0.11's beat_track and upstream's app beat masks.

* Fixtures (golden-app/tiny_beats_*): the in-graph beats equal librosa's `beat_frames`; in the
  model, the beat part of `mask_out` equals upstream's `beat_mask`, and combined with a periodic
  prompt it is the elementwise minimum of the two, codebooks >= upper_codebook_mask generated.
* Synthetic signals (clicks and drums at 60–200 BPM, with noise and jitter; noise; a sine; silence;
  clips from 0.05 s to 60 s): beat frames equal librosa's, and each step (envelope, tempo lag)
  agrees with librosa's own functions.
* The mask: width ceil(ms/1000 · 44100/768), the app's value; ms <= 0 or NaN: all ones; batch
  rows independent; non-finite audio: no beats.
"""
import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

librosa = pytest.importorskip("librosa")

from conftest import OUTPUTS  # noqa: E402
from tests.graph_helpers import RUNTIMES, run_function  # noqa: E402
from vampnet_onnx.graphs import beats  # noqa: E402
from vampnet_onnx.session import interface_feeds  # noqa: E402

SR, HOP = 44100, 768
APP = Path(__file__).parent / "fixtures" / "upstream" / "golden-app"
BEAT_CASES = ["tiny_beats_120bpm_50ms", "tiny_beats_96bpm_80ms"]
f32, i64 = np.float32, np.int64


def load_case(case: str) -> dict:
    data = dict(np.load(APP / f"{case}.npz"))
    data["meta"] = json.loads(str(data["meta"]))
    return data


def librosa_beats(y: np.ndarray) -> np.ndarray:
    """The call that stands in for upstream's WaveBeat (the fixtures' `beat_frames`)."""
    return librosa.beat.beat_track(y=y, sr=SR, hop_length=HOP, units="frames")[1]


def track(audio: np.ndarray, runtime: str = "ort") -> np.ndarray:
    """(B, F) beat indicator of (B, S) audio, from the graph."""
    found = run_function(beats.beat_track, audio.astype(f32), runtime=runtime)
    assert found.dtype == np.bool_ and found.shape == (audio.shape[0], 1 + audio.shape[1] // HOP)
    return found


def width_frames(ms: float) -> int:
    """Upstream's app: s2t(ms / 1000) = ceil(seconds · 44100 / 768)."""
    return math.ceil(ms / 1000 * SR / HOP)


def upstream_beat_mask(beat_frames, shape, ms) -> np.ndarray:
    """The app's beat mask (after_beat_s = ms/1000, before 0), cropped to the codes' T."""
    keep = np.zeros(shape[2] + width_frames(ms), dtype=bool)
    for b in beat_frames:
        keep[b : b + width_frames(ms)] = True
    return np.broadcast_to(1 - keep[: shape[2]].astype(np.int64), shape).copy()


# ------------------------------------------------------------------------------ synthetic signals


def clicks(bpm: float, seconds: float, noise: float = 0.0, jitter: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * SR) // HOP * HOP
    y = np.zeros(n)
    period, t = 60.0 / bpm, rng.uniform(0, 60.0 / bpm)
    click = np.hanning(400)[200:] * np.sin(np.arange(200) * 0.3)
    while t < seconds:
        i = int((t + rng.normal(0, jitter)) * SR)
        if 0 <= i < n - 200:
            y[i : i + 200] += click * rng.choice([1, -1])
        t += period
    return (0.3 * (y + noise * rng.standard_normal(n))).astype(f32)


def drums(bpm: float, seconds: float, seed: int = 0) -> np.ndarray:
    """Kick and noise snare alternating on eighth notes, over faint noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR) // HOP * HOP
    y = np.zeros(n)
    t, k = 0.1, 0
    while t < seconds:
        i = int(t * SR)
        length = min(4000, n - i)
        if length > 0:
            decay = np.exp(-np.arange(length) / 600)
            hit = np.sin(2 * np.pi * 60 * np.arange(length) / SR) if k % 2 == 0 else 0.5 * rng.standard_normal(length)
            y[i : i + length] += decay * hit
        t, k = t + 30.0 / bpm, k + 1
    return (0.3 * y + 0.01 * rng.standard_normal(n)).astype(f32)


TEMPI = [60, 72, 85, 96, 110, 120, 128, 140, 155, 170, 185, 200]
SIGNALS = {
    **{f"clicks_{bpm}": (clicks, (bpm, 8.0), dict(seed=bpm)) for bpm in TEMPI},
    **{f"noisy_clicks_{bpm}": (clicks, (bpm, 6.0), dict(noise=0.05, jitter=0.005, seed=bpm + 1)) for bpm in TEMPI},
    **{f"drums_{bpm}": (drums, (bpm, 10.0), dict(seed=bpm)) for bpm in TEMPI},
    "drums_short": (drums, (120, 1.0), {}),
    "clicks_0.3s": (clicks, (120, 0.3), {}),
    "clicks_0.05s": (clicks, (120, 0.05), {}),
}


def signal(name: str) -> np.ndarray:
    fn, args, kwargs = SIGNALS[name]
    return fn(*args, **kwargs)


def no_clear_beat() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    n = SR * 5 // HOP * HOP
    return {
        "white_noise": (0.1 * rng.standard_normal(n)).astype(f32),
        "sine": (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / SR)).astype(f32),
        "silence": np.zeros(n, f32),
    }


# ------------------------------------------------------------------------------ fixtures


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("case", BEAT_CASES)
def test_beats_equal_the_fixtures(case, runtime):
    g = load_case(case)
    audio = g["preprocessed_audio"][:, 0]
    np.testing.assert_array_equal(np.flatnonzero(track(audio, runtime)[0]), g["beat_frames"])
    np.testing.assert_array_equal(librosa_beats(audio[0]), g["beat_frames"])  # the fixture is librosa's


@pytest.mark.parametrize("case", BEAT_CASES)
def test_beat_mask_function_equals_upstream(case):
    g = load_case(case)
    ms = g["meta"]["beat_mask_ms"]
    got = run_function(beats.beat_mask, g["codes"], g["preprocessed_audio"][:, 0], f32(ms))
    assert got.dtype == np.int64 and got.shape == g["codes"].shape
    np.testing.assert_array_equal(got, g["beat_mask"])
    np.testing.assert_array_equal(got, upstream_beat_mask(g["beat_frames"], g["codes"].shape, ms))


_SESSIONS: dict = {}


def run(built, audio: np.ndarray, **inputs) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    if built.path not in _SESSIONS:
        _SESSIONS[built.path] = ort.InferenceSession(str(built.path), providers=["CPUExecutionProvider"])
    return dict(zip(OUTPUTS, _SESSIONS[built.path].run(OUTPUTS, interface_feeds(audio, **inputs))))


def codebook_mask(mask: np.ndarray, upper: int) -> np.ndarray:
    out = mask.copy()
    out[:, upper:] = 1
    return out


@pytest.mark.parametrize("case", BEAT_CASES)
def test_beat_mask_in_the_model_equals_upstream(tiny, case):
    g = load_case(case)
    meta = g["meta"]
    upper, ms = meta["upper_codebook_mask"], meta["beat_mask_ms"]
    audio = g["preprocessed_audio"][:, 0]
    settings = dict(seed=3, sampling_steps=1, c2f_sampling_steps=1, upper_codebook_mask=upper)
    beat_only = run(tiny, audio, **settings, periodic_prompt=0, beat_mask_ms=ms)
    assert beat_only["codes"].shape == g["codes"].shape
    np.testing.assert_array_equal(beat_only["mask_out"], codebook_mask(g["beat_mask"], upper))
    assert (beat_only["mask_out"][:, :upper] == 0).any() and (beat_only["mask_out"][:, :upper] == 1).any()
    if meta["periodic_prompt"] == 0:
        np.testing.assert_array_equal(beat_only["mask_out"], g["mask"])
    # with the fixture's periodic prompt (rolled by our PRNG, not torch's): the minimum of the two
    periodic = dict(settings, periodic_prompt=meta["periodic_prompt"])
    both = run(tiny, audio, **periodic, beat_mask_ms=ms)
    periodic_only = run(tiny, audio, **periodic)
    np.testing.assert_array_equal(both["mask_out"], np.minimum(periodic_only["mask_out"], beat_only["mask_out"]))
    assert (both["mask_out"][:, upper:] == 1).all()
    # an explicit mask ignores it, as it ignores the other builder parameters
    explicit = np.ones_like(g["codes"])
    out = run(tiny, audio, **settings, mask=explicit, beat_mask_ms=ms)
    np.testing.assert_array_equal(out["mask_out"], explicit)


CLAMPED = [(-5.0, 0.0), (float("nan"), 0.0), (float("-inf"), 0.0),
           (1e12, beats.MAX_BEAT_MS), (float("inf"), beats.MAX_BEAT_MS)]


@pytest.mark.parametrize("ms,acts_as", CLAMPED, ids=[str(v) for v, _ in CLAMPED])
def test_out_of_range_beat_mask_ms_is_clamped(tiny, ms, acts_as):
    audio = load_case(BEAT_CASES[1])["preprocessed_audio"][:, 0, : 2 * SR]
    settings = dict(seed=2, sampling_steps=1, c2f_sampling_steps=1, periodic_prompt=0)
    got = run(tiny, audio, **settings, beat_mask_ms=ms)
    want = run(tiny, audio, **settings, beat_mask_ms=acts_as)
    assert np.isfinite(got["audio_out"]).all()
    for key in OUTPUTS:
        np.testing.assert_array_equal(got[key], want[key], err_msg=f"beat_mask_ms={ms} should act as {acts_as}")


# ------------------------------------------------------------------------------ against librosa


@pytest.mark.parametrize("name", list(SIGNALS))
def test_beats_equal_librosa_on_synthetic_signals(name):
    y = signal(name)
    np.testing.assert_array_equal(np.flatnonzero(track(y[None])[0]), librosa_beats(y))


def test_beats_equal_librosa_without_a_clear_beat():
    for name, y in no_clear_beat().items():
        got = np.flatnonzero(track(y[None])[0])
        np.testing.assert_array_equal(got, librosa_beats(y), err_msg=name)
    assert not track(no_clear_beat()["silence"][None]).any()  # librosa returns none: so do we


def test_short_noise_equals_librosa():
    """2 to 40 frames of noise: librosa's tempo window is longer than the clip."""
    rng = np.random.default_rng(1)
    for frames in (2, 3, 4, 6, 10, 20, 40):
        y = (0.3 * rng.standard_normal(frames * HOP)).astype(f32)
        np.testing.assert_array_equal(np.flatnonzero(track(y[None])[0]), librosa_beats(y), err_msg=str(frames))


def test_a_minute_of_drums_equals_librosa():
    y = drums(123, 60.0, seed=9)
    got = np.flatnonzero(track(y[None])[0])
    np.testing.assert_array_equal(got, librosa_beats(y))
    assert len(got) > 100


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_steps_agree_with_librosa(runtime):
    """Envelope (median over bands) close to librosa's float32 one; tempo lag equal to librosa's."""
    for y in (signal("drums_96"), signal("noisy_clicks_155"), load_case(BEAT_CASES[0])["preprocessed_audio"][0, 0]):
        want = librosa.onset.onset_strength(y=y, sr=SR, hop_length=HOP, aggregate=np.median)
        got = run_function(beats.beat_envelope, y[None], runtime=runtime)[0]
        assert got.shape == want.shape and np.isfinite(got).all()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * want.max())
        bpm = librosa.feature.tempo(onset_envelope=want, sr=SR, hop_length=HOP)[0]
        lag = run_function(beats.tempo_period, got[None], runtime=runtime)[0]
        assert lag == round(SR / HOP * 60 / bpm)


def test_tempo_constants():
    win, first = beats.tempo_lags(SR, HOP)
    assert win == librosa.time_to_frames(8.0, sr=SR, hop_length=HOP) == 459
    bpms = librosa.tempo_frequencies(win, hop_length=HOP, sr=SR)
    assert first == int(np.argmax(bpms < 320.0)) and bpms[first] < 320.0 <= bpms[first - 1]
    prior = beats.log_prior(SR, HOP)
    np.testing.assert_array_equal(prior[first:], -0.5 * (np.log2(bpms[first:]) - np.log2(120.0)) ** 2)
    assert np.isneginf(prior[:first]).all()
    hi, lo = beats.split_logs(2 * win + 1)
    exact = np.log(np.maximum(np.arange(2 * win + 1), 1))
    np.testing.assert_array_equal(hi, exact.astype(f32))
    np.testing.assert_allclose(hi.astype(np.float64) + lo, exact, rtol=1e-13, atol=0)  # ~46 bits


# ------------------------------------------------------------------------------ the mask


@pytest.mark.parametrize("ms", [0.5, 1.0, 17.0, 17.5, 50.0, 80.0, 100.0, 333.3, 520.0, 2560.0, 59999.0])
def test_widths_equal_upstreams(ms):
    """Frames kept after each beat: the app's s2t(ms / 1000), overlapping ranges merged, cropped to T."""
    g = load_case(BEAT_CASES[0])
    got = run_function(beats.beat_mask, g["codes"], g["preprocessed_audio"][:, 0], f32(ms))
    np.testing.assert_array_equal(got, upstream_beat_mask(g["beat_frames"], g["codes"].shape, float(f32(ms))))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_off_is_all_ones_without_tracking(runtime):
    g = load_case(BEAT_CASES[0])
    for ms in (0.0, -1.0, float("nan"), float("-inf")):
        got = run_function(beats.beat_mask, g["codes"], g["preprocessed_audio"][:, 0], f32(ms), runtime=runtime)
        np.testing.assert_array_equal(got, np.ones_like(g["codes"]), err_msg=str(ms))


def test_batch_rows_are_independent():
    a, b = (load_case(c)["preprocessed_audio"][0, 0] for c in BEAT_CASES)
    n = min(len(a), len(b))
    both = track(np.stack([a[:n], b[:n], np.zeros(n, f32)]))
    for row, y in zip(both, (a[:n], b[:n])):
        np.testing.assert_array_equal(row, track(y[None])[0])
    assert both[0].any() and both[1].any() and not both[2].any()


def test_non_finite_audio_has_no_beats():
    y = load_case(BEAT_CASES[0])["preprocessed_audio"][0, 0].copy()
    bad = y.copy()
    bad[1000] = np.nan
    inf = y.copy()
    inf[5000] = np.inf
    got = track(np.stack([bad, inf, y]))
    assert not got[0].any() and not got[1].any() and got[2].any()


def test_ms_to_frames_is_exact():
    """ms → frames: ceil(ms · 44100 / 768 / 1000) of the exact product, for every integer ms up to
    the maximum and for fractional ones. The app's float64 formula agrees except at a few
    multiples of 2560 ms, where the exact value is a whole number of frames and its rounding adds one."""
    ms = np.concatenate([np.arange(0, int(beats.MAX_BEAT_MS) + 1),
                         np.random.default_rng(0).uniform(0, beats.MAX_BEAT_MS, 5000)]).astype(f32)
    got = run_function(beats.ms_to_frames, ms, np.full(ms.shape, SR / HOP, f32))
    exact = np.array([math.ceil(Fraction(float(m)) * SR / HOP / 1000) for m in ms])
    np.testing.assert_array_equal(got, exact)
    app = np.array([width_frames(float(m)) for m in ms])
    differ = ms[app != exact]
    assert 0 < len(differ) < 10 and (differ % 2560 == 0).all() and (app[app != exact] == exact[app != exact] + 1).all()


def test_graph_is_portable():
    """Opset 20 only, no float64, no GatherElements (the reference evaluator's fails on long axes);
    one Loop (the DP) and one If (off: no tracking); the ONNX checker with full inference passes."""
    import onnx

    from tests.graph_helpers import function_model

    codes, audio = np.zeros((1, 14, 10), i64), np.zeros((1, 7680), f32)
    model = function_model(beats.beat_mask, codes, audio, f32(50))
    onnx.checker.check_model(model, full_check=True)
    assert {(o.domain, o.version) for o in model.opset_import} == {("", 20), ("vampnet", 1)}
    double = onnx.TensorProto.DOUBLE
    ops = []

    def walk(nodes, where):
        for node in nodes:
            ops.append(node.op_type)
            assert node.op_type != "GatherElements", where
            for attr in node.attribute:
                assert not (attr.name == "to" and attr.i == double), where
                assert not (attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == double), where
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g.node, where)

    for function in model.functions:
        walk(function.node, function.name)
    assert ops.count("Loop") == 1 and ops.count("If") == 1
