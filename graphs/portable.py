"""Make what onnxscript emits run the same in every runtime (docs/architecture.md).

- `callee_first`: local functions ordered so every function comes after the ones it calls
  (onnxscript emits callers first; the ONNX reference evaluator resolves functions in order).
- `explicit_loop_conditions`: onnxscript leaves a Loop's optional `cond` input empty; the reference
  evaluator then runs zero iterations, so every such Loop gets a constant `true`.
- `complete_opset_imports`: onnxscript 0.7.2 omits the import of a domain that a function uses only
  inside If/Loop bodies; onnxruntime then refuses the function.
- `narrow_concats`: a Concat of more than 7 inputs (the exported codec stacks its 14 codebooks)
  becomes Concats of at most 7; WebGPU allows 8 storage buffers per shader stage by default, inputs
  and output together.
- `check_function_names`: onnxscript keeps one function per name when it gathers a model's local
  functions, so two different functions of one name would silently share one body.
"""
from __future__ import annotations

import onnx
import onnxscript
from onnx import helper

from vampnet_onnx.graphs.opsets import INT8_OPSET_VERSION, OPSET_VERSION


def subgraphs(node: onnx.NodeProto):
    """The graphs held by a node's attributes (Loop and If bodies)."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        yield from attr.graphs


def called_functions(nodes) -> list[tuple[str, str]]:
    """(domain, name) of every node in `nodes` and in their subgraphs."""
    found = []
    for node in nodes:
        found.append((node.domain, node.op_type))
        for g in subgraphs(node):
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


def check_function_names(fn: onnxscript.OnnxFunction) -> None:
    """ValueError if two different graph functions reachable from `fn` have the same name.

    onnxscript collects the functions a model calls by name and keeps the first it meets: every
    call to the other one then runs the wrong body, with no error until its shapes go wrong (the
    pitch shifter's resampler, once also named `resample` like the preprocessing's, was run as
    that one and resampled the shifted audio from rate 14 to 44544). Identical functions made
    twice (the same factory called twice with the same constants) are fine."""
    seen: dict[str, onnxscript.OnnxFunction] = {}

    def visit(f: onnxscript.OnnxFunction) -> None:
        for node in onnxscript.ir.traversal.RecursiveGraphIterator(f.function_ir.graph):
            callee = node.meta.get("callee")
            if not isinstance(callee, onnxscript.OnnxFunction) or seen.get(callee.name) is callee:
                continue
            if callee.name not in seen:
                seen[callee.name] = callee
                visit(callee)
            elif seen[callee.name].to_function_proto() != callee.to_function_proto():
                raise ValueError(f"two different graph functions are named {callee.name!r}: rename one "
                                 "(onnxscript would run one body for both)")

    visit(fn)


def _with_loop_conditions(nodes) -> list[onnx.NodeProto]:
    out = []
    for node in nodes:
        for g in subgraphs(node):
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


# --------------------------------------------------------------------------------------------
# The shipped model: functions inlined, every subgraph typed, IR version 9
# --------------------------------------------------------------------------------------------

IR_VERSION = 9  # what onnxruntime 1.17 and other older runtimes read; opset 20 needs no more
IR_VERSION_FOR_OPSET = {OPSET_VERSION: IR_VERSION, INT8_OPSET_VERSION: 10}


def _rank_only(value_type: onnx.TypeProto) -> onnx.TypeProto:
    """The element type and rank of a tensor type, with every dimension left open."""
    out = onnx.TypeProto()
    out.tensor_type.elem_type = value_type.tensor_type.elem_type
    if value_type.tensor_type.HasField("shape"):
        for _ in value_type.tensor_type.shape.dim:
            out.tensor_type.shape.dim.add()
    return out


def _known(value_type: onnx.TypeProto) -> bool:
    t = value_type.tensor_type
    return t.elem_type != 0 and t.HasField("shape")


def _scalar(elem: int) -> onnx.TypeProto:
    out = onnx.TypeProto()
    out.tensor_type.elem_type = elem
    out.tensor_type.shape.SetInParent()
    return out


def _types(graph: onnx.GraphProto, outer: dict[str, onnx.TypeProto]) -> dict[str, onnx.TypeProto]:
    types = dict(outer)
    for v in [*graph.input, *graph.value_info, *graph.output]:
        if _known(v.type):
            types[v.name] = v.type
    for t in graph.initializer:
        types[t.name] = helper.make_tensor_type_proto(t.data_type, list(t.dims))
    return types


def _set_type(value: onnx.ValueInfoProto, value_type: onnx.TypeProto | None) -> bool:
    if value_type is None or _known(value.type):
        return False
    value.type.CopyFrom(_rank_only(value_type))
    return True


def _declare(graph: onnx.GraphProto, types: dict, name: str, value_type: onnx.TypeProto | None) -> bool:
    """Record the type of a node output that inference left open, as a value_info of `graph`."""
    if value_type is None or name in types or not name:
        return False
    graph.value_info.append(helper.make_value_info(name, _rank_only(value_type)))
    types[name] = value_type
    return True


def _type_graph(graph: onnx.GraphProto, outer: dict[str, onnx.TypeProto]) -> int:
    """Declare the types of the Loop/If bodies in `graph` (recursively); returns how many it set."""
    types = _types(graph, outer)
    changed = 0
    for node in graph.node:
        if node.op_type == "Loop" and node.domain == "":
            body = node.attribute[0].g
            carried = len(node.input) - 2
            changed += _set_type(body.input[0], _scalar(onnx.TensorProto.INT64))
            changed += _set_type(body.input[1], _scalar(onnx.TensorProto.BOOL))
            body_types = _types(body, types)
            changed += _set_type(body.output[0], _scalar(onnx.TensorProto.BOOL))
            for k in range(carried):
                known = types.get(node.input[2 + k]) or body_types.get(body.output[1 + k].name)
                changed += _set_type(body.input[2 + k], known)
                changed += _set_type(body.output[1 + k], known)
            for out in body.output[1 + carried:]:
                changed += _set_type(out, body_types.get(out.name))
            # a carried value leaves the Loop with the type it came in with
            for k in range(carried):
                changed += _declare(graph, types, node.output[k], types.get(node.input[2 + k]))
        if node.op_type == "If" and node.domain == "":
            branches = {a.name: a.g for a in node.attribute}
            for branch in branches.values():
                branch_types = _types(branch, types)
                for k, out in enumerate(branch.output):
                    other = branches["else_branch" if branch is branches["then_branch"] else "then_branch"]
                    known = branch_types.get(out.name) or _types(other, types).get(other.output[k].name)
                    changed += _set_type(out, known)
                    changed += _declare(graph, types, node.output[k], known)
        for g in subgraphs(node):
            changed += _type_graph(g, types)
    return changed


def type_subgraphs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every Loop/If body input and output gets its element type and rank (runtimes such as
    OpenVINO need them; onnxscript leaves them out). Types come from ONNX shape inference and from
    the values a Loop carries in; inference runs again after each pass so nested bodies follow."""
    for _ in range(8):
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
        if _type_graph(inferred.graph, {}) == 0:
            break
        model = inferred
    untyped = [v.name for v in _subgraph_values(model.graph) if not _known(v.type)]
    if untyped:
        raise ValueError(f"subgraph values without a type after inference: {untyped[:10]}")
    return model


