"""Run one onnxscript graph function as a tiny ONNX model, in onnxruntime or the ReferenceEvaluator.

    run_function(fn, *inputs, runtime="ort")   -> one numpy array, or a tuple for several outputs
    function_model(fn, *inputs)                -> the onnx.ModelProto that run_function runs
    run_model(model, feeds, runtime="ort")     -> list of outputs of any ModelProto

runtime is "ort" (onnxruntime, CPU) or "ref" (onnx.reference.ReferenceEvaluator).

The model is one node that calls `fn` as a local function (domain "vampnet"), with every function it
calls (transitively) in `model.functions`, made portable exactly as the single model is
(graphs/portable.py: callee-first order, explicit Loop conditions, complete opset imports). Opset imports are
explicit: the default domain at OPSET_VERSION and "vampnet" 1. Input types come from the numpy
inputs (dtype and rank); every dimension is symbolic, so nothing gets specialised to the test shape.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from vampnet_onnx.graphs.opsets import OPSET_VERSION, vampnet
from vampnet_onnx.graphs.portable import check_function_names, make_portable

IR_VERSION = 10
RUNTIMES = ("ort", "ref")


def _functions(fn) -> list[onnx.FunctionProto]:
    """fn and every function it calls, transitively (made portable and ordered by make_portable)."""
    called = fn.function_ir.get_called_functions().values()
    return [fn.to_function_proto(), *(f.to_function_proto() for f in called)]


def function_model(fn, *inputs: np.ndarray) -> onnx.ModelProto:
    """A model whose single node calls `fn` on graph inputs typed like `inputs`."""
    check_function_names(fn)
    proto = fn.to_function_proto()
    if len(inputs) != len(proto.input):
        raise ValueError(f"{fn.name} takes {len(proto.input)} inputs, got {len(inputs)}")
    in_names = [f"in{i}" for i in range(len(inputs))]
    out_names = [f"out{i}" for i in range(len(proto.output))]
    graph_inputs = []
    for name, value in zip(in_names, inputs):
        value = np.asarray(value)
        elem = helper.np_dtype_to_tensor_dtype(value.dtype)
        dims = [f"{name}_d{k}" for k in range(value.ndim)]
        graph_inputs.append(helper.make_tensor_value_info(name, elem, dims))
    graph_outputs = [helper.make_empty_tensor_value_info(name) for name in out_names]
    node = helper.make_node(fn.name, in_names, out_names, domain=vampnet.domain)
    graph = helper.make_graph([node], f"run_{fn.name}", graph_inputs, graph_outputs)
    model = helper.make_model(
        graph,
        ir_version=IR_VERSION,
        opset_imports=[helper.make_opsetid("", OPSET_VERSION), helper.make_opsetid(vampnet.domain, 1)],
        functions=_functions(fn),
    )
    make_portable(model)
    # Output types from ONNX shape inference (through the local functions), so the model passes
    # onnx.checker.check_model(full_check=True); where inference cannot tell, they stay untyped
    # (onnxruntime does not need them).
    return onnx.shape_inference.infer_shapes(model)


def make_runner(model: onnx.ModelProto, runtime: str = "ort"):
    """A callable feeds -> list of outputs (one session / evaluator, reusable)."""
    if runtime == "ort":
        import onnxruntime as ort

        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return lambda feeds: sess.run(None, feeds)
    if runtime == "ref":
        from onnx.reference import ReferenceEvaluator

        evaluator = ReferenceEvaluator(model)
        return lambda feeds: [np.asarray(v) for v in evaluator.run(None, feeds)]
    raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")


def run_model(model: onnx.ModelProto, feeds: dict[str, np.ndarray], runtime: str = "ort") -> list:
    """Run a ModelProto in onnxruntime ("ort", CPU) or onnx.reference.ReferenceEvaluator ("ref")."""
    return make_runner(model, runtime)(feeds)


# One session per (function, runtime, input dtypes and ranks): models have symbolic dims, so a
# session serves every shape. Sessions cost ~20-40 ms to build; tests call the same few functions often.
_RUNNERS: dict = {}


def run_function(fn, *inputs, runtime: str = "ort"):
    """Run onnxscript function `fn` on numpy inputs; one output -> array, several -> tuple."""
    inputs = [np.asarray(x) for x in inputs]
    signature = (id(fn), runtime, tuple((x.dtype.str, x.ndim) for x in inputs))
    if signature not in _RUNNERS:
        _RUNNERS[signature] = (fn, make_runner(function_model(fn, *inputs), runtime))
    outputs = _RUNNERS[signature][1]({f"in{i}": x for i, x in enumerate(inputs)})
    return outputs[0] if len(outputs) == 1 else tuple(outputs)
