"""A small stand-in with EXACTLY the model's interface (vampnet_onnx/interface.py), for host-side
(CLI) tests.

Built with onnx.helper in the test process only, from the interface table: every input a plain
graph input (parameters of shape (1,)), defaults in the metadata. Outputs have the real shapes
(T = ceil(S / 768)).

What it computes (nothing musical; designed so tests can see each input reach the model):

* ``codes`` (B,14,T): from the mean |audio| per 768-sample frame, offset per codebook, mod 1024.
* ``mask_out`` (B,14,T): the given ``mask`` (broadcast over rows) if it is non-empty, else a mask
  built from the parameters: 1 where codebook >= upper_codebook_mask, or where periodic_prompt
  is 0, or where the frame index is not a multiple of periodic_prompt.
* ``codes_out`` = (codes + mask_out * (1 + seed mod 7)) mod 1024; ``coarse_codes`` = codes_out
  on codebooks 0-3, codes elsewhere.
* ``audio_out`` = audio + 0.02 * sin(0.05 n + phase_row), where phase_row is a weighted sum of
  every scalar input (each with its own weight), of ``seed mod 100003``, of the mask_out mean
  and of the row index. A tone of fixed amplitude: loudness barely moves, yet any changed input
  (or a different row) changes the waveform, which survives the host's loudness matching.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vampnet_onnx.interface import FORMAT_VERSION, INPUTS, PARAMETERS

HOP = 768
N_CODEBOOKS = 14

# (name, onnx dtype kind, default) in interface order, from the one table
SCALARS = [(p.name, "int" if p.is_int else "float", p.default) for p in PARAMETERS]
DEFAULTS = {name: value for name, _, value in SCALARS}


def make_stub_model(*, with_defaults_metadata: bool = True, ballast: int = 0):
    """The stub as an onnx.ModelProto (``ballast``: an extra all-zero float initializer of that
    many elements feeding a zero term, so that external-data saving has something to move)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    F, I = TensorProto.FLOAT, TensorProto.INT64
    nodes = []
    inits = []

    def const(name, value, dtype):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(op, inputs, output, **attrs):
        nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    # ---- graph inputs, in the interface's order; each (1,) parameter squeezed to a scalar `<name>_v`
    graph_inputs = []
    for i in INPUTS:
        shape = {"audio": ["B", "S"], "mask": ["mask_B", "mask_K", "mask_T"]}.get(i.name, [1])
        graph_inputs.append(helper.make_tensor_value_info(i.name, I if i.is_int else F, shape))
    for name, _, _ in SCALARS:
        node("Squeeze", [name], f"{name}_v")

    # ---- shapes
    c0 = const("c_0", [0], np.int64)
    c1 = const("c_1", [1], np.int64)
    c2 = const("c_2", [2], np.int64)
    c4 = const("c_4", [4], np.int64)
    c14 = const("c_14", [N_CODEBOOKS], np.int64)
    chop = const("c_hop", HOP, np.int64)
    node("Shape", ["audio"], "shp")
    node("Slice", ["shp", c0, c1], "B1")  # (1,)
    node("Slice", ["shp", c1, c2], "S1")  # (1,)
    node("Squeeze", ["B1"], "Bs")
    node("Squeeze", ["S1"], "Ss")
    # pad = (hop - S % hop) % hop ; T = (S + pad) / hop
    node("Mod", ["Ss", chop], "Smod")
    node("Sub", [chop, "Smod"], "pad0")
    node("Mod", ["pad0", chop], "pad")
    node("Add", ["Ss", "pad"], "Sp")
    node("Div", ["Sp", chop], "Ts")
    node("Unsqueeze", ["Ts", c0], "T1")
    node("Unsqueeze", ["pad", c0], "pad1")
    node("Concat", [c0, c0, c0, "pad1"], "pads", axis=0)
    node("Pad", ["audio", "pads"], "audio_p")
    node("Concat", ["B1", const("c_m1", [-1], np.int64), const("c_hopv", [HOP], np.int64)],
         "fshape", axis=0)
    node("Reshape", ["audio_p", "fshape"], "frames")  # (B, T, hop)
    node("Abs", ["frames"], "fabs")
    node("ReduceMean", ["fabs", c2], "energy", keepdims=0)  # (B, T)

    # ---- codes (B, 14, T)
    node("Mul", ["energy", const("c_1000", 1000.0, np.float32)], "e1000")
    node("Floor", ["e1000"], "efl")
    node("Cast", ["efl"], "eint", to=I)
    node("Unsqueeze", ["eint", c1], "eint3")  # (B,1,T)
    cb = const("cb", np.arange(N_CODEBOOKS, dtype=np.int64).reshape(1, N_CODEBOOKS, 1), np.int64)
    node("Mul", [cb, const("c_37", 37, np.int64)], "cboff")
    node("Add", ["eint3", "cboff"], "codes_raw")
    c1024 = const("c_1024", 1024, np.int64)
    node("Mod", ["codes_raw", c1024], "codes")

    # ---- mask built from the parameters (1,14,T)
    node("Range", [const("c_s0", 0, np.int64), "Ts", const("c_s1", 1, np.int64)], "t_idx")
    node("Reshape", ["t_idx", const("c_t3", [1, 1, -1], np.int64)], "t3")
    node("Max", ["periodic_prompt_v", const("c_one", 1, np.int64)], "Pm")
    node("Mod", ["t3", "Pm"], "tmod")
    node("Equal", ["tmod", const("c_zero", 0, np.int64)], "anchor")
    node("Not", ["anchor"], "not_anchor")
    node("Equal", ["periodic_prompt_v", "c_zero"], "p_off")
    node("Or", ["not_anchor", "p_off"], "m_time")
    node("GreaterOrEqual", [cb, "upper_codebook_mask_v"], "m_cb")
    node("Or", ["m_time", "m_cb"], "m_built_b")
    node("Cast", ["m_built_b"], "m_built", to=I)
    node("Concat", ["B1", c14, "T1"], "shape_b14t", axis=0)
    node("Expand", ["m_built", "shape_b14t"], "m_built_x")  # (B,14,T)
    # ---- given mask, if non-empty: Expand to (B,14,0|T), concat with built, keep the first T
    node("Concat", ["B1", c14, c1], "shape_b141", axis=0)
    node("Expand", ["mask", "shape_b141"], "mask_x")
    node("Concat", ["mask_x", "m_built_x"], "mask_cat", axis=2)
    node("Slice", ["mask_cat", c0, "T1", c2], "mask_out")

    # ---- codes_out, coarse_codes
    node("Mod", ["seed_v", const("c_7", 7, np.int64)], "seed7")
    node("Add", ["seed7", "c_one"], "seed7p")
    node("Mul", ["mask_out", "seed7p"], "bump")
    node("Add", ["codes", "bump"], "codes_out_raw")
    node("Mod", ["codes_out_raw", c1024], "codes_out")
    node("Slice", ["codes_out", c0, c4, c1], "co_coarse")
    node("Slice", ["codes", c4, c14, c1], "c_fine")
    node("Concat", ["co_coarse", "c_fine"], "coarse_codes", axis=1)

    # ---- audio_out
    terms = []
    for k, (name, kind, _) in enumerate(SCALARS):
        if name == "seed":
            node("Mod", ["seed_v", const("c_100003", 100003, np.int64)], "seed_m")
            node("Cast", ["seed_m"], "seed_f", to=F)
            src = "seed_f"
        elif kind == "int":
            src = node("Cast", [f"{name}_v"], f"{name}_f", to=F)
        else:
            src = f"{name}_v"
        w = 0.1 + 0.37 * (k + 1) ** 0.5  # distinct, incommensurate weights
        terms.append(node("Mul", [src, const(f"w_{name}", w, np.float32)], f"term_{name}"))
    node("Cast", ["mask_out"], "mask_f", to=F)
    node("ReduceMean", ["mask_f"], "mask_mean", keepdims=0)
    terms.append(node("Mul", ["mask_mean", const("w_mask", 1.3, np.float32)], "term_mask"))
    if ballast:
        const("ballast", np.zeros(ballast, np.float32), np.float32)
        terms.append(node("ReduceSum", ["ballast"], "term_ballast", keepdims=0))
    node("Sum", terms, "phase0")
    node("Range", [const("c_f0", 0.0, np.float32), node("Cast", ["Bs"], "Bf", to=F),
                   const("c_f1", 1.0, np.float32)], "rows")
    node("Unsqueeze", ["rows", c1], "rows2")  # (B,1)
    node("Mul", ["rows2", const("w_row", 0.9, np.float32)], "row_phase")
    node("Add", ["row_phase", "phase0"], "phase")  # (B,1)
    node("Range", ["c_f0", node("Cast", ["Ss"], "Sf", to=F), "c_f1"], "n")
    node("Unsqueeze", ["n", c0], "n2")  # (1,S)
    node("Mul", ["n2", const("omega", 0.05, np.float32)], "wn")
    node("Add", ["wn", "phase"], "arg")
    node("Sin", ["arg"], "tone")
    node("Mul", ["tone", const("amp", 0.02, np.float32)], "tone_a")
    node("Add", ["audio", "tone_a"], "audio_out")

    outputs = [
        helper.make_tensor_value_info("audio_out", F, ["B", "S"]),
        helper.make_tensor_value_info("codes", I, ["B", N_CODEBOOKS, "T"]),
        helper.make_tensor_value_info("mask_out", I, ["B", N_CODEBOOKS, "T"]),
        helper.make_tensor_value_info("coarse_codes", I, ["B", N_CODEBOOKS, "T"]),
        helper.make_tensor_value_info("codes_out", I, ["B", N_CODEBOOKS, "T"]),
    ]
    graph = helper.make_graph(nodes, "vampnet_stub", graph_inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                              producer_name="vampnet-onnx-stub")
    model.ir_version = 8
    meta = {
        "format_version": FORMAT_VERSION,
        "stub": "true",
        "sample_rate": "44100",
        "hop_length": str(HOP),
        "n_codebooks": str(N_CODEBOOKS),
        "n_coarse_codebooks": "4",
        "max_sampling_steps": "128",
        "vocab_size": "1024",
        "mask_token": "1024",
        "coarse_chunk_frames": "575",
        "c2f_chunk_frames": "173",
    }
    if with_defaults_metadata:
        meta["defaults"] = json.dumps(DEFAULTS)
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    return model


