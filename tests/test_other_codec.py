"""A codec with another hop and sample rate: everything follows the model's own numbers.

The checkpoints record a LAC codec with encoder rates [2, 4, 8, 8] (hop 512) at 32 kHz. The built
model's metadata says so; its masks convert seconds to frames with 32000 / 512; the host resamples
the input to 32 kHz, checks an explicit mask against the frames of that rate, and writes the output
at the input's rate. Nothing may assume VampNet's 44.1 kHz and hop 768.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import soundfile as sf

from vampnet_onnx.builder.synthetic import TINY_C2F, TINY_COARSE, TINY_CODEC, write_random_checkpoints
from vampnet_onnx.cli import main
from vampnet_onnx.session import interface_feeds

RATE, HOP = 32000, 512
CODEC = {**TINY_CODEC, "encoder_rates": [2, 4, 8, 8], "decoder_rates": [8, 8, 4, 2], "sample_rate": RATE}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hop512")
    write_random_checkpoints(folder / "checkpoints", CODEC, TINY_COARSE, TINY_C2F, seed=3)
    path = folder / "vampnet.onnx"
    assert main(["build", "--checkpoints", str(folder / "checkpoints"), "-o", str(path)]) == 0
    return path


def test_metadata_and_chunks_follow_the_codec(model):
    metadata = {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}
    assert metadata["sample_rate"] == str(RATE) and metadata["hop_length"] == str(HOP)
    assert metadata["coarse_chunk_frames"] == str(math.ceil(10 * RATE / HOP))  # 625, not 575
    assert metadata["c2f_chunk_frames"] == str(math.ceil(3 * RATE / HOP))


def test_prefix_and_suffix_seconds_use_the_models_frame_rate(model):
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    audio = np.random.default_rng(0).uniform(-0.3, 0.3, (1, 2 * RATE)).astype(np.float32)
    feeds = interface_feeds(audio, sample_rate=RATE, prefix_s=0.5, suffix_s=0.25, periodic_prompt=0,
                            upper_codebook_mask=14, sampling_steps=2, c2f_sampling_steps=1)
    codes, mask = session.run(["codes", "mask_out"], feeds)
    frames = math.ceil(2 * RATE / HOP)
    assert codes.shape == (1, 14, frames)
    kept = np.flatnonzero(mask[0].max(axis=0) == 0)
    prefix, suffix = math.ceil(0.5 * RATE / HOP), math.ceil(0.25 * RATE / HOP)  # 32 and 16 frames
    np.testing.assert_array_equal(kept, np.r_[0:prefix, frames - suffix:frames])


def test_the_model_resamples_to_its_rate_and_the_host_checks_masks_in_its_frames(model, tmp_path, capsys):
    wav = tmp_path / "in.wav"
    t = np.arange(44100) / 44100
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 330 * t) * np.exp(-4 * (t % 0.25))).astype(np.float32), 44100)
    out = tmp_path / "out.wav"
    assert main(["vamp", str(wav), "-o", str(out), "-m", str(model), "--seed", "1",
                 "--save-codes", str(tmp_path / "codes.npz")]) == 0
    frames = math.ceil(RATE / HOP)  # 1 s at 32 kHz: 63 frames (44.1 kHz would give 87)
    with np.load(tmp_path / "codes.npz") as z:
        assert z["codes"].shape == (1, 14, frames)
    data, rate = sf.read(out)
    assert rate == 44100 and data.shape[0] == 44100  # written at the input's rate and length
    capsys.readouterr()

    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.ones((14, math.ceil(44100 / HOP)), np.int64))
    assert main(["vamp", str(wav), "-o", str(tmp_path / "o2.wav"), "-m", str(model), "--mask-from", str(wrong)]) == 1
    assert f"this input has {frames}" in capsys.readouterr().err
    right = tmp_path / "right.npy"
    np.save(right, np.ones((14, frames), np.int64))
    assert main(["vamp", str(wav), "-o", str(tmp_path / "o3.wav"), "-m", str(model), "--mask-from", str(right)]) == 0
