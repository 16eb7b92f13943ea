"""The LAC codec (VampNet's audio tokenizer) as small, export-friendly torch modules.

`LAC(config)` mirrors upstream's module tree (hugofloresgarcia/lac, used by VampNet main), so its
`state_dict()` keys are upstream's with weight norm folded: `encoder.block.1.block.0.block.1.weight`
is the file's `…weight_g/weight_v` pair. `load_codec(path)` maps a `codec.pth` onto it
(builder/checkpoint.py, docs/checkpoints.md). Written so that `torch.export` +
`torch.onnx.export(dynamo=True)` see only plain convolutions:

* weight norm is folded once at load time, so the weights are ordinary parameters and no hooks run;
* no Python branching on tensor sizes, no `.item()`, no data-dependent shapes: the time axis
  stays symbolic through the whole graph;
* every expression whose rounding decides a code (RVQ distance, straight-through residual)
  is written exactly as upstream writes it, so the codes are bit-identical in eager mode.

Public API: `CodecConfig`, `LAC`, `CodecEncoder` (audio -> codes), `CodecDecoder` (codes -> audio),
`decoder_for_export` (the decoder as exported, below), `Codec` and `load_codec(path)`.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vampnet_onnx.builder.checkpoint import Checkpoint, CheckpointError, Mapping, WeightNorm

# LAC hard-codes these (they are not constructor kwargs).
ENCODER_DILATIONS = (1, 3, 9)
MRF_KERNELS = (3, 7, 11)
MRF_DILATIONS = (1, 3, 5)

# LAC.__init__'s defaults: what a file's missing kwargs become, and what a file records.
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


@dataclass(frozen=True)
class CodecConfig:
    """The LAC constructor arguments that shape the model (quantizer_dropout only acts in training)."""

    encoder_dim: int
    encoder_rates: tuple[int, ...]
    decoder_dim: int
    decoder_rates: tuple[int, ...]
    n_codebooks: int
    codebook_size: int
    codebook_dim: int
    sample_rate: int

    @property
    def hop_length(self) -> int:
        # Upstream: numpy.prod(decoder_rates) -- from the *decoder* rates.
        return math.prod(self.decoder_rates)

    @property
    def latent_dim(self) -> int:
        """D: encoder output width = quantizer in/out width = decoder input width."""
        return self.encoder_dim * 2 ** len(self.encoder_rates)

    @classmethod
    def from_kwargs(cls, kwargs: dict, source: str = "codec checkpoint", check: bool = True) -> "CodecConfig":
        """As audiotools' `BaseModel.load`: unknown kwargs dropped, missing ones take LAC's defaults.
        `check=False` skips the checks of what the exported graphs need (shape tables only)."""
        kw = {**LAC_DEFAULTS, **kwargs}
        try:
            n = int(kw["n_codebooks"])
            dims = kw["codebook_dim"]  # one for all levels, or a list of one per level
            dims = [int(d) for d in dims] if isinstance(dims, (list, tuple)) else [int(dims)] * n
            config = cls(
                encoder_dim=int(kw["encoder_dim"]),
                encoder_rates=tuple(int(r) for r in kw["encoder_rates"]),
                decoder_dim=int(kw["decoder_dim"]),
                decoder_rates=tuple(int(r) for r in kw["decoder_rates"]),
                n_codebooks=n,
                codebook_size=int(kw["codebook_size"]),
                codebook_dim=dims[0] if dims else 0,
                sample_rate=int(kw["sample_rate"]),
            )
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{source}: malformed codec kwargs ({e})") from None
        if len(dims) != n or len(set(dims)) != 1:
            raise CheckpointError(
                f"{source}: per-level codebook_dim {dims} is not supported "
                f"(only one codebook_dim shared by all {n} levels)"
            )
        if check:
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
# Receptive field (the overlap of the model's codec windows, graphs/codec.py)
# --------------------------------------------------------------------------------------------

def receptive_field_frames(config: CodecConfig) -> int:
    """Frames either side of a window that make its kept frames equal the whole-signal result.

    The span of a chain of convolutions: each conv of kernel k and dilation d adds (k - 1)·d input
    steps of its own layer, a layer step being 1/rate of a frame in the encoder (the rates so far
    multiplied) and 1/rate in the decoder (the rates so far, upsampling). A transposed conv of
    kernel 2s and stride s reads at most two neighbouring inputs (span 1). The MRF's three stacks run
    side by side, so the widest one counts. We take the whole span (not half) on each side, and
    the larger of encoder and decoder: a frame reads at most that far in either direction.
    """
    res_unit = sum((7 - 1) * d for d in ENCODER_DILATIONS)  # k7 dilated conv; the k1 conv adds nothing
    step = 1  # encoder: input samples per step of the current layer
    encoder = 7 - 1  # the first conv
    for s in config.encoder_rates:
        encoder += (res_unit + 2 * s - 1) * step  # three residual units, then the strided conv
        step *= s
    encoder += (3 - 1) * step  # the last conv, at the frame rate
    mrf = max(sum((k - 1) * d + (k - 1) for d in MRF_DILATIONS) for k in MRF_KERNELS)
    per_frame = 1  # decoder: steps of the current layer per frame
    decoder = Fraction(7 - 1)  # the first conv, at the frame rate
    for s in config.decoder_rates:
        decoder += Fraction(1, per_frame)  # the transposed conv
        per_frame *= s
        decoder += Fraction(mrf, per_frame)
    decoder += Fraction(7 - 1, per_frame)  # the last conv
    return max(math.ceil(Fraction(encoder, config.hop_length)), math.ceil(decoder))


def codec_window_frames(config: CodecConfig, overhead: float = 0.05) -> int:
    """Kept frames per window: the overlap either side costs `overhead` of the windows' work."""
    return math.ceil(2 * receptive_field_frames(config) / overhead)


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------

