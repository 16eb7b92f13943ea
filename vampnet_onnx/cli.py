"""The ``vampnet-onnx`` command line (also ``python -m vampnet_onnx``).

Subcommands:

* ``vamp IN -o OUT``: run the single ONNX model on an audio file with onnxruntime only (this
  path never imports torch, onnx, onnxscript, ``vampnet_onnx.builder`` or ``vampnet_onnx.graphs``).
* ``info MODEL``: print the model's interface, defaults, metadata and size on disk.
* ``batch IN_DIR OUT_DIR``: ``vamp`` every audio file under a folder on Ray workers
  (``vampnet_onnx.batch``; Ray is the optional ``cluster`` extra, imported only by ``batch``).
* ``triton MODEL DIR``: write a Triton Inference Server model repository (``vampnet_onnx.triton``).
* ``web``: serve the in-browser page (``web/``) on this machine (``vampnet_onnx.web``).
* ``build`` / ``demo``: parse arguments, then hand over to ``vampnet_onnx.builder.build.build_model`` /
  ``vampnet_onnx.demo.demo_command(args)`` (imported lazily: they need the ``build`` extras).

Exit codes: 0 success; 1 a problem with the input, the model, an output path or the run
(one line on stderr: ``vampnet-onnx: error: ...``); 2 a command-line usage error (same one-line
form); 128 + the signal's number when interrupted: 130 Ctrl-C (SIGINT), 143 SIGTERM, 129 SIGHUP
(same one-line form; temporary files are removed, nothing is half-written). No traceback for any
of these.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .audio import (
    AtomicOutputs,
    AudioError,
    check_output_path,
    check_writable_folder,
    choose_subtype,
    load_audio,
    output_format,
    restore,
    same_file,
    write_audio_file,
)
from .interface import BY_NAME, PARAMETERS, WEIGHTS
from .model import (
    Model,
    ModelError,
    disk_size,
    human_size,
    run_in_progress,
    shape_text,
    type_name,
)

PROG = "vampnet-onnx"
DEFAULT_MODEL = "artifacts/vampnet.onnx"
DEFAULT_DEMO_DIR = "artifacts/demo"
DEFAULT_DEMO_MODEL = f"{DEFAULT_DEMO_DIR}/vampnet-tiny.onnx"  # what `vampnet-onnx demo` builds
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_VARIATIONS = 256
"""Hard cap on --variations (one batch); memory usually allows fewer (``check_memory``)."""
ROW_WEIGHTS_SHARE = 0.25
ROW_BYTES_PER_SAMPLE = 256
"""Estimated peak memory of one batch row beyond the weights: ROW_WEIGHTS_SHARE of the weights'
size (the activations inside one transformer chunk and one codec window, which grow with the
model, not with the input) plus ROW_BYTES_PER_SAMPLE per input sample (44.1 kHz; the signal and
its codes). Measured at real size: 0.65 GB above the 2.6 GB of weights for 10 s, 1.05 GB for
60 s; the estimate gives 0.77 and 1.33 GB."""


class CliError(Exception):
    """A user-facing problem reported as ``vampnet-onnx: error: <message>`` with exit code 1.

    ``builder`` code called by ``build``/``demo`` may raise it too.
    """


def _error_line(message: str) -> str:
    return f"{PROG}: error: {' '.join(str(message).split())}"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block) and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        sys.stderr.write(_error_line(f"{message} (see `{self.prog} --help`)") + "\n")
        self.exit(2)


# --------------------------------------------------------------------------------------------
# argument types


def _finite_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return v


def _int(text: str) -> int:
    try:
        v = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer: {text!r}") from None
    if not INT64_MIN <= v <= INT64_MAX:  # every integer input of the model is int64
        raise argparse.ArgumentTypeError(f"must be a 64-bit integer (-2^63 to 2^63-1), got {text!r}")
    return v


def cpu_cores() -> int:
    return os.cpu_count() or 1


def _threads(text: str) -> int:
    # More threads than cores only slows onnxruntime down (each waits for the others).
    try:
        v = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer: {text!r}") from None
    if not 0 <= v <= cpu_cores():
        raise argparse.ArgumentTypeError(
            f"must be between 0 and {cpu_cores()} (this machine has {cpu_cores()} CPU cores; "
            f"0 = onnxruntime's choice), got {text!r}")
    return v


def _float_range(lo: float | None = None, hi: float | None = None):
    def parse(text: str) -> float:
        v = _finite_float(text)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            rng = f"between {lo:g} and {hi:g}" if lo is not None and hi is not None else f">= {lo:g}"
            raise argparse.ArgumentTypeError(f"must be {rng}, got {text!r}")
        return v

    return parse


def _int_range(lo: int | None = None, hi: int | None = None):
    def parse(text: str) -> int:
        v = _int(text)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            if lo is not None and hi is not None:
                rng = f"an integer between {lo} and {hi}"
            else:
                rng = f"an integer >= {lo}"
            raise argparse.ArgumentTypeError(f"must be {rng}, got {text!r}")
        return v

    return parse


def _parameter_type(p):
    """The argparse type of a model parameter: its number type and the interface table's range."""
    if p.is_int:
        return _int_range(p.low, p.high)
    if p.low is None and p.high is None:
        return _finite_float
    return _float_range(p.low, p.high)


