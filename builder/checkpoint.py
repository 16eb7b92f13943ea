"""Reading VampNet / LAC checkpoint files and mapping them onto our modules.

The files are what audiotools' `BaseModel.save` writes: a torch zip holding
`{"state_dict": {name: tensor}, "metadata": {"kwargs": {...}, ...}}`. We read them with
`weights_only=True` (nothing in the file is executed) and refuse damaged ones. A `Mapping` then
turns the file's tensors into the module's own `state_dict()`: renamed, weight norm and LoRA
folded exactly as upstream's eval mode computes them, every tensor present with its exact shape
(upstream loads with strict=False and silently keeps random weights for missing keys; we refuse).
docs/checkpoints.md describes the format and the rules.
"""
from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from vampnet_onnx.errors import one_line

LORA_R = 8  # vampnet.modules.transformer.LORA_R
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
        raise CheckpointError(f"{path} could not be read as a checkpoint: {one_line(e)}") from None


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

    def add_lora(self, path, layout: dict[str, tuple[int, ...]]) -> None:
        """Overlay a LoRA-only state dict (upstream's `coarse_lora_ckpt` / `c2f_lora_ckpt`); `layout`
        is the model's `Mapping.layout`: which tensors belong to it, with which shapes."""
        self.state.update(self.read_lora(path, layout))

    def read_lora(self, path, layout: dict[str, tuple[int, ...]], only_factors: bool = False) -> dict[str, torch.Tensor]:
        """A LoRA file's tensors, each checked against `layout` (this model's keys and shapes).
        `only_factors`: refuse anything but lora_A / lora_B (an adapter can change nothing else)."""
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
            if k not in layout:
                raise CheckpointError(f"{path}: tensor '{k}' does not belong to the {self.kind} model in {self.path}")
            if tuple(v.shape) != layout[k]:
                raise CheckpointError(
                    f"{path}: tensor '{k}' has shape {tuple(v.shape)}, the {self.kind} model needs {layout[k]}"
                )
            if only_factors and not k.endswith(("lora_A", "lora_B")):
                raise CheckpointError(
                    f"{path}: tensor '{k}' is not a LoRA factor; an adapter holds only lora_A / lora_B "
                    f"(build a full fine-tuned checkpoint as a model of its own)")
        return {k: v.detach().float() for k, v in data.items()}

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

    def warn_unused(self) -> None:
        unused = sorted(set(self.state) - self.taken)
        if unused:
            warnings.warn(f"{self.path}: {len(unused)} tensors were not used, e.g. {unused[:3]}", stacklevel=2)


# --------------------------------------------------------------------------------------------
# Mapping a file onto a module: the module's own state_dict() says what it needs


class Rule:
    """Which of the file's keys (after renaming) it applies to, and how the file stores those
    tensors; this base rule: as they are."""

    last = optional = False  # see WeightNorm and LoRA

    def __init__(self, pattern: str = ".*"):
        self.pattern = re.compile(pattern)

    def sources(self, key: str, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        return {key: shape}

    def fold(self, t: torch.Tensor) -> torch.Tensor:
        return t


class WeightNorm(Rule):
    """torch's `weight_norm(dim=0)`: `weight` is stored as `weight_g`, its norm per slice of dim 0
    (shape (n, 1, ...)), and `weight_v`, its direction; they are registered after the module's
    other tensors, so the file lists them after `bias`."""

    last = True

    def sources(self, key, shape):
        base = key.removesuffix(".weight")
        return {f"{base}.weight_g": (shape[0],) + (1,) * (len(shape) - 1), f"{base}.weight_v": shape}

    def fold(self, g, v):
        return torch._weight_norm(v, g, 0)  # PyTorch's own kernel, as upstream's forward runs it


class LoRA(Rule):
    """loralib's Linear: `weight` plus the factors `lora_A` (r, in) and `lora_B` (out, r), merged in
    eval mode as W + B @ A · alpha/r. The factors may be absent (together): the delta is then zero."""

    optional = True

    def sources(self, key, shape):
        base, (out_features, in_features) = key.removesuffix(".weight"), shape
        return {key: shape, f"{base}.lora_A": (LORA_R, in_features), f"{base}.lora_B": (out_features, LORA_R)}

    def fold(self, w, a=None, b=None):
        return w.clone() if a is None else w + (b @ a) * LORA_SCALE


class Mapping:
    """How a file's tensors make up a module's state_dict.

    `renames` are (our key prefix, the file's) pairs, listed in the order the file lists those
    tensors; `rules` say which of the file's keys (after renaming) are stored otherwise than as a
    plain tensor. Keys no rule matches are copied as they are.
    """

    def __init__(self, rules=(), renames=()):
        self.rules, self.renames = tuple(rules), tuple(renames)

    def _rename(self, key: str) -> tuple[int, str]:
        """The file's spelling of our key, and the position of its rename (the file's order)."""
        for i, (ours, theirs) in enumerate(self.renames):
            if key.startswith(ours):
                return i, theirs + key[len(ours):]
        return len(self.renames), key

    def file_key(self, key: str) -> str:
        """The file's name for our `key`."""
        return self._rename(key)[1]

    def plan(self, model: torch.nn.Module) -> list[tuple[str, Rule, dict[str, tuple[int, ...]]]]:
        """(our key, its rule, the file's tensors it is made of), in the file's order: by rename, then
        by module, weight norm's tensors after the other tensors of their module."""
        entries, module_position = [], {}
        for i, (key, tensor) in enumerate(model.state_dict().items()):
            order, file_key = self._rename(key)
            rule = next((r for r in self.rules if r.pattern.fullmatch(file_key)), Rule())
            module = module_position.setdefault(key.rpartition(".")[0], i)
            entries.append(((order, module, rule.last), key, rule, rule.sources(file_key, tuple(tensor.shape))))
        entries.sort(key=lambda entry: entry[0])
        return [entry[1:] for entry in entries]

    def layout(self, model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
        """The file's keys and shapes for `model`, in the file's order (LoRA factors included)."""
        return {name: shape for _, _, sources in self.plan(model) for name, shape in sources.items()}

    def load(self, model: torch.nn.Module, ck: Checkpoint) -> torch.nn.Module:
        """Fill `model` from `ck`: every tensor checked, folded, then `load_state_dict(strict=True)`."""
        state = {}
        for key, rule, sources in self.plan(model):
            names = list(sources)
            if rule.optional and not any(ck.has(name) for name in names[1:]):
                names = names[:1]
            state[key] = rule.fold(*(ck.take(name, sources[name]) for name in names)).contiguous()
        ck.warn_unused()
        model.load_state_dict(state, strict=True, assign=True)
        return model.requires_grad_(False).eval()
