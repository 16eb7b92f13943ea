"""The LAC codec (VampNet's audio tokenizer) as small, export-friendly torch modules.

What upstream computes (hugofloresgarcia/lac, used by VampNet main), re-written so that
`torch.export` + `torch.onnx.export(dynamo=True)` see only plain convolutions:

* weight norm is folded once at load time with PyTorch's own kernel (`Checkpoint.weight_norm`),
  so the weights are ordinary parameters and no hooks run;
* no Python branching on tensor sizes, no `.item()`, no data-dependent shapes: the time axis
  stays symbolic through the whole graph;
* every expression whose rounding decides a code (RVQ distance, straight-through residual)
  is written exactly as upstream writes it, so the codes are bit-identical in eager mode.

Parameter names mirror upstream's state-dict keys (`encoder.block.1.block.0.block.1.weight`
is the folded `…weight_g/weight_v` pair), so ONNX initializers are easy to trace back.

Public API: `CodecConfig`, `CodecEncoder` (audio -> codes), `CodecDecoder` (codes -> audio),
`Codec` and `load_codec(path)`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from builder.checkpoint import Checkpoint, CheckpointError

# LAC hard-codes these (they are not constructor kwargs).
ENCODER_DILATIONS = (1, 3, 9)
MRF_KERNELS = (3, 7, 11)
MRF_DILATIONS = (1, 3, 5)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CodecConfig:
    """LAC constructor arguments; the defaults are LAC's class defaults (reference 1.2.1)."""

    encoder_dim: int = 64
    encoder_rates: tuple[int, ...] = (2, 4, 8, 8)
    decoder_dim: int = 512
    decoder_rates: tuple[int, ...] = (4, 4, 4, 2, 2, 2)
    n_codebooks: int = 9
    codebook_size: int = 1024
    codebook_dim: int = 8
    sample_rate: int = 44100

    @property
    def hop_length(self) -> int:
        # Upstream: numpy.prod(decoder_rates) -- from the *decoder* rates.
        return math.prod(self.decoder_rates)

    @property
    def latent_dim(self) -> int:
        """D: encoder output width = quantizer in/out width = decoder input width."""
        return self.encoder_dim * 2 ** len(self.encoder_rates)

    @classmethod
    def from_kwargs(cls, kwargs: dict, source: str = "codec checkpoint") -> "CodecConfig":
        """As audiotools' `BaseModel.load`: unknown kwargs dropped, missing ones take defaults."""
        names = {f.name for f in fields(cls)}
        given = {k: v for k, v in kwargs.items() if k in names}
        try:
            for k in ("encoder_rates", "decoder_rates"):
                if k in given:
                    given[k] = tuple(int(r) for r in given[k])
            if isinstance(given.get("codebook_dim"), (list, tuple)):
                dims = [int(d) for d in given["codebook_dim"]]
                n = int(given.get("n_codebooks", cls.n_codebooks))
                if len(dims) != n or len(set(dims)) != 1:
                    raise CheckpointError(
                        f"{source}: per-level codebook_dim {dims} is not supported "
                        f"(only one codebook_dim shared by all {n} levels)"
                    )
                given["codebook_dim"] = dims[0]
            for k in ("encoder_dim", "decoder_dim", "n_codebooks", "codebook_size", "codebook_dim", "sample_rate"):
                if k in given:
                    given[k] = int(given[k])
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{source}: malformed codec kwargs ({e})") from None
        config = cls(**given)
        config._validate(source)
        return config

    def _validate(self, source: str) -> None:
        positive = [self.encoder_dim, self.decoder_dim, self.n_codebooks, self.codebook_size,
                    self.codebook_dim, self.sample_rate, *self.encoder_rates, *self.decoder_rates]
        if not self.encoder_rates or not self.decoder_rates or min(positive) <= 0:
            raise CheckpointError(f"{source}: codec kwargs must be positive integers: {self}")
        hop_enc = math.prod(self.encoder_rates)
        if hop_enc != self.hop_length:
            raise CheckpointError(
                f"{source}: prod(encoder_rates) = {hop_enc} (rates {list(self.encoder_rates)}) differs from "
                f"hop_length = prod(decoder_rates) = {self.hop_length} (rates {list(self.decoder_rates)}); "
                f"frames would not line up with samples"
            )
        odd = [r for r in (*self.encoder_rates, *self.decoder_rates) if r % 2]
        if odd:
            # LAC's k=2s, pad=s//2 convs lose (encoder) / add (decoder) one sample for odd s, so
            # codes would no longer be L/hop frames long and audio no longer T*hop samples.
            raise CheckpointError(
                f"{source}: odd codec rates {odd} are not supported (encoder_rates "
                f"{list(self.encoder_rates)}, decoder_rates {list(self.decoder_rates)})"
            )
        if self.decoder_dim % 2 ** len(self.decoder_rates):
            raise CheckpointError(
                f"{source}: decoder_dim {self.decoder_dim} is not divisible by 2**{len(self.decoder_rates)}"
            )


