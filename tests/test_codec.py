"""LAC codec (builder/codec.py) against upstream's golden fixtures.

Encoding is bit-exact: the codes must EQUAL upstream's. Decoded audio is held to the float32 noise
floor of tests/tolerances.py; the test below measures why (upstream's own float32 audio against a
float64 evaluation of the same decoder).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vampnet_onnx.builder.checkpoint import CheckpointError
from vampnet_onnx.builder.codec import CodecConfig, FoldedDecoder, Snake1d, decoder_for_export, load_codec
from tolerances import AUDIO_ATOL, AUDIO_MAX, assert_audio_close

FIXTURES = Path(__file__).parent / "fixtures" / "upstream"
GOLDEN = sorted((FIXTURES / "golden").glob("*.npz"))
CASES = [p.stem for p in GOLDEN]



def _variant(case: str) -> str:
    return "tiny-lora" if case == "tiny_lora" else "tiny"


def _codec_path(variant: str) -> Path:
    return FIXTURES / "checkpoints" / variant / "codec.pth"


@pytest.fixture(scope="module")
def codecs():
    return {v: load_codec(_codec_path(v)) for v in ("tiny", "tiny-lora")}


@pytest.fixture(scope="module")
def decoded(codecs):
    """Decode each golden case's `codes` and `fine_out` once: {(case, source): (ours, upstream)}."""
    out = {}
    for path in GOLDEN:
        g = np.load(path)
        codec = codecs[_variant(path.stem)]
        for source, reference in (("codes", "decoded_input"), ("fine_out", "audio_out")):
            with torch.no_grad():
                audio = codec.decoder(torch.from_numpy(g[source])).numpy()
            out[(path.stem, source)] = (audio, g[reference])
    return out


def test_fixtures_present():
    assert len(GOLDEN) >= 4, f"golden fixtures missing under {FIXTURES / 'golden'}"


# ------------------------------------------------------------------------------------ config

def test_config_read_from_checkpoint_kwargs(codecs):
    cfg = codecs["tiny"].config
    assert cfg == CodecConfig(
        encoder_dim=8, encoder_rates=(2, 4, 8, 12), decoder_dim=32, decoder_rates=(12, 8, 4, 2),
        n_codebooks=14, codebook_size=1024, codebook_dim=8, sample_rate=44100,
    )
    assert cfg.hop_length == 768
    assert cfg.latent_dim == 8 * 2**4 == 128
    assert cfg.n_codebooks == 14


def test_codec_exposes_codebooks_and_parameter_count(codecs):
    codec = codecs["tiny"]
    raw = torch.load(_codec_path("tiny"), map_location="cpu", weights_only=True)["state_dict"]
    assert codec.codebooks.dtype == torch.float32
    assert codec.codebooks.shape == (14, 1024, 8)
    for q in (0, 5, 13):
        assert torch.equal(codec.codebooks[q], raw[f"quantizer.quantizers.{q}.codebook.weight"])
    assert codec.checkpoint_parameters == sum(t.numel() for t in raw.values())


def test_from_kwargs_drops_unknown_and_uses_lac_defaults():
    cfg = CodecConfig.from_kwargs({"n_codebooks": 14, "quantizer_dropout": True, "map_location": "cpu"})
    assert cfg.n_codebooks == 14
    assert cfg.encoder_dim == 64 and cfg.encoder_rates == (2, 4, 8, 8)
    assert cfg.decoder_dim == 512 and cfg.decoder_rates == (4, 4, 4, 2, 2, 2)
    assert (cfg.codebook_size, cfg.codebook_dim, cfg.sample_rate) == (1024, 8, 44100)
    assert cfg.hop_length == 512 and cfg.latent_dim == 1024


def test_from_kwargs_codebook_dim_lists():
    assert CodecConfig.from_kwargs({"n_codebooks": 3, "codebook_dim": [8, 8, 8]}).codebook_dim == 8
    with pytest.raises(CheckpointError, match="codebook_dim"):
        CodecConfig.from_kwargs({"n_codebooks": 3, "codebook_dim": [8, 4, 8]})


