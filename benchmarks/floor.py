"""Compute floor: how close each stage of the model comes to this CPU's float32 matmul rate, at real size.

    python -m benchmarks.floor [--dir artifacts/realsize] [--seconds 10] [--threads 2] [--json FILE]
    python -m benchmarks.floor --gemm-only   # just this CPU's GEMM rates, and which --weights to build

Uses the real-size build of `python -m benchmarks.realsize` in DIR, the clip and the work of
`python -m benchmarks.benchmark` (encode, 12 coarse forwards, 2 c2f forwards per chunk, decode).
Per stage it reports:
  GFLOP      the matmul, convolution and einsum work of the clip, counted by torch's FlopCounterMode
             on the eager modules: one forward per input shape the clip uses, times its calls;
  eager      seconds of one PyTorch eager run (`TorchVamp`), from forward hooks on its four modules;
  ORT        seconds of one onnxruntime run under its profiler (`profile`, a little above a plain run);
  floor      GFLOP / this CPU's float32 GEMM rate: the better of onnxruntime and torch on one
             (575 × 1280) @ (1280 × 5120) product, a coarse feed-forward's, with the same threads
             (measured before and after the runs, the best kept: other processes may share the CPU);
  % of floor floor / ORT seconds: 100 % would be the stage's work done at GEMM speed;
and, from the same profile, each stage's top op types by share of its time.
It also times the same GEMM with 8- and 4-bit weights (onnxruntime's MatMulNBits, float or int8
multiplies) and with int8 weights and int8 activations (DynamicQuantizeMatMul): what fewer bits
could buy on this CPU. `--gemm-only` ends with the kernels ranked and the `build --weights` choice
(float32, int8 or int8-dynamic) whose kernel ran fastest here.
"Everything else" (sampling, masks, the runtime's loops and copies) has no matmul work, so no floor.
The floor is a lower bound: the graph codes in windows (≤ 5 % more codec work than the eager
whole-clip run counted here), and the elementwise work between the matmuls is left out.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from functools import partial
from pathlib import Path

from benchmarks.benchmark import (WARMUP_SECONDS, TorchVamp, _cpu_name, add_clip_arguments, ensure_build, op_type_lines,
                                  profile, torch_setup, write_json)
from benchmarks.realsize import SAMPLE_RATE, test_signal

# the ORT stages and the TorchVamp modules that do the same work
STAGE_MODULES = {"encode": "encoder", "coarse transformer": "coarse", "c2f transformer": "c2f", "decode": "decoder"}
OTHER, TOTAL = "everything else", "total"
ROWS = [*STAGE_MODULES, OTHER, TOTAL]
GEMM = (575, 1280, 5120)  # (M, K, N): a coarse forward's first feed-forward matmul, T × E @ E × 4E
GEMM_REPS = 10
LOWBIT_BLOCK = 128  # as `build --weights int8` quantizes


# ---------------------------------------------------------------------------------------------------------
# This CPU's GEMM rate


def best_rate(fn, flop: float, reps: int = GEMM_REPS) -> float:
    """GFLOP/s of the fastest of `reps` calls, after two warm-up calls (thread pools, prepacking)."""
    fn(), fn()
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return flop / best / 1e9


def ort_gemm_rate(threads: int, bits: int | None = None, accuracy_level: int = 0) -> float:
    """One MatMul node, the weight an initializer as in the model; with `bits` (8 or 4), the weight
    read through blocked DequantizeLinear, which onnxruntime fuses into MatMulNBits, multiplying in
    float (`accuracy_level` 0) or in int8 (4)."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from vampnet_onnx.builder.quantize import OPSET as LOWBIT_OPSET
    from vampnet_onnx.graphs.opsets import OPSET_VERSION

    m, k, n = GEMM
    rng = np.random.default_rng(0)
    w = rng.standard_normal((k, n), dtype=np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"])]
    if bits is None:
        weights, opset = [numpy_helper.from_array(w, "W")], OPSET_VERSION
    else:
        block, top = LOWBIT_BLOCK, (1 << (bits - 1)) - 1
        scale = np.abs(w.reshape(k // block, block, n)).max(axis=1) / top
        q = np.clip(np.rint(w / np.repeat(scale, block, axis=0)), -top, top).astype(np.int8)
        q_tensor = (numpy_helper.from_array(q, "q") if bits == 8 else
                    helper.make_tensor("q", TensorProto.INT4, [k, n], q.flatten().tolist()))
        weights, opset = [q_tensor, numpy_helper.from_array(scale.astype(np.float32), "scale")], LOWBIT_OPSET
        nodes.insert(0, helper.make_node("DequantizeLinear", ["q", "scale"], ["W"], axis=0, block_size=block))
    graph = helper.make_graph(nodes, "gemm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, m, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, m, n])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", str(accuracy_level))
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = rng.standard_normal((1, m, k), dtype=np.float32)
    return best_rate(lambda: session.run(["y"], {"x": x}), 2 * m * k * n)


DYNAMIC = "int8 weights and activations (DynamicQuantizeMatMul)"
# `--gemm-only`'s advice: the kernel each `build --weights` choice runs (4-bit has no build option)
WEIGHTS_KERNELS = {"float32": "onnxruntime", "int8": "int8, accuracy level 4", "int8-dynamic": DYNAMIC}


def dynamic_int8_gemm_rate(threads: int) -> float:
    """The same product with int8 activations too: x quantized at run time (DynamicQuantizeLinear,
    uint8, one scale per tensor), times int8 weights with one scale per column (MatMulInteger),
    scaled back to float; onnxruntime fuses the four standard ops into its DynamicQuantizeMatMul,
    which multiplies uint8 × int8 (VNNI's vpdpbusd where the CPU has it). The weights are the
    build's (7-bit, builder/quantize.py says why)."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from vampnet_onnx.builder.quantize import quantize_columns
    from vampnet_onnx.graphs.opsets import OPSET_VERSION

    m, k, n = GEMM
    rng = np.random.default_rng(0)
    q, scale = quantize_columns(rng.standard_normal((k, n), dtype=np.float32))
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
             helper.make_node("MatMulInteger", ["xq", "q", "xz", "qz"], ["acc"]),
             helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["xs", "scale"], ["s"]),
             helper.make_node("Mul", ["accf", "s"], ["y"])]
    weights = [numpy_helper.from_array(q, "q"), numpy_helper.from_array(np.zeros(n, np.int8), "qz"),
               numpy_helper.from_array(scale, "scale")]
    graph = helper.make_graph(nodes, "gemm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, m, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, m, n])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET_VERSION)])
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = rng.standard_normal((1, m, k), dtype=np.float32)
    return best_rate(lambda: session.run(["y"], {"x": x}), 2 * m * k * n)


def lowbit_rates(threads: int) -> dict:
    """The same product in onnxruntime with 8- and 4-bit weights (float or int8 multiplies), and
    with int8 weights and int8 activations: what fewer bits buy here."""
    rates = {f"int{bits}, accuracy level {level}": ort_gemm_rate(threads, bits, level)
             for bits in (8, 4) for level in (0, 4)}
    rates[DYNAMIC] = dynamic_int8_gemm_rate(threads)
    print("low-bit GEMM " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in rates.items()), flush=True)
    return rates




def fastest(rates: dict) -> str:
    """Which `--weights` runs fastest on this CPU, from the GEMM rates of `gemm_rates` and `lowbit_rates`."""
    choice = max(WEIGHTS_KERNELS, key=lambda w: rates[WEIGHTS_KERNELS[w]])
    ranked = sorted(rates.items(), key=lambda kv: -kv[1])
    lines = ["fastest kernels here: " + ", ".join(f"{k} {v:.0f}" for k, v in ranked) + " GFLOP/s",
             f"build for this CPU: vampnet-onnx build --weights {choice} "
             f"({rates[WEIGHTS_KERNELS[choice]] / rates['onnxruntime']:.2f}x float32's GEMM rate)"]
    return "\n".join(lines)


def torch_gemm_rate() -> float:
    """The same product with torch.matmul (threads as set by torch_setup)."""
    import torch

    m, k, n = GEMM
    x, w = torch.randn(1, m, k), torch.randn(k, n)
    with torch.inference_mode():
        return best_rate(lambda: torch.matmul(x, w), 2 * m * k * n)


def gemm_rates(threads: int) -> dict:
    rates = {"onnxruntime": ort_gemm_rate(threads), "torch": torch_gemm_rate()}
    print("float32 GEMM " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in rates.items()), flush=True)
    return rates


# ---------------------------------------------------------------------------------------------------------
# The eager run: seconds per module, and the inputs to count FLOPs on afterwards


class StageHooks:
    """Forward hooks on modules: seconds and calls per module, and one input per distinct input shape
    (kept so that the FLOPs are counted after the run, not during it)."""

    def __init__(self, modules: dict):
        self.seconds = dict.fromkeys(modules, 0.0)
        self.inputs = {name: {} for name in modules}  # name -> {shapes: [args, calls]}
        self._t0 = {}
        self.handles = []
        for name, module in modules.items():
            self.handles.append(module.register_forward_pre_hook(partial(self._start, name)))
            self.handles.append(module.register_forward_hook(partial(self._stop, name)))

    def _start(self, name, module, args):
        shapes = tuple(tuple(a.shape) for a in args)
        seen = self.inputs[name].setdefault(shapes, [None, 0])
        if seen[0] is None:
            seen[0] = tuple(a.clone() for a in args)
        seen[1] += 1
        self._t0[name] = time.perf_counter()  # last, so the copy above is not timed

    def _stop(self, name, module, args, output):
        self.seconds[name] += time.perf_counter() - self._t0[name]

    def remove(self):
        for h in self.handles:
            h.remove()


def count_gflop(module, inputs: dict) -> list[dict]:
    """GFLOP of one forward per recorded input shape (FlopCounterMode: matmuls, convolutions, einsums)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    per_shape = []
    for shapes, (args, calls) in inputs.items():
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            module(*args)
        per_shape.append({"input_shapes": [list(s) for s in shapes], "calls": calls,
                          "gflop_per_call": counter.get_total_flops() / 1e9})
    return per_shape


def eager(folder: Path, seconds: float) -> dict:
    vamp = TorchVamp(folder / "checkpoints")
    vamp(test_signal(WARMUP_SECONDS, seed=1))  # warm-up, before the hooks
    modules = {stage: getattr(vamp, name) for stage, name in STAGE_MODULES.items()}
    hooks = StageHooks(modules)
    t0, cpu0 = time.perf_counter(), time.process_time()
    vamp(test_signal(seconds))
    total = time.perf_counter() - t0
    # below 1: this run's threads waited for the CPU (other processes on the machine)
    cpu_share = (time.process_time() - cpu0) / (total * vamp.torch.get_num_threads())
    hooks.remove()
    print(f"eager run: {total:.1f} s; counting FLOPs", flush=True)
    forwards = {stage: count_gflop(modules[stage], hooks.inputs[stage]) for stage in modules}
    return {"seconds": hooks.seconds, "total": total, "cpu_share": cpu_share, "forwards": forwards,
            "gflop": {stage: sum(f["gflop_per_call"] * f["calls"] for f in fs) for stage, fs in forwards.items()}}


# ---------------------------------------------------------------------------------------------------------


def with_rest(per_stage: dict, total: float) -> dict:
    """The four stages, "everything else" (the total less them) and the total."""
    return {**per_stage, OTHER: total - sum(per_stage.values()), TOTAL: total}


def floor(folder: Path, seconds: float, threads: int) -> dict:
    import onnxruntime as ort

    ensure_build(folder)
    load_before = os.getloadavg()
    torch = torch_setup(threads)
    rates_before = gemm_rates(threads)

    e = eager(folder, seconds)
    load_after_eager = os.getloadavg()
    p = profile(folder / "vampnet.onnx", seconds, threads)  # after the eager modules are freed
    print(f"profiled ONNX run: {p['total']:.1f} s", flush=True)
    rates_after = gemm_rates(threads)
    lowbit = lowbit_rates(threads)
    # the other processes on the machine slow down some measurements: the best one is the CPU's rate
    rates = {k: max(rates_before[k], rates_after[k]) for k in rates_before}
    rate = max(rates.values())

    gflop = {**e["gflop"], OTHER: None, TOTAL: sum(e["gflop"].values())}
    floor_s = {k: None if g is None else g / rate for k, g in gflop.items()}
    ort_s = with_rest({stage: p["seconds"][stage] for stage in STAGE_MODULES}, p["total"])
    return {
        "seconds_of_audio": seconds,
        "samples": int(round(seconds * SAMPLE_RATE)),
        "frames": math.ceil(round(seconds * SAMPLE_RATE) / 768),
        "threads": threads,
        "gemm": {"shape_mkn": list(GEMM), "gflop_per_s": rates, "used": rate,
                 "before": rates_before, "after": rates_after, "onnxruntime_low_bit": lowbit},
        "gflop": gflop,
        "forwards": e["forwards"],
        "eager_s": with_rest(e["seconds"], e["total"]),
        "eager_cpu_share": e["cpu_share"],
        "ort_s": ort_s,
        "ort_profile": p,
        "floor_s": floor_s,
        "ort_share_of_floor": {k: None if f is None else f / ort_s[k] for k, f in floor_s.items()},
        "load_average_before": load_before,
        "load_average_after_eager": load_after_eager,
        "load_average_after": os.getloadavg(),
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__, "python": platform.python_version()},
        "cpu": _cpu_name(),
        "command": "python -m benchmarks.floor " + " ".join(sys.argv[1:]),
    }


def _gflop_cell(r: dict, row: str) -> str:
    g = r["gflop"][row]
    if g is None:
        return "—"
    fs = r["forwards"].get(row, [])
    if len(fs) == 1 and fs[0]["calls"] > 1:  # one shape, several calls: show the per-forward work
        return f"{g:,.0f} ({fs[0]['calls']} × {fs[0]['gflop_per_call']:,.0f})"
    return f"{g:,.0f}"


def markdown(r: dict) -> str:
    def s(x):
        return "—" if x is None else f"{x:.1f} s"

    rate = r["gemm"]["used"]
    lines = [
        f"Real-size model (random weights, released shapes), {r['seconds_of_audio']:g} s clip "
        f"({r['samples']:,} samples, {r['frames']} frames), {r['threads']} threads, {r['cpu']}. "
        f"float32 GEMM ({' × '.join(map(str, r['gemm']['shape_mkn']))}): "
        + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in r["gemm"]["gflop_per_s"].items())
        + f" (best before/after the runs); the floor uses {rate:.1f} GFLOP/s.",
        "",
        "| stage | GFLOP | PyTorch eager | ONNX Runtime (profiled) | floor | ORT % of floor |",
        "|---|---|---|---|---|---|",
    ]
    for row in ROWS:
        share = r["ort_share_of_floor"][row]
        cells = [_gflop_cell(r, row), s(r["eager_s"][row]), s(r["ort_s"][row]), s(r["floor_s"][row]),
                 "—" if share is None else f"{100 * share:.0f} %"]
        if row == TOTAL:
            cells = [f"**{c}**" for c in cells]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    floor_total, eager_total = r["floor_s"][TOTAL], r["eager_s"][TOTAL]
    half = 0.5 * eager_total
    above = [row for row, share in r["ort_share_of_floor"].items() if share is not None and share > 1]
    if above:  # a stage cannot beat the CPU's rate: the GEMM was measured while the CPU was shared
        lines += ["", f"Above 100 % ({', '.join(above)}): faster than the measured GEMM rate allows, so other "
                      "processes took more of the CPU while the rate was measured than during that stage and "
                      "the floor is too high; measure on an idle machine."]
    lowbit = r["gemm"]["onnxruntime_low_bit"]
    lines += [
        "",
        f"Floor of the clip **{floor_total:.1f} s**, PyTorch eager {eager_total:.1f} s, 0.5 × eager "
        f"**{half:.1f} s**: the goal (ONNX ≤ 0.5 × eager) is {'above' if half >= floor_total else 'below'} "
        f"the compute floor on this machine ({half / floor_total:.2f} × the floor).",
        "",
        "The same GEMM with low-bit weights (onnxruntime's MatMulNBits, block 128): "
        + ", ".join(f"{k} {v:.1f} GFLOP/s ({v / rate:.2f}×)" for k, v in lowbit.items()) + ".",
        "",
        f"torch {r['versions']['torch']}, onnxruntime {r['versions']['onnxruntime']}; load average before "
        f"{r['load_average_before'][0]:.2f}, after the eager run {r['load_average_after_eager'][0]:.2f}, "
        f"after the ONNX run {r['load_average_after'][0]:.2f}; the eager run's threads got "
        f"{100 * r['eager_cpu_share']:.0f} % of their CPU time.",
        "",
        f"Command: `{r['command'].strip()}`",
        "",
        op_type_lines(r["ort_profile"]),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor", description=__doc__.split("\n\n")[0])
    add_clip_arguments(parser)
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--gemm-only", action="store_true",
                        help="only this CPU's GEMM rates (float32, and 8/4-bit weights in onnxruntime), in seconds")
    args = parser.parse_args(argv)
    if args.gemm_only:
        torch_setup(args.threads)
        rates = {**gemm_rates(args.threads), **lowbit_rates(args.threads)}
        print(fastest(rates), f"[{_cpu_name()}, {args.threads} threads]", sep="\n")
        return 0
    result = floor(args.dir, args.seconds, args.threads)
    print()
    print(markdown(result))
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
