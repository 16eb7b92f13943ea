"""Reliability over time and against the machine: a full disk, concurrent callers, a killed or
interrupted `batch` driver (docs/reliability.md lists them; the soak is benchmarks/soak.py).

Every command runs as a user runs it, in its own process (`python -m vampnet_onnx ...`), on the
real tiny model (conftest ``model_path``). A full disk is a small tmpfs mounted by the test where
this machine allows it (root), else a folder whose writes fail with ENOSPC past a capacity,
injected into every Python process of the command (``sitecustomize`` on PYTHONPATH, which Ray's
workers inherit).
"""

from __future__ import annotations

import contextlib
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

from conftest import as_a_terminal_starts_it
from vampnet_onnx import batch
from vampnet_onnx.cli import main
from vampnet_onnx.model import Model, run_in_progress

REPO = Path(__file__).resolve().parents[1]
SEED = 5
CLIPS = [f"c{k}.wav" for k in range(5)]  # 0.5 s each, 16-bit mono at 44.1 kHz: 44 KB outputs


def write_clip(path: Path, k: int, seconds: float = 0.5) -> None:
    t = np.arange(int(44100 * seconds)) / 44100
    tone = 0.3 * np.sin(2 * np.pi * (180 + 70 * k) * t) + 0.02 * np.random.default_rng(k).standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone, 44100, subtype="PCM_16")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    for k, rel in enumerate(CLIPS):
        write_clip(root / rel, k)
    return root


@pytest.fixture(scope="module")
def references(tmp_path_factory, clips, model_path) -> dict[str, bytes]:
    """`vamp` on each clip with the seed `batch --seed SEED` gives it (and batch's --threads 1)."""
    out = tmp_path_factory.mktemp("references")
    refs = {}
    for rel in CLIPS:
        seed = batch.derive_seed(SEED, rel)
        assert main(["vamp", str(clips / rel), "-o", str(out / rel), "-m", str(model_path),
                     "--seed", str(seed), "--threads", "1"]) == 0
        refs[rel] = (out / rel).read_bytes()
    return refs


def files_under(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``, hidden and temporary ones included."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def command(*argv) -> list[str]:
    return [sys.executable, "-m", "vampnet_onnx", *map(str, argv)]


def batch_command(in_dir: Path, out_dir: Path, model: Path, *extra) -> list[str]:
    return command("batch", in_dir, out_dir, "-m", model, "--seed", SEED, *extra)


def one_line_error(stderr: str, *contains: str) -> str:
    line = stderr.strip()
    assert "\n" not in line and "Traceback" not in line, stderr
    assert line.startswith("vampnet-onnx: error: "), stderr
    for text in contains:
        assert text in line, line
    return line


# --------------------------------------------------------------------------------------------
# a full disk


_INJECT_ENOSPC = '''
"""Test-only: writes under $VAMPNET_ONNX_TEST_DISK=DIR:CAPACITY fail with ENOSPC once the files
under DIR would exceed CAPACITY bytes (what fits is written first, as on a real disk)."""
import builtins, errno, os

_DIR, _CAPACITY = os.environ["VAMPNET_ONNX_TEST_DISK"].rsplit(":", 1)
_open = builtins.open


def _used():
    return sum(os.path.getsize(os.path.join(root, n)) for root, _, names in os.walk(_DIR) for n in names)


class _Limited:
    def __init__(self, f):
        self._f = f

    def write(self, data):
        room = int(_CAPACITY) - _used()
        if len(data) > room:
            self._f.write(bytes(data)[:max(room, 0)])
            self._f.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def open(file, mode="r", *args, **kwargs):
    f = _open(file, mode, *args, **kwargs)
    if (isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+")
            and os.path.realpath(file).startswith(_DIR + os.sep)):
        return _Limited(f)
    return f


builtins.open = open
'''


@contextlib.contextmanager
def nearly_full_disk(folder: Path, free: int, contents: dict[str, bytes] | None = None):
    """``folder`` holding ``contents`` (name -> bytes) and a filler, on a file system with about
    ``free`` bytes left; yields the environment that commands writing there must run with."""
    folder.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                                 capture_output=True).returncode == 0
    except OSError:  # no mount command
        mounted = False
    try:
        for name, data in (contents or {}).items():
            (folder / name).write_bytes(data)
        if mounted:
            stat = os.statvfs(folder)
            (folder / "filler").write_bytes(b"\xff" * (stat.f_bavail * stat.f_frsize - free))
            yield dict(os.environ)
        else:
            (folder / "filler").write_bytes(b"\xff" * 4096)
            inject = folder.parent / "inject-enospc"
            inject.mkdir()
            (inject / "sitecustomize.py").write_text(_INJECT_ENOSPC)
            capacity = sum(p.stat().st_size for p in folder.iterdir()) + free
            yield dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(inject), os.environ.get("PYTHONPATH")])),
                       VAMPNET_ONNX_TEST_DISK=f"{folder.resolve()}:{capacity}")
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.mark.parametrize("fails", ["the audio", "the codes"])
def test_vamp_on_a_full_disk_writes_nothing_and_says_so(fails, clips, model_path, tmp_path):
    clip = clips / CLIPS[0]
    # an earlier run's outputs, then the space left: none at all, or the audio's but not the codes'
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    assert main(["vamp", str(clip), "-o", str(earlier / "out.wav"), "--save-codes", str(earlier / "codes.npz"),
                 "-m", str(model_path), "--seed", "1"]) == 0
    free = 4096 if fails == "the audio" else (earlier / "out.wav").stat().st_size + 8192
    contents = {name: (earlier / name).read_bytes() for name in ("out.wav", "codes.npz")}
    with nearly_full_disk(tmp_path / "disk", free, contents) as env:
        disk = tmp_path / "disk"
        before = files_under(disk)
        r = subprocess.run(command("vamp", clip, "-o", disk / "out.wav", "--save-codes", disk / "codes.npz",
                                   "-m", model_path, "--seed", 2), cwd=REPO, env=env, capture_output=True, text=True)
        assert r.returncode == 1
        what = "out.wav" if fails == "the audio" else "codes.npz"
        one_line_error(r.stderr, f"cannot write {disk / what}", "No space left on device", "free some space")
        assert files_under(disk) == before  # no temporary file; the earlier outputs untouched