# (input name, argparse type, help) for every parameter of the model except seed, from the table;
# --adapter takes a name too (the model's metadata maps it to the index: model_feeds)
PARAM_FLAGS: list[tuple[str, Any, str]] = [
    (p.name, str if p.name == "adapter" else _parameter_type(p), p.help) for p in PARAMETERS if p.name != "seed"
]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# shorter spellings (shown first), besides the flag named after the input
FLAG_ALIASES: dict[str, tuple[str, ...]] = {"time_stretch_factor": ("--time-stretch",)}


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """The mask and sampling flags (one per model input); shared by `vamp` and `batch`."""
    g = parser.add_argument_group("mask and sampling (model inputs)")
    for name, typ, text in PARAM_FLAGS:
        metavar = "NAME" if name == "adapter" else "N" if BY_NAME[name].is_int else "X"
        g.add_argument(*FLAG_ALIASES.get(name, ()), _flag(name), dest=name, type=typ, default=None,
                       metavar=metavar, help=f"{text} (default: {BY_NAME[name].default})")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="VampNet as one ONNX model: audio in, new audio out.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    sub.required = True

    # ---- vamp
    v = sub.add_parser(
        "vamp",
        help="generate new audio from an audio file (onnxruntime only)",
        description=(
            "Run the model on IN and write OUT. The input (any rate, any channels) is resampled to "
            "the model's rate (44.1 kHz for VampNet), mixed to mono and normalised to -24 LUFS; the "
            "output gets the input's sample rate, length (times --time-stretch) and loudness, and "
            "the mono result is copied to each of the input's channels. Flags left out take the "
            "model's defaults (from its metadata)."
        ),
    )
    v.add_argument("input", metavar="IN", help="input audio file (WAV, FLAC, OGG, ...)")
    v.add_argument("-o", "--output", metavar="OUT", required=True,
                   help="output audio file; the format follows the extension "
                        "(with --variations N > 1: OUT-1.ext ... OUT-N.ext)")
    v.add_argument("-m", "--model", metavar="MODEL", default=None,
                   help=f"the .onnx model (default: {DEFAULT_MODEL}; if it is missing, the demo's "
                        f"random-weight {DEFAULT_DEMO_MODEL} when `vampnet-onnx demo` has built it)")
    v.add_argument("--seed", type=_int_range(INT64_MIN, INT64_MAX), default=None, metavar="N",
                   help="random seed (default: a random one, printed so the run can be repeated)")
    add_model_flags(v)
    v.add_argument("--variations", type=_int_range(1, MAX_VARIATIONS), default=None, metavar="N",
                   help=f"generate N variations in one batch (default: 1, or the mask's rows; at "
                        f"most {MAX_VARIATIONS}, and fewer if the memory would not hold them)")
    v.add_argument("--mask-from", metavar="FILE",
                   help="explicit mask: .npz (key 'mask', as written by --save-codes) or .npy, "
                        "int 0/1 of shape (14, T) or (B, 14, T); 1 = generate, 0 = keep; T is the "
                        "input's frame count, before any --time-stretch (a beat mask, say)")
    v.add_argument("--save-codes", metavar="FILE.npz",
                   help="save codes, mask_out (also as 'mask'), coarse_codes, codes_out and seed")
    v.add_argument("--plot", metavar="FILE.png",
                   help="save a picture of input codes, mask and output codes (needs matplotlib)")
    v.add_argument("--threads", type=_threads, default=None, metavar="N",
                   help=f"onnxruntime intra-op threads, at most the CPU cores ({cpu_cores()} "
                        f"here) (default: onnxruntime's choice)")
    v.set_defaults(func=cmd_vamp)

    # ---- info
    i = sub.add_parser("info", help="print a model's interface, defaults, metadata and size",
                       description="Print a model's inputs (type, shape, default), outputs, "
                                   "metadata and size on disk.")
    i.add_argument("model", metavar="MODEL", nargs="?", default=None,
                   help=f"the .onnx model (default: {DEFAULT_MODEL}, else the demo's model)")
    i.set_defaults(func=cmd_info)

    # ---- build
    b = sub.add_parser(
        "build", help="build the single ONNX model from VampNet checkpoints (needs .[build])",
        description="Build the single ONNX model from VampNet checkpoints: either --checkpoints "
                    "DIR (holding codec.pth, coarse.pth, c2f.pth) or all of --codec, --coarse, "
                    "--c2f. Needs the build extras: pip install -e .[build]")
    b.add_argument("--checkpoints", metavar="DIR", help="folder with codec.pth, coarse.pth, c2f.pth")
    b.add_argument("--codec", metavar="F", help="codec checkpoint (codec.pth)")
    b.add_argument("--coarse", metavar="F", help="coarse transformer checkpoint (coarse.pth)")
    b.add_argument("--c2f", metavar="F", help="coarse-to-fine transformer checkpoint (c2f.pth)")
    b.add_argument("--coarse-lora", metavar="[NAME=]F", action=_LoraFlag,
                   help="LoRA checkpoint for the coarse model, folded into its weights; NAME=F "
                        "(repeatable) adds adapter NAME instead, chosen at run time (docs/adapters.md)")
    b.add_argument("--c2f-lora", metavar="[NAME=]F", action=_LoraFlag,
                   help="LoRA checkpoint for the coarse-to-fine model; NAME=F as for --coarse-lora")
    b.add_argument("-o", "--output", metavar="PATH", default=DEFAULT_MODEL,
                   help=f"where to write the model (default: {DEFAULT_MODEL})")
    b.add_argument("--weights", choices=WEIGHTS, default=WEIGHTS[0],
                   help="int8: the transformers' matrix weights in block-wise int8 and the codec decoder's "
                        "in float16, under 0.3x the size (opset 21: needs onnxruntime >= 1.18); "
                        "default float32 (opset 20)")
    b.set_defaults(func=cmd_build, _parser=b)

    # ---- demo
    d = sub.add_parser("demo", help="run the main job on the embedded default model (needs .[build])",
                       description="Run the main job on the embedded default model.")
    d.add_argument("-o", "--output", metavar="OUTDIR", default=DEFAULT_DEMO_DIR,
                   help=f"output folder (default: {DEFAULT_DEMO_DIR})")
    d.add_argument("--seed", type=_int_range(INT64_MIN, INT64_MAX), default=None, metavar="N",
                   help="random seed (default: the demo's own)")
    d.set_defaults(func=cmd_demo)

    # ---- batch, triton (their own modules; Ray is imported only when `batch` runs)
    from . import batch, triton, web

    batch.add_parser(sub)
    triton.add_parser(sub)
    web.add_parser(sub)
    return parser


