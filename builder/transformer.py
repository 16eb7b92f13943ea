"""VampNet's bidirectional transformer as a small, export-friendly torch module.

`VampNetTransformer(config)` maps token codes straight to logits:

    codes (B, C, T) int64, values in [0, V] (V = the MASK token)  ->  logits (B, T·C_p, V) float32

with sequence index `n = t·C_p + c`: `logits[b, n, :]` is upstream's `logits[b, :, n]` (upstream
flattens its (B, C_p, T) predictions time-major). The input embedding is part of the module: a
per-codebook table (C, V+1, d_q) made of the codec's raw codebook rows plus the model's learned MASK
row at index V. `load_transformer(path, codec, kind)` maps a VampNet `coarse.pth` / `c2f.pth` onto it
(builder/checkpoint.py, docs/checkpoints.md).

The math follows upstream op for op (its einsums as the same matrix products, same scalar forms), so
that torch CPU results match upstream's to the last bit where the kernels are the same. Everything that
depends on the sequence length is computed from `codes.shape[2]` inside `forward`, so `torch.export`
keeps T dynamic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import LORA_R, LORA_SCALE, Checkpoint, CheckpointError, LoRA, Mapping, Rule, WeightNorm

NUM_BUCKETS = 32  # T5 relative attention buckets (bidirectional: 16 per side)
MAX_DISTANCE = 128
RMS_EPS = 1e-6

# VampNet.__init__'s defaults on upstream main: what a file's missing kwargs become, and what a file records.
VAMPNET_DEFAULTS = {
    "n_heads": 20,
    "n_layers": 16,
    "r_cond_dim": 0,
    "n_codebooks": 9,
    "n_conditioning_codebooks": 0,
    "latent_dim": 8,
    "embedding_dim": 1280,
    "vocab_size": 1024,
    "flash_attn": True,
    "noise_mode": "mask",
    "dropout": 0.1,
    "ctrl_dims": None,
    "cfg_dropout_prob": 0.2,
    "cond_dim": 0,
}


@dataclass(frozen=True)
class TransformerConfig:
    """The VampNet constructor arguments that shape the model."""

    n_heads: int
    n_layers: int
    n_codebooks: int
    n_conditioning_codebooks: int
    latent_dim: int
    embedding_dim: int
    vocab_size: int

    @property
    def n_predict_codebooks(self) -> int:
        return self.n_codebooks - self.n_conditioning_codebooks

    @property
    def head_dim(self) -> int:
        return self.embedding_dim // self.n_heads

    @property
    def mask_token(self) -> int:
        return self.vocab_size

    @classmethod
    def from_kwargs(cls, kwargs: dict) -> "TransformerConfig":
        """As audiotools' `BaseModel.load` does: unknown kwargs are dropped, missing ones take VampNet's
        class defaults. Configurations whose weights this module cannot represent are refused."""
        kw = {**VAMPNET_DEFAULTS, **{k: v for k, v in kwargs.items() if k in VAMPNET_DEFAULTS}}
        if kw["flash_attn"]:
            how = "records flash_attn=True" if "flash_attn" in kwargs else "does not record flash_attn (VampNet's default is True)"
            raise CheckpointError(
                f"the model {how}: flash-attention models use FlashMHA weights without the relative position "
                f"bias, which this exporter does not support (the released coarse/c2f files record flash_attn=False)"
            )
        if kw["r_cond_dim"] != 0:
            raise CheckpointError(
                f"r_cond_dim={kw['r_cond_dim']}: conditioned (FiLM) VampNet models are not supported; "
                f"upstream asserts r_cond_dim == 0 for generation"
            )
        if kw["noise_mode"] != "mask":
            raise CheckpointError(f"noise_mode={kw['noise_mode']!r}: only 'mask' models (with a MASK token) are supported")
        if kw["ctrl_dims"] is not None:
            raise CheckpointError(f"ctrl_dims={kw['ctrl_dims']!r}: models with control inputs are not supported")
        cfg = cls(**{f: int(kw[f]) for f in cls.__dataclass_fields__})
        if min(cfg.n_heads, cfg.n_layers, cfg.n_codebooks, cfg.latent_dim, cfg.embedding_dim, cfg.vocab_size) <= 0:
            raise CheckpointError(f"invalid VampNet configuration {cfg}")
        if not 0 <= cfg.n_conditioning_codebooks < cfg.n_codebooks:
            raise CheckpointError(
                f"n_conditioning_codebooks={cfg.n_conditioning_codebooks} must be in [0, n_codebooks={cfg.n_codebooks})"
            )
        if cfg.embedding_dim % cfg.n_heads:
            raise CheckpointError(f"embedding_dim={cfg.embedding_dim} is not divisible by n_heads={cfg.n_heads}")
        return cfg


# ---------------------------------------------------------------------------------------------------------
# Modules. Parameters are allocated empty (no random init: the real model has 336 M of them) and filled by
# `load_state_dict`; they never require grad.


def _param(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape), requires_grad=False)


class Linear(nn.Module):
    """Bias-free linear layer (the checkpoint's own LoRA already merged into `weight`)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = _param(out_features, in_features)

    def forward(self, x: torch.Tensor, adapter: torch.Tensor | None = None) -> torch.Tensor:
        return F.linear(x, self.weight)


class AdapterLinear(Linear):
    """A LoRA'd layer that also holds the factors of n fine-tunes (docs/adapters.md): adapter a in
    [1, n] computes with W + LORA_SCALE · B_a @ A_a, adapter 0 with W itself (its factors scaled
    by 0, so W + 0 = W exactly: no zero slot is stored).

    The factors are stored transposed and stacked, `lora_At` (n, in, r) and `lora_Bt` (n, r, out),
    so that the product lands in the layout the MatMul reads (W transposed, as the exporter stores
    it). Each of the product's elements sums the same r products in the same order as upstream's
    `B @ A`, so folded here the weight equals, bit for bit, the one a build with that LoRA alone
    folds (on runtimes with fused multiply-add, as torch and onnxruntime on x86).

    `fold=False` (int8 builds) computes the low-rank path beside the plain product instead,
    x·Wᵀ + LORA_SCALE · (x·A_aᵀ)·B_aᵀ, so that W stays a constant the quantizer can turn into int8;
    it rounds differently from a folded weight (and the int8 W differs anyway).
    """

    def __init__(self, in_features: int, out_features: int, n_adapters: int, fold: bool = True):
        super().__init__(in_features, out_features)
        # not in state_dict(): the checkpoint mapping fills `weight`, load_transformer the factors
        self.register_buffer("lora_At", torch.zeros(n_adapters, in_features, LORA_R), persistent=False)
        self.register_buffer("lora_Bt", torch.zeros(n_adapters, LORA_R, out_features), persistent=False)
        self.fold = fold

    def forward(self, x: torch.Tensor, adapter: torch.Tensor | None = None) -> torch.Tensor:
        if adapter is None:
            return F.linear(x, self.weight)
        index = torch.clamp(adapter - 1, min=0).reshape(1)
        scale = torch.where(adapter > 0, LORA_SCALE, 0.0)
        a_t = torch.index_select(self.lora_At, 0, index)[0]  # (in, r)
        b_t = torch.index_select(self.lora_Bt, 0, index)[0]  # (r, out)
        if self.fold:
            return torch.matmul(x, self.weight.t() + (a_t @ b_t) * scale)
        return torch.matmul(x, self.weight.t()) + torch.matmul(torch.matmul(x, a_t), b_t) * scale


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = RMS_EPS):
        super().__init__()
        self.weight = _param(dim)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(var + self.eps)
        return self.weight * x


