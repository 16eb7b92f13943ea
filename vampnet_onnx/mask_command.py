"""`vampnet-onnx mask IN --plot mask.png`: the mask `vamp` would use, drawn without generating.

``Model.mask`` runs the model with `generate` 0 (vampnet_onnx/preview.py: no codec, no generation,
well under a second at any model size); this module only reads the file, prints the seed and
writes the picture. Runtime only (onnxruntime, numpy; matplotlib for the picture).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .audio import AtomicOutputs, check_output_path, load_audio
from .errors import UsageError
from .flags import add_model_flags, add_seed_flag, controls, flag
from .model import Model, random_seed
from .paths import DEFAULT_MODEL, model_files, resolve_model
from .plot import plot_available
from .preview import write_preview


def add_parser(sub) -> None:
    k = sub.add_parser(
        "mask", help="picture the mask `vamp` would use, without generating (onnxruntime only)",
        description="Run the model with generate 0 (no codec, no generation: well under a second) on "
                    "IN with the flags of `vamp`, and draw the mask it would use: codebooks over "
                    "time, kept and generated tokens, note onsets and beats. Give `vamp` the same "
                    "--seed and flags to generate with this mask.")
    k.add_argument("input", metavar="IN", help="input audio file (WAV, FLAC, OGG, ...)")
    k.add_argument("--plot", metavar="FILE.png", required=True, help="where to write the picture")
    k.add_argument("-m", "--model", metavar="MODEL", default=None,
                   help=f"the .onnx model (default: {DEFAULT_MODEL}, as for `vamp`)")
    add_seed_flag(k, None, "random seed (default: a random one, printed: pass it to `vamp`)")
    add_model_flags(k)
    k.set_defaults(func=cmd_mask)


def cmd_mask(args: argparse.Namespace) -> int:
    src, plot = Path(args.input), Path(args.plot)
    model_path = resolve_model(args.model)
    if not plot_available():
        raise UsageError("`mask` needs matplotlib, which is not installed: pip install matplotlib "
                         "(or pip install -e .[plot])")
    check_output_path(plot, inputs=[("the input audio", src)] + [("the model", f) for f in model_files(model_path)])
    model = Model(model_path)
    seed = random_seed() if args.seed is None else args.seed
    print(f"seed: {seed}" + ("" if args.seed is not None else f" (random; pass --seed {seed} to `vamp`)"))
    prepared = load_audio(src)
    given = controls(args)
    preview = model.mask(prepared.samples, prepared.sample_rate, seed=seed, **given)
    preset = given.pop("preset", None)
    title = "  ".join([src.name, f"seed {seed}"] + ([f"preset '{preset}'"] if preset else [])
                      + [f"{flag(name)} {value:g}" for name, value in given.items()])
    with AtomicOutputs() as w:
        w.add(plot, lambda tmp: write_preview(tmp, preview, title))
    print(f"kept {1 - preview.mask.mean():.0%} of the tokens, {len(preview.onsets)} onsets, "
          f"{len(preview.beats)} beats, {preview.seconds:.2f} s")
    print(f"wrote {plot}")
    return 0