def test_from_kwargs_rejects_encoder_decoder_hop_mismatch():
    with pytest.raises(CheckpointError, match=r"prod\(encoder_rates\) = 256"):
        CodecConfig.from_kwargs({"encoder_rates": [2, 4, 4, 8], "decoder_rates": [4, 4, 4, 2, 2, 2]})


# ---------------------------------------------------------------------------- against upstream

@pytest.mark.parametrize("case", CASES)
def test_encoder_codes_equal_upstream(codecs, case):
    g = np.load(FIXTURES / "golden" / f"{case}.npz")
    audio = torch.from_numpy(g["preprocessed_audio"])
    assert audio.shape[-1] % 768 == 0
    with torch.no_grad():
        codes = codecs[_variant(case)].encoder(audio)
    assert codes.dtype == torch.int64
    np.testing.assert_array_equal(codes.numpy(), g["codes"])


@pytest.mark.parametrize("source", ["codes", "fine_out"])
@pytest.mark.parametrize("case", CASES)
def test_decoder_matches_upstream_to_float32_noise(decoded, case, source):
    ours, ref = decoded[(case, source)]
    assert ours.dtype == np.float32
    assert_audio_close(ours, ref, f"{case} {source}")


def test_upstream_audio_is_itself_float32_noise_away_from_exact(codecs):
    """Why the noise-floor bound replaces max 1e-4: against a float64 evaluation of the same
    decoder, upstream's own float32 audio misses 1e-4 on some fixture cases, ours is off by about
    as much, and both stay far below what any real mistake would cost."""
    upstream_errors = {}
    for case in CASES:
        g = np.load(FIXTURES / "golden" / f"{case}.npz")
        codec = codecs[_variant(case)]
        exact = copy.deepcopy(codec.decoder).double()
        with torch.no_grad():
            exact_audio = exact(torch.from_numpy(g["codes"])).numpy()
            ours = codec.decoder(torch.from_numpy(g["codes"])).numpy()
        upstream_errors[case] = upstream_error = np.abs(g["decoded_input"] - exact_audio).max()
        our_error = np.abs(ours - exact_audio).max()
        assert upstream_error <= AUDIO_MAX and our_error <= AUDIO_MAX, case
        assert our_error <= 2 * max(upstream_error, AUDIO_ATOL), case
    assert max(upstream_errors.values()) > AUDIO_ATOL, upstream_errors


def test_decoder_replaces_mask_token_by_zero(codecs):
    codec = codecs["tiny"]
    g = np.load(FIXTURES / "golden" / "tiny_stochastic_seed5.npz")
    codes = torch.from_numpy(g["codes"][..., :12]).clone()
    masked = codes.clone()
    masked[:, 4:, 3:9] = 1024
    zeroed = codes.clone()
    zeroed[:, 4:, 3:9] = 0
    with torch.no_grad():
        assert torch.equal(codec.decoder(masked), codec.decoder(zeroed))


def test_batch_rows_are_independent(codecs):
    codec = codecs["tiny"]
    g = np.load(FIXTURES / "golden" / "tiny_stochastic_seed5.npz")
    audio = torch.from_numpy(g["preprocessed_audio"])
    batch = torch.cat([audio, 0.5 * audio.flip(-1)])
    with torch.no_grad():
        codes = codec.encoder(batch)
        np.testing.assert_array_equal(codes[:1].numpy(), g["codes"])
        np.testing.assert_array_equal(codes[1:].numpy(), codec.encoder(batch[1:]).numpy())
        wav = codec.decoder(codes)
        assert wav.shape == (2, 1, audio.shape[-1])
        # Batch 2 vs 1 changes the conv kernels' blocking: float32 noise only (tests/tolerances.py).
        np.testing.assert_allclose(wav[:1].numpy(), codec.decoder(codes[:1]).numpy(), rtol=0, atol=AUDIO_MAX)
        np.testing.assert_allclose(wav[1:].numpy(), codec.decoder(codes[1:]).numpy(), rtol=0, atol=AUDIO_MAX)


