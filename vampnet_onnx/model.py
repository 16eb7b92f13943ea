"""A thin onnxruntime wrapper around the single VampNet model (interface v1, design.md).

Runtime-only dependencies: onnxruntime and numpy (never torch or onnx).

    model = Model("artifacts/vampnet.onnx", threads=4)
    model.defaults()                  # {"seed": 0, "rand_mask_intensity": 1.0, ...}
    out = model.run(audio, seed=3, temperature=0.8)   # audio: float32 (B, S)
    out["audio_out"], out["codes"], out["mask_out"], out["coarse_codes"], out["codes_out"]

Only the inputs passed to ``run`` are fed; every other input keeps the default stored in the
model (an initializer with the input's name). A model with external data must be loaded from its
path, with the data file beside it.
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

INT_INPUTS = frozenset(
    {"seed", "periodic_prompt", "periodic_prompt_width", "ncc", "upper_codebook_mask",
     "sampling_steps", "c2f_sampling_steps"}
)

DESIGN_DEFAULTS: dict[str, int | float] = {
    "seed": 0,
    "rand_mask_intensity": 1.0,
    "prefix_s": 0.0,
    "suffix_s": 0.0,
    "periodic_prompt": 7,
    "periodic_prompt_width": 1,
    "dropout": 0.0,
    "ncc": 0,
    "upper_codebook_mask": 3,
    "sampling_steps": 12,
    "temperature": 1.0,
    "mask_temperature": 10.5,
    "top_p": 1.0,
    "sample_cutoff": 1.0,
    "c2f_sampling_steps": 2,
    "c2f_temperature": 1.0,
    "c2f_mask_temperature": 10.5,
    "c2f_top_p": 1.0,
    "c2f_sample_cutoff": 1.0,
}
"""The defaults of design.md's interface table: what the builder stores in every model, and what
applies when a model carries no "defaults" metadata. Order = the order flags are shown in the CLI."""

# Interface v1 (design.md).
SCALAR_INPUTS: tuple[str, ...] = tuple(DESIGN_DEFAULTS)
INPUT_NAMES: tuple[str, ...] = ("audio", "mask") + SCALAR_INPUTS
OUTPUT_NAMES: tuple[str, ...] = ("audio_out", "codes", "mask_out", "coarse_codes", "codes_out")

DESIGN_METADATA = {"sample_rate": 44100, "hop": 768, "n_codebooks": 14}

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


class ModelError(Exception):
    """A problem loading or running the model, explained in one line."""


def _one_line(err: BaseException) -> str:
    lines = [s for s in str(err).strip().splitlines() if s.strip()]
    text = lines[0] if lines else type(err).__name__
    return text if len(text) <= 400 else text[:400] + "..."


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
    required: bool = True  # False: the model stores a default (it may be omitted)

    @property
    def dtype(self):
        return _ORT_TYPES.get(self.type)


def external_data_files(path: str | os.PathLike, metadata: dict[str, str] | None = None) -> list[Path]:
    """External data files belonging to a model, by convention, that exist on disk.

    Without onnx we cannot read the tensors' external-data references, so: ``<model>.data``
    (what ``onnx.save_model(..., location=name + ".data")`` and ``torch.onnx`` write), and any
    files listed in the metadata key ``external_data`` (a JSON list or comma-separated names,
    relative to the model's folder).
    """
    p = Path(path)
    found: list[Path] = []
    candidates = [p.with_name(p.name + ".data")]
    listed = (metadata or {}).get("external_data")
    if listed:
        try:
            names = json.loads(listed)
            if isinstance(names, str):
                names = [names]
        except ValueError:
            names = [n.strip() for n in listed.split(",")]
        candidates += [p.parent / str(n) for n in names if str(n).strip()]
    for c in candidates:
        if c.is_file() and all(not c.samefile(f) for f in found) and not c.samefile(p):
            found.append(c)
    return found


def disk_size(path: str | os.PathLike, metadata: dict[str, str] | None = None) -> tuple[int, list[tuple[Path, int]]]:
    """(total bytes, [(file, bytes), ...]) of the model file plus its external data files."""
    p = Path(path)
    files = [p] + external_data_files(p, metadata)
    sizes = [(f, f.stat().st_size) for f in files]
    return sum(s for _, s in sizes), sizes


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1000
    return f"{n} B"


class Model:
    """An onnxruntime session on a vampnet-onnx model.

    ``threads``: intra-op threads (None or 0: onnxruntime's default). ``providers``: execution
    providers (default CPU only).
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None,
                 providers: list[str] | None = None) -> None:
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
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(p), sess_options=so, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own (RuntimeError-like) types
            raise ModelError(f"cannot load model {p}: {_one_line(e)}") from e
        self.path = p
        # onnxruntime lists inputs with a stored default (an initializer of the same name) not in
        # get_inputs() but in get_overridable_initializers().
        self.inputs = {i.name: TensorInfo(i.name, i.type, tuple(i.shape), True)
                       for i in self.session.get_inputs()}
        for i in self.session.get_overridable_initializers():
            self.inputs.setdefault(i.name, TensorInfo(i.name, i.type, tuple(i.shape), False))
        self.outputs = {o.name: TensorInfo(o.name, o.type, tuple(o.shape))
                        for o in self.session.get_outputs()}
        meta = self.session.get_modelmeta()
        self.metadata: dict[str, str] = dict(meta.custom_metadata_map or {})
        self.producer = meta.producer_name
        self.description = meta.description
        if "audio" not in self.inputs:
            raise ModelError(f"{p} is not a vampnet-onnx model (it has no 'audio' input)")

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
        """Defaults of the scalar inputs: the model's "defaults" metadata over design.md's table.

        Only inputs the model actually has are returned.
        """
        merged: dict[str, Any] = dict(DESIGN_DEFAULTS)
        merged.update(self.stored_defaults() or {})
        return {k: v for k, v in merged.items() if k in self.inputs and k not in ("audio", "mask")}

    def meta_int(self, key: str, default: int) -> int:
        """An integer metadata value (e.g. "hop"), or ``default`` if absent or not an integer."""
        raw = self.metadata.get(key)
        if raw is None:
            return default
        try:
            return int(json.loads(raw))
        except (ValueError, TypeError):
            return default

    @property
    def sample_rate(self) -> int:
        return self.meta_int("sample_rate", DESIGN_METADATA["sample_rate"])

    @property
    def hop(self) -> int:
        return self.meta_int("hop_length", self.meta_int("hop", DESIGN_METADATA["hop"]))

    @property
    def n_codebooks(self) -> int:
        return self.meta_int("n_codebooks", self.meta_int("codebooks", 14))

    @property
    def max_sampling_steps(self) -> int | None:
        """The largest step count the model honours (metadata "max_sampling_steps"), if known."""
        value = self.meta_int("max_sampling_steps", -1)
        return value if value > 0 else None

    def frames_for(self, n_samples: int) -> int:
        """T = ceil(S / hop)."""
        return -(-int(n_samples) // self.hop)

    # -- running ----------------------------------------------------------------------------

    def feeds(self, audio: np.ndarray, **inputs: Any) -> dict[str, np.ndarray]:
        """The feed dict for ``run``: only the given inputs, cast to the model's dtypes."""
        audio = np.asarray(audio)
        if audio.ndim != 2 or audio.shape[1] < 1 or audio.shape[0] < 1:
            raise ModelError(f"audio must have shape (B, S) with B, S >= 1, got {audio.shape}")
        feed = {"audio": np.ascontiguousarray(audio, dtype=np.float32)}
        for name, value in inputs.items():
            if value is None:
                continue
            info = self.inputs.get(name)
            if info is None:
                raise ModelError(f"the model has no input named '{name}'")
            dtype = info.dtype or np.float32
            arr = np.asarray(value)
            if np.issubdtype(np.dtype(dtype), np.integer):
                if arr.dtype.kind == "f" and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
                    raise ModelError(f"input '{name}' must be an integer, got {value!r}")
            if name != "mask" and arr.ndim != 0:
                raise ModelError(f"input '{name}' must be a scalar, got shape {arr.shape}")
            if arr.dtype == object:  # Python ints beyond 64 bits
                raise ModelError(f"input '{name}' is out of range for {np.dtype(dtype).name}: {value!r}")
            if np.issubdtype(np.dtype(dtype), np.integer) and arr.dtype.kind in "iuf":
                lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
                if not np.all((arr >= lo) & (arr <= hi)):
                    raise ModelError(f"input '{name}' is out of range for {np.dtype(dtype).name}: {value!r}")
            if np.issubdtype(np.dtype(dtype), np.floating) and arr.dtype.kind == "f":
                # finite values beyond float32 saturate (the graph clamps them) instead of
                # becoming inf with a numpy overflow warning
                big = np.finfo(dtype).max
                arr = np.where(np.isfinite(arr), np.clip(arr, -big, big), arr)
            feed[name] = np.ascontiguousarray(arr.astype(dtype))
        return feed

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
            raise ModelError(f"the model failed: {_one_line(e)}") from e
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, result["out"]))
