"""The codec's windows (graphs/codec.py): windowed encode and decode equal the whole-signal run.

The stage functions run as small models with the exported codec components bound to them, the way
the assembler binds them; the window is an input there, so one session serves a window small enough
for short signals to span many windows and a window longer than any signal (the whole-signal run).
Codes must be equal; audio equal to the float32 noise floor (tests/tolerances.py). Both codecs:
the tiny fixture codec (hop 768, 44.1 kHz) and one with hop 512 at 32 kHz.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx.inliner
import onnxruntime as ort
import pytest
import torch

from vampnet_onnx.builder.assemble import assemble, bind_weights, component_functions, export_codec
from vampnet_onnx.builder.files import save_model
from vampnet_onnx.builder.codec import Codec, codec_window_frames, load_codec, receptive_field_frames
from vampnet_onnx.builder.synthetic import TINY_C2F, TINY_COARSE, write_random_checkpoints
from conftest import CHECKPOINTS
from graph_helpers import function_model, make_runner
from vampnet_onnx.graphs.codec import decode, encode
from test_other_codec import CODEC as HOP512_CODEC
from tolerances import assert_audio_close
from vampnet_onnx.interface import OUTPUT_NAMES
from vampnet_onnx.session import interface_feeds

WHOLE = 1 << 40  # a window longer than any signal: the whole-signal run


def i64(x: int) -> np.ndarray:
    return np.array(x, np.int64)


def stage_model(fn, components: dict[str, onnx.ModelProto], *inputs) -> onnx.ModelProto:
    """`fn` on graph inputs like `inputs`, its component calls bound to the components' weights."""
    model = onnx.inliner.inline_local_functions(function_model(fn, *inputs))
    functions, weights, names = component_functions(components)
    bind_weights(model.graph.node, names)
    model.functions.extend(functions)
    model.graph.initializer.extend(weights)
    return model


@dataclass
class Stages:
    codec: Codec
    overlap: int
    encode_model: onnx.ModelProto
    decode_model: onnx.ModelProto

    def __post_init__(self):
        self._encode = make_runner(self.encode_model)
        self._decode = make_runner(self.decode_model)

    @property
    def hop(self) -> int:
        return self.codec.config.hop_length

    def encode(self, audio: np.ndarray, window: int) -> np.ndarray:
        k = self.codec.config.n_codebooks
        feeds = [audio, np.ones((audio.shape[0], 1), np.float32), i64(self.hop), i64(k), i64(window), i64(self.overlap)]
        return self._encode({f"in{i}": x for i, x in enumerate(feeds)})[0]

    def decode(self, codes: np.ndarray, samples: int, window: int) -> np.ndarray:
        feeds = [codes, np.array([samples], np.int64), i64(self.hop), i64(window), i64(self.overlap)]
        return self._decode({f"in{i}": x for i, x in enumerate(feeds)})[0]


@pytest.fixture(scope="module", params=["tiny", "hop512"])
def stages(request, tmp_path_factory) -> Stages:
    if request.param == "tiny":  # the components of the session's tiny model
        tiny = request.getfixturevalue("tiny")
        codec, components = tiny.codec, tiny.components
    else:
        folder = tmp_path_factory.mktemp(request.param)
        codec = load_codec(write_random_checkpoints(folder, HOP512_CODEC, TINY_COARSE, TINY_C2F, seed=3)["codec"])
        components = export_codec(codec)
    hop, k = codec.config.hop_length, codec.config.n_codebooks
    audio, codes = np.zeros((1, hop), np.float32), np.zeros((1, k, 1), np.int64)
    return Stages(
        codec, receptive_field_frames(codec.config),
        stage_model(encode, {"codec_encoder": components["codec_encoder"]}, audio, np.ones((1, 1), np.float32),
                    i64(0), i64(0), i64(0), i64(0)),
        stage_model(decode, {"codec_decoder": components["codec_decoder"]}, codes, np.array([0]), i64(0), i64(0), i64(0)),
    )