# ------------------------------------------------------------------- the decoder as exported

@pytest.mark.parametrize("case", CASES)
def test_exported_decoder_form_matches_upstream(codecs, case):
    """The form the model ships (Snakes folded into the convolutions) rounds differently from the
    decoder as written, and still gives upstream's audio to float32 noise."""
    g = np.load(FIXTURES / "golden" / f"{case}.npz")
    folded = decoder_for_export(codecs[_variant(case)].decoder)
    assert isinstance(folded, FoldedDecoder)
    with torch.no_grad():
        audio = folded(torch.from_numpy(g["codes"])).numpy()
    assert_audio_close(audio, g["decoded_input"], case)


def test_decoder_with_a_zero_alpha_is_exported_unfolded(codecs):
    """Upstream's Snake with α = 0 is the identity; folding would divide by that α."""
    decoder = copy.deepcopy(codecs["tiny"].decoder)
    snake = next(m for m in decoder.decoder.modules() if isinstance(m, Snake1d))
    with torch.no_grad():
        snake.alpha[0, 1, 0] = 0.0
    codes = torch.from_numpy(np.load(GOLDEN[0])["codes"])
    with torch.no_grad():
        assert not torch.isfinite(FoldedDecoder(decoder)(codes)).all()
        assert decoder_for_export(decoder) is decoder
        assert torch.isfinite(decoder(codes)).all()


# ------------------------------------------------------------------------- bad checkpoints

def _edited_copy(tmp_path: Path, edit) -> Path:
    data = torch.load(_codec_path("tiny"), map_location="cpu", weights_only=True)
    edit(data)
    out = tmp_path / "codec.pth"
    torch.save(data, out)
    return out


def test_missing_tensor_is_named(tmp_path):
    key = "decoder.model.2.block.1.weight_v"
    path = _edited_copy(tmp_path, lambda d: d["state_dict"].pop(key))
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")) as e:
        load_codec(path)
    assert "missing" in str(e.value) and str(path) in str(e.value)


def test_misshaped_tensor_is_named(tmp_path):
    key = "quantizer.quantizers.3.codebook.weight"
    path = _edited_copy(tmp_path, lambda d: d["state_dict"].__setitem__(key, torch.zeros(1024, 9)))
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")) as e:
        load_codec(path)
    assert "(1024, 9)" in str(e.value) and "(1024, 8)" in str(e.value)


def test_conv_transpose_weight_g_must_be_per_input_channel(tmp_path):
    # decoder.model.1 upsamples 32 -> 16 channels: weight_g is (in=32, 1, 1), not (out=16, 1, 1).
    key = "decoder.model.1.block.1.weight_g"
    path = _edited_copy(tmp_path, lambda d: d["state_dict"].__setitem__(key, torch.ones(16, 1, 1)))
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        load_codec(path)


def test_inconsistent_kwargs_are_refused(tmp_path):
    def edit(d):
        d["metadata"]["kwargs"]["decoder_rates"] = [12, 8, 4, 4]
    with pytest.raises(CheckpointError, match="hop_length"):
        load_codec(_edited_copy(tmp_path, edit))


def test_unused_tensors_warn(tmp_path):
    path = _edited_copy(tmp_path, lambda d: d["state_dict"].__setitem__("decoder.extra", torch.zeros(3)))
    with pytest.warns(UserWarning, match="decoder.extra"):
        load_codec(path)


def test_golden_meta_is_json():
    # Guards the case -> checkpoint variant mapping used above.
    for path in GOLDEN:
        meta = json.loads(str(np.load(path)["meta"]))
        assert meta["case"] == path.stem
