"""Benchmark: the single ONNX model against the same work in eager PyTorch, at real size.

    python -m benchmarks.benchmark [--dir artifacts/realsize] [--int8 MODEL] [--reps 3] [--seconds 10] [--threads 2]
    python -m benchmarks.benchmark --profile [--dir artifacts/realsize] [--int8 MODEL]   # seconds per stage

Uses the real-size build of `python -m benchmarks.realsize` in DIR (random weights, released shapes: the
checkpoints in DIR/checkpoints/ and DIR/vampnet.onnx + .data); builds it first if it is not there.

The work for one clip (10 s = 441,000 samples = 575 frames = one coarse chunk):
  encode → 12 coarse forwards (one 575-frame chunk) → 2 c2f forwards per 173-frame chunk
  (4 chunks, the last one padded, as the graph does) → decode, trimmed to the input length.
ONNX: one `session.run` of the model with its default settings (seed 0), intra_op_num_threads=N,
ORT_ENABLE_ALL. PyTorch: the project's own modules (builder/codec.py, builder/transformer.py),
`torch.set_num_threads(N)`, `inference_mode`, with a minimal sampler (softmax, exponential-race
draw, cosine schedule, Gumbel re-masking) in place of the graph's; the forwards dominate either way.

Timings come from one process, the sides interleaved (the order rotates with each repetition) after a
short warm-up of each; medians are reported. Peak memory is measured apart, in
one fresh process per side (load + one run), because in the timing process all sides are resident.

`--profile` runs the model(s) once under onnxruntime's profiler instead and prints the seconds per
stage (encode, each stage's transformer and sampling, decode, the rest), and within the encoder, the
decoder and each transformer the shares of its top op types; the profiler adds a little time per
node, so its total is somewhat above a plain run's.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from vampnet_onnx.paths import data_file
from vampnet_onnx.session import interface_feeds
from benchmarks.realsize import DEFAULT_OUT, OUTPUTS, SAMPLE_RATE, gb, ort_session, peak_rss, reset_peak, rss, test_signal

from vampnet_onnx.graphs.sampling import MASK_TOKEN as MASK  # noqa: E402
COARSE_STEPS, C2F_STEPS = 12, 2
N_COARSE = 4  # the released coarse model's codebooks
MASK_TEMPERATURE = 10.5
WARMUP_SECONDS = 1.0
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------------
# The PyTorch side


class TorchVamp:
    """Encode → coarse vamp → coarse-to-fine → decode with the project's torch modules, eagerly."""

    def __init__(self, checkpoints: Path):
        import torch

        from vampnet_onnx.builder.codec import load_codec
        from vampnet_onnx.builder.transformer import load_transformer

        self.torch = torch
        codec = load_codec(checkpoints / "codec.pth")
        self.coarse = load_transformer(checkpoints / "coarse.pth", codec, "coarse")
        self.c2f = load_transformer(checkpoints / "c2f.pth", codec, "c2f")
        self.encoder, self.decoder = codec.encoder, codec.decoder
        self.hop = codec.config.hop_length
        sr = codec.config.sample_rate
        self.coarse_chunk = math.ceil(10.0 * sr / self.hop)  # upstream's s2t(10) = 575
        self.c2f_chunk = math.ceil(3.0 * sr / self.hop)  # s2t(3) = 173
        self.n_coarse = self.coarse.config.n_codebooks

    def mask(self, codes):
        """Roughly the default mask: keep every 7th frame of the coarse codebooks, generate the rest."""
        torch = self.torch
        m = torch.ones_like(codes)
        m[:, :3, ::7] = 0
        return m

    def generate(self, model, z, mask, steps: int, n_cond: int, gen):
        """VampNet's iterative decoding, minimal: z (B, C, T) with mask (1 = generate)."""
        torch = self.torch
        B, C, T = z.shape
        Cp = C - n_cond
        zm = torch.where(mask == 1, torch.full_like(z, MASK), z)
        n0 = (zm == MASK).sum().item()
        x = z
        for i in range(steps):
            logits = model(zm)  # (B, T·Cp, V)
            probs = torch.softmax(logits, dim=-1)
            q = torch.empty_like(probs).exponential_(1.0, generator=gen)
            tokens = (probs / q).argmax(-1)  # = a multinomial draw
            chosen = probs.gather(-1, tokens[..., None])[..., 0]
            tokens = tokens.view(B, T, Cp).transpose(1, 2)
            chosen = chosen.view(B, T, Cp).transpose(1, 2)
            fine = zm[:, n_cond:]
            masked = fine == MASK
            x_fine = torch.where(masked, tokens, fine)
            x = torch.cat([zm[:, :n_cond], x_fine], dim=1)
            r = (i + 1) / steps
            k = max(0, min(int(math.floor(math.cos(r * math.pi / 2) * n0)), int(masked.sum()) - 1))
            u = torch.rand(chosen.shape, generator=gen).clamp_(1e-20, 1.0)
            conf = torch.log(chosen) + MASK_TEMPERATURE * (1 - r) * -torch.log(-torch.log(u))
            conf = torch.where(masked, conf, torch.full_like(conf, math.inf))
            if k > 0:
                cut = conf.flatten().sort().values[k]
                remask = conf < cut
            else:
                remask = torch.zeros_like(masked)
            zm = torch.cat([zm[:, :n_cond], torch.where(remask, torch.full_like(x_fine, MASK), x_fine)], dim=1)
        return x

    def __call__(self, audio, seed: int = 0) -> dict:
        torch = self.torch
        gen = torch.Generator().manual_seed(seed)
        with torch.inference_mode():
            a = torch.from_numpy(audio)
            S = a.shape[1]
            frames = max(1, -(-S // self.hop))
            padded = torch.nn.functional.pad(a, (0, frames * self.hop - S))[:, None]
            codes = self.encoder(padded)  # (B, 14, T)
            mask = self.mask(codes)
            # coarse: chunks of 575 frames, the first 4 codebooks
            pieces = []
            for start in range(0, frames, self.coarse_chunk):
                sl = slice(start, start + self.coarse_chunk)
                pieces.append(self.generate(self.coarse, codes[:, :self.n_coarse, sl],
                                            mask[:, :self.n_coarse, sl], COARSE_STEPS, 0, gen))
            coarse_codes = torch.cat([torch.cat(pieces, dim=2), codes[:, self.n_coarse:]], dim=1)
            # c2f: chunks of 173 frames, the tail padded with token 0 and generated, then cropped
            n_chunks = -(-frames // self.c2f_chunk)
            tail = n_chunks * self.c2f_chunk - frames
            z = torch.nn.functional.pad(coarse_codes, (0, tail), value=0)
            m = torch.nn.functional.pad(mask, (0, tail), value=1)
            m[:, :self.n_coarse] = 0
            pieces = []
            for c in range(n_chunks):
                sl = slice(c * self.c2f_chunk, (c + 1) * self.c2f_chunk)
                pieces.append(self.generate(self.c2f, z[:, :, sl], m[:, :, sl], C2F_STEPS, self.n_coarse, gen))
            codes_out = torch.cat(pieces, dim=2)[:, :, :frames]
            out = self.decoder(codes_out)[:, 0, :S]
        return {"audio_out": out.numpy(), "codes": codes.numpy(), "codes_out": codes_out.numpy()}


def torch_setup(threads: int):
    import torch

    torch.set_num_threads(threads)
    return torch


# ---------------------------------------------------------------------------------------------------------
# The ONNX side


class OrtVamp:
    def __init__(self, model: Path, threads: int):
        self.session = ort_session(model, threads)

    def __call__(self, audio, seed: int = 0, **inputs) -> dict:
        out = self.session.run(list(OUTPUTS), interface_feeds(audio, seed=seed, **inputs))
        return dict(zip(OUTPUTS, out))


# argmax at every step, re-masking by confidence alone (the fixtures' deterministic settings)
DETERMINISTIC = dict(sample_cutoff=-1.0, mask_temperature=0.0, c2f_sample_cutoff=-1.0, c2f_mask_temperature=0.0)


def token_agreement(reference: dict, other: dict) -> dict:
    """The share of generated tokens (mask_out == 1) that are equal, coarse and fine codebooks apart."""
    generated = reference["mask_out"] == 1
    same = reference["codes_out"] == other["codes_out"]
    c = N_COARSE
    return {"coarse": float(same[:, :c][generated[:, :c]].mean()), "fine": float(same[:, c:][generated[:, c:]].mean())}


# ---------------------------------------------------------------------------------------------------------


def _timed(fn, *args):
    t0 = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - t0, result


def _check(name: str, out: dict, audio) -> None:
    import numpy as np

    a = out["audio_out"]
    if a.shape != audio.shape or not np.isfinite(a).all():
        raise RuntimeError(f"{name}: output {a.shape}, finite={np.isfinite(a).all()}")


def measure_memory(side: str, folder: Path, seconds: float, threads: int, model: Path | None = None) -> dict:
    """In this (fresh) process: load one side, run it once; load time, run time and peak RSS."""
    reset_peak()
    base = rss()
    if side == "torch":
        torch_setup(threads)
        load_s, runner = _timed(TorchVamp, folder / "checkpoints")
    else:
        load_s, runner = _timed(OrtVamp, model or folder / "vampnet.onnx", threads)
    loaded, load_peak = rss(), peak_rss()
    audio = test_signal(seconds)
    run_s, out = _timed(runner, audio)
    _check(side, out, audio)
    return {"side": side, "load_s": round(load_s, 2), "run_s": round(run_s, 2), "rss_start": base,
            "rss_after_load": loaded, "peak_rss_load": load_peak, "peak_rss": peak_rss()}


def memory_subprocess(side: str, folder: Path, seconds: float, threads: int, model: Path | None = None) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.benchmark", "--dir", str(folder), "--seconds", str(seconds),
           "--threads", str(threads), "--memory", side] + (["--int8", str(model)] if model else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"memory measurement of {side} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ensure_build(folder: Path) -> None:
    needed = [folder / "vampnet.onnx", *(folder / "checkpoints" / f"{n}.pth" for n in ("codec", "coarse", "c2f"))]
    if all(p.exists() for p in needed):
        return
    print(f"no real-size build in {folder}: running python -m benchmarks.realsize --out {folder} --reuse", flush=True)
    subprocess.run([sys.executable, "-m", "benchmarks.realsize", "--out", str(folder), "--reuse"], cwd=REPO, check=True)


def benchmark(folder: Path, reps: int, seconds: float, threads: int, memory: bool = True,
              int8: Path | None = None) -> dict:
    """`int8`: also an int8 build (`vampnet-onnx build --weights int8`) of the same checkpoints."""
    import numpy as np

    ensure_build(folder)
    load_before = os.getloadavg()
    torch = torch_setup(threads)
    models = {"ort": folder / "vampnet.onnx", **({"ort_int8": int8} if int8 else {})}
    runners, load_s = {}, {}
    load_s["torch"], runners["torch"] = _timed(TorchVamp, folder / "checkpoints")
    for name, path in models.items():
        load_s[name], runners[name] = _timed(OrtVamp, path, threads)
    print("loaded: " + ", ".join(f"{k} {v:.1f} s" for k, v in load_s.items()) + f"; RSS {gb(rss())}", flush=True)

    warm = test_signal(WARMUP_SECONDS, seed=1)
    for name, fn in runners.items():
        s, out = _timed(fn, warm)
        _check(name, out, warm)
        print(f"warm-up {name} ({WARMUP_SECONDS:g} s clip): {s:.2f} s", flush=True)

    audio = test_signal(seconds)
    times: dict[str, list[float]] = {name: [] for name in runners}
    loads: list[tuple[float, float, float]] = []
    outputs = {}
    for rep in range(reps):
        for name in list(runners)[rep % len(runners):] + list(runners)[:rep % len(runners)]:  # rotated
            s, out = _timed(runners[name], audio)
            _check(name, out, audio)
            outputs[name] = out
            times[name].append(s)
            loads.append(os.getloadavg())
            print(f"rep {rep} {name:8s} {s:6.2f} s  (load average {loads[-1][0]:.2f})", flush=True)
    same_codes = float((outputs["ort"]["codes"] == outputs["torch"]["codes"]).mean())
    agreement = {}
    if int8:
        agreement["sampled"] = token_agreement(outputs["ort"], outputs["ort_int8"])
        deterministic = {name: runners[name](audio, **DETERMINISTIC) for name in models}
        agreement["deterministic"] = token_agreement(deterministic["ort"], deterministic["ort_int8"])
        print(f"int8 tokens equal to float32's: {agreement}", flush=True)
    process_peak = peak_rss()
    del runners

    mem = {}
    if memory:
        for side in times:
            mem[side] = memory_subprocess(side, folder, seconds, threads, models.get(side) if side == "ort_int8" else None)
            print(f"memory {side}: load {mem[side]['load_s']} s, run {mem[side]['run_s']} s, "
                  f"peak RSS {gb(mem[side]['peak_rss'])}", flush=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "seconds_of_audio": seconds,
        "samples": int(round(seconds * SAMPLE_RATE)),
        "frames": math.ceil(round(seconds * SAMPLE_RATE) / 768),
        "threads": threads,
        "reps": reps,
        "times": times,
        "median": med,
        "ratio_over_torch": {k: v / med["torch"] for k, v in med.items() if k != "torch"},
        "realtime_factor": {k: v / seconds for k, v in med.items()},
        "load_s": load_s,
        "memory": mem,
        "timing_process_peak_rss": process_peak,
        "encoder_codes_agree": same_codes,
        "int8_token_agreement": agreement,
        "model_bytes": {k: _model_bytes(p) for k, p in models.items()},
        "load_average_before": load_before,
        "load_average_during": loads,
        "load_average_after": os.getloadavg(),
        "versions": {"torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "cpu": _cpu_name(),
        "command": "python -m benchmarks.benchmark " + " ".join(sys.argv[1:]),
    }


def _model_bytes(path: Path) -> int:
    data = data_file(path)
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def build_function_form(checkpoints: Path, path: Path) -> None:
    """The same model with its local functions kept (what the shipped model inlines)."""
    import onnx

    from vampnet_onnx.builder.assemble import assemble, export_components
    from vampnet_onnx.builder.files import externalize_weights
    from vampnet_onnx.builder.codec import load_codec
    from vampnet_onnx.builder.transformer import load_transformer

    codec = load_codec(checkpoints / "codec.pth")
    coarse = load_transformer(checkpoints / "coarse.pth", codec, "coarse")
    c2f = load_transformer(checkpoints / "c2f.pth", codec, "c2f")
    components = export_components(codec, coarse, c2f)
    data = data_file(path)
    data.unlink(missing_ok=True)
    externalize_weights(components, data)
    onnx.save_model(assemble(codec, coarse, c2f, components=components, inline=False), str(path))


def inlining(folder: Path, reps: int, seconds: float, threads: int) -> dict:
    """The shipped (inlined) model against the same graph with local functions, interleaved."""
    ensure_build(folder)
    functions = folder / "vampnet-functions.onnx"
    if not functions.exists():
        print(f"building {functions} (local functions kept)", flush=True)
        build_function_form(folder / "checkpoints", functions)
    runners = {"inlined": OrtVamp(folder / "vampnet.onnx", threads), "functions": OrtVamp(functions, threads)}
    warm = test_signal(WARMUP_SECONDS, seed=1)
    for runner in runners.values():
        runner(warm)
    audio = test_signal(seconds)
    times: dict[str, list[float]] = {name: [] for name in runners}
    outputs = {}
    for rep in range(reps):
        for name in (list(runners) if rep % 2 == 0 else list(runners)[::-1]):
            s, outputs[name] = _timed(runners[name], audio)
            times[name].append(s)
            print(f"rep {rep} {name:9s} {s:6.2f} s  (load average {os.getloadavg()[0]:.2f})", flush=True)
    same = all((outputs["inlined"][k] == outputs["functions"][k]).all() for k in ("codes", "codes_out"))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"times": times, "median": med, "ratio_inlined_over_functions": med["inlined"] / med["functions"],
            "same_codes": bool(same), "seconds_of_audio": seconds, "threads": threads,
            "command": "python -m benchmarks.benchmark " + " ".join(sys.argv[1:])}


# ---------------------------------------------------------------------------------------------------------
# Per stage, from onnxruntime's profiler

COMPONENT_STAGE = {"codec_encoder": "encode", "coarse_transformer": "coarse transformer",
                   "c2f_transformer": "c2f transformer", "codec_decoder": "decode"}
STAGES = ["encode", "coarse transformer", "coarse sampling", "c2f transformer", "c2f sampling", "decode",
          "masks and other nodes", "runtime (loops, copies)"]
CONTROL_OPS = ("Loop", "If", "Scan")


def stage_times(events: list[dict]) -> dict:
    """Seconds per stage of one profiled run, from its node events.

    A node's component is the `<component>/` prefix the assembler gives its name (builder/export.py);
    a node onnxruntime made by fusion (named by the runtime) between two nodes of one component
    belongs to it. The other nodes belong to the coarse or c2f stage's sampling when the innermost
    Loop around them that runs transformer nodes runs only that stage's; the rest (the mask
    builders, padding, ...) are "other". A Loop's own event spans its body's, so only the other
    nodes are summed; what the run took beyond them is the runtime's own work.
    """
    import bisect

    run = sum(e["dur"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    nodes = sorted((e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")),
                   key=lambda e: e["ts"])
    controls = [e for e in nodes if e["args"].get("op_name") in CONTROL_OPS]
    leaves = [e for e in nodes if e["args"].get("op_name") not in CONTROL_OPS]
    component = [COMPONENT_STAGE.get(e["name"].split("/", 1)[0]) if "/" in e["name"] else None for e in leaves]
    for i in range(1, len(leaves) - 1):
        if component[i] is None and component[i - 1] is not None and component[i - 1] == component[i + 1]:
            component[i] = component[i - 1]
    starts = {kind: [e["ts"] for e, c in zip(leaves, component) if c == f"{kind} transformer"] for kind in ("coarse", "c2f")}
    stage_loops = []  # (start, end, the one stage whose transformer it runs, or None for both)
    for e in controls:
        start, end = e["ts"], e["ts"] + e["dur"]
        kinds = [k for k, ts in starts.items() if bisect.bisect_left(ts, end) > bisect.bisect_left(ts, start)]
        if kinds:
            stage_loops.append((end - start, start, end, kinds[0] if len(kinds) == 1 else None))
    stage_loops.sort()  # innermost first
    seconds = dict.fromkeys(STAGES, 0.0)
    calls = {stage: {} for stage in COMPONENT_STAGE.values()}
    op_types = {stage: {} for stage in COMPONENT_STAGE.values()}  # seconds per op type within a component
    for e, c in zip(leaves, component):
        if c is None:
            inner = next((kind for _, start, end, kind in stage_loops if start <= e["ts"] < end), None)
            c = f"{inner} sampling" if inner else "masks and other nodes"
        else:
            calls[c][e["name"]] = calls[c].get(e["name"], 0) + 1
            op = e["args"]["op_name"]
            op_types[c][op] = op_types[c].get(op, 0.0) + e["dur"] / 1e6
        seconds[c] += e["dur"] / 1e6
    seconds["runtime (loops, copies)"] = max(0.0, run / 1e6 - sum(seconds.values()))
    return {"seconds": seconds, "total": run / 1e6, "op_types": op_types,
            "calls": {stage: max(n.values(), default=0) for stage, n in calls.items()}}


def profile(model: Path, seconds: float, threads: int) -> dict:
    """One run of `model` on the benchmark clip under onnxruntime's profiler (after one unprofiled
    warm-up run of a short clip, which the profile leaves out); seconds per stage."""
    import tempfile

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "profile")
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        session.run(list(OUTPUTS), interface_feeds(test_signal(WARMUP_SECONDS, seed=1)))
        session.run(list(OUTPUTS), interface_feeds(test_signal(seconds), seed=0))
        with open(session.end_profiling()) as f:
            events = json.load(f)
    runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
    last = runs[-1]["ts"]  # the profiled clip's run only
    result = stage_times([e for e in events if e.get("ts", 0) >= last])
    result.update(model=str(model), seconds_of_audio=seconds, threads=threads, load_average=os.getloadavg())
    return result


def profile_markdown(profiles: dict[str, dict]) -> str:
    names = list(profiles)
    lines = ["| stage | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for stage in STAGES:
        cells = []
        for p in profiles.values():
            s, total = p["seconds"][stage], p["total"]
            n = p["calls"].get(stage)
            per = f", {n} calls, {s / n:.2f} s each" if n and stage.endswith("transformer") else ""
            cells.append(f"{s:.1f} s ({100 * s / total:.0f} %{per})")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines.append("| total (profiled run) | " + " | ".join(f"**{p['total']:.1f} s**" for p in profiles.values()) + " |")
    for name, p in profiles.items():
        lines += ["", op_type_lines(p, f"{name}: " if len(profiles) > 1 else "")]
    return "\n".join(lines)


def op_type_lines(p: dict, prefix: str = "", top: int = 5) -> str:
    """Per component stage, its `top` op types by share of the stage's node time (fused nodes under
    onnxruntime's own names, e.g. FusedConv, MatMulNBits)."""
    lines = []
    for stage, ops in p["op_types"].items():
        total = sum(ops.values())
        if total:
            ranked = sorted(ops.items(), key=lambda kv: -kv[1])[:top]
            lines.append(f"{prefix}{stage} by op type: " + ", ".join(f"{op} {100 * s / total:.0f} %" for op, s in ranked))
    return "\n".join(lines)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


SIDE_TITLES = {"ort": "ONNX Runtime, float32", "ort_int8": "ONNX Runtime, int8 weights",
               "torch": "PyTorch eager (same modules)"}


def markdown(r: dict) -> str:
    sides = [k for k in SIDE_TITLES if k in r["times"]]
    mem = r["memory"]

    def row(title, cell):
        return f"| {title} | " + " | ".join(cell(k) for k in sides) + " |"

    lines = [
        f"Real-size model (random weights, released shapes), {r['seconds_of_audio']:g} s clip "
        f"({r['samples']:,} samples, {r['frames']} frames): encode, 12 coarse steps, 2 c2f steps × "
        f"{math.ceil(r['frames'] / 173)} chunks, decode; {r['threads']} threads, {r['cpu']}, "
        f"{r['reps']} interleaved repetitions in one process.",
        "",
        "| | " + " | ".join(SIDE_TITLES[k] for k in sides) + " |",
        "|---" * (len(sides) + 1) + "|",
        row("median time per clip", lambda k: f"**{r['median'][k]:.1f} s**"),
        row("runs", lambda k: ", ".join(f"{t:.1f}" for t in r["times"][k]) + " s"),
        row("× real time", lambda k: f"{r['realtime_factor'][k]:.2f}"),
        row("ratio to PyTorch eager (medians)", lambda k: f"{r['ratio_over_torch'][k]:.2f}" if k != "torch" else "1"),
        row("load (session / modules from checkpoints)", lambda k: f"{r['load_s'][k]:.1f} s"),
        row("peak RSS (load + one run, own process)", lambda k: gb(mem[k]["peak_rss"]) if k in mem else "n/a"),
        row("files", lambda k: f"{r['model_bytes'][k] / 1e9:.2f} GB" if k in r["model_bytes"] else "checkpoints"),
        "",
        f"torch {r['versions']['torch']}, onnxruntime {r['versions']['onnxruntime']}; load average before "
        f"{r['load_average_before'][0]:.2f}, during {min(x[0] for x in r['load_average_during']):.2f}–"
        f"{max(x[0] for x in r['load_average_during']):.2f}.",
        "",
        f"Command: `{r['command'].strip()}`",
    ]
    return "\n".join(lines)


def write_json(path: Path | None, result: dict) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2))


def add_clip_arguments(parser: argparse.ArgumentParser) -> None:
    """--dir, --seconds, --threads: the build and the clip, as every real-size benchmark takes them."""
    parser.add_argument("--dir", type=Path, default=DEFAULT_OUT,
                        help=f"real-size build from benchmarks.realsize (default {DEFAULT_OUT}; built if missing)")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10)")
    parser.add_argument("--threads", type=int, default=2, help="threads for both runtimes (default 2)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.benchmark", description=__doc__.split("\n\n")[0])
    add_clip_arguments(parser)
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions per side (default 3)")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-side peak-memory processes")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--int8", type=Path, metavar="MODEL",
                        help="also an int8 build of the same checkpoints (vampnet-onnx build --weights int8)")
    parser.add_argument("--profile", action="store_true",
                        help="instead: seconds per stage of one run under onnxruntime's profiler "
                             "(DIR/vampnet.onnx, and the --int8 model if given)")
    parser.add_argument("--memory", choices=("ort", "ort_int8", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--inlining", action="store_true",
                        help="instead: the shipped (inlined) model against the same graph with local functions")
    args = parser.parse_args(argv)
    if args.inlining:
        result = inlining(args.dir, args.reps, args.seconds, args.threads)
        print(json.dumps(result, indent=2))
        return 0
    if args.memory:
        print(json.dumps(measure_memory(args.memory, args.dir, args.seconds, args.threads, args.int8)))
        return 0
    if args.profile:
        ensure_build(args.dir)
        models = {"float32": args.dir / "vampnet.onnx", **({"int8": args.int8} if args.int8 else {})}
        result = {name: profile(path, args.seconds, args.threads) for name, path in models.items()}
        print(profile_markdown(result))
        print(f"\n{args.seconds:g} s clip, {args.threads} threads, load average "
              + ", ".join(f"{p['load_average'][0]:.2f}" for p in result.values())
              + f"; command: `python -m benchmarks.benchmark {' '.join(sys.argv[1:])}`")
    else:
        result = benchmark(args.dir, args.reps, args.seconds, args.threads, memory=not args.no_memory, int8=args.int8)
        print()
        print(markdown(result))
    write_json(args.json, result)
    return 0

if __name__ == "__main__":
    sys.exit(main())