def build_stub_model(path, *, with_defaults_metadata: bool = True, external_data: bool = False) -> Path:
    """Write the stub to ``path`` (optionally with its initializers in ``<path>.data``)."""
    import onnx

    path = Path(path)
    model = make_stub_model(with_defaults_metadata=with_defaults_metadata,
                            ballast=4096 if external_data else 0)
    if external_data:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
    else:
        onnx.save_model(model, str(path))
    return path


def reference(audio: np.ndarray, mask: np.ndarray | None = None, **inputs) -> dict[str, np.ndarray]:
    """The stub's outputs in numpy (for checking the stub itself)."""
    p = dict(DEFAULTS)
    p.update(inputs)
    B, S = audio.shape
    T = -(-S // HOP)
    padded = np.pad(audio, ((0, 0), (0, T * HOP - S)))
    energy = np.abs(padded.reshape(B, T, HOP)).mean(axis=2)
    cbs = np.arange(N_CODEBOOKS).reshape(1, -1, 1)
    codes = (np.floor(energy * np.float32(1000)).astype(np.int64)[:, None, :] + cbs * 37) % 1024
    if mask is not None and mask.shape[-1] > 0:
        mask_out = np.broadcast_to(mask, (B, N_CODEBOOKS, T)).astype(np.int64)
    else:
        P = p["periodic_prompt"]
        t = np.arange(T).reshape(1, 1, -1)
        built = ((t % max(P, 1)) != 0) | (P == 0) | (cbs >= p["upper_codebook_mask"])
        mask_out = np.broadcast_to(built, (B, N_CODEBOOKS, T)).astype(np.int64)
    codes_out = (codes + mask_out * (1 + p["seed"] % 7)) % 1024
    coarse = np.concatenate([codes_out[:, :4], codes[:, 4:]], axis=1)
    return {"codes": codes, "mask_out": mask_out, "coarse_codes": coarse, "codes_out": codes_out}
