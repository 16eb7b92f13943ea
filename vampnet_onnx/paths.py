"""Where things are by default, and the files that make up a model on disk."""
from __future__ import annotations

import os
from pathlib import Path

from .audio import check_writable_folder, same_file
from .errors import UsageError

DEFAULT_MODEL = "artifacts/vampnet.onnx"
"""What `vampnet-onnx build` writes and `vamp` reads unless told otherwise."""
DEMO_DIR = "artifacts/demo"
"""`vampnet-onnx demo`'s folder (served as /artifacts/demo/ by `vampnet-onnx web`)."""
DEMO_MODEL_NAME = "vampnet-tiny.onnx"
DEMO_MODEL = f"{DEMO_DIR}/{DEMO_MODEL_NAME}"
"""The random-weight tiny model that `vampnet-onnx demo` builds (web/app.mjs loads the same path)."""


def data_file(model: str | os.PathLike) -> Path:
    """The model's external data file, ``<model>.data``: what the builder writes beside a model
    too large for one protobuf (and what onnx and torch.onnx name it by default)."""
    p = Path(model)
    return p.with_name(p.name + ".data")


def model_files(model: str | os.PathLike) -> list[Path]:
    """The model file and its external data file (which may not exist)."""
    return [Path(model), data_file(model)]


def resolve_model(path: str | os.PathLike | None, note=print) -> Path:
    """The model to use: ``path`` if given; else DEFAULT_MODEL, or the demo's model when only
    `vampnet-onnx demo` has been run (``note`` says that it has random weights)."""
    if path is not None:
        return Path(path)
    if not Path(DEFAULT_MODEL).exists() and Path(DEMO_MODEL).is_file():
        note(f"note: {DEFAULT_MODEL} not found; using the demo model {DEMO_MODEL}, which has "
             f"RANDOM weights (noise-like output); build a real one with `vampnet-onnx build`")
        return Path(DEMO_MODEL)
    return Path(DEFAULT_MODEL)


CHECKPOINT_NAMES = ("codec", "coarse", "c2f")


def checkpoint_paths(folder: str | os.PathLike) -> dict[str, Path]:
    """The three checkpoints a build reads from one folder."""
    return {name: Path(folder) / f"{name}.pth" for name in CHECKPOINT_NAMES}


def check_build_paths(inputs: dict[str, Path | None], output: Path) -> None:
    """Before any work: neither the model nor its .data file may be one of the input files
    (links followed), and the output folder (or its nearest existing parent) must be writable."""
    if output.is_dir():
        raise UsageError(f"the output is a folder: {output} (give the .onnx file's path)")
    for out in model_files(output):
        for name, path in inputs.items():
            if path is not None and same_file(out, path):
                raise UsageError(f"refusing to overwrite the {name.replace('_', ' ')} checkpoint "
                                 f"{path} with the model ({out}); choose another -o")
    folder = output.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # build creates the missing folders (and says so)
    if not folder.is_dir():
        raise UsageError(f"cannot create the output folder {output.parent}: {folder} is not a folder")
    check_writable_folder(folder)
