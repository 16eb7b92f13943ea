"""VampNet transformer: logits against upstream's fixtures, weight folding (weight norm, LoRA), checkpoint
errors, and the synthetic checkpoint writer (real on-disk format, released shapes)."""
from __future__ import annotations

import math
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from vampnet_onnx.builder.checkpoint import LORA_SCALE, CheckpointError
from vampnet_onnx.builder.synthetic import (
    RELEASED_C2F,
    RELEASED_CODEC_STANDIN,
    RELEASED_COARSE,
    TINY_C2F,
    TINY_CODEC,
    TINY_COARSE,
    full_kwargs,
    parameter_count,
    state_dict_shapes,
    write_random_checkpoints,
)
from vampnet_onnx.builder.transformer import (
    RelativePositionBias,
    TransformerConfig,
    load_transformer,
)

FIXTURES = Path(__file__).parent / "fixtures" / "upstream"
CKPT = FIXTURES / "checkpoints"
GOLDEN = FIXTURES / "golden"
M = 1024  # mask token of the fixtures' models


def codec_standin(path) -> types.SimpleNamespace:
    """What the transformer needs from a loaded codec: raw codebook rows (K, V, d_q) and codebook_dim,
    read straight from the codec file's `quantizer.quantizers.{q}.codebook.weight`."""
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    K = sum(1 for k in state if k.endswith(".codebook.weight"))
    books = torch.stack([state[f"quantizer.quantizers.{q}.codebook.weight"] for q in range(K)]).float()
    return types.SimpleNamespace(codebooks=books, config=types.SimpleNamespace(codebook_dim=books.shape[2]), path=Path(path))


@pytest.fixture(scope="module")
def codec():
    return codec_standin(CKPT / "tiny" / "codec.pth")


@pytest.fixture(scope="module")
def periodic():
    return np.load(GOLDEN / "tiny_periodic.npz")


def _state(path) -> OrderedDict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _save_variant(src, dst, edit) -> Path:
    """Copy checkpoint `src` to `dst` with its state dict changed by `edit(state)`."""
    data = torch.load(src, map_location="cpu", weights_only=True)
    edit(data["state_dict"])
    torch.save(data, dst)
    return Path(dst)


# --------------------------------------------------------------------------------------------------------
# Logits against upstream


def test_coarse_logits_match_upstream(codec, periodic):
    model = load_transformer(CKPT / "tiny" / "coarse.pth", codec, "coarse")
    codes = torch.from_numpy(periodic["codes"][:, :4].copy())
    codes[torch.from_numpy(periodic["mask"][:, :4]) == 1] = M
    with torch.inference_mode():
        logits = model(codes)
    ref = torch.from_numpy(periodic["coarse_logits"]).transpose(1, 2)  # (1, V, 4T) -> (1, 4T, V)
    assert logits.shape == ref.shape == (1, 4 * codes.shape[2], 1024)
    assert logits.dtype == torch.float32
    assert (logits - ref).abs().max().item() < 1e-4
    assert torch.equal(logits.argmax(-1), ref.argmax(-1))


def test_c2f_logits_match_upstream(codec, periodic):
    model = load_transformer(CKPT / "tiny" / "c2f.pth", codec, "c2f")
    codes = torch.from_numpy(periodic["c2f_input"])
    # the construction the README describes: coarse_out's first min(T, 173) frames, fine codebooks masked
    T = min(periodic["coarse_out"].shape[2], 173)
    expect = periodic["coarse_out"][:, :, :T].copy()
    expect[:, 4:][periodic["mask"][:, 4:, :T] == 1] = M
    assert np.array_equal(codes.numpy(), expect)
    with torch.inference_mode():
        logits = model(codes)
    ref = torch.from_numpy(periodic["c2f_logits"]).transpose(1, 2)
    assert logits.shape == ref.shape == (1, 10 * T, 1024)
    assert (logits - ref).abs().max().item() < 1e-4
    assert torch.equal(logits.argmax(-1), ref.argmax(-1))


def test_batch_rows_are_independent_and_short_sequences_work(codec):
    model = load_transformer(CKPT / "tiny" / "coarse.pth", codec, "coarse")
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, M + 1, (3, 4, 9), generator=g)
    with torch.inference_mode():
        batched = model(codes)
        for b in range(3):
            torch.testing.assert_close(model(codes[b : b + 1]), batched[b : b + 1], rtol=0, atol=1e-5)
        one = model(codes[:, :, :1])
    assert one.shape == (3, 4, 1024) and torch.isfinite(one).all()


