"""int8 quantization (`vampnet-onnx build --weights int8`, `--weights int8-dynamic` and `--weights web`).

    quantize_components(components, weights) # in place: all of the below that --weights does
    quantize_component(model, dynamic)     # in place: the transformers' MatMuls and classifier read int8 weights
    halve_convs(model)             # in place: the codec decoder's convolutions read float16 weights
    move_into_bodies(model, names) # in place: those initializers into the one Loop body that reads them

Transformers. Every MatMul whose second input is a float32 weight W (K, N) reads it through opset
21's blocked DequantizeLinear instead: q int8 (K, N) and a float32 scale per block of b
consecutive rows of K and per column (symmetric, |q| <= 127, b = 128 or the largest power of two
>= 16 dividing K). The classifier, a kernel-1 Conv (V·C_p, E, 1), becomes such a MatMul first
(the largest table left otherwise: a quarter of the int8 file). onnxruntime (>= 1.20) fuses DequantizeLinear ->
MatMul into its MatMulNBits (8 bits) at load, so these weights stay int8 in memory. It fuses only
when q and scale are initializers of the graph that holds the MatMul: onnxruntime 1.32 refuses the
session ("Missing required weight") when they come from the outer scope, which is where the
assembler puts weights. Each transformer is called from one Loop body, so its quantized weights
move into that body (`move_into_bodies`), stored once as before.

int8-dynamic: the same MatMuls multiply int8 by int8. The weight is int8 with one scale per
column (symmetric, 7 bits: |q| <= 63, see DYNAMIC_LIMIT); the activation x is quantized as the
graph runs, to uint8 with one scale and zero point for the whole tensor (DynamicQuantizeLinear),
and y = (MatMulInteger(xq, q) · x_scale) · scale: standard ops of opset 20 (onnxruntime >= 1.17
fuses them into its DynamicQuantizeMatMul, VNNI's uint8 × int8 dot products where the CPU has them). One scale for a whole activation is
coarser than MatMulNBits' float activations: token agreement with float32 is measured in
tests/test_int8.py and docs/performance.md. Its weights move into the Loop bodies too.

web: int8-dynamic's weights, left in the main graph (the assembler does not move them into the
Loop bodies), so that they sit in the .data file where onnxruntime-web finds them: its wasm build
reads the external data of main-graph initializers only ("external data path could not be
canonicalized" for a body's). MatMulInteger keeps the weights int8 in the browser's memory, where
the DequantizeLinear form of "int8" costs about twice as much; docs/browser.md measures both.

Codec decoder. Its Conv / ConvTranspose weights are stored as float16 and cast back to float32
as the graph runs (milliseconds per decode window); that brings the file under 30 % of float32's. float16, not
int8: a decoder's error lands in the audio directly, and on the tiny test decoder int8 weights
leave 18 dB of signal to error where float16 leaves 36 dB. The encoder stays float32, so the
input's tokens are exactly the float32 model's.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from vampnet_onnx.graphs.opsets import INT8_OPSET_VERSION
from vampnet_onnx.graphs.portable import subgraphs

OPSET = INT8_OPSET_VERSION  # blocked DequantizeLinear
MAX_BLOCK, MIN_BLOCK = 128, 16  # MatMulNBits takes powers of two >= 16
CLASSIFIER = "classifier_weight"  # builder/transformer.py: the kernel-1 Conv to logits
TRANSFORMERS = ("coarse_transformer", "c2f_transformer")
DECODER = "codec_decoder"


DYNAMIC = "int8-dynamic"  # the --weights choice whose activations are int8 too
WEB = "web"  # int8-dynamic with its weights in the main graph (the browser's variant)
# int8-dynamic's weights use 7 bits: without VNNI, onnxruntime's uint8 × int8 kernel (AVX2's
# vpmaddubsw) adds pairs of products in int16, which saturates for |q| > 64 (2 · 255 · 127 > 32767)
# and wrecked the logits there (docs/performance.md); 2 · 255 · 63 fits, so every CPU computes
# the exact integer products, at the cost of one bit of the weights
DYNAMIC_LIMIT = 63


def quantize_components(components: dict[str, onnx.ModelProto], weights: str = "int8") -> list[str]:
    """In place, idempotent: the transformers and the codec decoder, for `weights` "int8",
    "int8-dynamic" or "web". Returns the main-graph names (`component/initializer`) of the transformers'
    int8 weights and their scales, which the assembler moves into the Loop bodies."""
    halve_convs(components[DECODER])
    dynamic = weights in (DYNAMIC, WEB)
    return [f"{name}/{q}" for name in TRANSFORMERS for q in quantize_component(components[name], dynamic)]


def block_size(k: int) -> int | None:
    b = MAX_BLOCK
    while b >= MIN_BLOCK:
        if k % b == 0:
            return b
        b //= 2
    return None


def quantize_weight(w: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """W (K, N) -> q int8 (K, N), scale (K / block, N) with W ≈ q · scale, |q| <= 127."""
    k, n = w.shape
    blocks = w.reshape(k // block, block, n)
    scale = np.abs(blocks).max(axis=1) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)  # an all-zero block: any scale
    q = np.clip(np.rint(blocks / scale[:, None, :]), -127, 127).astype(np.int8)
    return q.reshape(k, n), scale


def _dequantize(name: str, w: np.ndarray, node_name: str, new: list) -> onnx.NodeProto:
    """Appends q and scale initializers to `new`; returns the node that makes `name` from them."""
    block = block_size(w.shape[0])
    q, scale = quantize_weight(w, block)
    new += [numpy_helper.from_array(q, f"{name}_int8"), numpy_helper.from_array(scale, f"{name}_scale")]
    return helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_scale"], [name],
                            name=f"{node_name}_dequantize", axis=0, block_size=block)


def quantize_columns(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """W (K, N) -> q int8 (K, N), scale (N,) with W ≈ q · scale, |q| <= DYNAMIC_LIMIT."""
    scale = np.abs(w).max(axis=0) / DYNAMIC_LIMIT
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    return np.clip(np.rint(w / scale), -DYNAMIC_LIMIT, DYNAMIC_LIMIT).astype(np.int8), scale


def _integer_matmul(x: str, name: str, w: np.ndarray, out: str, node_name: str, new: list) -> list[onnx.NodeProto]:
    """out = x @ W in int8 × int8: x quantized at run time, W per column (appended to `new`)."""
    q, scale = quantize_columns(w)
    new += [numpy_helper.from_array(q, f"{name}_int8"), numpy_helper.from_array(scale, f"{name}_scale"),
            numpy_helper.from_array(np.zeros(q.shape[1], np.int8), f"{name}_zero")]
    return [helper.make_node("DynamicQuantizeLinear", [x], [f"{out}_xq", f"{out}_xs", f"{out}_xz"],
                             name=f"{node_name}_quantize"),
            helper.make_node("MatMulInteger", [f"{out}_xq", f"{name}_int8", f"{out}_xz", f"{name}_zero"],
                             [f"{out}_int32"], name=node_name),
            helper.make_node("Cast", [f"{out}_int32"], [f"{out}_sum"], name=f"{node_name}_float",
                             to=onnx.TensorProto.FLOAT),
            helper.make_node("Mul", [f"{out}_xs", f"{name}_scale"], [f"{out}_scales"], name=f"{node_name}_scales"),
            helper.make_node("Mul", [f"{out}_sum", f"{out}_scales"], [out], name=f"{node_name}_scale")]


def _int8_matmul(x: str, name: str, w: np.ndarray, out: str, node_name: str, new: list,
                 dynamic: bool) -> list[onnx.NodeProto]:
    """The nodes that make out = x @ W from int8 weights (appended to `new`)."""
    if dynamic:
        return _integer_matmul(x, name, w, out, node_name, new)
    return [_dequantize(name, w, node_name, new), helper.make_node("MatMul", [x, name], [out], name=node_name)]


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def _pointwise(node: onnx.NodeProto, w: onnx.TensorProto) -> bool:
    """A Conv that is a plain matrix product over channels: kernel 1, no groups, strides or pads."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return (len(w.dims) == 3 and w.dims[2] == 1 and attrs.get("group", 1) == 1
            and set(attrs.get("strides", [1])) == {1} and set(attrs.get("dilations", [1])) == {1}
            and not any(attrs.get("pads", [0])) and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET"))


