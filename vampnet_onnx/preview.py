"""The mask preview: the mask `vamp` would use, from the model's run with `generate` 0, and its picture.

`Model.mask(audio, rate, seed=, preset=, **controls)` (vampnet_onnx/model.py) is the way in: it
prepares the audio and the feeds as `vamp` does and calls `mask_preview(model, audio, feeds)`, which
runs the model with `generate` = 0 (the graph builds the mask
and skips the codec and generation: milliseconds, at any model size) with the feeds `vamp` would
use, and returns the mask with the note onsets and beats it was built around. The model has no
output for those, so they are read back from two more mask-only runs that isolate one prompt each
(every other prompt off, all codebooks generated):

* onsets: `onset_mask_width` 1 keeps the frames {o − 1, o} of every onset o. The detector's
  onsets are local minima of its envelope (librosa's backtracking), never on neighbouring frames,
  so these pairs do not overlap and a kept run [a, b] is the onsets a + 1, a + 3, ..., b. An onset
  at frame 0 keeps nothing in upstream's mask (its range starts at −W, which Python's slicing
  reads from the end) and is not marked either: the marks are the onsets that shape the mask.
* beats (a model with `beat_mask_ms`): half a frame's milliseconds keep exactly the beat frames.

The picture (matplotlib: the `plot` extra) shows codebooks over time in seconds, kept and
generated tokens in two colours, onsets and beats as vertical lines. Runtime only: no torch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KEPT_COLOUR = "#1f5fa8"  # blue: tokens kept from the input
GENERATED_COLOUR = "#f2b25c"  # light orange: tokens the model generates
ONSET_COLOUR = "#111111"
BEAT_COLOUR = "#c0231b"


@dataclass(frozen=True)
class Preview:
    mask: np.ndarray  # int64 (K, T): 1 = generate, 0 = keep (the first row of mask_out)
    frame_rate: float  # frames per second of the output (sample rate / hop)
    onsets: list[int]  # frames of the note onsets the onset prompt keeps
    beats: list[int]  # frames of the beats the beat prompt keeps
    seed: int | None = None  # the seed of the run (give `vamp` the same to generate with this mask)

    @property
    def seconds(self) -> float:
        return self.mask.shape[1] / self.frame_rate


def _isolated(model, feeds: dict, values: dict) -> dict:
    """`feeds` (the seed, ...) in which only the prompt in `values` keeps anything, all codebooks
    generated, unstretched."""
    off = {"rand_mask_intensity": 1.0, "prefix_s": 0.0, "suffix_s": 0.0, "periodic_prompt": 0,
           "dropout": 0.0, "ncc": 0, "upper_codebook_mask": model.n_codebooks, "onset_mask_width": 0,
           "beat_mask_ms": 0.0, "time_stretch_factor": 1, "mask": None, "generate": 0}
    return {k: v for k, v in {**feeds, **off, **values}.items() if k in model.inputs}


def kept_runs(row: np.ndarray) -> list[tuple[int, int]]:
    """[(a, b)] of every run of kept frames (row == 0) of a (T,) mask row, b inclusive."""
    kept = np.concatenate([[False], row == 0, [False]])
    edges = np.flatnonzero(kept[1:] != kept[:-1])
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2])]


def mask_preview(model, audio: np.ndarray, feeds: dict) -> Preview:
    """The mask of `model.run(audio[None], **feeds)` (a vampnet_onnx.session.Session; audio (S,)
    mono at `feeds["sample_rate"]`, else at the model's default rate), and the onset and beat
    frames it was built around."""
    row = np.asarray(audio, np.float32)[None]
    used = {**model.defaults(), **{k: v for k, v in feeds.items() if v is not None}}
    mask = model.run(row, **{**feeds, "generate": 0})["mask_out"][0]
    stretch = mask.shape[1] // max(model.frames_for(row.shape[1], used.get("sample_rate")), 1)
    onsets, beats = [], []
    if used.get("onset_mask_width", 0) > 0 and "mask" not in feeds:
        isolated = model.run(row, **_isolated(model, feeds, {"onset_mask_width": 1}))
        onsets = [t * stretch for a, b in kept_runs(isolated["mask_out"][0, 0]) for t in range(a + 1, b + 1, 2)]
    if used.get("beat_mask_ms", 0) > 0 and "mask" not in feeds:
        half_frame_ms = 500.0 * model.hop / model.sample_rate
        isolated = model.run(row, **_isolated(model, feeds, {"beat_mask_ms": half_frame_ms}))
        beats = [int(t) * stretch for t in np.flatnonzero(isolated["mask_out"][0, 0] == 0)]
    seed = used.get("seed")
    return Preview(mask, model.sample_rate / model.hop, onsets, beats, None if seed is None else int(seed))


def write_preview(path, preview: Preview, title: str = "") -> None:
    """A PNG of the preview: codebook 0 at the bottom, time in seconds, a legend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    K, T = preview.mask.shape
    # about 1.5 pixels per frame (at 100 dpi), so that a single kept frame stays visible
    fig = Figure(figsize=(min(40.0, max(8.0, 2.5 + 0.015 * T)), 3.6))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.imshow(preview.mask, aspect="auto", origin="lower", interpolation="nearest",
              cmap=ListedColormap([KEPT_COLOUR, GENERATED_COLOUR]), vmin=0, vmax=1,
              extent=(0.0, preview.seconds, -0.5, K - 0.5))
    for frames, colour, style in ((preview.onsets, ONSET_COLOUR, "--"), (preview.beats, BEAT_COLOUR, "-")):
        for t in frames:
            ax.axvline(t / preview.frame_rate, color=colour, linestyle=style, linewidth=1.2)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("codebook")
    ax.set_yticks(range(K))
    ax.tick_params(axis="y", labelsize=7)
    kept = 1.0 - float(preview.mask.mean())
    handles = [Patch(color=KEPT_COLOUR, label=f"kept from the input ({kept:.0%})"),
               Patch(color=GENERATED_COLOUR, label="generated")]
    if preview.onsets:
        handles.append(Line2D([], [], color=ONSET_COLOUR, linestyle="--", label="note onset"))
    if preview.beats:
        handles.append(Line2D([], [], color=BEAT_COLOUR, label="beat"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    if title:
        ax.set_title(title, fontsize=9, loc="left")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
