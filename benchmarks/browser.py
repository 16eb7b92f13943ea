"""Benchmark: the in-browser page (web/) with one model in headless Chromium, as a visitor uses it.

    python -m benchmarks.browser MODEL.onnx [--seconds 10] [--no-run] [--mbit N] [--screenshot FILE] [--json FILE]
    python -m benchmarks.browser MODEL.onnx --picker [--data MODEL.onnx.data] [--seconds 1] [--no-run]

Serves the page as `vampnet-onnx web` does (`vampnet_onnx.web.make_server`, cross-origin isolated),
with MODEL's folder as /artifacts/demo/, and drives it with tests/web/drive.mjs (puppeteer-core,
installed into .cache/web-tests as the page's tests install it; Chromium from the system,
onnxruntime-web from web/vendor/: `npm ci --prefix web`) in one fresh browser profile, on wasm:

1. first visit: opens MODEL by its address (download, kept in Cache Storage, opened), then vamps
   SECONDS of the benchmarks' synthetic clip (benchmarks/realsize.py, `test_signal`) with the
   model's default settings on every core (threads: `navigator.hardwareConcurrency`);
2. second visit (a new tab, `?threads=1`): opens the same address, now from Cache Storage (the
   requests the page made for the model are counted: none is expected), and vamps the same clip on
   one thread.

The server is on this machine, so a download takes what copying the file takes. --mbit N throttles
both visits' requests to an N Mbit/s link with LATENCY_MS of latency (Chromium's network
emulation, as its developer tools do it), which is what a visitor's first load also waits for; the
second load makes no request and is not slowed.

--picker instead opens MODEL (and --data) with the page's file picker once and vamps on every core:
the rows of docs/browser.md's "How large a model the browser holds".

Times: from pressing "open" (or picking the files) to the page's "ready", and from pressing run to
"done". Peak RSS above idle: the sum of VmRSS over Chromium's processes (every process under the
node that drives it), polled every 0.1 s, less idle: the median of that sum over 2 s with the tab
loaded and no model opened. Pages shared between processes count once per process; taking off idle
cancels most of that. Given for the load and for load and run, per visit.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urljoin

import soundfile as sf

from benchmarks.benchmark import write_json
from benchmarks.realsize import SAMPLE_RATE, test_signal
from tests.node_packages import CACHE, chromium, node, npm_ci
from vampnet_onnx import web

REPO = Path(__file__).resolve().parents[1]
DRIVER = REPO / "tests" / "web"
POLL_S = 0.1
IDLE_MS = 2000
LATENCY_MS = 20  # --mbit's round trip
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


def drive(scenarios: list[dict], folder: Path, seconds: float | None) -> tuple[dict, list[tuple[float, int]]]:
    """The page's results for the scenarios (one browser), and (time in ms since the epoch, bytes)
    of Chromium's RSS. `folder` is served as /artifacts/demo/; with `seconds`, each scenario vamps
    that much of the benchmarks' clip."""
    packages = npm_ci(DRIVER, CACHE / "web-tests", scripts=("drive.mjs",))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        server = web.make_server("127.0.0.1", 0, demo=folder)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/web/"
        if seconds:
            sf.write(tmp / "clip.wav", test_signal(seconds)[0], SAMPLE_RATE, subtype="PCM_16")  # the benchmarks' clip
        for scenario in scenarios:
            scenario.update(idle_ms=IDLE_MS, timeout_s=TIMEOUT_S, url=url + scenario.get("query", ""))
            if "open_url" in scenario:  # the page's address field takes absolute ones
                scenario["open_url"] = urljoin(url, scenario["open_url"])
            if seconds:
                scenario.update(audio=str(tmp / "clip.wav"), run=True)
        (tmp / "scenarios.json").write_text(json.dumps(scenarios))
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
        results = json.loads((tmp / "results.json").read_text())
    for name, result in results.items():
        if "failure" in result:
            sys.exit(f"drive.mjs failed ({name}): {result['failure']}")
    return results, samples


