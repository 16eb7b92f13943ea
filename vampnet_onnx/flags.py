"""Command-line flags made from the interface table, and argparse with one-line errors.

Every parameter of the model (vampnet_onnx/interface.py) becomes one flag, ``--name-with-dashes``,
typed and range-checked by the table's own ``Input.check``; a new input of the table is a new flag
of `vamp`, `mask` and `batch` without an edit here, and ``--preset NAME`` sets upstream's app
presets (interface.PRESETS). ``controls(args)`` turns the parsed flags back into the keyword
arguments of ``Model.vamp`` / ``Model.vamp_file`` / ``Model.mask`` (``preset`` among them).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import UsageError
from .interface import BY_NAME, CONTROLS, PRESETS, Input, preset_values

PROG = "vampnet-onnx"

FLAG_ALIASES: dict[str, tuple[str, ...]] = {"time_stretch_factor": ("--time-stretch",)}
"""Shorter spellings (shown first), besides the flag named after the input."""


def error_line(message: str) -> str:
    return f"{PROG}: error: {' '.join(str(message).split())}"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block) and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        sys.stderr.write(error_line(f"{message} (see `{self.prog} --help`)") + "\n")
        self.exit(2)


def input_type(i: Input) -> Callable[[str], Any]:
    """The argparse type of a model input: its number type and range, from the table."""

    def parse(text: str):
        try:
            return i.check(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return parse


def int_range(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An integer flag that is not a model input (--variations, --workers, ...)."""
    return input_type(Input("", "int64", None, lo, hi, ""))


def cpu_cores() -> int:
    return os.cpu_count() or 1


def threads_type(text: str) -> int:
    # More threads than cores only slows onnxruntime down (each waits for the others).
    try:
        return int_range(0, cpu_cores())(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"must be an integer between 0 and {cpu_cores()} (this machine has {cpu_cores()} CPU cores; "
            f"0 = onnxruntime's choice), got {text!r}") from None


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_seed_flag(parser: argparse.ArgumentParser, default: int | None, help: str) -> None:
    parser.add_argument("--seed", type=input_type(BY_NAME["seed"]), default=default, metavar="N", help=help)


def preset_type(name: str) -> str:
    try:
        preset_values(name)
    except ValueError as e:  # names the unknown preset and lists the presets
        raise argparse.ArgumentTypeError(str(e)) from None
    return name


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """--preset and the mask and sampling flags (one per model input); shared by `vamp`, `mask`
    and `batch`."""
    g = parser.add_argument_group("mask and sampling (model inputs)")
    g.add_argument("--preset", type=preset_type, default=None, metavar="NAME",
                   help="one of upstream's app presets (quote the name; `vampnet-onnx --help` lists "
                        "what each sets); explicit flags win over it; a model without one of its "
                        "inputs ignores that value: " + "; ".join(f"'{n}'" for n in PRESETS))
    for name in CONTROLS:
        i = BY_NAME[name]
        named = name == "adapter"  # a name or an index: the model's metadata maps names (Model)
        g.add_argument(*FLAG_ALIASES.get(name, ()), flag(name), dest=name, type=str if named else input_type(i),
                       default=None, metavar="NAME" if named else "N" if i.is_int else "X",
                       help=f"{i.help} (default: {i.default})")


def controls(args: argparse.Namespace) -> dict[str, Any]:
    """The model flags given on the command line (--preset as ``preset``), as keyword arguments
    of ``Model.vamp``."""
    given = {name: getattr(args, name) for name in CONTROLS if getattr(args, name, None) is not None}
    if getattr(args, "preset", None) is not None:
        given["preset"] = args.preset
    return given


class LoraFlag(argparse.Action):
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
                raise UsageError(f"{flag} is given twice without a name; one LoRA per stage is folded in "
                               f"(NAME=FILE adds named adapters)")
            folded[f"{stage}_lora"] = value
        elif stage in adapters.setdefault(name, {}):
            raise UsageError(f"adapter {name!r} is given twice with {flag}; each adapter needs its own name")
        else:
            adapters[name][stage] = file
    if adapters and any(folded.values()):
        raise UsageError("give either one LoRA file per stage to fold in, or named adapters (NAME=FILE), not both")
    return folded, [(name, files.get("coarse"), files.get("c2f")) for name, files in adapters.items()]
