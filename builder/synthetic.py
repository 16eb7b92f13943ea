"""Random-weight checkpoints in VampNet's real on-disk format.

`write_random_checkpoints(folder, codec_kwargs, coarse_kwargs, c2f_kwargs)` writes `codec.pth`,
`coarse.pth` and `c2f.pth` exactly as audiotools' `BaseModel.save(package=False)` does for upstream's
LAC and VampNet: `torch.save({"state_dict": OrderedDict, "metadata": {"kwargs": full_kwargs}})` with
upstream's key names, order and shapes (LoRA A/B and weight_g/v included), so that they exercise the
same loading code as the released files. The keys and shapes are our modules' own, mapped back to the
file's spelling by the same rules that load them (`Mapping.layout`). Values are random but sensible
(unit-ish activations, positive gains and Snake alphas), so generated audio stays finite.

`state_dict_shapes(kind, kwargs)` is that key/shape table: generation uses it, and tests use it to count
parameters of the released shapes without allocating them.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import torch

from . import codec, transformer

# The released models' kwargs as their files record them (upstream's conf/vampnet.yml, conf/c2f.yml).
RELEASED_COARSE = {
    "n_heads": 20,
    "n_layers": 20,
    "r_cond_dim": 0,
    "n_codebooks": 4,
    "n_conditioning_codebooks": 0,
    "latent_dim": 8,
    "embedding_dim": 1280,
    "vocab_size": 1024,
    "flash_attn": False,
    "noise_mode": "mask",
    "dropout": 0.1,
    "ctrl_dims": None,
    "cfg_dropout_prob": 0.2,
    "cond_dim": 0,
}
RELEASED_C2F = {**RELEASED_COARSE, "n_layers": 16, "n_codebooks": 14, "n_conditioning_codebooks": 4}
# The released codec's decoder config is not published: this stand-in has the known interface
# (44.1 kHz, hop 768, 14 × 1024 × 8, D = 1024) and plausible sizes.
RELEASED_CODEC_STANDIN = {
    "encoder_dim": 64,
    "encoder_rates": [2, 4, 8, 12],
    "decoder_dim": 512,
    "decoder_rates": [12, 8, 4, 2],
    "n_codebooks": 14,
    "codebook_size": 1024,
    "codebook_dim": 8,
    "quantizer_dropout": False,
    "sample_rate": 44100,
}

# The upstream fixtures' tiny configurations (tests/fixtures/upstream/checkpoints/tiny/*.pth metadata).
TINY_CODEC = {**RELEASED_CODEC_STANDIN, "encoder_dim": 8, "decoder_dim": 32}
TINY_COARSE = {**RELEASED_COARSE, "n_heads": 4, "n_layers": 2, "embedding_dim": 64}
TINY_C2F = {**RELEASED_C2F, "n_heads": 4, "n_layers": 2, "embedding_dim": 64}

def full_kwargs(kind: str, kwargs: dict) -> dict:
    """The kwargs a file records: every constructor kwarg with a default, overridden by `kwargs`."""
    defaults = codec.LAC_DEFAULTS if kind == "codec" else transformer.VAMPNET_DEFAULTS
    unknown = set(kwargs) - set(defaults)
    if unknown:
        raise ValueError(f"unknown {kind} kwargs: {sorted(unknown)}")
    return {**defaults, **kwargs}


def state_dict_shapes(kind: str, kwargs: dict) -> "OrderedDict[str, tuple[int, ...]]":
    """Upstream's state_dict keys → shapes for `kind` "codec", "coarse" or "c2f" with these kwargs."""
    if kind not in ("codec", "coarse", "c2f"):
        raise ValueError(f"kind must be 'codec', 'coarse' or 'c2f', not {kind!r}")
    kw = full_kwargs(kind, kwargs)
    if kind == "codec":
        return OrderedDict(codec.CHECKPOINT_MAPPING.layout(codec.LAC(codec.CodecConfig.from_kwargs(kw, check=False))))
    cfg = transformer.TransformerConfig.from_kwargs(kw)
    if (cfg.n_conditioning_codebooks > 0) != (kind == "c2f"):
        raise ValueError(f"{kind} kwargs with n_conditioning_codebooks={cfg.n_conditioning_codebooks}")
    with torch.device("meta"):  # shapes only: a released transformer would take 1.3 GB
        model = transformer.VampNetTransformer(cfg)
    return OrderedDict(transformer.checkpoint_mapping().layout(model))


def parameter_count(kind: str, kwargs: dict) -> int:
    return sum(math.prod(shape) for shape in state_dict_shapes(kind, kwargs).values())


def _random_tensor(key: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    def normal(std, mean=0.0):
        return torch.randn(shape, generator=gen) * std + mean

    def uniform(lo, hi):
        return torch.rand(shape, generator=gen) * (hi - lo) + lo

    fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    if key.startswith("decoder.model.") and key.endswith(".weight_g") and shape == (1, 1, 1):
        # the decoder's last conv (→ 1 channel, before tanh): its input is ~25 in scale with unit gains, so a
        # gain of ~0.01 keeps the audio mostly inside tanh's linear range instead of saturated at ±1
        return uniform(0.008, 0.012)
    if key.endswith(".weight_g") or key.endswith(".alpha"):
        return uniform(0.7, 1.3)  # positive gains / Snake alphas around 1
    if key.endswith(".lora_B"):
        return normal(0.02)  # small but non-zero, so the LoRA merge matters
    if key.endswith(".lora_A") or key.endswith(".weight_v") or key.endswith("out_proj.weight"):
        return normal(1.0 / math.sqrt(fan_in))
    if key.endswith(".bias"):
        return normal(0.01)
    if key.endswith("norm_1.weight") or key.endswith("norm_3.weight") or key == "transformer.norm.weight":
        return normal(0.1, 1.0)  # RMSNorm scales around 1
    if key.endswith("relative_attention_bias.weight"):
        return normal(0.5)
    if key.endswith("codebook.weight") or key == "embedding.special.MASK":
        return normal(1.0)
    if key.endswith(".weight") and len(shape) == 2:  # plain / LoRA base linear (out, in)
        return normal(1.0 / math.sqrt(shape[1]))
    raise KeyError(f"no initialiser for {key} {shape}")


def random_state_dict(kind: str, kwargs: dict, seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    gen = torch.Generator().manual_seed(seed)
    return OrderedDict((k, _random_tensor(k, shape, gen)) for k, shape in state_dict_shapes(kind, kwargs).items())


def write_checkpoint(path, kind: str, kwargs: dict, seed: int = 0) -> Path:
    path = Path(path)
    state = random_state_dict(kind, kwargs, seed)
    torch.save({"state_dict": state, "metadata": {"kwargs": full_kwargs(kind, kwargs)}}, path)
    return path


def write_random_checkpoints(folder, codec_kwargs: dict, coarse_kwargs: dict, c2f_kwargs: dict, seed: int = 0) -> dict:
    """Write codec.pth, coarse.pth and c2f.pth into `folder`; returns {"codec": path, "coarse": …, "c2f": …}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, (kind, kw) in enumerate((("codec", codec_kwargs), ("coarse", coarse_kwargs), ("c2f", c2f_kwargs))):
        out[kind] = write_checkpoint(folder / f"{kind}.pth", kind, kw, seed=seed * 3 + i)
    return out