def _audio(batch: int, samples: int, seed: int, rate: int) -> np.ndarray:
    """Partials and noise at a moderate level: something the codec tokenizes with no near-ties."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / rate
    x = sum(0.1 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6, (batch, 1))) for f in (110, 347, 1210))
    return (x + 0.05 * rng.standard_normal((batch, samples))).astype(np.float32)


def _lengths(window: int, overlap: int) -> list[int]:
    """Frame counts around one window, several windows and the overlap."""
    w, o = window, overlap
    return sorted({1, w - 1, w, w + 1, 2 * w, 2 * w + 1, o, o + w + 1, 2 * o + 3 * w + 1} - {0})


@pytest.mark.parametrize("window", [8, "overlap"])
def test_windowed_encode_equals_whole_signal(stages, window):
    window = stages.overlap if window == "overlap" else window
    rate = stages.codec.config.sample_rate
    for i, frames in enumerate(_lengths(window, stages.overlap)):
        samples = frames * stages.hop - (stages.hop // 3 if i % 2 else 0)  # also a part hop at the end
        audio = _audio(1 + i % 2, samples, seed=i, rate=rate)
        whole = stages.encode(audio, WHOLE)
        assert whole.shape == (audio.shape[0], stages.codec.config.n_codebooks, frames)
        np.testing.assert_array_equal(stages.encode(audio, window), whole, err_msg=f"{frames} frames")


@pytest.mark.parametrize("window", [8, "overlap"])
def test_windowed_decode_equals_whole_signal(stages, window):
    window = stages.overlap if window == "overlap" else window
    k, vocab = stages.codec.config.n_codebooks, stages.codec.config.codebook_size
    for i, frames in enumerate(_lengths(window, stages.overlap)):
        codes = np.random.default_rng(i).integers(0, vocab + 1, (1 + i % 2, k, frames))  # mask token too
        samples = frames * stages.hop - 5 * i
        whole = stages.decode(codes, samples, WHOLE)
        assert whole.shape == (codes.shape[0], samples)
        assert_audio_close(stages.decode(codes, samples, window), whole, f"{frames} frames, window {window}")


def test_decode_lays_the_windows_end_to_end(stages):
    """Bit for bit, the windowed decode is each window decoded alone (its frames and overlap, as
    one window) and cut to its own frames, end to end: one window, one window exactly, a short
    last window, two rows."""
    window, o, hop = 8, stages.overlap, stages.hop
    k, vocab = stages.codec.config.n_codebooks, stages.codec.config.codebook_size
    rng = np.random.default_rng(7)
    for frames, batch in ((1, 1), (window, 2), (window + 1, 1), (3 * window + 5, 2)):
        codes = rng.integers(0, vocab + 1, (batch, k, frames))
        parts = []
        for start in range(0, frames, window):
            lo, hi, end = max(start - o, 0), min(start + window + o, frames), min(start + window, frames)
            alone = stages.decode(codes[:, :, lo:hi], (hi - lo) * hop, WHOLE)
            parts.append(alone[:, (start - lo) * hop:(end - lo) * hop])
        samples = frames * hop - 3
        want = np.concatenate(parts, axis=1)[:, :samples]
        np.testing.assert_array_equal(stages.decode(codes, samples, window), want, err_msg=f"{frames} frames")


def test_one_window_is_the_component_itself(stages):
    """A window as long as the signal runs the encoder and decoder once: the bare components' results."""
    frames = 12
    audio = _audio(1, frames * stages.hop, seed=9, rate=stages.codec.config.sample_rate)
    codes = stages.encode(audio, frames)
    with torch.no_grad():
        np.testing.assert_array_equal(codes, stages.codec.encoder(torch.from_numpy(audio)[:, None]).numpy())
        want = stages.codec.decoder(torch.from_numpy(codes)).numpy()[:, 0]
    assert_audio_close(stages.decode(codes, frames * stages.hop, frames), want, "one window")


