"""`vampnet-onnx info MODEL`: a model's inputs, outputs, defaults, presets, metadata and size on disk."""
from __future__ import annotations

import argparse
import json
from typing import Sequence

from .interface import PRESETS, preset_values, presets_text
from .model import Model
from .paths import resolve_model
from .session import disk_size, human_size, shape_text, type_name


def cmd_info(args: argparse.Namespace) -> int:
    model = Model(resolve_model(args.model))
    defaults = model.defaults()
    print(f"model: {model.path}")
    if model.producer:
        print(f"producer: {model.producer}")
    total, files = disk_size(model.path)
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
    # what `--preset NAME` sets on this model: the table's presets, less the inputs it lacks
    print("presets (vamp/mask/batch --preset NAME):")
    print(presets_text({name: preset_values(name, model.inputs) for name in PRESETS}))
    ignored = sorted({k for values in PRESETS.values() for k in values} - set(model.inputs))
    if ignored:
        print(f"  (not inputs of this model, so the presets leave them out: {', '.join(ignored)})")
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