# --------------------------------------------------------------------------------------------
# Layers with folded weights
# --------------------------------------------------------------------------------------------

def _frozen(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone().contiguous(), requires_grad=False)


class Snake(nn.Module):
    """LAC Snake1d: x + sin²(αx)/(α + 1e-9), in upstream's exact operation order (ref. 3.1)."""

    def __init__(self, ck: Checkpoint, prefix: str, channels: int):
        super().__init__()
        self.alpha = _frozen(ck.take(f"{prefix}.alpha", (1, channels, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Upstream reshapes to (B, C, -1) and back, a no-op for our 3-D activations.
        return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)


class Conv(nn.Module):
    """Weight-normed Conv1d, folded: W = v·(g/‖v‖) with the norm per output channel."""

    def __init__(self, ck: Checkpoint, prefix: str, c_in: int, c_out: int, kernel: int,
                 stride: int = 1, padding: int = 0, dilation: int = 1):
        super().__init__()
        self.weight = _frozen(ck.weight_norm(prefix, (c_out, c_in, kernel)))
        self.bias = _frozen(ck.take(f"{prefix}.bias", (c_out,)))
        self.stride, self.padding, self.dilation = stride, padding, dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)


class ConvTranspose(nn.Module):
    """Weight-normed ConvTranspose1d, folded. Its weight is (in, out, k) and weight norm's dim 0
    is the *input* channel, so g is (in, 1, 1) and the norm runs over (out, k) (ref. 2.1)."""

    def __init__(self, ck: Checkpoint, prefix: str, c_in: int, c_out: int, kernel: int,
                 stride: int, padding: int):
        super().__init__()
        self.weight = _frozen(ck.weight_norm(prefix, (c_in, c_out, kernel)))
        self.bias = _frozen(ck.take(f"{prefix}.bias", (c_out,)))
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose1d(x, self.weight, self.bias, self.stride, self.padding)


# --------------------------------------------------------------------------------------------
# Encoder (ref. 3.3)
# --------------------------------------------------------------------------------------------

class EncoderLayer(nn.Module):
    """x + Conv_k1(Snake(Conv_k7,dil(Snake(x)))); 'same' padding, so no cropping is needed."""

    def __init__(self, ck: Checkpoint, prefix: str, dim: int, dilation: int):
        super().__init__()
        p = f"{prefix}.block"
        self.block = nn.Sequential(
            Snake(ck, f"{p}.0", dim),
            Conv(ck, f"{p}.1", dim, dim, 7, dilation=dilation, padding=3 * dilation),
            Snake(ck, f"{p}.2", dim),
            Conv(ck, f"{p}.3", dim, dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class EncoderBlock(nn.Module):
    """Three dilated residual layers at width dim/2, then a strided conv to width dim."""

    def __init__(self, ck: Checkpoint, prefix: str, dim: int, stride: int):
        super().__init__()
        p, c = f"{prefix}.block", dim // 2
        self.block = nn.Sequential(
            *[EncoderLayer(ck, f"{p}.{j}", c, d) for j, d in enumerate(ENCODER_DILATIONS)],
            Snake(ck, f"{p}.3", c),
            Conv(ck, f"{p}.4", c, dim, 2 * stride, stride=stride, padding=stride // 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Encoder(nn.Module):
    """(B, 1, L) -> (B, D, L/hop)."""

    def __init__(self, ck: Checkpoint, config: CodecConfig):
        super().__init__()
        p, d = "encoder.block", config.encoder_dim
        layers: list[nn.Module] = [Conv(ck, f"{p}.0", 1, d, 7, padding=3)]
        for i, stride in enumerate(config.encoder_rates, start=1):
            d *= 2
            layers.append(EncoderBlock(ck, f"{p}.{i}", d, stride))
        n = len(config.encoder_rates)
        layers += [Snake(ck, f"{p}.{n + 1}", d), Conv(ck, f"{p}.{n + 2}", d, d, 3, padding=1)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


# --------------------------------------------------------------------------------------------
# Residual vector quantizer (ref. 4.2, 4.3)
# --------------------------------------------------------------------------------------------

def nearest_code(latents: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codebook row on L2-normalised vectors: (B, d, T) -> (B, T) int64.

    The expressions are upstream's `decode_latents` (`F.normalize`, the association
    `(a - b) + c`, `2·ê` before the matmul) so the codes are bit-identical in eager mode; argmax
    returns the first maximum on ties, as upstream's `(-dist).max(1)[1]`.

    Upstream flattens to rows first ("b d t -> (b t) d"). We keep the batch axis instead: for
    B = 1 that is the very same strided view (even `dist` is bit-identical), and there is no
    reshape whose view-or-copy decision torch.export would have to guard on (T > 1, B != 1).
    For B > 1 upstream's reshape copies, so `dist` may differ in the last ulp (codes in practice not).
    """
    enc = F.normalize(latents.transpose(1, 2), dim=-1)  # (B, T, d)
    cb = F.normalize(codebook)
    dist = enc.pow(2).sum(-1, keepdim=True) - 2 * enc @ cb.t() + cb.pow(2).sum(1, keepdim=True).t()
    return torch.argmax(-dist, dim=-1)


def lookup(indices: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Raw (un-normalised) codebook rows: (B, T) -> (B, d, T)."""
    return F.embedding(indices, codebook).transpose(1, 2)


class Quantizer(nn.Module):
    """One RVQ level: in_proj (D -> d), codebook (V, d), out_proj (d -> D)."""

    def __init__(self, ck: Checkpoint, prefix: str, config: CodecConfig, with_in_proj: bool):
        super().__init__()
        D, d, V = config.latent_dim, config.codebook_dim, config.codebook_size
        # The decoder path never uses in_proj; leaving it out keeps its weights out of that graph.
        self.in_proj = Conv(ck, f"{prefix}.in_proj", D, d, 1) if with_in_proj else None
        self.out_proj = Conv(ck, f"{prefix}.out_proj", d, D, 1)
        self.codebook = _frozen(ck.take(f"{prefix}.codebook.weight", (V, d)))


class CodecEncoder(nn.Module):
    """audio float32 (B, 1, L), L a multiple of hop_length -> codes int64 (B, K, L/hop)."""

    def __init__(self, ck: Checkpoint, config: CodecConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(ck, config)
        self.quantizers = nn.ModuleList(
            Quantizer(ck, f"quantizer.quantizers.{q}", config, with_in_proj=True)
            for q in range(config.n_codebooks)
        )

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        residual = self.encoder(audio)
        codes = []
        for vq in self.quantizers:
            ze = vq.in_proj(residual)
            idx = nearest_code(ze, vq.codebook)
            zq = lookup(idx, vq.codebook)
            # Straight-through form `ze + (zq - ze)`: it rounds differently from zq, and the next
            # level's residual sees exactly this value upstream.
            residual = residual - vq.out_proj(ze + (zq - ze))
            codes.append(idx)
        return torch.stack(codes, dim=1)


# --------------------------------------------------------------------------------------------
# Decoder (ref. 3.4, 4.5)
# --------------------------------------------------------------------------------------------

class ResidualLayer(nn.Module):
    def __init__(self, ck: Checkpoint, prefix: str, ch: int, kernel: int, dilation: int):
        super().__init__()
        p = f"{prefix}.layer"
        self.layer = nn.Sequential(
            Snake(ck, f"{p}.0", ch),
            Conv(ck, f"{p}.1", ch, ch, kernel, dilation=dilation, padding=(kernel - 1) * dilation // 2),
            Snake(ck, f"{p}.2", ch),
            Conv(ck, f"{p}.3", ch, ch, kernel, padding=(kernel - 1) // 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layer(x)


class ResidualBlock(nn.Module):
    def __init__(self, ck: Checkpoint, prefix: str, ch: int, kernel: int):
        super().__init__()
        self.block = nn.Sequential(
            *[ResidualLayer(ck, f"{prefix}.block.{j}", ch, kernel, d) for j, d in enumerate(MRF_DILATIONS)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class MRF(nn.Module):
    """Multi-receptive-field fusion: three residual stacks on the same input, summed, then /3."""

    def __init__(self, ck: Checkpoint, prefix: str, ch: int):
        super().__init__()
        self.mrf_blocks = nn.ModuleList(
            ResidualBlock(ck, f"{prefix}.mrf_blocks.{m}", ch, k) for m, k in enumerate(MRF_KERNELS)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Upstream starts from the integer 0; 0 + y == y (up to the sign of a zero).
        total = self.mrf_blocks[0](x)
        for block in self.mrf_blocks[1:]:
            total = total + block(x)
        return total / len(self.mrf_blocks)  # a division, not a multiplication by 1/3


class DecoderBlock(nn.Module):
    def __init__(self, ck: Checkpoint, prefix: str, c_in: int, c_out: int, stride: int):
        super().__init__()
        p = f"{prefix}.block"
        self.block = nn.Sequential(
            Snake(ck, f"{p}.0", c_in),
            ConvTranspose(ck, f"{p}.1", c_in, c_out, 2 * stride, stride=stride, padding=stride // 2),
            MRF(ck, f"{p}.2", c_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Decoder(nn.Module):
    """(B, D, T) -> (B, 1, T·hop), ending in tanh."""

    def __init__(self, ck: Checkpoint, config: CodecConfig):
        super().__init__()
        p, cd = "decoder.model", config.decoder_dim
        layers: list[nn.Module] = [Conv(ck, f"{p}.0", config.latent_dim, cd, 7, padding=3)]
        for i, stride in enumerate(config.decoder_rates, start=1):
            layers.append(DecoderBlock(ck, f"{p}.{i}", cd // 2 ** (i - 1), cd // 2**i, stride))
        n, c = len(config.decoder_rates), cd // 2 ** len(config.decoder_rates)
        layers += [Snake(ck, f"{p}.{n + 1}", c), Conv(ck, f"{p}.{n + 2}", c, 1, 7, padding=3), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class CodecDecoder(nn.Module):
    """codes int64 (B, K, T), values in [0, V] -> audio float32 (B, 1, T·hop).

    Upstream main's `VampNet.decode` literally: mask tokens (V) become 0, each code becomes its
    raw codebook row, the rows are re-quantised (`quantizer.from_latents`, same nearest-neighbour
    rule as encoding), the levels' out_proj outputs are summed in order, and the sum is decoded.
    """

    def __init__(self, ck: Checkpoint, config: CodecConfig):
        super().__init__()
        self.config = config
        self.mask_token = config.codebook_size
        self.quantizers = nn.ModuleList(
            Quantizer(ck, f"quantizer.quantizers.{q}", config, with_in_proj=False)
            for q in range(config.n_codebooks)
        )
        self.decoder = Decoder(ck, config)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        codes = torch.where(codes == self.mask_token, torch.zeros_like(codes), codes)
        # CodebookEmbedding.from_codes: the latents of all levels, concatenated on channels.
        latents = torch.cat([lookup(codes[:, q], vq.codebook) for q, vq in enumerate(self.quantizers)], dim=1)
        d = self.config.codebook_dim
        z = None
        for q, vq in enumerate(self.quantizers):
            idx = nearest_code(latents[:, q * d:(q + 1) * d], vq.codebook)
            out = vq.out_proj(lookup(idx, vq.codebook))
            z = out if z is None else z + out  # upstream starts from 0; 0 + y == y
        return self.decoder(z)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

@dataclass
class Codec:
    config: CodecConfig
    encoder: CodecEncoder
    decoder: CodecDecoder
    codebooks: torch.Tensor  # float32 (K, V, d_q), raw rows; the transformers' input embedding uses them
    checkpoint_parameters: int  # numel of every tensor in the file


def load_codec(path) -> Codec:
    """Build the codec from a LAC checkpoint (`codec.pth`); every tensor is shape-checked."""
    ck = Checkpoint(path, "codec")
    config = CodecConfig.from_kwargs(ck.kwargs, source=str(Path(path)))
    with torch.no_grad():
        encoder = CodecEncoder(ck, config).eval()
        decoder = CodecDecoder(ck, config).eval()
    codebooks = torch.stack([vq.codebook.detach().clone() for vq in decoder.quantizers])
    ck.warn_unused()
    return Codec(
        config=config,
        encoder=encoder,
        decoder=decoder,
        codebooks=codebooks,
        checkpoint_parameters=sum(t.numel() for t in ck.state.values()),
    )
