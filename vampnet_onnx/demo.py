"""`vampnet-onnx demo`: the product's main job, end to end, on an embedded default model.

    demo_command(args)   # args.output: output folder (default artifacts/demo); args.seed: int or None

Works offline on a fresh clone. Everything lives in the output folder ``OUT``:

* ``OUT/vampnet-tiny.onnx``: the default model. If it is missing, tiny checkpoints with RANDOM
  weights (VampNet's exact architecture and on-disk format, tiny shapes: the upstream fixtures'
  configuration) are written to ``OUT/checkpoints/`` with a fixed seed and the single model is built
  from them exactly as ``vampnet-onnx build`` does (about a minute). Later runs reuse it (delete it
  to rebuild).
* ``OUT/input.wav``: a synthesised, deterministic example clip (a plucked melody over a small drum
  pattern, mono at the model's rate).
* ``OUT/output.wav`` and ``OUT/codes.png``: the result of running the model on the clip through the
  very same code as ``vampnet-onnx vamp`` (``Model.vamp_file``), and its picture (input codes, mask,
  output codes; skipped with a note when matplotlib is missing).

Only the build step needs torch (it is imported lazily): with the model already built, the demo runs
on the host runtime alone.
"""
from __future__ import annotations

import argparse
import shlex
import time
import warnings
from pathlib import Path

import numpy as np

from .audio import write_audio
from .errors import UsageError, one_line
from .extras import missing_build_extras
from .interface import FORMAT_VERSION, INPUT_NAMES, OUTPUT_NAMES
from .model import Model
from .paths import DEFAULT_MODEL, DEMO_DIR, DEMO_MODEL_NAME
from .plot import plot_available
from .progress import Bar
from .session import disk_size, human_size

MODEL_NAME = DEMO_MODEL_NAME
CHECKPOINT_DIR = "checkpoints"
INPUT_NAME = "input.wav"
OUTPUT_NAME = "output.wav"
PLOT_NAME = "codes.png"
CHECKPOINT_SEED = 0
"""Seed of the random tiny checkpoints (fixed: every fresh clone builds the same model)."""
DEMO_SEED = 7
"""The model's seed when ``--seed`` is not given (fixed: the demo is reproducible)."""
CLIP_SECONDS = 4.0
"""Length of the example clip: longer than one coarse-to-fine chunk (173 frames, about 3 s)."""
CLIP_SEED = 1234


# --------------------------------------------------------------------------------------------
# the example clip


def _midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12.0)


def _pluck(freq: float, seconds: float, sr: int) -> np.ndarray:
    """A plucked-string-like note: decaying harmonics (higher ones decay faster), 3 ms attack."""
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    y = np.zeros(n)
    for k in range(1, 9):
        if k * freq >= sr / 2:
            break
        y += (0.65 ** (k - 1)) * np.exp(-(2.5 + 1.8 * k) * t) * np.sin(2 * np.pi * k * freq * t)
    attack = min(n, int(0.003 * sr))
    y[:attack] *= np.linspace(0.0, 1.0, attack, endpoint=False)
    return y


def synth_clip(sr: int, seconds: float = CLIP_SECONDS, seed: int = CLIP_SEED) -> np.ndarray:
    """The demo's example clip: float32 (n,), peak 0.5, deterministic.

    120 BPM: an A-minor-pentatonic melody of plucked eighth notes, a plucked bass on the half
    bars, a kick on beats 1 and 3, a noise snare on 2 and 4 and a short noise hi-hat on every
    eighth note.
    """
    n = int(round(seconds * sr))
    out = np.zeros(n)
    rng = np.random.default_rng(seed)
    beat = 0.5
    eighth = beat / 2

    def add(start_s: float, sound: np.ndarray, gain: float) -> None:
        i = int(round(start_s * sr))
        if i >= n:
            return
        m = min(len(sound), n - i)
        out[i:i + m] += gain * sound[:m]

    melody = [69, 72, 76, 74, 72, 69, 67, 69, 72, 74, 76, 79, 76, 74, 72, None]
    bass = [45, 45, 41, 43]
    bar = 4 * beat
    for k in range(int(np.ceil(seconds / eighth))):
        note = melody[k % len(melody)]
        if note is not None:
            add(k * eighth, _pluck(_midi_hz(note), 0.9, sr), 0.35)
    for k in range(int(np.ceil(seconds / (bar / 2)))):
        add(k * bar / 2, _pluck(_midi_hz(bass[k % len(bass)]), 1.0, sr), 0.45)

    t_kick = np.arange(int(0.35 * sr)) / sr
    kick = np.sin(2 * np.pi * (50 * t_kick + (110 / 25) * (1 - np.exp(-25 * t_kick)))) * np.exp(-9 * t_kick)
    n_snare = int(0.2 * sr)
    t_snare = np.arange(n_snare) / sr
    snare_noise = rng.standard_normal(n_snare)
    snare = (np.diff(snare_noise, prepend=0.0) * 0.6 * np.exp(-22 * t_snare)
             + 0.5 * np.sin(2 * np.pi * 190 * t_snare) * np.exp(-30 * t_snare))
    n_hat = int(0.05 * sr)
    t_hat = np.arange(n_hat) / sr
    hat_noise = rng.standard_normal(n_hat + 2)
    hat = (hat_noise[2:] - 2 * hat_noise[1:-1] + hat_noise[:-2]) * 0.25 * np.exp(-90 * t_hat)
    for k in range(int(np.ceil(seconds / beat))):
        add(k * beat, kick if k % 2 == 0 else snare, 0.9 if k % 2 == 0 else 0.5)
    for k in range(int(np.ceil(seconds / eighth))):
        add(k * eighth, hat, 0.25 if k % 2 else 0.15)

    out *= 0.5 / np.max(np.abs(out))
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------------
# the model