def test_batch_on_a_full_disk_reports_the_file_that_failed(clips, references, model_path, tmp_path):
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    rels = CLIPS[:3]
    for rel in rels:
        shutil.copy(clips / rel, in_dir / rel)
    size = len(references[rels[0]])
    with nearly_full_disk(tmp_path / "disk", 2 * size + size // 4) as env:  # two of three fit
        out = tmp_path / "disk"
        filler = (out / "filler").read_bytes()
        r = subprocess.run(batch_command(in_dir, out, model_path, "--workers", "2"), cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=600)
        written = files_under(out)
    assert r.returncode == 1, r.stdout + r.stderr
    one_line_error(r.stderr, "files failed")
    failed = [rel for rel in rels if f"  {rel}: cannot write {out / rel}: No space left on device" in r.stdout]
    done = [rel for rel in rels if f"done {rel} (seed" in r.stdout]
    assert failed and done and sorted(failed + done) == sorted(rels), r.stdout
    assert f"{len(done)} done, 0 skipped, {len(failed)} failed" in r.stdout
    assert written == {"filler": filler, **{rel: references[rel] for rel in done}}  # complete or absent


# --------------------------------------------------------------------------------------------
# concurrent callers


def test_one_model_from_four_threads_equals_sequential_runs(model_path):
    model = Model(model_path, threads=1)
    rng = np.random.default_rng(0)
    cases = [(0.1 * rng.standard_normal((rows, int(44100 * seconds)))).astype(np.float32)
             for rows, seconds in ((1, 0.5), (2, 0.3), (1, 0.8), (3, 0.2))]
    settings = [dict(seed=k + 1, temperature=0.7 + 0.1 * k, periodic_prompt=k + 2) for k in range(4)]
    sequential = [model.run(audio, **s) for audio, s in zip(cases, settings)]

    results: dict[int, dict] = {}
    start = threading.Barrier(4)

    def caller(k: int) -> None:
        start.wait()
        results[k] = model.run(cases[k], **settings[k])

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert sorted(results) == [0, 1, 2, 3] and not run_in_progress()
    for k in range(4):
        assert results[k].keys() == sequential[k].keys()
        for name in sequential[k]:
            assert np.array_equal(results[k][name], sequential[k][name]), (k, name)


def test_releasing_the_arena_after_each_run_changes_no_output(model_path):
    kept, released = Model(model_path, threads=1), Model(model_path, threads=1, release_memory=True)
    rng = np.random.default_rng(1)
    for rows, seconds, seed in ((2, 0.6, 3), (1, 0.3, 4)):  # the larger run first: its arena is freed
        audio = (0.1 * rng.standard_normal((rows, int(44100 * seconds)))).astype(np.float32)
        a, b = kept.run(audio, seed=seed), released.run(audio, seed=seed)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_two_vamp_processes_writing_one_path_leave_one_complete_file(clips, model_path, tmp_path):
    clip = clips / CLIPS[1]
    expected = {}
    for seed in (1, 2):
        assert main(["vamp", str(clip), "-o", str(tmp_path / f"ref{seed}.wav"), "-m", str(model_path),
                     "--seed", str(seed)]) == 0
        expected[seed] = (tmp_path / f"ref{seed}.wav").read_bytes()
    assert expected[1] != expected[2]

    out = tmp_path / "shared" / "out.wav"
    out.parent.mkdir()
    procs = [subprocess.Popen(command("vamp", clip, "-o", out, "-m", model_path, "--seed", seed), cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert files_under(out.parent) in ({"out.wav": expected[1]}, {"out.wav": expected[2]})


# --------------------------------------------------------------------------------------------
# a killed or interrupted batch driver


def process_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, state, start time) of every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            table[int(entry)] = (int(fields[1]), fields[0], fields[19])
    return table


def descendants(pid: int) -> dict[int, str]:
    """pid -> start time of every living descendant of ``pid``."""
    table = process_table()
    found = {}
    for p in table:
        q = p
        while q in table and q not in (pid, 0, 1):
            q = table[q][0]
        if q == pid and p != pid:
            found[p] = table[p][2]
    return found


def still_running(processes: dict[int, str]) -> list[int]:
    """Those of ``processes`` that still run (the same start time; zombies have ended)."""
    table = process_table()
    return [p for p, start in processes.items() if p in table and table[p][2] == start and table[p][1] != "Z"]


def command_line(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return ""


def start_batch(in_dir: Path, out: Path, model: Path) -> tuple[subprocess.Popen, dict[int, str], list[str]]:
    """`batch` in its own process group (as a terminal runs it); returns once a file is done, with
    the driver's descendants (its local Ray, workers included) and the lines printed so far."""
    proc = subprocess.Popen(batch_command(in_dir, out, model, "--workers", "1"), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=as_a_terminal_starts_it)
    lines = []
    while not lines or not lines[-1].startswith("done "):
        line = proc.stdout.readline()
        assert line, f"batch ended before a file was done: {proc.stderr.read()}"
        lines.append(line)
    return proc, descendants(proc.pid), lines


def test_killed_driver_then_the_same_command_finishes_the_rest(clips, references, model_path, tmp_path):
    out = tmp_path / "out"
    proc, ray_processes, _ = start_batch(clips, out, model_path)
    assert any("raylet" in command_line(p) for p in ray_processes)  # the snapshot holds its Ray
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    # the local Ray of the killed driver is cleaned up, not left for the next run to reuse
    deadline = time.monotonic() + 30
    while still_running(ray_processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert still_running(ray_processes) == []
    done = {rel for rel in CLIPS if (out / rel).exists()}
    assert done and len(done) < len(CLIPS)  # killed mid-run
    mtimes = {rel: (out / rel).stat().st_mtime_ns for rel in done}

    r = subprocess.run(batch_command(clips, out, model_path, "--workers", "1"), cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(CLIPS) - len(done)} done, {len(done)} skipped, 0 failed" in r.stdout
    assert files_under(out) == references  # every output complete, no temporary file left
    assert {rel: (out / rel).stat().st_mtime_ns for rel in done} == mtimes  # not redone
    assert still_running(ray_processes) == []


def test_ctrl_c_stops_the_workers_and_exits_130(clips, references, model_path, tmp_path):
    out = tmp_path / "out"
    proc, ray_processes, _ = start_batch(clips, out, model_path)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the foreground group
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    assert stderr.strip().splitlines()[-1] == "vampnet-onnx: error: interrupted (SIGINT)"
    assert "Traceback" not in stdout + stderr
    written = files_under(out)
    assert written and written == {rel: references[rel] for rel in written}  # only complete files
    deadline = time.monotonic() + 30
    while still_running(ray_processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert still_running(ray_processes) == []
