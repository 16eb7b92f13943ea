"""Benchmark: the mask preview (`generate` 0, docs/mask-preview.md) against a full run.

    python -m benchmarks.preview MODEL [--seconds 10] [--threads 2] [--reps 5] [--full]

Times, on the benchmarks' test clip, one `generate` 0 run with the default flags, one with the
onset prompt, and `Model.mask` with the onset prompt (what `vampnet-onnx mask` runs: the mask plus
the run that reads the onsets back); medians of --reps after a warm-up.
`--full` also times one full run of the same model, for scale. A preview touches no weights, so
any model of the same codec previews alike (tiny or real size).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from benchmarks.realsize import SAMPLE_RATE, test_signal
from vampnet_onnx.model import Model


def median_seconds(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.preview", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads (default 2)")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions (default 5)")
    parser.add_argument("--full", action="store_true", help="also time one full run")
    args = parser.parse_args(argv)
    model = Model(args.model, threads=args.threads)
    row = test_signal(args.seconds)  # (1, S)
    audio = row[0]
    onsets = {"seed": 0, "onset_mask_width": 2}
    result = {
        "model": str(args.model), "seconds": args.seconds, "threads": args.threads,
        "load_average": os.getloadavg()[0],
        "mask_s": median_seconds(lambda: model.run(row, seed=0, generate=0), args.reps),
        "mask_onsets_s": median_seconds(lambda: model.run(row, generate=0, **onsets), args.reps),
        "mask_preview_onsets_s": median_seconds(lambda: model.mask(audio, SAMPLE_RATE, **onsets), args.reps),
    }
    if args.full:
        t0 = time.perf_counter()
        model.run(row, seed=0)
        result["full_run_s"] = time.perf_counter() - t0
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