# --------------------------------------------------------------------------------------------
# vamp


def variation_paths(output: str | os.PathLike, n: int) -> list[Path]:
    """OUT for one variation; OUT-1.ext ... OUT-n.ext (before the extension) for n > 1."""
    p = Path(output)
    if n == 1:
        return [p]
    return [p.with_name(f"{p.stem}-{k}{p.suffix}") for k in range(1, n + 1)]


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask file: .npz (key 'mask', else 'mask_out') or .npy; returns int64 (B, C, T).
    (The number of codebooks and frames is checked against the model once it is loaded.)"""
    p = Path(path)
    if not p.is_file():
        raise CliError(f"mask file not found: {p}")
    try:
        with open(p, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise CliError(f"cannot read mask file {p}: {e.strerror or e}") from e
    # np.load treats anything that is neither .npy nor .npz as a pickle: say what it really is
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):
        raise CliError(f"mask file {p} is not a NumPy .npy or .npz file (write it with numpy.save "
                       f"or --save-codes)")
    try:
        loaded = np.load(p, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e):  # a .npy of Python objects: never unpickled
            raise CliError(f"mask file {p} holds Python objects, not an integer array; "
                           f"save the mask as an integer array") from e
        raise CliError(f"cannot read mask file {p} (expected .npz or .npy): {e}") from e
    except Exception as e:  # noqa: BLE001 - any unreadable file
        raise CliError(f"cannot read mask file {p} (expected .npz or .npy): {e}") from e
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            key = next((k for k in ("mask", "mask_out") if k in loaded.files), None)
            if key is None:
                raise CliError(f"mask file {p} has no 'mask' array (it has: {', '.join(loaded.files) or 'nothing'})")
            arr = loaded[key]
    else:
        arr = np.asarray(loaded)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] < 1:
        raise CliError(f"mask in {p} must have shape (codebooks, T) or (B, codebooks, T), got {tuple(np.shape(arr))}")
    if arr.dtype.kind not in "biuf":
        raise CliError(f"mask in {p} must be integer 0/1, got dtype {arr.dtype}")
    if not np.all((arr == 0) | (arr == 1)):
        raise CliError(f"mask in {p} must contain only 0 and 1")
    return arr.astype(np.int64)


def resolve_model(path: str | None) -> Path:
    """The model to use: ``path`` if given; else DEFAULT_MODEL, or the demo's model (with a note
    that it has random weights) when only ``vampnet-onnx demo`` has been run."""
    if path is not None:
        return Path(path)
    if not Path(DEFAULT_MODEL).exists() and Path(DEFAULT_DEMO_MODEL).is_file():
        print(f"note: {DEFAULT_MODEL} not found; using the demo model {DEFAULT_DEMO_MODEL}, which "
              f"has RANDOM weights (noise-like output); build a real one with `{PROG} build`")
        return Path(DEFAULT_DEMO_MODEL)
    return Path(DEFAULT_MODEL)


def model_files(model: Path) -> list[Path]:
    """The model file and its external data file (by convention ``<model>.data``)."""
    return [model, model.with_name(model.name + ".data")]


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (MemAvailable of /proc/meminfo), if known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(n: int, samples: int, model: Path) -> None:
    """Refuse more variations than the available memory can hold (an estimate; see
    ROW_WEIGHTS_SHARE): the batch would otherwise be killed for memory mid-run."""
    available = available_memory()
    if n <= 1 or available is None:
        return
    weights = sum(f.stat().st_size for f in model_files(model) if f.is_file())
    per_row = int(ROW_WEIGHTS_SHARE * weights) + samples * ROW_BYTES_PER_SAMPLE
    fit = max(1, (available - weights) // per_row)
    if n > fit:
        raise CliError(
            f"--variations {n} would need about {human_size(weights + n * per_row)} of memory for "
            f"this {samples / 44100:.1f} s input, and {human_size(available)} is available: use at "
            f"most --variations {fit} (or a shorter input)")


def _plot_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_plot(fileobj, codes: np.ndarray, mask: np.ndarray, codes_out: np.ndarray, title: str = "") -> None:
    """PNG with three panels (input codes, mask, output codes), codebooks x frames, per row."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from matplotlib.ticker import MaxNLocator

    rows = codes.shape[0]
    code_max = max(int(np.max(codes)), int(np.max(codes_out)), 1)  # one colour scale for both
    T = codes.shape[-1]
    width = min(24.0, max(6.0, 2.0 + T / 40.0))
    fig = Figure(figsize=(min(width * rows, 36.0), 7.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, rows, squeeze=False)
    panels = [("input codes", codes, "viridis"), ("mask (1 = generate)", mask, "gray_r"),
              ("output codes", codes_out, "viridis")]
    for r in range(rows):
        for k, (name, data, cmap) in enumerate(panels):
            ax = axes[k][r]
            im = ax.imshow(data[r], aspect="auto", origin="lower", interpolation="nearest", cmap=cmap,
                           vmin=0, vmax=1 if k == 1 else code_max)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            label = name if rows == 1 else f"{name}, variation {r + 1}"
            ax.set_title(label, fontsize=9)
            ax.set_ylabel("codebook")
            if k == 2:
                ax.set_xlabel("frame")
            fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(fileobj, format="png", dpi=100)


class _Ticker:
    """Elapsed-seconds ticker on stderr, only if stderr is a terminal."""

    def __init__(self) -> None:
        self.enabled = bool(getattr(sys.stderr, "isatty", lambda: False)())
        self.shown = False

    def __call__(self, elapsed: float) -> None:
        if self.enabled:
            sys.stderr.write(f"\rrunning the model... {elapsed:.0f} s")
            sys.stderr.flush()
            self.shown = True

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self.shown = False


def plan_outputs(args: argparse.Namespace, inp: Path, model_path: Path) -> tuple[np.ndarray | None, list[Path], list[str]]:
    """What can be checked before the model and the audio are loaded: the output format, the
    plot's dependency, the mask file and the number of variations, every output against every
    input (links followed) and each output folder. Returns (mask, audio outputs, other outputs)."""
    output_format(args.output)
    if args.plot and not _plot_available():
        raise CliError("--plot needs matplotlib, which is not installed: "
                       "pip install matplotlib (or pip install -e .[plot])")
    mask = load_mask(args.mask_from) if args.mask_from else None
    n = args.variations
    if mask is not None and mask.shape[0] > 1:
        if n is None:
            n = mask.shape[0]
        elif n != mask.shape[0]:
            raise CliError(f"--mask-from has {mask.shape[0]} rows but --variations is {n} "
                           f"(give a mask with 1 or {n} rows)")
        if n > MAX_VARIATIONS:
            raise CliError(f"--mask-from has {n} rows: at most {MAX_VARIATIONS} variations")
    audio_paths = variation_paths(args.output, n or 1)
    protected = [("the input audio", inp)]
    protected += [("the model", f) for f in model_files(model_path)]
    if args.mask_from:
        protected.append(("the --mask-from mask", Path(args.mask_from)))
    extra = [p for p in (args.save_codes, args.plot) if p]
    all_outputs = audio_paths + [Path(p) for p in extra]
    for p in all_outputs:
        check_output_path(p, inputs=protected)
    for a_idx, a in enumerate(all_outputs):
        for b in all_outputs[a_idx + 1:]:
            if same_file(a, b):
                raise CliError(f"the same path is given for two outputs: {a}")
    return mask, audio_paths, extra


def model_feeds(args: argparse.Namespace, model: Model, mask: np.ndarray | None, n: int, S: int) -> dict[str, Any]:
    """The flags as the model's inputs (the mask and step counts checked against this model),
    with the seed chosen and printed."""
    feeds: dict[str, Any] = {}
    if mask is not None:
        T = model.frames_for(S)
        if mask.shape[2] != T:
            raise CliError(f"--mask-from has {mask.shape[2]} frames but this input has {T} "
                           f"(ceil({S} samples at {model.sample_rate} Hz / hop {model.hop}); "
                           f"with --time-stretch the mask is given before stretching)")
        if mask.shape[1] != model.n_codebooks:
            raise CliError(f"--mask-from has {mask.shape[1]} codebooks, the model {model.n_codebooks}")
        feeds["mask"] = np.ascontiguousarray(np.broadcast_to(mask, (n, mask.shape[1], T)))
    for name in ("sampling_steps", "c2f_sampling_steps"):
        value = getattr(args, name)
        if value is not None and value > model.max_sampling_steps:
            raise CliError(f"{_flag(name)} {value}: this model runs at most {model.max_sampling_steps} steps")
    for name, _, _ in PARAM_FLAGS:
        value = getattr(args, name)
        if value is not None:
            feeds[name] = value
    if "adapter" in feeds:
        try:
            feeds["adapter"] = model.adapter_index(feeds["adapter"])
        except ModelError as e:
            raise CliError(f"--adapter: {e}") from None
    if args.seed is None:
        feeds["seed"] = random.SystemRandom().randrange(1, 2**31)
        print(f"seed: {feeds['seed']} (random; pass --seed {feeds['seed']} to reproduce)")
    else:
        feeds["seed"] = args.seed
        print(f"seed: {feeds['seed']}")
    return feeds


def write_outputs(args: argparse.Namespace, out: dict[str, np.ndarray], feeds: dict[str, Any],
                  prepared, audio_paths: list[Path], stretch: int, fmt: str, subtype: str) -> None:
    """Every output at once, atomically: the audio files, and --save-codes / --plot."""
    params = {k: (v if not isinstance(v, np.ndarray) else "explicit") for k, v in feeds.items()}
    with AtomicOutputs() as w:
        for row, path in enumerate(audio_paths):
            y = restore(out["audio_out"][row], prepared, stretch)
            w.add(path, lambda tmp, y=y, path=path: write_audio_file(
                tmp, y, prepared.sample_rate, fmt, subtype, path))
        if args.save_codes:
            def save_npz(tmp: Path) -> None:
                arrays = {k: out[k] for k in ("codes", "mask_out", "coarse_codes", "codes_out") if k in out}
                if "mask_out" in out:
                    arrays["mask"] = out["mask_out"]
                with open(tmp, "wb") as f:
                    np.savez(f, seed=np.int64(feeds["seed"]), params=np.array(json.dumps(params)), **arrays)
            w.add(args.save_codes, save_npz)
        if args.plot:
            missing = [k for k in ("codes", "mask_out", "codes_out") if k not in out]
            if missing:
                raise CliError(f"--plot: the model has no output {', '.join(missing)}")

            def save_png(tmp: Path) -> None:
                with open(tmp, "wb") as f:
                    write_plot(f, out["codes"], out["mask_out"], out["codes_out"],
                               title=f"{Path(args.input).name}  seed {feeds['seed']}")
            w.add(args.plot, save_png)


def cmd_vamp(args: argparse.Namespace, model: Model | None = None) -> int:
    """`vamp`; ``model``: an already-loaded model to use instead of loading ``args.model``
    (`batch` workers load theirs once)."""
    t_start = time.monotonic()
    inp = Path(args.input)
    model_path = resolve_model(args.model)
    mask, audio_paths, extra = plan_outputs(args, inp, model_path)
    n = len(audio_paths)

    # the model (for its sample rate), the audio at that rate, the output format at the input's
    # rate and channels, memory: all before the model runs
    if model is None:
        model = Model(model_path, threads=args.threads or None)
    prepared = load_audio(inp, model.sample_rate)
    fmt = output_format(args.output)
    subtype = choose_subtype(fmt, prepared.subtype, rate=prepared.sample_rate,
                             channels=prepared.channels, path=args.output)
    S = prepared.samples.shape[0]
    check_memory(n, S, model_path)
    feeds = model_feeds(args, model, mask, n, S)
    batch = np.ascontiguousarray(np.broadcast_to(prepared.samples[None, :], (n, S)))

    ticker = _Ticker()
    t_model = time.monotonic()
    try:
        out = model.run(batch, tick=ticker, **feeds)
    finally:
        ticker.clear()
    model_s = time.monotonic() - t_model

    audio_out = out.get("audio_out")
    if audio_out is None or audio_out.shape[0] != n:
        raise CliError(f"the model returned no audio_out of {n} rows")
    # the output is the input's length times the time stretch (the factor as the model clamped it)
    stretch = audio_out.shape[1] // S
    if stretch < 1 or audio_out.shape[1] != stretch * S:
        raise CliError(f"the model returned {audio_out.shape[1]} samples for {S}: not a whole multiple")
    write_outputs(args, out, feeds, prepared, audio_paths, stretch, fmt, subtype)

    for path in audio_paths:
        print(f"wrote {path} ({prepared.sample_rate} Hz, {prepared.channels} ch, "
              f"{prepared.duration_s * stretch:.2f} s)")
    for p in extra:
        print(f"wrote {p}")
    print(f"elapsed: {time.monotonic() - t_start:.2f} s (model {model_s:.2f} s)")
    return 0


# --------------------------------------------------------------------------------------------
# info


def cmd_info(args: argparse.Namespace) -> int:
    model = Model(resolve_model(args.model))
    defaults = model.defaults()
    print(f"model: {model.path}")
    if model.producer:
        print(f"producer: {model.producer}")
    total, files = disk_size(model.path, model.metadata)
    parts = " + ".join(f"{f.name} {human_size(s)}" for f, s in files)
    print(f"size on disk: {human_size(total)} ({parts})")
    if model.adapters:  # what `vamp --adapter NAME` selects
        print("adapters: " + ", ".join(f"{k} {name}" for k, name in enumerate(["(base)", *model.adapters])))
    print("inputs:")
    rows = []
    for info in model.inputs.values():
        if info.name == "audio":
            default = "required"
        elif info.name == "mask":
            default = f"default empty (1, {model.n_codebooks}, 0): build the mask from the parameters"
        elif info.name in defaults:
            default = f"default {json.dumps(defaults[info.name])}"
        else:
            default = "no default known"
        rows.append((info.name, type_name(info.type), shape_text(info.shape), default))
    _print_table(rows)
    print("outputs:")
    _print_table([(o.name, type_name(o.type), shape_text(o.shape)) for o in model.outputs.values()])
    print("metadata:")
    if not model.metadata:
        print("  (none)")
    for key in sorted(model.metadata):
        print(f"  {key} = {model.metadata[key]}")
    return 0


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    if not rows:
        print("  (none)")
        return
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]) - 1)]
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r, widths)] + [r[-1]]
        print("  " + "  ".join(cells).rstrip())


