"""Upstream's app presets (vampnet_onnx/interface.py, PRESETS) and the mask preview (`generate` 0,
vampnet_onnx/preview.py, `vampnet-onnx mask`), on the tiny model.

A preset's run must show its own flags in `mask_out`; the preview's mask must be the full run's
for the same seed and flags; the `mask` command runs without torch.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf

from conftest import runtime_only
from vampnet_onnx import cli
from vampnet_onnx.errors import UsageError
from vampnet_onnx.flags import controls
from vampnet_onnx.interface import PRESET_INPUTS, PRESETS, preset_values, presets_markdown
from vampnet_onnx.model import Model
from vampnet_onnx.preview import kept_runs, mask_preview

REPO = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 44100  # the tiny model's rate
HOP = 768
CODEBOOKS = 14
VOCAB = 1024  # the mask token: the preview's placeholder codes
BLOCKED = ("torch", "onnx", "onnxscript", "vampnet_onnx.builder", "vampnet_onnx.graphs", "ray")


def notes(seconds: float = 4.0) -> np.ndarray:
    """Decaying tones every half second (clear onsets) over faint noise, mono float32."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    x = 0.005 * np.random.default_rng(0).standard_normal(t.size)
    for k, start in enumerate(np.arange(0.25, seconds, 0.5)):
        late = np.clip(t - start, 0, None)
        x += (t >= start) * 0.3 * np.sin(2 * np.pi * (220, 330, 262, 392)[k % 4] * late) * np.exp(-6 * late)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def model(model_path) -> Model:
    return Model(model_path)


def run(model: Model, **inputs) -> dict[str, np.ndarray]:
    return model.run(notes()[None], sampling_steps=2, c2f_sampling_steps=1, **inputs)


def rolled_periodic(T: int, period: int) -> list[set[int]]:
    """Every frame set the periodic prompt (width 1) can keep: anchors 0, P, ... rolled by 0..P-1."""
    anchors = range(0, T, period)
    return [{(a + off) % T for a in anchors} for off in range(period)]


# ------------------------------------------------------------------------------------ presets


@pytest.mark.parametrize("name", list(PRESETS))
def test_each_preset_shows_its_flags_in_the_mask(model, name):
    preset = PRESETS[name]
    values = preset_values(name, model.inputs)
    out = run(model, seed=11, **values)
    mask, T = out["mask_out"][0], out["mask_out"].shape[2]
    upper = preset["upper_codebook_mask"]
    assert (mask[upper:] == 1).all()  # codebooks >= upper: all generated
    assert (mask[:upper] == mask[0]).all()  # every prompt keeps whole frames
    assert ((out["codes_out"] == out["codes"]) | (out["mask_out"] == 1)).all()  # kept tokens stay
    kept = set(np.flatnonzero(mask[0] == 0).tolist())

    beats = "beat_mask_ms" in model.inputs and preset["beat_mask_ms"] > 0
    if beats:
        # stricter with the beat input: the mask is the other flags' mask, less the beat regions,
        # each beat keeping ceil(ms · rate / hop / 1000) frames
        without = run(model, seed=11, **{**values, "beat_mask_ms": 0.0})["mask_out"][0, 0]
        beat_only = run(model, seed=11, **{**values, "periodic_prompt": 0, "dropout": 0.0})["mask_out"][0, 0]
        np.testing.assert_array_equal(mask[0], np.minimum(without, beat_only))
        width = math.ceil(preset["beat_mask_ms"] * SAMPLE_RATE / HOP / 1000)
        runs = kept_runs(beat_only)
        assert runs and all(b - a + 1 == width for a, b in runs if b < T - 1), runs
        kept = set(np.flatnonzero(without == 0).tolist())
    period = preset["periodic_prompt"]
    if period == 0:
        assert not kept  # no prompt but the beats: nothing else kept
    elif preset["dropout"] == 0:
        assert kept in rolled_periodic(T, period)
    else:  # dropout re-masks int(T·p) frames (with repeats) of a periodic prompt
        candidates = [s for s in rolled_periodic(T, period) if kept <= s]
        assert candidates, sorted(kept)
        assert len(candidates[0]) - int(T * preset["dropout"]) <= len(kept) <= len(candidates[0])


def test_presets_are_upstreams_table():
    assert set(PRESET_INPUTS) == {"periodic_prompt", "upper_codebook_mask", "onset_mask_width", "dropout",
                                  "beat_mask_ms"}
    assert len(PRESETS) == 8 and all(set(v) == set(PRESET_INPUTS) for v in PRESETS.values())
    assert preset_values("timbre transfer") == {"periodic_prompt": 2, "upper_codebook_mask": 1,
                                                "onset_mask_width": 0, "dropout": 0.0, "beat_mask_ms": 0.0}
    assert "beat_mask_ms" not in preset_values("small variation (follow beat)", {"periodic_prompt": None})


def test_the_model_carries_the_presets(model_path):
    metadata = {p.key: p.value for p in onnx.load(str(model_path), load_external_data=False).metadata_props}
    assert json.loads(metadata["presets"]) == PRESETS


def test_readme_presets_table_is_the_interface():
    readme = (REPO / "README.md").read_text()
    start = readme.index("<!-- presets table: generated -->\n") + len("<!-- presets table: generated -->\n")
    end = readme.index("<!-- end of presets table -->")
    assert readme[start:end].strip() == presets_markdown()


