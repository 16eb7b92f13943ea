"""The main graph of the single model: audio in, new audio out (the interface: vampnet_onnx/interface.py).

`main_graph(config)` returns the onnxscript model function; the numbers that depend on the
checkpoints (hop, codebook counts, chunk sizes, mask token) are baked in as constants. The
components it calls are bound by builder/assemble.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnxscript
from onnxscript import FLOAT, INT64

from vampnet_onnx.graphs.beats import make_beat_tracker
from vampnet_onnx.graphs.codec import decode_windows, encode
from vampnet_onnx.graphs.masks import build_mask, resolve_mask
from vampnet_onnx.graphs.onsets import make_onset_detector
from vampnet_onnx.graphs.opsets import op, vampnet
from vampnet_onnx.graphs.pitch import make_pitch_shifter
from vampnet_onnx.graphs.sampling import MASK_TOKEN
from vampnet_onnx.graphs.preprocess import clamp_rate, finite, loudness, prepare, prepared_by_one_gain, restore
from vampnet_onnx.graphs.prng import STREAM_C2F, STREAM_COARSE, STREAM_FEEDBACK, STREAM_MASK, derive_key, seed_key
from vampnet_onnx.graphs.stages import c2f_stage, coarse_stage, stretch_mask, stretch_time
from vampnet_onnx.interface import MAX_FEEDBACK_STEPS, MAX_ONSET_WIDTH, MAX_PITCH_SHIFT, MAX_TIME_STRETCH
from vampnet_onnx.interface import MAX_SAMPLING_STEPS as MAX_STEPS

@onnxscript.script(vampnet, default_opset=op)
def scalar(x):
    """A (1,) parameter as the 0-d tensor the graph functions take."""
    return op.Squeeze(x, [0])


@dataclass(frozen=True)
class GraphConfig:
    """The numbers the graph is built with, all from the checkpoints (builder/assemble.py)."""

    sample_rate: int = 44100
    hop_length: int = 768
    n_codebooks: int = 14  # codec levels = c2f codebooks
    n_coarse: int = 4  # coarse codebooks = c2f conditioning codebooks
    vocab_size: int = MASK_TOKEN  # the mask token is vocab_size
    coarse_chunk_s: float = 10.0
    c2f_chunk_s: float = 3.0
    # the codec's windows (graphs/codec.py), from builder/codec.py: receptive_field_frames and
    # codec_window_frames of VampNet's codec
    codec_window: int = 760  # frames each window keeps
    codec_overlap: int = 19  # frames read either side, >= the codec's receptive field
    adapters: int = 0  # fine-tunes the transformers hold besides the base model (docs/adapters.md)

    def __post_init__(self):
        if self.codec_window < 1 or self.codec_overlap < 0:
            raise ValueError(f"codec windows of {self.codec_window} frames, overlap {self.codec_overlap}")
        # seconds -> frames is computed exactly in float32 from this rate (graphs/masks.py, s2t)
        if float(np.float32(self.frame_rate)) != self.sample_rate / self.hop_length:
            raise ValueError(
                f"sample rate {self.sample_rate} / hop {self.hop_length} is not exact in float32; "
                "the graph converts seconds to frames with that ratio"
            )

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def seconds_to_frames(self, seconds: float) -> int:
        return math.ceil(seconds * self.sample_rate / self.hop_length)  # upstream's s2t

    @property
    def coarse_chunk(self) -> int:
        return self.seconds_to_frames(self.coarse_chunk_s)

    @property
    def c2f_chunk(self) -> int:
        return self.seconds_to_frames(self.c2f_chunk_s)


def main_graph(config: GraphConfig):
    """The model function for `config`. Its signature must equal vampnet_onnx.interface.INPUTS
    (names, order, types; the assembler checks); parameters arrive as (1,) tensors."""
    HOP, N_COARSE, MODEL_RATE = config.hop_length, config.n_coarse, config.sample_rate
    COARSE_CHUNK, C2F_CHUNK = config.coarse_chunk, config.c2f_chunk
    N_CODEBOOKS, WINDOW, OVERLAP = config.n_codebooks, config.codec_window, config.codec_overlap
    FRAME_RATE = float(np.float32(config.frame_rate))
    MASK = config.vocab_size  # the mask token (graphs/sampling.py)
    ADAPTERS = config.adapters
    onset_mask = make_onset_detector(config.sample_rate, config.hop_length).onset_mask
    beat_mask = make_beat_tracker(config.sample_rate, config.hop_length).beat_mask
    shift_pitch = make_pitch_shifter(config.sample_rate).pitch_shift

    @onnxscript.script(default_opset=op)
    def vampnet(
        audio: FLOAT["B", "S"],
        sample_rate: INT64[1],
        seed: INT64[1],
        mask: INT64["MB", "MK", "MT"],
        rand_mask_intensity: FLOAT[1],
        prefix_s: FLOAT[1],
        suffix_s: FLOAT[1],
        periodic_prompt: INT64[1],
        periodic_prompt_width: INT64[1],
        dropout: FLOAT[1],
        ncc: INT64[1],
        upper_codebook_mask: INT64[1],
        sampling_steps: INT64[1],
        temperature: FLOAT[1],
        mask_temperature: FLOAT[1],
        top_p: FLOAT[1],
        sample_cutoff: FLOAT[1],
        c2f_sampling_steps: INT64[1],
        c2f_temperature: FLOAT[1],
        c2f_mask_temperature: FLOAT[1],
        c2f_top_p: FLOAT[1],
        c2f_sample_cutoff: FLOAT[1],
        feedback_steps: INT64[1],
        time_stretch_factor: INT64[1],
        onset_mask_width: INT64[1],
        beat_mask_ms: FLOAT[1],
        pitch_shift: INT64[1],
        generate: INT64[1],
        adapter: INT64[1],
    ) -> tuple[
        FLOAT["B", "S_out"], INT64["B", "K", "T"], INT64["B", "K", "T"], INT64["B", "K", "T"], INT64["B", "K", "T"]
    ]:
        hop = op.Constant(value_int=HOP)
        n_coarse = op.Constant(value_int=N_COARSE)
        root = seed_key(scalar(seed))
        window = op.Constant(value_int=WINDOW)
        overlap = op.Constant(value_int=OVERLAP)

        # An empty batch runs as one silent row and returns none: no kernel ever sees a 0-row
        # tensor (some divide by a zero dimension, which kills the host process). The row is made
        # in an If of its own, so that a batch of rows reaches `finite` as it is (padding the
        # input to at least one row copied the whole signal).
        batch = op.Shape(audio, start=0, end=1)
        n_rows = op.Max(batch, 1)
        if op.Squeeze(batch) == 0:
            clean = op.Expand(op.Constant(value_float=0.0), op.Concat(n_rows, op.Shape(audio, start=1, end=2), axis=0))
        else:
            clean = finite(audio)

        # upstream's _preprocess (graphs/preprocess.py): to the codec's rate, −24 LUFS, peak <= 1.
        # At the codec's own rate that is mostly one gain (`prepared_by_one_gain`): the encoder and
        # the prompts then read the input times that gain, window by window, no prepared copy of
        # the whole signal is made, and `prepare` runs on one sample.
        rate = clamp_rate(scalar(sample_rate))
        model_rate = op.Constant(value_int=MODEL_RATE)
        loudness_in = loudness(clean, rate)  # the app gives the output this loudness
        one_gain, gain = prepared_by_one_gain(clean, rate, model_rate, loudness_in)
        samples_in = op.Shape(clean, start=1, end=2)
        one = op.Constant(value_ints=[1])

        # What reads the signal before the codec: the mask builders (the codes' shape) and, with a
        # pitch shift or an onset or beat prompt, the prepared signal zero-padded to whole hops.
        # The preview (generate 0) costs the preprocessing, the mask builders and the onset
        # detector: no codec, no generation.
        width = op.Where(op.Size(mask) == 0, op.Clip(scalar(onset_mask_width), 0, MAX_ONSET_WIDTH), 0)
        beat_ms = op.Where(op.Size(mask) == 0, scalar(beat_mask_ms), 0.0)  # beat_mask clamps it
        # upstream's app shifts the pitch of its preprocessed (padded) signal (graphs/pitch.py); the
        # onset and beat prompts read the shifted signal, and `encode` preprocesses it again. A
        # preview (generate 0) without those prompts hears no audio: no shift.
        heard_at_all = op.Or(scalar(generate) != 0, op.Or(width > 0, beat_ms > 0.0))
        semitones = op.Where(heard_at_all, op.Clip(scalar(pitch_shift), -MAX_PITCH_SHIFT, MAX_PITCH_SHIFT), 0)
        # Without a shift or a prompt nothing reads that signal: it is then one sample, not a
        # whole copy (the shifter passes it through, the detectors do not run).
        listened = op.Or(semitones != 0, op.Or(width > 0, beat_ms > 0.0))
        generating = scalar(generate) != 0
        n_codebooks = op.Constant(value_int=N_CODEBOOKS)
        # The encoder runs in Ifs of its own, not in the generation's: a value an If's branch reads
        # from outside stays alive until the If ends, so its input (a whole copy of the signal) is
        # freed before the generation and the decoder run (docs/performance.md). One If per input,
        # so that no whole signal is handed out of an If (onnxruntime copies such a value). The
        # input's own readers come before `prepare`, which, at another rate, makes a second copy.
        if op.And(op.And(generating, semitones == 0), one_gain):
            scaled_codes = encode(clean, gain, hop, n_codebooks, window, overlap)
        else:
            scaled_codes = op.Expand(op.Constant(value_int=0), op.Concat(op.Shape(clean, start=0, end=1), op.Constant(value_ints=[N_CODEBOOKS]), one, axis=0))
        scaled = op.Slice(clean, [0], op.Where(op.And(one_gain, listened), samples_in, one), [1]) * gain

        prepared = prepare(clean, op.Where(one_gain, one, samples_in), rate, model_rate)
        prepared_samples = op.Where(one_gain, samples_in, op.Shape(prepared, start=1, end=2))
        # the mask needs only the codes' shape, (B, K, T) with T = ceil(S / hop) (at least 1, as
        # `encode` pads), so it is built before, and without, the codec
        frames = op.Max(op.Div(prepared_samples + hop - 1, hop), 1)
        grid = op.Expand(op.Constant(value_int=0), op.Concat(op.Shape(prepared, start=0, end=1), op.Constant(value_ints=[N_CODEBOOKS]), frames, axis=0))
        # upstream detects onsets in its preprocessed signal, which is zero-padded to whole hops
        # like the encoder's input; the prompt only serves a built mask (explicit: detect on nothing)
        length = op.Where(listened, frames * hop, one)
        # one of the two is a single sample (a Where picks the other, broadcast: no If to copy it)
        kept = op.Where(one_gain, scaled, op.Slice(prepared, [0], op.Where(one_gain, one, length), [1]))
        hop_padded = op.Pad(kept, op.Concat([0, 0], [0], length - op.Shape(kept, start=1, end=2), axis=0))
        # the input itself for 0 semitones (an If inside); not called inside an If: OpenVINO
        # 2026.4's ONNX reader crashed on the shifter's Loops two Ifs deep
        heard = shift_pitch(hop_padded, semitones)
        built_mask = build_mask(
            grid, derive_key(root, STREAM_MASK), scalar(rand_mask_intensity), scalar(prefix_s),
            scalar(suffix_s), scalar(periodic_prompt), scalar(periodic_prompt_width), scalar(dropout),
            scalar(ncc), scalar(upper_codebook_mask), op.Constant(value_float=FRAME_RATE),
            onset_mask(grid, heard, width), beat_mask(grid, heard, beat_ms),
        )
        input_mask = resolve_mask(mask, built_mask)
        # time stretch (upstream Interface.vamp): f× the frames, the added ones generated
        stretch = op.Clip(scalar(time_stretch_factor), 1, MAX_TIME_STRETCH)
        row_mask = stretch_mask(input_mask, stretch)
        samples = op.Shape(audio, start=1, end=2) * op.Reshape(stretch, [1])  # f·S at the input's rate
        fine_tune = op.Clip(scalar(adapter), 0, ADAPTERS)
        unit = op.Reshape(op.Constant(value_float=1.0), op.Constant(value_ints=[1, 1]))
        if op.And(op.And(generating, semitones == 0), op.Not(one_gain)):
            unshifted_codes = encode(prepared, unit, hop, n_codebooks, window, overlap)
        else:
            # the preview's placeholder (no codec), or the codes of the input times its gain
            unshifted_codes = op.Where(op.And(generating, semitones == 0), scaled_codes, grid)
        if op.And(generating, semitones != 0):
            input_codes = encode(prepare(heard, op.Shape(heard, start=1, end=2), model_rate, model_rate), unit, hop,
                                 n_codebooks, window, overlap)
        else:
            input_codes = op.Identity(unshifted_codes)
        if scalar(generate) != 0:
            row_codes = stretch_time(input_codes, stretch)
            row_coarse = coarse_stage(
                row_codes, row_mask, derive_key(root, STREAM_COARSE), derive_key(root, STREAM_FEEDBACK),
                op.Clip(scalar(feedback_steps), 1, MAX_FEEDBACK_STEPS), op.Constant(value_int=COARSE_CHUNK),
                n_coarse, op.Clip(scalar(sampling_steps), 1, MAX_STEPS), scalar(temperature),
                scalar(mask_temperature), scalar(top_p), scalar(sample_cutoff), fine_tune,
            )
            row_out = c2f_stage(
                row_coarse, row_mask, derive_key(root, STREAM_C2F), op.Constant(value_int=C2F_CHUNK), n_coarse,
                op.Clip(scalar(c2f_sampling_steps), 1, MAX_STEPS), scalar(c2f_temperature),
                scalar(c2f_mask_temperature), scalar(c2f_top_p), scalar(c2f_sample_cutoff), fine_tune,
            )
            # decode every frame, back to the input's rate, f·S samples, the input's loudness
            decoded = decode_windows(row_out, hop, window, overlap)
            row_audio = restore(decoded, op.Shape(row_out, start=2, end=3) * hop, model_rate, rate, samples, loudness_in)
        else:
            # the mask preview: placeholders of a full run's shapes, no codec, no generation
            row_codes = op.Expand(op.Constant(value_int=MASK), op.Shape(row_mask))
            row_coarse = op.Identity(row_codes)
            row_out = op.Identity(row_codes)
            row_audio = op.Expand(op.Constant(value_float=0.0), op.Concat(n_rows, samples, axis=0))
        # the outputs are named after these variables
        audio_out = op.Slice(row_audio, [0], batch, [0])
        codes = op.Slice(row_codes, [0], batch, [0])
        mask_out = op.Slice(row_mask, [0], batch, [0])
        coarse_codes = op.Slice(row_coarse, [0], batch, [0])
        codes_out = op.Slice(row_out, [0], batch, [0])
        return audio_out, codes, mask_out, coarse_codes, codes_out

    return vampnet
