"""Reading VampNet / LAC checkpoint files.

The files are what audiotools' `BaseModel.save` writes: a torch zip holding
`{"state_dict": {name: tensor}, "metadata": {"kwargs": {...}, ...}}`. We read them with
`weights_only=True` (nothing in the file is executed), check every tensor we take for
presence and shape (upstream loads with strict=False and silently keeps random weights
for missing keys; we refuse), and fold weight norm and LoRA into plain weights exactly as
upstream's eval mode computes them.
"""
from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

LORA_SCALE = 0.125  # loralib: lora_alpha / r = 1 / 8


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used, with a message that says why and what to do."""


# Plain-data types that training logs in real checkpoints may hold; everything else is refused.
_multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
_SAFE_GLOBALS = [np.dtype, np.ndarray, _multiarray.scalar, _multiarray._reconstruct]
_SAFE_GLOBALS += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]


def _unpickle(path: Path, what: str):
    if not path.exists():
        raise CheckpointError(f"{what} not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"{what} is not a file: {path}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if not zipfile.is_zipfile(path):
        if magic == b"PK\x03\x04":  # a zip archive whose end (the central directory) is missing
            raise CheckpointError(f"{path} is truncated or damaged (an incomplete zip archive); "
                                  f"copy or download it again")
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (expected a torch.save zip archive, "
            f"as VampNet's codec.pth / coarse.pth / c2f.pth are)"
        )
    # torch.load never checks the members' CRCs: flipped bytes would load as wrong weights
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} is damaged ({e}); copy or download it again") from None
    if bad is not None:
        raise CheckpointError(f"{path} is damaged (checksum error in {bad}); copy or download it again")
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message suggests weights_only=False, i.e. running the file's code: not repeated
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path} holds Python objects that are not plain data{what}; they are refused because "
            f"loading never executes code from a checkpoint: use the original checkpoint file"
        ) from None
    except Exception as e:  # corrupt zip members, truncated files, ...
        raise CheckpointError(f"{path} could not be read as a checkpoint: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    lines = [s for s in str(e).splitlines() if s.strip()]
    return lines[0] if lines else type(e).__name__


def _check_finite(path: Path, state: dict) -> None:
    """NaN or infinite weights would build a model that runs but generates nothing useful."""
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{path}: tensor '{key}' holds NaN or infinite values; "
                                  f"the checkpoint is damaged (use the original file)")


def _identify(kwargs: dict, state: dict) -> str:
    if "encoder_rates" in kwargs or any(k.startswith("encoder.block.") for k in state):
        return "codec"
    if "embedding_dim" in kwargs or any(k.startswith("transformer.layers.") for k in state):
        return "c2f" if kwargs.get("n_conditioning_codebooks", 0) > 0 else "coarse"
    return "unknown"


class Checkpoint:
    """The tensors and constructor kwargs of one file, handed out one checked tensor at a time."""

    def __init__(self, path, kind: str):
        self.path = Path(path)
        self.kind = kind
        what = {"codec": "codec checkpoint", "coarse": "coarse checkpoint", "c2f": "c2f checkpoint"}[kind]
        data = _unpickle(self.path, what)
        if not isinstance(data, dict) or "state_dict" not in data or "metadata" not in data:
            keys = list(data)[:5] if isinstance(data, dict) else type(data).__name__
            raise CheckpointError(
                f"{self.path} is not a VampNet/LAC checkpoint: expected a dict with 'state_dict' and "
                f"'metadata' (got {keys}); a bare state dict can only be given as a LoRA file"
            )
        state, meta = data["state_dict"], data["metadata"]
        kwargs = meta.get("kwargs") if isinstance(meta, dict) else None
        if not isinstance(kwargs, dict):
            raise CheckpointError(f"{self.path}: metadata has no 'kwargs' (constructor arguments)")
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{self.path}: 'state_dict' is not a mapping of names to tensors")
        found = _identify(kwargs, state)
        if found != kind:
            raise CheckpointError(
                f"{self.path} holds a {found} model but was given as the {kind} checkpoint "
                f"(n_conditioning_codebooks={kwargs.get('n_conditioning_codebooks')}); check which file goes where"
            )
        _check_finite(self.path, state)
        self.kwargs = kwargs
        self.state = {k: v.detach().float() if v.is_floating_point() else v for k, v in state.items()}
        self.taken: set[str] = set()

    def add_lora(self, path) -> None:
        """Overlay a LoRA-only state dict (upstream's `coarse_lora_ckpt` / `c2f_lora_ckpt`)."""
        path = Path(path)
        data = _unpickle(path, f"{self.kind} LoRA file")
        kwargs = None
        if isinstance(data, dict) and "state_dict" in data:
            meta = data.get("metadata")
            kwargs = meta.get("kwargs") if isinstance(meta, dict) else None
            data = data["state_dict"]
        if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
            raise CheckpointError(f"{path} is not a LoRA state dict (a mapping of names to tensors)")
        if not any(k.endswith(("lora_A", "lora_B")) for k in data):
            raise CheckpointError(f"{path} holds no lora_A / lora_B tensors; is it a LoRA file?")
        self._check_lora_belongs(path, data, kwargs)
        _check_finite(path, data)
        for k, v in data.items():
            expected = self._lora_shape(k) if k not in self.state else tuple(self.state[k].shape)
            if expected is None:
                raise CheckpointError(f"{path}: tensor '{k}' does not belong to the {self.kind} model in {self.path}")
            if tuple(v.shape) != expected:
                raise CheckpointError(
                    f"{path}: tensor '{k}' has shape {tuple(v.shape)}, the {self.kind} model needs {expected}"
                )
            self.state[k] = v.detach().float()

    def _check_lora_belongs(self, path: Path, data: dict, kwargs: dict | None) -> None:
        """A LoRA must come from this kind of model, not only fit its shapes (the released coarse
        and c2f models share d_model, so a c2f LoRA fits the coarse model's first 16 layers)."""
        flag = f"--{self.kind.replace('_', '-')}-lora"
        if isinstance(kwargs, dict):  # a LoRA saved with its model's constructor kwargs
            for name in ("n_codebooks", "n_conditioning_codebooks", "n_layers", "embedding_dim"):
                if name in kwargs and name in self.kwargs and kwargs[name] != self.kwargs[name]:
                    raise CheckpointError(
                        f"{path} is a LoRA of another model ({name}={kwargs[name]}, the {self.kind} "
                        f"model in {self.path} has {self.kwargs[name]}); check which file goes "
                        f"with {flag}")
        # upstream's lora_state_dict covers every transformer layer of the model it came from
        layers = {int(m.group(1)) for k in data if (m := re.match(r"transformer\.layers\.(\d+)\.", k))}
        n_layers = self.kwargs.get("n_layers")
        if layers and isinstance(n_layers, int) and layers != set(range(n_layers)):
            raise CheckpointError(
                f"{path} is a LoRA of a model with {max(layers) + 1} transformer layers, the "
                f"{self.kind} model in {self.path} has {n_layers}; check which file goes with {flag}")

    def _lora_shape(self, key: str, r: int = 8) -> tuple[int, int] | None:
        """Shape of a LoRA factor the base file may lack (released base files may carry none)."""
        base, _, factor = key.rpartition(".")
        weight = self.state.get(f"{base}.weight")
        if factor not in ("lora_A", "lora_B") or weight is None or weight.ndim != 2:
            return None
        out_features, in_features = weight.shape
        return (r, in_features) if factor == "lora_A" else (out_features, r)

    def take(self, key: str, shape: tuple[int, ...]) -> torch.Tensor:
        t = self.state.get(key)
        if t is None:
            raise CheckpointError(f"{self.path}: missing tensor '{key}' (expected shape {tuple(shape)})")
        if tuple(t.shape) != tuple(shape):
            raise CheckpointError(f"{self.path}: tensor '{key}' has shape {tuple(t.shape)}, expected {tuple(shape)}")
        self.taken.add(key)
        return t

    def has(self, key: str) -> bool:
        return key in self.state

    def weight_norm(self, prefix: str, shape: tuple[int, ...]) -> torch.Tensor:
        """`v · (g / ‖v‖)` over all dims but 0, computed by PyTorch's own kernel as upstream's forward does."""
        v = self.take(f"{prefix}.weight_v", shape)
        g = self.take(f"{prefix}.weight_g", (shape[0],) + (1,) * (len(shape) - 1))
        return torch._weight_norm(v, g, 0)

    def lora_linear(self, prefix: str, out_features: int, in_features: int, r: int = 8) -> torch.Tensor:
        """loralib's eval-time merge `W + 0.125 · B @ A`; without A/B in the file the delta is exactly zero."""
        w = self.take(f"{prefix}.weight", (out_features, in_features))
        if not self.has(f"{prefix}.lora_A") and not self.has(f"{prefix}.lora_B"):
            return w.clone()
        a = self.take(f"{prefix}.lora_A", (r, in_features))
        b = self.take(f"{prefix}.lora_B", (out_features, r))
        return w + (b @ a) * LORA_SCALE

    def warn_unused(self) -> None:
        unused = sorted(set(self.state) - self.taken)
        if unused:
            warnings.warn(f"{self.path}: {len(unused)} tensors were not used, e.g. {unused[:3]}", stacklevel=2)
