"""Reading an explicit mask from a file (`vamp --mask-from`, ``Model.vamp_file(mask=PATH)``)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import UsageError


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask file: .npz (key 'mask', else 'mask_out') or .npy; returns int64 (B, C, T) of
    0/1. (The number of codebooks and frames is checked against the model once it is loaded.)"""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"mask file not found: {p}")
    try:
        with open(p, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise UsageError(f"cannot read mask file {p}: {e.strerror or e}") from e
    # np.load treats anything that is neither .npy nor .npz as a pickle: say what it really is
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):
        raise UsageError(f"mask file {p} is not a NumPy .npy or .npz file (write it with numpy.save "
                         f"or --save-codes)")
    try:
        loaded = np.load(p, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e):  # a .npy of Python objects: never unpickled
            raise UsageError(f"mask file {p} holds Python objects, not an integer array; "
                             f"save the mask as an integer array") from e
        raise UsageError(f"cannot read mask file {p} (expected .npz or .npy): {e}") from e
    except Exception as e:  # noqa: BLE001 - any unreadable file
        raise UsageError(f"cannot read mask file {p} (expected .npz or .npy): {e}") from e
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            key = next((k for k in ("mask", "mask_out") if k in loaded.files), None)
            if key is None:
                raise UsageError(f"mask file {p} has no 'mask' array (it has: {', '.join(loaded.files) or 'nothing'})")
            arr = loaded[key]
    else:
        arr = np.asarray(loaded)
    return check_mask(arr, f"mask in {p}")


def check_mask(mask, what: str = "mask") -> np.ndarray:
    """``mask`` as int64 (B, C, T) of 0/1, from (C, T) or (B, C, T); UsageError otherwise."""
    arr = np.asarray(mask)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] < 1:
        raise UsageError(f"{what} must have shape (codebooks, T) or (B, codebooks, T), got {tuple(np.shape(arr))}")
    if arr.dtype.kind not in "biuf":
        raise UsageError(f"{what} must be integer 0/1, got dtype {arr.dtype}")
    if not np.all((arr == 0) | (arr == 1)):
        raise UsageError(f"{what} must contain only 0 and 1")
    return arr.astype(np.int64)
