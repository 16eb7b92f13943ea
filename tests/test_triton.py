"""``vampnet-onnx triton``: the model repository's config.pbtxt, parsed here and compared with the
model's signature as onnxruntime reports it; the README's tritonclient snippet, run against a fake
client that feeds the model through onnxruntime. (No Triton server can run here.)"""

from __future__ import annotations

import os
import re
import sys
import types
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from vampnet_onnx.cli import main

# onnxruntime's type strings -> Triton's (independent of vampnet_onnx.triton's table)
EXPECTED_TYPES = {"tensor(float)": "TYPE_FP32", "tensor(int64)": "TYPE_INT64",
                  "tensor(int32)": "TYPE_INT32", "tensor(bool)": "TYPE_BOOL",
                  "tensor(double)": "TYPE_FP64", "tensor(float16)": "TYPE_FP16"}


@pytest.fixture(scope="module")
def model(request) -> Path:
    override = os.environ.get("VAMPNET_ONNX_TEST_MODEL")
    return Path(override) if override else Path(request.getfixturevalue("tiny").path)


@pytest.fixture(scope="module")
def repo(model, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("triton")
    assert main(["triton", str(model), str(folder)]) == 0
    return folder


# --------------------------------------------------------------------------------------------
# a small parser for protobuf text format (enough for model configs)


def parse_pbtxt(text: str) -> dict:
    """{field: [values]} for every field; a message is a dict, a [ ... ] list is spread out."""
    text = re.sub(r"#[^\n]*", "", text)
    tokens = re.findall(r'"[^"]*"|[{}\[\]:,]|[^\s{}\[\]:,"]+', text)

    def value(i: int):
        t = tokens[i]
        if t == "{":
            return message(i + 1, "}")
        if t == "[":
            items, i = [], i + 1
            while tokens[i] != "]":
                v, i = value(i)
                items.append(v)
                if tokens[i] == ",":
                    i += 1
            return items, i + 1
        if t.startswith('"'):
            return t[1:-1], i + 1
        if t in ("true", "false"):
            return t == "true", i + 1
        if re.fullmatch(r"-?\d+", t):
            return int(t), i + 1
        return t, i + 1  # an enum name

    def message(i: int, end: str | None):
        fields: dict = {}
        while i < len(tokens) and tokens[i] != end:
            name, i = tokens[i], i + 1
            if tokens[i] == ":":
                i += 1
            v, i = value(i)
            fields.setdefault(name, []).extend(v if isinstance(v, list) else [v])
            if i < len(tokens) and tokens[i] == ",":
                i += 1
        return fields, i + 1

    return message(0, None)[0]


def test_parser_reads_text_format():
    cfg = parse_pbtxt('name: "m"  # comment\nmax_batch_size: 0\ninput [ { name: "a" dims: [ -1, 3 ] '
                      "optional: true }, { name: \"b\" dims: [ ] } ]\nflag: false")
    assert cfg["name"] == ["m"] and cfg["max_batch_size"] == [0] and cfg["flag"] == [False]
    assert cfg["input"] == [{"name": ["a"], "dims": [-1, 3], "optional": [True]},
                            {"name": ["b"], "dims": []}]


# --------------------------------------------------------------------------------------------


def signature(model: Path):
    """(inputs, outputs) as {name: (ort type, shape, overridable)} in the session's order."""
    s = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    inputs = {i.name: (i.type, i.shape) for i in s.get_inputs()}
    outputs = {o.name: (o.type, o.shape) for o in s.get_outputs()}
    return inputs, outputs


def expected_dims(shape) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in shape] or [1]  # a scalar is sent as [1]


