"""Progress with an estimate of the time left, from this run's work and this machine's rate.

Work model: a run's cost grows with the seconds of audio it generates and with the passes over
them, so one run counts

    units = rows × seconds × stretch × (coarse steps × feedback steps + c2f steps + CODEC_STEPS)

(``work_units``). The rate, seconds per unit, is the last run's on this machine: kept in a small
JSON file per model (its path, size and modification time) under the user's cache folder
(``$XDG_CACHE_HOME/vampnet-onnx``, else ``~/.cache/vampnet-onnx``), one entry per thread count.
The first run of a model with a thread count has no estimate (elapsed time only) and records the
rate for the next. ``benchmarks/eta.py`` measures how far the estimate lands from the actual time.

``Bar`` draws on stderr when it is a terminal (elapsed, estimated time left, a bar) and ends with
one line giving the actual time beside the estimate; off a terminal it writes nothing, and the
caller ends with one line holding ``Bar.summary`` (`vamp`: its ``elapsed:`` line on stdout).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from .paths import model_files

CODEC_STEPS = 2.0
"""The codec's encode and decode, and the mask and onset work, counted as this many sampling
steps (roughly what the tiny and the real-size models measure; see docs/performance.md)."""


def work_units(seconds: float, *, rows: int = 1, sampling_steps: int = 1, c2f_sampling_steps: int = 1,
               feedback_steps: int = 1, time_stretch_factor: int = 1, **_ignored) -> float:
    """The work of one run (see the module docstring); other controls do not change it."""
    steps = sampling_steps * feedback_steps + c2f_sampling_steps + CODEC_STEPS
    return float(rows * seconds * time_stretch_factor * steps)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vampnet-onnx"


class RateCache:
    """The last measured seconds per work unit of one model, per thread count."""

    def __init__(self, model: str | os.PathLike, threads: int | None) -> None:
        parts = []
        for f in model_files(model):
            with contextlib.suppress(OSError):
                st = f.stat()
                parts.append(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}")
        key = hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
        self.file = cache_dir() / f"rate-{key}.json"
        self.threads = str(threads or 0)

    def _read(self) -> dict:
        try:
            data = json.loads(self.file.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self) -> float | None:
        value = self._read().get(self.threads)
        return float(value) if isinstance(value, (int, float)) and value > 0 else None

    def put(self, seconds_per_unit: float) -> None:
        """Record the rate (atomically; a cache that cannot be written is no error)."""
        if not seconds_per_unit > 0:
            return
        data = self._read()
        data[self.threads] = seconds_per_unit
        with contextlib.suppress(OSError):
            self.file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".rate-", dir=self.file.parent)
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(data, f)
                os.replace(tmp, self.file)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


def duration_text(s: float) -> str:
    s = max(0.0, s)
    if s < 60:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    m, s = divmod(int(round(s)), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


class Bar:
    """Elapsed and estimated remaining time on ``stream`` (default stderr).

    ``start(estimate_s)`` (None: no estimate), then ``bar(elapsed_s)`` as often as wanted, then
    ``finish(actual_s)``. ``quiet``: draw nothing and write no end line (the estimate is still
    kept: ``batch``'s workers)."""

    WIDTH = 24

    def __init__(self, label: str = "vamp", stream: TextIO | None = None, quiet: bool = False) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.terminal = not quiet and bool(getattr(self.stream, "isatty", lambda: False)())
        self.estimate: float | None = None
        self.drawn = False

    def start(self, estimate_s: float | None) -> None:
        self.estimate = estimate_s

    def line(self, elapsed: float, done: str = "") -> str:
        if self.estimate is None:
            return f"{self.label}: {duration_text(elapsed)} elapsed (no estimate yet: the first run records this machine's rate){done}"
        frac = min(1.0, elapsed / self.estimate) if self.estimate > 0 else 1.0
        filled = int(round(self.WIDTH * frac))
        left = self.estimate - elapsed
        when = f"about {duration_text(left)} left" if left > 0 else f"{duration_text(-left)} over the estimate"
        return f"{self.label} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {duration_text(elapsed)} elapsed, {when}{done}"

    def __call__(self, elapsed: float) -> None:
        if self.terminal:
            self.stream.write("\r" + self.line(elapsed) + "\033[K")
            self.stream.flush()
            self.drawn = True

    def clear(self) -> None:
        if self.drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.drawn = False

    def summary(self, actual: float) -> str:
        """The actual time beside the estimate: '31.8 s, estimated 32 s, +1 %'."""
        if self.estimate is None:
            return f"{duration_text(actual)}, no estimate (first run with this model and thread count)"
        off = 100.0 * (self.estimate - actual) / actual if actual > 0 else 0.0
        return f"{duration_text(actual)}, estimated {duration_text(self.estimate)}, {off:+.0f} %"

    def finish(self, actual: float) -> None:
        """On a terminal the bar becomes one line with the actual time. Off a terminal nothing
        was drawn and nothing is written: the caller's own last line carries ``summary`` (stderr
        stays free for a one-line error)."""
        if self.terminal:
            self.clear()
            self.stream.write(f"{self.label}: {self.summary(actual)}\n")
            self.stream.flush()
