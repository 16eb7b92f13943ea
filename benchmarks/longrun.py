"""Long clips through a built model: wall time and peak RSS per clip length, each in a fresh process.

    python -m benchmarks.longrun --minutes 10 --steps 1            # a 10-minute song
    python -m benchmarks.longrun --seconds 10 60 --steps 1         # memory against length
    python -m benchmarks.longrun --seconds 10 60 300 --steps 1 --c2f-steps 1 --file --model M
        # the same from a stereo WAV file to the written output, through Model.vamp_file
    python -m benchmarks.longrun --seconds 10 600 --steps 1 --c2f-steps 1 --file --rate 48000 --pitch-shift 5
        # a 48 kHz file, resampled and pitch-shifted inside the model

The model defaults to the real-size build of `python -m benchmarks.realsize` (artifacts/realsize/).
Memory does not depend on the number of sampling steps (each step reuses the same buffers), so
`--steps 1 --c2f-steps 1` measures the memory of a full run in a fraction of its time; the time
grows about linearly with the steps. Peak RSS is the process's high-water mark (VmHWM) over
session load and run; the test signal is made in blocks, so that it adds no more than its own size.
With `--file` the signal goes into a stereo 16-bit WAV first (written in blocks, before the
measured process starts) and the run is what `vampnet-onnx vamp`'s is: read, mix, run (the arena
handed back at its end), restore, write. `--rate` makes the signal (and the file) at another rate,
which the model resamples; `--pitch-shift` sets the model's `pitch_shift` input.
With two lengths or more it prints the slope: the peak RSS's growth per second of audio (least
squares over the lengths), the memory a longer clip costs beyond the weights.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

from benchmarks.realsize import DEFAULT_OUT, SAMPLE_RATE, gb, ort_session, peak_rss, rss

DEFAULT_MODEL = DEFAULT_OUT / "vampnet.onnx"


def signal(seconds: float, rate: int = SAMPLE_RATE):
    """A few partials with noise at about -20 dBFS, made in 10 s blocks of float32, so that making a
    long song costs no more than the song itself (float32)."""
    import numpy as np

    n = int(round(seconds * rate))
    rng = np.random.default_rng(0)
    phases = rng.uniform(0, 2 * np.pi, 5)
    x = np.empty((1, n), np.float32)
    block = 10 * rate
    for start in range(0, n, block):
        t = np.arange(start, min(start + block, n)) / rate
        partials = sum(0.05 * np.sin(2 * np.pi * f * t + p) for f, p in zip((110, 220, 331, 440, 660), phases))
        x[0, start:start + t.size] = partials + 0.01 * rng.standard_normal(t.size)
    return x


def write_wav(path: Path, seconds: float, rate: int = SAMPLE_RATE) -> None:
    """`signal(seconds, rate)` on both channels of a 16-bit WAV, written in 10 s blocks."""
    import numpy as np
    import soundfile as sf

    x = signal(seconds, rate)[0]
    block = 10 * rate
    with sf.SoundFile(str(path), "w", rate, 2, "PCM_16", format="WAV") as f:
        for start in range(0, x.size, block):
            part = x[start:start + block]
            f.write(np.stack([part, 0.9 * part], axis=1))


def one_file_run(model: Path, src: Path, steps: int, c2f_steps: int, threads: int, onset_width: int,
                 rate: int, pitch_shift: int) -> dict:
    """`Model(model, release_memory=True).vamp_file(src, <tmp>/out.wav)`: the whole path of a run of
    `vampnet-onnx vamp`, file to file."""
    import tempfile

    import soundfile as sf

    from vampnet_onnx.model import Model

    t0 = time.perf_counter()
    vamp = Model(model, threads=threads, release_memory=True)  # as the vamp command
    load_s = time.perf_counter() - t0
    rss_loaded = rss()
    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / "out.wav"
        t0 = time.perf_counter()
        vamp.vamp_file(src, dst, seed=0, sampling_steps=steps, c2f_sampling_steps=c2f_steps,
                       onset_mask_width=onset_width, pitch_shift=pitch_shift)
        run_s = time.perf_counter() - t0
        info = sf.info(str(dst))
    return {"seconds_of_audio": info.frames / info.samplerate, "steps": steps, "c2f_steps": c2f_steps,
            "onset_mask_width": onset_width, "load_s": round(load_s, 2), "run_s": round(run_s, 1),
            "rss_after_load": rss_loaded, "peak_rss": peak_rss(), "output_shape": [info.frames, info.channels],
            "finite": True}


def slope_mb_per_s(results: list[dict]) -> float:
    """Least-squares growth of the peak RSS per second of audio, in MB/s."""
    import numpy as np

    s = np.array([r["seconds_of_audio"] for r in results], float)
    m = np.array([r["peak_rss"] for r in results], float) / 1e6
    return float(np.polyfit(s, m, 1)[0])


def one_run(model: Path, seconds: float, steps: int, c2f_steps: int, threads: int, onset_width: int,
            rate: int, pitch_shift: int) -> dict:
    import numpy as np

    from vampnet_onnx.session import interface_feeds

    audio = signal(seconds, rate)
    t0 = time.perf_counter()
    session = ort_session(model, threads)
    load_s = time.perf_counter() - t0
    rss_loaded = rss()
    feeds = interface_feeds(audio, seed=0, sampling_steps=steps, c2f_sampling_steps=c2f_steps,
                            onset_mask_width=onset_width, sample_rate=rate, pitch_shift=pitch_shift)
    t0 = time.perf_counter()
    out = session.run(["audio_out"], feeds)[0]
    return {
        "seconds_of_audio": seconds,
        "steps": steps,
        "c2f_steps": c2f_steps,
        "onset_mask_width": onset_width,
        "load_s": round(load_s, 2),
        "run_s": round(time.perf_counter() - t0, 1),
        "rss_after_load": rss_loaded,
        "peak_rss": peak_rss(),
        "output_shape": list(out.shape),
        "finite": bool(np.isfinite(out).all()),
    }


def run_in_fresh_process(model: Path, seconds: float, args) -> dict:
    command = [sys.executable, "-m", "benchmarks.longrun", "--one", str(seconds), "--model", str(model),
               "--steps", str(args.steps), "--c2f-steps", str(args.c2f_steps), "--threads", str(args.threads),
               "--onset-width", str(args.onset_width), "--rate", str(args.rate), "--pitch-shift", str(args.pitch_shift)]
    if args.file:
        import tempfile

        tmp = tempfile.TemporaryDirectory()
        src = Path(tmp.name) / "in.wav"
        write_wav(src, seconds, args.rate)
        command += ["--src", str(src)]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if proc.returncode != 0:
        raise RuntimeError(f"the {seconds} s run failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
    if args.file:
        tmp.cleanup()
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.longrun", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help=f"the model (default {DEFAULT_MODEL})")
    lengths = parser.add_mutually_exclusive_group()
    lengths.add_argument("--minutes", type=float, nargs="+", help="clip lengths in minutes")
    lengths.add_argument("--seconds", type=float, nargs="+", help="clip lengths in seconds")
    parser.add_argument("--steps", type=int, default=12, help="coarse sampling steps (default 12)")
    parser.add_argument("--c2f-steps", type=int, default=2, help="coarse-to-fine sampling steps (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads (default 2)")
    parser.add_argument("--onset-width", type=int, default=0, help="onset_mask_width (0: no onset detection)")
    parser.add_argument("--rate", type=int, default=SAMPLE_RATE, help=f"the signal's sample rate (default {SAMPLE_RATE})")
    parser.add_argument("--pitch-shift", type=int, default=0, help="the model's pitch_shift input (default 0)")
    parser.add_argument("--file", action="store_true",
                        help="from a stereo WAV file to a written WAV, through Model.vamp_file")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--one", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:
        run = partial(one_file_run, args.model, args.src) if args.src else partial(one_run, args.model, args.one)
        print(json.dumps(run(args.steps, args.c2f_steps, args.threads, args.onset_width, args.rate, args.pitch_shift)))
        return 0
    seconds = [60 * m for m in args.minutes] if args.minutes else (args.seconds or [600.0])
    results = []
    print(f"{args.model}: {args.steps} coarse / {args.c2f_steps} c2f steps, {args.threads} threads, "
          f"{args.rate} Hz, pitch shift {args.pitch_shift}", flush=True)
    print("| audio | load | run | RSS after load | peak RSS |\n|---|---|---|---|---|", flush=True)
    for s in seconds:
        r = run_in_fresh_process(args.model, s, args)
        results.append(r)
        print(f"| {s:g} s | {r['load_s']} s | {r['run_s']} s | {gb(r['rss_after_load'])} | {gb(r['peak_rss'])} |",
              flush=True)
    if len(results) > 1:
        print(f"slope: {slope_mb_per_s(results):.2f} MB of peak RSS per second of audio", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(r["finite"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
