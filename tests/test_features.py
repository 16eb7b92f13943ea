"""Upstream Interface.vamp's options in the graph: feedback_steps, time_stretch_factor, onset_mask_width.

* Graph level, cheap: the stretch (graphs/stages.py stretch_time / stretch_mask) and the feedback
  loop (coarse_stage's passes, with a stub transformer in place of the coarse model) against the numpy
  reference, batch 2, lengths across a coarse chunk; the loop's per-pass keys against running the
  coarse stage pass by pass; onnxruntime and the reference evaluator.
* The single model (conftest `tiny`): upstream's feedback and stretch fixtures token for token and
  audio to the noise floor (the feedback fixture is deterministic, and upstream re-masks the same
  positions every pass, so it equals one pass: the per-pass noise is tested at graph level); the onset-built mask equals upstream's; at their defaults the three
  inputs leave today's outputs unchanged (a stored run of the model before they existed);
  out-of-range values are clamped; the reference evaluator agrees with onnxruntime.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import onnxscript
import pytest
from onnxscript import FLOAT, INT64

import tests.numpy_reference as ref
from conftest import OUTPUTS, app_output, fixture_inputs, prepared_audio
from vampnet_onnx.graphs import stages
from vampnet_onnx.graphs.opsets import op, vampnet
from vampnet_onnx.graphs.portable import make_portable
from tests.graph_helpers import RUNTIMES, function_model, make_runner
from tolerances import assert_audio_close
from vampnet_onnx.session import interface_feeds

FEATURES = Path(__file__).parent / "fixtures" / "upstream" / "golden-features"
HOP, SR, MASK_TOKEN, VOCAB = 768, 44100, 1024, 1024
COARSE_CHUNK = 575
i64, f32 = np.int64, np.float32


def load_case(case: str) -> dict:
    data = dict(np.load(FEATURES / f"{case}.npz"))
    data["meta"] = json.loads(str(data["meta"]))
    return data


# ------------------------------------------------------------------------------ stretch


def _run(fn, *inputs, runtime="ort", extra_functions=()):
    model = function_model(fn, *inputs)
    if extra_functions:
        model.functions.extend(extra_functions)
        make_portable(model)
    outputs = make_runner(model, runtime)({f"in{i}": np.asarray(x) for i, x in enumerate(inputs)})
    return outputs[0] if len(outputs) == 1 else tuple(outputs)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_stretch_equals_upstreams_repeat_interleave(runtime):
    rng = np.random.default_rng(0)
    for factor in (1, 2, 3, 4):
        for frames in (1, 7, 574, 575, 576):
            codes = rng.integers(0, VOCAB, (2, 14, frames))
            mask = rng.integers(0, 2, (2, 14, frames))
            got_codes = _run(stages.stretch_time, codes, i64(factor), runtime=runtime)
            got_mask = _run(stages.stretch_mask, mask, i64(factor), runtime=runtime)
            np.testing.assert_array_equal(got_codes, ref.stretch_time(codes, factor))
            np.testing.assert_array_equal(got_mask, ref.stretch_mask(mask, factor))
            assert got_mask.shape == (2, 14, factor * frames)
    # the added frames are generated, the originals keep their mask
    got = _run(stages.stretch_mask, np.zeros((1, 2, 3), np.int64), i64(3), runtime=runtime)
    np.testing.assert_array_equal(got[0, 0], [0, 1, 1, 0, 1, 1, 0, 1, 1])


# ------------------------------------------------------------------------------ feedback


@onnxscript.script(vampnet, default_opset=op)
def stub_transformer(zm: INT64["B", "C", "T"], adapter: INT64) -> FLOAT["B", "N", "V"]:
    """Logits peaked at (3·zm[c, t + 1] + 7·c + 1) mod 1024, the next frame taken cyclically
    within what the stage passes in (one chunk), flattened n = t·C + c like the real models. It
    takes the adapter index the stages hand every transformer, and ignores it (no fine-tunes)."""
    n_frames = op.Shape(zm, start=2, end=3)
    following = op.Concat(op.Slice(zm, [1], n_frames, [2]), op.Slice(zm, [0], [1], [2]), axis=2)
    codebook = op.Unsqueeze(op.Range(0, op.Squeeze(op.Shape(zm, start=1, end=2)), 1), [0, 2])
    target = (following * 3 + codebook * 7 + 1) % 1024
    flat = op.Reshape(op.Transpose(target, perm=[0, 2, 1]), op.Constant(value_ints=[0, -1, 1]))
    distance = op.Abs(flat - op.Range(0, 1024, 1))
    return op.Neg(op.Cast(distance, to=FLOAT.dtype))


def stub_target(zm: np.ndarray) -> np.ndarray:
    following = np.roll(zm, -1, axis=2)
    return (following * 3 + np.arange(zm.shape[1])[None, :, None] * 7 + 1) % 1024


def stage_functions() -> list[onnx.FunctionProto]:
    """What the assembler binds to the stage's opaque ops: the stub as `coarse_transformer`, the
    model's PRNG noise as `coarse_noise`, and the functions those call."""
    transformer = stub_transformer.to_function_proto()
    transformer.name = "coarse_transformer"
    noise = stages.prng_noise.to_function_proto()
    noise.name = "coarse_noise"
    called = stages.prng_noise.function_ir.get_called_functions().values()
    return [transformer, noise, *(f.to_function_proto() for f in called)]


