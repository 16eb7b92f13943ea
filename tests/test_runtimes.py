"""The shipped model runs the same in every runtime docs/runtimes.md names.

On the tiny model, one clip, seed 7 and four settings (a changed temperature, a changed periodic
prompt, an explicit mask, a beat prompt, a mask preview with `generate` 0, a 48 kHz clip shifted by 5 semitones), each runtime must give `codes_out` (and every other code output)
identical to onnxruntime in Python, and audio within the project's float32 noise floor:

* onnxruntime, the oldest supported version (1.17.3), in its own virtual environment;
* onnxruntime-node and onnxruntime-web (its wasm backend, run by Node), pinned in tests/js;
* OpenVINO on CPU with INFERENCE_PRECISION_HINT=f32 (its default on CPUs with bf16 units is bf16,
  which changes even the encoder's codes);
* onnxruntime's own `onnxruntime_test` command fills every input with random values and must run;
* the ONNX reference evaluator (tests/test_model.py).

The other runtimes are installed on first use into `.cache/runtimes/` of the checkout (Node itself
from Debian's packages when it is missing and the tests run as root).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from conftest import OUTPUTS, app_case, golden
from node_packages import node, npm_ci, one_at_a_time, run
from tolerances import assert_audio_close
from vampnet_onnx.session import interface_feeds

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "runtimes"
JS = Path(__file__).parent / "js"
OLDEST_ORT = "1.17.3"
HOP = 768


@pytest.fixture(scope="module")
def cases(tiny) -> dict[str, dict[str, np.ndarray]]:
    audio = golden("tiny_periodic")["preprocessed_audio"][:, 0, : 66150]
    frames = -(-audio.shape[1] // HOP)
    mask = np.random.default_rng(3).integers(0, 2, (1, 14, frames))
    return {
        "temperature": interface_feeds(audio, seed=7, temperature=0.6),
        "periodic_prompt": interface_feeds(audio, seed=7, periodic_prompt=3),
        "explicit_mask": interface_feeds(audio, seed=7, mask=mask),
        "beat_mask": interface_feeds(audio, seed=7, periodic_prompt=0, beat_mask_ms=50.0),
        "mask_preview": interface_feeds(audio, seed=7, periodic_prompt=3, onset_mask_width=2, dropout=0.2, generate=0),
        "other_seed": interface_feeds(audio, seed=8, temperature=0.6),
        # stereo at 48 kHz mixed to mono, shifted up 5 semitones: the in-graph resampler, loudness
        # and pitch shift at another rate
        "rate_48k_pitch5": interface_feeds(app_case("tiny_prep_48k_stereo")["input_audio"].mean(0, keepdims=True),
                                           seed=7, temperature=0.6, sample_rate=48000, pitch_shift=5),
    }


@pytest.fixture(scope="module")
def expected(tiny, cases) -> dict[str, dict[str, np.ndarray]]:
    session = ort.InferenceSession(str(tiny.path), providers=["CPUExecutionProvider"])
    outputs = {name: dict(zip(OUTPUTS, session.run(OUTPUTS, feeds))) for name, feeds in cases.items()}
    assert (outputs["beat_mask"]["mask_out"][:, 0] == 0).any()  # the clip has beats: the tracker runs
    return outputs


def assert_same_outputs(got: dict, want: dict, label: str) -> None:
    for name in OUTPUTS[1:]:
        np.testing.assert_array_equal(got[name], want[name], err_msg=f"{label}: {name}")
    assert_audio_close(got["audio_out"], want["audio_out"], f"{label}: audio_out")


# onnxruntime-web's wasm kernels and OpenVINO's round Atan, Sin, Cos and MatMul differently from
# onnxruntime's native ones (by an ulp, on most elements). The pitch shift's phase vocoder carries a
# difference in a quiet STFT bin's angle into every later frame of the bin (docs/pitch-shift.md),
# so the shifted audio, and a few of the encoder's tokens, differ there (measured on this clip:
# 7 of 1218 in wasm, 14 in OpenVINO); the mask, which the shift does not touch, stays identical.
SHIFTED = "rate_48k_pitch5"


def assert_nearly_same_shifted_codes(got: dict, want: dict, label: str) -> None:
    np.testing.assert_array_equal(got["mask_out"], want["mask_out"], err_msg=label)
    assert got["codes"].shape == want["codes"].shape, label
    assert (got["codes"] == want["codes"]).mean() >= 0.98, label


def assert_seed_matters(outputs: dict, label: str) -> None:
    """A changed seed changes the output: the runtime really reads the `seed` input."""
    assert (outputs["other_seed"]["codes_out"] != outputs["temperature"]["codes_out"]).mean() > 0.3, label


# ------------------------------------------------------------------------ the oldest onnxruntime


def oldest_onnxruntime() -> Path:
    """A virtual environment with onnxruntime OLDEST_ORT (and a numpy it was built for)."""
    venv = CACHE / f"onnxruntime-{OLDEST_ORT}"
    python = venv / "bin" / "python"
    with one_at_a_time(venv.name):
        if not (venv / "ready").exists():
            shutil.rmtree(venv, ignore_errors=True)
            run([sys.executable, "-m", "venv", str(venv)])
            run([str(python), "-m", "pip", "install", "-q", f"onnxruntime=={OLDEST_ORT}", "numpy<2"], timeout=900)
            (venv / "ready").touch()
    return python


OLD_RUNNER = """
import sys, numpy as np, onnxruntime as ort
assert ort.__version__ == sys.argv[3], ort.__version__
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
cases = np.load(sys.argv[2], allow_pickle=False)
names = sorted({key.split("/")[0] for key in cases.files})
out = {}
for case in names:
    feeds = {i.name: cases[f"{case}/{i.name}"] for i in session.get_inputs()}
    for o, value in zip(session.get_outputs(), session.run(None, feeds)):
        out[f"{case}/{o.name}"] = value