def visit(result: dict, samples: list[tuple[float, int]], model_url: str | None = None) -> dict:
    """One scenario's figures: times, the page's lines, peak RSS above this tab's idle."""
    times = result["times"]
    between = lambda start, end: [rss for t, rss in samples if start <= t <= end]  # noqa: E731
    idle = statistics.median(between(times["page"], times["model"]))
    ran = "ran" in times
    return {
        "opened": "run" in times or result["state"] == "ready", "state": result["state"], "error": result["error"],
        "model_line": result["model"], "backend_line": result["backend"], "download_line": result["download"],
        "threads": (result.get("runtime") or {}).get("threads"),
        # the page's own parts of the load (web/app.mjs): fetch, read, runtime, session (ms)
        "load_parts_s": {k: v / 1000 for k, v in (result.get("load_ms") or {}).items() if v is not None},
        "load_s": (times["loaded"] - times["model"]) / 1000,
        "run_s": (times["ran"] - times["run"]) / 1000 if ran else None,
        "idle_rss_bytes": idle,
        "peak_load_rss_above_idle_bytes": max(between(times["model"], times["loaded"]), default=idle) - idle,
        # the samples end when node has closed the browser: the last ones are only lower
        "peak_rss_above_idle_bytes": max(between(times["model"], times.get("ran", times["loaded"]))) - idle,
        **({"model_requests": sum(u.split("?")[0] in (model_url, model_url + ".data") for u in result["requests"])}
           if model_url else {}),
    }