def test_config_lists_exactly_the_models_inputs_and_outputs(model, repo):
    cfg = parse_pbtxt((repo / "vampnet" / "config.pbtxt").read_text())
    assert cfg["name"] == ["vampnet"]
    assert cfg["backend"] == ["onnxruntime"]
    assert cfg["max_batch_size"] == [0]  # rows are variations: no batching by Triton
    assert "dynamic_batching" not in cfg and "sequence_batching" not in cfg
    inputs, outputs = signature(model)
    for key, tensors in (("input", inputs), ("output", outputs)):
        entries = cfg[key]
        assert [e["name"][0] for e in entries] == list(tensors)
        for e in entries:
            ort_type, shape = tensors[e["name"][0]]
            assert e["data_type"] == [EXPECTED_TYPES[ort_type]]
            assert e["dims"] == expected_dims(shape)
            assert "optional" not in e  # the model stores no defaults: every input is sent


def test_model_is_copied_byte_for_byte(model, repo):
    assert (repo / "vampnet" / "1" / "model.onnx").read_bytes() == model.read_bytes()


def test_readme_says_untested_and_its_client_snippet_runs(model, repo, monkeypatch):
    text = (repo / "vampnet" / "README.md").read_text()
    assert "Untested against a live Triton Inference Server" in text
    assert f"tritonserver --model-repository={repo}" in text
    snippet = re.search(r"```python\n(.*?)```", text, re.S).group(1)

    cfg = parse_pbtxt((repo / "vampnet" / "config.pbtxt").read_text())
    config_inputs = {e["name"][0]: e for e in cfg["input"]}
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    sent: dict[str, np.ndarray] = {}

    class InferInput:
        def __init__(self, name, shape, datatype):
            entry = config_inputs[name]  # KeyError: not an input of the config
            assert "TYPE_" + datatype == entry["data_type"][0]
            assert len(shape) == len(entry["dims"])
            self.name = name

        def set_data_from_numpy(self, array):
            sent[self.name] = array

    class Result:
        def __init__(self, arrays):
            self.arrays = arrays

        def as_numpy(self, name):
            return self.arrays[name]

    class Client:
        def __init__(self, url):
            pass

        def infer(self, model_name, inputs, outputs):
            assert model_name == "vampnet"
            assert set(config_inputs) == set(sent)
            feeds = dict(sent)
            names = [o.name for o in outputs]
            return Result(dict(zip(names, session.run(names, feeds))))

    http = types.ModuleType("tritonclient.http")
    http.InferenceServerClient, http.InferInput, http.InferRequestedOutput = Client, InferInput, \
        lambda name: types.SimpleNamespace(name=name)
    utils = types.ModuleType("tritonclient.utils")
    utils.np_to_triton_dtype = lambda dt: {np.float32: "FP32", np.int64: "INT64"}[np.dtype(dt).type]
    package = types.ModuleType("tritonclient")
    package.http, package.utils = http, utils
    for name, module in (("tritonclient", package), ("tritonclient.http", http),
                         ("tritonclient.utils", utils)):
        monkeypatch.setitem(sys.modules, name, module)

    scope: dict = {}
    exec(compile(snippet, "README snippet", "exec"), scope)
    assert scope["audio_out"].shape == scope["audio"].shape


def test_external_data_is_copied_beside_the_model(model, tmp_path):
    onnx = pytest.importorskip("onnx")
    src = tmp_path / "m" / "vampnet.onnx"
    src.parent.mkdir()
    onnx.save_model(onnx.load(str(model)), str(src), save_as_external_data=True,
                    all_tensors_to_one_file=True, location=src.name + ".data", size_threshold=1024)
    assert main(["triton", str(src), str(tmp_path / "repo"), "--name", "v"]) == 0
    version = tmp_path / "repo" / "v" / "1"
    assert (version / "vampnet.onnx.data").read_bytes() == (src.parent / "vampnet.onnx.data").read_bytes()
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == list(signature(model)[1])


def test_existing_model_folder_is_kept_unless_overwrite(model, repo, capsys):
    config = repo / "vampnet" / "config.pbtxt"
    before = config.read_text()
    config.write_text("edited")
    assert main(["triton", str(model), str(repo)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert config.read_text() == "edited"
    assert main(["triton", str(model), str(repo), "--overwrite"]) == 0
    assert config.read_text() == before
