"""The browser's variant (`build --weights web`), rewritten once at build time by onnxruntime's
basic graph optimizations, so that onnxruntime-web does not redo them at every load.

    preoptimize(model_path)   # in place: model_path and its .data file beside it

At real size these rewrites of the graph (constant folding, removing redundant nodes, Constant
nodes to initializers: 18,915 nodes become 12,162) took two fifths to a half of onnxruntime-web's
session creation (docs/browser.md, "Loading faster"). The basic level gives standard ONNX ops
only and depends on no CPU feature (onnxruntime applies it before it assigns nodes to a
provider); the provider-specific fusions (level "extended" and above: `com.microsoft` ops) are
left to onnxruntime-web at load, as before. The rewritten model gives the same outputs
(tests/test_int8.py; in the browser, tests/test_web.py).

Constant folding turns what the graph computes from weights alone into weights; left to it, the
codec decoder's float16 weights would become the float32 copies its Loop body casts them to (60 MB
more to download at real size, and 0.3 GB more memory while loading in the browser: the float32
copies in the `.onnx` file, then in onnxruntime-web's protobuf and tensors). So the float16 weights
are listed as graph inputs while onnxruntime rewrites the graph (an initializer that is also an
input can be overridden, so it is not folded) and stay float16; the Cast is left to the load. What
is folded inside a Loop body stays in the `.onnx` file (onnxruntime-web reads no external data of
a body's initializer, docs/browser.md); the main graph's weights go to the `.data` file.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import onnx

from vampnet_onnx.builder.files import externalize_weights, save_model
from vampnet_onnx.paths import data_file


def preoptimize(model_path: Path) -> None:
    """Replace model_path (and `<model_path>.data`) by onnxruntime's basic-level rewrite of it."""
    import onnxruntime as ort

    model_path = Path(model_path)
    original = onnx.load(str(model_path), load_external_data=False)
    held = onnx.ModelProto()
    held.CopyFrom(original)
    kept = [t for t in held.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    held.graph.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in kept)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3  # not a warning per float16 weight listed as an input
    # the weights in the .data file beside model_path
    options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(model_path.parent))
    with tempfile.TemporaryDirectory(dir=model_path.parent) as tmp:
        # onnxruntime writes what it made into the protobuf (the browser's variant is far below
        # 2 GB) and leaves references to model_path's .data file for the weights it did not touch
        options.optimized_model_filepath = str(Path(tmp) / model_path.name)
        ort.InferenceSession(held.SerializeToString(), options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(options.optimized_model_filepath, load_external_data=False)
    onnx.load_external_data_for_model(optimized, str(model_path.parent))
    names = {t.name for t in kept}
    inputs = [i for i in optimized.graph.input if i.name not in names]
    del optimized.graph.input[:]
    optimized.graph.input.extend(inputs)
    if [i.name for i in inputs] != [i.name for i in original.graph.input]:
        raise RuntimeError("onnxruntime's basic optimizations changed the model's inputs")
    # onnxruntime lists every domain it knows; the model uses the standard one only, as before
    foreign = {n.domain for n in _nodes(optimized.graph)} - {"", "ai.onnx"}
    if foreign:
        raise RuntimeError(f"onnxruntime's basic optimizations wrote ops of {sorted(foreign)}; expected standard ops")
    del optimized.opset_import[:]
    optimized.opset_import.extend(original.opset_import)
    data = data_file(model_path)
    data.unlink(missing_ok=True)
    components = {"model": optimized}
    externalize_weights(components, data)  # the main graph's initializers only
    written = save_model(components["model"], model_path)
    assert written == [model_path], written


def _nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for body in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs:
                yield from _nodes(body)
