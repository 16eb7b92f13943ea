"""A thin onnxruntime wrapper around the single VampNet model (vampnet_onnx/interface.py);
``vampnet_onnx.model.Model`` builds the vamping API on it.

Runtime-only dependencies: onnxruntime and numpy (never torch or onnx).

    session = Session("artifacts/vampnet.onnx", threads=4)
    session.defaults()                # {"seed": 0, "rand_mask_intensity": 1.0, ...}
    out = session.run(audio, seed=3, temperature=0.8)   # audio: float32 (B, S)
    out["audio_out"], out["codes"], out["mask_out"], out["coarse_codes"], out["codes_out"]

Every input of the model is a plain graph input and is always fed: the values passed to ``run``,
and for the others the defaults from the model's metadata ("defaults"; the interface table's
where a key is missing) and an empty mask. Plain Python numbers are fine; they are shaped to the
model's (1,) parameters. A model with external data must be loaded from its path, with the data
file beside it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import ModelError, UsageError, one_line
from .interface import BY_NAME, DEFAULTS, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from .paths import model_files

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


TERMINATE_WAIT_S = 60.0
"""How long an interrupted run waits for onnxruntime to notice ``RunOptions.terminate``."""

# Runs whose worker thread is still inside onnxruntime (see ``run_in_progress``).
_ACTIVE_RUNS: set[threading.Event] = set()


def run_in_progress() -> bool:
    """True while a worker thread of ``Model.run`` is still inside onnxruntime."""
    return bool(_ACTIVE_RUNS)


def _wait_through_interrupts(done: threading.Event, timeout: float) -> None:
    """Wait up to ``timeout`` s for ``done``; a further Ctrl-C or signal does not cut it short."""
    deadline = time.monotonic() + timeout
    while not done.is_set() and time.monotonic() < deadline:
        try:
            done.wait(max(0.0, min(0.5, deadline - time.monotonic())))
        except KeyboardInterrupt:
            pass


def type_name(ort_type: str) -> str:
    """'tensor(float)' -> 'float32', 'tensor(int64)' -> 'int64' (others unchanged)."""
    t = _ORT_TYPES.get(ort_type)
    return np.dtype(t).name if t is not None else ort_type


def shape_text(shape) -> str:
    """ORT shape list -> '(B, S)', '()' for scalars; unknown dims as '?'."""
    dims = ["?" if d is None else str(d) for d in (shape or [])]
    if len(dims) == 1:
        return f"({dims[0]},)"
    return "(" + ", ".join(dims) + ")"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    type: str  # onnxruntime's type string, e.g. 'tensor(float)'
    shape: tuple

    @property
    def dtype(self):
        return _ORT_TYPES.get(self.type)


def tensor(info: TensorInfo, value: Any) -> np.ndarray:
    """``value`` as the model input ``info`` takes it: its dtype, and its shape for a parameter
    ((1,), or () for a 0-d one); one-line ModelError for a value that cannot be that."""
    dtype = np.dtype(info.dtype or np.float32)
    arr = np.asarray(value)
    if info.name == "mask":
        return np.ascontiguousarray(arr.astype(dtype))
    if arr.size != 1:
        raise ModelError(f"input '{info.name}' takes one value, got shape {arr.shape}")
    if arr.dtype == object:  # Python ints beyond 64 bits
        raise ModelError(f"input '{info.name}' is out of range for {dtype.name}: {value!r}")
    if np.issubdtype(dtype, np.integer):
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
            raise ModelError(f"input '{info.name}' must be an integer, got {value!r}")
        limits = np.iinfo(dtype)
        if arr.dtype.kind in "iuf" and not np.all((arr >= limits.min) & (arr <= limits.max)):
            raise ModelError(f"input '{info.name}' is out of range for {dtype.name}: {value!r}")
    elif arr.dtype.kind == "f":
        # finite values beyond float32 saturate (the graph clamps them) instead of becoming
        # inf with a numpy overflow warning
        big = np.finfo(dtype).max
        arr = np.where(np.isfinite(arr), np.clip(arr, -big, big), arr)
    shape = tuple(d if isinstance(d, int) else 1 for d in info.shape)
    return np.ascontiguousarray(arr.astype(dtype).reshape(shape))


def complete_feed(audio: np.ndarray, infos: dict[str, TensorInfo], defaults: dict[str, Any],
                  n_codebooks: int, values: dict[str, Any]) -> dict[str, np.ndarray]:
    """A value for every input in ``infos`` (in their order): ``values`` where given and not
    None, else ``defaults``; ``mask`` empty (1, n_codebooks, 0) unless given."""
    audio = np.asarray(audio)
    if audio.ndim != 2:
        raise ModelError(f"audio must have shape (B, S), got {audio.shape}")
    unknown = [name for name in values if name not in infos]
    if unknown:
        raise ModelError(f"the model has no input named '{unknown[0]}'")
    given = {**defaults, "mask": np.zeros((1, n_codebooks, 0), np.int64)}
    given.update({k: v for k, v in values.items() if v is not None})
    feed = {"audio": np.ascontiguousarray(audio, dtype=np.float32)}
    for name, info in infos.items():
        if name == "audio":
            continue
        if name not in given:
            raise ModelError(f"no value and no default for the model's input '{name}'")
        feed[name] = tensor(info, given[name])
    return feed


_TABLE_INFOS = {i.name: TensorInfo(i.name, "tensor(float)" if i.dtype == "float32" else "tensor(int64)", i.shape)
                for i in BY_NAME.values()}


def interface_feeds(audio: np.ndarray, n_codebooks: int = 14, **values: Any) -> dict[str, np.ndarray]:
    """A complete feed for any model of this interface, without a session (the builder's checks,
    tests, benchmarks on other runtimes): ``values`` where given, else the table's defaults."""
    return complete_feed(audio, _TABLE_INFOS, DEFAULTS, n_codebooks, values)


