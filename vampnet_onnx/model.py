"""The Python API: vamp an array or a file with every control as a keyword argument.

    from vampnet_onnx import Model

    model = Model("artifacts/vampnet.onnx", threads=4)
    model.vamp_file("in.wav", "out.wav", seed=1, periodic_prompt=13, temperature=0.9)
    result = model.vamp(samples, 48000, seed=1, variations=2)   # (frames,) or (frames, channels)
    result.audio[0]                   # (frames, channels) float32 at 48 kHz, the input's loudness
    result.seed, result.outputs["codes_out"]
    model.vamp(samples, 48000, preset="small variation", dropout=0.1)
    preview = model.mask(samples, 48000, seed=1, onset_mask_width=2)   # the mask alone, in ms
    preview.mask, preview.onsets, preview.beats

The controls are the model's parameters: one keyword per row of the interface table
(vampnet_onnx/interface.py), checked against its ranges; left out, they take the model's defaults.
``preset``: one of upstream's app presets (interface.PRESETS); its values for the inputs this model
has, under the controls given explicitly.
The input is prepared as upstream VampNet prepares it (the model's rate, mono, -24 LUFS) and the
output given back the input's rate, channels, length (times the time stretch) and loudness.
Problems raise one-line errors (vampnet_onnx.errors): UsageError for a bad keyword or value,
AudioError for audio and paths, ModelError for the model.
"""
from __future__ import annotations

import difflib
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .audio import (
    AtomicOutputs,
    PreparedAudio,
    check_output_path,
    choose_subtype,
    load_audio,
    output_format,
    prepare_audio,
    restore,
    same_file,
    write_audio_file,
)
from .errors import UsageError
from .interface import BY_NAME, CONTROLS, preset_values
from .maskfile import check_mask, load_mask
from .memory import MAX_VARIATIONS, check_memory
from .paths import model_files
from .plot import plot_available, write_plot
from .preview import Preview, mask_preview
from .progress import Bar, RateCache, work_units
from .session import ModelError, Session, disk_size, human_size, run_in_progress  # noqa: F401 - re-exported

CODE_OUTPUTS = ("codes", "mask_out", "coarse_codes", "codes_out")


@dataclass
class Vamped:
    """What a run made: ``audio`` (rows, frames, channels) float32 at ``rate`` (read-only: a view
    that repeats each row's mono output across the channels; copy it to change it), the seed it used,
    the model's raw outputs (``codes``, ``mask_out``, ``coarse_codes``, ``codes_out``, ``audio_out``)
    and the seconds the model ran."""

    audio: np.ndarray
    rate: int
    seed: int
    outputs: dict[str, np.ndarray]
    model_s: float
    controls: dict[str, Any]


def random_seed() -> int:
    """A seed for a run that was given none (the caller can print it before the run)."""
    return random.SystemRandom().randrange(1, 2**31)


def variation_paths(output: str | os.PathLike, n: int) -> list[Path]:
    """OUT for one variation; OUT-1.ext ... OUT-n.ext (before the extension) for n > 1."""
    p = Path(output)
    if n == 1:
        return [p]
    return [p.with_name(f"{p.stem}-{k}{p.suffix}") for k in range(1, n + 1)]