def stale_reason(path: Path) -> str | None:
    """None if the model at ``path`` can be reused; else why not.

    A cheap check (no onnxruntime session): the file parses, has the interface's inputs and
    outputs and its format version. Needs onnx; without it (a runtime-only install) an existing
    model is trusted.
    """
    try:
        import onnx
    except ImportError:
        return None
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file
        return f"cannot read it: {one_line(e)}"
    inputs = {i.name for i in proto.graph.input}
    outputs = {o.name for o in proto.graph.output}
    missing = [n for n in INPUT_NAMES if n not in inputs] + [n for n in OUTPUT_NAMES if n not in outputs]
    if missing:
        return f"it lacks {', '.join(missing)} (built by an older version?)"
    version = {p.key: p.value for p in proto.metadata_props}.get("format_version")
    if version != FORMAT_VERSION:
        return f"its format version is {version}, this version builds {FORMAT_VERSION}"
    return None


def build_demo_model(folder: Path, log=print) -> Path:
    """Write the random tiny checkpoints into ``folder/checkpoints`` and build ``folder/MODEL_NAME``."""
    try:
        from vampnet_onnx.builder.build import build_model
        from vampnet_onnx.builder.synthetic import TINY_C2F, TINY_COARSE, TINY_CODEC, write_random_checkpoints
    except ImportError as e:
        missing = missing_build_extras("demo", e)
        if missing:
            raise missing from e
        raise
    model = folder / MODEL_NAME
    ckpt_dir = folder / CHECKPOINT_DIR
    log(f"writing tiny checkpoints with RANDOM weights (seed {CHECKPOINT_SEED}) to {ckpt_dir}")
    paths = write_random_checkpoints(ckpt_dir, TINY_CODEC, TINY_COARSE, TINY_C2F, seed=CHECKPOINT_SEED)
    log(f"building {model} from them (a minute or so; later runs reuse it)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.export's internal deprecation noise
        warnings.simplefilter("ignore", DeprecationWarning)
        build_model(paths["codec"], paths["coarse"], paths["c2f"], model, log=log)
    return model


# --------------------------------------------------------------------------------------------
# the command


def demo_command(args: argparse.Namespace) -> int:
    started = time.monotonic()
    folder = Path(getattr(args, "output", None) or DEMO_DIR)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"demo output is not a folder: {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / MODEL_NAME
    clip = folder / INPUT_NAME
    out = folder / OUTPUT_NAME
    png = folder / PLOT_NAME
    seed = getattr(args, "seed", None)
    seed = DEMO_SEED if seed is None else seed
    if model.exists() and not model.is_file():
        raise UsageError(f"the demo model path is not a file: {model}")

    print("== vampnet-onnx demo ==")
    built = False
    problem = stale_reason(model) if model.is_file() else "missing"
    if problem is None:
        print(f"model: {model} (already built; delete it to rebuild)")
    else:
        if problem != "missing":
            print(f"model: {model} is not usable ({problem}); rebuilding it")
        else:
            print(f"model: {model} not found; building it")
        build_demo_model(folder)
        built = True

    vampnet = Model(model)
    rate = vampnet.sample_rate
    seconds = CLIP_SECONDS
    write_audio(clip, synth_clip(rate, seconds)[:, None], rate, subtype="PCM_16")
    print(f"input: {clip} (synthesised example clip: {seconds:g} s plucked melody and drums, "
          f"{rate} Hz mono)")

    plot = plot_available()
    argv = ["vamp", str(clip), "-o", str(out), "-m", str(model), f"--seed={seed}"]
    argv += ["--plot", str(png)] if plot else []
    print("running the equivalent of: " + shlex.join(["vampnet-onnx", *argv]))
    print(f"seed: {seed}")
    vampnet.vamp_file(clip, out, seed=seed, plot=png if plot else None, progress=Bar("model"))

    total, _ = disk_size(model)
    print()
    print(f"Done in {time.monotonic() - started:.1f} s. Files in {folder}:")
    origin = "just built" if built else "reused"
    ckpt = folder / CHECKPOINT_DIR
    where = f"; random checkpoints in {ckpt}" if ckpt.is_dir() else ""
    print(f"  {model}  the model ({human_size(total)}, {origin}{where})")
    print(f"  {clip}  the example input")
    print(f"  {out}  the model's output (same rate, length and loudness as the input)")
    if plot:
        print(f"  {png}  input codes, mask (1 = generate) and output codes")
    else:
        print(f"  (no {PLOT_NAME}: matplotlib is not installed; pip install matplotlib for the picture)")
    print()
    print("NOTE: this demo model has RANDOM weights (tiny synthetic checkpoints in VampNet's real")
    print("architecture and file format), so its output is noise-like, not music. It demonstrates")
    print("the pipeline: audio mixed to mono -> one ONNX model (resampling and -24 LUFS, codec encoder,")
    print("mask, coarse and coarse-to-fine sampling, codec decoder, the input's rate and loudness)")
    print("-> audio, with onnxruntime only.")
    print()
    print("To use real VampNet checkpoints instead:")
    print("  vampnet-onnx build --checkpoints DIR     # DIR holds codec.pth, coarse.pth, c2f.pth;")
    print(f"                                           # writes {DEFAULT_MODEL}")
    print(f"  vampnet-onnx vamp in.wav -o out.wav      # uses {DEFAULT_MODEL} (or -m MODEL);")
    print("                                           # until it exists, this demo model")
    print("  vampnet-onnx vamp --help                 # mask and sampling options")
    return 0
