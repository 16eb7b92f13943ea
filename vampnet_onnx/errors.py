"""The package's user-facing errors: each one line that says what to do.

The command line prints any of them as ``vampnet-onnx: error: <message>`` with exit code 1; the
Python API raises them. ``one_line`` is how a foreign exception (onnxruntime's, soundfile's,
Ray's) becomes part of such a message.
"""
from __future__ import annotations


class VampnetError(Exception):
    """Base of the errors below: catch this to catch any of them."""


class UsageError(VampnetError):
    """A bad request: an unknown keyword, a value out of range, a missing file, a bad path."""


class AudioError(VampnetError):
    """A problem with an audio file or an output path."""


class ModelError(VampnetError):
    """A problem loading or running the model."""


def one_line(err: BaseException, limit: int = 400) -> str:
    """The first non-blank line of ``err`` (its type's name if it has none), at most ``limit``
    characters."""
    lines = [s.strip() for s in str(err).strip().splitlines() if s.strip()]
    text = lines[0] if lines else type(err).__name__
    return text if len(text) <= limit else text[:limit] + "..."
