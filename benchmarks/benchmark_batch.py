"""Benchmark: `vampnet-onnx batch` throughput, in files per minute, with 1 and 2 workers.

    python -m benchmarks.benchmark_batch [--files 24] [--seconds 2] [--workers 1 2] [--model M]

Model: the tiny demo model (artifacts/demo/vampnet-tiny.onnx; built first, as `vampnet-onnx demo`
does, if it is missing) unless --model is given. Clips: N synthetic clips of S seconds (44.1 kHz
mono WAV) in a temporary folder, in two subfolders. One local Ray with --cpus CPUs (default 2) is
started once; then for each worker count the batch runs into a fresh output folder with
--threads 1 per worker, through the same code as the command (plan, then run on Ray).

Reported per worker count: files per minute over the work (from all workers' sessions loaded to
the last file written) and the wall time including the workers' start-up. Ray's own start-up
(once, before both) is reported apart. Not a test: the numbers depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "artifacts" / "demo" / "vampnet-tiny.onnx"


def write_clips(folder: Path, n: int, seconds: float) -> None:
    import soundfile as sf

    from vampnet_onnx.demo import synth_clip

    for k in range(n):
        path = folder / f"set{k % 2}" / f"clip{k:03d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), synth_clip(44100, seconds=seconds, seed=k), 44100, subtype="PCM_16")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=24)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray (default 2)")
    p.add_argument("--model", type=Path, default=None)
    args = p.parse_args()

    from vampnet_onnx import batch, cli

    model = args.model
    if model is None:
        model = DEFAULT_MODEL
        if not model.is_file():
            from vampnet_onnx.demo import build_demo_model

            build_demo_model(model.parent)
    with tempfile.TemporaryDirectory(prefix="vampnet-batch-bench-") as tmp:
        in_dir = Path(tmp) / "in"
        write_clips(in_dir, args.files, args.seconds)
        t0 = time.monotonic()
        batch.start_ray(None, num_cpus=args.cpus)
        ray_s = time.monotonic() - t0
        print(f"model {model.name}, {args.files} clips of {args.seconds:g} s, local Ray with "
              f"{args.cpus} CPUs (started in {ray_s:.1f} s), {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} before the runs")
        print("| workers | files/min (work) | wall s (incl. workers' start-up) |")
        print("|---|---|---|")
        try:
            for w in args.workers:
                out_dir = Path(tmp) / f"out{w}"
                ns = cli.build_parser().parse_args(
                    ["batch", str(in_dir), str(out_dir), "-m", str(model), "--workers", str(w)])
                jobs = batch.plan(ns, in_dir.absolute(), out_dir.absolute(),
                                  batch.find_inputs(in_dir, out_dir))
                for job in jobs:
                    job.outputs[0].parent.mkdir(parents=True, exist_ok=True)
                t = time.monotonic()
                s = batch.run(jobs, model=str(model.resolve()), threads=1, workers=w)
                wall = time.monotonic() - t
                if s.failed:
                    raise SystemExit(f"{len(s.failed)} files failed, e.g. {s.failed[0]}")
                print(f"| {w} | {s.files_per_minute:.1f} | {wall:.1f} |", flush=True)
        finally:
            import ray

            ray.shutdown()


if __name__ == "__main__":
    main()