def one_step_reference(z_c, m_c, _chunk):
    """One argmax step (sample_cutoff < 0): every masked token becomes the stub's target."""
    zm = np.where(m_c == 1, MASK_TOKEN, z_c)
    return np.where(zm == MASK_TOKEN, stub_target(zm), z_c)


SETTINGS = dict(deterministic=(1, -1.0, 0.0), stochastic=(2, 1.0, 5.0))  # steps, sample_cutoff, mask_temperature


def feedback(codes, mask, key, feedback_key, passes, chunk, settings, runtime="ort"):
    steps, cutoff, mask_temperature = SETTINGS[settings]
    args = (codes, mask, np.asarray(key, np.int32), np.asarray(feedback_key, np.int32), i64(passes), i64(chunk), i64(4), i64(steps),
            f32(1.0), f32(mask_temperature), f32(1.0), f32(cutoff), i64(0))  # adapter 0: the base model
    return _run(stages.coarse_stage, *args, runtime=runtime, extra_functions=stage_functions())


def coarse(codes, mask, key, chunk, settings):
    """One pass: the plain coarse stage under `key`."""
    return feedback(codes, mask, key, key, 1, chunk, settings)


def codes_and_mask(frames: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, VOCAB, (2, 6, frames))  # 4 coarse codebooks and 2 fine ones
    mask = (rng.random((2, 6, frames)) < 0.6).astype(np.int64)
    mask[1, :, : frames // 2] = 1  # row 1 keeps tokens in its second half only
    return codes, mask


@pytest.mark.parametrize("frames", [580, 1150, 1151])
def test_feedback_loop_matches_the_numpy_reference_across_chunks(frames):
    """Batch 2, one argmax step per chunk, 2 and 3 coarse chunks: every pass re-masks the same
    positions of the previous pass's output, the fine codebooks pass through."""
    codes, mask = codes_and_mask(frames)
    key, feedback_key = ref.key_path(1, 1), ref.key_path(1, 3)
    for passes in (1, 2, 3):
        got = feedback(codes, mask, key, feedback_key, passes, COARSE_CHUNK, "deterministic")
        stage = lambda z, m, _p: ref.coarse_stage(z, m, COARSE_CHUNK, 4, one_step_reference)  # noqa: E731
        np.testing.assert_array_equal(got, ref.feedback_coarse(codes, mask, passes, stage), err_msg=f"{passes} passes")
        np.testing.assert_array_equal(got[:, 4:], codes[:, 4:])
        assert (got[:, :4] != codes[:, :4]).any()


def test_feedback_passes_draw_their_own_noise():
    """Stochastic settings: N passes equal the coarse stage run N times in a row, pass 0 under the
    coarse key and pass p under derive_key(feedback_key, p); so one pass is the plain stage."""
    codes, mask = codes_and_mask(40, seed=2)
    key, feedback_key = ref.key_path(5, 1), ref.key_path(5, 3)
    chunk = 16  # three chunks
    expected = codes
    results = []
    for passes in (1, 2, 3):
        pass_key = key if passes == 1 else ref.derive_key(feedback_key, passes - 1)
        expected = coarse(expected, mask, pass_key, chunk, "stochastic")
        got = feedback(codes, mask, key, feedback_key, passes, chunk, "stochastic")
        np.testing.assert_array_equal(got, expected, err_msg=f"{passes} passes")
        results.append(got)
    assert (results[0] != results[1]).any() and (results[1] != results[2]).any()  # new draws per pass


def test_feedback_reference_evaluator_equals_onnxruntime():
    codes, mask = codes_and_mask(20, seed=3)
    args = (codes, mask, ref.key_path(2, 1), ref.key_path(2, 3), 2, 8, "stochastic")
    np.testing.assert_array_equal(feedback(*args, runtime="ref"), feedback(*args, runtime="ort"))


# ------------------------------------------------------------------------------ the single model

_SESSIONS: dict = {}


def run(built, audio: np.ndarray, **inputs) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    if built.path not in _SESSIONS:
        _SESSIONS[built.path] = ort.InferenceSession(str(built.path), providers=["CPUExecutionProvider"])
    return dict(zip(OUTPUTS, _SESSIONS[built.path].run(OUTPUTS, interface_feeds(audio, **inputs))))


def feature_inputs(g: dict) -> dict:
    meta = g["meta"]
    return {**fixture_inputs(g), "feedback_steps": meta["feedback_steps"],
            "time_stretch_factor": meta["time_stretch_factor"]}


def test_feedback_parity_with_upstream(tiny):
    g = load_case("tiny_feedback2")
    assert g["meta"]["feedback_steps"] == 2 and g["meta"]["time_stretch_factor"] == 1
    audio = prepared_audio(g)
    out = run(tiny, audio, **feature_inputs(g))
    np.testing.assert_array_equal(out["codes"], g["codes"])
    np.testing.assert_array_equal(out["mask_out"], g["mask"])
    np.testing.assert_array_equal(out["codes_out"], g["fine_out"])
    want = app_output(g["audio_out"][:, 0, : audio.shape[1]], audio)
    assert_audio_close(out["audio_out"], want, "feedback 2 audio")


def test_stretch_parity_with_upstream(tiny):
    g = load_case("tiny_stretch2")
    assert g["meta"]["time_stretch_factor"] == 2 and g["meta"]["feedback_steps"] == 1
    audio = prepared_audio(g)
    out = run(tiny, audio, **feature_inputs(g))
    assert out["audio_out"].shape == (1, 2 * audio.shape[1])
    for name in OUTPUTS[1:]:
        assert out[name].shape == (1, 14, 2 * g["codes"].shape[2]), name
    np.testing.assert_array_equal(out["codes"], ref.stretch_time(g["codes"], 2))
    np.testing.assert_array_equal(out["mask_out"], ref.stretch_mask(g["mask"], 2))
    np.testing.assert_array_equal(out["codes_out"], g["fine_out"])
    want = app_output(g["audio_out"][:, 0, : 2 * audio.shape[1]], audio)
    assert_audio_close(out["audio_out"], want, "stretch 2 audio")


@pytest.mark.parametrize("case", ["tiny_onset_w2", "tiny_onset_music_w1"])
def test_onset_mask_built_in_the_model_equals_upstream(tiny, case):
    g = load_case(case)
    width = g["meta"]["onset_mask_width"]
    build = dict(rand_mask_intensity=1.0, periodic_prompt=0, upper_codebook_mask=3, onset_mask_width=width)
    # upstream pads its preprocessed signal with zeros to whole hops before detecting, so does the
    # model: the unpadded signal gives upstream's mask (on the music case the detector alone would not)
    audio = prepared_audio(g)
    assert audio.shape[1] % HOP != 0
    out = run(tiny, audio, sampling_steps=1, c2f_sampling_steps=1, **build)
    np.testing.assert_array_equal(out["codes"], g["codes"])
    np.testing.assert_array_equal(out["mask_out"], g["mask"])
    assert (out["mask_out"][:, :3] == 0).any()
    # an explicit mask ignores it, as it ignores the other builder parameters
    explicit = np.ones_like(g["mask"])
    out = run(tiny, audio, sampling_steps=1, c2f_sampling_steps=1, mask=explicit, **build)
    np.testing.assert_array_equal(out["mask_out"], explicit)


def music(seconds: float, seed: int, rows: int = 1) -> np.ndarray:
    """Excerpts of the onset music fixture's preprocessed audio (real music)."""
    pool = load_case("tiny_onset_music_w1")["preprocessed_audio"][0, 0]
    n = round(seconds * SR)
    starts = np.random.default_rng(seed).integers(0, len(pool) - n, rows)
    return np.stack([pool[s:s + n] for s in starts]).astype(np.float32)


BASELINE_INPUTS = dict(seed=17, sampling_steps=3, c2f_sampling_steps=2, mask_temperature=6.0, dropout=0.1)


def test_defaults_are_the_plain_run(tiny):
    """feedback 1, stretch 1, onset width 0 given explicitly equal leaving them at their defaults,
    and the noise of that run is the documented stream of the plain coarse stage (pass 0 keeps the
    coarse key; tests/test_injected_noise.py pins that stream to the numpy reference)."""
    audio = music(0.7, seed=4, rows=2)
    out = run(tiny, audio, **BASELINE_INPUTS)
    explicit = run(tiny, audio, **BASELINE_INPUTS, feedback_steps=1, time_stretch_factor=1, onset_mask_width=0)
    for name in OUTPUTS:
        np.testing.assert_array_equal(explicit[name], out[name], err_msg=name)
    assert out["audio_out"].shape == audio.shape and out["codes_out"].shape[2] == -(-audio.shape[1] // HOP)


def test_feedback_and_stretch_change_a_stochastic_run(tiny):
    audio = music(0.5, seed=5, rows=2)
    settings = dict(seed=3, sampling_steps=2, c2f_sampling_steps=1)
    base = run(tiny, audio, **settings)
    fed = run(tiny, audio, **settings, feedback_steps=2)
    np.testing.assert_array_equal(fed["mask_out"], base["mask_out"])
    assert (fed["coarse_codes"][:, :4] != base["coarse_codes"][:, :4]).any()  # the second pass's draws
    kept = base["mask_out"] == 0
    np.testing.assert_array_equal(fed["codes_out"][kept], base["codes"][kept])
    stretched = run(tiny, audio, **settings, time_stretch_factor=3)
    frames = base["codes"].shape[2]
    assert stretched["audio_out"].shape == (2, 3 * audio.shape[1])
    assert np.isfinite(stretched["audio_out"]).all()
    np.testing.assert_array_equal(stretched["codes"], ref.stretch_time(base["codes"], 3))
    np.testing.assert_array_equal(stretched["mask_out"], ref.stretch_mask(base["mask_out"], 3))
    for name in ("coarse_codes", "codes_out"):
        assert stretched[name].shape == (2, 14, 3 * frames)
        assert stretched[name].max() < MASK_TOKEN
    kept = stretched["mask_out"] == 0
    np.testing.assert_array_equal(stretched["codes_out"][kept], stretched["codes"][kept])


CLAMPED = [
    ("feedback_steps", 0, 1), ("feedback_steps", -5, 1), ("feedback_steps", 2**40, 8),
    ("time_stretch_factor", 0, 1), ("time_stretch_factor", -3, 1), ("time_stretch_factor", 2**62, 8),
    ("onset_mask_width", -4, 0), ("onset_mask_width", -(2**63), 0), ("onset_mask_width", 2**50, 2**24),
]


@pytest.mark.parametrize("name,value,acts_as", CLAMPED, ids=[f"{n}={v}" for n, v, _ in CLAMPED])
def test_out_of_range_values_are_clamped(tiny, name, value, acts_as):
    audio = music(0.2, seed=6)
    settings = dict(seed=2, sampling_steps=2, c2f_sampling_steps=1, periodic_prompt=0, rand_mask_intensity=0.5)
    got = run(tiny, audio, **settings, **{name: value})
    want = run(tiny, audio, **settings, **{name: acts_as})
    assert np.isfinite(got["audio_out"]).all()
    for key in OUTPUTS:
        np.testing.assert_array_equal(got[key], want[key], err_msg=f"{name}={value} should act as {acts_as}")


def test_reference_evaluator_equals_onnxruntime_with_all_three_on(tiny):
    from onnx.reference import ReferenceEvaluator

    audio = music(0.3, seed=7)
    inputs = dict(seed=9, sampling_steps=2, c2f_sampling_steps=1, mask_temperature=4.0, periodic_prompt=0,
                  rand_mask_intensity=1.0, feedback_steps=2, time_stretch_factor=2, onset_mask_width=1)
    ours = run(tiny, audio, **inputs)
    evaluator = ReferenceEvaluator(onnx.load(str(tiny.path)))
    theirs = dict(zip(OUTPUTS, evaluator.run(OUTPUTS, interface_feeds(audio, **inputs))))
    for name in OUTPUTS[1:]:
        np.testing.assert_array_equal(theirs[name], ours[name], err_msg=name)
    assert_audio_close(theirs["audio_out"], ours["audio_out"], "reference evaluator audio")
    assert ours["audio_out"].shape == (1, 2 * audio.shape[1])
    assert (ours["mask_out"][:, :3, ::2] == 0).any()  # the onsets kept something
    assert math.ceil(audio.shape[1] / HOP) * 2 == ours["codes"].shape[2]
