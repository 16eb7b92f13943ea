"""Stitch the exported components and the onnxscript graphs into the single model.

    model = assemble(codec, coarse, c2f)        # an onnx.ModelProto, weights included

1. Each component is exported on its own (builder/export.py) and becomes a local function.
2. The main graph (graphs/model.py) is converted from onnxscript; its stage functions are
   inlined so that every component call sits in the main graph or in one of its Loop bodies.
3. Each component call gets the names of its weights appended: main-graph initializers,
   referenced from the outer scope (a copy inside a Loop body would cost its memory again).
4. The graph's signature is checked against the interface table (vampnet_onnx/interface.py),
   whose defaults go to the metadata: every input is a plain graph input.
5. The model is made portable: functions inlined, Loop/If bodies typed, IR version 9
   (graphs/portable.py).

The stages' noise ops (`vampnet.coarse_noise`, `vampnet.c2f_noise`, graphs/stages.py) are bound
to renamed copies of an implementation: the in-graph PRNG (`prng_noise`) in the model as built,
or, with `noise_inputs=True` (tests only), `injected_noise`, which reads four extra graph inputs
(NOISE_INPUTS, no defaults) handed to the calls from the outer scope like weights.
"""
from __future__ import annotations

import json

import onnx
import onnx.inliner
import torch
from onnx import helper
from torch.export import Dim

from vampnet_onnx.builder.codec import Codec, codec_window_frames, decoder_for_export, receptive_field_frames
from vampnet_onnx.builder.export import DOMAIN, component_function, export_component
from vampnet_onnx.builder.quantize import OPSET as INT8_OPSET, WEB, move_into_bodies, quantize_components
from vampnet_onnx.graphs.model import GraphConfig, main_graph
from vampnet_onnx.graphs.opsets import OPSET_VERSION
from vampnet_onnx.graphs.portable import check_function_names, make_portable, ship, subgraphs
from vampnet_onnx.graphs.sampling import MASK_TOKEN
from vampnet_onnx.graphs.stages import injected_noise, prng_noise
from vampnet_onnx import interface

# stage functions (vampnet domain), inlined into the main graph before the components are bound
STAGES = ("encode", "decode", "decode_windows", "coarse_stage", "c2f_stage", "coarse_generation", "c2f_generation")
# noise op -> the extra graph inputs of a noise_inputs=True model: q (D, B, N, V), u (D, B, N)
NOISE_INPUTS = {
    "coarse_noise": ("coarse_noise_q", "coarse_noise_u"),
    "c2f_noise": ("c2f_noise_q", "c2f_noise_u"),
}

_EXAMPLE_FRAMES = 40  # >= 2, or the exporter freezes the time axis to the example's
_EXAMPLE_BATCH = 2  # a batch of 1 gets specialised too


def check_signature(graph: onnx.GraphProto, noise_inputs: bool = False) -> None:
    """The graph's inputs and outputs must be the interface table's, in order, with its types."""
    elem = {"float32": onnx.TensorProto.FLOAT, "int64": onnx.TensorProto.INT64}
    inputs = list(graph.input)[: len(interface.INPUTS)] if noise_inputs else list(graph.input)
    got = [(v.name, v.type.tensor_type.elem_type, len(v.type.tensor_type.shape.dim)) for v in inputs]
    want = [(i.name, elem[i.dtype], len(i.shape)) for i in interface.INPUTS]
    got_out = [(v.name, v.type.tensor_type.elem_type) for v in graph.output]
    want_out = [(o.name, elem[o.dtype]) for o in interface.OUTPUTS]
    if got != want or got_out != want_out:
        raise ValueError(f"the graph's signature differs from vampnet_onnx/interface.py: {got} {got_out}")


def graph_config(codec: Codec, coarse, c2f, codec_window: int | None = None) -> GraphConfig:
    """The graph's numbers from the checkpoints; `codec_window` (frames, tests only) shrinks the
    codec's windows (graphs/codec.py) so that short clips span several."""
    cc, fc = coarse.config, c2f.config
    if fc.n_conditioning_codebooks != cc.n_codebooks or cc.n_conditioning_codebooks != 0:
        raise ValueError(
            f"the c2f model conditions on {fc.n_conditioning_codebooks} codebooks but the coarse model "
            f"makes {cc.n_codebooks} (with {cc.n_conditioning_codebooks} conditioning); they are not a pair"
        )
    if fc.n_codebooks != codec.config.n_codebooks:
        raise ValueError(f"the c2f model has {fc.n_codebooks} codebooks, the codec {codec.config.n_codebooks}")
    if adapter_names(coarse) != adapter_names(c2f):
        raise ValueError(f"the coarse model holds the adapters {adapter_names(coarse)}, the c2f model "
                         f"{adapter_names(c2f)}: load both with the same adapters, in the same order")
    if not cc.vocab_size == fc.vocab_size == codec.config.codebook_size == MASK_TOKEN:
        raise ValueError(
            f"vocab_size {cc.vocab_size} / {fc.vocab_size} and codebook_size {codec.config.codebook_size}: "
            f"the graphs are built for VampNet's {MASK_TOKEN}-token vocabulary (mask token {MASK_TOKEN})"
        )
    return GraphConfig(
        sample_rate=codec.config.sample_rate,
        hop_length=codec.config.hop_length,
        n_codebooks=codec.config.n_codebooks,
        n_coarse=cc.n_codebooks,
        vocab_size=codec.config.codebook_size,
        codec_window=codec_window or codec_window_frames(codec.config),
        codec_overlap=receptive_field_frames(codec.config),
        adapters=len(adapter_names(coarse)),
    )