def _subgraph_values(graph: onnx.GraphProto):
    for node in graph.node:
        for g in subgraphs(node):
            yield from g.input
            yield from g.output
            yield from _subgraph_values(g)


def _call_output_types(graph: onnx.GraphProto, signatures: dict, found: dict) -> dict:
    for node in graph.node:
        for name, value_type in zip(node.output, signatures.get((node.domain, node.op_type), [])):
            found[name] = value_type
        for g in subgraphs(node):
            _call_output_types(g, signatures, found)
    return found


def _declare_outputs(graph: onnx.GraphProto, known: dict) -> None:
    declared = {v.name for v in graph.value_info}
    for node in graph.node:
        for name in node.output:
            if name in known and name not in declared:
                graph.value_info.append(helper.make_value_info(name, _rank_only(known[name])))
        for g in subgraphs(node):
            _declare_outputs(g, known)


def _constant_value(node: onnx.NodeProto):
    from onnx import numpy_helper

    attr = node.attribute[0]
    if attr.name == "value":
        return numpy_helper.to_array(attr.t)
    return helper.get_attribute_value(attr)


def _fold_cast_like(graph: onnx.GraphProto, outer_types: dict, outer_constants: dict) -> int:
    """CastLike(constant, x) -> a constant of x's type (onnxscript writes one per typed literal;
    onnxruntime then warns at every load that it cannot fold them, and each costs a node)."""
    import numpy as np
    from onnx import numpy_helper

    types = _types(graph, outer_types)
    constants = dict(outer_constants)
    folded = 0
    for i, node in enumerate(graph.node):
        if node.op_type == "Constant" and len(node.attribute) == 1:
            constants[node.output[0]] = node
        if node.op_type == "CastLike" and node.input[0] in constants and node.input[1] in types:
            elem = types[node.input[1]].tensor_type.elem_type
            value = np.asarray(_constant_value(constants[node.input[0]]))
            value = value.astype(helper.tensor_dtype_to_np_dtype(elem))
            folded_node = helper.make_node("Constant", [], [node.output[0]],
                                           value=numpy_helper.from_array(value, node.output[0]))
            graph.node[i].CopyFrom(folded_node)
            constants[node.output[0]] = graph.node[i]
            folded += 1
        for g in subgraphs(graph.node[i]):
            folded += _fold_cast_like(g, types, constants)
    return folded


