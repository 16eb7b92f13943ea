"""Export of one torch component to its own ONNX graph, and that graph as a local function.

Every component (codec encoder, codec decoder, coarse and c2f transformers) goes through
`export_component`: `torch.export` first, so that a silently narrowed dynamic axis is caught
(the exporter can specialise a shape without a word), then the dynamo ONNX
exporter. `component_function` turns the exported graph into a FunctionProto of the "vampnet"
domain whose weights are extra inputs; the weights themselves go to the main graph, so calls
from inside Loop bodies reference them from the outer scope instead of copying them.
"""
from __future__ import annotations

import logging
import warnings

import onnx
import torch
from onnx import helper

from vampnet_onnx.graphs.opsets import OPSET_VERSION

DOMAIN = "vampnet"
# An axis counts as dynamic only if the exported program still admits this range.
_MIN_UPPER_BOUND = 1 << 20


class ExportError(RuntimeError):
    pass


def _quiet_exporter():
    for name in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx.experimental.symbolic_shapes"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"torch\.onnx.*")
    warnings.filterwarnings("ignore", module=r"onnxscript.*")
    # torch 2.13 deprecation inside its own pytree pickling; nothing we call
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)


def export_component(
    module: torch.nn.Module,
    example_args: tuple,
    dynamic_shapes: dict,
    input_names: list[str],
    output_names: list[str],
    dim_names: dict[str, str] | None = None,
) -> onnx.ModelProto:
    """Export `module` with dynamic axes; refuse if the exporter narrowed any of them.

    `dim_names` maps a symbolic input dimension (as "input:axis") to a readable name, e.g.
    {"codes:2": "T"}; output dims that are expressions of it keep the exporter's spelling.
    """
    _quiet_exporter()
    module.eval()
    with torch.no_grad():
        ep = torch.export.export(module, example_args, dynamic_shapes=dynamic_shapes, strict=False)
    for sym, vr in ep.range_constraints.items():
        lower, upper = vr.lower, vr.upper
        # derived axes (768*s0) follow their root symbol; only the roots can be narrowed
        if sym.is_Symbol and (lower > 2 or upper < _MIN_UPPER_BOUND):
            raise ExportError(
                f"{type(module).__name__}: dynamic axis {sym} was narrowed to [{lower}, {upper}] during export; "
                "a shape-dependent branch in the module specialised it"
            )
    with torch.no_grad():
        program = torch.onnx.export(
            ep, dynamo=True, opset_version=OPSET_VERSION, input_names=input_names,
            output_names=output_names, optimize=True, verbose=False,
        )
    model = program.model_proto
    if dim_names:
        _rename_dims(model, dim_names)
    return model


def _rename_dims(model: onnx.ModelProto, dim_names: dict[str, str]) -> None:
    renames = {}
    for value in model.graph.input:
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            name = dim_names.get(f"{value.name}:{axis}")
            if name and dim.dim_param:
                renames[dim.dim_param] = name
    for value in list(model.graph.input) + list(model.graph.output):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                expr = dim.dim_param
                for old, new in renames.items():
                    expr = expr.replace(old, new)
                dim.dim_param = expr


def component_function(model: onnx.ModelProto, name: str) -> tuple[onnx.FunctionProto, list[onnx.TensorProto]]:
    """The exported graph as function `vampnet.<name>(inputs..., weights...)` plus its weights.

    The weights are renamed `<name>/<original name>` for the main graph; inside the function
    they keep their exporter names (a function has its own scope). Node names get the prefix
    `<name>/` too; the exporter's notes on each node (`metadata_props`) are dropped.
    """
    graph = model.graph
    if model.functions:
        raise ExportError(f"{name}: the exported graph still calls local functions; export with optimize=True")
    weights = list(graph.initializer)
    nodes = []
    for node in graph.node:  # `<name>/` survives inlining: how the profiler tells the components apart
        nodes.append(onnx.NodeProto())
        nodes[-1].CopyFrom(node)
        nodes[-1].name = f"{name}/{node.name}"
        # the exporter's debugging notes (the build machine's source paths and stack traces, some
        # 700 bytes a node) are not shipped
        del nodes[-1].metadata_props[:]
    function = helper.make_function(
        DOMAIN,
        name,
        inputs=[v.name for v in graph.input] + [w.name for w in weights],
        outputs=[v.name for v in graph.output],
        nodes=nodes,
        opset_imports=list(model.opset_import),
    )
    outer = []
    for w in weights:
        t = onnx.TensorProto()
        t.CopyFrom(w)
        t.name = f"{name}/{w.name}"
        outer.append(t)
    return function, outer