# --------------------------------------------------------------------------------------------
# build / demo (lazy hand-over to builder, which needs torch)

_BUILD_MODULES = {"torch", "onnx", "onnxscript", "onnx_ir", "onnx_graphsurgeon"}


def missing_build_extras(command: str, error: ImportError) -> CliError | None:
    """The one-line error for a command that needs the build extras, if that is what is missing."""
    name = error.name or ""
    if name.split(".")[0] in _BUILD_MODULES:
        return CliError(
            f"`{command}` needs the build extras ({name} cannot be imported); "
            f"install them with: pip install -e .[build]"
        )
    return None


def _build_side(command: str, module: str, name: str):
    """`module.name`, imported only now: `build` and `demo` need the build extras (torch)."""
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as e:
        missing = missing_build_extras(command, e)
        if missing:
            raise missing from e
        if (e.name or "") in (module, "vampnet_onnx.builder"):
            raise CliError(
                f"`{command}` is not available here ({e.name} cannot be imported); it needs a "
                f"source checkout with the build extras: pip install -e .[build]"
            ) from e
        raise  # a bug inside the builder: keep the traceback
    except AttributeError as e:
        raise CliError(f"`{command}` is not available: {module}.{name} is missing") from e


CHECKPOINT_NAMES = ("codec", "coarse", "c2f")