def _as_matmul(node: onnx.NodeProto, w: np.ndarray, new: list, dynamic: bool) -> list[onnx.NodeProto]:
    """Conv(x (B, K, T), W (N, K, 1), b) as Transpose -> MatMul(W (K, N) int8) -> Add b -> Transpose."""
    x, name, out = node.input[0], node.input[1], node.output[0]
    matrix = np.ascontiguousarray(w[:, :, 0].T)
    nodes = [helper.make_node("Transpose", [x], [f"{out}_btk"], name=f"{node.name}_in", perm=[0, 2, 1]),
             *_int8_matmul(f"{out}_btk", name, matrix, f"{out}_btn", node.name, new, dynamic)]
    if len(node.input) > 2 and node.input[2]:
        nodes.append(helper.make_node("Add", [f"{out}_btn", node.input[2]], [f"{out}_biased"], name=f"{node.name}_bias"))
    nodes.append(helper.make_node("Transpose", [nodes[-1].output[0]], [out], name=f"{node.name}_out", perm=[0, 2, 1]))
    return nodes


def quantize_component(model: onnx.ModelProto, dynamic: bool = False) -> list[str]:
    """In place; returns the names of all its int8 and scale initializers (those of an earlier
    call included: idempotent). Float MatMul weights whose K is not a multiple of 16 stay float32.
    `dynamic`: int8 activations too (MatMulInteger), else float activations (DequantizeLinear)."""
    inits = {t.name: t for t in model.graph.initializer}
    consumers = _consumers(model.graph)
    nodes, new, replaced = [], [], set()
    for node in model.graph.node:
        name = node.input[1] if node.op_type in ("MatMul", "Conv") and len(node.input) >= 2 else None
        t = inits.get(name)
        if t is None or name in replaced or t.data_type != onnx.TensorProto.FLOAT:
            nodes.append(node)
        elif node.op_type == "MatMul" and len(t.dims) == 2 and block_size(t.dims[0]) \
                and all(c.op_type == "MatMul" and c.input[1] == name for c in consumers[name]):
            nodes += _int8_matmul(node.input[0], name, numpy_helper.to_array(t), node.output[0], node.name, new, dynamic)
            replaced.add(name)
        elif node.op_type == "Conv" and name.endswith(CLASSIFIER) and consumers[name] == [node] \
                and _pointwise(node, t) and block_size(t.dims[1]):
            nodes += _as_matmul(node, numpy_helper.to_array(t), new, dynamic)
            replaced.add(name)
        else:
            nodes.append(node)
    if replaced:
        _replace(model, replaced, new, nodes, opset=None if dynamic else OPSET)
    names = {t.name for t in model.graph.initializer}
    return [n for node in model.graph.node if node.op_type in ("DequantizeLinear", "MatMulInteger", "Mul")
            for n in node.input if n in names and n.endswith(("_int8", "_scale", "_zero"))]