def adapter_names(transformer) -> tuple[str, ...]:
    """The fine-tunes a loaded transformer holds besides its base weights (docs/adapters.md)."""
    return tuple(getattr(transformer, "adapter_names", ()))


_DIM_NAMES = {"codes:0": "B", "codes:2": "T", "audio:0": "B", "audio:2": "L"}


def _example_codes(n_codebooks: int) -> torch.Tensor:
    return torch.zeros(_EXAMPLE_BATCH, n_codebooks, _EXAMPLE_FRAMES, dtype=torch.int64)


def export_codec(codec: Codec) -> dict[str, onnx.ModelProto]:
    """The codec's encoder and decoder as ONNX models with dynamic batch and time axes."""
    hop, k = codec.config.hop_length, codec.config.n_codebooks
    batch, frames = Dim("B", min=1), Dim("T", min=1)
    return {
        "codec_encoder": export_component(
            codec.encoder, (torch.zeros(_EXAMPLE_BATCH, 1, _EXAMPLE_FRAMES * hop),),
            {"audio": {0: batch, 2: frames * hop}}, ["audio"], ["codes"], _DIM_NAMES,
        ),
        "codec_decoder": export_component(
            decoder_for_export(codec.decoder), (_example_codes(k),), {"codes": {0: batch, 2: frames}}, ["codes"],
            ["audio"], _DIM_NAMES,
        ),
    }


def export_transformer(transformer) -> onnx.ModelProto:
    """A transformer as codes (B, C, T) -> logits; one that holds adapters takes the adapter index
    (0-d int64) as a second input."""
    batch, frames = Dim("B", min=1), Dim("T", min=1)
    codes = _example_codes(transformer.config.n_codebooks)
    if not adapter_names(transformer):
        return export_component(transformer, (codes,), {"codes": {0: batch, 2: frames}}, ["codes"], ["logits"], _DIM_NAMES)
    return export_component(
        transformer, (codes, torch.tensor(0)), {"codes": {0: batch, 2: frames}, "adapter": None},
        ["codes", "adapter"], ["logits"], _DIM_NAMES,
    )


def export_components(codec: Codec, coarse, c2f) -> dict[str, onnx.ModelProto]:
    """Each component as its own ONNX model with dynamic batch and time axes."""
    return {**export_codec(codec), "coarse_transformer": export_transformer(coarse),
            "c2f_transformer": export_transformer(c2f)}


def component_functions(components: dict[str, onnx.ModelProto]):
    """Each component as a local function, its weights as outer initializers, and the weights'
    names per component (for `bind_weights`)."""
    functions, weights, weight_names = [], [], {}
    for name, component in components.items():
        function, outer = component_function(component, name)
        functions.append(function)
        weights.extend(outer)
        weight_names[name] = [w.name for w in outer]
    return functions, weights, weight_names


def bind_weights(nodes, weights: dict[str, list[str]], takes: dict[str, int] | None = None) -> None:
    """Append its weights' names to every call of a component, in `nodes` and their subgraphs.
    `takes` (component -> how many inputs of its own): a call's arguments beyond those are dropped
    (the stages hand every transformer the adapter index; one without adapters takes none)."""
    for node in nodes:
        if node.domain == DOMAIN and node.op_type in weights:
            if takes and node.op_type in takes:
                del node.input[takes[node.op_type]:]
            node.input.extend(weights[node.op_type])
        for g in subgraphs(node):
            bind_weights(g.node, weights, takes)


def _noise_functions(implementation, present: set[str]) -> list[onnx.FunctionProto]:
    """One renamed copy of `implementation` per noise op, and the functions it calls not yet `present`."""
    functions = []
    for name in NOISE_INPUTS:
        function = onnx.FunctionProto()
        function.CopyFrom(implementation.to_function_proto())
        function.name = name
        functions.append(function)
    for callee in implementation.function_ir.get_called_functions().values():
        if callee.name not in present:
            present.add(callee.name)
            functions.append(callee.to_function_proto())
    return functions