def test_relative_position_buckets_match_reference_table():
    b = RelativePositionBias.buckets(700)
    rel = torch.arange(700)[None, :] - torch.arange(700)[:, None]
    edges = [(0, 0), (1, 1), (7, 7), (8, 8), (11, 8), (12, 9), (15, 9), (16, 10), (22, 10), (23, 11),
             (31, 11), (32, 12), (45, 12), (46, 13), (63, 13), (64, 14), (90, 14), (91, 15), (699, 15)]
    for r, bucket in edges:
        assert set(b[rel == -r].tolist()) == {bucket}, r
        if r > 0:
            assert set(b[rel == r].tolist()) == {bucket + 16}, r
    assert 16 not in b.unique().tolist()


# --------------------------------------------------------------------------------------------------------
# Config and loading


def test_config_from_kwargs_defaults_and_unknown_kwargs():
    cfg = TransformerConfig.from_kwargs({"flash_attn": False, "n_layers": 3, "map_location": "cpu", "seq_len": 5})
    assert cfg == TransformerConfig(n_heads=20, n_layers=3, n_codebooks=9, n_conditioning_codebooks=0,
                                    latent_dim=8, embedding_dim=1280, vocab_size=1024)
    assert TransformerConfig.from_kwargs(RELEASED_C2F).n_predict_codebooks == 10
    with pytest.raises(CheckpointError, match="flash_attn=True"):
        TransformerConfig.from_kwargs({**RELEASED_COARSE, "flash_attn": True})
    with pytest.raises(CheckpointError, match="does not record flash_attn"):
        TransformerConfig.from_kwargs({k: v for k, v in RELEASED_COARSE.items() if k != "flash_attn"})
    with pytest.raises(CheckpointError, match="r_cond_dim=64"):
        TransformerConfig.from_kwargs({**RELEASED_COARSE, "r_cond_dim": 64})


def test_loaded_model_attributes(codec):
    model = load_transformer(CKPT / "tiny" / "c2f.pth", codec, "c2f")
    state = _state(CKPT / "tiny" / "c2f.pth")
    assert model.checkpoint_parameters == sum(t.numel() for t in state.values())
    assert model.config == TransformerConfig.from_kwargs(TINY_C2F)
    assert not any(p.requires_grad for p in model.parameters())
    assert not model.training
    # embedding table = codec rows + the model's MASK row at index V
    table = model.embedding.table
    assert table.shape == (14, 1025, 8)
    assert torch.equal(table[:, :1024], codec.codebooks)
    assert torch.equal(table[:, 1024], state["embedding.special.MASK"])


def test_weight_norm_and_lora_folding(codec):
    path = CKPT / "tiny-lora" / "coarse.pth"
    state = {k: v.double() for k, v in _state(path).items()}
    assert state["transformer.layers.0.self_attn.w_qs.lora_B"].abs().max() > 0  # the fixture's LoRA is live
    model = load_transformer(path, codec, "coarse")
    sd = model.state_dict()
    for i in range(2):
        p = f"transformer.layers.{i}"
        for name in ("self_attn.w_qs", "self_attn.w_vs", "self_attn.fc", "feed_forward.w_1", "feed_forward.w_2"):
            w = state[f"{p}.{name}.weight"] + LORA_SCALE * state[f"{p}.{name}.lora_B"] @ state[f"{p}.{name}.lora_A"]
            torch.testing.assert_close(sd[f"layers.{i}.{name}.weight"].double(), w, rtol=0, atol=1e-6)
        assert torch.equal(sd[f"layers.{i}.self_attn.w_ks.weight"], state[f"{p}.self_attn.w_ks.weight"].float())
    v, g = state["classifier.layers.0.weight_v"], state["classifier.layers.0.weight_g"]
    w = v * (g / v.flatten(1).norm(dim=1)[:, None, None])
    torch.testing.assert_close(sd["classifier_weight"].double(), w, rtol=0, atol=1e-6)