def checkpoint_paths(args: argparse.Namespace) -> dict[str, Path]:
    if args.checkpoints:
        folder = Path(args.checkpoints)
        return {name: folder / f"{name}.pth" for name in CHECKPOINT_NAMES}
    return {name: Path(getattr(args, name)) for name in CHECKPOINT_NAMES}


def check_build_paths(inputs: dict[str, Path | None], output: Path) -> None:
    """Before any work: neither the model nor its .data file may be one of the input files
    (links followed), and the output folder (or its nearest existing parent) must be writable."""
    if output.is_dir():
        raise CliError(f"the output is a folder: {output} (give the .onnx file's path)")
    for out in (output, output.with_name(output.name + ".data")):
        for name, path in inputs.items():
            if path is not None and same_file(out, path):
                raise CliError(f"refusing to overwrite the {name.replace('_', ' ')} checkpoint "
                               f"{path} with the model ({out}); choose another -o")
    folder = output.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # build creates the missing folders (and says so)
    if not folder.is_dir():
        raise CliError(f"cannot create the output folder {output.parent}: {folder} is not a folder")
    check_writable_folder(folder)


class _LoraFlag(argparse.Action):
    """Collects --coarse-lora / --c2f-lora values in command-line order as `loras`: (stage, value)."""

    def __call__(self, parser, namespace, value, option_string=None):
        stage = self.dest.removesuffix("_lora")
        namespace.loras = [*(getattr(namespace, "loras", None) or []), (stage, value)]


