"""Benchmark: how large a model the browser holds: the in-browser page (web/) with one model in headless Chromium.

    python -m benchmarks.browser MODEL.onnx [--data MODEL.onnx.data] [--seconds 1] [--no-run] [--json FILE]

Serves the page with `vampnet_onnx.web.make_server` (no demo model, so the page starts with none) and
drives it with tests/web/drive.mjs (puppeteer-core, installed into .cache/web-tests as the page's tests
install it; Chromium from the system, onnxruntime-web from web/vendor/: `npm ci --prefix web`): opens
MODEL and its .data with the page's file picker and, unless --no-run, vamps SECONDS of the benchmarks'
synthetic clip (benchmarks/realsize.py, `test_signal`) with the model's default settings.

Prints one row in the format of the README's table ("How large a model the browser holds"):
* weights: the .onnx and .data files together;
* opens?: yes, with the seconds from picking the files to the page's "ready" and from pressing run to
  "done"; or no, with the page's error line (a model that does not open is not run);
* peak RSS above idle: the sum of VmRSS over Chromium's processes (every process under the node that
  drives it), polled every 0.1 s, less idle: the median of that sum over 2 s with the page loaded and no
  model picked. Pages shared between processes count once per process; taking off idle cancels most of
  that. With a run, the peak while loading and the peak of load and run.
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import soundfile as sf

from benchmarks.benchmark import write_json
from benchmarks.realsize import SAMPLE_RATE, test_signal
from tests.node_packages import CACHE, chromium, node, npm_ci
from vampnet_onnx import web

REPO = Path(__file__).resolve().parents[1]
DRIVER = REPO / "tests" / "web"
POLL_S = 0.1
IDLE_MS = 2000
TIMEOUT_S = 3600  # per step in drive.mjs: a real-size model loads in about a minute, runs in more


def tree_rss(root: int) -> int:
    """Bytes of VmRSS summed over the processes under `root` (not root itself: node)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):  # gone meanwhile
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += sum(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:"))
    return total


def drive(files: list[Path], seconds: float | None) -> tuple[dict, list[tuple[float, int]]]:
    """The page's result for one scenario, and (time in ms since the epoch, bytes) of Chromium's RSS."""
    packages = npm_ci(DRIVER, CACHE / "web-tests", scripts=("drive.mjs",))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "demo").mkdir()  # served as the demo model's folder, empty: the page starts with no model
        server = web.make_server("127.0.0.1", 0, demo=tmp / "demo")
        threading.Thread(target=server.serve_forever, daemon=True).start()
        scenario = {"name": "model", "model": [str(f) for f in files], "idle_ms": IDLE_MS, "timeout_s": TIMEOUT_S}
        if seconds:
            sf.write(tmp / "clip.wav", test_signal(seconds)[0], SAMPLE_RATE, subtype="PCM_16")  # the benchmarks' clip
            scenario.update(audio=str(tmp / "clip.wav"), run=True)
        (tmp / "scenarios.json").write_text(json.dumps([scenario]))
        url = f"http://127.0.0.1:{server.server_address[1]}/web/"
        cmd = [node(), str(packages / "drive.mjs"), chromium(), url,
               str(tmp / "scenarios.json"), str(tmp / "results.json")]
        samples = []
        with open(tmp / "node.log", "w+") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            try:
                while proc.poll() is None:  # from here: the browser's processes, not the page, hold the memory
                    samples.append((time.time() * 1000, tree_rss(proc.pid)))
                    time.sleep(POLL_S)
            finally:  # interrupted: puppeteer closes Chromium on SIGTERM
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait()
            log.seek(0)
            output = log.read()
        server.shutdown()
        server.server_close()
        if proc.returncode != 0:
            sys.exit(f"drive.mjs failed ({proc.returncode}):\n{output[-3000:]}")
        result = json.loads((tmp / "results.json").read_text())["model"]
    if "failure" in result:
        sys.exit(f"drive.mjs failed: {result['failure']}")
    return result, samples


def measure(model: Path, data: Path | None, seconds: float | None) -> dict:
    files = [model] + ([data] if data else [])
    result, samples = drive(files, seconds)
    times = result["times"]
    between = lambda start, end: [rss for t, rss in samples if start <= t <= end]  # noqa: E731
    idle = statistics.median(between(times["page"], times["model"]))
    opened = "run" in times or result["state"] == "ready"
    report = {
        "model": str(model), "data": str(data) if data else None,
        "weights_bytes": sum(f.stat().st_size for f in files),
        "opened": opened, "state": result["state"], "error": result["error"], "model_line": result["model"],
        "load_s": (times["loaded"] - times["model"]) / 1000,
        "clip_s": seconds, "run_s": (times["ran"] - times["run"]) / 1000 if "ran" in times else None,
        "idle_rss_bytes": idle,
        # the samples end when node has closed the browser: the last ones are only lower
        "peak_load_rss_above_idle_bytes": max(between(times["model"], times["loaded"]), default=idle) - idle,
        "peak_rss_above_idle_bytes": max(between(times["model"], float("inf"))) - idle,
        "chromium": subprocess.run([chromium(), "--version"], capture_output=True, text=True).stdout.strip(),
        "onnxruntime_web": (web.WEB / "vendor" / "VERSION").read_text().strip(),
        "machine": f"{platform.system()} {platform.machine()}",
        "command": "python -m benchmarks.browser " + shlex.join(sys.argv[1:]),
    }
    return report


def size(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def row(r: dict) -> str:
    what = f"load + a {r['clip_s']:g} s clip, default settings" if r["run_s"] is not None else "load"
    if not r["opened"]:
        opens = f"no: {r['error']}"
    else:
        opens = f"yes, in {r['load_s']:.1f} s"
        if r["run_s"] is not None:
            opens += f"; runs in {r['run_s']:.1f} s" if r["state"] == "done" else f"; the run fails: {r['error']}"
    gb = lambda n: f"{n / 1e9:.2f} GB"  # noqa: E731
    peak = gb(r["peak_rss_above_idle_bytes"])
    if r["run_s"] is not None:
        peak = f"{gb(r['peak_load_rss_above_idle_bytes'])} loading, {peak} in all"
    return f"| {Path(r['model']).name} ({what}) | {size(r['weights_bytes'])} | {opens} | {peak} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="the .onnx file")
    parser.add_argument("--data", type=Path, help="its external weights (.onnx.data), opened with it")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of the clip to vamp (default: 1)")
    parser.add_argument("--no-run", action="store_true", help="only open the model")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args()
    for f in (args.model, args.data):
        if f and not f.is_file():
            sys.exit(f"no such file: {f}")
    r = measure(args.model, args.data, None if args.no_run else args.seconds)
    print("| model | weights | opens? | peak RSS above idle |")
    print("|---|---|---|---|")
    print(row(r))
    print(f"\nthe page: state {r['state']}; model line: {r['model_line']}; error line: {r['error']}")
    print(f"{r['chromium']} (headless), onnxruntime-web {r['onnxruntime_web']}, {r['machine']}; "
          f"idle page {r['idle_rss_bytes'] / 1e9:.2f} GB")
    print(f"command: {r['command']}")
    write_json(args.json, r)


if __name__ == "__main__":
    main()
