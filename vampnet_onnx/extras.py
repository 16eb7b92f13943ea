"""The commands that need the build extras (torch, onnx, onnxscript): imported only when run."""
from __future__ import annotations

import importlib

from .errors import UsageError

BUILD_MODULES = {"torch", "onnx", "onnxscript", "onnx_ir"}
INSTALL = "pip install -e .[build]"


def missing_build_extras(command: str, error: ImportError) -> UsageError | None:
    """The one-line error for a command that needs the build extras, if that is what is missing."""
    name = error.name or ""
    if name.split(".")[0] in BUILD_MODULES:
        return UsageError(f"`{command}` needs the build extras ({name} cannot be imported); "
                          f"install them with: {INSTALL}")
    return None


def build_side(command: str, module: str, name: str):
    """``module.name``, imported only now: `build` and `demo` need the build extras (torch)."""
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as e:
        missing = missing_build_extras(command, e)
        if missing:
            raise missing from e
        if (e.name or "") in (module, "vampnet_onnx.builder"):
            raise UsageError(f"`{command}` is not available here ({e.name} cannot be imported); it "
                             f"needs a source checkout with the build extras: {INSTALL}") from e
        raise  # a bug inside the builder: keep the traceback
    except AttributeError as e:
        raise UsageError(f"`{command}` is not available: {module}.{name} is missing") from e