def lora_flags(loras: Sequence[tuple[str, str]]) -> tuple[dict[str, str | None], list[tuple[str, str | None, str | None]]]:
    """--coarse-lora / --c2f-lora values as the LoRA to fold per stage ({"coarse_lora": F, ...})
    and the adapters (name, coarse F, c2f F) in the order their names first appear. A value is
    NAME=F unless it is an existing file's path."""
    folded: dict[str, str | None] = {"coarse_lora": None, "c2f_lora": None}
    adapters: dict[str, dict[str, str]] = {}
    for stage, value in loras:
        flag = f"--{stage}-lora"
        name, sep, file = value.partition("=")
        if not sep or Path(value).is_file():
            if folded[f"{stage}_lora"] is not None:
                raise CliError(f"{flag} is given twice without a name; one LoRA per stage is folded in "
                               f"(NAME=FILE adds named adapters)")
            folded[f"{stage}_lora"] = value
        elif stage in adapters.setdefault(name, {}):
            raise CliError(f"adapter {name!r} is given twice with {flag}; each adapter needs its own name")
        else:
            adapters[name][stage] = file
    if adapters and any(folded.values()):
        raise CliError("give either one LoRA file per stage to fold in, or named adapters (NAME=FILE), not both")
    return folded, [(name, files.get("coarse"), files.get("c2f")) for name, files in adapters.items()]


