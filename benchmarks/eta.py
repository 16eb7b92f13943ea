"""How far `vamp`'s estimate of the time left lands from the actual time.

    python -m benchmarks.eta [-m MODEL] [--seconds 4 7 10] [--threads 2] [--json out.json]

With a fresh rate cache (a temporary $XDG_CACHE_HOME): the first clip records this machine's rate
(vampnet_onnx.progress: seconds per work unit); each later clip, of another length, is estimated
from the run before it, as `vamp` does, then run; the table gives estimate, actual time and the
error. A first, uncounted run warms onnxruntime up (its first run of a session allocates). MODEL
defaults to the demo's tiny model (built from the upstream fixtures' tiny checkpoints if missing).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

from benchmarks.realsize import test_signal

REPO = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                flags = Path("/proc/cpuinfo").read_text()
                vnni = " (AVX-512 VNNI)" if "avx512_vnni" in flags else ""
                return line.split(":", 1)[1].strip() + vnni
    except OSError:
        pass
    return platform.processor() or platform.machine()


def tiny_model(folder: Path) -> Path:
    from vampnet_onnx.builder.build import build_model

    ckpt = REPO / "tests" / "fixtures" / "upstream" / "checkpoints" / "tiny"
    out = folder / "vampnet-tiny.onnx"
    build_model(ckpt / "codec.pth", ckpt / "coarse.pth", ckpt / "c2f.pth", out, log=lambda m: None)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", type=Path, default=None)
    ap.add_argument("--seconds", type=float, nargs="+", default=[4.0, 7.0, 10.0, 3.0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")
        from vampnet_onnx import Model
        from vampnet_onnx.progress import Bar

        path = args.model or REPO / "artifacts" / "demo" / "vampnet-tiny.onnx"
        if not path.is_file():
            print(f"{path} not found: building the tiny model from the test fixtures", file=sys.stderr)
            path = tiny_model(Path(tmp))
        model = Model(path, threads=args.threads)
        rate = model.sample_rate
        model.vamp(test_signal(1.0)[0], rate, seed=0)  # warm-up, not recorded
        rows = []
        for k, seconds in enumerate(args.seconds):
            bar = Bar("model", io.StringIO())
            result = model.vamp(test_signal(seconds, seed=k)[0], rate, seed=k, progress=bar)
            err = None if bar.estimate is None else 100.0 * (bar.estimate - result.model_s) / result.model_s
            rows.append({"seconds": seconds, "estimate_s": bar.estimate, "actual_s": result.model_s,
                         "error_pct": err})
    print(f"model {path.name}, {args.threads} threads, {cpu_name()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| clip s | estimate s | actual s | error |")
    print("|---|---|---|---|")
    for r in rows:
        est = "— (records the rate)" if r["estimate_s"] is None else f"{r['estimate_s']:.2f}"
        err = "" if r["error_pct"] is None else f"{r['error_pct']:+.1f} %"
        print(f"| {r['seconds']:g} | {est} | {r['actual_s']:.2f} | {err} |")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "threads": args.threads, "runs": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