class Snake1d(nn.Module):
    """x + sin²(αx)/(α + 1e-9), in upstream's exact operation order."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Upstream reshapes to (B, C, -1) and back, a no-op for our 3-D activations. Its `.pow(2)`
        # is written s·s: the same correctly rounded square, one Mul instead of a Pow node.
        s = torch.sin(self.alpha * x)
        return x + (self.alpha + 1e-9).reciprocal() * (s * s)


class ResidualUnit(nn.Module):
    """x + Conv_k1(Snake(Conv_k7,dil(Snake(x)))); 'same' padding, so no cropping is needed."""

    def __init__(self, dim: int, dilation: int):
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(dim),
            nn.Conv1d(dim, dim, 7, dilation=dilation, padding=3 * dilation),
            Snake1d(dim),
            nn.Conv1d(dim, dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class EncoderBlock(nn.Module):
    """Three dilated residual units at width dim/2, then a strided conv to width dim."""

    def __init__(self, dim: int, stride: int):
        super().__init__()
        self.block = nn.Sequential(
            *[ResidualUnit(dim // 2, d) for d in ENCODER_DILATIONS],
            Snake1d(dim // 2),
            nn.Conv1d(dim // 2, dim, 2 * stride, stride=stride, padding=stride // 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Encoder(nn.Module):
    """(B, 1, L) -> (B, D, L/hop)."""

    def __init__(self, dim: int, rates: tuple[int, ...]):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv1d(1, dim, 7, padding=3)]
        for stride in rates:
            dim *= 2
            layers.append(EncoderBlock(dim, stride))
        layers += [Snake1d(dim), nn.Conv1d(dim, dim, 3, padding=1)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


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


class VectorQuantize(nn.Module):
    """One RVQ level: in_proj (D -> d), codebook (V, d), out_proj (d -> D)."""

    def __init__(self, dim: int, codebook_size: int, codebook_dim: int):
        super().__init__()
        self.in_proj = nn.Conv1d(dim, codebook_dim, 1)
        self.out_proj = nn.Conv1d(codebook_dim, dim, 1)
        self.codebook = nn.Embedding(codebook_size, codebook_dim)


class ResidualVectorQuantize(nn.Module):
    """K levels, each quantizing what the previous ones left of the latents."""

    def __init__(self, config: CodecConfig):
        super().__init__()
        self.codebook_dim = config.codebook_dim
        self.quantizers = nn.ModuleList(
            VectorQuantize(config.latent_dim, config.codebook_size, config.codebook_dim)
            for _ in range(config.n_codebooks)
        )

    def encode(self, residual: torch.Tensor) -> torch.Tensor:
        """(B, D, T) -> codes (B, K, T)."""
        codes = []
        for vq in self.quantizers:
            ze = vq.in_proj(residual)
            idx = nearest_code(ze, vq.codebook.weight)
            zq = lookup(idx, vq.codebook.weight)
            # Straight-through form `ze + (zq - ze)`: it rounds differently from zq, and the next
            # level's residual sees exactly this value upstream.
            residual = residual - vq.out_proj(ze + (zq - ze))
            codes.append(idx)
        return torch.stack(codes, dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, K, T) in [0, V) -> (B, D, T), as upstream main's `VampNet.decode`: each code
        becomes its raw codebook row, the rows are re-quantised (`quantizer.from_latents`, the
        same nearest-neighbour rule as encoding) and the levels' out_proj outputs summed in order."""
        # CodebookEmbedding.from_codes: the latents of all levels, concatenated on channels.
        latents = torch.cat([lookup(codes[:, q], vq.codebook.weight) for q, vq in enumerate(self.quantizers)], dim=1)
        d = self.codebook_dim
        z = None
        for q, vq in enumerate(self.quantizers):
            idx = nearest_code(latents[:, q * d:(q + 1) * d], vq.codebook.weight)
            out = vq.out_proj(lookup(idx, vq.codebook.weight))
            z = out if z is None else z + out  # upstream starts from 0; 0 + y == y
        return z