def about(files: list[Path], seconds: float | None, visits: dict, mbit: float | None = None) -> dict:
    return {
        "model": str(files[0]), "data": str(files[1]) if len(files) > 1 else None,
        "weights_bytes": sum(f.stat().st_size for f in files), "clip_s": seconds, **visits,
        "network": {"mbit": mbit, "latency_ms": LATENCY_MS} if mbit else "localhost, not throttled",
        "chromium": subprocess.run([chromium(), "--version"], capture_output=True, text=True).stdout.strip(),
        "onnxruntime_web": (web.WEB / "vendor" / "VERSION").read_text().strip(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
        "command": "python -m benchmarks.browser " + shlex.join(sys.argv[1:]),
    }


def measure(model: Path, seconds: float | None, screenshot: Path | None = None, mbit: float | None = None) -> dict:
    """The two visits by address (module docstring), their requests throttled to `mbit`."""
    data = model.with_name(model.name + ".data")
    files = [model] + ([data] if data.is_file() else [])
    first = {"name": "first", "open_url": f"../artifacts/demo/{model.name}", "query": "?backend=wasm"}
    if screenshot:
        first["screenshot"] = str(screenshot.resolve())
    second = {"name": "cached", "open_url": first["open_url"], "query": "?backend=wasm&threads=1"}
    if mbit:
        for scenario in (first, second):
            scenario["network"] = {"mbit": mbit, "latency_ms": LATENCY_MS}
    results, samples = drive([first, second], model.parent, seconds)
    url = urljoin(results["first"]["requests"][0], first["open_url"])
    return about(files, seconds, {name: visit(results[name], samples, url) for name in ("first", "cached")}, mbit)


def measure_picker(model: Path, data: Path | None, seconds: float | None) -> dict:
    """One visit opening the files with the picker (module docstring)."""
    files = [model] + ([data] if data else [])
    with tempfile.TemporaryDirectory() as empty:  # the demo folder, empty: the page starts with no model
        results, samples = drive([{"name": "picker", "model": [str(f) for f in files]}], Path(empty), seconds)
    return about(files, seconds, {"picker": visit(results["picker"], samples)})


def size(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


gb = lambda n: f"{n / 1e9:.2f} GB"  # noqa: E731


def picker_row(r: dict) -> str:
    v = r["picker"]
    what = f"load + a {r['clip_s']:g} s clip, default settings" if v["run_s"] is not None else "load"
    if not v["opened"]:
        opens = f"no: {v['error']}"
    else:
        opens = f"yes, in {v['load_s']:.1f} s"
        if v["run_s"] is not None:
            opens += f"; runs in {v['run_s']:.1f} s" if v["state"] == "done" else f"; the run fails: {v['error']}"
    peak = gb(v["peak_rss_above_idle_bytes"])
    if v["run_s"] is not None:
        peak = f"{gb(v['peak_load_rss_above_idle_bytes'])} loading, {peak} in all"
    return f"| {Path(r['model']).name} ({what}) | {size(r['weights_bytes'])} | {opens} | {peak} |"


def visits_table(r: dict) -> list[str]:
    first, cached = r["first"], r["cached"]
    run = lambda v: (f"{v['run_s']:.1f} s" if v["state"] == "done" else f"fails: {v['error']}") \
        if v["run_s"] is not None else "—"  # noqa: E731
    failed = next((v["error"] for v in (first, cached) if not v["opened"]), None)
    if failed:
        return [f"| {Path(r['model']).name} | {size(r['weights_bytes'])} | does not open: {failed} |"]
    clip = f"{r['clip_s']:g} s clip" if r["clip_s"] else "no run"
    return [
        f"| model | weights | first load (download + open) | {clip}, {first['threads']} threads | "
        f"{clip}, {cached['threads']} thread | peak RSS above idle | second load (from cache) |",
        "|---|---|---|---|---|---|---|",
        f"| {Path(r['model']).name} | {size(r['weights_bytes'])} | {first['load_s']:.1f} s | {run(first)} | {run(cached)} | "
        f"{gb(max(first['peak_rss_above_idle_bytes'], cached['peak_rss_above_idle_bytes']))} "
        f"({gb(first['peak_load_rss_above_idle_bytes'])} loading) | {cached['load_s']:.1f} s, "
        f"{cached['model_requests']} requests for the model |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="the .onnx file (its .onnx.data beside it, as `build` writes it)")
    parser.add_argument("--seconds", type=float, help="length of the clip to vamp (default: 10; --picker: 1)")
    parser.add_argument("--no-run", action="store_true", help="only open the model")
    parser.add_argument("--picker", action="store_true", help="open the files with the file picker, once")
    parser.add_argument("--data", type=Path, help="--picker: its external weights, opened with it")
    parser.add_argument("--mbit", type=float, help=f"throttle the visits' requests to an MBIT Mbit/s link ({LATENCY_MS} ms latency)")
    parser.add_argument("--screenshot", type=Path, help="a picture of the page after the first visit's run")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args()
    for f in (args.model, args.data):
        if f and not f.is_file():
            sys.exit(f"no such file: {f}")
    if args.mbit is not None and (args.picker or args.mbit <= 0):
        sys.exit("--mbit takes a positive number of Mbit/s, and goes with visits by address (not --picker)")
    if args.data and not args.picker:
        sys.exit("--data goes with --picker; by address the page fetches MODEL.onnx.data beside MODEL")
    seconds = None if args.no_run else args.seconds or (1.0 if args.picker else 10.0)
    if args.picker:
        r = measure_picker(args.model, args.data, seconds)
        lines = ["| model | weights | opens? | peak RSS above idle |", "|---|---|---|---|", picker_row(r)]
        visits = [r["picker"]]
    else:
        r = measure(args.model, seconds, args.screenshot, args.mbit)
        lines = visits_table(r)
        visits = [r["first"], r["cached"]]
        if r["first"]["opened"] and r["cached"]["opened"]:
            n = r["network"]
            network = f"{n['mbit']:g} Mbit/s, {n['latency_ms']} ms" if isinstance(n, dict) else n
            lines.append(f"\nsecond load / first load: {r['cached']['load_s'] / r['first']['load_s']:.2f} (network: {network})")
    print("\n".join(lines) + "\n")
    for v in visits:
        parts = ", ".join(f"{k} {t:.1f} s" for k, t in v["load_parts_s"].items())
        print(f"the page: load {v['load_s']:.1f} s ({parts}); state {v['state']}; {v['backend_line']}; model line: {v['model_line']}; "
              f"download line: {v['download_line']}; error line: {v['error']}; idle {gb(v['idle_rss_bytes'])}")
    print(f"{r['chromium']} (headless), onnxruntime-web {r['onnxruntime_web']}, {r['machine']}")
    print(f"command: {r['command']}")
    write_json(args.json, r)


if __name__ == "__main__":
    main()
