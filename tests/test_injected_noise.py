"""The sampler with injected noise (`assemble(..., noise_inputs=True)`, a test-only variant).

With the noise as graph inputs, the single model reproduces upstream's seeded run of the fixture
`tiny_stochastic_seed5` token for token when fed PyTorch's own draws in upstream's order
(upstream's generate and Interface, in their order of draws):

    torch.manual_seed(5)                       coarse_vamp(seed=5): one 58-frame chunk, re-seeded
    for each of the 12 coarse steps:           (every step samples: i/12 <= sample_cutoff = 1.0)
        q = empty(B·N, V).exponential_(1)      multinomial == argmax(probs / q), N = 58·4
        u = zeros(B, N).uniform_(1e-20, 1)     mask_by_random_topk's Gumbel uniforms
    (no re-seed) for each 173-frame c2f chunk, 2 steps × (q (B·1730, V), u (B, 1730))

The bank for a stage holds draw d = chunk·steps + step (graphs/stages.py, `injected_noise`).
The production model (the `tiny` fixture) must have no noise inputs, and its PRNG noise must be the
documented stream (stage key → chunk → step → purpose): the injected model fed that stream from the
numpy reference gives the production model's outputs exactly.
"""
from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort
import pytest
import torch

import tests.numpy_reference as R
from vampnet_onnx.builder.assemble import NOISE_INPUTS, assemble
from vampnet_onnx.graphs.prng import STREAM_C2F, STREAM_COARSE
from conftest import OUTPUTS, app_output, golden, prepared_audio
from vampnet_onnx.session import interface_feeds

V = 1024
COARSE_CHUNK, C2F_CHUNK = 575, 173
N_COARSE, N_FINE = 4, 10  # predicted codebooks per position of each stage
NOISE_NAMES = [name for names in NOISE_INPUTS.values() for name in names]

# upstream's defaults (generate, Interface.vamp): what the fixture ran with, spelled out
SETTINGS = {
    "sampling_steps": np.array(12, np.int64),
    "temperature": np.array(1.0, np.float32),
    "mask_temperature": np.array(10.5, np.float32),
    "top_p": np.array(1.0, np.float32),  # off (upstream: None)
    "sample_cutoff": np.array(1.0, np.float32),
    "c2f_sampling_steps": np.array(2, np.int64),
    "c2f_temperature": np.array(1.0, np.float32),
    "c2f_mask_temperature": np.array(10.5, np.float32),
    "c2f_top_p": np.array(1.0, np.float32),
    "c2f_sample_cutoff": np.array(1.0, np.float32),
}


def session(model_bytes_or_path) -> ort.InferenceSession:
    return ort.InferenceSession(model_bytes_or_path, providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, feeds: dict) -> dict[str, np.ndarray]:
    """Run with `feeds` completed by the interface's defaults (noise banks passed through)."""
    noise = {k: v for k, v in feeds.items() if k in NOISE_NAMES}
    values = {k: v for k, v in feeds.items() if k not in NOISE_NAMES and k != "audio"}
    return dict(zip(OUTPUTS, sess.run(OUTPUTS, {**interface_feeds(feeds["audio"], **values), **noise})))


@pytest.fixture(scope="module")
def injected_model(tiny):
    """The tiny variant with noise inputs, assembled from the components the `tiny` fixture exported."""
    return assemble(tiny.codec, tiny.coarse, tiny.c2f, components=tiny.components, noise_inputs=True)


@pytest.fixture(scope="module")
def injected(injected_model) -> ort.InferenceSession:
    return session(injected_model.SerializeToString())


@pytest.fixture(scope="module")
def production(tiny) -> ort.InferenceSession:
    return session(str(tiny.path))


# --------------------------------------------------------------------------------------------
# Noise banks
# --------------------------------------------------------------------------------------------


def sampling(step: int, steps: int, cutoff: float) -> bool:
    return step / steps <= cutoff  # upstream: Python floats


