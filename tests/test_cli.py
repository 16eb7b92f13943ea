"""End-to-end tests of the host side: ``vampnet-onnx vamp/info/build/demo`` and the audio handling.

The CLI runs against the ``model_path`` fixture: the REAL tiny single model (conftest ``tiny``,
built once per session from the upstream fixtures' tiny checkpoints: VampNet's architecture with
tiny shapes and random weights). Set VAMPNET_ONNX_TEST_MODEL=/path/to/model.onnx to run the same
tests on another model with the v1 interface.

The stub of tests/stub_model.py (exactly the v1 interface, built with onnx.helper) is used only
where a test needs a model the builder never makes: one without "defaults" metadata.

Creating an onnxruntime session on the real model takes seconds and the CLI makes one per command,
so within this module the CLI's sessions are reused per model file (``_reuse_sessions``).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import runtime_only
from numpy_reference import loudness
from vampnet_onnx import audio as vaudio
from vampnet_onnx import cli
from vampnet_onnx.cli import main
from vampnet_onnx.interface import DEFAULTS as DESIGN_DEFAULTS
from vampnet_onnx.interface import INPUT_NAMES
from vampnet_onnx import extras
from vampnet_onnx import model as vmodel
from vampnet_onnx.errors import ModelError
from vampnet_onnx.interface import CONTROLS
from vampnet_onnx.model import Model, variation_paths
from vampnet_onnx.progress import Bar

REPO = Path(__file__).resolve().parents[1]
HOP = 768


# --------------------------------------------------------------------------------------------
# fixtures and helpers


def _stub_module():
    spec = importlib.util.spec_from_file_location("vampnet_onnx_stub_model",
                                                  Path(__file__).with_name("stub_model.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def stub_path(tmp_path_factory) -> Path:
    """The stub model (tests/stub_model.py), built with onnx in this process."""
    pytest.importorskip("onnx")
    path = tmp_path_factory.mktemp("model") / "stub.onnx"
    return _stub_module().build_stub_model(path)


@pytest.fixture(scope="session")
def stub_no_defaults(tmp_path_factory) -> Path:
    """The stub without "defaults" metadata: the builder always writes it, so only a hand-made
    model can check the fallback to the interface table."""
    pytest.importorskip("onnx")
    path = tmp_path_factory.mktemp("model_nodefaults") / "stub.onnx"
    return _stub_module().build_stub_model(path, with_defaults_metadata=False)


@pytest.fixture(scope="session")
def model_external(tmp_path_factory, model_path) -> Path:
    """The real model saved again with its weights in external data (``vampnet.onnx.data``)."""
    onnx = pytest.importorskip("onnx")
    path = tmp_path_factory.mktemp("model_external") / "vampnet.onnx"
    proto = onnx.load(str(model_path))
    onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)
    return path


_SESSIONS: dict[tuple, Model] = {}


def _cached_model(path, *, threads=None, providers=None, release_memory=False):
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return Model(p, threads=threads, providers=providers, release_memory=release_memory)  # raises the real error
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size, threads, tuple(providers or ()), release_memory)
    if key not in _SESSIONS:
        _SESSIONS[key] = Model(p, threads=threads, providers=providers, release_memory=release_memory)
    return _SESSIONS[key]


@pytest.fixture(autouse=True)
def _reuse_sessions(monkeypatch):
    """The CLI's ``Model(...)`` reuses one session per model file (a Model keeps no state between
    runs; each run gets its own RunOptions). Saves seconds per command on the real model."""
    monkeypatch.setattr(cli, "Model", _cached_model)


def music(sr: int, seconds: float, channels: int, seed: int = 0, level: float = 0.3) -> np.ndarray:
    """A few partials with a slow envelope, different per channel, (frames, channels) float64."""
    rng = np.random.default_rng(seed)
    n = int(round(sr * seconds))
    t = np.arange(n) / sr
    out = np.zeros((n, channels))
    for c in range(channels):
        for f in rng.uniform(110, 2000, size=4):
            out[:, c] += np.sin(2 * np.pi * f * t + rng.uniform(0, 6.28)) / 4
        out[:, c] *= 0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * t + c)
    return level * out


def write_input(path: Path, sr: int = 44100, seconds: float = 1.0, channels: int = 1,
                subtype: str = "FLOAT", seed: int = 0, level: float = 0.3) -> Path:
    sf.write(str(path), music(sr, seconds, channels, seed, level), sr, subtype=subtype)
    return path


def read(path: Path) -> tuple[np.ndarray, int]:
    data, sr = sf.read(str(path), dtype="float64", always_2d=True)
    return data, sr


def leftovers(folder: Path) -> list[str]:
    """Temporary files an interrupted write could have left (hidden *.tmp)."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def assert_one_line_error(rc: int, err: str, expect_rc: int | None = None, contains: str = "") -> None:
    assert rc != 0
    if expect_rc is not None:
        assert rc == expect_rc, err
    assert "Traceback" not in err, err
    lines = [s for s in err.strip().splitlines() if s.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("vampnet-onnx: error: "), err
    assert contains.lower() in lines[0].lower(), err


@pytest.fixture
def wav(tmp_path) -> Path:
    return write_input(tmp_path / "in.wav", sr=44100, seconds=1.0, channels=1)


def vamp(capsys, *args) -> tuple[int, str, str]:
    rc = main(["vamp", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


# --------------------------------------------------------------------------------------------
# the stub itself


def test_stub_matches_its_numpy_reference(stub_path):
    stub = _stub_module()
    m = Model(stub_path)
    rng = np.random.default_rng(1)
    a = (rng.standard_normal((2, 2000)) * 0.1).astype(np.float32)
    out = m.run(a)
    ref = stub.reference(a)
    assert out["audio_out"].shape == a.shape
    for k, v in ref.items():
        assert out[k].shape == (2, 14, math.ceil(2000 / HOP))
        np.testing.assert_array_equal(out[k], v, err_msg=k)
    mask = rng.integers(0, 2, (1, 14, 3))
    out = m.run(a, mask=mask, seed=4, periodic_prompt=0)
    for k, v in stub.reference(a, mask=mask, seed=4, periodic_prompt=0).items():
        np.testing.assert_array_equal(out[k], v, err_msg=k)


# --------------------------------------------------------------------------------------------
# Model API


def test_model_defaults_and_inputs(model_path):
    m = Model(model_path)
    assert m.defaults() == DESIGN_DEFAULTS
    assert list(m.inputs) == list(INPUT_NAMES)  # every input a plain graph input
    assert set(m.outputs) == {"audio_out", "codes", "mask_out", "coarse_codes", "codes_out"}
    assert (m.sample_rate, m.hop, m.n_codebooks) == (44100, 768, 14)
    assert m.frames_for(1) == 1 and m.frames_for(768) == 1 and m.frames_for(769) == 2


def test_model_defaults_fall_back_to_the_interface_table(stub_no_defaults):
    m = Model(stub_no_defaults)
    assert m.stored_defaults() is None
    assert m.defaults() == DESIGN_DEFAULTS


def test_model_run_feeds_defaults_for_the_inputs_left_out(model_path):
    m = Model(model_path, threads=1)
    a = (music(44100, 0.5, 1)[:, 0][None] * 0.3).astype(np.float32)
    base = m.run(a)["audio_out"]
    np.testing.assert_array_equal(m.run(a, seed=0, temperature=1.0)["audio_out"], base)
    assert not np.array_equal(m.run(a, temperature=0.5)["audio_out"], base)
    with pytest.raises(ModelError, match="no input named"):
        m.run(a, bogus=1)
    with pytest.raises(ModelError, match="integer"):
        m.run(a, sampling_steps=2.5)
    with pytest.raises(ModelError, match="shape"):
        m.run(np.zeros(10, np.float32))


def test_model_with_external_data_loads_from_path(model_external, model_path, capsys):
    m = Model(model_external)
    a = (music(44100, 0.3, 1)[:, 0][None]).astype(np.float32)
    out = m.run(a, seed=2)
    assert out["codes"].shape == (1, 14, math.ceil(a.shape[1] / HOP))
    ref = Model(model_path).run(a, seed=2)
    for k in ("codes", "mask_out", "coarse_codes", "codes_out"):
        np.testing.assert_array_equal(out[k], ref[k], err_msg=k)
    np.testing.assert_allclose(out["audio_out"], ref["audio_out"], atol=1e-5)
    assert main(["info", str(model_external)]) == 0
    out = capsys.readouterr().out
    assert "vampnet.onnx.data" in out and "size on disk" in out


def test_model_missing_or_invalid(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        Model(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not onnx")
    with pytest.raises(ModelError, match="cannot load"):
        Model(bad)


def test_model_without_its_numbers_is_refused(tmp_path):
    """The host takes rate, hop and codebooks from the model's metadata, never from a guess."""
    import onnx

    model = _stub_module().make_stub_model()
    kept = [p for p in model.metadata_props if p.key != "hop_length"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    path = tmp_path / "no_hop.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match="'hop_length'.*vampnet-onnx build"):
        Model(path)


def test_model_run_interrupt_terminates(model_path):
    """Ctrl-C while the session runs (here: raised from the tick callback) re-raises promptly and
    stops onnxruntime inside the model's loops (the worker thread ends, it does not run on)."""
    import threading
    import time

    m = Model(model_path)
    a = (music(44100, 4.0, 1)[:, 0][None]).astype(np.float32)  # seconds of work: steps x chunks
    ticks = []

    def tick(t):
        ticks.append(t)
        raise KeyboardInterrupt

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        m.run(a, tick=tick, tick_interval=0.05, sampling_steps=64)
    assert ticks
    while any(t.name == "vampnet-onnx-run" for t in threading.enumerate()):
        assert time.monotonic() - t0 < 3.0, "onnxruntime kept running after the interrupt"
        time.sleep(0.02)


# --------------------------------------------------------------------------------------------
# vamp: shapes, rates, channels, loudness


# 3.5 s is longer than one coarse-to-fine chunk (173 frames, about 3 s): two c2f chunks
@pytest.mark.parametrize("sr,channels,subtype,seconds", [(48000, 2, "FLOAT", 3.5), (22050, 1, "PCM_16", 1.7),
                                                          (44100, 1, "FLOAT", 1.7), (16000, 3, "PCM_24", 1.7)])
def test_output_matches_input_rate_length_channels_loudness(tmp_path, capsys, model_path,
                                                            sr, channels, subtype, seconds):
    inp = write_input(tmp_path / "in.wav", sr=sr, seconds=seconds, channels=channels, subtype=subtype)
    out = tmp_path / "out.wav"
    rc, stdout, err = vamp(capsys, inp, "-o", out, "-m", model_path, "--seed", 3)
    assert rc == 0, err
    info_in, info_out = sf.info(str(inp)), sf.info(str(out))
    assert info_out.samplerate == sr
    assert info_out.frames == info_in.frames
    assert info_out.channels == channels
    assert info_out.subtype == subtype  # the input's sample format is kept when possible
    x, _ = read(inp)
    y, _ = read(out)
    # the mono result is copied to every channel
    for c in range(1, channels):
        np.testing.assert_array_equal(y[:, c], y[:, 0])
    # the model gives its output the loudness of the input's mono mix (upstream's app)
    assert abs(loudness(y[None, :, 0], sr)[0] - loudness(x.mean(axis=1)[None], sr)[0]) < 0.1
    import pyloudnorm  # an independent, plain BS.1770 measurement (signals > 0.5 s)

    meter = pyloudnorm.Meter(sr)
    assert abs(meter.integrated_loudness(y[:, 0]) - meter.integrated_loudness(x.mean(axis=1))) < 0.5
    assert np.max(np.abs(y)) <= 1.0
    assert "seed: 3" in stdout and "elapsed" in stdout
    assert leftovers(tmp_path) == []


def test_short_input_and_other_formats(tmp_path, capsys, model_path):
    # 0.2 s (shorter than the loudness meter's 0.5 s) FLAC 24-bit stereo -> FLAC
    inp = write_input(tmp_path / "in.flac", sr=32000, seconds=0.2, channels=2, subtype="PCM_24")
    out = tmp_path / "out.flac"
    rc, _, err = vamp(capsys, inp, "-o", out, "-m", model_path, "--seed", 1)
    assert rc == 0, err
    info = sf.info(str(out))
    assert (info.samplerate, info.frames, info.channels, info.subtype) == (32000, 6400, 2, "PCM_24")
    # OGG Vorbis in, WAV out (Vorbis is not a WAV subtype: WAV's default is used)
    ogg = write_input(tmp_path / "in.ogg", sr=44100, seconds=1.0, channels=1, subtype="VORBIS")
    out2 = tmp_path / "out2.wav"
    rc, _, err = vamp(capsys, ogg, "-o", out2, "-m", model_path, "--seed", 1)
    assert rc == 0, err
    info2 = sf.info(str(out2))
    assert (info2.samplerate, info2.frames, info2.subtype) == (44100, sf.info(str(ogg)).frames, "PCM_16")
    # float WAV in, FLAC out: 24-bit; and OGG out
    wav = write_input(tmp_path / "in.wav", sr=44100, seconds=0.8, channels=2, subtype="FLOAT")
    for name, subtype in (("o.flac", "PCM_24"), ("o.ogg", "VORBIS")):
        rc, _, err = vamp(capsys, wav, "-o", tmp_path / name, "-m", model_path, "--seed", 1)
        assert rc == 0, err
        info3 = sf.info(str(tmp_path / name))
        assert (info3.subtype, info3.channels, info3.frames) == (subtype, 2, sf.info(str(wav)).frames)


def test_bar_draws_only_on_a_terminal_and_ends_with_one_line():
    import io

    class Tty(io.StringIO):
        def isatty(self):
            return True

    for stream, expect in ((Tty(), True), (io.StringIO(), False)):
        t = Bar("model", stream)
        t.start(3.0)
        t(1.2)
        t.finish(2.5)
        text = stream.getvalue()
        assert ("1.2 s elapsed, about 1.8 s left" in text) is expect
        # on a terminal the bar ends as one line; off it, nothing: the caller's last line has it
        assert text.endswith("model: 2.5 s, estimated 3.0 s, +20 %\n") is expect
        assert t.summary(2.5) == "2.5 s, estimated 3.0 s, +20 %"


# --------------------------------------------------------------------------------------------
# vamp: every flag reaches the model, seeds, variations

# A value for every flag that changes the real model's output on the 1 s test input (58 frames),
# with the defaults for everything else (periodic prompt 7, 12 coarse steps, 2 c2f steps):
FLAG_VALUES = {
    "rand_mask_intensity": 0.5,  # about half the tokens kept
    "prefix_s": 0.5,  # 29 of 58 frames kept at the start (the input must be longer than this)
    "suffix_s": 0.5,
    "periodic_prompt": 3,
    "periodic_prompt_width": 3,
    "dropout": 0.3,  # drops some of the periodic prompt's anchors (periodic prompt on, default 7)
    "ncc": 2,  # codebooks 0-1 kept everywhere
    "upper_codebook_mask": 4,  # default 3: codebook 3 goes from fully generated to periodic
    "sampling_steps": 5,
    "temperature": 0.7,
    "mask_temperature": 5.0,
    "top_p": 0.9,  # < 1: nucleus sampling on
    "sample_cutoff": 0.5,  # steps i with i/12 > 0.5 (7-11) take the argmax instead of sampling
    "c2f_sampling_steps": 3,  # the c2f stage is active: codebooks >= 3 are generated by default
    "c2f_temperature": 0.8,
    "c2f_mask_temperature": 3.0,
    "c2f_top_p": 0.8,
    "c2f_sample_cutoff": 0.4,  # step 1 of 2 (1/2 > 0.4) takes the argmax; 0.5 would change nothing
    "feedback_steps": 2,  # a second coarse pass draws new tokens
    "time_stretch_factor": 2,  # tested on its own: the output is twice as long
    "onset_mask_width": 2,  # tested on its own: needs an input with onsets
    "beat_mask_ms": 50.0,  # tested on its own: needs an input with beats
    "pitch_shift": 3,  # the codec hears the input 3 semitones up
    "adapter": 1,  # tested on its own (tests/test_adapters.py): needs a model with adapters
}
MASK_FLAGS = ("rand_mask_intensity", "prefix_s", "suffix_s", "periodic_prompt",
              "periodic_prompt_width", "dropout", "ncc", "upper_codebook_mask")
COARSE_FLAGS = ("sampling_steps", "temperature", "mask_temperature", "top_p", "sample_cutoff", "feedback_steps")
C2F_FLAGS = ("c2f_sampling_steps", "c2f_temperature", "c2f_mask_temperature", "c2f_top_p",
             "c2f_sample_cutoff")
OWN_TEST_FLAGS = ("time_stretch_factor", "onset_mask_width", "beat_mask_ms", "pitch_shift", "adapter")  # test_*_flag; adapter: tests/test_adapters.py
CODE_KEYS = ("codes", "mask_out", "coarse_codes", "codes_out")


def test_flag_table_covers_every_scalar_input():
    assert set(FLAG_VALUES) | {"seed", "sample_rate", "generate"} == set(DESIGN_DEFAULTS)  # the file gives the rate; `mask` sets generate
    assert list(CONTROLS) == list(FLAG_VALUES)
    assert sorted(MASK_FLAGS + COARSE_FLAGS + C2F_FLAGS + OWN_TEST_FLAGS) == sorted(FLAG_VALUES)


def load_codes(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in CODE_KEYS}


@pytest.fixture(scope="module")
def flag_wav(tmp_path_factory) -> Path:
    return write_input(tmp_path_factory.mktemp("flags") / "in.wav", sr=44100, seconds=1.0, channels=1)


@pytest.fixture(scope="module")
def baseline(flag_wav, model_path) -> dict[str, np.ndarray]:
    """Audio and codes of the flag tests' input with seed 11 and every flag left out."""
    out = flag_wav.with_name("base.wav")
    rc = main(["vamp", str(flag_wav), "-o", str(out), "-m", str(model_path), "--seed", "11",
               "--save-codes", str(out.with_suffix(".npz"))])
    assert rc == 0
    return {"audio": read(out)[0], **load_codes(out.with_suffix(".npz"))}


def run_flags(capsys, tmp_path, wav, model_path, *flags) -> dict[str, np.ndarray]:
    out = tmp_path / "out.wav"
    rc, _, err = vamp(capsys, wav, "-o", out, "-m", model_path, "--seed", 11,
                      "--save-codes", tmp_path / "out.npz", *flags)
    assert rc == 0, err
    return {"audio": read(out)[0], **load_codes(tmp_path / "out.npz")}


def changed(a: dict, b: dict, key: str, rows=slice(None)) -> int:
    return int(np.sum(a[key][:, rows] != b[key][:, rows]))


@pytest.mark.parametrize("name", [n for n in FLAG_VALUES if n not in OWN_TEST_FLAGS])
def test_each_flag_reaches_the_model(tmp_path, capsys, model_path, flag_wav, baseline, name):
    """Each flag changes the real model's output, in the stage it belongs to."""
    flag = "--" + name.replace("_", "-")
    got = run_flags(capsys, tmp_path, flag_wav, model_path, flag, FLAG_VALUES[name])
    assert np.max(np.abs(got["audio"] - baseline["audio"])) > 1e-3, f"{flag} did not change the audio"
    np.testing.assert_array_equal(got["codes"], baseline["codes"])  # same input, same encoding
    if name in MASK_FLAGS:
        assert changed(got, baseline, "mask_out"), f"{flag} did not change the mask"
        assert changed(got, baseline, "coarse_codes", slice(0, 4)), f"{flag}: coarse codes unchanged"
    elif name in COARSE_FLAGS:
        np.testing.assert_array_equal(got["mask_out"], baseline["mask_out"])
        assert changed(got, baseline, "coarse_codes", slice(0, 4)), f"{flag} did not reach the coarse stage"
    else:  # the c2f stage only: same mask and coarse codes, other fine codes
        np.testing.assert_array_equal(got["mask_out"], baseline["mask_out"])
        np.testing.assert_array_equal(got["coarse_codes"], baseline["coarse_codes"])
        assert changed(got, baseline, "codes_out", slice(4, 14)), f"{flag} did not reach the c2f stage"


def test_time_stretch_flag(tmp_path, capsys, model_path):
    """--time-stretch 2: the file written is twice as long at the input's rate and channels, the
    codes have 2·T frames, and an explicit mask is given at the input's T frames."""
    inp = write_input(tmp_path / "in.wav", sr=48000, seconds=0.6, channels=2)
    frames_in = sf.info(str(inp)).frames
    T = math.ceil(math.ceil(frames_in * 44100 / 48000) / HOP)
    mask = np.random.default_rng(0).integers(0, 2, (14, T))
    np.save(tmp_path / "m.npy", mask)
    out = tmp_path / "out.wav"
    rc, stdout, err = vamp(capsys, inp, "-o", out, "-m", model_path, "--seed", 4, "--time-stretch", 2,
                           "--mask-from", tmp_path / "m.npy", "--save-codes", tmp_path / "out.npz")
    assert rc == 0, err
    info = sf.info(str(out))
    assert (info.samplerate, info.channels, info.frames) == (48000, 2, 2 * frames_in)
    assert "1.20 s" in stdout
    codes = load_codes(tmp_path / "out.npz")
    assert codes["codes"].shape == (1, 14, 2 * T)
    stretched = np.repeat(mask[None], 2, axis=-1)
    stretched[..., 1::2] = 1  # the added frames are generated
    np.testing.assert_array_equal(codes["mask_out"], stretched)
    y, _ = read(out)
    assert np.abs(y[frames_in:]).max() > 1e-3  # the second half is audio too, not padding
    # the long spelling is the same flag
    rc, _, err = vamp(capsys, inp, "-o", tmp_path / "b.wav", "-m", model_path, "--seed", 4,
                      "--time-stretch-factor", 2, "--mask-from", tmp_path / "m.npy")
    assert rc == 0, err
    np.testing.assert_array_equal(read(tmp_path / "b.wav")[0], y)


def test_onset_flag(tmp_path, capsys, model_path):
    """--onset-mask-width keeps the frames around the input's onsets (clicks every 0.25 s)."""
    y = music(44100, 1.0, 1)
    clicks = np.arange(0.1, 1.0, 0.25)
    for t in clicks:
        i = int(t * 44100)
        y[i:i + 200, 0] += np.exp(-np.arange(200) / 30.0) * 0.9
    sf.write(str(tmp_path / "clicks.wav"), y, 44100, subtype="FLOAT")
    masks = {}
    for width in (0, 2):
        rc, _, err = vamp(capsys, tmp_path / "clicks.wav", "-o", tmp_path / f"w{width}.wav", "-m", model_path,
                          "--seed", 1, "--periodic-prompt", 0, "--onset-mask-width", width,
                          "--save-codes", tmp_path / f"w{width}.npz")
        assert rc == 0, err
        masks[width] = load_codes(tmp_path / f"w{width}.npz")["mask_out"]
    assert masks[0].all()  # no prompt at all: everything generated
    kept_frames = np.flatnonzero(masks[2][0, 0] == 0)
    for t in clicks:  # every click keeps frames around it (backtracking may move an onset back a bit)
        assert np.min(np.abs(kept_frames - t * 44100 / HOP)) <= 3, (t, kept_frames)
    assert len(kept_frames) < masks[2].shape[2] / 2  # and much of the rest is generated
    np.testing.assert_array_equal(masks[2][:, :3], np.repeat(masks[2][:, :1], 3, axis=1))
    assert (masks[2][:, 3:] == 1).all()  # codebooks >= upper_codebook_mask still generated


def test_pitch_flag(tmp_path, capsys, model_path, flag_wav, baseline):
    """--pitch-shift changes what the codec hears (the input codes), not the mask; the output keeps
    the input's length."""
    got = run_flags(capsys, tmp_path, flag_wav, model_path, "--pitch-shift", FLAG_VALUES["pitch_shift"])
    assert changed(got, baseline, "codes") > got["codes"].size / 4
    np.testing.assert_array_equal(got["mask_out"], baseline["mask_out"])
    assert got["audio"].shape == baseline["audio"].shape


def test_beat_flag(tmp_path, capsys, model_path):
    """--beat-mask-ms keeps the first frames after every beat of the input (clicks at 120 BPM)."""
    y = music(44100, 3.0, 1) * 0.1
    for t in np.arange(0.1, 3.0, 0.5):
        i = int(t * 44100)
        y[i:i + 200, 0] += np.exp(-np.arange(200) / 30.0) * 0.9
    sf.write(str(tmp_path / "beats.wav"), y, 44100, subtype="FLOAT")
    masks = {}
    for ms in (0, 50):
        rc, _, err = vamp(capsys, tmp_path / "beats.wav", "-o", tmp_path / f"b{ms}.wav", "-m", model_path,
                          "--seed", 1, "--periodic-prompt", 0, "--beat-mask-ms", ms,
                          "--save-codes", tmp_path / f"b{ms}.npz")
        assert rc == 0, err
        masks[ms] = load_codes(tmp_path / f"b{ms}.npz")["mask_out"]
    assert masks[0].all()  # no prompt at all: everything generated
    kept = masks[50][0, 0] == 0
    starts = np.flatnonzero(kept & ~np.concatenate([[False], kept[:-1]]))
    assert len(starts) >= 3 and np.all(np.abs(np.diff(starts) - 0.5 * 44100 / HOP) <= 2), starts  # every beat
    assert kept.sum() <= 3 * len(starts)  # ceil(50 ms · 44100 / 768 / 1000) = 3 frames after each
    assert (masks[50][:, 3:] == 1).all()  # codebooks >= upper_codebook_mask still generated


def test_explicit_defaults_equal_leaving_flags_out(tmp_path, capsys, model_path, flag_wav, baseline):
    flags = []
    for name in FLAG_VALUES:
        flags += ["--" + name.replace("_", "-"), DESIGN_DEFAULTS[name]]
    got = run_flags(capsys, tmp_path, flag_wav, model_path, *flags)
    for key in ("audio",) + CODE_KEYS:
        np.testing.assert_array_equal(got[key], baseline[key], err_msg=key)


def test_deterministic_decoding_ignores_the_seed(tmp_path, capsys, model_path, flag_wav, baseline):
    """With an explicit mask, argmax sampling and mask_temperature 0 in both stages, nothing is
    random: other seeds give the same codes (the deterministic path)."""
    np.save(tmp_path / "mask.npy", baseline["mask_out"])
    det = ["--mask-from", tmp_path / "mask.npy", "--sample-cutoff", -1, "--mask-temperature", 0,
           "--c2f-sample-cutoff", -1, "--c2f-mask-temperature", 0]
    results = []
    for seed in (1, 2):
        out = tmp_path / f"d{seed}.wav"
        rc, _, err = vamp(capsys, flag_wav, "-o", out, "-m", model_path, "--seed", seed,
                          "--save-codes", tmp_path / f"d{seed}.npz", *det)
        assert rc == 0, err
        results.append({"audio": read(out)[0], **load_codes(tmp_path / f"d{seed}.npz")})
    for key in ("audio",) + CODE_KEYS:
        np.testing.assert_array_equal(results[0][key], results[1][key], err_msg=key)
    assert changed(results[0], baseline, "codes_out")  # and it is not the sampled result


def test_codes_invariants(model_path, baseline):
    """Kept tokens (mask 0) are the input's; c2f keeps the coarse codebooks; the coarse stage
    leaves the fine codebooks as they were."""
    b = baseline
    kept = b["mask_out"] == 0
    assert kept.any() and (~kept).any()
    np.testing.assert_array_equal(b["codes_out"][kept], b["codes"][kept])
    np.testing.assert_array_equal(b["codes_out"][:, :4], b["coarse_codes"][:, :4])
    np.testing.assert_array_equal(b["coarse_codes"][:, 4:], b["codes"][:, 4:])
    assert changed(b, {"codes_out": b["codes"]}, "codes_out")  # something was generated
    # defaults: codebooks >= 3 fully generated, 0-2 keep every 7th frame (randomly rolled)
    assert np.all(b["mask_out"][:, 3:] == 1)
    assert 0 < kept[:, :3].mean() < 0.3


def test_seed_reproduces(tmp_path, capsys, model_path, flag_wav, baseline):
    wav = flag_wav
    again = tmp_path / "again.wav"
    assert vamp(capsys, wav, "-o", again, "-m", model_path, "--seed", 11)[0] == 0
    np.testing.assert_array_equal(read(again)[0], baseline["audio"])
    other = tmp_path / "other.wav"
    assert vamp(capsys, wav, "-o", other, "-m", model_path, "--seed", 12)[0] == 0
    assert np.max(np.abs(read(other)[0] - baseline["audio"])) > 1e-3
    # no --seed: a random seed is printed, and passing it back reproduces the run
    r1 = tmp_path / "r1.wav"
    rc, stdout, _ = vamp(capsys, wav, "-o", r1, "-m", model_path)
    assert rc == 0
    line = next(s for s in stdout.splitlines() if s.startswith("seed: "))
    seed = int(line.split()[1])
    assert f"--seed {seed}" in line
    r2 = tmp_path / "r2.wav"
    assert vamp(capsys, wav, "-o", r2, "-m", model_path, "--seed", seed)[0] == 0
    np.testing.assert_array_equal(read(r1)[0], read(r2)[0])
    # large and negative int64 seeds are accepted, and are different seeds
    big, neg = tmp_path / "big.wav", tmp_path / "neg.wav"
    assert vamp(capsys, wav, "-o", big, "-m", model_path, "--seed", 2**63 - 1)[0] == 0
    assert vamp(capsys, wav, "-o", neg, "-m", model_path, "--seed", -5)[0] == 0
    assert np.max(np.abs(read(big)[0] - read(neg)[0])) > 1e-3


def test_threads_flag(tmp_path, capsys, model_path, flag_wav, baseline):
    """--threads 1 runs and gives the same codes (audio equal up to float summation order)."""
    out = tmp_path / "t.wav"
    rc, _, err = vamp(capsys, flag_wav, "-o", out, "-m", model_path, "--seed", 11, "--threads", 1,
                      "--save-codes", tmp_path / "t.npz")
    assert rc == 0, err
    codes = load_codes(tmp_path / "t.npz")
    for key in CODE_KEYS:
        np.testing.assert_array_equal(codes[key], baseline[key], err_msg=key)
    np.testing.assert_allclose(read(out)[0], baseline["audio"], atol=2e-3)


def test_variations_give_different_files(tmp_path, capsys, model_path, wav):
    out = tmp_path / "v.wav"
    rc, stdout, err = vamp(capsys, wav, "-o", out, "-m", model_path, "--seed", 2, "--variations", 3,
                           "--save-codes", tmp_path / "v.npz")
    assert rc == 0, err
    paths = [tmp_path / f"v-{k}.wav" for k in (1, 2, 3)]
    assert all(p.exists() for p in paths) and not out.exists()
    data = [read(p)[0] for p in paths]
    codes = load_codes(tmp_path / "v.npz")
    assert codes["codes_out"].shape[0] == 3
    for i in range(3):
        np.testing.assert_array_equal(codes["codes"][i], codes["codes"][0])  # one input
        for j in range(i + 1, 3):
            assert np.max(np.abs(data[i] - data[j])) > 1e-3
            assert np.any(codes["codes_out"][i] != codes["codes_out"][j])
    # --variations 1 writes OUT itself
    rc, _, _ = vamp(capsys, wav, "-o", out, "-m", model_path, "--seed", 2, "--variations", 1)
    assert rc == 0 and out.exists()
    assert variation_paths("a/b.x.wav", 2) == [Path("a/b.x-1.wav"), Path("a/b.x-2.wav")]


# --------------------------------------------------------------------------------------------
# vamp: --save-codes, --mask-from, --plot


def test_save_codes_and_mask_from_round_trip(tmp_path, capsys, model_path, wav):
    S44 = sf.info(str(wav)).frames  # 44.1 kHz input: no resampling
    T = math.ceil(S44 / HOP)
    a = tmp_path / "a.npz"
    rc, _, err = vamp(capsys, wav, "-o", tmp_path / "a.wav", "-m", model_path, "--seed", 5,
                      "--periodic-prompt", 4, "--save-codes", a)
    assert rc == 0, err
    with np.load(a) as z:
        for k in ("codes", "mask_out", "mask", "coarse_codes", "codes_out"):
            assert z[k].shape == (1, 14, T) and z[k].dtype == np.int64, k
        assert int(z["seed"]) == 5
        assert json.loads(str(z["params"]))["periodic_prompt"] == 4
        mask_a = z["mask_out"].copy()
    # the saved mask, fed back, is the mask used (even with other parameters)
    b = tmp_path / "b.npz"
    rc, _, err = vamp(capsys, wav, "-o", tmp_path / "b.wav", "-m", model_path, "--seed", 6,
                      "--mask-from", a, "--save-codes", b)
    assert rc == 0, err
    with np.load(b) as z:
        np.testing.assert_array_equal(z["mask_out"], mask_a)
    # a hand-made (14, T) .npy mask
    rng = np.random.default_rng(0)
    m = rng.integers(0, 2, (14, T)).astype(np.int32)
    np.save(tmp_path / "m.npy", m)
    c = tmp_path / "c.npz"
    rc, _, err = vamp(capsys, wav, "-o", tmp_path / "c.wav", "-m", model_path, "--seed", 6,
                      "--mask-from", tmp_path / "m.npy", "--save-codes", c)
    assert rc == 0, err
    with np.load(c) as z:
        np.testing.assert_array_equal(z["mask_out"], m[None])
    # a (2, 14, T) mask gives two variations, one per row
    m2 = rng.integers(0, 2, (2, 14, T))
    np.save(tmp_path / "m2.npy", m2)
    d = tmp_path / "d.npz"
    rc, _, err = vamp(capsys, wav, "-o", tmp_path / "d.wav", "-m", model_path, "--seed", 6,
                      "--mask-from", tmp_path / "m2.npy", "--save-codes", d)
    assert rc == 0, err
    assert (tmp_path / "d-1.wav").exists() and (tmp_path / "d-2.wav").exists()
    with np.load(d) as z:
        np.testing.assert_array_equal(z["mask_out"], m2)
    # a (1, 14, T) mask is shared by all variations
    rc, _, err = vamp(capsys, wav, "-o", tmp_path / "e.wav", "-m", model_path, "--seed", 6,
                      "--mask-from", a, "--variations", 2, "--save-codes", tmp_path / "e.npz")
    assert rc == 0, err
    with np.load(tmp_path / "e.npz") as z:
        np.testing.assert_array_equal(z["mask_out"], np.repeat(mask_a, 2, axis=0))


@pytest.mark.parametrize("case", ["frames", "values", "codebooks", "key", "rows", "missing", "garbage"])
def test_bad_mask_files(tmp_path, capsys, model_path, wav, case):
    T = math.ceil(sf.info(str(wav)).frames / HOP)
    mpath = tmp_path / "m.npy"
    if case == "frames":
        np.save(mpath, np.ones((14, T + 1), np.int64))
    elif case == "values":
        np.save(mpath, np.full((14, T), 2, np.int64))
    elif case == "codebooks":
        np.save(mpath, np.ones((4, T), np.int64))
    elif case == "key":
        mpath = tmp_path / "m.npz"
        np.savez(mpath, other=np.ones((14, T)))
    elif case == "rows":
        np.save(mpath, np.ones((2, 14, T), np.int64))
    elif case == "garbage":
        mpath.write_bytes(b"not numpy")
    extra = ["--variations", "3"] if case == "rows" else []
    out = tmp_path / "out.wav"
    rc, _, err = vamp(capsys, wav, "-o", out, "-m", model_path, "--mask-from", mpath, *extra)
    assert_one_line_error(rc, err, 1, "mask")
    assert not out.exists() and leftovers(tmp_path) == []


def test_too_many_steps_for_the_model(tmp_path, capsys, model_path):
    m = Model(model_path)
    wav = write_input(tmp_path / "short.wav", seconds=0.1)  # the maximum really runs: keep it short
    out = tmp_path / "o.wav"
    rc, _, err = vamp(capsys, wav, "-o", out, "-m", model_path, "--c2f-sampling-steps", m.max_sampling_steps + 1)
    assert_one_line_error(rc, err, 2, f"between 1 and {m.max_sampling_steps}")
    assert not out.exists()
    rc, _, err = vamp(capsys, wav, "-o", out, "-m", model_path, "--sampling-steps", m.max_sampling_steps)
    assert rc == 0, err


def test_plot_writes_png(tmp_path, capsys, model_path, wav):
    pytest.importorskip("matplotlib")
    png = tmp_path / "p.png"
    rc, _, err = vamp(capsys, wav, "-o", tmp_path / "o.wav", "-m", model_path, "--seed", 1, "--plot", png)
    assert rc == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    png2 = tmp_path / "p2.png"
    rc, _, err = vamp(capsys, wav, "-o", tmp_path / "o2.wav", "-m", model_path, "--variations", 2, "--plot", png2)
    assert rc == 0, err
    assert png2.read_bytes()[:4] == b"\x89PNG"


def test_plot_without_matplotlib_is_a_clear_error(tmp_path, capsys, model_path, wav, monkeypatch):
    monkeypatch.setattr(vmodel, "plot_available", lambda: False)
    out = tmp_path / "o.wav"
    rc, _, err = vamp(capsys, wav, "-o", out, "-m", model_path, "--plot", tmp_path / "p.png")
    assert_one_line_error(rc, err, 1, "matplotlib")
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# vamp: bad input, bad output, failures leave nothing behind


def _make_bad_input(tmp_path: Path, case: str) -> Path:
    if case == "missing":
        return tmp_path / "nope.wav"
    if case == "folder":
        (tmp_path / "dir.wav").mkdir()
        return tmp_path / "dir.wav"
    if case == "not_audio":
        p = tmp_path / "text.wav"
        p.write_text("this is not audio\n" * 100)
        return p
    p = tmp_path / "bad.wav"
    if case == "empty":
        sf.write(str(p), np.zeros((0, 1)), 44100, subtype="FLOAT")
    elif case == "zeros":
        sf.write(str(p), np.zeros((44100, 2)), 44100, subtype="FLOAT")
    elif case == "rate_too_high":
        sf.write(str(p), music(44100, 1.0, 1), 400000, subtype="FLOAT")
    elif case == "cancelling":  # L = -R: loud as stereo, silent as mono
        x = music(44100, 1.0, 1)
        sf.write(str(p), np.concatenate([x, -x], axis=1), 44100, subtype="FLOAT")
    elif case in ("nan", "inf"):
        x = music(44100, 1.0, 1)
        x[100] = np.nan if case == "nan" else np.inf
        sf.write(str(p), x, 44100, subtype="FLOAT")
    return p


BAD_INPUTS = {
    "missing": "not found", "folder": "folder", "not_audio": "cannot read", "empty": "no samples",
    "zeros": "silent", "rate_too_high": "400000 Hz", "cancelling": "silent", "nan": "nan", "inf": "infinite",
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_one_line_error(tmp_path, capsys, model_path, case):
    inp = _make_bad_input(tmp_path, case)
    out = tmp_path / "out.wav"
    rc, stdout, err = vamp(capsys, inp, "-o", out, "-m", model_path, "--seed", 1)
    assert_one_line_error(rc, err, 1, BAD_INPUTS[case])
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("name,contains", [("out.xyz", "cannot write"), ("out", "extension"),
                                           ("missing_dir/out.wav", "does not exist"),
                                           ("out.raw", "cannot write")])
def test_bad_output_path(tmp_path, capsys, model_path, wav, name, contains):
    out = tmp_path / name
    rc, _, err = vamp(capsys, wav, "-o", out, "-m", model_path)
    assert_one_line_error(rc, err, 1, contains)
    assert not out.exists() and leftovers(tmp_path) == []


def test_refuses_to_overwrite_the_input(tmp_path, capsys, model_path, wav):
    before = wav.read_bytes()
    sub = tmp_path / "sub"
    sub.mkdir()
    link = tmp_path / "link.wav"
    link.symlink_to(wav)
    for target in (wav, sub / ".." / wav.name, link):
        rc, _, err = vamp(capsys, wav, "-o", target, "-m", model_path)
        assert_one_line_error(rc, err, 1, "overwrite the input")
    # nor through --save-codes / --plot, nor two outputs on one path
    rc, _, err = vamp(capsys, wav, "-o", tmp_path / "o.wav", "-m", model_path, "--save-codes", wav)
    assert_one_line_error(rc, err, 1, "overwrite the input")
    rc, _, err = vamp(capsys, wav, "-o", tmp_path / "o.wav", "-m", model_path,
                      "--save-codes", tmp_path / "o.wav")
    assert_one_line_error(rc, err, 1, "same path")
    assert wav.read_bytes() == before and not (tmp_path / "o.wav").exists()


def test_existing_output_is_replaced(tmp_path, capsys, model_path, wav):
    out = tmp_path / "out.wav"
    out.write_bytes(b"old")
    rc, _, err = vamp(capsys, wav, "-o", out, "-m", model_path, "--seed", 1)
    assert rc == 0, err
    assert sf.info(str(out)).frames == sf.info(str(wav)).frames
    assert leftovers(tmp_path) == []


def test_missing_model_leaves_nothing(tmp_path, capsys, wav):
    out = tmp_path / "out.wav"
    rc, _, err = vamp(capsys, wav, "-o", out, "-m", tmp_path / "nope.onnx")
    assert_one_line_error(rc, err, 1, "model not found")
    assert not out.exists() and leftovers(tmp_path) == []
    # the default model path is artifacts/vampnet.onnx (relative to the current folder)
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        rc, _, err = vamp(capsys, wav, "-o", out)
    finally:
        os.chdir(old)
    assert_one_line_error(rc, err, 1, "artifacts/vampnet.onnx")


def test_interrupt_during_run_leaves_nothing(tmp_path, capsys, model_path, wav, monkeypatch):
    def boom(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(Model, "run", boom)
    out = tmp_path / "out.wav"
    rc, _, err = vamp(capsys, wav, "-o", out, "-m", model_path, "--save-codes", tmp_path / "c.npz")
    assert rc == 130 and "interrupted" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_interrupt_while_writing_leaves_nothing(tmp_path, capsys, model_path, wav, monkeypatch):
    """All outputs are renamed into place together: an error while writing the last leaves none."""
    pytest.importorskip("matplotlib")

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(vmodel, "write_plot", boom)
    rc, _, err = vamp(capsys, wav, "-o", tmp_path / "out.wav", "-m", model_path, "--variations", 2,
                      "--save-codes", tmp_path / "c.npz", "--plot", tmp_path / "p.png")
    assert rc == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_write_failure_is_an_error_and_leaves_nothing(tmp_path, capsys, model_path, wav, monkeypatch):
    import soundfile

    def failing_write(*a, **k):
        raise RuntimeError("simulated: disk full")

    monkeypatch.setattr(soundfile, "write", failing_write)
    rc, _, err = vamp(capsys, wav, "-o", tmp_path / "out.wav", "-m", model_path, "--variations", 2)
    assert_one_line_error(rc, err, 1, "cannot write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]


def test_write_audio_atomic_helper(tmp_path, wav):
    data = np.zeros((10, 1), np.float32)
    p = vaudio.write_audio(tmp_path / "x.flac", data, 8000)
    assert sf.info(str(p)).frames == 10
    with pytest.raises(vaudio.AudioError, match="overwrite the input"):
        vaudio.write_audio(wav, data, 8000, input_path=wav)
    with pytest.raises(KeyboardInterrupt):
        with vaudio.AtomicOutputs() as w:
            w.add(tmp_path / "y.wav", lambda tmp: tmp.write_bytes(b"partial"))
            raise KeyboardInterrupt
    assert not (tmp_path / "y.wav").exists() and leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------------
# usage errors


@pytest.mark.parametrize("args", [
    ["vamp", "IN.wav", "-o", "o.wav", "--temperature", "abc"],
    ["vamp", "IN.wav", "-o", "o.wav", "--temperature", "nan"],
    ["vamp", "IN.wav", "-o", "o.wav", "--variations", "0"],
    ["vamp", "IN.wav", "-o", "o.wav", "--sampling-steps", "0"],
    ["vamp", "IN.wav", "-o", "o.wav", "--periodic-prompt", "1.5"],
    ["vamp", "IN.wav", "-o", "o.wav", "--dropout", "2"],
    ["vamp", "IN.wav", "-o", "o.wav", "--seed", "x"],
    ["vamp", "IN.wav", "-o", "o.wav", "--seed", str(2**63)],
    ["vamp", "IN.wav", "-o", "o.wav", "--no-such-flag"],
    ["vamp", "IN.wav"],
    ["vamp"],
    [],
    ["frobnicate"],
    ["build"],
    ["build", "--checkpoints", "d", "--codec", "c.pth"],
    ["build", "--codec", "c.pth"],
])
def test_usage_errors_are_one_line(capsys, args):
    rc = main(args)
    _, err = capsys.readouterr()
    assert_one_line_error(rc, err, 2)


def test_help_exits_zero(capsys):
    assert main(["vamp", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--c2f-sample-cutoff" in out and "default: 10.5" in out
    for name in DESIGN_DEFAULTS:
        assert ("--" + name.replace("_", "-") in out) == (name not in ("sample_rate", "generate"))


# --------------------------------------------------------------------------------------------
# info


def test_info_prints_interface(capsys, model_path):
    assert main(["info", str(model_path)]) == 0
    out = capsys.readouterr().out
    assert "inputs:" in out and "outputs:" in out and "metadata:" in out and "size on disk" in out
    lines = out.splitlines()

    def line_of(name):
        return next(s for s in lines if s.split() and s.split()[0] == name)

    assert "float32" in line_of("audio") and "(B, S)" in line_of("audio") and "required" in line_of("audio")
    assert "int64" in line_of("seed") and "default 0" in line_of("seed")
    assert "default 10.5" in line_of("mask_temperature")
    assert "default 12" in line_of("sampling_steps")
    for o in ("audio_out", "codes", "mask_out", "coarse_codes", "codes_out"):
        line_of(o)
    assert "sample_rate = 44100" in out and "defaults = {" in out


def test_info_without_defaults_metadata(capsys, stub_no_defaults):
    assert main(["info", str(stub_no_defaults)]) == 0
    out = capsys.readouterr().out
    assert "default 12" in out  # from the interface table


def test_info_missing_model(capsys, tmp_path):
    rc = main(["info", str(tmp_path / "nope.onnx")])
    assert_one_line_error(rc, capsys.readouterr().err, 1, "not found")


# --------------------------------------------------------------------------------------------
# build / demo hand-over


def test_build_and_demo_delegate(monkeypatch, tmp_path):
    calls = {}
    fake_build = types.ModuleType("vampnet_onnx.builder.build")
    fake_build.build_model = lambda *paths, **loras: calls.setdefault("build", (paths, loras)) and 0
    fake_demo = types.ModuleType("vampnet_onnx.demo")
    fake_demo.demo_command = lambda args: calls.setdefault("demo", args) and 3
    monkeypatch.setitem(sys.modules, "vampnet_onnx.builder.build", fake_build)
    monkeypatch.setitem(sys.modules, "vampnet_onnx.demo", fake_demo)
    assert main(["build", "--checkpoints", str(tmp_path), "--coarse-lora", "l.pth", "-o", "x.onnx"]) == 0
    paths, loras = calls["build"]
    assert paths == (tmp_path / "codec.pth", tmp_path / "coarse.pth", tmp_path / "c2f.pth", Path("x.onnx"))
    assert loras == {"coarse_lora": "l.pth", "c2f_lora": None, "weights": "float32"}
    assert main(["build", "--codec", "a", "--coarse", "b", "--c2f", "c"]) == 0
    assert main(["demo", "--seed", "4"]) == 3
    assert (calls["demo"].output, calls["demo"].seed) == ("artifacts/demo", 4)


def test_build_missing_torch_inside_builder(monkeypatch, capsys, tmp_path):
    def fake_import(name):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr(extras.importlib, "import_module", fake_import)
    rc = main(["build", "--checkpoints", str(tmp_path)])
    assert_one_line_error(rc, capsys.readouterr().err, 1, "pip install -e .[build]")


# --------------------------------------------------------------------------------------------
# subprocesses: python -m vampnet_onnx, and the runtime path without torch

BLOCKED = ("torch", "onnx", "onnxscript", "onnx_ir", "vampnet_onnx.builder",
           "vampnet_onnx.graphs", "vampnet_onnx.demo")

NO_TORCH_PRELUDE = runtime_only(BLOCKED)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_python_dash_m(tmp_path, model_path, wav):
    out = tmp_path / "out.wav"
    p = _run(["-m", "vampnet_onnx", "vamp", str(wav), "-o", str(out), "-m", str(model_path),
              "--seed", "1", "--temperature", "0.5"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert out.exists() and "elapsed" in p.stdout
    p = _run(["-m", "vampnet_onnx", "vamp", str(wav), "-o", str(out), "--variations", "0"], tmp_path)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_vamp_and_info_without_torch(tmp_path, model_path):
    wav = write_input(tmp_path / "in.wav", sr=48000, seconds=1.0, channels=2)
    out = tmp_path / "out.flac"
    p = _run(["-c", NO_TORCH_PRELUDE, "vamp", str(wav), "-o", str(out), "-m", str(model_path),
              "--seed", "3", "--variations", "2", "--save-codes", str(tmp_path / "c.npz")], tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert (tmp_path / "out-1.flac").exists() and (tmp_path / "out-2.flac").exists()
    p = _run(["-c", NO_TORCH_PRELUDE, "info", str(model_path)], tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "audio_out" in p.stdout


def test_build_without_torch_says_how_to_install(tmp_path):
    for cmd in (["build", "--checkpoints", str(tmp_path)], ["demo"]):
        p = _run(["-c", NO_TORCH_PRELUDE, *cmd], tmp_path)
        assert p.returncode == 1, p.stdout + p.stderr
        assert_one_line_error(p.returncode, p.stderr, 1, "pip install -e .[build]")


def test_readme_interface_table_is_the_interface():
    """README's input table is exactly what vampnet_onnx/interface.py generates."""
    from vampnet_onnx.interface import markdown_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("<!-- interface table: generated -->\n") + len("<!-- interface table: generated -->\n")
    end = readme.index("<!-- end of interface table -->")
    assert readme[start:end].strip() == markdown_table()
