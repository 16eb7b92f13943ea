"""Benchmark: which form of low-bit weights stays small in onnxruntime-web (wasm), on a synthetic model.

    python -m benchmarks.web_weights [--layers 24] [--size 2048] [--rows 256]

The model: LAYERS chained SIZE × SIZE MatMuls (random weights) in a Loop body run 3 times on a
ROWS × SIZE input, the shape of the step loops' transformer forwards. Each form quantizes the
weights as builder/quantize.py does (MatMulNBits, onnxruntime's contrib op, written directly with
block 128), with the weights either initializers of the Loop body or of the main graph, stored in
the .onnx or in a .data file beside it. Each model runs once in Node with the page's onnxruntime-web
(web/node_modules/, `npm ci --prefix web`; one thread; benchmarks/web_weights.mjs opens it as the page
does), and once in Python onnxruntime (one thread). Prints a table: the weights' bytes, whether the
wasm build opens it, the Node process's peak RSS above its start (load and run), the run's seconds
in wasm and natively. docs/browser.md ("The browser's variant") reads it.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.node_packages import node
from vampnet_onnx.builder.quantize import block_size, quantize_columns, quantize_weight
from vampnet_onnx.web import WEB

BLOCK = 128
# (label, weights' form, where: "body" or "main", stored: "onnx" or "data")
FORMS = [
    ("float32", "float32", "main", "data"),
    ("int8: DequantizeLinear -> MatMul", "dequantize", "body", "onnx"),
    ("int8: DequantizeLinear -> MatMul", "dequantize", "body", "data"),
    ("int8: DequantizeLinear -> MatMul", "dequantize", "main", "data"),
    ("int8-dynamic: MatMulInteger", "integer", "body", "onnx"),
    ("web: MatMulInteger", "integer", "main", "data"),
    ("MatMulNBits, 8 bits", "nbits8", "main", "data"),
    ("MatMulNBits, 4 bits", "nbits4", "main", "data"),
]


def nbits(w: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """MatMulNBits' layout: (N, K / block, block · bits / 8) uint8 with zero point 2^(bits-1), scales (N · K / block)."""
    k, n = w.shape
    blocks = w.T.reshape(n, k // BLOCK, BLOCK)
    top = 2 ** (bits - 1) - 1
    scale = np.maximum(np.abs(blocks).max(axis=2) / top, 1e-12)
    q = (np.clip(np.rint(blocks / scale[..., None]), -top - 1, top) + top + 1).astype(np.uint8)
    if bits == 4:
        q = q[..., 0::2] | (q[..., 1::2] << 4)
    return q, scale.astype(np.float32).reshape(-1)


def layer(form: str, x: str, w: np.ndarray, i: int) -> tuple[list, list]:
    """The nodes and initializers of y_i = x @ w in `form`."""
    y, (k, n) = f"y{i}", w.shape
    if form == "float32":
        return [helper.make_node("MatMul", [x, f"w{i}"], [y])], [numpy_helper.from_array(w, f"w{i}")]
    if form == "dequantize":
        q, scale = quantize_weight(w, block_size(k))
        return ([helper.make_node("DequantizeLinear", [f"q{i}", f"s{i}"], [f"w{i}"], axis=0, block_size=block_size(k)),
                 helper.make_node("MatMul", [x, f"w{i}"], [y])],
                [numpy_helper.from_array(q, f"q{i}"), numpy_helper.from_array(scale, f"s{i}")])
    if form == "integer":
        q, scale = quantize_columns(w)
        return ([helper.make_node("DynamicQuantizeLinear", [x], [f"xq{i}", f"xs{i}", f"xz{i}"]),
                 helper.make_node("MatMulInteger", [f"xq{i}", f"q{i}", f"xz{i}", f"z{i}"], [f"p{i}"]),
                 helper.make_node("Cast", [f"p{i}"], [f"c{i}"], to=TensorProto.FLOAT),
                 helper.make_node("Mul", [f"xs{i}", f"s{i}"], [f"ss{i}"]),
                 helper.make_node("Mul", [f"c{i}", f"ss{i}"], [y])],
                [numpy_helper.from_array(q, f"q{i}"), numpy_helper.from_array(scale, f"s{i}"),
                 numpy_helper.from_array(np.zeros(n, np.int8), f"z{i}")])
    bits = int(form.removeprefix("nbits"))
    q, scale = nbits(w, bits)
    return ([helper.make_node("MatMulNBits", [x, f"q{i}", f"s{i}"], [y], domain="com.microsoft",
                              K=k, N=n, bits=bits, block_size=BLOCK)],
            [numpy_helper.from_array(q, f"q{i}"), numpy_helper.from_array(scale, f"s{i}")])


def synthetic(form: str, where: str, layers: int, size: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes, weights, x = [], [], "x_in"
    for i in range(layers):
        new_nodes, new_weights = layer(form, x, (0.02 * rng.standard_normal((size, size))).astype(np.float32), i)
        nodes += new_nodes
        weights += new_weights
        x = f"y{i}"
    nodes += [helper.make_node("Tanh", [x], ["x_out"]), helper.make_node("Identity", ["cond"], ["cond_out"])]
    rows = helper.make_tensor_value_info
    body = helper.make_graph(nodes, "body", [rows("i", TensorProto.INT64, []), rows("cond", TensorProto.BOOL, []),
                                              rows("x_in", TensorProto.FLOAT, ["M", size])],
                             [rows("cond_out", TensorProto.BOOL, []), rows("x_out", TensorProto.FLOAT, ["M", size])],
                             initializer=weights if where == "body" else [])
    graph = helper.make_graph([helper.make_node("Loop", ["n", "", "x"], ["y"], body=body)], "synthetic",
                              [rows("x", TensorProto.FLOAT, ["M", size])], [rows("y", TensorProto.FLOAT, ["M", size])],
                              initializer=[numpy_helper.from_array(np.array(3, np.int64), "n")]
                              + (weights if where == "main" else []))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    return model


def native_run_s(path: Path, rows: int, size: int) -> float | str:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - the error is the result
        return str(e).split(" : ")[-1].split(" for node")[0][-80:]
    x = np.ones((rows, size), np.float32)
    start = time.perf_counter()
    session.run(None, {"x": x})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--rows", type=int, default=256)
    args = parser.parse_args()
    bundle = WEB / "node_modules" / "onnxruntime-web" / "dist" / "ort.wasm.bundle.min.mjs"  # the vendored version
    if not bundle.is_file():
        raise SystemExit("no web/vendor/: run `npm ci --prefix web` first")
    script = Path(__file__).with_name("web_weights.mjs")
    print("| form | weights in | weights | opens in wasm? | peak RSS (load; and run) | run, wasm | run, native |")
    print("|---|---|---|---|---|---|---|")
    for label, form, where, stored in FORMS:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            model = synthetic(form, where, args.layers, args.size)
            if stored == "data":
                onnx.save_model(model, path, save_as_external_data=True, location="model.onnx.data", size_threshold=1024)
            else:
                onnx.save_model(model, path)
            weights = sum(f.stat().st_size for f in Path(tmp).iterdir())
            out = subprocess.run([node(), str(script), bundle.as_uri(), str(path), str(args.rows), str(args.size)],
                                 capture_output=True, text=True, timeout=1800)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            native = native_run_s(path, args.rows, args.size)
        place = f"{'a Loop body' if where == 'body' else 'the main graph'}, `.{stored}`"
        native = f"{native:.2f} s" if isinstance(native, float) else f"no: {native}"
        if "error" in r:
            print(f"| {label} | {place} | {weights / 1e6:.0f} MB | no: {r['error'].split('ERROR_MESSAGE: ')[-1][:90]} | | | {native} |")
        else:
            print(f"| {label} | {place} | {weights / 1e6:.0f} MB | yes | {r['load_peak'] / 1e9:.2f} GB; "
                  f"{r['peak'] / 1e9:.2f} GB | {r['run_s']:.2f} s | {native} |")


if __name__ == "__main__":
    main()
