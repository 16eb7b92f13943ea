"""The main graph of the single model: audio in, new audio out (design.md, "The model's interface").

`main_graph(config)` returns the onnxscript model function; the numbers that depend on the
checkpoints (hop, codebook counts, chunk sizes, mask token) are baked in as constants. The
components it calls are bound by builder/assemble.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import onnxscript
from onnxscript import FLOAT, INT64

from graphs.masks import resolve_mask
from graphs.opsets import op
from graphs.prng import STREAM_C2F, STREAM_COARSE, STREAM_MASK, derive_key, seed_key
from graphs.stages import c2f_stage, coarse_stage, decode, encode

MAX_STEPS = 128  # sampling_steps and c2f_sampling_steps are clamped to [1, MAX_STEPS]


@dataclass(frozen=True)
class GraphConfig:
    sample_rate: int = 44100
    hop_length: int = 768
    n_codebooks: int = 14  # codec levels = c2f codebooks
    n_coarse: int = 4  # coarse codebooks = c2f conditioning codebooks
    vocab_size: int = 1024  # the mask token is vocab_size (graphs.sampling.MASK_TOKEN)
    coarse_chunk_s: float = 10.0
    c2f_chunk_s: float = 3.0

    def seconds_to_frames(self, seconds: float) -> int:
        return math.ceil(seconds * self.sample_rate / self.hop_length)  # upstream's s2t

    @property
    def coarse_chunk(self) -> int:
        return self.seconds_to_frames(self.coarse_chunk_s)

    @property
    def c2f_chunk(self) -> int:
        return self.seconds_to_frames(self.c2f_chunk_s)


def main_graph(config: GraphConfig):
    HOP, N_COARSE = config.hop_length, config.n_coarse
    COARSE_CHUNK, C2F_CHUNK = config.coarse_chunk, config.c2f_chunk

    @onnxscript.script(default_opset=op)
    def vampnet(
        audio: FLOAT["B", "S"],
        seed: INT64,
        mask: INT64["MB", "MK", "MT"],
        rand_mask_intensity: FLOAT,
        prefix_s: FLOAT,
        suffix_s: FLOAT,
        periodic_prompt: INT64,
        periodic_prompt_width: INT64,
        dropout: FLOAT,
        ncc: INT64,
        upper_codebook_mask: INT64,
        sampling_steps: INT64,
        temperature: FLOAT,
        mask_temperature: FLOAT,
        top_p: FLOAT,
        sample_cutoff: FLOAT,
        c2f_sampling_steps: INT64,
        c2f_temperature: FLOAT,
        c2f_mask_temperature: FLOAT,
        c2f_top_p: FLOAT,
        c2f_sample_cutoff: FLOAT,
    ) -> tuple[
        FLOAT["B", "S"], INT64["B", "K", "T"], INT64["B", "K", "T"], INT64["B", "K", "T"], INT64["B", "K", "T"]
    ]:
        hop = op.Constant(value_int=HOP)
        n_coarse = op.Constant(value_int=N_COARSE)
        root = seed_key(seed)

        codes = encode(audio, hop)
        mask_out = resolve_mask(
            mask, codes, derive_key(root, STREAM_MASK), rand_mask_intensity, prefix_s, suffix_s,
            periodic_prompt, periodic_prompt_width, dropout, ncc, upper_codebook_mask,
        )
        coarse_codes = coarse_stage(
            codes, mask_out, derive_key(root, STREAM_COARSE), op.Constant(value_int=COARSE_CHUNK), n_coarse,
            op.Clip(sampling_steps, 1, MAX_STEPS), temperature, mask_temperature, top_p, sample_cutoff,
        )
        codes_out = c2f_stage(
            coarse_codes, mask_out, derive_key(root, STREAM_C2F), op.Constant(value_int=C2F_CHUNK), n_coarse,
            op.Clip(c2f_sampling_steps, 1, MAX_STEPS), c2f_temperature, c2f_mask_temperature,
            c2f_top_p, c2f_sample_cutoff,
        )
        audio_out = decode(codes_out, audio)
        return audio_out, codes, mask_out, coarse_codes, codes_out

    return vampnet
