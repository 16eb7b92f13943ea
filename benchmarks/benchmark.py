"""Benchmark: the single ONNX model against the same work in eager PyTorch, at real size.

    python -m benchmarks.benchmark [--dir artifacts/realsize] [--reps 3] [--seconds 10] [--threads 2]

Uses the real-size build of `python -m benchmarks.realsize` in DIR (random weights, released shapes: the
checkpoints in DIR/checkpoints/ and DIR/vampnet.onnx + .data); builds it first if it is not there.

The work for one clip (10 s = 441,000 samples = 575 frames = one coarse chunk):
  encode → 12 coarse forwards (one 575-frame chunk) → 2 c2f forwards per 173-frame chunk
  (4 chunks, the last one padded, as the graph does) → decode, trimmed to the input length.
ONNX: one `session.run` of the model with its default settings (seed 0), intra_op_num_threads=N,
ORT_ENABLE_ALL. PyTorch: the project's own modules (builder/codec.py, builder/transformer.py),
`torch.set_num_threads(N)`, `inference_mode`, with a minimal sampler (softmax, exponential-race
draw, cosine schedule, Gumbel re-masking) in place of the graph's; the forwards dominate either way.

Timings come from one process, the two sides interleaved (ORT first in even repetitions, torch first
in odd ones) after a short warm-up of each; medians are reported. Peak memory is measured apart, in
one fresh process per side (load + one run), because in the timing process both sides are resident.
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

from vampnet_onnx.model import interface_feeds
from benchmarks.realsize import DEFAULT_OUT, OUTPUTS, SAMPLE_RATE, gb, ort_session, peak_rss, reset_peak, rss, test_signal

MASK = 1024
COARSE_STEPS, C2F_STEPS = 12, 2
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

    def __call__(self, audio, seed: int = 0) -> dict:
        import numpy as np

        out = self.session.run(list(OUTPUTS), interface_feeds(audio, seed=seed))
        return dict(zip(OUTPUTS, out))


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


def measure_memory(side: str, folder: Path, seconds: float, threads: int) -> dict:
    """In this (fresh) process: load one side, run it once; load time, run time and peak RSS."""
    reset_peak()
    base = rss()
    if side == "torch":
        torch_setup(threads)
        load_s, runner = _timed(TorchVamp, folder / "checkpoints")
    else:
        load_s, runner = _timed(OrtVamp, folder / "vampnet.onnx", threads)
    loaded, load_peak = rss(), peak_rss()
    audio = test_signal(seconds)
    run_s, out = _timed(runner, audio)
    _check(side, out, audio)
    return {"side": side, "load_s": round(load_s, 2), "run_s": round(run_s, 2), "rss_start": base,
            "rss_after_load": loaded, "peak_rss_load": load_peak, "peak_rss": peak_rss()}


def memory_subprocess(side: str, folder: Path, seconds: float, threads: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.benchmark", "--dir", str(folder), "--seconds", str(seconds),
           "--threads", str(threads), "--memory", side]
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


def benchmark(folder: Path, reps: int, seconds: float, threads: int, memory: bool = True) -> dict:
    import numpy as np

    ensure_build(folder)
    load_before = os.getloadavg()
    torch = torch_setup(threads)
    t_torch_load, torch_vamp = _timed(TorchVamp, folder / "checkpoints")
    t_ort_load, ort_vamp = _timed(OrtVamp, folder / "vampnet.onnx", threads)
    print(f"loaded: torch modules {t_torch_load:.1f} s, ORT session {t_ort_load:.1f} s; RSS {gb(rss())}", flush=True)

    warm = test_signal(WARMUP_SECONDS, seed=1)
    for name, fn in (("ort", ort_vamp), ("torch", torch_vamp)):
        s, out = _timed(fn, warm)
        _check(name, out, warm)
        print(f"warm-up {name} ({WARMUP_SECONDS:g} s clip): {s:.2f} s", flush=True)

    audio = test_signal(seconds)
    times: dict[str, list[float]] = {"ort": [], "torch": []}
    loads: list[tuple[float, float, float]] = []
    outputs = {}
    for rep in range(reps):
        order = ("ort", "torch") if rep % 2 == 0 else ("torch", "ort")
        for name in order:
            s, out = _timed(ort_vamp if name == "ort" else torch_vamp, audio)
            _check(name, out, audio)
            outputs[name] = out
            times[name].append(s)
            loads.append(os.getloadavg())
            print(f"rep {rep} {name:5s} {s:6.2f} s  (load average {loads[-1][0]:.2f})", flush=True)
    same_codes = float((outputs["ort"]["codes"] == outputs["torch"]["codes"]).mean())
    process_peak = peak_rss()
    del torch_vamp, ort_vamp

    mem = {}
    if memory:
        for side in ("ort", "torch"):
            mem[side] = memory_subprocess(side, folder, seconds, threads)
            print(f"memory {side}: load {mem[side]['load_s']} s, run {mem[side]['run_s']} s, "
                  f"peak RSS {gb(mem[side]['peak_rss'])}", flush=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    data = folder / "vampnet.onnx.data"
    return {
        "seconds_of_audio": seconds,
        "samples": int(round(seconds * SAMPLE_RATE)),
        "frames": math.ceil(round(seconds * SAMPLE_RATE) / 768),
        "threads": threads,
        "reps": reps,
        "times": times,
        "median": med,
        "ratio_ort_over_torch": med["ort"] / med["torch"],
        "realtime_factor": {k: v / seconds for k, v in med.items()},
        "load_s": {"ort": t_ort_load, "torch": t_torch_load},
        "memory": mem,
        "timing_process_peak_rss": process_peak,
        "encoder_codes_agree": same_codes,
        "model_bytes": (folder / "vampnet.onnx").stat().st_size + (data.stat().st_size if data.exists() else 0),
        "load_average_before": load_before,
        "load_average_during": loads,
        "load_average_after": os.getloadavg(),
        "versions": {"torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "cpu": _cpu_name(),
        "command": "python -m benchmarks.benchmark " + " ".join(sys.argv[1:]),
    }


def build_function_form(checkpoints: Path, path: Path) -> None:
    """The same model with its local functions kept (what the shipped model inlines)."""
    import onnx

    from vampnet_onnx.builder.assemble import assemble, export_components
    from vampnet_onnx.builder.build import externalize_weights
    from vampnet_onnx.builder.codec import load_codec
    from vampnet_onnx.builder.transformer import load_transformer

    codec = load_codec(checkpoints / "codec.pth")
    coarse = load_transformer(checkpoints / "coarse.pth", codec, "coarse")
    c2f = load_transformer(checkpoints / "c2f.pth", codec, "c2f")
    components = export_components(codec, coarse, c2f)
    data = path.with_name(path.name + ".data")
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


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def markdown(r: dict) -> str:
    mem = r["memory"]
    peak = {k: gb(mem[k]["peak_rss"]) if k in mem else "n/a" for k in ("ort", "torch")}
    runs = {k: ", ".join(f"{t:.1f}" for t in v) for k, v in r["times"].items()}
    lines = [
        f"Real-size model (random weights, released shapes), {r['seconds_of_audio']:g} s clip "
        f"({r['samples']:,} samples, {r['frames']} frames): encode, 12 coarse steps, 2 c2f steps × "
        f"{math.ceil(r['frames'] / 173)} chunks, decode; {r['threads']} threads, {r['cpu']}, "
        f"{r['reps']} interleaved repetitions in one process.",
        "",
        "| | ONNX Runtime (single model) | PyTorch eager (same modules) |",
        "|---|---|---|",
        f"| median time per clip | **{r['median']['ort']:.1f} s** | **{r['median']['torch']:.1f} s** |",
        f"| runs | {runs['ort']} s | {runs['torch']} s |",
        f"| × real time | {r['realtime_factor']['ort']:.2f} | {r['realtime_factor']['torch']:.2f} |",
        f"| load (session / modules from checkpoints) | {r['load_s']['ort']:.1f} s | {r['load_s']['torch']:.1f} s |",
        f"| peak RSS (load + one run, own process) | {peak['ort']} | {peak['torch']} |",
        f"| ratio ONNX / PyTorch (medians) | {r['ratio_ort_over_torch']:.2f} | |",
        "",
        f"Model files {r['model_bytes'] / 1e9:.2f} GB; torch {r['versions']['torch']}, onnxruntime "
        f"{r['versions']['onnxruntime']}; load average before {r['load_average_before'][0]:.2f}, "
        f"during {min(x[0] for x in r['load_average_during']):.2f}–{max(x[0] for x in r['load_average_during']):.2f}.",
        "",
        f"Command: `{r['command'].strip()}`",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_OUT,
                        help=f"real-size build from benchmarks.realsize (default {DEFAULT_OUT}; built if missing)")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions per side (default 3)")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10)")
    parser.add_argument("--threads", type=int, default=2, help="threads for both runtimes (default 2)")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-side peak-memory processes")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--memory", choices=("ort", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--inlining", action="store_true",
                        help="instead: the shipped (inlined) model against the same graph with local functions")
    args = parser.parse_args(argv)
    if args.inlining:
        result = inlining(args.dir, args.reps, args.seconds, args.threads)
        print(json.dumps(result, indent=2))
        return 0
    if args.memory:
        print(json.dumps(measure_memory(args.memory, args.dir, args.seconds, args.threads)))
        return 0
    result = benchmark(args.dir, args.reps, args.seconds, args.threads, memory=not args.no_memory)
    print()
    print(markdown(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
