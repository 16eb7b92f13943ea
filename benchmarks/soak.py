"""Soak: one model, one process, many runs; does memory or the count of open files creep up?

    python -m benchmarks.soak --model MODEL [--runs 300] [--every 25] [--threads 2] [--arena on|off|release]

Runs the same loaded ``Model`` ``--runs`` times through the Python API, cycling through clip
lengths, batch sizes and settings (``CYCLE``), and prints the process's RSS and its open file
descriptors every ``--every`` runs. The goal (docs/reliability.md): from run ``--every`` on, RSS
grows by less than 2 % and the descriptors stay constant. The first ``--every`` runs are the
warm-up: onnxruntime's CPU arena grows to the largest clip seen and then keeps that memory for
reuse.

``--arena off`` loads the model with ``enable_cpu_mem_arena = False``, to measure what the arena
costs and saves; ``--arena release`` keeps the arena but hands it back after every run
(``Model(..., release_memory=True)``). Each cycle's first case is also checked for identical
outputs on every repetition (same seed, same audio: same codes, run 1 or run 300).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from vampnet_onnx.model import Model

SAMPLE_RATE = 44100
# (seconds, batch rows, settings): alternating lengths, batch sizes and settings; the largest clip
# is not the last, so a peak kept by the arena would show as a plateau rather than a climb
CYCLE = [
    (0.5, 1, dict(seed=1)),
    (1.0, 2, dict(seed=2, sampling_steps=8, temperature=0.8)),
    (0.25, 1, dict(seed=3, periodic_prompt=3, c2f_sampling_steps=1)),
    (0.75, 2, dict(seed=4, top_p=0.9, upper_codebook_mask=1)),
    (0.2, 3, dict(seed=5, sampling_steps=4, onset_mask_width=2)),
    (0.5, 1, dict(seed=6, prefix_s=0.1, suffix_s=0.1, mask_temperature=5.0)),
]


def clip(seconds: float, rows: int) -> np.ndarray:
    """A few partials and a little noise, different per row; deterministic."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    rng = np.random.default_rng(int(seconds * 100) + rows)
    out = [0.1 * np.sin(2 * np.pi * (110 + 55 * r) * t) + 0.1 * np.sin(2 * np.pi * 330 * t)
           + 0.01 * rng.standard_normal(t.size) for r in range(rows)]
    return np.asarray(out, np.float32)


def vamp(model: Model, audio: np.ndarray, settings: dict) -> dict[str, np.ndarray]:
    """One run through the public API (the one place to change if the API changes)."""
    return model.run(audio, **settings)


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def cpu() -> str:
    """The CPU's model name, its core count and whether it has AVX-512 VNNI."""
    name, flags = platform.machine(), set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    vnni = ", AVX-512 VNNI" if "avx512_vnni" in flags else ""
    return f"{name}, {os.cpu_count()} cores{vnni}"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def load(path: Path, threads: int, arena: str) -> Model:
    if arena != "off":
        return Model(path, threads=threads, release_memory=arena == "release")
    import onnxruntime as ort

    # Model makes its own SessionOptions; hand it one with the arena off (loading a second
    # session instead would leave the first one's freed memory in RSS)
    make_options = ort.SessionOptions

    def without_arena() -> ort.SessionOptions:
        options = make_options()
        options.enable_cpu_mem_arena = False
        return options

    ort.SessionOptions = without_arena
    try:
        return Model(path, threads=threads)
    finally:
        ort.SessionOptions = make_options


def soak(model: Model, runs: int, every: int) -> dict:
    clips = {(s, b): clip(s, b) for s, b, _ in CYCLE}
    first_digest: str | None = None
    samples = []
    t0 = time.perf_counter()
    for i in range(1, runs + 1):
        seconds, rows, settings = CYCLE[(i - 1) % len(CYCLE)]
        out = vamp(model, clips[seconds, rows], settings)
        if (i - 1) % len(CYCLE) == 0:
            digest = hashlib.sha256(out["codes_out"].tobytes() + out["audio_out"].tobytes()).hexdigest()
            first_digest = first_digest or digest
            if digest != first_digest:
                raise SystemExit(f"run {i}: the same case gave different outputs than on run 1")
        del out
        if i % every == 0:
            row = dict(run=i, rss_mb=round(rss_bytes() / 1e6, 1), peak_rss_mb=round(peak_rss_bytes() / 1e6, 1),
                       fds=open_fds(), elapsed_s=round(time.perf_counter() - t0, 1))
            samples.append(row)
            print(json.dumps(row), flush=True)
    base = samples[0]
    last = samples[-1]
    return dict(
        samples=samples,
        rss_growth_after_warmup=round((last["rss_mb"] - base["rss_mb"]) / base["rss_mb"], 4),
        max_rss_after_warmup_mb=max(s["rss_mb"] for s in samples),
        fds_constant=len({s["fds"] for s in samples}) == 1,
        same_outputs_every_cycle=True,  # else soak() exits above
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="the .onnx model (e.g. the tiny one)")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--every", type=int, default=25, help="report every N runs (default 25)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--arena", choices=("on", "off", "release"), default="on",
                        help="onnxruntime's CPU memory arena: on (onnxruntime's default), off, or "
                             "released after every run")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)

    rss_before = rss_bytes()
    model = load(args.model, args.threads, args.arena)
    result = dict(model=str(args.model), runs=args.runs, threads=args.threads, arena=args.arena,
                  cpu=cpu(), python=sys.version.split()[0], rss_before_load_mb=round(rss_before / 1e6, 1),
                  rss_after_load_mb=round(rss_bytes() / 1e6, 1), fds_after_load=open_fds())
    print(json.dumps(result), flush=True)
    result.update(soak(model, args.runs, args.every))
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