def test_windows_in_the_reference_evaluator(stages):
    frames, window = 7, 3
    audio = _audio(1, frames * stages.hop, seed=4, rate=stages.codec.config.sample_rate)
    codes = stages.encode(audio, window)
    feeds = [audio, np.ones((1, 1), np.float32), i64(stages.hop), i64(stages.codec.config.n_codebooks), i64(window),
             i64(stages.overlap)]
    got = make_runner(stages.encode_model, "ref")({f"in{i}": x for i, x in enumerate(feeds)})[0]
    np.testing.assert_array_equal(got, codes)
    feeds = [codes, np.array([frames * stages.hop], np.int64), i64(stages.hop), i64(window), i64(stages.overlap)]
    got = make_runner(stages.decode_model, "ref")({f"in{i}": x for i, x in enumerate(feeds)})[0]
    assert_audio_close(got, stages.decode(codes, frames * stages.hop, window), "reference evaluator")


def _reach(diff: np.ndarray, centre: int) -> int:
    """How far (in frames) from `centre` the non-zero entries of a per-frame difference lie."""
    changed = np.flatnonzero(diff)
    assert changed.size, "the change had no effect"
    return int(np.abs(changed - centre).max())


def test_receptive_field_bounds_what_a_frame_reads(stages):
    """Changing one frame (decoder) or one sample (encoder) changes nothing beyond the overlap,
    and the overlap is not needlessly wide: the computed span is at most twice the measured reach."""
    codec, hop, o = stages.codec, stages.hop, stages.overlap
    frames, centre = 2 * o + 3, o + 1
    codes = torch.from_numpy(np.random.default_rng(1).integers(0, 1024, (1, codec.config.n_codebooks, frames)))
    changed = codes.clone()
    changed[:, :, centre] = (changed[:, :, centre] + 1) % 1024
    audio = torch.from_numpy(_audio(1, frames * hop, seed=2, rate=codec.config.sample_rate))[:, None]
    nudged = audio.clone()
    nudged[..., centre * hop] += 0.5
    with torch.no_grad():
        sample_diff = (codec.decoder(changed) - codec.decoder(codes))[0, 0].abs().numpy()
        decoder_reach = _reach(sample_diff.reshape(frames, hop).max(axis=1), centre)
        latents = codec.encoder.encoder
        encoder_reach = _reach((latents(nudged) - latents(audio))[0].abs().max(axis=0).values.numpy(), centre)
    assert max(decoder_reach, encoder_reach) <= o
    assert o <= 2 * (max(decoder_reach, encoder_reach) + 1)


def test_window_frames_follow_from_the_receptive_field():
    tiny = load_codec(CHECKPOINTS / "tiny" / "codec.pth").config
    assert receptive_field_frames(tiny) == 19  # VampNet's codec layout (rates 2, 4, 8, 12)
    assert codec_window_frames(tiny) == 760  # 2·19 frames of overlap are 5 % of 760
    assert codec_window_frames(tiny, overhead=0.1) == 380


def test_model_with_small_windows_equals_the_model(tiny, tmp_path):
    """The tiny model built with 5-frame windows (2 s = 116 frames: 24 windows) gives the same codes
    and, to float32 noise, the same audio as the model as built (one window)."""
    path = tmp_path / "windows.onnx"
    save_model(assemble(tiny.codec, tiny.coarse, tiny.c2f, components=tiny.components, codec_window=5), path)
    metadata = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert metadata["codec_window_frames"] == "5" and metadata["codec_overlap_frames"] == "19"
    audio = _audio(1, 2 * 44100 + 77, seed=5, rate=44100)
    feeds = interface_feeds(audio, seed=3, sampling_steps=2, c2f_sampling_steps=1)
    runs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feeds) for p in (path, tiny.path)]
    got, want = (dict(zip(OUTPUT_NAMES, r)) for r in runs)
    for name in OUTPUT_NAMES[1:]:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert_audio_close(got["audio_out"], want["audio_out"], "audio_out")