def halve_convs(model: onnx.ModelProto) -> int:
    """In place: every float32 Conv / ConvTranspose weight stored as float16 and read through a Cast
    back to float32; returns how many. Idempotent."""
    inits = {t.name: t for t in model.graph.initializer}
    consumers = _consumers(model.graph)
    nodes, new, replaced = [], [], set()
    for node in model.graph.node:
        t = inits.get(node.input[1]) if node.op_type in ("Conv", "ConvTranspose") else None
        if t is not None and t.data_type == onnx.TensorProto.FLOAT and t.name not in replaced \
                and all(c.op_type in ("Conv", "ConvTranspose") for c in consumers[t.name]):
            half = numpy_helper.to_array(t).astype(np.float16)
            new.append(numpy_helper.from_array(half, f"{t.name}_fp16"))
            nodes.append(helper.make_node("Cast", [f"{t.name}_fp16"], [t.name], name=f"{node.name}_widen",
                                          to=onnx.TensorProto.FLOAT))
            replaced.add(t.name)
        nodes.append(node)
    if replaced:
        _replace(model, replaced, new, nodes, opset=None)  # Cast: any opset
    return len(replaced)


def _replace(model: onnx.ModelProto, replaced: set[str], new: list, nodes: list, opset: int | None = OPSET) -> None:
    keep = [t for t in model.graph.initializer if t.name not in replaced]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep + new)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    for entry in model.opset_import:
        if entry.domain == "" and opset is not None:
            entry.version = max(entry.version, opset)


def _readers(graph: onnx.GraphProto, names: set[str], found: dict[str, list[onnx.GraphProto]]) -> None:
    for node in graph.node:
        for name in node.input:
            if name in names:
                found.setdefault(name, []).append(graph)
        for g in subgraphs(node):
            _readers(g, names, found)


def move_into_bodies(model: onnx.ModelProto, names: list[str]) -> int:
    """Move each of the main graph's initializers `names` that is read in exactly one subgraph
    (and nowhere else) into that subgraph's initializers; returns how many moved."""
    wanted = set(names)
    found: dict[str, list[onnx.GraphProto]] = {}
    _readers(model.graph, wanted, found)
    moved, keep = 0, []
    for t in model.graph.initializer:
        graphs = found.get(t.name, [])
        if t.name in wanted and len({id(g) for g in graphs}) == 1 and graphs[0] is not model.graph:
            graphs[0].initializer.append(t)
            moved += 1
        else:
            keep.append(t)
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    return moved
