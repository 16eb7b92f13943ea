"""Make what onnxscript emits run the same in every runtime (onnx-notes, pitfall 3).

- `callee_first`: local functions ordered so every function comes after the ones it calls
  (onnxscript emits callers first; the ONNX reference evaluator resolves functions in order).
- `explicit_loop_conditions`: onnxscript leaves a Loop's optional `cond` input empty; the reference
  evaluator then runs zero iterations, so every such Loop gets a constant `true`.
- `complete_opset_imports`: onnxscript 0.7.2 omits the import of a domain that a function uses only
  inside If/Loop bodies; onnxruntime then refuses the function.
"""
from __future__ import annotations

import onnx
from onnx import helper


def _subgraphs(node: onnx.NodeProto):
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        yield from attr.graphs


def called_functions(nodes) -> list[tuple[str, str]]:
    """(domain, name) of every node in `nodes` and in their subgraphs."""
    found = []
    for node in nodes:
        found.append((node.domain, node.op_type))
        for g in _subgraphs(node):
            found.extend(called_functions(g.node))
    return found


def callee_first(functions: list[onnx.FunctionProto]) -> list[onnx.FunctionProto]:
    by_id = {(f.domain, f.name): f for f in functions}
    ordered, seen = [], set()

    def visit(fid):
        if fid in seen or fid not in by_id:
            return
        seen.add(fid)
        for callee in called_functions(by_id[fid].node):
            visit(callee)
        ordered.append(by_id[fid])

    for fid in sorted(by_id):
        visit(fid)
    return ordered


def _with_loop_conditions(nodes) -> list[onnx.NodeProto]:
    out = []
    for node in nodes:
        for g in _subgraphs(node):
            fixed = _with_loop_conditions(g.node)
            del g.node[:]
            g.node.extend(fixed)
        if node.op_type == "Loop" and node.domain == "" and node.input[1] == "":
            cond = f"{node.output[0]}__always"
            out.append(helper.make_node("Constant", [], [cond], value=helper.make_tensor("", onnx.TensorProto.BOOL, [], [True])))
            node.input[1] = cond
        out.append(node)
    return out


def explicit_loop_conditions(model: onnx.ModelProto) -> None:
    """In place, in the main graph, its subgraphs and every local function."""
    for container in [model.graph, *model.functions]:
        fixed = _with_loop_conditions(container.node)
        del container.node[:]
        container.node.extend(fixed)


def complete_opset_imports(model: onnx.ModelProto) -> None:
    """In place: every function imports each domain its nodes (subgraphs included) use."""
    versions = {o.domain: o.version for o in model.opset_import}
    for function in model.functions:
        used = {domain for domain, _ in called_functions(function.node)}
        missing = used - {o.domain for o in function.opset_import}
        function.opset_import.extend(helper.make_opsetid(d, versions.get(d, 1)) for d in sorted(missing))


def make_portable(model: onnx.ModelProto) -> onnx.ModelProto:
    explicit_loop_conditions(model)
    complete_opset_imports(model)
    functions = callee_first(list(model.functions))
    del model.functions[:]
    model.functions.extend(functions)
    return model