class ResidualLayer(nn.Module):
    def __init__(self, ch: int, kernel: int, dilation: int):
        super().__init__()
        self.layer = nn.Sequential(
            Snake1d(ch),
            nn.Conv1d(ch, ch, kernel, dilation=dilation, padding=(kernel - 1) * dilation // 2),
            Snake1d(ch),
            nn.Conv1d(ch, ch, kernel, padding=(kernel - 1) // 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layer(x)


class ResidualBlock(nn.Module):
    def __init__(self, ch: int, kernel: int):
        super().__init__()
        self.block = nn.Sequential(*[ResidualLayer(ch, kernel, d) for d in MRF_DILATIONS])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class MRF(nn.Module):
    """Multi-receptive-field fusion: three residual stacks on the same input, summed, then /3."""

    def __init__(self, ch: int):
        super().__init__()
        self.mrf_blocks = nn.ModuleList(ResidualBlock(ch, k) for k in MRF_KERNELS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Upstream starts from the integer 0; 0 + y == y (up to the sign of a zero).
        total = self.mrf_blocks[0](x)
        for block in self.mrf_blocks[1:]:
            total = total + block(x)
        return total / len(self.mrf_blocks)  # a division, not a multiplication by 1/3


class DecoderBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.block = nn.Sequential(
            Snake1d(c_in),
            nn.ConvTranspose1d(c_in, c_out, 2 * stride, stride=stride, padding=stride // 2),
            MRF(c_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Decoder(nn.Module):
    """(B, D, T) -> (B, 1, T·hop), ending in tanh."""

    def __init__(self, latent_dim: int, dim: int, rates: tuple[int, ...]):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv1d(latent_dim, dim, 7, padding=3)]
        for stride in rates:
            layers.append(DecoderBlock(dim, dim // 2, stride))
            dim //= 2
        layers += [Snake1d(dim), nn.Conv1d(dim, 1, 7, padding=3), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LAC(nn.Module):
    """The whole codec, as upstream's tree: `CodecEncoder` and `CodecDecoder` export its two halves."""

    def __init__(self, config: CodecConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config.encoder_dim, config.encoder_rates)
        self.quantizer = ResidualVectorQuantize(config)
        self.decoder = Decoder(config.latent_dim, config.decoder_dim, config.decoder_rates)


class CodecEncoder(nn.Module):
    """audio float32 (B, 1, L), L a multiple of hop_length -> codes int64 (B, K, L/hop)."""

    def __init__(self, lac: LAC):
        super().__init__()
        self.encoder, self.quantizer = lac.encoder, lac.quantizer

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.quantizer.encode(self.encoder(audio))


class CodecDecoder(nn.Module):
    """codes int64 (B, K, T), values in [0, V] -> audio float32 (B, 1, T·hop); the mask token V
    decodes as code 0, as upstream main's `VampNet.decode` does."""

    def __init__(self, lac: LAC):
        super().__init__()
        self.mask_token = lac.config.codebook_size
        self.quantizer, self.decoder = lac.quantizer, lac.decoder

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        codes = torch.where(codes == self.mask_token, torch.zeros_like(codes), codes)
        return self.decoder(self.quantizer.decode(codes))


# --------------------------------------------------------------------------------------------
# The decoder as exported: the same function, arranged for fewer and faster passes
# --------------------------------------------------------------------------------------------
#
# The decoder's audio only has to equal upstream's to float32 noise (tests/tolerances.py), so its
# export may round differently; the encoder's may not (its codes must be bit-identical), and is
# exported as written above. With g = αx, Snake(x) = x + sin²(αx)/α = (g + sin²g)/α: the α in front
# scales the previous convolution's output channels, the 1/α behind scales the next convolution's
# input channels, and what is left runs as three passes (Sin, Mul, Add) instead of five. Where x
# itself is needed (a residual layer's input, added back at its end), g = αx stays one Mul; the
# MRF's mean (÷3) and the next block's α become one Mul. Upstream divides by α + 1e-9, not α: the
# difference, sin²(αx)·1e-9/α², is below 1e-9·x². (The transposed convolutions stay: as an
# ordinary Conv in polyphase form, interleaved by a Transpose, they ran no faster in onnxruntime;
# docs/performance.md.)

FOLD_MIN_ALPHA = 1e-6  # |α| below this (upstream's α may be 0: Snake is then x) keeps Snake unfolded


def _scaled(conv: nn.Conv1d | nn.ConvTranspose1d, inputs: torch.Tensor | None = None,
            outputs: torch.Tensor | None = None) -> nn.Module:
    """A copy of `conv` computing conv(inputs·x)·outputs, per channel (scaled in float64, stored float32)."""
    new = copy.deepcopy(conv)
    in_axis, out_axis = (0, 1) if isinstance(conv, nn.ConvTranspose1d) else (1, 0)  # weight (C_in, C_out, k)
    w, b = conv.weight.detach().double(), conv.bias.detach().double()
    if inputs is not None:
        w = w * inputs.view([-1 if a == in_axis else 1 for a in range(3)])
    if outputs is not None:
        w, b = w * outputs.view([-1 if a == out_axis else 1 for a in range(3)]), b * outputs
    new.weight, new.bias = nn.Parameter(w.float()), nn.Parameter(b.float())
    return new


def _alpha(snake: Snake1d) -> torch.Tensor:
    return snake.alpha.detach().double().view(-1)


def snake_scaled(g: torch.Tensor) -> torch.Tensor:
    """α·Snake(x) for g = αx."""
    s = torch.sin(g)
    return g + s * s


class FoldedResidualLayer(nn.Module):
    """ResidualLayer: x + conv2(Snake(conv1(Snake(x)))), both Snakes folded."""

    def __init__(self, layer: ResidualLayer):
        super().__init__()
        snake1, conv1, snake2, conv2 = layer.layer
        self.alpha = nn.Parameter(snake1.alpha.detach().clone())
        self.conv1 = _scaled(conv1, inputs=1 / _alpha(snake1), outputs=_alpha(snake2))
        self.conv2 = _scaled(conv2, inputs=1 / _alpha(snake2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(snake_scaled(self.conv1(snake_scaled(self.alpha * x))))


class FoldedDecoderBlock(nn.Module):
    """DecoderBlock on g = α·x (its Snake's α applied by whatever computed x); returns the MRF's
    stacks summed, the ÷3 left to the next scale."""

    def __init__(self, block: DecoderBlock):
        super().__init__()
        snake, up, mrf = block.block
        self.up = _scaled(up, inputs=1 / _alpha(snake))
        self.stacks = nn.ModuleList(
            nn.Sequential(*[FoldedResidualLayer(layer) for layer in stack.block]) for stack in mrf.mrf_blocks
        )

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        x = self.up(snake_scaled(g))
        total = self.stacks[0](x)
        for stack in self.stacks[1:]:
            total = total + stack(x)
        return total


class FoldedDecoder(nn.Module):
    """CodecDecoder's function with every Snake folded into the convolutions around it."""

    def __init__(self, codec_decoder: CodecDecoder):
        super().__init__()
        self.mask_token, self.quantizer = codec_decoder.mask_token, codec_decoder.quantizer
        first, *blocks, snake, last, _tanh = codec_decoder.decoder.model
        snakes = [b.block[0] for b in blocks] + [snake]
        self.conv_in = _scaled(first, outputs=_alpha(snakes[0]))
        self.blocks = nn.ModuleList(FoldedDecoderBlock(b) for b in blocks)
        # after each block: the MRF's mean, then the next Snake's α, as one per-channel scale
        self.scales = nn.ParameterList(nn.Parameter((s.alpha.detach().double() / len(MRF_KERNELS)).float())
                                       for s in snakes[1:])
        self.conv_out = _scaled(last, inputs=1 / _alpha(snake))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        codes = torch.where(codes == self.mask_token, torch.zeros_like(codes), codes)
        g = self.conv_in(self.quantizer.decode(codes))
        for block, scale in zip(self.blocks, self.scales):
            g = block(g) * scale
        return torch.tanh(self.conv_out(snake_scaled(g)))


def decoder_for_export(codec_decoder: CodecDecoder) -> nn.Module:
    """The decoder as the model ships it: `FoldedDecoder`, unless a Snake's α is too small to divide
    by (then the decoder as written)."""
    alphas = [m.alpha for m in codec_decoder.decoder.modules() if isinstance(m, Snake1d)]
    if min(a.detach().abs().min().item() for a in alphas) < FOLD_MIN_ALPHA:
        return codec_decoder
    return FoldedDecoder(codec_decoder).eval()


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

# Every conv of LAC is weight-normed; the file's keys are otherwise our own.
CHECKPOINT_MAPPING = Mapping(rules=[WeightNorm(r".*(?<!codebook)\.weight")])


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
    lac = CHECKPOINT_MAPPING.load(LAC(config), ck)
    return Codec(
        config=config,
        encoder=CodecEncoder(lac).eval(),
        decoder=CodecDecoder(lac).eval(),
        codebooks=torch.stack([vq.codebook.weight.detach().clone() for vq in lac.quantizer.quantizers]),
        checkpoint_parameters=sum(t.numel() for t in ck.state.values()),
    )