np.savez(sys.argv[2] + ".out.npz", **out)
"""


def test_oldest_onnxruntime_gives_the_same_outputs(tiny, cases, expected, tmp_path):
    python = oldest_onnxruntime()
    bundle = tmp_path / "cases.npz"
    np.savez(bundle, **{f"{case}/{k}": v for case, feeds in cases.items() for k, v in feeds.items()})
    run([str(python), "-c", OLD_RUNNER, str(tiny.path), str(bundle), OLDEST_ORT], timeout=600)
    with np.load(str(bundle) + ".out.npz") as z:
        got = {case: {name: z[f"{case}/{name}"] for name in OUTPUTS} for case in cases}
    for case in cases:
        assert_same_outputs(got[case], expected[case], f"onnxruntime {OLDEST_ORT}, {case}")
    assert_seed_matters(got, f"onnxruntime {OLDEST_ORT}")


# ----------------------------------------------------------------- onnxruntime-node and -web


def js_packages() -> Path:
    """tests/js's pinned packages, installed with `npm ci` into .cache/runtimes/js."""
    return npm_ci(JS, CACHE / "js", scripts=("run_model.mjs",))


def run_js(backend: str, model: Path, feeds: dict, folder: Path) -> dict[str, np.ndarray]:
    """Feed the runner raw little-endian files plus a JSON manifest; read its outputs back."""
    folder.mkdir()
    manifest = []
    for name, value in feeds.items():
        (folder / f"in_{name}.bin").write_bytes(np.ascontiguousarray(value).tobytes())
        manifest.append({"name": name, "dtype": str(value.dtype), "shape": list(value.shape), "file": f"in_{name}.bin"})
    (folder / "inputs.json").write_text(json.dumps(manifest))
    packages = js_packages()
    run([node(), str(packages / "run_model.mjs"), backend, str(model), str(folder)], timeout=600)
    report = json.loads((folder / "outputs.json").read_text())
    assert report["inputs"] == list(feeds)  # the runtime lists every input as a plain input
    dtypes = {"float32": np.float32, "int64": np.int64}
    return {o["name"]: np.frombuffer((folder / o["file"]).read_bytes(), dtypes[o["dtype"]]).reshape(o["shape"])
            for o in report["outputs"]}


@pytest.mark.parametrize("backend", ["node", "web"])
def test_onnxruntime_js_gives_the_same_outputs(tiny, cases, expected, tmp_path, backend):
    got = {case: run_js(backend, tiny.path, feeds, tmp_path / case) for case, feeds in cases.items()}
    for case in cases:
        label = f"onnxruntime-{backend}, {case}"
        if backend == "web" and case == SHIFTED:
            assert_nearly_same_shifted_codes(got[case], expected[case], label)
        else:
            assert_same_outputs(got[case], expected[case], label)
    assert_seed_matters(got, f"onnxruntime-{backend}")


# ----------------------------------------------------------------------------------- OpenVINO


def test_openvino_gives_the_same_outputs(tiny, cases, expected):
    import openvino as ov

    core = ov.Core()
    got = {}
    for case, feeds in cases.items():
        # each case in a compiled model of its own, the one before deleted first: in OpenVINO
        # 2026.4.1 a pitch-shifted run spoils later runs of a compiled model that is alive then
        # (docs/runtimes.md, "Known problem"), which is how an application must use it too
        compiled = core.compile_model(core.read_model(str(tiny.path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        result = compiled(feeds)
        got[case] = {key.get_any_name(): value for key, value in result.items()}
        del compiled, result
        if case == SHIFTED:
            assert_nearly_same_shifted_codes(got[case], expected[case], f"OpenVINO, {case}")
        else:
            assert_same_outputs(got[case], expected[case], f"OpenVINO, {case}")
    assert_seed_matters(got, "OpenVINO")


# ---------------------------------------------------------------------- onnxruntime_test (CLI)


def test_onnxruntime_test_command_runs_the_model_on_random_inputs(tiny):
    """The command in onnxruntime's wheel fills every input with random values (integers up to
    1000, floats in [0, 1)); the graph clamps them, so it runs. docs/runtimes.md shows this command (with
    1 s of audio; 0.1 s here: random step, feedback and stretch counts make it up to 8·128 steps;
    its random sample_rate is at most 1000, so 100 samples are 0.1 s at the model's 44.1 kHz)."""
    command = Path(sys.executable).with_name("onnxruntime_test")
    proc = run([str(command), str(tiny.path), "1", "--symbolic_dims", "B=1,S=100,MB=1,MK=14,MT=0"], timeout=900)
    assert "Exception" not in proc.stdout + proc.stderr
