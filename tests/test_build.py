"""`vampnet-onnx build` end to end, as a user with fine-tuned LoRA files runs it.

The tiny-lora fixture is split the way a LoRA fine-tune leaves it: a base checkpoint (lora_B = 0,
as constructed before fine-tuning) plus LoRA-only state dicts. Built through the CLI, the model
must reproduce upstream's tiny_lora fixture token for token. Bad checkpoints give a one-line error
and leave nothing behind.
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
from vampnet_onnx.session import interface_feeds
from tolerances import assert_audio_close
from vampnet_onnx.cli import main


def split_lora(folder: Path) -> dict[str, Path]:
    """tiny-lora as base checkpoints in `folder` plus LoRA-only files; returns the LoRA files."""
    shutil.copy(CHECKPOINTS / "tiny-lora" / "codec.pth", folder / "codec.pth")
    overlays = {}
    for kind in ("coarse", "c2f"):
        checkpoint = torch.load(CHECKPOINTS / "tiny-lora" / f"{kind}.pth", map_location="cpu", weights_only=True)
        state = checkpoint["state_dict"]
        lora = {k: v for k, v in state.items() if k.endswith(("lora_A", "lora_B"))}
        assert lora, kind
        for k in lora:
            if k.endswith("lora_B"):
                state[k] = torch.zeros_like(state[k])
        torch.save(checkpoint, folder / f"{kind}.pth")
        overlays[kind] = folder / f"{kind}-lora.pth"
        torch.save(lora, overlays[kind])
    return overlays


def test_build_with_lora_overlays_reproduces_upstream(tmp_path, capsys):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    overlays = split_lora(checkpoints)
    out = tmp_path / "models" / "vampnet.onnx"
    rc = main(["build", "--checkpoints", str(checkpoints), "--coarse-lora", str(overlays["coarse"]),
               "--c2f-lora", str(overlays["c2f"]), "-o", str(out)])
    stdout = capsys.readouterr().out
    assert rc == 0
    for step in ("loading checkpoints", "exporting components", "checking", "test run", "wrote"):
        assert step in stdout, step
    assert str(out) in stdout and " MB)" in stdout
    assert sorted(p.name for p in out.parent.iterdir()) == ["test_data_set_0", "vampnet.onnx"]  # no staging left over

    onnx.checker.check_model(str(out), full_check=True)
    metadata = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    for name in ("codec", "coarse", "c2f", "coarse_lora", "c2f_lora"):
        assert len(metadata[f"sha256_{name}"]) == 64, name

    g = golden("tiny_lora")
    options = ort.SessionOptions()
    session = ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    feeds = interface_feeds(prepared_audio(g), **fixture_inputs(g))
    got = dict(zip(OUTPUTS, session.run(OUTPUTS, feeds)))
    np.testing.assert_array_equal(got["coarse_codes"], g["coarse_out"])
    np.testing.assert_array_equal(got["codes_out"], g["fine_out"])
    want = app_output(g["audio_out"][:, 0, : feeds["audio"].shape[1]], feeds["audio"])  # as upstream's app
    assert_audio_close(got["audio_out"], want, "tiny_lora via build")
    assert_conformance_data_round_trips(out)


def assert_conformance_data_round_trips(model: Path) -> None:
    """The model-zoo style set `build` writes beside the model (test_data_set_0/input_<i>.pb,
    output_<i>.pb, ONNX TensorProto files) holds every input and output, and both onnxruntime and
    the ONNX reference evaluator reproduce its outputs from its inputs."""
    from onnx.reference import ReferenceEvaluator

    def tensors(kind: str) -> dict[str, np.ndarray]:
        files = sorted((model.parent / "test_data_set_0").glob(f"{kind}_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
        loaded = [onnx.load_tensor(str(f)) for f in files]
        return {t.name: onnx.numpy_helper.to_array(t) for t in loaded}

    inputs, outputs = tensors("input"), tensors("output")
    proto = onnx.load(str(model))
    assert list(inputs) == [v.name for v in proto.graph.input]
    assert list(outputs) == [v.name for v in proto.graph.output]
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    for runtime, got in [("onnxruntime", session.run(list(outputs), inputs)),
                         ("reference evaluator", ReferenceEvaluator(proto).run(list(outputs), inputs))]:
        for (name, want), value in zip(outputs.items(), got):
            if name == "audio_out":
                assert_audio_close(np.asarray(value), want, f"{runtime}: test_data_set_0")
            else:
                np.testing.assert_array_equal(value, want, err_msg=f"{runtime}: {name}")


@pytest.mark.parametrize("case", ["coarse_as_c2f", "missing", "not_a_lora_file", "misshaped_lora"])
def test_bad_checkpoints_give_one_line_and_leave_nothing(tmp_path, capsys, case):
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(CHECKPOINTS / "tiny", checkpoints)
    args = ["build", "--checkpoints", str(checkpoints)]
    if case == "coarse_as_c2f":
        shutil.copy(checkpoints / "coarse.pth", checkpoints / "c2f.pth")
        expect = "c2f"
    elif case == "missing":
        (checkpoints / "codec.pth").unlink()
        expect = "codec.pth"
    elif case == "not_a_lora_file":
        args += ["--coarse-lora", str(checkpoints / "codec.pth")]
        expect = "is it a LoRA file?"
    else:
        overlays = split_lora(tmp_path)
        lora = torch.load(overlays["c2f"], weights_only=True)
        key = next(k for k in lora if k.endswith("lora_A"))
        lora[key] = torch.zeros(3, 5)
        torch.save(lora, overlays["c2f"])
        args += ["--c2f-lora", str(overlays["c2f"])]
        expect = f"'{key}' has shape (3, 5)"
    out = tmp_path / "out" / "vampnet.onnx"
    out.parent.mkdir()
    rc = main(args + ["-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(err) == 1 and err[0].startswith("vampnet-onnx: error: ") and expect in err[0], err
    assert list(out.parent.iterdir()) == []