def disk_size(path: str | os.PathLike) -> tuple[int, list[tuple[Path, int]]]:
    """(total bytes, [(file, bytes), ...]) of the model file and its external data file."""
    sizes = [(f, f.stat().st_size) for f in model_files(path) if f.is_file()]
    return sum(s for _, s in sizes), sizes


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1000
    return f"{n} B"


NUMBERS = ("sample_rate", "hop_length", "n_codebooks", "max_sampling_steps")
"""Integer metadata every model carries and the host reads."""


class Session:
    """An onnxruntime session on a vampnet-onnx model: its interface, metadata and ``run``.

    ``threads``: intra-op threads (None or 0: onnxruntime's default). ``providers``: execution
    providers (default CPU only). ``release_memory``: hand onnxruntime's CPU memory arena back
    to the system at the end of every run, instead of keeping it at the peak of the largest run
    for the next one (docs/reliability.md measures both).
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None,
                 providers: list[str] | None = None, release_memory: bool = False) -> None:
        import onnxruntime as ort

        p = Path(path)
        if not p.exists():
            raise ModelError(
                f"model not found: {p} (build one with `vampnet-onnx build`, run `vampnet-onnx "
                f"demo` for a tiny random-weight one, or pass -m MODEL)"
            )
        if p.is_dir():
            raise ModelError(f"model path is a folder, not an .onnx file: {p}")
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(
                str(p), sess_options=so, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own (RuntimeError-like) types
            raise ModelError(f"cannot load model {p}: {one_line(e)}") from e
        self.path = p
        self.threads = int(threads or 0)
        self.release_memory = release_memory
        self.inputs = {i.name: TensorInfo(i.name, i.type, tuple(i.shape)) for i in self.session.get_inputs()}
        self.outputs = {o.name: TensorInfo(o.name, o.type, tuple(o.shape)) for o in self.session.get_outputs()}
        meta = self.session.get_modelmeta()
        self.metadata: dict[str, str] = dict(meta.custom_metadata_map or {})
        self.producer = meta.producer_name
        if "audio" not in self.inputs:
            raise ModelError(f"{p} is not a vampnet-onnx model (it has no 'audio' input)")
        # the numbers the host needs come from the model (`vampnet-onnx build` writes them)
        self.numbers: dict[str, int] = {}
        for key in NUMBERS:
            try:
                self.numbers[key] = int(self.metadata[key])
            except (KeyError, ValueError):
                raise ModelError(
                    f"{p} has no integer metadata {key!r}: it was not made by `vampnet-onnx build` "
                    f"(rebuild it with this version)"
                ) from None

    # -- metadata ---------------------------------------------------------------------------

    def stored_defaults(self) -> dict[str, Any] | None:
        """The JSON object under metadata key "defaults", or None if absent or unreadable."""
        raw = self.metadata.get("defaults")
        if not raw:
            return None
        try:
            d = json.loads(raw)
        except ValueError:
            return None
        return d if isinstance(d, dict) else None

    def defaults(self) -> dict[str, Any]:
        """Defaults of the model's parameters: its "defaults" metadata over the interface table's."""
        merged: dict[str, Any] = dict(DEFAULTS)
        merged.update(self.stored_defaults() or {})
        return {k: v for k, v in merged.items() if k in self.inputs and k not in ("audio", "mask")}

    @property
    def adapters(self) -> list[str]:
        """The names of the fine-tunes the model holds (input `adapter` k selects the k-th, from 1)."""
        try:
            names = json.loads(self.metadata.get("adapters", "[]"))
        except ValueError:
            return []
        return [str(n) for n in names] if isinstance(names, list) else []

    def adapter_index(self, choice: str | int) -> int:
        """The `adapter` input for a name of `adapters` or an index (0 = the base model)."""
        names = self.adapters
        if choice in names:
            return names.index(choice) + 1
        text = str(choice).strip()
        if text.isdigit() and int(text) <= len(names):
            return int(text)
        held = f"it holds {', '.join(names)}" if names else "it holds none"
        raise UsageError(f"{self.path} has no adapter {choice!r} ({held}; 0 is the base model)")

    @property
    def sample_rate(self) -> int:
        return self.numbers["sample_rate"]

    @property
    def hop(self) -> int:
        return self.numbers["hop_length"]

    @property
    def n_codebooks(self) -> int:
        return self.numbers["n_codebooks"]

    @property
    def max_sampling_steps(self) -> int:
        """The largest step count the model honours (more are clamped in the graph)."""
        return self.numbers["max_sampling_steps"]

    def frames_for(self, n_samples: int, rate: int | None = None) -> int:
        """T = ceil(S' / hop), S' = the length of `n_samples` at `rate` once the model has
        resampled them to its own rate (graphs/preprocess.py: floor(S·model rate / rate), at least
        1, the rate clamped as the graph clamps it); no rate: S' = S."""
        n = int(n_samples)
        if rate is not None:
            rate = min(max(int(rate), MIN_SAMPLE_RATE), MAX_SAMPLE_RATE)
            n = max(n * self.sample_rate // rate, 1)
        return -(-n // self.hop)

    # -- running ----------------------------------------------------------------------------

    def feeds(self, audio: np.ndarray, **inputs: Any) -> dict[str, np.ndarray]:
        """The feed dict for ``run``: every model input, the given ones cast to the model's dtypes
        and shapes, the others at their defaults."""
        if np.ndim(audio) != 2 or min(np.shape(audio)) < 1:
            raise ModelError(f"audio must have shape (B, S) with B, S >= 1, got {np.shape(audio)}")
        return complete_feed(audio, self.inputs, self.defaults(), self.n_codebooks, inputs)

    def run(self, audio: np.ndarray, *, tick: Callable[[float], None] | None = None,
            tick_interval: float = 0.5, **inputs: Any) -> dict[str, np.ndarray]:
        """Run the model on ``audio`` (float32 (B, S)); returns {output name: array}.

        Only the inputs given (and not None) are fed. ``tick(elapsed_s)`` is called about every
        ``tick_interval`` seconds while the model runs. The session runs in a worker thread so
        that Ctrl-C is noticed at once: it asks onnxruntime to terminate the run and re-raises
        KeyboardInterrupt.
        """
        import onnxruntime as ort

        feed = self.feeds(audio, **inputs)
        run_options = ort.RunOptions()
        run_options.log_severity_level = 4  # a terminated run is reported once, by the caller
        if self.release_memory:
            run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        result: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                result["out"] = self.session.run(None, feed, run_options)
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                result["err"] = e
            finally:
                _ACTIVE_RUNS.discard(done)
                done.set()

        t0 = time.monotonic()
        worker = threading.Thread(target=work, name="vampnet-onnx-run", daemon=True)
        _ACTIVE_RUNS.add(done)
        worker.start()
        # Wait on an Event, not Thread.join: a KeyboardInterrupt inside join() makes Python 3.11
        # mark the thread finished while it is still inside onnxruntime (bpo-45274).
        try:
            while not done.wait(tick_interval):
                if tick is not None:
                    tick(time.monotonic() - t0)
        except KeyboardInterrupt:
            # Stop onnxruntime at its next node and wait until it has returned: leaving the
            # worker inside onnxruntime at interpreter exit aborts the process (exit 134).
            run_options.terminate = True
            _wait_through_interrupts(done, TERMINATE_WAIT_S)
            raise
        if "err" in result:
            e = result["err"]
            if isinstance(e, KeyboardInterrupt):
                raise e
            raise ModelError(f"the model failed: {one_line(e)}") from e
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, result["out"]))