def test_lora_changes_the_logits(codec, tmp_path):
    path = CKPT / "tiny-lora" / "coarse.pth"

    def zero_b(state):
        for k in state:
            if k.endswith("lora_B"):
                state[k] = torch.zeros_like(state[k])

    base = _save_variant(path, tmp_path / "coarse.pth", zero_b)
    codes = torch.randint(0, M + 1, (1, 4, 20), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        with_lora = load_transformer(path, codec, "coarse")(codes)
        without = load_transformer(base, codec, "coarse")(codes)
    assert (with_lora - without).abs().max() > 1e-3


def test_lora_only_overlay(codec, tmp_path):
    lora_src = CKPT / "tiny-lora" / "coarse.pth"
    lora_state = _state(lora_src)
    overlay = tmp_path / "lora.pth"
    torch.save({k: v for k, v in lora_state.items() if k.endswith(("lora_A", "lora_B"))}, overlay)

    def zero_b(state):  # a base model as constructed before fine-tuning: lora_B = 0, same W
        for k in state:
            if k.endswith("lora_B"):
                state[k] = torch.zeros_like(state[k])

    base = _save_variant(lora_src, tmp_path / "coarse.pth", zero_b)
    plain = load_transformer(base, codec, "coarse").state_dict()
    merged = load_transformer(base, codec, "coarse", lora=overlay).state_dict()
    direct = load_transformer(lora_src, codec, "coarse").state_dict()
    name = "self_attn.w_vs"
    p = "transformer.layers.1." + name
    expect = lora_state[f"{p}.weight"] + (lora_state[f"{p}.lora_B"] @ lora_state[f"{p}.lora_A"]) * LORA_SCALE
    assert torch.equal(merged[f"layers.1.{name}.weight"], expect)  # applied exactly once
    assert not torch.equal(plain[f"layers.1.{name}.weight"], expect)
    for k in direct:
        assert torch.equal(merged[k], direct[k]), k


# --------------------------------------------------------------------------------------------------------
# Bad checkpoints


def test_missing_file(codec, tmp_path):
    with pytest.raises(CheckpointError, match="coarse checkpoint not found"):
        load_transformer(tmp_path / "nope.pth", codec, "coarse")


def test_not_a_checkpoint(codec, tmp_path):
    text = tmp_path / "coarse.pth"
    text.write_text("not a checkpoint\n")
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint"):
        load_transformer(text, codec, "coarse")


def test_coarse_given_as_c2f(codec):
    with pytest.raises(CheckpointError, match="holds a coarse model but was given as the c2f checkpoint"):
        load_transformer(CKPT / "tiny" / "coarse.pth", codec, "c2f")
    with pytest.raises(CheckpointError, match="holds a c2f model but was given as the coarse checkpoint"):
        load_transformer(CKPT / "tiny" / "c2f.pth", codec, "coarse")


def test_codec_codebook_dim_differs_from_latent_dim(codec):
    wide = types.SimpleNamespace(
        codebooks=torch.zeros(14, 1024, 16), config=types.SimpleNamespace(codebook_dim=16), path=Path("wide_codec.pth")
    )
    with pytest.raises(CheckpointError) as e:
        load_transformer(CKPT / "tiny" / "coarse.pth", wide, "coarse")
    msg = str(e.value)
    assert "wide_codec.pth" in msg and "codebook_dim 16" in msg
    assert "coarse.pth" in msg and "latent_dim 8" in msg


def test_codec_with_too_few_codebooks(codec):
    few = types.SimpleNamespace(
        codebooks=codec.codebooks[:9], config=types.SimpleNamespace(codebook_dim=8), path=Path("small_codec.pth")
    )
    with pytest.raises(CheckpointError, match=r"uses 14 codebooks but small_codec.pth has only 9"):
        load_transformer(CKPT / "tiny" / "c2f.pth", few, "c2f")


def test_missing_tensor(codec, tmp_path):
    key = "transformer.layers.1.feed_forward.w_2.weight"
    bad = _save_variant(CKPT / "tiny" / "coarse.pth", tmp_path / "coarse.pth", lambda s: s.pop(key))
    with pytest.raises(CheckpointError, match=rf"missing tensor '{key}' \(expected shape \(64, 128\)\)"):
        load_transformer(bad, codec, "coarse")


def test_misshaped_tensor(codec, tmp_path):
    key = "transformer.layers.0.self_attn.relative_attention_bias.weight"

    def edit(state):
        state[key] = torch.zeros(32, 5)

    bad = _save_variant(CKPT / "tiny" / "coarse.pth", tmp_path / "coarse.pth", edit)
    with pytest.raises(CheckpointError, match=rf"'{key}' has shape \(32, 5\), expected \(32, 4\)"):
        load_transformer(bad, codec, "coarse")


def test_flash_attn_checkpoint_is_refused(codec, tmp_path):
    data = torch.load(CKPT / "tiny" / "coarse.pth", map_location="cpu", weights_only=True)
    data["metadata"]["kwargs"]["flash_attn"] = True
    torch.save(data, tmp_path / "coarse.pth")
    with pytest.raises(CheckpointError, match=r"coarse.pth: the model records flash_attn=True"):
        load_transformer(tmp_path / "coarse.pth", codec, "coarse")


# --------------------------------------------------------------------------------------------------------
# Synthetic checkpoints


@pytest.mark.parametrize("kind,kwargs", [("codec", TINY_CODEC), ("coarse", TINY_COARSE), ("c2f", TINY_C2F)])
def test_tiny_constants_and_shapes_equal_the_fixture_files(kind, kwargs):
    data = torch.load(CKPT / "tiny" / f"{kind}.pth", map_location="cpu", weights_only=True)
    assert full_kwargs(kind, kwargs) == data["metadata"]["kwargs"]
    fixture = [(k, tuple(v.shape)) for k, v in data["state_dict"].items()]
    assert list(state_dict_shapes(kind, kwargs).items()) == fixture  # same keys, shapes and order


def test_codec_key_count_formula():
    for Re, Rd, K in [(4, 6, 14), (4, 4, 14), (3, 2, 9)]:
        kw = {"encoder_rates": [2] * Re, "decoder_rates": [2] * Rd, "n_codebooks": K}
        assert len(state_dict_shapes("codec", kw)) == 3 + 28 * Re + 4 + 7 * K + 3 + 76 * Rd + 4


def test_released_shapes():
    assert parameter_count("coarse", RELEASED_COARSE) == 335_893_664
    assert parameter_count("c2f", RELEASED_C2F) == 277_753_072
    assert len(state_dict_shapes("coarse", RELEASED_COARSE)) == 18 * 20 + 8
    assert len(state_dict_shapes("c2f", RELEASED_C2F)) == 18 * 16 + 8
    s = state_dict_shapes("c2f", RELEASED_C2F)
    assert s["embedding.special.MASK"] == (14, 8)
    assert s["embedding.out_proj.weight"] == (1280, 112, 1)
    assert s["classifier.layers.0.weight_v"] == (10240, 1280, 1)
    codec = state_dict_shapes("codec", RELEASED_CODEC_STANDIN)
    assert codec["quantizer.quantizers.13.in_proj.weight_v"] == (8, 1024, 1)  # D = 64 · 2^4
    assert math.prod(RELEASED_CODEC_STANDIN["decoder_rates"]) == 768 == math.prod(RELEASED_CODEC_STANDIN["encoder_rates"])


def test_written_random_checkpoints_load_and_run(tmp_path):
    paths = write_random_checkpoints(tmp_path, TINY_CODEC, TINY_COARSE, TINY_C2F, seed=3)
    assert {p.name for p in paths.values()} == {"codec.pth", "coarse.pth", "c2f.pth"}
    for kind, kwargs in (("codec", TINY_CODEC), ("coarse", TINY_COARSE), ("c2f", TINY_C2F)):
        data = torch.load(paths[kind], map_location="cpu", weights_only=True)
        assert set(data) == {"state_dict", "metadata"} and isinstance(data["state_dict"], OrderedDict)
        assert data["metadata"]["kwargs"] == full_kwargs(kind, kwargs)
        state = data["state_dict"]
        assert list((k, tuple(v.shape)) for k, v in state.items()) == list(state_dict_shapes(kind, kwargs).items())
        assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in state.values())
        assert all((v > 0).all() for k, v in state.items() if k.endswith((".weight_g", ".alpha")))
        assert all(v.abs().max() > 0 for k, v in state.items() if k.endswith(".lora_B"))
    codec = codec_standin(paths["codec"])
    g = torch.Generator().manual_seed(0)
    for kind in ("coarse", "c2f"):
        model = load_transformer(paths[kind], codec, kind)
        codes = torch.randint(0, M + 1, (2, model.config.n_codebooks, 30), generator=g)
        with torch.inference_mode():
            logits = model(codes)
        assert logits.shape == (2, 30 * model.config.n_predict_codebooks, 1024)
        assert torch.isfinite(logits).all() and logits.std() > 0.1
    # same seed, same files
    again = write_random_checkpoints(tmp_path / "again", TINY_CODEC, TINY_COARSE, TINY_C2F, seed=3)
    for kind in paths:
        a, b = _state(paths[kind]), _state(again[kind])
        assert all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------------------------------------
# Export friendliness (the ONNX round trip itself is the export module's test)


def test_torch_export_keeps_the_time_axis_dynamic(codec):
    from torch.export import Dim

    model = load_transformer(CKPT / "tiny" / "coarse.pth", codec, "coarse")
    example = torch.randint(0, M + 1, (2, 4, 40), generator=torch.Generator().manual_seed(0))
    spec = {"codes": {0: Dim("B", min=1, max=64), 2: Dim("T", min=1, max=4096)}}
    ep = torch.export.export(model, (example,), dynamic_shapes=spec, strict=False)
    ranges = sorted((int(r.lower), int(r.upper)) for r in ep.range_constraints.values())
    assert ranges == [(1, 64), (1, 4096)]  # nothing narrowed
    exported = ep.module()
    for T in (1, 3, 300):
        codes = torch.randint(0, M + 1, (1, 4, T), generator=torch.Generator().manual_seed(T))
        with torch.inference_mode():
            assert torch.equal(exported(codes), model(codes))