class CodebookEmbedding(nn.Module):
    """codes (B, C, T) -> (B, E, T): look up each codebook's latent table, concatenate the C latents along
    channels (channel c·d_q + j), then `out_proj`, a k=1 Conv1d with bias."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        C, V, dq = cfg.n_codebooks, cfg.vocab_size, cfg.latent_dim
        self.n_codebooks, self.latent_dim = C, dq
        # table[c, v] = codec codebook c row v for v < V; table[c, V] = MASK[c].
        self.table = _param(C, V + 1, dq)
        self.register_buffer("offsets", torch.arange(C, dtype=torch.long)[:, None] * (V + 1), persistent=False)
        self.out_proj_weight = _param(cfg.embedding_dim, C * dq, 1)
        self.out_proj_bias = _param(cfg.embedding_dim)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        # One gather from the flattened (C·(V+1), d_q) table; codebook c's rows start at c·(V+1).
        lat = F.embedding(codes + self.offsets, self.table.flatten(0, 1))  # (B, C, T, d_q)
        lat = lat.permute(0, 1, 3, 2).flatten(1, 2)  # (B, C·d_q, T)
        return F.conv1d(lat, self.out_proj_weight, self.out_proj_bias)


class RelativePositionBias(nn.Module):
    """T5 bidirectional bucketed relative position bias, (H, 1, T, T)."""

    def __init__(self, n_heads: int):
        super().__init__()
        self.weight = _param(NUM_BUCKETS, n_heads)

    @staticmethod
    def buckets(length: int, device=None) -> torch.Tensor:
        pos = torch.arange(length, dtype=torch.long, device=device)
        rel = pos[None, :] - pos[:, None]  # key − query
        half = NUM_BUCKETS // 2
        max_exact = half // 2
        out = (rel > 0).to(torch.long) * half
        a = torch.abs(rel)
        is_small = a < max_exact
        # |rel| is clamped to ≥ 1 before the log so that no −inf is ever cast to int64 (a = 0 takes the exact
        # branch anyway, so the buckets are unchanged); otherwise upstream's expression verbatim.
        large = max_exact + (
            torch.log(a.clamp(min=1).float() / max_exact) / math.log(MAX_DISTANCE / max_exact) * (half - max_exact)
        ).to(torch.long)
        large = torch.clamp(large, max=half - 1)
        return out + torch.where(is_small, a, large)

    def forward(self, length: int) -> torch.Tensor:
        values = F.embedding(self.buckets(length, self.weight.device), self.weight)  # (T, T, H)
        return values.permute(2, 0, 1).unsqueeze(1)


def _lora_linear(adapters: int, fold: bool):
    """The layer type of upstream's `lora.Linear` modules: plain, or holding `adapters` fine-tunes."""
    if not adapters:
        return Linear
    return lambda in_features, out_features: AdapterLinear(in_features, out_features, adapters, fold)


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig, has_relative_attention_bias: bool = False, adapters: int = 0,
                 fold: bool = True):
        super().__init__()
        E, lora = cfg.embedding_dim, _lora_linear(adapters, fold)
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.w_qs, self.w_ks, self.w_vs, self.fc = lora(E, E), Linear(E, E), lora(E, E), lora(E, E)
        if has_relative_attention_bias:  # the first layer's; its bias is used by every layer
            self.relative_attention_bias = RelativePositionBias(cfg.n_heads)

    def _heads(self, x: torch.Tensor, order=(2, 0, 1, 3)) -> torch.Tensor:
        """(B, T, H·d_h) -> (H, B, T, d_h), feature h·d_h + j; keys take order (2, 0, 3, 1): (H, B, d_h, T)."""
        return x.unflatten(-1, (self.n_heads, self.head_dim)).permute(*order)

    def forward(self, y: torch.Tensor, position_bias: torch.Tensor, adapter: torch.Tensor | None = None) -> torch.Tensor:
        q, v = self._heads(self.w_qs(y, adapter)), self._heads(self.w_vs(y, adapter))
        k = self._heads(self.w_ks(y), order=(2, 0, 3, 1))
        # upstream's einsums as plain MatMuls with the keys already transposed: onnxruntime fuses
        # q·kᵀ and the 1/√d_h into one FusedMatMul, where an exported Einsum runs on its own, slower
        # kernel (docs/performance.md); the products are the same.
        attn = torch.matmul(q, k) / math.sqrt(self.head_dim)
        attn = attn + position_bias
        # (upstream's masked_fill with an all-ones mask never fires and is left out)
        attn = torch.softmax(attn, dim=3)
        out = torch.matmul(attn, v)
        out = out.permute(1, 2, 0, 3).flatten(2, 3)  # (B, T, E)
        return self.fc(out, adapter)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """VampNet's NewGELU, in upstream's evaluation order."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class FeedForward(nn.Module):
    """GEGLU: w_1 to 4E, first half gated by GELU_tanh of the second half, w_2 from 2E back to E."""

    def __init__(self, cfg: TransformerConfig, adapters: int = 0, fold: bool = True):
        super().__init__()
        E, lora = cfg.embedding_dim, _lora_linear(adapters, fold)
        self.w_1, self.w_2 = lora(E, 4 * E), lora(2 * E, E)

    def forward(self, x: torch.Tensor, adapter: torch.Tensor | None = None) -> torch.Tensor:
        p1, p2 = self.w_1(x, adapter).chunk(2, dim=-1)
        return self.w_2(p1 * gelu_tanh(p2), adapter)


class TransformerLayer(nn.Module):
    def __init__(self, cfg: TransformerConfig, first: bool = False, adapters: int = 0, fold: bool = True):
        super().__init__()
        self.norm_1 = RMSNorm(cfg.embedding_dim)
        self.self_attn = Attention(cfg, has_relative_attention_bias=first, adapters=adapters, fold=fold)
        self.norm_3 = RMSNorm(cfg.embedding_dim)
        self.feed_forward = FeedForward(cfg, adapters, fold)

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor, adapter: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.norm_1(x), position_bias, adapter)
        return x + self.feed_forward(self.norm_3(x), adapter)


class VampNetTransformer(nn.Module):
    """codes (B, C, T) int64 in [0, V] -> logits (B, T·C_p, V) float32, n = t·C_p + c.

    With `adapters` > 0 the LoRA'd layers hold that many fine-tunes (AdapterLinear) and `adapter`
    (a 0-d int64 in [0, adapters]; None or 0: the base model) picks one; without, `adapter` is
    ignored. `adapter_names` are the fine-tunes' names, in index order from 1."""

    def __init__(self, cfg: TransformerConfig, adapters: int = 0, fold: bool = True):
        super().__init__()
        self.config = cfg
        self.adapter_names: tuple[str, ...] = ()
        self.adapter_fold = fold
        E, V, Cp = cfg.embedding_dim, cfg.vocab_size, cfg.n_predict_codebooks
        self.embedding = CodebookEmbedding(cfg)
        self.layers = nn.ModuleList(TransformerLayer(cfg, first=i == 0, adapters=adapters, fold=fold)
                                    for i in range(cfg.n_layers))
        self.norm = RMSNorm(E)
        self.classifier_weight = _param(V * Cp, E, 1)  # weight norm folded
        self.classifier_bias = _param(V * Cp)
        self.checkpoint_parameters: int | None = None
        self.eval()

    def forward(self, codes: torch.Tensor, adapter: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        x = self.embedding(codes).transpose(1, 2)  # (B, T, E)
        bias = self.layers[0].self_attn.relative_attention_bias(codes.shape[2])
        for layer in self.layers:
            x = layer(x, bias, adapter)
        x = self.norm(x).transpose(1, 2)  # (B, E, T)
        o = F.conv1d(x, self.classifier_weight, self.classifier_bias)  # (B, V·C_p, T), channel p·C_p + c
        o = o.unflatten(1, (cfg.vocab_size, cfg.n_predict_codebooks))  # (B, V, C_p, T)
        return o.permute(0, 3, 2, 1).flatten(1, 2)  # (B, T·C_p, V)


# ---------------------------------------------------------------------------------------------------------
# Loading


class MaskRow(Rule):
    """The embedding table (C, V+1, d_q) is the codec's codebook rows (0..V-1, from the codec's file) and
    the model's learned MASK row (V); the model's file holds only the MASK rows, (C, d_q)."""

    def __init__(self, codebooks: torch.Tensor | None = None):
        super().__init__(r"embedding\.special\.MASK")
        self.codebooks = codebooks

    def sources(self, key, shape):
        return {key: (shape[0], shape[2])}

    def fold(self, mask):
        return torch.cat([self.codebooks[: mask.shape[0]].float(), mask[:, None, :]], dim=1)


def checkpoint_mapping(codebooks: torch.Tensor | None = None) -> Mapping:
    """How a VampNet file maps onto `VampNetTransformer`; `codebooks` are the codec's (K, V, d_q) rows."""
    return Mapping(
        renames=[  # in the file's order
            ("embedding.table", "embedding.special.MASK"),
            ("embedding.out_proj_", "embedding.out_proj."),
            ("layers.", "transformer.layers."),
            ("norm.", "transformer.norm."),
            ("classifier_", "classifier.layers.0."),
        ],
        rules=[
            MaskRow(codebooks),
            LoRA(r"transformer\.layers\.\d+\.(self_attn\.(w_qs|w_vs|fc)|feed_forward\.w_[12])\.weight"),
            WeightNorm(r"classifier\.layers\.0\.weight"),
        ],
    )


def _check_codec(codec, cfg: TransformerConfig, kind: str, path: Path) -> None:
    """The transformer embeds the codec's codebook rows: their number, size and width must fit."""
    codec_name = getattr(codec, "path", None) or "the codec"
    if codec.config.codebook_dim != cfg.latent_dim:
        raise CheckpointError(
            f"{codec_name} has codebook_dim {codec.config.codebook_dim} but the {kind} model "
            f"{path} has latent_dim {cfg.latent_dim}: the transformer embeds the codec's codebook rows, so "
            f"they must be equal (is this the codec the model was trained with?)"
        )
    books = codec.codebooks
    if books.ndim != 3:
        raise CheckpointError(f"{codec_name}: codebooks must be (K, V, d_q), got shape {tuple(books.shape)}")
    K, Vc, dq = books.shape
    if cfg.n_codebooks > K:
        raise CheckpointError(f"the {kind} model {path} uses {cfg.n_codebooks} codebooks but {codec_name} has only {K}")
    if Vc != cfg.vocab_size:
        raise CheckpointError(
            f"{codec_name} has codebook_size {Vc} but the {kind} model {path} has vocab_size {cfg.vocab_size}"
        )
    if dq != cfg.latent_dim:
        raise CheckpointError(
            f"{codec_name} codebook rows have {dq} dims but the {kind} model {path} has latent_dim {cfg.latent_dim}"
        )


def load_transformer(path, codec, kind: str, lora=None, adapters=(), fold: bool = True) -> VampNetTransformer:
    """Build the eval-mode transformer of a VampNet checkpoint.

    `codec` is the loaded codec (anything with `.codebooks`, a float tensor (K, V, d_q) of raw codebook rows,
    and `.config.codebook_dim`); its codebooks are the model's input embedding. `kind` is "coarse" or "c2f".
    `lora` is an optional LoRA-only state dict file overlaid before folding (upstream's coarse_lora_ckpt /
    c2f_lora_ckpt: the delta is applied once). Every tensor is checked for presence and exact shape.
    `adapters` are (name, LoRA file or None) pairs, fine-tunes the model holds side by side
    (AdapterLinear; None: that adapter leaves this model as it is); `fold` as AdapterLinear's.
    """
    if kind not in ("coarse", "c2f"):
        raise ValueError(f"kind must be 'coarse' or 'c2f', not {kind!r}")
    if lora is not None and adapters:
        raise ValueError("give either one LoRA to fold or adapters, not both")
    ck = Checkpoint(path, kind)
    n_params = sum(t.numel() for t in ck.state.values())
    try:
        cfg = TransformerConfig.from_kwargs(ck.kwargs)
    except CheckpointError as e:
        raise CheckpointError(f"{ck.path}: {e}") from None
    _check_codec(codec, cfg, kind, ck.path)

    model = VampNetTransformer(cfg, len(adapters), fold)
    mapping = checkpoint_mapping(codec.codebooks)
    if lora is not None:
        ck.add_lora(lora, mapping.layout(model))
    factors = [ck.read_lora(file, mapping.layout(model), only_factors=True) if file else {} for _, file in adapters]
    mapping.load(model, ck)
    if adapters:
        _fill_adapters(model, mapping, ck, factors, [file for _, file in adapters])
        model.adapter_names = tuple(name for name, _ in adapters)
    model.checkpoint_parameters = n_params
    model.checkpoint_path = Path(path)
    return model


def _fill_adapters(model: VampNetTransformer, mapping: Mapping, ck: Checkpoint, factors: list[dict], files: list) -> None:
    """Each AdapterLinear's stacked factors: adapter k's where its file has them, else zeros (the
    base weight). A LoRA file replaces a model's factors (upstream loads it over them), so the base
    must have none that change its weights: else each adapter would need them subtracted again."""
    for name, module in model.named_modules():
        if not isinstance(module, AdapterLinear):
            continue
        base = mapping.file_key(f"{name}.weight").removesuffix(".weight")
        a_key, b_key = f"{base}.lora_A", f"{base}.lora_B"
        if ck.has(b_key) and bool(ck.state[b_key].any()):
            raise CheckpointError(
                f"{ck.path} carries a fine-tune of its own (nonzero '{b_key}'); adapters replace a model's "
                f"LoRA factors, so give them the base checkpoint the fine-tunes were trained from")
        for k, (found, file) in enumerate(zip(factors, files)):
            if (a_key in found) != (b_key in found):
                missing = b_key if a_key in found else a_key
                raise CheckpointError(f"{file}: '{missing}' is missing (an adapter gives both factors of a layer)")
            if a_key in found:
                module.lora_At[k] = found[a_key].t()
                module.lora_Bt[k] = found[b_key].t()
