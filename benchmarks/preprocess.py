"""Benchmark: what upstream's preprocessing and pitch shift cost inside the model.

    python -m benchmarks.preprocess [--seconds 10] [--reps 3] [--vamp-s S | --model M] [--json F]

Times the model's graph functions on their own, in onnxruntime (its default threads: every core), on a clip of --seconds at each
input rate (44.1 and 48 kHz): `prepare` (resample to 44.1 kHz, −24 LUFS, peak <= 1: the model's
input end), `restore` (back to the input's rate and loudness: its output end) and, at 44.1 kHz,
`pitch_shift` by 5 semitones plus the second `prepare` that upstream's encoder applies to the
shifted audio. These functions touch no weights, so they cost the same in the tiny and the
real-size model. Medians of --reps after a warm-up. With --vamp-s (the seconds one vamp of the same
clip takes) or --model (a built model, e.g. the real-size one of `python -m benchmarks.realsize`:
one vamp of the same 44.1 kHz clip is timed, default settings, 2 threads, after a 1 s warm-up)
each is also given as a share of it, and so is the whole cost at each rate: `prepare`, `restore`,
the shift and the second `prepare` (what a run with both inputs set adds).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.benchmark import write_json
from benchmarks.realsize import ort_session
from tests.graph_helpers import make_runner, function_model
from vampnet_onnx.graphs import preprocess as P
from vampnet_onnx.graphs.pitch import pitch_shift

MODEL_RATE = 44100
RATES = (44100, 48000)
SEMITONES = 5


def clip(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """A few partials with noise, (1, S) float32 at `rate`."""
    t = np.arange(int(round(seconds * rate))) / rate
    rng = np.random.default_rng(seed)
    x = sum(0.05 * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in (110, 220, 331, 440, 660))
    return (x + 0.01 * rng.standard_normal(t.shape))[None, :].astype(np.float32)


def length(x: np.ndarray) -> np.ndarray:
    """The `length` input of `prepare` and `restore` that covers all of x."""
    return np.array([x.shape[1]], np.int64)


def median_seconds(fn, *inputs, reps: int) -> tuple[float, list]:
    """(median seconds of fn's run on `inputs`, its outputs) after a warm-up run."""
    inputs = [np.asarray(x) for x in inputs]
    run = make_runner(function_model(fn, *inputs))
    feeds = {f"in{i}": x for i, x in enumerate(inputs)}
    out = run(feeds)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run(feeds)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def vamp_seconds(model: Path, seconds: float) -> float:
    """Seconds of one run of `model` on a clip of `seconds` at 44.1 kHz with the default settings."""
    from vampnet_onnx.session import interface_feeds

    session = ort_session(model, threads=2)
    session.run(None, interface_feeds(clip(1.0, MODEL_RATE)))
    feeds = interface_feeds(clip(seconds, MODEL_RATE))
    t0 = time.perf_counter()
    session.run(None, feeds)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.preprocess", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10)")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions (default 3)")
    vamp = parser.add_mutually_exclusive_group()
    vamp.add_argument("--vamp-s", type=float, help="seconds of one vamp of the same clip, for the shares")
    vamp.add_argument("--model", type=Path, help="a built model: time one vamp of the same clip, for the shares")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    model_rate = np.int64(MODEL_RATE)
    result: dict = {"seconds": args.seconds, "reps": args.reps, "load_average": os.getloadavg()[0], "stages": {}}
    for rate in RATES:
        x = clip(args.seconds, rate)
        s, (prepared,) = median_seconds(P.prepare, x, length(x), np.int64(rate), model_rate, reps=args.reps)
        result["stages"][f"prepare at {rate} Hz"] = s
        target = np.full(1, -20.0, np.float32)
        samples = np.array([x.shape[1]], np.int64)
        s, _ = median_seconds(P.restore, prepared, length(prepared), model_rate, np.int64(rate), samples, target,
                              reps=args.reps)
        result["stages"][f"restore to {rate} Hz"] = s
        if rate == MODEL_RATE:
            s, (shifted,) = median_seconds(pitch_shift, prepared, np.int64(SEMITONES), reps=args.reps)
            result["stages"][f"pitch shift by {SEMITONES}"] = s
            s, _ = median_seconds(P.prepare, shifted, length(shifted), model_rate, model_rate, reps=args.reps)
            result["stages"]["prepare the shifted audio"] = s
    stages = result["stages"]
    shift = stages[f"pitch shift by {SEMITONES}"] + stages["prepare the shifted audio"]
    result["totals"] = {f"at {rate} Hz, both inputs set": stages[f"prepare at {rate} Hz"] + stages[f"restore to {rate} Hz"] + shift
                        for rate in RATES}
    vamp_s = args.vamp_s or (vamp_seconds(args.model, args.seconds) if args.model else None)
    if vamp_s:
        result["vamp_s"] = vamp_s
        result["shares"] = {k: v / vamp_s for k, v in {**stages, **result["totals"]}.items()}
    print(json.dumps(result, indent=2))
    print(f"\n| {args.seconds:g} s clip | seconds | share of a vamp |\n|---|---|---|")
    for name, s in {**result["stages"], **result["totals"]}.items():
        share = f"{100 * result['shares'][name]:.2f} %" if vamp_s else "-"
        print(f"| {name} | {s:.3f} | {share} |")
    if vamp_s:
        print(f"| one vamp of the clip | {vamp_s:.1f} | 100 % |")
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
