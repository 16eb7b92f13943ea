"""Upstream's preprocessing inside the model (graphs/preprocess.py, docs/preprocessing.md).

* The resampler equals julius's resample_frac (a numpy reference that computes every one of
  julius's taps) at ordinary, odd and extreme rate pairs, in onnxruntime and the reference evaluator.
* The loudness meter is audiotools' Meter: within 2e-4 LU of a float64 reference (scipy's lfilter
  with pyloudnorm's coefficients, rounded to float32 at the common rates as upstream's are, and
  audiotools' block rules) at many rates, silence gives −70, and
  non-finite or huge values never give NaN.
* The app fixtures (48 kHz stereo, 22.05 kHz quiet): fed the mean of the channels and their rate,
  the preprocessed audio is upstream's within 1e-4 and the model's codes are upstream's exactly.
* The output comes back at the input's rate, length × stretch and loudness.
"""
from __future__ import annotations

import numpy as np
import pytest

import numpy_reference as ref
from conftest import OUTPUTS, app_case
from graph_helpers import run_function
from vampnet_onnx.graphs import preprocess as P
from vampnet_onnx.session import interface_feeds

SR = 44100
PREP_CASES = ("tiny_prep_48k_stereo", "tiny_prep_22k_quiet")
LUFS_TOLERANCE = 2e-4  # LU, against the float64 reference (docs/preprocessing.md has the measured errors)


def noise(rows: int, n: int, seed: int = 0) -> np.ndarray:
    """Rows of noise at different levels, each louder in its first half (so the gates matter)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, n)) * np.geomspace(0.3, 0.003, rows)[:, None]
    x[:, : n // 2] *= 10
    return x.astype(np.float32)


@pytest.mark.parametrize("old, new", [(48000, 44100), (22050, 44100), (44101, 44100), (8000, 44100),
                                      (384000, 44100), (44100, 8000), (44100, 48000), (44100, 384000),
                                      (11025, 44100), (96000, 44100)])
def test_resampler_is_julius(old, new):
    x = noise(2, 1500)
    got = run_function(P.resample, x, whole(x), np.int64(old), np.int64(new))
    want = ref.julius_resample(x, old, new)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(x).max())


def test_resampler_reference_evaluator():
    x = noise(1, 400)
    ours = run_function(P.resample, x, whole(x), np.int64(48000), np.int64(44100))
    theirs = run_function(P.resample, x, whole(x), np.int64(48000), np.int64(44100), runtime="ref")
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-6 * np.abs(x).max())


def test_resampler_in_pieces_in_both_runtimes():
    """Long input: the output is made in several Loop iterations; onnxruntime and the reference
    evaluator both give julius's result, the pieces in order."""
    x = noise(2, 16000)  # 8 kHz -> 44.1 kHz: 88200 outputs, three pieces of 39568
    ours = run_function(P.resample, x, whole(x), np.int64(8000), np.int64(44100))
    theirs = run_function(P.resample, x, whole(x), np.int64(8000), np.int64(44100), runtime="ref")
    want = ref.julius_resample(x, 8000, 44100)
    assert ours.shape == theirs.shape == want.shape
    np.testing.assert_allclose(ours, want, rtol=0, atol=1e-6 * np.abs(x).max())
    np.testing.assert_allclose(theirs, want, rtol=0, atol=1e-6 * np.abs(x).max())


def whole(x: np.ndarray) -> np.ndarray:
    """The `length` input that covers all of x's samples."""
    return np.array([x.shape[1]], np.int64)


@pytest.mark.parametrize("old", [SR, 48000])
def test_resampler_reads_only_the_first_length_samples(old):
    """`resample` on x's first n samples is `resample` of x cut to them: what follows never counts."""
    x = noise(2, 900)
    cut = np.ascontiguousarray(x[:, :700])
    got = run_function(P.resample, x, whole(cut), np.int64(old), np.int64(SR))
    np.testing.assert_array_equal(got, run_function(P.resample, cut, whole(cut), np.int64(old), np.int64(SR)))
    assert got.shape[1] == 700 * SR // old


def test_equal_rates_are_the_identity_and_tiny_inputs_give_a_sample():
    x = noise(2, 5)
    np.testing.assert_array_equal(run_function(P.resample, x, whole(x), np.int64(SR), np.int64(SR)), x)
    assert run_function(P.resample, x[:, :1], whole(x[:, :1]), np.int64(48000), np.int64(SR)).shape == (2, 1)


def test_gcd():
    for a, b in [(48000, 44100), (44101, 44100), (384000, 44100), (7, 7), (1, 384000)]:
        assert int(run_function(P.gcd, np.int64(a), np.int64(b))) == np.gcd(a, b)


@pytest.mark.parametrize("rate, n", [(44100, 66150), (48000, 30000), (22050, 22050), (8000, 3000),
                                     (384000, 400000), (44101, 50000), (44109, 50000), (16000, 100),
                                     (96000, 10), (12345, 20000)])
def test_meter_is_audiotools(rate, n):
    """At the common rates the filter is upstream's (float32 coefficients), elsewhere the exact
    design; either way within 1e-4 LU of that filter evaluated in float64."""
    x = noise(3, n)
    got = run_function(P.loudness, x, np.int64(rate))
    want = ref.loudness(x, rate, float32_coefficients=rate in P.COMMON_RATES)
    np.testing.assert_allclose(got, want, rtol=0, atol=LUFS_TOLERANCE)


