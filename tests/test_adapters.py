"""Several fine-tunes in one model (`build --coarse-lora NAME=FILE --c2f-lora NAME=FILE ...`).

The base is the tiny-lora fixture split as a fine-tune leaves it (test_build.split_lora): base
checkpoints plus LoRA-only files, adapter "tiny". A second adapter, "rand", is a random LoRA of the
same shapes in the same on-disk format, for the coarse model only (its c2f stage keeps the base
weights). Against models built with one LoRA folded in (or none), the two-adapter model must give
the same outputs token for token for every adapter, the golden tiny_lora case included, while its
file grows by the adapters' factors only.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import CHECKPOINTS, OUTPUTS, app_output, fixture_inputs, golden, prepared_audio
from test_build import split_lora
from tolerances import assert_audio_close
from vampnet_onnx.cli import main
from vampnet_onnx.model import Model
from vampnet_onnx.session import interface_feeds

ADAPTERS = ("tiny", "rand")


def random_lora(like: Path, path: Path, seed: int) -> Path:
    """A LoRA file with `like`'s keys and shapes and random factors (B large enough to matter)."""
    generator = torch.Generator().manual_seed(seed)
    factors = torch.load(like, weights_only=True)
    torch.save({k: torch.randn(v.shape, generator=generator) * 0.3 for k, v in factors.items()}, path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("adapters")
    (folder / "base").mkdir()
    overlays = split_lora(folder / "base")
    return {"base": folder / "base", "tiny_coarse": overlays["coarse"], "tiny_c2f": overlays["c2f"],
            "rand_coarse": random_lora(overlays["coarse"], folder / "rand-coarse.pth", 5)}


def adapter_flags(files: dict[str, Path]) -> list[str]:
    return ["--coarse-lora", f"tiny={files['tiny_coarse']}", "--c2f-lora", f"tiny={files['tiny_c2f']}",
            "--coarse-lora", f"rand={files['rand_coarse']}"]


@pytest.fixture(scope="module")
def models(files, tmp_path_factory) -> dict[str, Path]:
    """The two-adapter model (through the command line), and the base and "rand" models with the
    LoRA folded in (assembled directly, sharing the codec's export)."""
    from vampnet_onnx.builder.assemble import assemble, export_codec, export_transformer
    from vampnet_onnx.builder.files import save_model
    from vampnet_onnx.builder.codec import load_codec
    from vampnet_onnx.builder.transformer import load_transformer

    folder = tmp_path_factory.mktemp("models")
    out = {"adapters": folder / "adapters" / "vampnet.onnx"}
    assert main(["build", "--checkpoints", str(files["base"]), *adapter_flags(files), "-o", str(out["adapters"])]) == 0

    base = files["base"]
    codec = load_codec(base / "codec.pth")
    codec_components = export_codec(codec)
    c2f = load_transformer(base / "c2f.pth", codec, "c2f")
    c2f_component = export_transformer(c2f)
    for name, lora in (("base", None), ("rand", files["rand_coarse"])):
        coarse = load_transformer(base / "coarse.pth", codec, "coarse", lora=lora)
        components = {**codec_components, "coarse_transformer": export_transformer(coarse),
                      "c2f_transformer": c2f_component}
        out[name] = folder / name / "vampnet.onnx"
        out[name].parent.mkdir()
        save_model(assemble(codec, coarse, c2f, components=components), out[name])
    return out


def run(path: Path, adapter: int | None = None, **inputs) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = golden("tiny_lora")
    extra = {} if adapter is None else {"adapter": adapter}
    feeds = interface_feeds(prepared_audio(g), **{**inputs, **extra})
    return dict(zip(OUTPUTS, session.run(OUTPUTS, feeds)))


SETTINGS = {
    "deterministic": fixture_inputs(golden("tiny_lora")),
    "sampled": {"seed": 3, "sampling_steps": 4, "c2f_sampling_steps": 2},
}


def assert_same(got: dict, want: dict, label: str) -> None:
    for name in OUTPUTS[1:]:
        np.testing.assert_array_equal(got[name], want[name], err_msg=f"{label}: {name}")
    assert_audio_close(got["audio_out"], want["audio_out"], label)


@pytest.mark.parametrize("settings", list(SETTINGS))
def test_each_adapter_equals_its_own_build(models, settings):
    inputs = SETTINGS[settings]
    outputs = {k: run(models["adapters"], k, **inputs) for k in range(3)}
    assert_same(outputs[0], run(models["base"], **inputs), f"{settings}, adapter 0 = base")
    assert_same(outputs[2], run(models["rand"], **inputs), f"{settings}, adapter 2 = rand")
    # adapter 1 against the model with tiny's LoRA folded in: upstream's own result
    if settings == "deterministic":
        g = golden("tiny_lora")
        np.testing.assert_array_equal(outputs[1]["coarse_codes"], g["coarse_out"])
        np.testing.assert_array_equal(outputs[1]["codes_out"], g["fine_out"])
        fed = prepared_audio(g)
        assert_audio_close(outputs[1]["audio_out"], app_output(g["audio_out"][:, 0, : fed.shape[1]], fed),
                           "tiny_lora through adapter 1")
    for a, b in ((0, 1), (0, 2), (1, 2)):  # the adapters really differ
        assert (outputs[a]["coarse_codes"] != outputs[b]["coarse_codes"]).any(), (settings, a, b)


def test_adapter_out_of_range_is_clamped(models):
    inputs = {"seed": 4, "sampling_steps": 2, "c2f_sampling_steps": 1}
    for value, acts_as in ((3, 2), (2**40, 2), (-1, 0), (-(2**62), 0)):
        np.testing.assert_array_equal(run(models["adapters"], value, **inputs)["codes_out"],
                                      run(models["adapters"], acts_as, **inputs)["codes_out"], err_msg=str(value))


def test_file_grows_by_the_adapters_factors_only(models, files):
    """Not a copy of the transformers per adapter: the adapters' own tensors, plus at most 1 %."""
    factors = sum(t.numel() * 4 for key in ("tiny_coarse", "tiny_c2f", "rand_coarse")
                  for t in torch.load(files[key], weights_only=True).values())
    base, adapters = models["base"].stat().st_size, models["adapters"].stat().st_size
    assert 0 < adapters - base <= factors + 0.01 * base, (adapters - base, factors, base)


def test_metadata_info_and_vamp_select_adapters_by_name(models, tmp_path, capsys):
    path = models["adapters"]
    model = Model(path)
    assert model.adapters == list(ADAPTERS)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert set(__import__("json").loads(meta["adapter_sha256"])) == set(ADAPTERS)
    assert "adapters" not in {p.key for p in onnx.load(str(models["base"])).metadata_props}

    assert main(["info", str(path)]) == 0
    assert "adapters: 0 (base), 1 tiny, 2 rand" in capsys.readouterr().out

    import soundfile as sf
    g = golden("tiny_lora")
    sf.write(tmp_path / "in.wav", g["preprocessed_audio"][0, 0], 44100, subtype="FLOAT")
    codes = {}
    for choice in ("rand", "2", "0"):
        npz = tmp_path / f"{choice}.npz"
        assert main(["vamp", str(tmp_path / "in.wav"), "-o", str(tmp_path / f"{choice}.wav"), "-m", str(path),
                     "--seed", "9", "--sampling-steps", "2", "--adapter", choice, "--save-codes", str(npz)]) == 0
        codes[choice] = np.load(npz)["codes_out"]
    np.testing.assert_array_equal(codes["rand"], codes["2"])
    assert (codes["rand"] != codes["0"]).any()
    capsys.readouterr()
    for choice in ("nope", "3"):
        rc = main(["vamp", str(tmp_path / "in.wav"), "-o", str(tmp_path / "x.wav"), "-m", str(path),
                   "--adapter", choice])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 1 and len(err) == 1 and f"no adapter '{choice}'" in err[0] and "tiny, rand" in err[0], err


def bad_case(case: str, files: dict[str, Path], tmp_path: Path) -> tuple[list[str], str]:
    base = ["--checkpoints", str(files["base"])]
    tiny = ["--coarse-lora", f"tiny={files['tiny_coarse']}"]
    if case == "duplicate":
        return base + tiny + ["--coarse-lora", f"tiny={files['rand_coarse']}"], "adapter 'tiny' is given twice"
    if case == "misshaped":
        factors = torch.load(files["tiny_c2f"], weights_only=True)
        key = next(k for k in factors if k.endswith("lora_B"))
        factors[key] = torch.zeros(3, 5)
        torch.save(factors, tmp_path / "bad.pth")
        return base + tiny + ["--c2f-lora", f"tiny={tmp_path / 'bad.pth'}"], f"'{key}' has shape (3, 5)"
    if case == "not_only_factors":
        factors = torch.load(files["tiny_coarse"], weights_only=True)
        key = "transformer.norm.weight"
        factors[key] = torch.ones(64)
        torch.save(factors, tmp_path / "full.pth")
        return base + ["--coarse-lora", f"tiny={tmp_path / 'full.pth'}"], f"'{key}' is not a LoRA factor"
    if case == "fine_tuned_base":
        return (["--checkpoints", str(CHECKPOINTS / "tiny-lora")] + tiny,
                "carries a fine-tune of its own")
    if case == "folded_and_named":
        return base + tiny + ["--c2f-lora", str(files["tiny_c2f"])], "not both"
    if case == "bad_name":
        return base + ["--coarse-lora", f"no/slash={files['tiny_coarse']}"], "adapter name 'no/slash'"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["duplicate", "misshaped", "not_only_factors",
                                  "fine_tuned_base", "folded_and_named", "bad_name"])
