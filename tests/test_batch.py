"""``vampnet-onnx batch`` on a local Ray (2 CPUs), against ``vamp`` run on each file.

The model is the real tiny model (conftest ``tiny``; VAMPNET_ONNX_TEST_MODEL overrides it). The
first test runs the command in a subprocess, where it starts its own local Ray (the default
without --ray); the other runs share one local Ray started once for this module.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import ray
from conftest import runtime_only
from vampnet_onnx import batch
from vampnet_onnx.cli import main

REPO = Path(__file__).resolve().parents[1]
SEED = 11
# relative path -> (sample rate, channels, subtype): nested folders, several formats. No float WAV
# or OGG: libsndfile writes a timestamp (PEAK chunk) or a random stream serial into those, so two
# `vamp` runs on them differ in those bytes (not in the samples).
CLIPS = {
    "a.wav": (44100, 1, "PCM_16"),
    "drums/b.flac": (22050, 2, "PCM_24"),
    "drums/fills/c.wav": (48000, 1, "PCM_24"),
    "keys/d.aiff": (44100, 2, "PCM_16"),
    "keys/e.wav": (16000, 1, "PCM_16"),
    "keys/pads/f.flac": (44100, 1, "PCM_16"),
}


@pytest.fixture(scope="module")
def model(request) -> Path:
    override = os.environ.get("VAMPNET_ONNX_TEST_MODEL")
    return Path(override) if override else Path(request.getfixturevalue("tiny").path)


def write_clip(path: Path, rate: int, channels: int, subtype: str, k: int) -> None:
    rng = np.random.default_rng(k)
    t = np.arange(int(rate * (0.5 + 0.05 * k))) / rate
    tone = np.sin(2 * np.pi * (150 + 90 * k) * t)[:, None] * (0.3 + 0.1 * np.arange(channels))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone + 0.02 * rng.standard_normal((t.size, channels)), rate, subtype=subtype)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """IN_DIR: the six clips, plus files batch must ignore (not audio, hidden)."""
    root = tmp_path_factory.mktemp("clips")
    for k, (rel, spec) in enumerate(CLIPS.items()):
        write_clip(root / rel, *spec, k)
    (root / "notes.txt").write_text("not audio")
    write_clip(root / ".hidden.wav", 44100, 1, "PCM_16", 9)
    return root


@pytest.fixture(scope="module")
def references(tmp_path_factory, clips, model) -> dict[str, bytes]:
    """`vamp` run on each file with its derived seed (and batch's default --threads 1)."""
    out = tmp_path_factory.mktemp("references")
    refs = {}
    for rel in CLIPS:
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        seed = batch.derive_seed(SEED, rel)
        rc = main(["vamp", str(clips / rel), "-o", str(dest), "-m", str(model),
                   "--seed", str(seed), "--threads", "1"])
        assert rc == 0
        refs[rel] = dest.read_bytes()
    return refs


@pytest.fixture(scope="module")
def local_ray():
    batch.start_ray(None, num_cpus=2)
    yield
    ray.shutdown()


def files_under(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def file_mtimes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns
            for p in folder.rglob("*") if p.is_file()}


def batch_args(in_dir: Path, out_dir: Path, model: Path, *extra: str) -> list[str]:
    return ["batch", str(in_dir), str(out_dir), "-m", str(model), "--seed", str(SEED), *extra]


# --------------------------------------------------------------------------------------------
# no Ray needed


def test_derived_seed_is_sha256_of_seed_and_path():
    expected = int.from_bytes(hashlib.sha256(b"11:drums/b.flac").digest()[:8], "big") >> 1
    assert batch.derive_seed(11, "drums/b.flac") == expected
    seeds = {batch.derive_seed(s, rel) for s in (0, 11, -5) for rel in CLIPS}
    assert len(seeds) == 3 * len(CLIPS)  # depends on both the seed and the path
    assert all(0 <= s < 2**63 for s in seeds)


def test_find_inputs_skips_hidden_non_audio_and_the_output_folder(clips, tmp_path):
    in_dir = tmp_path / "in"
    shutil.copytree(clips, in_dir)
    out_dir = in_dir / "out"  # OUT_DIR inside IN_DIR: its files must not become inputs
    write_clip(out_dir / "a.wav", 44100, 1, "PCM_16", 0)
    write_clip(in_dir / ".cache" / "x.wav", 44100, 1, "PCM_16", 0)
    assert batch.find_inputs(in_dir, out_dir) == sorted(CLIPS)


def test_usage_errors_are_one_line(clips, model, tmp_path, capsys, monkeypatch):
    def error_line(argv):
        rc = main(argv)
        err = capsys.readouterr().err.strip()
        assert rc == 1 and "\n" not in err and err.startswith("vampnet-onnx: error: "), err
        return err

    assert "same folder" in error_line(batch_args(clips, clips, model))
    assert "not found" in error_line(batch_args(tmp_path / "missing", tmp_path / "o", model))
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed
    assert ".[cluster]" in error_line(batch_args(clips, tmp_path / "o", model))


def test_ray_address_joins_that_cluster(clips, model, tmp_path, capsys, monkeypatch):
    calls = []

    def fake_init(**kwargs):
        calls.append(kwargs)
        raise ConnectionError("no cluster there")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    assert main(batch_args(clips, tmp_path / "o", model, "--ray", "head:6379")) == 1
    assert [c["address"] for c in calls] == ["head:6379"]
    err = capsys.readouterr().err
    assert err == "vampnet-onnx: error: cannot start or join the Ray cluster at head:6379: " \
                  "no cluster there\n"


def test_progress_bar_only_on_a_terminal(capsys, monkeypatch):
    job = batch.Job("a.wav", 5, "a.wav", "out/a.wav", [], units=1.0)
    batch.Progress([job, job])(job, "done", "")
    assert capsys.readouterr().err == ""  # not a terminal: per-file lines only
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    bar = batch.Progress([job, job])
    bar(job, "done", "")
    bar(batch.Job("b.wav", 6, "b.wav", "out/b.wav", [], units=1.0), "failed", "cannot read it")
    bar.clear()
    captured = capsys.readouterr()
    assert captured.out == "done a.wav (seed 5)\nfailed b.wav: cannot read it\n"
    assert "1/2 (0 failed" in captured.err and "2/2 (1 failed" in captured.err
    assert "left" in captured.err.split("1/2")[1]  # after one file: the time left, at its rate
    assert captured.err.endswith("\r\033[K")  # cleared at the end


def test_vamp_and_info_never_import_ray(model, clips, tmp_path):
    code = runtime_only(("torch", "onnx", "onnxscript", "ray"))
    for argv in (["info", str(model)],
                 ["vamp", str(clips / "a.wav"), "-o", str(tmp_path / "o.wav"), "-m", str(model)]):
        r = subprocess.run([sys.executable, "-c", code, *argv], cwd=REPO, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr


# --------------------------------------------------------------------------------------------
# on Ray


def test_batch_equals_vamp_then_skips_then_redoes_one(clips, references, model, tmp_path,
                                                      request, capsys):
    out = tmp_path / "out"
    # the command as a user runs it: no --ray, so it starts (and stops) its own local Ray
    r = subprocess.run([sys.executable, "-m", "vampnet_onnx",
                        *batch_args(clips, out, model, "--workers", "2")],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert files_under(out) == references  # byte-identical, and nothing else written
    for rel in CLIPS:
        assert f"done {rel} (seed {batch.derive_seed(SEED, rel)})" in r.stdout
    assert "6 done, 0 skipped, 0 failed" in r.stdout

    # a second run skips everything (and needs no Ray for it)
    mtimes = file_mtimes(out)
    assert main(batch_args(clips, out, model)) == 0
    assert "0 done, 6 skipped, 0 failed" in capsys.readouterr().out
    assert file_mtimes(out) == mtimes

    # one output deleted: only that file is redone
    request.getfixturevalue("local_ray")
    (out / "drums/fills/c.wav").unlink()
    assert main(batch_args(clips, out, model)) == 0
    text = capsys.readouterr().out
    assert "1 done, 5 skipped, 0 failed" in text and "done drums/fills/c.wav" in text
    assert files_under(out) == references
    redone = file_mtimes(out)
    assert redone.pop("drums/fills/c.wav") > mtimes.pop("drums/fills/c.wav")
    assert redone == mtimes


def _descendants_running(title: str) -> list[int]:
    """PIDs of this process's descendants whose command line (Ray's process title) starts with
    ``title``."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            parents[int(entry)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmd)
    found = []
    for pid, (_, cmd) in parents.items():
        if not cmd.startswith(title):
            continue
        p = pid
        while p in parents and p != os.getpid():
            p = parents[p][0]
        if p == os.getpid():
            found.append(pid)
    return found


def test_killed_worker_is_retried_with_identical_outputs(clips, references, model, local_ray,
                                                         tmp_path, capsys):
    out = tmp_path / "out"
    killed: list[int] = []
    stop = threading.Event()

    def killer() -> None:  # kill the first worker seen in the middle of a file
        while not stop.is_set() and not killed:
            for pid in _descendants_running("ray::VampWorker.vamp"):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                break
            time.sleep(0.02)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        rc = main(batch_args(clips, out, model, "--workers", "2"))
    finally:
        stop.set()
        thread.join()
    text = capsys.readouterr().out
    assert killed, "no worker was caught mid-file"
    assert rc == 0, text
    assert "6 done, 0 skipped, 0 failed" in text
    assert files_under(out) == references  # no temporary file left, every output complete


def test_corrupt_file_fails_alone(clips, references, model, local_ray, tmp_path, capsys):
    in_dir, out = tmp_path / "in", tmp_path / "out"
    for rel in ("a.wav", "drums/b.flac"):
        (in_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(clips / rel, in_dir / rel)
    (in_dir / "drums/broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")

    rc = main(batch_args(in_dir, out, model))
    captured = capsys.readouterr()
    assert rc == 1
    assert captured.err.strip().startswith("vampnet-onnx: error: 1 of 3 files failed")
    assert "2 done, 0 skipped, 1 failed" in captured.out
    assert "  drums/broken.wav: cannot read" in captured.out
    assert files_under(out) == {rel: references[rel] for rel in ("a.wav", "drums/b.flac")}
