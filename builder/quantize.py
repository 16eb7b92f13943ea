"""Weight-only int8 quantization of the transformers' MatMuls (`vampnet-onnx build --weights int8`).

    quantize_component(model)      # in place: MatMul(x, W) -> MatMul(x, DequantizeLinear(q, scale))
    move_into_bodies(model, names) # in place: those initializers into the one Loop body that reads them

Every MatMul whose second input is a float32 weight W (K, N) reads it through opset 21's blocked
DequantizeLinear instead: q int8 (K, N) and scale float32 (K / b, N), symmetric, one scale per
block of b consecutive rows along K (b = 128, or the largest power of two >= 16 dividing K).
onnxruntime (>= 1.20) fuses DequantizeLinear -> MatMul into its MatMulNBits (8 bits) at load, so
the weights stay int8 in memory and the product runs on its low-bit kernels.

It fuses only when q and scale are initializers of the graph that holds the MatMul: onnxruntime
1.32 refuses the session ("Missing required weight") when they come from the outer scope, which
is where the assembler puts weights. Each transformer is called from one Loop body, so its
quantized weights move into that body (`move_into_bodies`), stored once as before.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from vampnet_onnx.graphs.portable import subgraphs

OPSET = 21  # blocked DequantizeLinear
MAX_BLOCK, MIN_BLOCK = 128, 16  # MatMulNBits takes powers of two >= 16


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


def quantize_component(model: onnx.ModelProto) -> list[str]:
    """In place; returns the names of all its int8 and scale initializers (those of an earlier
    call included: idempotent). Float MatMul weights whose K is not a multiple of 16 stay float32."""
    inits = {t.name: t for t in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    nodes, new, replaced = [], [], set()
    for node in model.graph.node:
        name = node.input[1] if node.op_type == "MatMul" and len(node.input) == 2 else None
        t = inits.get(name)
        if t is not None and name not in replaced and t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2 \
                and block_size(t.dims[0]) and all(c.op_type == "MatMul" and c.input[1] == name for c in consumers[name]):
            b = block_size(t.dims[0])
            q, scale = quantize_weight(numpy_helper.to_array(t), b)
            new += [numpy_helper.from_array(q, f"{name}_int8"), numpy_helper.from_array(scale, f"{name}_scale")]
            nodes.append(helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_scale"], [name],
                                          name=f"{node.name}_dequantize", axis=0, block_size=b))
            replaced.add(name)
        nodes.append(node)
    if replaced:
        _replace(model, replaced, new, nodes)
    names = {t.name for t in model.graph.initializer}
    return [n for node in model.graph.node if node.op_type == "DequantizeLinear" for n in node.input if n in names]


def _replace(model: onnx.ModelProto, replaced: set[str], new: list, nodes: list) -> None:
    keep = [t for t in model.graph.initializer if t.name not in replaced]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep + new)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    for opset in model.opset_import:
        if opset.domain == "":
            opset.version = max(opset.version, OPSET)


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