def test_common_rates_use_upstreams_rounded_filter():
    """The rounding of upstream's coefficients moves the loudness measurably; the table follows it."""
    x = np.sin(2 * np.pi * 40 * np.arange(SR) / SR, dtype=np.float32)[None] * 0.5  # near the high pass's corner
    exact, rounded = ref.loudness(x, SR), ref.loudness(x, SR, float32_coefficients=True)
    assert abs(exact - rounded)[0] > 2e-5
    assert abs(run_function(P.loudness, x, np.int64(SR)) - rounded)[0] < abs(exact - rounded)[0] / 3


def test_meter_reference_is_pyloudnorm():
    """The test's reference agrees with pyloudnorm where their block rules coincide."""
    import pyloudnorm

    x = noise(1, 3 * 48000)[0].astype(np.float64)
    assert abs(ref.loudness(x[None], 48000)[0] - pyloudnorm.Meter(48000).integrated_loudness(x)) < 1e-9


def test_silence_and_non_finite_audio():
    silent = np.zeros((1, 1000), np.float32)
    assert run_function(P.loudness, silent, np.int64(SR))[0] == np.float32(-70.0)
    np.testing.assert_array_equal(run_function(P.prepare, silent, whole(silent), np.int64(48000), np.int64(SR)), 0)
    huge = np.full((1, 1000), 1e30, np.float32)
    assert np.isfinite(run_function(P.loudness, huge, np.int64(SR))).all()
    bad = noise(1, 1000)
    bad[0, ::7] = np.nan
    bad[0, 3] = np.inf
    clean = run_function(P.finite, bad)
    assert np.isfinite(clean).all() and (clean[0, ::7] == 0).all()


def test_normalize_and_ensure_max():
    x = noise(2, 30000)
    target = np.float32([-24.0, -10.0])
    y = run_function(P.normalize_loudness, x, np.int64(SR), target)
    np.testing.assert_allclose(ref.loudness(y, SR), target, atol=1e-3)
    loud = x * 100
    np.testing.assert_allclose(np.abs(run_function(P.ensure_max_of_audio, loud)).max(1), 1.0, rtol=1e-6)
    quiet = x / np.abs(x).max()
    np.testing.assert_array_equal(run_function(P.ensure_max_of_audio, quiet), quiet)


@pytest.mark.parametrize("case", PREP_CASES)
def test_preprocessed_audio_is_upstreams(case):
    g = app_case(case)
    mono = g["input_audio"].mean(0, keepdims=True).astype(np.float32)
    got = run_function(P.prepare, mono, whole(mono), np.int64(g["input_sr"]), np.int64(SR))
    want = g["preprocessed_audio"][0]
    assert got.shape[1] == mono.shape[1] * SR // int(g["input_sr"])
    np.testing.assert_allclose(got, want[:, : got.shape[1]], rtol=0, atol=1e-4)
    assert not want[:, got.shape[1]:].any()  # upstream's hop padding


@pytest.mark.parametrize("case", PREP_CASES)
def test_codes_are_upstreams(tiny, case):
    import onnxruntime as ort

    g = app_case(case)
    mono = g["input_audio"].mean(0, keepdims=True).astype(np.float32)
    sess = ort.InferenceSession(str(tiny.path), providers=["CPUExecutionProvider"])
    out = dict(zip(OUTPUTS, sess.run(OUTPUTS, interface_feeds(mono, sample_rate=int(g["input_sr"])))))
    np.testing.assert_array_equal(out["codes"], g["codes"])
    # the output: the input's rate and length, the input's loudness
    assert out["audio_out"].shape == mono.shape
    np.testing.assert_allclose(ref.loudness(out["audio_out"], int(g["input_sr"])),
                               ref.loudness(mono, int(g["input_sr"])), atol=1e-3)


def test_output_length_is_the_input_length_times_the_stretch(tiny):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tiny.path), providers=["CPUExecutionProvider"])
    x = noise(1, 4801)
    out = sess.run(["audio_out"], interface_feeds(x, sample_rate=48000, time_stretch_factor=2))[0]
    assert out.shape == (1, 2 * 4801) and np.isfinite(out).all()


def test_non_finite_and_silent_audio_in_the_model(tiny):
    """NaN and ±inf samples read as 0; a silent input is encoded as silence and its output is set
    to the floor loudness (−70 LUFS), as upstream's app sets it; nothing is NaN."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tiny.path), providers=["CPUExecutionProvider"])
    settings = dict(seed=1, sampling_steps=2, c2f_sampling_steps=1, sample_rate=22050)
    x = noise(1, 11025)
    bad = x.copy()
    bad[0, ::50] = np.nan
    bad[0, 7] = np.inf
    bad[0, 9] = -np.inf
    zeroed = np.where(np.isfinite(bad), bad, 0).astype(np.float32)
    got = dict(zip(OUTPUTS, sess.run(OUTPUTS, interface_feeds(bad, **settings))))
    want = dict(zip(OUTPUTS, sess.run(OUTPUTS, interface_feeds(zeroed, **settings))))
    for name in OUTPUTS:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    silent = dict(zip(OUTPUTS, sess.run(OUTPUTS, interface_feeds(np.zeros((1, 11025), np.float32), **settings))))
    assert np.isfinite(silent["audio_out"]).all()
    assert ref.loudness(silent["audio_out"], 22050)[0] < -69.9
