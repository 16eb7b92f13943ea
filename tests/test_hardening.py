"""Hardening: limits, signals, inputs never overwritten, damaged checkpoints, checks before work.

One test (or a few) per point of the hardening issue. Each asserts the exit code, the one-line
message, and that no file was written or changed: every file under the test's folder is hashed
before and after (``snapshot``). The signal tests and the fuzz test run in subprocesses, on the
real tiny model (conftest ``tiny``); the checkpoint tests use the upstream fixtures' tiny files.
"""
from __future__ import annotations

import hashlib
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import CHECKPOINTS, as_a_terminal_starts_it
from vampnet_onnx import cli
from vampnet_onnx.audio import choose_subtype
from vampnet_onnx.cli import main
from vampnet_onnx import memory
from vampnet_onnx.errors import ModelError
from vampnet_onnx.model import Model
from vampnet_onnx.paths import DEMO_MODEL
from vampnet_onnx.plot import plot_available

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# helpers


def snapshot(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``folder`` (links: where they point)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(folder))] = "link -> " + os.readlink(p)
        elif p.is_file():
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def one_line_error(err: str, rc: int, expect_rc: int, *contains: str) -> str:
    assert rc == expect_rc, err
    assert "Traceback" not in err, err
    lines = [s for s in err.strip().splitlines() if s.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("vampnet-onnx: error: "), err
    for text in contains:
        assert text.lower() in lines[0].lower(), err
    return lines[0]


def run_main(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def write_music(path: Path, seconds: float = 1.0, sr: int = 44100, channels: int = 1,
                **kwargs) -> Path:
    t = np.arange(int(sr * seconds)) / sr
    x = 0.3 * np.sin(2 * np.pi * 330 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * t))
    sf.write(str(path), np.repeat(x[:, None], channels, axis=1), sr, **kwargs)
    return path


@pytest.fixture
def wav(tmp_path) -> Path:
    return write_music(tmp_path / "in.wav", subtype="FLOAT")


@pytest.fixture
def no_model_run(monkeypatch):
    """Fail the test if the model is run (the checks under test must come before it)."""
    def refuse(self, *a, **k):
        raise AssertionError("the model ran before the check")

    monkeypatch.setattr(Model, "run", refuse)


def readonly_folder(tmp_path: Path) -> Path:
    """A folder nobody can create files in. As root, permission bits do not stop writes: use a
    folder of the kernel's that refuses new files instead."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except OSError:
        return folder
    (folder / "probe").unlink()
    for candidate in (Path("/sys"), Path("/proc")):
        try:
            (candidate / "vampnet-onnx-probe").touch()
        except OSError:
            return candidate
    pytest.skip("no read-only folder available")


def env_with_repo() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --------------------------------------------------------------------------------------------
# 1. --threads and --variations are bounded


def test_threads_beyond_the_cores_are_refused(capsys, tmp_path, wav, model_path):
    before = snapshot(tmp_path)
    cores = os.cpu_count() or 1
    for value in (cores + 1, 100000, 2**64):
        rc, _, err = run_main(capsys, "vamp", wav, "-o", tmp_path / "o.wav", "-m", model_path,
                              "--threads", value)
        one_line_error(err, rc, 2, "--threads", f"between 0 and {cores}")
    assert snapshot(tmp_path) == before


def test_variations_hard_cap(capsys, tmp_path, wav, model_path):
    before = snapshot(tmp_path)
    rc, _, err = run_main(capsys, "vamp", wav, "-o", tmp_path / "o.wav", "-m", model_path,
                          "--variations", 100000000)
    one_line_error(err, rc, 2, "--variations", f"between 1 and {memory.MAX_VARIATIONS}")
    assert snapshot(tmp_path) == before


def test_variations_bounded_by_memory(capsys, tmp_path, model_path, monkeypatch, no_model_run):
    """Room for 3.5 rows of this input beyond the model's weights: 4 variations are refused, with
    the limit (3) in the message, before the model runs."""
    inp = write_music(tmp_path / "in.wav", seconds=2.0, subtype="PCM_16")
    local = tmp_path / "m.onnx"
    shutil.copy(model_path, local)
    per_row = int(memory.ROW_WEIGHTS_SHARE * local.stat().st_size) + 2 * 44100 * memory.ROW_BYTES_PER_SAMPLE
    monkeypatch.setattr(memory, "available_memory", lambda: local.stat().st_size + int(3.5 * per_row))
    before = snapshot(tmp_path)
    rc, _, err = run_main(capsys, "vamp", inp, "-o", tmp_path / "o.wav", "-m", local,
                          "--variations", 4)
    one_line_error(err, rc, 1, "4 variations", "at most 3 variations")
    assert snapshot(tmp_path) == before


def test_available_memory_reads_meminfo():
    if not Path("/proc/meminfo").exists():
        pytest.skip("no /proc/meminfo")
    value = memory.available_memory()
    assert value is not None and value > 0


# --------------------------------------------------------------------------------------------
# 3. Ctrl-C and 9. SIGTERM / SIGHUP: clean exit, nothing left behind


def _vamp_process(tmp_path: Path, model_path: Path, steps: int,
                  prelude: str | None = None):
    """Start `vamp` on ``tmp_path/in.wav`` (written first) with 2 variations and --save-codes."""
    args = ["vamp", str(tmp_path / "in.wav"), "-o", str(tmp_path / "out.wav"), "-m", str(model_path),
            "--sampling-steps", str(steps), "--seed", "1", "--variations", "2",
            "--save-codes", str(tmp_path / "codes.npz")]
    cmd = [sys.executable, "-m", "vampnet_onnx"] if prelude is None else [sys.executable, "-c", prelude]
    return subprocess.Popen(cmd + args, cwd=tmp_path, env=env_with_repo(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=as_a_terminal_starts_it)


def _wait_for_model_run(proc) -> None:
    """Until the CLI prints its seed (the line just before the model runs), then a moment."""
    line = proc.stdout.readline()
    assert line.startswith("seed:"), (line, proc.stderr.read() if proc.poll() is not None else "")
    time.sleep(1.0)
    assert proc.poll() is None, "the run ended before the signal: make it longer"


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143),
                                      (signal.SIGHUP, 129)])
def test_signal_during_the_model_run(tmp_path, model_path, sig, code):
    write_music(tmp_path / "in.wav", seconds=8.0, subtype="PCM_16")
    before = snapshot(tmp_path)
    proc = _vamp_process(tmp_path, model_path, steps=128)  # a long run
    _wait_for_model_run(proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    line = one_line_error(err, proc.returncode, code, "interrupted", signal.Signals(sig).name)
    assert "terminate called" not in err, line
    assert snapshot(tmp_path) == before  # no output, no temporary file


# The CLI with its audio writer patched to send SIGTERM to its own process once the first
# temporary file is written (deterministically "while outputs are written").
SIGTERM_WHILE_WRITING = textwrap.dedent("""
    import os, signal, sys
    from vampnet_onnx import cli, model
    write = model.write_audio_file
    def write_then_sigterm(tmp, *a, **k):
        write(tmp, *a, **k)
        os.kill(os.getpid(), signal.SIGTERM)
    model.write_audio_file = write_then_sigterm
    sys.exit(cli.main(sys.argv[1:]))
""")


def test_sigterm_while_writing_leaves_no_temporary_files(tmp_path, model_path):
    write_music(tmp_path / "in.wav", seconds=1.0, subtype="PCM_16")
    before = snapshot(tmp_path)
    proc = _vamp_process(tmp_path, model_path, steps=2, prelude=SIGTERM_WHILE_WRITING)
    out, err = proc.communicate(timeout=600)
    one_line_error(err, proc.returncode, 143, "interrupted (SIGTERM)")
    assert snapshot(tmp_path) == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_interrupt_waits_for_onnxruntime(model_path):
    """The runtime side of Ctrl-C: after the KeyboardInterrupt, onnxruntime is no longer running
    (exiting while it runs aborts the process with exit 134)."""
    from vampnet_onnx.model import run_in_progress

    m = Model(model_path)
    audio = (0.1 * np.random.default_rng(0).standard_normal((1, 44100 * 4))).astype(np.float32)

    def tick(elapsed):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        m.run(audio, tick=tick, tick_interval=0.05, sampling_steps=64)
    assert not run_in_progress()


# --------------------------------------------------------------------------------------------
# 4. outputs never overwrite inputs


def test_vamp_outputs_never_overwrite_inputs(capsys, tmp_path, wav, model_path):
    local = tmp_path / "m.onnx"
    shutil.copy(model_path, local)
    T = math.ceil(sf.info(str(wav)).frames / 768)
    mask_npy, mask_npz = tmp_path / "mask.npy", tmp_path / "mask.npz"
    np.save(mask_npy, np.ones((14, T), np.int64))
    np.savez(mask_npz, mask=np.ones((1, 14, T), np.int64))
    (tmp_path / "out-2.wav").symlink_to(wav)  # variation 2 of out.wav would be the input
    (tmp_path / "link.npz").symlink_to(mask_npz)
    before = snapshot(tmp_path)
    base = ["vamp", wav, "-m", local]
    cases = [
        (["-o", tmp_path / "o.wav", "--mask-from", mask_npz, "--save-codes", mask_npz], "mask"),
        (["-o", tmp_path / "o.wav", "--mask-from", mask_npz, "--save-codes", tmp_path / "link.npz"], "mask"),
        (["-o", tmp_path / "out.wav", "--variations", 2], "input audio"),
        (["-o", tmp_path / "o.wav", "--save-codes", local], "model"),
        (["-o", tmp_path / "o.wav", "--save-codes", str(local) + ".data"], "model"),
    ]
    if plot_available():
        cases.append((["-o", tmp_path / "o.wav", "--mask-from", mask_npy, "--plot", mask_npy], "mask"))
    for extra, what in cases:
        rc, _, err = run_main(capsys, *base, *extra)
        one_line_error(err, rc, 1, "refusing to overwrite the input file", what)
    assert snapshot(tmp_path) == before


def _tiny_checkpoints(tmp_path: Path) -> Path:
    folder = tmp_path / "ck"
    shutil.copytree(CHECKPOINTS / "tiny", folder)
    return folder


def test_build_output_never_overwrites_inputs(capsys, tmp_path):
    ck = _tiny_checkpoints(tmp_path)
    lora = tmp_path / "lora.pth"
    shutil.copy(ck / "coarse.pth", lora)
    cases = [
        (["--checkpoints", ck, "-o", ck / "codec.pth"], "codec"),
        (["--checkpoints", ck, "--coarse-lora", lora, "-o", lora], "coarse lora"),
        # the model's external data file would land on a checkpoint
        (["--codec", ck / "codec.pth", "--coarse", ck / "coarse.pth", "--c2f", ck / "c2f.pth",
          "-o", ck / "c2f.pth"], "c2f"),
    ]
    data_twin = tmp_path / "x.onnx.data"
    data_twin.symlink_to(ck / "coarse.pth")
    cases.append((["--checkpoints", ck, "-o", tmp_path / "x.onnx"], "coarse"))
    before = snapshot(tmp_path)
    for extra, what in cases:
        rc, _, err = run_main(capsys, "build", *extra)
        one_line_error(err, rc, 1, "refusing to overwrite", what)
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------------------------
# 5. damaged or mismatched checkpoints are refused


def _flip_bytes_inside_largest_member(path: Path, count: int = 200) -> None:
    with zipfile.ZipFile(path) as z:
        info = max(z.infolist(), key=lambda i: i.compress_size)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(f.read(4), "<u2")
        start = info.header_offset + 30 + int(name_len) + int(extra_len) + info.compress_size // 3
        f.seek(start)
        data = bytearray(f.read(count))
        f.seek(start)
        f.write(bytes(b ^ 0x5A for b in data))


def _damage(tmp_path: Path, ck: Path, case: str) -> tuple[list, str]:
    import torch

    if case == "flipped_bytes":
        _flip_bytes_inside_largest_member(ck / "coarse.pth")
        return [], "damaged (checksum error"
    if case == "nan_weights":
        data = torch.load(ck / "coarse.pth", weights_only=True)
        key = next(k for k, v in data["state_dict"].items() if v.is_floating_point() and v.ndim == 2)
        data["state_dict"][key][0, 0] = float("nan")
        torch.save(data, ck / "coarse.pth")
        return [], f"tensor '{key}' holds NaN"
    if case == "c2f_lora_with_metadata_as_coarse":
        data = torch.load(ck / "c2f.pth", weights_only=True)
        lora = {k: v for k, v in data["state_dict"].items() if k.endswith(("lora_A", "lora_B"))}
        torch.save({"state_dict": lora, "metadata": data["metadata"]}, tmp_path / "c2f-lora.pth")
        return ["--coarse-lora", tmp_path / "c2f-lora.pth"], "is a LoRA of another model (n_codebooks=14"
    if case == "c2f_lora_fewer_layers_as_coarse":
        # as the released models: same width, the c2f model has fewer layers than the coarse one
        from vampnet_onnx.builder.synthetic import TINY_C2F, TINY_CODEC, TINY_COARSE, write_random_checkpoints

        write_random_checkpoints(ck, TINY_CODEC, {**TINY_COARSE, "n_layers": 3}, TINY_C2F)
        data = torch.load(ck / "c2f.pth", weights_only=True)
        lora = {k: v for k, v in data["state_dict"].items() if k.endswith(("lora_A", "lora_B"))}
        torch.save(lora, tmp_path / "c2f-lora.pth")
        return ["--coarse-lora", tmp_path / "c2f-lora.pth"], "2 transformer layers"
    if case == "truncated":
        raw = (ck / "coarse.pth").read_bytes()
        (ck / "coarse.pth").write_bytes(raw[: len(raw) // 2])
        return [], "truncated"
    if case == "pickled_object":
        data = torch.load(ck / "coarse.pth", weights_only=True)
        data["metadata"]["extra"] = NotPlainData()
        torch.save(data, ck / "coarse.pth")
        return [], "not plain data"
    raise AssertionError(case)


class NotPlainData:
    """A class a checkpoint must not be allowed to instantiate."""


@pytest.mark.parametrize("case", ["flipped_bytes", "nan_weights", "c2f_lora_with_metadata_as_coarse",
                                  "c2f_lora_fewer_layers_as_coarse", "truncated", "pickled_object"])
def test_damaged_or_mismatched_checkpoints_are_refused(capsys, tmp_path, case):
    ck = _tiny_checkpoints(tmp_path)
    extra, expect = _damage(tmp_path, ck, case)
    out = tmp_path / "out" / "vampnet.onnx"
    before = snapshot(tmp_path)
    rc, _, err = run_main(capsys, "build", "--checkpoints", ck, *extra, "-o", out)
    line = one_line_error(err, rc, 1, expect)
    assert "weights_only" not in line  # never tell a user to load code from a checkpoint
    assert snapshot(tmp_path) == before and not out.parent.exists()


# --------------------------------------------------------------------------------------------
# 6. MP3 in, WAV out; 7. output checks before the model runs


def test_mp3_input_wav_output(capsys, tmp_path, model_path):
    mp3 = write_music(tmp_path / "in.mp3", seconds=1.0, format="MP3", subtype="MPEG_LAYER_III")
    assert sf.info(str(mp3)).subtype == "MPEG_LAYER_III"
    # libsndfile's check_format accepts MP3 data in WAV, which it cannot write
    assert choose_subtype("WAV", "MPEG_LAYER_III", rate=44100) == "PCM_16"
    before = snapshot(tmp_path)
    out = tmp_path / "out.wav"
    rc, _, err = run_main(capsys, "vamp", mp3, "-o", out, "-m", model_path, "--seed", 1)
    assert rc == 0, err
    assert sf.info(str(out)).subtype == "PCM_16"
    after = snapshot(tmp_path)
    assert set(after) == set(before) | {"out.wav"} and after["in.mp3"] == before["in.mp3"]


def test_readonly_output_folder_is_refused_before_the_run(capsys, tmp_path, wav, model_path,
                                                           no_model_run):
    folder = readonly_folder(tmp_path)
    before = snapshot(tmp_path)
    rc, _, err = run_main(capsys, "vamp", wav, "-o", folder / "out.wav", "-m", model_path)
    one_line_error(err, rc, 1, "cannot write to the output folder")
    assert snapshot(tmp_path) == before and not (folder / "out.wav").exists()


def test_unwritable_format_is_refused_before_the_run(capsys, tmp_path, model_path, no_model_run):
    # MP3 holds at most 48 kHz and 2 channels: a 96 kHz input cannot be written as .mp3
    inp = write_music(tmp_path / "in.wav", seconds=0.5, sr=96000, subtype="PCM_24")
    before = snapshot(tmp_path)
    rc, _, err = run_main(capsys, "vamp", inp, "-o", tmp_path / "out.mp3", "-m", model_path)
    one_line_error(err, rc, 1, "cannot write", "MP3 at 96000 Hz")
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------------------------
# 8. one-line errors instead of tracebacks


@pytest.mark.parametrize("flag", ["--periodic-prompt", "--sampling-steps", "--ncc", "--seed"])
def test_integer_flags_beyond_int64(capsys, tmp_path, wav, model_path, flag):
    before = snapshot(tmp_path)
    rc, _, err = run_main(capsys, "vamp", wav, "-o", tmp_path / "o.wav", "-m", model_path,
                          flag, 2**64)
    one_line_error(err, rc, 2, flag, "64-bit integer")
    assert snapshot(tmp_path) == before


def test_model_api_refuses_out_of_range_integers(model_path):
    m = Model(model_path)
    audio = np.zeros((1, 100), np.float32)
    for value in (2**64, 2**63, -(2**63) - 1, 1e30):
        with pytest.raises(ModelError, match="out of range"):
            m.feeds(audio, periodic_prompt=value)


def test_build_into_readonly_folder(capsys, tmp_path):
    ck = _tiny_checkpoints(tmp_path)
    folder = readonly_folder(tmp_path)
    before = snapshot(tmp_path)
    rc, _, err = run_main(capsys, "build", "--checkpoints", ck, "-o", folder / "sub" / "m.onnx")
    one_line_error(err, rc, 1, "cannot write to the output folder")
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------------------------
# 10. minor messages and the demo model fallback


def test_huge_float_flag_saturates_without_warnings(model_path):
    m = Model(model_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numpy RuntimeWarning fails the test
        feed = m.feeds(np.zeros((1, 10), np.float32), prefix_s=1e300, temperature=-1e300)
    assert feed["prefix_s"] == np.finfo(np.float32).max
    assert feed["temperature"] == -np.finfo(np.float32).max


def test_huge_prefix_is_refused_cleanly(capsys, tmp_path, model_path):
    """Beyond the interface table's range the CLI says so in one line (no numpy warning, nothing
    written); the model itself would clamp it (test_huge_float_flag_saturates_without_warnings)."""
    inp = write_music(tmp_path / "in.wav", seconds=0.3, subtype="PCM_16")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        rc, _, err = run_main(capsys, "vamp", inp, "-o", tmp_path / "o.wav", "-m", model_path,
                              "--prefix-s", "1e300", "--seed", 1)
    assert rc == 2 and err.count("\n") == 1 and "--prefix-s" in err and "1e+06" in err, err
    assert not (tmp_path / "o.wav").exists()


def test_text_npy_mask_is_not_called_pickled(capsys, tmp_path, wav, model_path):
    mask = tmp_path / "m.npy"
    mask.write_text("1 1 1 0\n0 1 1 1\n")
    before = snapshot(tmp_path)
    rc, _, err = run_main(capsys, "vamp", wav, "-o", tmp_path / "o.wav", "-m", model_path,
                          "--mask-from", mask)
    line = one_line_error(err, rc, 1, "not a NumPy .npy or .npz file")
    assert "pickle" not in line
    assert snapshot(tmp_path) == before


def test_build_says_it_creates_the_output_folder(capsys, tmp_path, monkeypatch):
    """The folder is created (and said so) just before the export; a build that fails after it
    removes the folder again. Here the export is made to fail, to keep the test short."""
    import vampnet_onnx.builder.build as build_module

    def stop(*a, **k):
        raise ValueError("stopped by the test")

    monkeypatch.setattr(build_module, "export_components", stop)
    ck = _tiny_checkpoints(tmp_path)
    out = tmp_path / "new" / "deeper" / "m.onnx"
    before = snapshot(tmp_path)
    rc, stdout, err = run_main(capsys, "build", "--checkpoints", ck, "-o", out)
    one_line_error(err, rc, 1, "stopped by the test")
    assert f"creating the output folder {out.parent}" in stdout
    assert snapshot(tmp_path) == before and not (tmp_path / "new").exists()


def test_demo_model_is_the_fallback(capsys, tmp_path, wav, model_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out.wav"
    rc, _, err = run_main(capsys, "vamp", wav, "-o", out)
    one_line_error(err, rc, 1, "model not found: artifacts/vampnet.onnx", "vampnet-onnx demo")
    assert not out.exists()
    demo = tmp_path / DEMO_MODEL
    demo.parent.mkdir(parents=True)
    shutil.copy(model_path, demo)
    rc, stdout, err = run_main(capsys, "vamp", wav, "-o", out, "--seed", 1)
    assert rc == 0, err
    assert f"using the demo model {DEMO_MODEL}" in stdout and "RANDOM weights" in stdout
    assert out.exists()


# --------------------------------------------------------------------------------------------
# fuzz: random shapes and values for every scalar input, in a subprocess


def test_fuzz_model_inputs(model_path):
    """40 seeded random cases (about 3 minutes on the tiny model, most of it the slowest
    rates resampled, stretched and shifted; more cases ran in earlier sessions, the suite's time is
    CI's limit): no crash, no hang, no NaN/Inf in any output, outputs of
    the expected shapes."""
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("fuzz_model.py")),
                           str(model_path), "40", "20260101"], env=env_with_repo(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("ok 40")
