"""``vampnet-onnx batch IN_DIR OUT_DIR``: ``vamp`` every audio file under a folder, on Ray.

Every audio file under IN_DIR (recursively; hidden files and folders are skipped, and so is OUT_DIR
if it lies inside IN_DIR) is vamped by the very code of ``vamp`` (``Model.vamp_file``) with the same
flags, and written to the same relative path under OUT_DIR (with ``--variations N`` > 1:
NAME-1.ext ... NAME-N.ext, as ``vamp`` names them). "Audio file" = an extension soundfile can
write, since the output keeps the input's extension.

Seeds. The file at relative path REL (POSIX separators, e.g. ``drums/loop1.wav``) gets

    derive_seed(S, REL) = int.from_bytes(sha256(f"{S}:{REL}".encode()).digest()[:8], "big") >> 1

with S = ``--seed`` (default 0): a non-negative 63-bit integer that depends only on S and REL,
never on which worker ran the file or when. Each finished file's seed is printed;
``vampnet-onnx vamp IN_DIR/REL -o OUT --seed D --threads T`` (the same flags and ``--threads``)
writes the same bytes (onnxruntime's float results depend on its thread count).

Workers. Ray actors (the single model is stateless and self-contained, so any Ray worker can run
any file): each loads one onnxruntime session once, with ``--threads`` intra-op threads (default
1), and reserves that many CPUs. Without ``--ray`` a local Ray is started on this machine and shut
down at the end, also when the driver is killed (``watch_local_ray``); ``--ray ADDRESS`` joins an existing cluster (IN_DIR, OUT_DIR and the model must
then be at the same paths on every node, e.g. a shared file system, and vampnet-onnx installed
there). Ray is the optional ``cluster`` extra and is imported only here, only when ``batch`` runs.

Resumable. A file whose outputs all exist is skipped (``--overwrite`` redoes it). ``vamp`` writes
its outputs atomically (temporary file beside the destination, then a rename), so a killed run
leaves only complete outputs; a worker removes the temporary files that a killed worker left for
the file it takes up.

Faults. A file that fails (unreadable, silent, ...) is reported with its one-line reason and the
others go on. A worker process that dies is restarted by Ray and its file retried (up to
``MAX_RETRIES`` times, then that file is reported as failed). At the end: a summary (done,
skipped, failed with their reasons); exit code 1 if any file failed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import logging
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .audio import output_format
from .errors import AudioError, UsageError, VampnetError, one_line
from .flags import add_model_flags, add_seed_flag, controls, int_range
from .interface import DEFAULTS
from .model import Model, variation_paths
from .paths import DEFAULT_MODEL
from .progress import Bar, RateCache, duration_text, work_units

MAX_RETRIES = 3
"""How often a file is retried after its worker process died (Ray restarts the worker)."""



def derive_seed(seed: int, rel: str) -> int:
    """The seed of the file at relative POSIX path ``rel`` in a batch run with ``--seed seed``."""
    digest = hashlib.sha256(f"{seed}:{rel}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


# --------------------------------------------------------------------------------------------
# the plan: which files, where their outputs go, their seeds


def is_audio_name(path: Path) -> bool:
    try:
        output_format(path)
    except AudioError:
        return False
    return True


def find_inputs(in_dir: Path, out_dir: Path) -> list[str]:
    """Relative POSIX paths of the audio files under ``in_dir``, sorted (see the module doc)."""
    out_resolved = out_dir.resolve()
    found = []
    for root, dirs, files in os.walk(in_dir):
        # prune hidden folders and OUT_DIR (outputs must never become inputs of a later run)
        dirs[:] = sorted(d for d in dirs
                         if not d.startswith(".") and Path(root, d).resolve() != out_resolved)
        for name in sorted(files):
            path = Path(root, name)
            if not name.startswith(".") and is_audio_name(path):
                found.append(path.relative_to(in_dir).as_posix())
    return found


@dataclass
class Job:
    rel: str
    seed: int
    src: str
    dst: str
    outputs: list[Path]  # the audio files it writes (DST, or DST-1 ... DST-N)
    units: float = 0.0  # its work (vampnet_onnx.progress.work_units), for the time left


def plan(args: argparse.Namespace, in_dir: Path, out_dir: Path, rels: list[str]) -> list[Job]:
    """One job per file: its seed, its outputs and its work."""
    import soundfile as sf

    settings = {**DEFAULTS, **controls(args)}
    jobs = []
    for rel in rels:
        out = out_dir / rel
        try:
            seconds = sf.info(str(in_dir / rel)).duration
        except Exception:  # noqa: BLE001 - an unreadable file fails in its worker, with its reason
            seconds = 0.0
        units = work_units(seconds, rows=args.variations or 1, **settings)
        jobs.append(Job(rel, derive_seed(args.seed, rel), str(in_dir / rel), str(out),
                        variation_paths(out, args.variations or 1), units))
    return jobs


def remove_stale_temporaries(outputs: list[Path]) -> None:
    """Remove the temporary files (``.NAME.*.tmp``, as audio.AtomicOutputs names them) that a
    killed worker left beside these outputs."""
    for out in outputs:
        with contextlib.suppress(OSError):
            for tmp in out.parent.glob(f".{out.name}.*.tmp"):
                with contextlib.suppress(OSError):
                    tmp.unlink()


# --------------------------------------------------------------------------------------------
# the worker (a Ray actor: one onnxruntime session, loaded once)


class VampWorker:
    def __init__(self, model_path: str, threads: int | None) -> None:
        self.error = ""
        try:
            self.model = Model(model_path, threads=threads or None)
        except Exception as e:  # noqa: BLE001 - reported by ready(), not as a dead actor
            self.error = one_line(e)

    def ready(self) -> str:
        """'' once the session is loaded, else why it could not be."""
        return self.error

    def vamp(self, job: Job, options: dict[str, Any]) -> tuple[str, str]:
        """("done", "") or ("failed", one-line reason) for one file; ``options``: the keywords of
        ``Model.vamp_file`` that every file shares (variations and controls)."""
        if self.error:
            return "failed", self.error
        remove_stale_temporaries(job.outputs)
        try:
            # a quiet bar: no drawing in a worker, but the run's rate is recorded for the estimates
            self.model.vamp_file(job.src, job.dst, seed=job.seed, progress=Bar(quiet=True), **options)
        except Exception as e:  # noqa: BLE001 - a bad file fails alone
            known = isinstance(e, VampnetError)
            return "failed", one_line(e) if known else f"{type(e).__name__}: {one_line(e)}"
        return "done", ""


# --------------------------------------------------------------------------------------------
# running the plan on Ray


@dataclass
class Summary:
    total: int = 0
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    workers: int = 0
    startup_s: float = 0.0  # Ray and the workers' sessions ready
    work_s: float = 0.0  # from then to the last file

    @property
    def files_per_minute(self) -> float:
        n = len(self.done) + len(self.failed)
        return 60.0 * n / self.work_s if self.work_s > 0 else 0.0


def import_ray():
    try:
        import ray
    except ImportError as e:
        raise UsageError("`batch` needs Ray (the cluster extra): pip install -e .[cluster]") from e
    return ray


def start_ray(address: str | None, num_cpus: int | None = None) -> str | None:
    """Join the cluster at ``address``, or start a local Ray on this machine; quietly. Returns the
    session folder of the local Ray it started (None when it joined a cluster)."""
    ray = import_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        if address:
            ray.init(address=address, **quiet)
            return None
        context = ray.init(address="local", num_cpus=num_cpus, **quiet)
    except Exception as e:  # noqa: BLE001 - Ray raises many kinds; one line for the user
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise UsageError(f"cannot start or join {where}: {one_line(e)}") from e
    return context.address_info.get("session_dir")


# The local Ray that `batch` starts lives and dies with it: never reused by a later run. Ray ties
# its GCS, raylet and workers to the driver (they die with it, even on kill -9), but not the
# raylet's agents, which linger a minute or more after a killed driver. So a watchdog process,
# in its own session (a Ctrl-C to the terminal does not reach it), waits for the driver's end,
# however it came, and then kills every process that still holds a file of that Ray's session
# folder open.
_WATCHDOG = """
import sys
sys.stdin.buffer.read()  # returns at EOF: the driver has exited, or was killed
from vampnet_onnx.batch import kill_processes_using
kill_processes_using(sys.argv[1])
"""


def watch_local_ray(session_dir: str | None) -> None:
    """Start the watchdog for the local Ray whose session folder is ``session_dir`` (Linux: it
    reads /proc; elsewhere it does nothing)."""
    import subprocess

    if not session_dir or not Path("/proc/self/fd").is_dir():
        return
    watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, session_dir], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    _WATCHDOGS.append(watchdog)  # its stdin stays open until this process ends


_WATCHDOGS: list = []


def kill_processes_using(folder: str) -> list[int]:
    """SIGKILL every other process (of those this user may inspect) with an open file, or its
    working folder, inside ``folder``; returns their PIDs."""
    import signal

    prefix = os.path.join(os.path.realpath(folder), "")
    killed = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid() and any(
                os.path.join(path, "").startswith(prefix) for path in _open_paths(int(entry))):
            with contextlib.suppress(OSError):  # gone meanwhile
                os.kill(int(entry), signal.SIGKILL)
                killed.append(int(entry))
    return killed


def _open_paths(pid: int) -> list[str]:
    """The working folder and the targets of the open file descriptors of process ``pid``."""
    links = [f"/proc/{pid}/cwd"]
    with contextlib.suppress(OSError):
        links += [f"/proc/{pid}/fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd")]
    paths = []
    for link in links:
        with contextlib.suppress(OSError):
            paths.append(os.readlink(link))
    return paths


def run(jobs: list[Job], *, model: str, threads: int, workers: int | None, options: dict[str, Any] | None = None,
        report: Callable[[Job, str, str], None] = lambda job, status, reason: None,
        tick: Callable[[], None] = lambda: None) -> Summary:
    """Run ``jobs`` on the Ray this process is connected to, with ``options`` (keywords of
    ``Model.vamp_file``); ``report(job, status, reason)`` after each file, ``tick()`` about twice
    a second. Returns the summary (skipped stays empty: the caller leaves those out of ``jobs``)."""
    ray = import_ray()
    summary = Summary(total=len(jobs))
    t0 = time.monotonic()
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if cpus < threads:
        raise UsageError(f"--threads {threads} needs {threads} CPUs per worker; the Ray cluster has {cpus}")
    n = workers or max(1, cpus // threads)
    if n * threads > cpus:  # actors beyond the cluster's CPUs would never start
        raise UsageError(f"--workers {n} with --threads {threads} needs {n * threads} CPUs; "
                       f"the Ray cluster has {cpus}")
    n = max(1, min(n, len(jobs)))
    remote = ray.remote(num_cpus=threads, max_restarts=-1, max_task_retries=MAX_RETRIES)(VampWorker)
    actors = [remote.remote(model, threads) for _ in range(n)]
    try:
        try:
            errors = [e for e in ray.get([a.ready.remote() for a in actors]) if e]
        except ray.exceptions.RayError as e:  # e.g. a worker killed while loading the model
            raise UsageError(f"a worker could not start: {one_line(e)}") from e
        if errors:
            raise UsageError(errors[0])
        summary.workers = n
        summary.startup_s = time.monotonic() - t0
        t_work = time.monotonic()
        queue, idle, pending = deque(jobs), list(actors), {}
        while queue or pending:
            while queue and idle:  # one file per worker at a time
                actor, job = idle.pop(), queue.popleft()
                pending[actor.vamp.remote(job, options or {})] = (actor, job)
            finished, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            tick()
            for ref in finished:
                actor, job = pending.pop(ref)
                idle.append(actor)
                try:
                    status, reason = ray.get(ref)
                except ray.exceptions.RayError as e:  # its worker died MAX_RETRIES + 1 times
                    status, reason = "failed", f"worker died {MAX_RETRIES + 1} times: {one_line(e)}"
                if status == "done":
                    summary.done.append(job.rel)
                else:
                    summary.failed.append((job.rel, reason))
                report(job, status, reason)
        summary.work_s = time.monotonic() - t_work
    finally:
        for a in actors:
            with contextlib.suppress(Exception):
                ray.kill(a)
    return summary


class Progress:
    """A line per file on stdout; on stderr, a bar over the files with the time left, drawn in
    place on a terminal only (the summary line ends the run).

    The time left: the work of the files not done (``Job.units``) at the rate of the files done
    so far, or before any is done at this model's last recorded rate (``RateCache``) spread over
    the workers."""

    def __init__(self, jobs: list[Job], seconds_per_unit: float | None = None, workers: int = 1) -> None:
        self.total, self.count, self.failed = len(jobs), 0, 0
        self.units_left = sum(j.units for j in jobs)
        self.units_done = 0.0
        self.rate = seconds_per_unit / max(workers, 1) if seconds_per_unit else None
        self.t0 = time.monotonic()
        self.bar = Bar("batch")

    def left(self) -> float | None:
        elapsed = time.monotonic() - self.t0
        if self.units_done > 0:
            return self.units_left * elapsed / self.units_done
        return None if self.rate is None else max(0.0, self.units_left * self.rate - elapsed)

    def draw(self) -> None:
        if self.bar.terminal:
            elapsed = time.monotonic() - self.t0
            left = self.left()
            when = "" if left is None else f", about {duration_text(left)} left"
            width = 24
            filled = width * self.count // max(self.total, 1)
            self.bar.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.count}/{self.total} "
                                  f"({self.failed} failed) {duration_text(elapsed)} elapsed{when}\033[K")
            self.bar.stream.flush()
            self.bar.drawn = True

    def __call__(self, job: Job, status: str, reason: str) -> None:
        self.count += 1
        self.failed += status != "done"
        self.units_left -= job.units
        self.units_done += job.units
        self.clear()  # the per-file line goes where the bar was; the bar is drawn again below
        if status == "done":
            print(f"done {job.rel} (seed {job.seed})", flush=True)
        else:
            print(f"failed {job.rel}: {reason}", flush=True)
        self.draw()

    def clear(self) -> None:
        self.bar.clear()

    def finish(self) -> None:
        """Off a terminal nothing was drawn: the summary that cmd_batch prints is the end line."""
        self.clear()


# --------------------------------------------------------------------------------------------
# the command


def add_parser(sub) -> None:
    b = sub.add_parser(
        "batch", help="vamp every audio file under a folder, on Ray (needs .[cluster])",
        description="Vamp every audio file under IN_DIR (recursively) with the flags of `vamp`, "
                    "on Ray workers (one onnxruntime session each), writing the same relative "
                    "paths under OUT_DIR. Files whose outputs exist are skipped. Each file's seed "
                    "is derived from --seed and its relative path, and printed. Needs Ray: "
                    "pip install -e .[cluster]")
    b.add_argument("in_dir", metavar="IN_DIR", help="folder of audio files (searched recursively)")
    b.add_argument("out_dir", metavar="OUT_DIR", help="output folder (created if missing)")
    b.add_argument("-m", "--model", metavar="MODEL", default=DEFAULT_MODEL,
                   help=f"the .onnx model (default: {DEFAULT_MODEL})")
    add_seed_flag(b, 0, "base seed; file REL gets sha256('S:REL')[:8] >> 1 (default: 0)")
    add_model_flags(b)
    b.add_argument("--variations", type=int_range(1), default=None, metavar="N",
                   help="N variations per file: NAME-1.ext ... NAME-N.ext (default: 1)")
    b.add_argument("--threads", type=int_range(1), default=1, metavar="T",
                   help="onnxruntime threads (= Ray CPUs) per worker (default: 1)")
    b.add_argument("--workers", type=int_range(1), default=None, metavar="N",
                   help="number of workers (default: the cluster's CPUs / --threads)")
    b.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="join this Ray cluster (e.g. ray://head:10001 or auto) instead of "
                        "starting a local Ray on this machine")
    b.add_argument("--overwrite", action="store_true",
                   help="redo files whose outputs exist (default: skip them)")
    b.set_defaults(func=cmd_batch)


def cmd_batch(args: argparse.Namespace) -> int:
    in_dir, out_dir = Path(args.in_dir).absolute(), Path(args.out_dir).absolute()
    if not in_dir.is_dir():
        raise UsageError(f"input folder not found: {in_dir}")
    if in_dir.resolve() == out_dir.resolve():
        raise UsageError("IN_DIR and OUT_DIR are the same folder: outputs would replace the inputs")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"OUT_DIR is not a folder: {out_dir}")
    if not Path(args.model).is_file():
        raise UsageError(f"model not found: {args.model} (build one with `vampnet-onnx build`, "
                       f"or pass -m MODEL)")
    import_ray()  # fail early, before any work, if Ray is missing

    rels = find_inputs(in_dir, out_dir)
    if not rels:
        raise UsageError(f"no audio files under {in_dir}")
    jobs = plan(args, in_dir, out_dir, rels)
    todo = [j for j in jobs if args.overwrite or not all(p.exists() for p in j.outputs)]
    skipped = [j.rel for j in jobs if j not in todo]
    if skipped:
        print(f"skipping {len(skipped)} of {len(jobs)} files whose outputs exist "
              f"(--overwrite to redo them)")

    summary = Summary(total=len(jobs))
    t0 = time.monotonic()
    if todo:
        for job in todo:
            for p in job.outputs:
                p.parent.mkdir(parents=True, exist_ok=True)
        ray = import_ray()
        started = not ray.is_initialized()
        if started:
            want = (args.workers or 0) * args.threads
            watch_local_ray(start_ray(args.ray, num_cpus=max(os.cpu_count() or 1, want) if not args.ray else None))
        n_workers = args.workers or max(1, (os.cpu_count() or 1) // args.threads)
        progress = Progress(todo, RateCache(args.model, args.threads).get(), min(n_workers, len(todo)))
        options = {"variations": args.variations, **controls(args)}
        try:
            summary = run(todo, model=str(Path(args.model).resolve()), threads=args.threads,
                          workers=args.workers, options=options, report=progress, tick=progress.draw)
        except KeyboardInterrupt:
            progress.clear()
            print("interrupted: outputs written so far are complete; run the same command again "
                  "to resume", file=sys.stderr)
            raise
        finally:
            progress.finish()
            if started:
                ray.shutdown()
        summary.total = len(jobs)
    summary.skipped = skipped

    rate = ""
    if summary.workers:
        plural = "s" if summary.workers != 1 else ""
        rate = (f" ({summary.workers} worker{plural}, {summary.files_per_minute:.1f} files/min "
                f"after {summary.startup_s:.1f} s of start-up)")
    print(f"batch: {summary.total} files: {len(summary.done)} done, {len(summary.skipped)} skipped, "
          f"{len(summary.failed)} failed in {time.monotonic() - t0:.1f} s{rate}")
    if summary.failed:
        print("failed:")
        for rel, reason in summary.failed:
            print(f"  {rel}: {reason}")
        raise UsageError(f"{len(summary.failed)} of {summary.total} files failed (listed above); "
                       f"run the same command again to retry them")
    return 0