def cmd_build(args: argparse.Namespace) -> int:
    separate = [args.codec, args.coarse, args.c2f]
    if args.checkpoints and any(separate):
        args._parser.error("give either --checkpoints DIR or --codec/--coarse/--c2f, not both")
    if not args.checkpoints and not all(separate):
        args._parser.error("give --checkpoints DIR, or all of --codec F --coarse F --c2f F")
    paths = checkpoint_paths(args)
    output = Path(args.output)
    loras, adapters = lora_flags(getattr(args, "loras", None) or [])
    adapter_files = {f"{name} {stage} LoRA": Path(f) for name, *files in adapters
                     for stage, f in zip(("coarse", "c2f"), files) if f}
    check_build_paths({**paths, **{k: Path(v) if v else None for k, v in loras.items()}, **adapter_files}, output)
    build_model = _build_side("build", "vampnet_onnx.builder.build", "build_model")
    try:
        build_model(paths["codec"], paths["coarse"], paths["c2f"], output, **loras, weights=args.weights,
                    **({"adapters": adapters} if adapters else {}))
    except ValueError as e:  # a bad checkpoint (CheckpointError) or a bad pair of models, in one line
        raise CliError(str(e)) from None
    except OSError as e:  # e.g. the disk filled up or the folder became read-only meanwhile
        raise CliError(f"cannot write {output}: {e.strerror or e}") from None
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    rc = _build_side("demo", "vampnet_onnx.demo", "demo_command")(args)
    return int(rc) if isinstance(rc, int) else 0