def _noise_graph_inputs() -> list[onnx.ValueInfoProto]:
    """q (Dq, B, N, V) and u (D, B, N) per stage; Dq may be short of D (argmax steps read no q)."""
    inputs = []
    for op_name, (q, u) in NOISE_INPUTS.items():
        n = f"{op_name.removesuffix('_noise')}_N"
        inputs.append(helper.make_tensor_value_info(q, onnx.TensorProto.FLOAT, [f"{q}_D", "B", n, "V"]))
        inputs.append(helper.make_tensor_value_info(u, onnx.TensorProto.FLOAT, [f"{u}_D", "B", n]))
    return inputs


def assemble(codec: Codec, coarse, c2f, metadata: dict[str, str] | None = None,
             components: dict[str, onnx.ModelProto] | None = None, noise_inputs: bool = False,
             inline: bool = True, weights: str = "float32", codec_window: int | None = None) -> onnx.ModelProto:
    """The single model. `noise_inputs=True` (tests only): the sampling noise comes from the extra
    inputs NOISE_INPUTS instead of the seeded PRNG (graphs/stages.py, `injected_noise`).
    `inline=False` (the inlining benchmark only) keeps the local functions, as onnxruntime reads them.
    `weights="int8"`: the transformers' and the codec decoder's weights in int8 (builder/quantize.py), opset INT8_OPSET;
    "int8-dynamic": the same with int8 activations (opset 20); "web": int8-dynamic with the weights
    left in the main graph, where onnxruntime-web reads them; `components` given are quantized in place.
    `codec_window` (tests only): frames per codec window instead of the codec's own choice."""
    if weights not in interface.WEIGHTS or (weights != "float32" and not inline):
        raise ValueError(f"weights={weights!r} (inline={inline}): one of {interface.WEIGHTS}, int8 only inlined")
    config = graph_config(codec, coarse, c2f, codec_window)
    if weights != "float32" and config.adapters and getattr(coarse, "adapter_fold", False):
        raise ValueError("int8 weights need adapters computed beside the weights: load the transformers "
                         "with fold=False (builder/transformer.py, AdapterLinear)")
    components = components or export_components(codec, coarse, c2f)
    # main-graph names of the transformers' int8 weights and scales
    quantized = quantize_components(components, weights) if weights != "float32" else []

    main = main_graph(config)
    check_function_names(main)
    model = main.to_model_proto()
    model = onnx.inliner.inline_selected_functions(model, [(DOMAIN, s) for s in STAGES])
    functions = [f for f in model.functions if f.name not in STAGES]
    functions += _noise_functions(injected_noise if noise_inputs else prng_noise, {f.name for f in functions})
    if noise_inputs:
        model.graph.input.extend(_noise_graph_inputs())

    component_fns, outer_weights, weight_names = component_functions(components)
    functions += component_fns
    if noise_inputs:
        weight_names.update({op_name: list(names) for op_name, names in NOISE_INPUTS.items()})
    bind_weights(model.graph.node, weight_names, {name: len(c.graph.input) for name, c in components.items()})
    del model.functions[:]
    model.functions.extend(functions)
    check_signature(model.graph, noise_inputs)
    for output in model.graph.output[1:]:  # the four code tensors: (B, n_codebooks, T)
        output.type.tensor_type.shape.dim[1].dim_value = config.n_codebooks
    model.graph.initializer.extend(outer_weights)
    if inline:
        model = ship(model, {(DOMAIN, name): [v.type for v in c.graph.output] for name, c in components.items()},
                     opset=INT8_OPSET if weights == "int8" else OPSET_VERSION)
        if weights != WEB:  # onnxruntime-web reads no external data of a body's initializers
            move_into_bodies(model, quantized)  # where onnxruntime fuses them (builder/quantize.py)
    else:
        make_portable(model)

    props = {
        "format_version": interface.FORMAT_VERSION,
        "sample_rate": config.sample_rate,
        "hop_length": config.hop_length,
        "n_codebooks": config.n_codebooks,
        "n_coarse_codebooks": config.n_coarse,
        "vocab_size": config.vocab_size,
        "mask_token": config.vocab_size,
        "coarse_chunk_frames": config.coarse_chunk,
        "c2f_chunk_frames": config.c2f_chunk,
        "codec_window_frames": config.codec_window,
        "codec_overlap_frames": config.codec_overlap,
        "max_sampling_steps": interface.MAX_SAMPLING_STEPS,
        "weights": weights,
        **({"requires": f"opset {INT8_OPSET} (onnxruntime >= 1.18)"} if weights == "int8" else {}),
        "defaults": interface.defaults_json(),
        "presets": interface.presets_json(),
        **({"adapters": json.dumps(list(adapter_names(coarse)))} if config.adapters else {}),
        **(metadata or {}),
    }
    if noise_inputs:
        props["noise_inputs"] = ", ".join(name for names in NOISE_INPUTS.values() for name in names)
    helper.set_model_props(model, {k: str(v) for k, v in props.items()})
    model.producer_name = "vampnet-onnx"
    model.doc_string = "VampNet as one ONNX model: audio (B, S) at 44.1 kHz in, generated audio out."
    return model