def torch_stage_draws(B: int, N: int, steps: int, n_chunks: int, cutoff: float = 1.0):
    """Upstream's draws for one stage from torch's global CPU generator, in generate's order (5.5).

    Returns banks q (D, B, N, V) and u (D, B, N), D = n_chunks·steps (q: up to the last sampling
    step). The caller seeds (or not) before calling, as upstream does.
    """
    qs, us = [], []
    for _ in range(n_chunks):
        for i in range(steps):
            if sampling(i, steps, cutoff):
                # torch.multinomial(probs (B·N, V), 1) == argmax(probs / empty_like(probs).exponential_(1))
                qs.append(torch.empty(B * N, V, dtype=torch.float32).exponential_(1).reshape(B, N, V))
            # mask_by_random_topk: torch.zeros_like(probs (B, N)).uniform_(1e-20, 1)
            us.append(torch.zeros(B, N, dtype=torch.float32).uniform_(1e-20, 1))
    q = torch.stack(qs).numpy() if qs else np.zeros((0, B, N, V), np.float32)
    return q, torch.stack(us).numpy()


def prng_stage_draws(seed: int, stream: int, B: int, N: int, steps: int, n_chunks: int):
    """The production model's noise for one stage, from the numpy reference of graphs/prng.py:
    key = seed → stage → chunk → step, then purpose 0 (q = exponential(uniforms)) and 1 (u)."""
    q = np.empty((n_chunks * steps, B, N, V), np.float32)
    u = np.empty((n_chunks * steps, B, N), np.float32)
    for c in range(n_chunks):
        for i in range(steps):
            d = c * steps + i
            q[d] = R.exponential(R.uniform(R.key_path(seed, stream, c, i, 0), (B, N, V)))
            u[d] = R.uniform(R.key_path(seed, stream, c, i, 1), (B, N))
    return q, u


# --------------------------------------------------------------------------------------------
# Upstream's seeded run, token for token
# --------------------------------------------------------------------------------------------