# --------------------------------------------------------------------------------------------


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C so that the same cleanup runs (temporary files
    removed, the onnxruntime run terminated)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def _signals_interrupt():
    """SIGTERM and SIGHUP raise :class:`Interrupted` while the command runs (the default action
    would kill the process and leave temporary files behind)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    names = ("SIGTERM", "SIGHUP")
    old = {}
    for name in names:
        if hasattr(signal, name):
            num = getattr(signal, name)
            old[num] = signal.signal(num, _raise_interrupted)
    try:
        yield
    finally:
        for num, handler in old.items():
            signal.signal(num, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code (never raises SystemExit)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, already printed)
        return int(e.code) if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        with _signals_interrupt():
            return args.func(args)
    except SystemExit as e:  # a sub-parser's .error() raised from a command (usage error)
        return int(e.code) if isinstance(e.code, int) else (0 if e.code is None else 2)
    except (CliError, AudioError, ModelError) as e:
        sys.stderr.write(_error_line(str(e)) + "\n")
        return 1
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        sys.stderr.write(("\n" if sys.stderr.isatty() else "")
                         + _error_line(f"interrupted ({signal.Signals(signum).name})") + "\n")
        if run_in_progress():
            # onnxruntime ignored the terminate request: exiting normally would abort inside it
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + signum)
        return 128 + signum