def _used_names(graph: onnx.GraphProto, used: set) -> set:
    used.update(o.name for o in graph.output)
    for node in graph.node:
        used.update(node.input)
        for g in subgraphs(node):
            _used_names(g, used)
    return used


def _drop_unused_constants(graph: onnx.GraphProto, used: set) -> None:
    keep = [n for n in graph.node if not (n.op_type == "Constant" and n.output[0] not in used)]
    del graph.node[:]
    graph.node.extend(keep)
    for node in graph.node:
        for g in subgraphs(node):
            _drop_unused_constants(g, used)


MAX_CONCAT_INPUTS = 7


def narrow_concats(graph: onnx.GraphProto) -> int:
    """Split every Concat of more than MAX_CONCAT_INPUTS inputs (in subgraphs too) into a Concat of
    Concats, each of at most that many (exact: concatenation is associative); returns how many."""
    count = 0
    nodes = []
    for node in graph.node:
        for g in subgraphs(node):
            count += narrow_concats(g)
        inputs = list(node.input)
        if node.op_type != "Concat" or node.domain != "" or len(inputs) <= MAX_CONCAT_INPUTS:
            nodes.append(node)
            continue
        count += 1
        axis = next(a.i for a in node.attribute if a.name == "axis")
        level = 0
        while len(inputs) > MAX_CONCAT_INPUTS:
            groups = [inputs[i:i + MAX_CONCAT_INPUTS] for i in range(0, len(inputs), MAX_CONCAT_INPUTS)]
            inputs = []
            for k, group in enumerate(groups):
                if len(group) == 1:
                    inputs.append(group[0])
                    continue
                part = f"{node.output[0]}__part{level}_{k}"
                nodes.append(helper.make_node("Concat", group, [part], name=f"{node.name}__part{level}_{k}", axis=axis))
                inputs.append(part)
            level += 1
        nodes.append(helper.make_node("Concat", inputs, list(node.output), name=node.name, axis=axis))
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def ship(model: onnx.ModelProto, signatures: dict | None = None, opset: int = OPSET_VERSION) -> onnx.ModelProto:
    """The model as shipped: local functions inlined (runtimes such as OpenVINO and tract read no
    functions), subgraphs typed, IR version 9 (10 for the int8 variant's opset).

    `signatures`: {(domain, function name): [output types]} for functions whose outputs ONNX
    shape inference cannot type once inlined (an exported component's Reshape to a computed
    shape); their call sites' outputs are declared with those types.
    """
    import onnx.inliner

    known = _call_output_types(model.graph, signatures or {}, {})
    # the inliner keeps a function whose opset differs from the model's; the graph code's operators
    # read the same at the int8 variant's opset
    for imports in [model.opset_import, *(f.opset_import for f in model.functions)]:
        for o in imports:
            if o.domain == "":
                o.version = opset
    model = onnx.inliner.inline_local_functions(make_portable(model))
    _declare_outputs(model.graph, known)
    model.ir_version = IR_VERSION_FOR_OPSET[opset]
    del model.opset_import[:]
    model.opset_import.extend([helper.make_opsetid("", opset)])
    model = type_subgraphs(model)
    _fold_cast_like(model.graph, {}, {})
    _drop_unused_constants(model.graph, _used_names(model.graph, set()))
    narrow_concats(model.graph)
    return model
