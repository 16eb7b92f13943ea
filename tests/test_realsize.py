"""The real-size check (benchmarks/realsize.py) and the build's external-data route (builder/build.py).

* `test_realsize_*` (marked slow): random weights with the released shapes are written, built into
  the single model with external data and run once, by `python -m benchmarks.realsize` in a fresh
  process (minutes and several GB of RAM; the numbers are in the script's report). Run them with
  `pytest -m slow tests/test_realsize.py`.
* The rest is quick: the released parameter counts from the shape tables, the script's pieces on
  tiny checkpoints and on the session's tiny build, and `externalize_weights` (the memory-saving
  route build_model takes above 2 GB) giving the very same model as the in-memory route.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import OUTPUTS
from vampnet_onnx.interface import INPUT_NAMES
from vampnet_onnx.session import interface_feeds

REPO = Path(__file__).resolve().parents[1]

INPUTS = list(INPUT_NAMES)
RELEASED = {"coarse": 335_893_664, "c2f": 277_753_072}


def test_released_parameter_counts_from_the_shape_tables():
    from vampnet_onnx.builder.synthetic import RELEASED_C2F, RELEASED_COARSE, RELEASED_CODEC_STANDIN, parameter_count

    assert parameter_count("coarse", RELEASED_COARSE) == RELEASED["coarse"]
    assert parameter_count("c2f", RELEASED_C2F) == RELEASED["c2f"]
    assert 170e6 < parameter_count("codec", RELEASED_CODEC_STANDIN) * 4 < 190e6  # the ~181 MB stand-in


def test_count_parameters_reads_upstream_counts(tmp_path):
    from benchmarks.realsize import count_parameters, shapes, write_checkpoints
    from vampnet_onnx.builder.synthetic import parameter_count

    paths = write_checkpoints(tmp_path, tiny=True)
    for name, kwargs in shapes(tiny=True).items():
        count, tensors = count_parameters(paths[name])
        assert count == parameter_count(name, kwargs)
        assert tensors > 10


PHASES_CHECK = """
import numpy as np
from benchmarks.realsize import Phases

phases = Phases(log=lambda *_: None)
phases.start("allocate")
block = np.ones(64 << 20, np.uint8)  # 64 MB, touched
phases.start("idle")
del block
phases.stop()
allocate, idle = phases.records
assert allocate["phase"] == "allocate" and allocate["seconds"] >= 0
assert phases.process_peak >= allocate["peak_rss"] > 0
if phases.per_phase_peaks:  # Linux: the peak is reset between phases
    assert allocate["peak_rss"] - idle["rss_after"] > 32 << 20, (allocate, idle)
assert "| allocate |" in phases.table()
"""


def test_phases_record_time_and_peak():
    # in a fresh process: a test worker that ran other tests may keep freed memory resident (the
    # allocator's thresholds move with what ran before), and then no drop after `del` shows
    proc = subprocess.run([sys.executable, "-c", PHASES_CHECK], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_interface_and_short_run_on_the_tiny_build(tiny):
    from benchmarks.realsize import model_interface, short_run

    interface = model_interface(tiny.path)
    assert interface["inputs"] == INPUTS
    assert interface["outputs"] == OUTPUTS
    run = short_run(tiny.path, seconds=0.5)
    assert run["output_shape"] == run["input_shape"] == [1, 22050]
    assert run["finite"] and run["codes_in_range"]
    assert run["codes_shape"] == [1, 14, math.ceil(22050 / 768)]


def test_externalized_build_equals_the_in_memory_build(tiny, tmp_path):
    """build_model's > 2 GB route (weights written straight from the components, then assembled
    with references only) gives the same model as assembling in memory and saving."""
    import onnxruntime as ort

    from vampnet_onnx.builder.assemble import assemble
    from vampnet_onnx.builder.files import externalize_weights, save_model

    # private copies: externalize_weights strips the weights out of the protos it is given
    components = {k: onnx.ModelProto.FromString(v.SerializeToString()) for k, v in tiny.components.items()}
    path = tmp_path / "vampnet.onnx"
    data = tmp_path / "vampnet.onnx.data"
    size = externalize_weights(components, data, align_threshold=1 << 12)
    assert size == data.stat().st_size > 1 << 20
    assert all(sum(len(t.raw_data) for t in c.graph.initializer) < 1 << 16 for c in components.values())
    model = assemble(tiny.codec, tiny.coarse, tiny.c2f, components=components)
    assert save_model(model, path) == [path]  # the weights are already outside
    del model
    onnx.checker.check_model(str(path), full_check=True)

    stored = onnx.load(str(path), load_external_data=False)
    external = [t for t in stored.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external and {e.value for t in external for e in t.external_data if e.key == "location"} == {data.name}
    for t in external:
        info = {e.key: int(e.value) for e in t.external_data if e.key in ("offset", "length")}
        if info["length"] >= 1 << 12:
            assert info["offset"] % 4096 == 0

    ours = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reference = ort.InferenceSession(str(tiny.path), providers=["CPUExecutionProvider"])
    audio = np.random.default_rng(3).uniform(-0.3, 0.3, (1, 9000)).astype(np.float32)
    feeds = interface_feeds(audio, seed=11, sampling_steps=3)
    for a, b in zip(ours.run(OUTPUTS, feeds), reference.run(OUTPUTS, feeds)):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------------------------
# Real size (slow): one run of the script, shared by the tests below.


@pytest.fixture(scope="module")
def realsize(tmp_path_factory):
    out = tmp_path_factory.mktemp("realsize")
    report = out / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.realsize", "--out", str(out), "--json", str(report)],
        cwd=REPO, capture_output=True, text=True, timeout=3600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    print(proc.stdout[proc.stdout.find("## Real-size"):])
    return out, json.loads(report.read_text())


@pytest.mark.slow
def test_realsize_parameter_counts(realsize):
    from vampnet_onnx.builder.synthetic import RELEASED_CODEC_STANDIN, parameter_count

    _, report = realsize
    assert report["parameters"] == {**RELEASED, "codec": parameter_count("codec", RELEASED_CODEC_STANDIN)}
    assert report["parameters_in_model_metadata"] == report["parameters"]


@pytest.mark.slow
def test_realsize_external_data_and_interface(realsize):
    out, report = realsize
    model, data = out / "vampnet.onnx", out / "vampnet.onnx.data"
    assert model.exists() and data.exists()
    assert model.stat().st_size < 64 << 20  # the graph only
    assert data.stat().st_size > 2_000_000_000  # ≈ 2.6 GB of float32 weights
    stored = onnx.load(str(model), load_external_data=False)
    assert [v.name for v in stored.graph.input] == INPUTS
    assert [v.name for v in stored.graph.output] == OUTPUTS
    external = [t for t in stored.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert sum(math.prod(t.dims) for t in external) * 4 > 2_000_000_000
    assert report["interface"]["external_locations"] == ["vampnet.onnx.data"]


@pytest.mark.slow
def test_realsize_short_run(realsize):
    _, report = realsize
    run = report["short_run"]
    assert run["output_shape"] == run["input_shape"]
    assert run["finite"] and run["codes_in_range"]
    assert run["codes_shape"] == [1, 14, run["expected_frames"]]
    assert 0 < run["output_rms"] and run["output_peak"] <= 1.0
    assert run["codes_changed_fraction"] > 0.5  # default mask: most tokens are generated anew
