"""The ``vampnet-onnx`` command line (also ``python -m vampnet_onnx``).

Subcommands:

* ``vamp IN -o OUT``: run the single ONNX model on an audio file with onnxruntime only (this
  path never imports torch, onnx, onnxscript, ``vampnet_onnx.builder`` or ``vampnet_onnx.graphs``).
* ``info MODEL``: print the model's interface, defaults, presets, metadata and size on disk.
* ``mask IN --plot PNG``: draw the mask ``vamp`` would use, without generating
  (``vampnet_onnx.mask_command``).
* ``batch IN_DIR OUT_DIR``: ``vamp`` every audio file under a folder on Ray workers
  (``vampnet_onnx.batch``; Ray is the optional ``cluster`` extra, imported only by ``batch``).
* ``triton MODEL DIR``: write a Triton Inference Server model repository (``vampnet_onnx.triton``).
* ``web``: serve the in-browser page (``web/``) on this machine (``vampnet_onnx.web``).
* ``build`` / ``demo``: parse arguments, then hand over to ``vampnet_onnx.builder.build.build_model`` /
  ``vampnet_onnx.demo.demo_command(args)`` (imported lazily: they need the ``build`` extras).

This module only parses and dispatches: `vamp` is ``Model.vamp_file`` (vampnet_onnx/model.py), the
flags come from the interface table (vampnet_onnx/flags.py), the errors from vampnet_onnx/errors.py.

Exit codes: 0 success; 1 a problem with the input, the model, an output path or the run
(one line on stderr: ``vampnet-onnx: error: ...``); 2 a command-line usage error (same one-line
form); 128 + the signal's number when interrupted: 130 Ctrl-C (SIGINT), 143 SIGTERM, 129 SIGHUP
(same one-line form; temporary files are removed, nothing is half-written). No traceback for any
of these.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from . import batch, info, mask_command, triton, web
from .errors import UsageError, VampnetError
from .extras import build_side
from .flags import PROG, ArgumentParser, LoraFlag, error_line, add_model_flags, lora_flags, add_seed_flag, controls, cpu_cores, int_range, threads_type
from .interface import WEIGHTS, presets_text
from .memory import MAX_VARIATIONS
from .model import Model, random_seed, variation_paths
from .paths import DEFAULT_MODEL, DEMO_DIR, DEMO_MODEL, check_build_paths, checkpoint_paths, resolve_model
from .progress import Bar
from .session import run_in_progress


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="VampNet as one ONNX model: audio in, new audio out.",
        epilog="presets (vamp/mask/batch --preset NAME; a model without one of these inputs ignores that value):\n"
               + presets_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    sub.required = True

    # ---- vamp
    v = sub.add_parser(
        "vamp",
        help="generate new audio from an audio file (onnxruntime only)",
        description=(
            "Run the model on IN and write OUT. The input (any rate, any channels) is mixed to "
            "mono; the model resamples it to its rate (44.1 kHz for VampNet) and normalises it to "
            "-24 LUFS, and its output comes back at the input's sample rate, length (times "
            "--time-stretch) and loudness; the mono result is copied to each of the input's "
            "channels. Flags left out take the model's defaults (from its metadata)."
        ),
    )
    v.add_argument("input", metavar="IN", help="input audio file (WAV, FLAC, OGG, ...)")
    v.add_argument("-o", "--output", metavar="OUT", required=True,
                   help="output audio file; the format follows the extension "
                        "(with --variations N > 1: OUT-1.ext ... OUT-N.ext)")
    v.add_argument("-m", "--model", metavar="MODEL", default=None,
                   help=f"the .onnx model (default: {DEFAULT_MODEL}; if it is missing, the demo's "
                        f"random-weight {DEMO_MODEL} when `vampnet-onnx demo` has built it)")
    add_seed_flag(v, None, "random seed (default: a random one, printed so the run can be repeated)")
    add_model_flags(v)
    v.add_argument("--variations", type=int_range(1, MAX_VARIATIONS), default=None, metavar="N",
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
    v.add_argument("--threads", type=threads_type, default=None, metavar="N",
                   help=f"onnxruntime intra-op threads, at most the CPU cores ({cpu_cores()} "
                        f"here) (default: onnxruntime's choice)")
    v.set_defaults(func=cmd_vamp)

    # ---- info
    i = sub.add_parser("info", help="print a model's interface, defaults, metadata and size",
                       description="Print a model's inputs (type, shape, default), outputs, "
                                   "metadata and size on disk.")
    i.add_argument("model", metavar="MODEL", nargs="?", default=None,
                   help=f"the .onnx model (default: {DEFAULT_MODEL}, else the demo's model)")
    i.set_defaults(func=info.cmd_info)

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
    b.add_argument("--coarse-lora", metavar="[NAME=]F", action=LoraFlag,
                   help="LoRA checkpoint for the coarse model, folded into its weights; NAME=F "
                        "(repeatable) adds adapter NAME instead, chosen at run time (docs/adapters.md)")
    b.add_argument("--c2f-lora", metavar="[NAME=]F", action=LoraFlag,
                   help="LoRA checkpoint for the coarse-to-fine model; NAME=F as for --coarse-lora")
    b.add_argument("-o", "--output", metavar="PATH", default=DEFAULT_MODEL,
                   help=f"where to write the model (default: {DEFAULT_MODEL})")
    b.add_argument("--weights", choices=WEIGHTS, default=WEIGHTS[0],
                   help="int8: the transformers' matrix weights in block-wise int8 and the codec decoder's "
                        "in float16, under 0.3x the size (opset 21: needs onnxruntime >= 1.18); int8-dynamic: "
                        "the same with int8 activations too (opset 20); web: int8-dynamic for the browser page "
                        "(weights in the .data file, where onnxruntime-web reads them); `python -m benchmarks.floor "
                        "--gemm-only` says which is fastest on this CPU; default float32 (opset 20)")
    b.set_defaults(func=cmd_build, _parser=b)

    # ---- demo
    d = sub.add_parser("demo", help="run the main job on the embedded default model (needs .[build])",
                       description="Run the main job on the embedded default model.")
    d.add_argument("-o", "--output", metavar="OUTDIR", default=DEMO_DIR,
                   help=f"output folder (default: {DEMO_DIR})")
    add_seed_flag(d, None, "random seed (default: the demo's own)")
    d.set_defaults(func=cmd_demo)

    # ---- mask, batch, triton, web (their own modules; Ray is imported only when `batch` runs)
    mask_command.add_parser(sub)
    batch.add_parser(sub)
    triton.add_parser(sub)
    web.add_parser(sub)
    return parser


# --------------------------------------------------------------------------------------------
# vamp


def cmd_vamp(args: argparse.Namespace) -> int:
    t_start = time.monotonic()
    # one run, then the output is written: hand the arena's peak back first (docs/performance.md)
    model = Model(resolve_model(args.model), threads=args.threads or None, release_memory=True)
    seed = random_seed() if args.seed is None else args.seed
    how = "" if args.seed is not None else f" (random; pass --seed {seed} to reproduce)"
    print(f"seed: {seed}{how}", flush=True)  # before the run: an interrupted run can be repeated
    bar = Bar("model")
    result = model.vamp_file(args.input, args.output, seed=seed, variations=args.variations,
                             mask=args.mask_from, save_codes=args.save_codes, plot=args.plot,
                             progress=bar, **controls(args))
    rows, frames, channels = result.audio.shape
    for path in variation_paths(args.output, rows):
        print(f"wrote {path} ({result.rate} Hz, {channels} ch, {frames / result.rate:.2f} s)")
    for p in (args.save_codes, args.plot):
        if p:
            print(f"wrote {p}")
    print(f"elapsed: {time.monotonic() - t_start:.2f} s (model {bar.summary(result.model_s)})")
    return 0


# --------------------------------------------------------------------------------------------
# build / demo (handed over to modules that need the build extras)


def cmd_build(args: argparse.Namespace) -> int:
    separate = [args.codec, args.coarse, args.c2f]
    if args.checkpoints and any(separate):
        args._parser.error("give either --checkpoints DIR or --codec/--coarse/--c2f, not both")
    if not args.checkpoints and not all(separate):
        args._parser.error("give --checkpoints DIR, or all of --codec F --coarse F --c2f F")
    if args.checkpoints:
        paths = checkpoint_paths(args.checkpoints)
    else:
        paths = {"codec": Path(args.codec), "coarse": Path(args.coarse), "c2f": Path(args.c2f)}
    output = Path(args.output)
    loras, adapters = lora_flags(getattr(args, "loras", None) or [])
    adapter_files = {f"{name} {stage} LoRA": Path(f) for name, *files in adapters
                     for stage, f in zip(("coarse", "c2f"), files) if f}
    check_build_paths({**paths, **{k: Path(v) if v else None for k, v in loras.items()}, **adapter_files}, output)
    build_model = build_side("build", "vampnet_onnx.builder.build", "build_model")
    try:
        build_model(paths["codec"], paths["coarse"], paths["c2f"], output, **loras, weights=args.weights,
                    **({"adapters": adapters} if adapters else {}))
    except ValueError as e:  # a bad checkpoint (CheckpointError) or a bad pair of models, in one line
        raise UsageError(str(e)) from None
    except OSError as e:  # e.g. the disk filled up or the folder became read-only meanwhile
        raise UsageError(f"cannot write {output}: {e.strerror or e}") from None
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    rc = build_side("demo", "vampnet_onnx.demo", "demo_command")(args)
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
    except VampnetError as e:
        sys.stderr.write(error_line(str(e)) + "\n")
        return 1
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        sys.stderr.write(("\n" if sys.stderr.isatty() else "")
                         + error_line(f"interrupted ({signal.Signals(signum).name})") + "\n")
        if run_in_progress():
            # onnxruntime ignored the terminate request: exiting normally would abort inside it
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + signum)
        return 128 + signum