def test_reproduces_upstream_stochastic_fixture(injected):
    g = golden("tiny_stochastic_seed5")
    meta = g["meta"]
    assert meta["coarse_kwargs"] == {"seed": 5} and meta["c2f_kwargs"]["_sampling_steps"] == 2
    codes, mask = g["codes"], g["mask"]
    B, _, T = codes.shape
    assert T <= COARSE_CHUNK  # one coarse chunk: a single bank; longer inputs would repeat it per chunk
    n_c2f_chunks = -(-T // C2F_CHUNK)

    torch.manual_seed(meta["coarse_kwargs"]["seed"])  # generate(seed=5) re-seeds (util.seed)
    coarse_q, coarse_u = torch_stage_draws(B, T * N_COARSE, 12, 1)
    # coarse_to_fine: no seed, the stream continues; every chunk is padded to 173 frames
    c2f_q, c2f_u = torch_stage_draws(B, C2F_CHUNK * N_FINE, 2, n_c2f_chunks)

    feeds = {
        "audio": prepared_audio(g),
        "seed": np.array(0, np.int64),  # unused: the mask is given and the noise injected
        "mask": mask,
        **SETTINGS,
        "coarse_noise_q": coarse_q, "coarse_noise_u": coarse_u,
        "c2f_noise_q": c2f_q, "c2f_noise_u": c2f_u,
    }  # fmt: skip
    start = time.perf_counter()
    out = run(injected, feeds)
    print(f"injected run: {time.perf_counter() - start:.2f} s")

    np.testing.assert_array_equal(out["codes"], codes)
    np.testing.assert_array_equal(out["mask_out"], mask)
    coarse_equal = out["coarse_codes"] == g["coarse_out"]
    fine_equal = out["codes_out"] == g["fine_out"]
    print(f"coarse_codes equal {coarse_equal.sum()}/{coarse_equal.size}, "
          f"codes_out equal {fine_equal.sum()}/{fine_equal.size}")
    np.testing.assert_array_equal(out["coarse_codes"], g["coarse_out"])
    np.testing.assert_array_equal(out["codes_out"], g["fine_out"])
    # the draws matter: upstream's output is not what the argmax would give
    assert (g["fine_out"] != codes)[mask == 1].any()

    # the model hands out the decoded audio at the input's loudness, as upstream's app does
    n = feeds["audio"].shape[1]
    audio_error = np.abs(out["audio_out"] - app_output(g["audio_out"][:, 0, :n], feeds["audio"])).max()
    print(f"audio max |error| {audio_error:.3g}")
    assert audio_error <= 1e-4


def test_argmax_steps_need_no_q(injected):
    """Deterministic fixture (argmax, κ = 0): an empty q bank is never read, u has no effect."""
    g = golden("tiny_periodic")
    codes, mask = g["codes"], g["mask"]
    B, _, T = codes.shape
    c2f_steps = g["meta"]["c2f_kwargs"].get("_sampling_steps", 12)  # generate's default: 12
    rng = np.random.default_rng(0)
    feeds = {
        "audio": prepared_audio(g),
        "mask": mask,
        **SETTINGS,
        "c2f_sampling_steps": np.array(c2f_steps, np.int64),
        "sample_cutoff": np.array(-1.0, np.float32), "mask_temperature": np.array(0.0, np.float32),
        "c2f_sample_cutoff": np.array(-1.0, np.float32), "c2f_mask_temperature": np.array(0.0, np.float32),
        "coarse_noise_q": np.zeros((0, B, T * N_COARSE, V), np.float32),
        "coarse_noise_u": rng.uniform(0, 1, (12, B, T * N_COARSE)).astype(np.float32),
        "c2f_noise_q": np.zeros((0, B, C2F_CHUNK * N_FINE, V), np.float32),
        "c2f_noise_u": rng.uniform(0, 1, (c2f_steps * -(-T // C2F_CHUNK), B, C2F_CHUNK * N_FINE)).astype(np.float32),
    }  # fmt: skip
    out = run(injected, feeds)
    np.testing.assert_array_equal(out["coarse_codes"], g["coarse_out"])
    np.testing.assert_array_equal(out["codes_out"], g["fine_out"])


# --------------------------------------------------------------------------------------------
# The production model is untouched
# --------------------------------------------------------------------------------------------


def test_production_model_has_no_noise_inputs(tiny, injected_model):
    import onnx

    production = onnx.load(str(tiny.path), load_external_data=False)
    names = {v.name for v in production.graph.input}
    assert not names & set(NOISE_NAMES)
    assert "noise_inputs" not in {p.key for p in production.metadata_props}
    injected_names = [v.name for v in injected_model.graph.input]
    assert injected_names == [v.name for v in production.graph.input] + NOISE_NAMES
    assert not set(NOISE_NAMES) & {t.name for t in injected_model.graph.initializer}  # no defaults


@pytest.mark.parametrize("seed", [5, 2**40 + 3])
def test_production_noise_is_the_documented_prng_stream(production, injected, seed):
    """Two c2f chunks (230 frames): the injected model fed graphs/prng.py's stream (numpy reference,
    key seed → stage → chunk → step → purpose, draw d = chunk·steps + step) equals the production
    model for the same seed, output for output."""
    g = golden("tiny_inpaint_c2f_chunks")
    audio = g["preprocessed_audio"][:, 0]
    B, T = 1, audio.shape[1] // 768
    assert C2F_CHUNK < T <= COARSE_CHUNK
    feeds = {"audio": audio, "seed": np.array(seed, np.int64), **SETTINGS}
    expected = run(production, feeds)

    coarse_q, coarse_u = prng_stage_draws(seed, STREAM_COARSE, B, T * N_COARSE, 12, 1)
    c2f_q, c2f_u = prng_stage_draws(seed, STREAM_C2F, B, C2F_CHUNK * N_FINE, 2, 2)
    out = run(injected, {**feeds, "coarse_noise_q": coarse_q, "coarse_noise_u": coarse_u,
                         "c2f_noise_q": c2f_q, "c2f_noise_u": c2f_u})
    for name in OUTPUTS:
        np.testing.assert_array_equal(out[name], expected[name], err_msg=name)
    assert (expected["codes_out"] != expected["codes"]).any()
