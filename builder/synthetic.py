"""Random-weight checkpoints in VampNet's real on-disk format.

`write_random_checkpoints(folder, codec_kwargs, coarse_kwargs, c2f_kwargs)` writes `codec.pth`,
`coarse.pth` and `c2f.pth` exactly as audiotools' `BaseModel.save(package=False)` does for upstream's
LAC and VampNet: `torch.save({"state_dict": OrderedDict, "metadata": {"kwargs": full_kwargs}})` with
upstream's key names, order and shapes (reference tables 1.2.2 and 1.3.2, LoRA A/B and weight_g/v
included), so that they exercise the same loading code as the released files. Values are random but
sensible (unit-ish activations, positive gains and Snake alphas), so generated audio stays finite.

`state_dict_shapes(kind, kwargs)` is the single key/shape table: generation uses it, and tests use it to
count parameters of the released shapes without allocating them.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import torch

from .transformer import VAMPNET_DEFAULTS, TransformerConfig, checkpoint_shapes

# LAC.__init__ defaults (reference §1.2.1): what a codec file records for kwargs not given.
LAC_DEFAULTS = {
    "encoder_dim": 64,
    "encoder_rates": [2, 4, 8, 8],
    "decoder_dim": 512,
    "decoder_rates": [4, 4, 4, 2, 2, 2],
    "n_codebooks": 9,
    "codebook_size": 1024,
    "codebook_dim": 8,
    "quantizer_dropout": False,
    "sample_rate": 44100,
}

# The released models' kwargs as their files record them (conf/vampnet.yml, conf/c2f.yml; reference §1.3.1).
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
# The released codec's decoder config is unknown (reference §1.2.3): this stand-in has the known interface
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

_ENC_DILATIONS = (1, 3, 9)
_MRF_KERNELS = (3, 7, 11)
_MRF_DILATIONS = (1, 3, 5)


def full_kwargs(kind: str, kwargs: dict) -> dict:
    """The kwargs a file records: every constructor kwarg with a default, overridden by `kwargs`."""
    defaults = LAC_DEFAULTS if kind == "codec" else VAMPNET_DEFAULTS
    unknown = set(kwargs) - set(defaults)
    if unknown:
        raise ValueError(f"unknown {kind} kwargs: {sorted(unknown)}")
    return {**defaults, **kwargs}


def codec_shapes(kwargs: dict) -> "OrderedDict[str, tuple[int, ...]]":
    """LAC state_dict keys and shapes in upstream's order (reference table 1.2.2)."""
    kw = full_kwargs("codec", kwargs)
    d0, enc_rates = kw["encoder_dim"], list(kw["encoder_rates"])
    cd, dec_rates = kw["decoder_dim"], list(kw["decoder_rates"])
    K, V = kw["n_codebooks"], kw["codebook_size"]
    dqs = kw["codebook_dim"] if isinstance(kw["codebook_dim"], (list, tuple)) else [kw["codebook_dim"]] * K
    D = d0 * 2 ** len(enc_rates)
    s: OrderedDict[str, tuple[int, ...]] = OrderedDict()

    def conv(prefix, out_c, in_c, k):  # weight-normed Conv1d: bias, g, v
        s[f"{prefix}.bias"] = (out_c,)
        s[f"{prefix}.weight_g"] = (out_c, 1, 1)
        s[f"{prefix}.weight_v"] = (out_c, in_c, k)

    def snake(prefix, ch):
        s[f"{prefix}.alpha"] = (1, ch, 1)

    conv("encoder.block.0", d0, 1, 7)
    for i, stride in enumerate(enc_rates, start=1):
        c, p = d0 * 2 ** (i - 1), f"encoder.block.{i}.block"
        for j in range(len(_ENC_DILATIONS)):
            snake(f"{p}.{j}.block.0", c)
            conv(f"{p}.{j}.block.1", c, c, 7)
            snake(f"{p}.{j}.block.2", c)
            conv(f"{p}.{j}.block.3", c, c, 1)
        snake(f"{p}.3", c)
        conv(f"{p}.4", 2 * c, c, 2 * stride)
    snake(f"encoder.block.{len(enc_rates) + 1}", D)
    conv(f"encoder.block.{len(enc_rates) + 2}", D, D, 3)

    for q in range(K):
        p = f"quantizer.quantizers.{q}"
        conv(f"{p}.in_proj", dqs[q], D, 1)
        conv(f"{p}.out_proj", D, dqs[q], 1)
        s[f"{p}.codebook.weight"] = (V, dqs[q])

    conv("decoder.model.0", cd, D, 7)
    for i, stride in enumerate(dec_rates, start=1):
        c_in, c_out, p = cd // 2 ** (i - 1), cd // 2**i, f"decoder.model.{i}.block"
        snake(f"{p}.0", c_in)
        # weight-normed ConvTranspose1d: weight (in, out, k), norm per input channel
        s[f"{p}.1.bias"] = (c_out,)
        s[f"{p}.1.weight_g"] = (c_in, 1, 1)
        s[f"{p}.1.weight_v"] = (c_in, c_out, 2 * stride)
        for m, kernel in enumerate(_MRF_KERNELS):
            for j in range(len(_MRF_DILATIONS)):
                lp = f"{p}.2.mrf_blocks.{m}.block.{j}.layer"
                snake(f"{lp}.0", c_out)
                conv(f"{lp}.1", c_out, c_out, kernel)
                snake(f"{lp}.2", c_out)
                conv(f"{lp}.3", c_out, c_out, kernel)
    c_last = cd // 2 ** len(dec_rates)
    snake(f"decoder.model.{len(dec_rates) + 1}", c_last)
    conv(f"decoder.model.{len(dec_rates) + 2}", 1, c_last, 7)
    return s


def state_dict_shapes(kind: str, kwargs: dict) -> "OrderedDict[str, tuple[int, ...]]":
    """Upstream's state_dict keys → shapes for `kind` "codec", "coarse" or "c2f" with these kwargs."""
    if kind == "codec":
        return codec_shapes(kwargs)
    if kind in ("coarse", "c2f"):
        cfg = TransformerConfig.from_kwargs(full_kwargs(kind, kwargs))
        if (cfg.n_conditioning_codebooks > 0) != (kind == "c2f"):
            raise ValueError(f"{kind} kwargs with n_conditioning_codebooks={cfg.n_conditioning_codebooks}")
        return checkpoint_shapes(cfg)
    raise ValueError(f"kind must be 'codec', 'coarse' or 'c2f', not {kind!r}")


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
