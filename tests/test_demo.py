"""`vampnet-onnx demo` (vampnet_onnx/demo.py): the main job on the embedded default model.

The demo keeps its model in ``<output>/vampnet-tiny.onnx``, so every test works in a tmp folder.
Most tests put the conftest ``tiny`` model there (built once per session, same architecture and
format as the demo's own); ``test_demo_builds_its_model_from_scratch`` really writes the random
checkpoints and builds (about a minute).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from vampnet_onnx import demo
from conftest import runtime_only
from vampnet_onnx.cli import main

RATE = 44100  # the tiny model's (its metadata); the demo writes its clip at the model's rate
CLIP_FRAMES = int(round(demo.CLIP_SECONDS * RATE))
FILES = (demo.MODEL_NAME, demo.INPUT_NAME, demo.OUTPUT_NAME, demo.PLOT_NAME)


def run_demo(capsys, folder: Path, *extra) -> tuple[int, str, str]:
    rc = main(["demo", "-o", str(folder), *map(str, extra)])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def prebuilt(tmp_path, tiny) -> Path:
    """A demo folder whose model is already there (the session's tiny model)."""
    folder = tmp_path / "demo"
    folder.mkdir()
    shutil.copy2(tiny.path, folder / demo.MODEL_NAME)
    return folder


def read(path: Path) -> tuple[np.ndarray, int]:
    data, sr = sf.read(str(path), dtype="float64", always_2d=True)
    return data, sr


def check_audio(path: Path) -> np.ndarray:
    info = sf.info(str(path))
    assert (info.samplerate, info.frames, info.channels) == (RATE, CLIP_FRAMES, 1), info
    data, _ = read(path)
    assert np.all(np.isfinite(data))
    assert np.max(np.abs(data)) > 1e-3  # not silent
    assert np.max(np.abs(data)) <= 1.0
    return data


def check_printout(out: str, folder: Path) -> None:
    assert "RANDOM weights" in out and "noise-like, not music" in out
    assert "vampnet-onnx build --checkpoints DIR" in out
    assert "codec.pth, coarse.pth, c2f.pth" in out
    assert "vampnet-onnx vamp in.wav -o out.wav" in out
    for name in (demo.MODEL_NAME, demo.INPUT_NAME, demo.OUTPUT_NAME):
        assert str(folder / name) in out


def test_demo_with_model_present(capsys, prebuilt):
    model = prebuilt / demo.MODEL_NAME
    stamp = model.stat().st_mtime_ns
    rc, out, err = run_demo(capsys, prebuilt)
    assert rc == 0, err
    for name in FILES:
        assert (prebuilt / name).is_file(), name
    x = check_audio(prebuilt / demo.INPUT_NAME)
    y = check_audio(prebuilt / demo.OUTPUT_NAME)
    assert np.max(np.abs(x - y)) > 1e-2  # the model's output, not a copy of the input
    assert (prebuilt / demo.PLOT_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    check_printout(out, prebuilt)
    assert str(prebuilt / demo.PLOT_NAME) in out
    assert f"seed: {demo.DEMO_SEED}" in out
    assert "already built" in out and "building" not in out
    assert model.stat().st_mtime_ns == stamp
    assert not (prebuilt / demo.CHECKPOINT_DIR).exists()
    assert "Traceback" not in err and "Warning" not in err

    # a second run reuses the model and, with the demo's fixed seed, reproduces the output
    rc, out2, err = run_demo(capsys, prebuilt)
    assert rc == 0, err
    assert "already built" in out2 and "building" not in out2
    assert model.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(read(prebuilt / demo.OUTPUT_NAME)[0], y)

    # --seed reaches the model
    rc, out3, err = run_demo(capsys, prebuilt, "--seed", 3)
    assert rc == 0, err
    assert "seed: 3" in out3
    assert np.max(np.abs(read(prebuilt / demo.OUTPUT_NAME)[0] - y)) > 1e-3


def test_demo_runs_the_vamp_command(capsys, prebuilt, tmp_path):
    """The demo's output is exactly what `vampnet-onnx vamp` gives for its input, model and seed."""
    rc, out, err = run_demo(capsys, prebuilt, "--seed", 5)
    assert rc == 0, err
    by_hand = tmp_path / "by_hand.wav"
    rc = main(["vamp", str(prebuilt / demo.INPUT_NAME), "-o", str(by_hand),
               "-m", str(prebuilt / demo.MODEL_NAME), "--seed", "5"])
    assert rc == 0, capsys.readouterr().err
    np.testing.assert_array_equal(read(by_hand)[0], read(prebuilt / demo.OUTPUT_NAME)[0])
    assert sf.info(str(by_hand)).subtype == sf.info(str(prebuilt / demo.OUTPUT_NAME)).subtype


def test_demo_without_matplotlib_skips_the_picture(capsys, prebuilt, monkeypatch):
    monkeypatch.setattr(demo, "plot_available", lambda: False)
    rc, out, err = run_demo(capsys, prebuilt)
    assert rc == 0, err
    assert not (prebuilt / demo.PLOT_NAME).exists()
    assert "matplotlib is not installed" in out
    check_audio(prebuilt / demo.OUTPUT_NAME)
    check_printout(out, prebuilt)


def test_demo_errors_are_one_line(capsys, tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    rc, _, err = run_demo(capsys, not_a_folder)
    assert rc == 1 and err.strip().startswith("vampnet-onnx: error: ") and "not a folder" in err
    assert len(err.strip().splitlines()) == 1
    folder = tmp_path / "d"
    (folder / demo.MODEL_NAME).mkdir(parents=True)
    rc, _, err = run_demo(capsys, folder)
    assert rc == 1 and "not a file" in err and "Traceback" not in err


def test_stale_reason(tmp_path, tiny):
    assert demo.stale_reason(tiny.path) is None
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    assert "cannot read" in demo.stale_reason(garbage)
    from onnx import TensorProto, helper, save_model

    x = helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["B", "S"])
    y = helper.make_tensor_value_info("audio_out", TensorProto.FLOAT, ["B", "S"])
    graph = helper.make_graph([helper.make_node("Identity", ["audio"], ["audio_out"])], "g", [x], [y])
    old = tmp_path / "old.onnx"
    save_model(helper.make_model(graph), str(old))
    reason = demo.stale_reason(old)
    assert "lacks" in reason and "seed" in reason and "codes_out" in reason


def test_synth_clip_is_a_deterministic_musical_signal():
    a = demo.synth_clip(RATE)
    b = demo.synth_clip(RATE)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and a.shape == (CLIP_FRAMES,)
    assert np.all(np.isfinite(a)) and np.isclose(np.max(np.abs(a)), 0.5)
    # rhythmic: the energy in 50 ms windows varies a lot (notes and drum hits decay)
    frames = a[: len(a) // 2205 * 2205].reshape(-1, 2205)
    rms = np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1))
    assert rms.max() > 3 * rms.min()
    # pitched: the strongest spectral peak of a note is in the melody/bass range
    spectrum = np.abs(np.fft.rfft(a[:RATE]))
    peak_hz = np.argmax(spectrum[20:]) + 20
    assert 50 <= peak_hz <= 2000


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_demo_builds_its_model_from_scratch(capsys, tmp_path):
    """The offline default: random tiny checkpoints, a real build (about a minute), then reuse."""
    pytest.importorskip("torch")
    folder = tmp_path / "fresh"
    rc, out, err = run_demo(capsys, folder)
    assert rc == 0, err
    model = folder / demo.MODEL_NAME
    assert "not found; building it" in out
    assert "exporting components" in out and "test run in onnxruntime" in out  # build progress
    for name in FILES:
        assert (folder / name).is_file(), name
    check_audio(folder / demo.OUTPUT_NAME)
    check_printout(out, folder)
    assert "just built" in out
    assert "Traceback" not in err and "FutureWarning" not in err
    ckpts = folder / demo.CHECKPOINT_DIR
    assert sorted(p.name for p in ckpts.iterdir()) == ["c2f.pth", "coarse.pth", "codec.pth"]

    # the model records the checkpoints it was built from
    rc = main(["info", str(model)])
    info = capsys.readouterr().out
    assert rc == 0
    for kind in ("codec", "coarse", "c2f"):
        assert f"sha256_{kind} = {_sha256(ckpts / f'{kind}.pth')}" in info

    # a second run does not rebuild
    stamp = model.stat().st_mtime_ns
    y = read(folder / demo.OUTPUT_NAME)[0]
    rc, out2, err = run_demo(capsys, folder)
    assert rc == 0, err
    assert "already built" in out2 and "building" not in out2 and "exporting" not in out2
    assert model.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(read(folder / demo.OUTPUT_NAME)[0], y)


RUNTIME_ONLY = runtime_only(("torch", "onnx", "onnxscript", "onnx_ir"))


def test_demo_without_the_build_extras(prebuilt, tmp_path):
    """With its model built, the demo runs on the host runtime alone; without the model it says
    how to install the build extras (one line, exit code 1)."""
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def run(folder: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", RUNTIME_ONLY, "demo", "-o", str(folder)],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    p = run(prebuilt)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "already built" in p.stdout and "RANDOM weights" in p.stdout
    check_audio(prebuilt / demo.OUTPUT_NAME)
    p = run(tmp_path / "empty")
    assert p.returncode == 1, p.stdout + p.stderr
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vampnet-onnx: error: ") and "pip install -e .[build]" in err[0]
    assert "Traceback" not in p.stderr