def test_bad_adapters_give_one_line_and_leave_nothing(files, tmp_path, capsys, case):
    args, expect = bad_case(case, files, tmp_path)
    out = tmp_path / "out" / "vampnet.onnx"
    out.parent.mkdir()
    rc = main(["build", *args, "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(err) == 1 and err[0].startswith("vampnet-onnx: error: ") and expect in err[0], err
    assert list(out.parent.iterdir()) == []


def test_int8_adapters_run_beside_the_quantized_weights(models, files, tmp_path):
    """int8 quantizes the base weights (every MatMul weight, as without adapters) and keeps the
    adapters' factors float32, added as a low-rank path: so adapter k is the int8 base plus
    k's delta, close to (not equal to) the float32 adapter's output."""
    out = tmp_path / "int8" / "vampnet.onnx"
    assert main(["build", "--checkpoints", str(files["base"]), *adapter_flags(files), "--weights", "int8",
                 "-o", str(out)]) == 0
    model = onnx.load(str(out))
    dequantize = [n for g in _graphs(model.graph) for n in g.node if n.op_type == "DequantizeLinear"]
    assert len(dequantize) == 26  # 12 MatMuls + the classifier per transformer, as without adapters
    stacks = [t for g in _graphs(model.graph) for t in g.initializer if t.name.endswith(("lora_At", "lora_Bt"))]
    # A and B of 5 layers per block, 2 blocks per transformer, 2 transformers
    assert len(stacks) == 40 and all(t.data_type == onnx.TensorProto.FLOAT for t in stacks)

    g = golden("tiny_lora")
    inputs = {**fixture_inputs(g), "sampling_steps": 1, "c2f_sampling_steps": 1}
    for k in range(3):
        want, got = run(models["adapters"], k, **inputs), run(out, k, **inputs)
        generated = want["mask_out"][:, :4] == 1
        same = got["coarse_codes"][:, :4] == want["coarse_codes"][:, :4]
        assert same[generated].mean() >= 0.9, (k, same[generated].mean())
    assert (run(out, 1, **inputs)["coarse_codes"] != run(out, 0, **inputs)["coarse_codes"]).any()


def _graphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                yield from _graphs(sub)


# ------------------------------------------------------------------ the runtimes (test_runtimes.py)

RUNTIMES = ["onnxruntime-oldest", "node", "web", "openvino", "reference"]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_runtimes_select_the_same_adapter(models, tmp_path, runtime):
    """Every runtime of the matrix gives onnxruntime's codes for each adapter, out-of-range too."""
    import test_runtimes as rt

    audio = golden("tiny_lora")["preprocessed_audio"][:, 0, :44100]
    cases = {f"adapter_{k}": interface_feeds(audio, seed=7, temperature=0.6, sampling_steps=4, adapter=k)
             for k in (0, 1, 2, 9)}
    path = models["adapters"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = {case: dict(zip(OUTPUTS, session.run(OUTPUTS, feeds))) for case, feeds in cases.items()}
    if runtime == "onnxruntime-oldest":
        bundle = tmp_path / "cases.npz"
        np.savez(bundle, **{f"{case}/{k}": v for case, feeds in cases.items() for k, v in feeds.items()})
        rt.run([str(rt.oldest_onnxruntime()), "-c", rt.OLD_RUNNER, str(path), str(bundle), rt.OLDEST_ORT], timeout=600)
        with np.load(str(bundle) + ".out.npz") as z:
            got = {case: {name: z[f"{case}/{name}"] for name in OUTPUTS} for case in cases}
    elif runtime in ("node", "web"):
        got = {case: rt.run_js(runtime, path, feeds, tmp_path / case) for case, feeds in cases.items()}
    elif runtime == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        got = {case: {k.get_any_name(): v for k, v in compiled(feeds).items()} for case, feeds in cases.items()}
    else:
        from onnx.reference import ReferenceEvaluator

        evaluator = ReferenceEvaluator(onnx.load(str(path)))
        got = {case: dict(zip(OUTPUTS, evaluator.run(OUTPUTS, feeds))) for case, feeds in cases.items()}
    for case in cases:
        if runtime == "openvino" and not np.array_equal(got[case]["codes"], expected[case]["codes"]):
            assert_same_adapter_despite_encoder_ties(got[case], expected, case)
        else:
            rt.assert_same_outputs(got[case], expected[case], f"{runtime}, {case}")
    np.testing.assert_array_equal(got["adapter_9"]["codes_out"], got["adapter_2"]["codes_out"])
    assert (got["adapter_1"]["codes_out"] != got["adapter_0"]["codes_out"]).any(), runtime


def assert_same_adapter_despite_encoder_ties(got: dict, expected: dict, case: str) -> None:
    """OpenVINO's convolutions round differently from onnxruntime's on a CPU without AVX-512, which
    can flip a near-tie among the encoder's tokens (on a 2-core AMD EPYC with AVX2 only: 2 of this
    clip's 812 input tokens, every generated token still the same; none on an AVX-512 EPYC). The
    adapter's work, the generation, must still be onnxruntime's run of the same adapter: nearly
    every generated token equal, and closer to it than to any other adapter's run."""
    want = expected[case]
    np.testing.assert_array_equal(got["mask_out"], want["mask_out"], err_msg=case)
    assert (got["codes"] == want["codes"]).mean() >= 0.99, case
    generated = want["mask_out"] == 1

    def agreement(other: str) -> float:
        return float((got["codes_out"] == expected[other]["codes_out"])[generated].mean())

    own = agreement(case)
    others = [agreement(o) for o in expected if not np.array_equal(expected[o]["codes_out"], want["codes_out"])]
    assert own >= 0.95 and all(own > a + 0.1 for a in others), (case, own, others)