def check_controls(controls: dict[str, Any], call: str = "vamp") -> dict[str, Any]:
    """The controls given (None left out), each checked against the interface table; a one-line
    UsageError names a keyword that is not a control or a value out of its range."""
    checked = {}
    for name, value in controls.items():
        if name not in CONTROLS:
            close = difflib.get_close_matches(name, CONTROLS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else " (the controls are the model's inputs: see `vampnet-onnx vamp --help`)"
            raise UsageError(f"{call}() got an unknown keyword {name!r}{hint}")
        if value is not None:
            try:
                checked[name] = BY_NAME[name].check(value)
            except ValueError as e:
                raise UsageError(f"{call}(): {name} {e}") from None
    return checked


class Model(Session):
    """A vampnet-onnx model, loaded once and run many times (see the module docstring).

    ``threads``: onnxruntime intra-op threads (None or 0: its choice); ``providers``: its
    execution providers (default CPU)."""

    def controls_for(self, preset: str | None, controls: dict[str, Any], call: str = "vamp") -> dict[str, Any]:
        """The controls a run uses: the preset's values for the inputs this model has, then the
        controls given (checked; None left out). UsageError for an unknown preset or control."""
        base: dict[str, Any] = {}
        if preset is not None:
            try:
                base = preset_values(preset, self.inputs)
            except ValueError as e:
                raise UsageError(f"{call}(): {e}") from None
        return {**base, **check_controls(self._named_adapter(controls), call)}

    def vamp(self, audio: np.ndarray, rate: int, *, seed: int | None = None, variations: int | None = None,
             mask: np.ndarray | None = None, progress: bool | Bar = False, preset: str | None = None,
             **controls: Any) -> Vamped:
        """Vamp ``audio`` ((frames,) or (frames, channels) at ``rate`` Hz).

        ``seed``: None draws a random one (``result.seed`` says which). ``variations``: rows
        generated in one batch (default 1, or the mask's rows). ``mask``: an explicit mask, 0/1 of
        shape (codebooks, T) or (B, codebooks, T), T = the input's frames at the model's rate and
        hop, before any time stretch; 1 = generate. ``progress``: True draws a bar with the time
        left on stderr (a ``progress.Bar`` to choose where). ``preset``: an app preset under the
        ``controls``, the model's parameters.
        """
        controls = self.controls_for(preset, controls)
        prepared = prepare_audio(audio, rate)
        return self._vamp(prepared, seed, variations, mask, progress, controls)

    def vamp_file(self, src: str | os.PathLike, dst: str | os.PathLike, *, seed: int | None = None,
                  variations: int | None = None, mask: np.ndarray | str | os.PathLike | None = None,
                  save_codes: str | os.PathLike | None = None, plot: str | os.PathLike | None = None,
                  progress: bool | Bar = False, preset: str | None = None, **controls: Any) -> Vamped:
        """Vamp the audio file ``src`` into ``dst`` (format from its extension; with variations
        > 1: DST-1.ext ... DST-N.ext). ``mask``: an array or a .npy/.npz file (key 'mask').
        ``save_codes``: an .npz of the codes, the mask, the seed and the controls; ``plot``: a PNG
        of input codes, mask and output codes (needs matplotlib). Every output is written
        atomically, after the run: an error or an interrupt leaves none of them behind.
        Other keywords as ``vamp``."""
        controls = self.controls_for(preset, controls, "vamp_file")
        src = Path(src)
        output_format(dst)
        if plot and not plot_available():
            raise UsageError("plot needs matplotlib, which is not installed: "
                             "pip install matplotlib (or pip install -e .[plot])")
        protected = [("the input audio", src)] + [("the model", f) for f in model_files(self.path)]
        if mask is not None and not isinstance(mask, np.ndarray):
            protected.append(("the mask file", Path(mask)))
            mask = load_mask(mask)
        rows = self._rows(variations, mask)
        audio_paths = variation_paths(dst, rows)
        extra = [Path(p) for p in (save_codes, plot) if p]
        outputs = audio_paths + extra
        for p in outputs:
            check_output_path(p, inputs=protected)
        for i, a in enumerate(outputs):
            for b in outputs[i + 1:]:
                if same_file(a, b):
                    raise UsageError(f"the same path is given for two outputs: {a}")

        prepared = load_audio(src)
        fmt = output_format(dst)
        subtype = choose_subtype(fmt, prepared.subtype, rate=prepared.sample_rate,
                                 channels=prepared.channels, path=dst)
        result = self._vamp(prepared, seed, rows, mask, progress, controls)

        with AtomicOutputs() as w:
            for row, path in enumerate(audio_paths):
                w.add(path, lambda tmp, y=result.audio[row], path=path: write_audio_file(
                    tmp, y, prepared.sample_rate, fmt, subtype, path))
            if save_codes:
                w.add(save_codes, lambda tmp: _save_codes(tmp, result))
            if plot:
                out = result.outputs
                missing = [k for k in ("codes", "mask_out", "codes_out") if k not in out]
                if missing:
                    raise ModelError(f"plot: the model has no output {', '.join(missing)}")

                def save_png(tmp: Path) -> None:
                    with open(tmp, "wb") as f:
                        write_plot(f, out["codes"], out["mask_out"], out["codes_out"],
                                   title=f"{src.name}  seed {result.seed}")
                w.add(plot, save_png)
        return result

    def mask(self, audio: np.ndarray, rate: int, *, seed: int | None = None, preset: str | None = None,
             **controls: Any) -> Preview:
        """The mask ``vamp`` would use for the same audio, seed, preset and controls, without
        generating (the model's ``generate`` 0: no codec, no transformers), with the note onsets
        and beats it keeps (vampnet_onnx/preview.py). ``seed`` None draws one (``.seed`` says
        which)."""
        controls = self.controls_for(preset, controls, "mask")
        if "generate" not in self.inputs:
            raise ModelError(f"{self.path} has no `generate` input: rebuild it with this version to preview masks")
        prepared = prepare_audio(audio, rate)
        feeds = {**controls, "sample_rate": prepared.sample_rate,
                 "seed": random_seed() if seed is None else BY_NAME["seed"].check(seed)}
        return mask_preview(self, prepared.samples, feeds)

    # -- the run ------------------------------------------------------------------------------

    def _named_adapter(self, controls: dict[str, Any]) -> dict[str, Any]:
        """`adapter` as a name of the model's fine-tunes (its metadata; the command line's text goes
        here too); an integer is the graph's, which clamps it."""
        if isinstance(controls.get("adapter"), str):
            controls = {**controls, "adapter": self.adapter_index(controls["adapter"])}
        return controls

    @staticmethod
    def _rows(variations: int | None, mask: np.ndarray | None) -> int:
        if variations is not None and not (isinstance(variations, (int, np.integer)) and 1 <= variations <= MAX_VARIATIONS):
            raise UsageError(f"variations must be an integer between 1 and {MAX_VARIATIONS}, got {variations!r}")
        mask_rows = None if mask is None else check_mask(mask).shape[0]
        if mask_rows is not None and mask_rows > 1:
            if variations is not None and variations != mask_rows:
                raise UsageError(f"the mask has {mask_rows} rows but variations is {variations} "
                                 f"(give a mask with 1 or {variations} rows)")
            if mask_rows > MAX_VARIATIONS:
                raise UsageError(f"the mask has {mask_rows} rows: at most {MAX_VARIATIONS} variations")
            return mask_rows
        return int(variations or 1)

    def _vamp(self, prepared: PreparedAudio, seed: int | None, variations: int | None,
              mask: np.ndarray | None, progress: bool | Bar, controls: dict[str, Any]) -> Vamped:
        rows = self._rows(variations, mask)
        S = prepared.samples.shape[0]
        T = self.frames_for(S, prepared.sample_rate)  # frames at the model's rate
        check_memory(rows, T * self.hop, self.sample_rate, self.path)
        feeds: dict[str, Any] = {**controls, "sample_rate": prepared.sample_rate}
        if mask is not None:
            mask = check_mask(mask)
            if mask.shape[2] != T:
                raise UsageError(f"the mask has {mask.shape[2]} frames but this input has {T} "
                                 f"({S} samples at {prepared.sample_rate} Hz are {T} frames at {self.sample_rate} Hz, hop {self.hop}; "
                                 f"with a time stretch the mask is given before stretching)")
            if mask.shape[1] != self.n_codebooks:
                raise UsageError(f"the mask has {mask.shape[1]} codebooks, the model {self.n_codebooks}")
            feeds["mask"] = np.ascontiguousarray(np.broadcast_to(mask, (rows, mask.shape[1], T)))
        for name in ("sampling_steps", "c2f_sampling_steps"):
            if feeds.get(name, 0) > self.max_sampling_steps:
                raise UsageError(f"{name} {feeds[name]}: this model runs at most {self.max_sampling_steps} steps")
        feeds["seed"] = random_seed() if seed is None else BY_NAME["seed"].check(seed)
        batch = np.ascontiguousarray(np.broadcast_to(prepared.samples[None, :], (rows, S)))

        bar = progress if isinstance(progress, Bar) else Bar() if progress else None
        units = work_units(S / prepared.sample_rate, rows=rows, **{**self.defaults(), **controls})
        cache = RateCache(self.path, self.threads) if bar is not None else None
        if bar is not None:
            rate = cache.get()
            bar.start(None if rate is None else rate * units)
        t0 = time.monotonic()
        try:
            out = self.run(batch, tick=bar, **feeds)
        finally:
            if bar is not None:
                bar.clear()
        model_s = time.monotonic() - t0
        if bar is not None:
            bar.finish(model_s)
            cache.put(model_s / units)

        audio_out = out.get("audio_out")
        if audio_out is None or audio_out.shape[0] != rows:
            raise ModelError(f"the model returned no audio_out of {rows} rows")
        # the output is the input's length times the time stretch (the factor as the model clamped it)
        stretch = audio_out.shape[1] // S
        if stretch < 1 or audio_out.shape[1] != stretch * S:
            raise ModelError(f"the model returned {audio_out.shape[1]} samples for {S}: not a whole multiple")
        audio = restore(audio_out, prepared, stretch)  # a view of audio_out where it needs no change
        return Vamped(audio, prepared.sample_rate, int(feeds["seed"]), out, model_s, controls)


def _save_codes(tmp: Path, result: Vamped) -> None:
    out = result.outputs
    arrays = {k: out[k] for k in CODE_OUTPUTS if k in out}
    if "mask_out" in out:
        arrays["mask"] = out["mask_out"]
    params = {**result.controls, "seed": result.seed}
    with open(tmp, "wb") as f:
        np.savez(f, seed=np.int64(result.seed), params=np.array(json.dumps(params)), **arrays)
