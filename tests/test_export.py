"""Each component exported to its own ONNX graph (builder/export.py via assemble.export_components).

For the tiny and tiny-lora variants, every exported component (`Built.components[name]`) runs in
onnxruntime and is compared

* with upstream's fixtures: encoder codes equal `codes`; coarse / c2f logits within 1e-4 of
  `coarse_logits` / `c2f_logits` (tiny_periodic only; for tiny-lora, with the torch module, which
  test_transformer.py ties to upstream); decoded audio to the float32 noise floor of `decoded_input`;
* with its torch module at 1 frame, a few hundred frames and past one 10 s chunk (600 frames > 575),
  batch 1 and batch 2 (codes equal, logits within 1e-4, audio to the noise floor);

and each graph passes the full ONNX checker with symbolic batch and time axes.

Decoded audio is held to the float32 noise floor of tests/tolerances.py (why: tests/test_codec.py).
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import CASE_VARIANT, golden
from tolerances import LOGITS_ATOL, assert_audio_close

VARIANTS = ["tiny", "tiny-lora"]
COMPONENTS = ["codec_encoder", "codec_decoder", "coarse_transformer", "c2f_transformer"]
HOP = 768
MASK = 1024
N_COARSE = 4
C2F_CHUNK = 173
LENGTHS = [1, 200, 600]  # frames: one, a few hundred, past one 10 s coarse chunk (575 frames)

# Expected layout of every input and output: "sym" = a symbolic dimension (dim_param), an int = fixed.
LAYOUT = {
    "codec_encoder": {"audio": ["sym", 1, "sym"], "codes": ["sym", 14, "sym"]},
    "codec_decoder": {"codes": ["sym", 14, "sym"], "audio": ["sym", 1, "sym"]},
    "coarse_transformer": {"codes": ["sym", 4, "sym"], "logits": ["sym", "sym", 1024]},
    "c2f_transformer": {"codes": ["sym", 14, "sym"], "logits": ["sym", "sym", 1024]},
}


def _cases(variant: str) -> list[str]:
    return [case for case, v in CASE_VARIANT.items() if v == variant]


_SESSIONS: dict = {}


def session(built, name: str) -> ort.InferenceSession:
    key = (str(built.path), name)
    if key not in _SESSIONS:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        _SESSIONS[key] = ort.InferenceSession(
            built.components[name].SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    return _SESSIONS[key]


def run(built, name: str, x: np.ndarray) -> np.ndarray:
    sess = session(built, name)
    (out,) = sess.run(None, {sess.get_inputs()[0].name: x})
    return out


def torch_module(built, name: str):
    return {
        "codec_encoder": built.codec.encoder,
        "codec_decoder": built.codec.decoder,
        "coarse_transformer": built.coarse,
        "c2f_transformer": built.c2f,
    }[name]


def run_torch(built, name: str, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return torch_module(built, name)(torch.from_numpy(np.ascontiguousarray(x))).numpy()


@pytest.fixture(params=VARIANTS)
def variant(request) -> str:
    return request.param


@pytest.fixture
def built(variant, build_variant):
    return build_variant(variant)


# ----------------------------------------------------------------------------------- graph checks


@pytest.mark.parametrize("name", COMPONENTS)
def test_component_passes_full_check(built, name):
    onnx.checker.check_model(built.components[name], full_check=True)


@pytest.mark.parametrize("name", COMPONENTS)
def test_component_axes_are_symbolic(built, name):
    graph = built.components[name].graph
    values = {v.name: v for v in list(graph.input) + list(graph.output)}
    assert set(values) == set(LAYOUT[name]), f"{name}: inputs/outputs {sorted(values)}"
    batch_names = set()
    for value_name, layout in LAYOUT[name].items():
        dims = values[value_name].type.tensor_type.shape.dim
        assert len(dims) == len(layout), f"{name}.{value_name}: rank {len(dims)}"
        for axis, (dim, want) in enumerate(zip(dims, layout)):
            where = f"{name}.{value_name} axis {axis}"
            if want == "sym":
                assert dim.WhichOneof("value") == "dim_param" and dim.dim_param, f"{where} is not symbolic: {dim}"
            else:
                assert dim.WhichOneof("value") == "dim_value" and dim.dim_value == want, f"{where}: {dim}"
        batch_names.add(dims[0].dim_param)
    assert len(batch_names) == 1, f"{name}: input and output batch axes differ: {batch_names}"


# ------------------------------------------------------------------------------ against upstream


def test_encoder_codes_equal_upstream(built, variant):
    for case in _cases(variant):
        g = golden(case)
        codes = run(built, "codec_encoder", g["preprocessed_audio"])
        assert codes.dtype == np.int64
        np.testing.assert_array_equal(codes, g["codes"], err_msg=case)


def _masked_coarse_input(g: dict) -> np.ndarray:
    codes = g["codes"][:, :N_COARSE].copy()
    codes[g["mask"][:, :N_COARSE] == 1] = MASK
    return codes


def _masked_c2f_input(g: dict) -> np.ndarray:
    t = min(g["coarse_out"].shape[2], C2F_CHUNK)
    codes = g["coarse_out"][:, :, :t].copy()
    fine = codes[:, N_COARSE:]
    fine[g["mask"][:, N_COARSE:, :t] == 1] = MASK
    return codes


def test_coarse_logits_match_upstream(built, variant):
    if variant == "tiny":
        g = golden("tiny_periodic")
        x = _masked_coarse_input(g)
        want = g["coarse_logits"].transpose(0, 2, 1)  # (1, V, N) -> (1, N, V)
    else:  # no logit fixture: the torch module (tied to upstream by test_transformer.py)
        g = golden("tiny_lora")
        x = _masked_coarse_input(g)
        want = run_torch(built, "coarse_transformer", x)
    got = run(built, "coarse_transformer", x)
    assert got.shape == want.shape == (1, x.shape[2] * N_COARSE, 1024)
    np.testing.assert_allclose(got, want, rtol=0, atol=LOGITS_ATOL)


def test_c2f_logits_match_upstream(built, variant):
    if variant == "tiny":
        g = golden("tiny_periodic")
        x = g["c2f_input"]
        np.testing.assert_array_equal(x, _masked_c2f_input(g))  # how the fixture was formed (README)
        want = g["c2f_logits"].transpose(0, 2, 1)
    else:
        g = golden("tiny_lora")
        x = _masked_c2f_input(g)
        want = run_torch(built, "c2f_transformer", x)
    got = run(built, "c2f_transformer", x)
    assert got.shape == want.shape == (1, x.shape[2] * 10, 1024)
    np.testing.assert_allclose(got, want, rtol=0, atol=LOGITS_ATOL)


def test_decoder_audio_matches_upstream(built, variant):
    for case in _cases(variant):
        g = golden(case)
        audio = run(built, "codec_decoder", g["codes"])
        assert_audio_close(audio, g["decoded_input"], case)


# ------------------------------------------------------------------- against torch, at any length


def _fixture_audio(frames: int) -> np.ndarray:
    """Real (upstream-preprocessed) audio, tiled to `frames` hops; row 1 is another excerpt of it."""
    clips = [golden(c)["preprocessed_audio"][0, 0] for c in ("tiny_inpaint_c2f_chunks", "tiny_periodic")]
    pool = np.concatenate(clips)
    n = frames * HOP
    pool = np.tile(pool, n // len(pool) + 2)
    rows = [pool[:n], 0.7 * pool[len(clips[0]) // 3:][:n][::-1]]
    return np.ascontiguousarray(np.stack(rows)[:, None, :], dtype=np.float32)


def _fixture_codes(frames: int) -> np.ndarray:
    """Real codes tiled to `frames`, a few mask tokens (the decoder maps them to 0); two rows."""
    pool = np.concatenate([golden(c)["codes"][0] for c in ("tiny_periodic", "tiny_inpaint_c2f_chunks")], axis=1)
    pool = np.tile(pool, (1, frames // pool.shape[1] + 2))
    rows = np.stack([pool[:, :frames], pool[:, 50:50 + frames]])
    rows[1, :, ::5] = MASK
    return rows


def _random_codes(frames: int, n_codebooks: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, MASK + 1, size=(2, n_codebooks, frames), dtype=np.int64)


def _input(name: str, frames: int) -> np.ndarray:
    if name == "codec_encoder":
        return _fixture_audio(frames)
    if name == "codec_decoder":
        return _fixture_codes(frames)
    return _random_codes(frames, N_COARSE if name == "coarse_transformer" else 14, frames)


def _compare_lengths(built, name: str, frames: int) -> None:
    x2 = _input(name, frames)  # batch 2
    want = run_torch(built, name, x2)
    got2 = run(built, name, x2)
    got1 = run(built, name, x2[:1])  # batch 1 (its reference: row 0 of the batch-2 torch run)
    for got, ref, label in ((got2, want, "B=2"), (got1, want[:1], "B=1")):
        msg = f"{name}, {frames} frames, {label}"
        assert got.shape == ref.shape, msg
        assert got.dtype == ref.dtype, msg
        if got.dtype == np.int64:
            np.testing.assert_array_equal(got, ref, err_msg=msg)
        elif name == "codec_decoder":
            assert_audio_close(got, ref, msg)
        else:
            assert np.isfinite(got).all(), msg
            np.testing.assert_allclose(got, ref, rtol=0, atol=LOGITS_ATOL, err_msg=msg)
    # frames: codec hop-aligned; logits t·C_p + c
    if name == "codec_encoder":
        assert got2.shape == (2, 14, frames)
    elif name == "codec_decoder":
        assert got2.shape == (2, 1, frames * HOP)
    else:
        assert got2.shape == (2, frames * (N_COARSE if name == "coarse_transformer" else 10), 1024)


@pytest.mark.parametrize("frames", LENGTHS)
@pytest.mark.parametrize("name", ["coarse_transformer", "c2f_transformer"])
def test_transformer_matches_torch_at_any_length(built, name, frames):
    _compare_lengths(built, name, frames)


# The codec components are the same code for both variants (only weights differ, and their fixture
# parity is tested above for both); the long codec runs in torch cost seconds each, so tiny only.
@pytest.mark.parametrize("frames", LENGTHS)
def test_encoder_matches_torch_at_any_length(tiny, frames):
    _compare_lengths(tiny, "codec_encoder", frames)


@pytest.mark.parametrize("frames", LENGTHS)
def test_decoder_matches_torch_at_any_length(tiny, frames):
    _compare_lengths(tiny, "codec_decoder", frames)