def test_explicit_flags_win_over_the_preset(model):
    args = cli.build_parser().parse_args(["vamp", "IN", "-o", "OUT.wav", "--seed", "1", "--preset",
                                          "small variation (follow beat)", "--upper-codebook-mask", "2"])
    given = controls(args)
    used = model.controls_for(given.pop("preset"), given)
    assert used["upper_codebook_mask"] == 2 and used["periodic_prompt"] == 7
    assert ("beat_mask_ms" in used) == ("beat_mask_ms" in model.inputs)  # only the model's inputs


def test_model_mask_is_the_mask_vamp_uses_with_the_same_preset(model):
    """``Model.mask`` (what `vampnet-onnx mask` runs) and ``Model.vamp`` merge the preset alike."""
    audio = np.stack([notes(), 0.5 * notes()], axis=1)  # stereo, at a rate the model resamples
    settings = dict(seed=3, preset="medium variation", upper_codebook_mask=2, sampling_steps=2, c2f_sampling_steps=1)
    preview = model.mask(audio, 48000, **settings)
    result = model.vamp(audio, 48000, **settings)
    np.testing.assert_array_equal(preview.mask, result.outputs["mask_out"][0])
    assert preview.seed == result.seed == 3
    assert result.controls["periodic_prompt"] == 7 and result.controls["upper_codebook_mask"] == 2
    assert (preview.mask[2:] == 1).all() and (preview.mask[:2] == 0).any()


@pytest.mark.parametrize("call", ["vamp", "mask"])
def test_an_unknown_preset_is_a_usage_error_of_the_api(model, call):
    with pytest.raises(UsageError, match=r"unknown preset 'huge variation'.*'timbre transfer'"):
        getattr(model, call)(notes(), SAMPLE_RATE, preset="huge variation")


def test_an_unknown_preset_gets_a_one_line_error_listing_the_presets(tmp_path):
    err = subprocess.run([sys.executable, "-m", "vampnet_onnx", "vamp", "in.wav", "-o", "out.wav",
                          "--preset", "huge variation"], capture_output=True, text=True, cwd=tmp_path)
    assert err.returncode == 2
    lines = err.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vampnet-onnx: error: "), err.stderr
    assert "'huge variation'" in lines[0] and all(f"'{name}'" in lines[0] for name in PRESETS)


def test_help_and_info_list_the_presets(model_path):
    text = subprocess.run([sys.executable, "-m", "vampnet_onnx", "--help"], capture_output=True, text=True).stdout
    info = subprocess.run([sys.executable, "-m", "vampnet_onnx", "info", str(model_path)],
                          capture_output=True, text=True).stdout
    for name in PRESETS:
        assert f"  {name}: periodic_prompt " in text and f"  {name}: periodic_prompt " in info


# ------------------------------------------------------------------------------ the preview


@pytest.mark.parametrize("flags", [
    {},
    {"periodic_prompt": 3, "periodic_prompt_width": 2, "ncc": 1},
    {"onset_mask_width": 3, "periodic_prompt": 0},
    {"onset_mask_width": 2, "dropout": 0.3, "rand_mask_intensity": 0.8},
    {"prefix_s": 0.5, "suffix_s": 0.25, "time_stretch_factor": 2},
    {"preset": "large variation"},
])
def test_the_preview_is_the_full_runs_mask_without_generating(model, flags):
    inputs = preset_values(flags.pop("preset"), model.inputs) if "preset" in flags else flags
    full = run(model, seed=5, **inputs)
    preview = run(model, seed=5, generate=0, **inputs)
    np.testing.assert_array_equal(preview["mask_out"], full["mask_out"])
    for name in ("codes", "coarse_codes", "codes_out"):  # no codec, no generation: placeholders
        assert preview[name].shape == full[name].shape and (preview[name] == VOCAB).all(), name
    assert preview["audio_out"].shape == full["audio_out"].shape and not preview["audio_out"].any()


def test_the_previews_onsets_are_the_ones_the_mask_keeps(model):
    """The onsets read back (preview.py) rebuild the onset prompt of another width exactly."""
    audio = notes()
    preview = mask_preview(model, audio, {"seed": 0, "onset_mask_width": 3})
    assert len(preview.onsets) >= 6 and preview.beats == []  # eight notes, some merged or at frame 0
    only = model.run(audio[None], generate=0, onset_mask_width=3, periodic_prompt=0,
                     upper_codebook_mask=CODEBOOKS)["mask_out"][0, 0]
    T = only.size
    rebuilt = np.ones(T, np.int64)
    for o in preview.onsets:
        rebuilt[slice(o - 3, o + 3)] = 0  # upstream's slice, Python's rules
    np.testing.assert_array_equal(rebuilt, only)
    stretched = mask_preview(model, audio, {"seed": 0, "onset_mask_width": 3, "time_stretch_factor": 2})
    assert stretched.onsets == [2 * o for o in preview.onsets]


def test_mask_command_draws_the_preview_without_torch(model_path, tmp_path):
    sf.write(tmp_path / "notes.wav", notes(), SAMPLE_RATE)
    p = subprocess.run([sys.executable, "-c", runtime_only(BLOCKED), "mask", "notes.wav", "--plot", "mask.png",
                        "-m", str(model_path), "--seed", "4", "--preset", "medium variation",
                        "--onset-mask-width", "2"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "seed: 4" in p.stdout and "onsets" in p.stdout
    png = (tmp_path / "mask.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
