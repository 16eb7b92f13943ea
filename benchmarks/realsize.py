"""Real-size check: random weights with the released shapes, built into the single model.

    python -m benchmarks.realsize [--out DIR] [--json REPORT.json] [--reuse]

1. writes random checkpoints in VampNet's on-disk format with the released shapes
   (builder/synthetic.py: coarse d 1280, 20 layers, 20 heads, 4 codebooks; c2f 16 layers,
   14 codebooks, 4 conditioning; the codec stand-in, ~181 MB) to DIR/checkpoints/;
2. builds the single model with `build_model` (weights > 2 GB, so DIR/vampnet.onnx + .onnx.data);
3. reports the parameter counts (counted from the checkpoint files the way upstream counts them,
   LoRA A/B and weight_g/v included), the file sizes, the wall time and peak RSS of every phase,
   and the output of one short run (2 s of audio, default steps) in a fresh process.

Peak RSS per phase comes from /proc/self/status VmHWM, reset between phases through
/proc/self/clear_refs (Linux); elsewhere the process peak (getrusage) is reported for every phase.
The default DIR, artifacts/realsize/, is what `python -m benchmarks.benchmark` reuses.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from vampnet_onnx.interface import OUTPUT_NAMES as OUTPUTS
from vampnet_onnx.paths import data_file
from vampnet_onnx.session import interface_feeds

# The released models' parameter counts as upstream reports them.
EXPECTED_PARAMETERS = {"coarse": 335_893_664, "c2f": 277_753_072}
DEFAULT_OUT = Path("artifacts/realsize")
SHORT_RUN_SECONDS = 2.0
SAMPLE_RATE = 44100

# ---------------------------------------------------------------------------------------------------------
# Memory and time


def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def rss() -> int | None:
    """Current resident set size in bytes (None where /proc is unavailable)."""
    return _status_bytes("VmRSS")


def peak_rss() -> int:
    """Peak RSS in bytes since the last `reset_peak()` (or since the start of the process)."""
    hwm = _status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def reset_peak() -> bool:
    """Reset the peak-RSS counter to the current RSS (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def gb(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 1e9:.2f} GB"


class Phases:
    """Wall time and peak RSS per phase: `start(name)` ends the previous phase; `stop()` ends the last."""

    def __init__(self, log=print):
        self.log = log
        self.records: list[dict] = []
        self._name: str | None = None
        self._t0 = 0.0
        self.per_phase_peaks = reset_peak()
        self.process_peak = 0

    def start(self, name: str) -> None:
        self.stop()
        self._name, self._t0 = name, time.perf_counter()
        if self.per_phase_peaks:
            reset_peak()
        self.log(f"--- {name}")

    def stop(self) -> None:
        if self._name is None:
            return
        peak = peak_rss()
        self.process_peak = max(self.process_peak, peak)
        self.records.append({"phase": self._name, "seconds": round(time.perf_counter() - self._t0, 2),
                             "peak_rss": peak, "rss_after": rss()})
        self._name = None

    def table(self) -> str:
        rows = ["| phase | wall time | peak RSS | RSS after |", "|---|---|---|---|"]
        for r in self.records:
            rows.append(f"| {r['phase']} | {r['seconds']:.1f} s | {gb(r['peak_rss'])} | {gb(r['rss_after'])} |")
        total = sum(r["seconds"] for r in self.records)
        rows.append(f"| **total** | **{total:.1f} s** | **{gb(self.process_peak)}** | |")
        return "\n".join(rows)


# The `build_model` log lines that open its phases (builder/build.py).
_BUILD_PHASES = [
    ("loading checkpoints", "build: load checkpoints into torch modules"),
    ("exporting components", "build: export components (torch.export + ONNX)"),
    ("moving the weights", "build: weights to .onnx.data (from the components)"),
    ("assembling", "build: assemble the single model"),
    ("writing", "build: save (.onnx + .onnx.data)"),
    ("checking", "build: onnx.checker (full check)"),
    ("test run", "build: smoke run in onnxruntime"),
]


def _build_log(phases: Phases):
    def log(message: str) -> None:
        print(message, flush=True)
        text = message.split("] ", 1)[-1]
        for prefix, name in _BUILD_PHASES:
            if text.startswith(prefix):
                phases.start(name)
                return
        if text.startswith("wrote"):
            phases.stop()

    return log


# ---------------------------------------------------------------------------------------------------------
# Checkpoints and counts


def shapes(tiny: bool = False) -> dict[str, dict]:
    """The kwargs per checkpoint: the released shapes, or the upstream fixtures' tiny ones."""
    from vampnet_onnx.builder import synthetic as s

    if tiny:
        return {"codec": s.TINY_CODEC, "coarse": s.TINY_COARSE, "c2f": s.TINY_C2F}
    return {"codec": s.RELEASED_CODEC_STANDIN, "coarse": s.RELEASED_COARSE, "c2f": s.RELEASED_C2F}


def write_checkpoints(folder: Path, tiny: bool = False) -> dict[str, Path]:
    from vampnet_onnx.builder.synthetic import write_random_checkpoints

    kw = shapes(tiny)
    return write_random_checkpoints(folder, kw["codec"], kw["coarse"], kw["c2f"])


def count_parameters(path: Path) -> tuple[int, int]:
    """(tensor elements, tensors) of a checkpoint's state_dict: upstream's count (every tensor in the
    file, LoRA A/B and weight_g/v included). Memory-mapped, so nothing is read into RAM."""
    import torch

    data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    state = data["state_dict"]
    return sum(t.numel() for t in state.values()), len(state)


def model_interface(path: Path) -> dict:
    """Inputs, outputs, initializer storage and metadata of a built model (no weights read)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    external = sum(1 for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL)
    locations = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    return {
        "inputs": [v.name for v in model.graph.input],
        "outputs": [v.name for v in model.graph.output],
        "initializers": len(model.graph.initializer),
        "external_initializers": external,
        "external_locations": sorted(locations),
        "metadata": {p.key: p.value for p in model.metadata_props},
    }


# ---------------------------------------------------------------------------------------------------------
# The short run (in a fresh process, so that its memory is the runtime's alone)


def test_signal(seconds: float, seed: int = 0):
    """A few partials with noise at about -20 dBFS: something the codec can tokenize."""
    import numpy as np

    n = int(round(seconds * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    rng = np.random.default_rng(seed)
    x = sum(0.05 * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in (110, 220, 331, 440, 660))
    x = x + 0.01 * rng.standard_normal(n)
    return x[None, :].astype(np.float32)


def ort_session(path: Path, threads: int = 2):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def short_run(path: Path, seconds: float = SHORT_RUN_SECONDS, threads: int = 2) -> dict:
    import numpy as np

    rss_start = rss()
    t0 = time.perf_counter()
    session = ort_session(path, threads)
    load_s = time.perf_counter() - t0
    rss_loaded = rss()
    audio = test_signal(seconds)
    t0 = time.perf_counter()
    outputs = dict(zip(OUTPUTS, session.run(list(OUTPUTS), interface_feeds(audio, seed=0))))
    run_s = time.perf_counter() - t0
    out, codes, mask = outputs["audio_out"], outputs["codes"], outputs["mask_out"]
    frames = math.ceil(audio.shape[1] / 768)
    return {
        "seconds_of_audio": seconds,
        "steps": "defaults (12 coarse, 2 c2f)",
        "session_load_s": round(load_s, 2),
        "run_s": round(run_s, 2),
        "rss_before_load": rss_start,
        "rss_after_load": rss_loaded,
        "peak_rss": peak_rss(),
        "input_shape": list(audio.shape),
        "output_shape": list(out.shape),
        "codes_shape": list(codes.shape),
        "expected_frames": frames,
        "finite": bool(np.isfinite(out).all()),
        "output_rms": float(np.sqrt(np.mean(out.astype(np.float64) ** 2))),
        "output_peak": float(np.abs(out).max()),
        "input_rms": float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))),
        "mask_fraction": float(mask.mean()),
        "codes_changed_fraction": float((outputs["codes_out"] != codes).mean()),
        "codes_in_range": bool(((outputs["codes_out"] >= 0) & (outputs["codes_out"] < 1024)).all()),
    }


def short_run_subprocess(path: Path, seconds: float = SHORT_RUN_SECONDS) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.realsize", "--short-run", str(path), "--seconds", str(seconds)],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the short run failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------


def run(out: Path, reuse: bool = False, short_seconds: float = SHORT_RUN_SECONDS, tiny: bool = False) -> dict:
    from vampnet_onnx.builder.build import build_model
    from vampnet_onnx.builder.synthetic import parameter_count

    out = Path(out)
    folder = out / "checkpoints"
    model_path = out / "vampnet.onnx"
    phases = Phases()
    started = time.perf_counter()

    names = ("codec", "coarse", "c2f")
    paths = {name: folder / f"{name}.pth" for name in names}
    if reuse and all(p.exists() for p in paths.values()):
        print(f"reusing the checkpoints in {folder}")
    else:
        phases.start(f"write random checkpoints ({'tiny' if tiny else 'released'} shapes)")
        paths = write_checkpoints(folder, tiny)

    phases.start("count parameters in the checkpoint files")
    counts = {name: count_parameters(paths[name])[0] for name in names}
    table_counts = {name: parameter_count(name, kw) for name, kw in shapes(tiny).items()}
    phases.stop()

    build_model(paths["codec"], paths["coarse"], paths["c2f"], model_path, log=_build_log(phases))
    phases.stop()

    interface = model_interface(model_path)
    data_path = data_file(model_path)
    files = {p.name: p.stat().st_size for p in [*paths.values(), model_path, data_path] if p.exists()}

    phases.start("short run in a fresh process (ORT load + 2 s of audio, default steps)")
    run_report = short_run_subprocess(model_path, short_seconds)
    phases.stop()

    report = {
        "out": str(out),
        "parameters": counts,
        "parameters_from_shape_tables": table_counts,
        "tiny": tiny,
        "parameters_expected": table_counts if tiny else {**table_counts, **EXPECTED_PARAMETERS},
        "parameters_in_model_metadata": {n: int(interface["metadata"].get(f"parameters_{n}", -1)) for n in names},
        "files": files,
        "interface": {k: interface[k] for k in ("inputs", "outputs", "initializers",
                                                "external_initializers", "external_locations")},
        "phases": phases.records,
        "process_peak_rss": phases.process_peak,
        "per_phase_peaks": phases.per_phase_peaks,
        "short_run": run_report,
        "total_seconds": round(time.perf_counter() - started, 1),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    print()
    print(format_report(report, phases))
    return report


def format_report(report: dict, phases: Phases) -> str:
    kind = "tiny shapes (script check only)" if report["tiny"] else "released shapes"
    lines = [f"## Real-size check (random weights, {kind})", ""]
    lines.append("| checkpoint | parameters (file) | expected | file size |")
    lines.append("|---|---|---|---|")
    for name in ("codec", "coarse", "c2f"):
        expected = report["parameters_expected"][name]
        size = report["files"].get(f"{name}.pth")
        lines.append(f"| {name} | {report['parameters'][name]:,} | {expected:,} | {size / 1e6:.1f} MB |")
    for fname in ("vampnet.onnx", "vampnet.onnx.data"):
        if fname in report["files"]:
            lines.append(f"| model file `{fname}` | | | {report['files'][fname] / 1e6:.1f} MB |")
    lines += ["", phases.table(), ""]
    r = report["short_run"]
    lines.append(
        f"Short run ({r['seconds_of_audio']} s, {r['steps']}): ORT load {r['session_load_s']} s, run {r['run_s']} s, "
        f"peak RSS {gb(r['peak_rss'])}; output {r['output_shape']} finite={r['finite']} rms={r['output_rms']:.4f} "
        f"peak={r['output_peak']:.3f}; codes {r['codes_shape']}, masked {r['mask_fraction']:.2f}, "
        f"changed {r['codes_changed_fraction']:.2f}."
    )
    lines.append(f"Total {report['total_seconds']} s on {report['cpu_count']} cores; "
                 f"load average at the end {report['load_average_at_end']}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.realsize", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument("--reuse", action="store_true", help="reuse checkpoints already in OUT/checkpoints")
    parser.add_argument("--seconds", type=float, default=SHORT_RUN_SECONDS, help="length of the short run")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes: a quick check of this script only")
    parser.add_argument("--short-run", type=Path, metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.short_run:
        print(json.dumps(short_run(args.short_run, args.seconds)))
        return 0
    report = run(args.out, reuse=args.reuse, short_seconds=args.seconds, tiny=args.tiny)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    bad = [n for n, c in report["parameters_expected"].items() if report["parameters"][n] != c]
    if bad or not report["short_run"]["finite"]:
        print(f"FAILED: parameter counts {bad} / finite output {report['short_run']['finite']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
