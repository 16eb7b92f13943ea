"""The Python API (vampnet_onnx.model.Model.vamp / vamp_file), the time estimate
(vampnet_onnx.progress) and the package's import graph. Runs on the stub model (tests/stub_model.py)."""
from __future__ import annotations

import ast
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stub_model import build_stub_model
from vampnet_onnx import Model
from vampnet_onnx.errors import UsageError
from vampnet_onnx.interface import BY_NAME, CONTROLS
from vampnet_onnx.progress import CODEC_STEPS, Bar, RateCache, work_units

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"vampnet_onnx": REPO / "vampnet_onnx", "vampnet_onnx.builder": REPO / "builder",
                "vampnet_onnx.graphs": REPO / "graphs"}


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Model:
    return Model(build_stub_model(tmp_path_factory.mktemp("stub") / "stub.onnx"))


def tone(rate: int, seconds: float, channels: int) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.stack([0.3 * np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(channels)], axis=1)


# --------------------------------------------------------------------------------------------
# the import graph


def _imports(module: str, path: Path) -> set[str]:
    """Every module of the package that ``path`` imports, at any depth (functions included)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found.update(n for n in names if n.startswith("vampnet_onnx"))
    return found


def test_no_import_cycle_in_the_package():
    modules = {}
    for package, folder in PACKAGE_DIRS.items():
        for f in folder.glob("*.py"):
            modules[package if f.name == "__init__.py" else f"{package}.{f.stem}"] = f
    graph = {m: {i for i in _imports(m, f) if i in modules and i != m} for m, f in modules.items()}
    # a package's own __init__ runs before its modules: importing it is no edge back
    graph = {m: {i for i in deps if not m.startswith(i + ".")} for m, deps in graph.items()}
    assert graph["vampnet_onnx.cli"] >= {"vampnet_onnx.model", "vampnet_onnx.batch"}  # the parser sees them

    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [m, n]))
            if n not in state:
                visit(n, stack + [m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


# --------------------------------------------------------------------------------------------
# the API


def test_vamp_an_array_keeps_rate_channels_and_length(model):
    x = tone(48000, 1.0, 2)
    r = model.vamp(x, 48000, seed=3, variations=2, temperature=0.5, periodic_prompt=5)
    assert r.audio.shape == (2, 48000, 2) and r.audio.dtype == np.float32 and r.rate == 48000
    assert r.seed == 3 and r.outputs["codes_out"].shape[0] == 2
    assert not np.allclose(r.audio[0], r.audio[1])  # each row its own variation
    again = model.vamp(x, 48000, seed=3, variations=2, temperature=0.5, periodic_prompt=5)
    np.testing.assert_array_equal(r.audio, again.audio)
    other = model.vamp(x[:, 0], 48000, seed=3, temperature=0.9)  # mono (frames,) works too
    assert other.audio.shape == (1, 48000, 1)


def test_vamp_file_writes_what_vamp_returns(model, tmp_path):
    src = tmp_path / "in.wav"
    sf.write(str(src), tone(22050, 0.5, 1), 22050, subtype="PCM_16")
    r = model.vamp_file(src, tmp_path / "out.flac", seed=9, save_codes=tmp_path / "c.npz", sampling_steps=3)
    data, rate = sf.read(str(tmp_path / "out.flac"), always_2d=True)
    assert rate == 22050 and data.shape == (sf.info(str(src)).frames, 1)
    np.testing.assert_allclose(data, r.audio[0], atol=2 ** -15)  # 16-bit, like the input
    with np.load(tmp_path / "c.npz") as z:
        assert int(z["seed"]) == 9 and json.loads(str(z["params"]))["sampling_steps"] == 3
    r2 = model.vamp_file(src, tmp_path / "v.wav", seed=None, variations=2)
    assert (tmp_path / "v-1.wav").exists() and (tmp_path / "v-2.wav").exists() and r2.seed >= 1


@pytest.mark.parametrize("kwargs, words", [
    ({"temprature": 0.5}, ["'temprature'", "did you mean 'temperature'"]),
    ({"bogus": 1}, ["'bogus'"]),
    ({"sampling_steps": 0}, ["sampling_steps", "between 1 and"]),
    ({"dropout": 2.0}, ["dropout", "between 0 and 1"]),
    ({"periodic_prompt": 2.5}, ["periodic_prompt", "integer"]),
    ({"temperature": float("nan")}, ["temperature", "finite"]),
    ({"variations": 0}, ["variations"]),
])
def test_bad_keywords_are_one_line_errors_naming_them(model, tmp_path, kwargs, words):
    for call in (lambda: model.vamp(tone(44100, 0.2, 1), 44100, **kwargs),
                 lambda: model.vamp_file(tmp_path / "missing.wav", tmp_path / "o.wav", **kwargs)):
        with pytest.raises(UsageError) as e:
            call()
        message = str(e.value)
        assert "\n" not in message and all(w in message for w in words), message
    assert list(tmp_path.iterdir()) == []


def test_every_parameter_is_a_keyword(model):
    """The keywords come from the interface table: each control reaches the model (the seed has
    its own keyword, the sample rate is the input's, `generate` is ``Model.mask``'s)."""
    x = tone(44100, 0.3, 1)
    base = model.vamp(x, 44100, seed=1).audio
    for p in map(BY_NAME.get, CONTROLS):
        value = p.default + 1 if p.is_int else p.default + 0.25
        if p.high is not None and value > p.high:
            value = p.low
        changed = model.vamp(x, 44100, seed=1, **{p.name: value}).audio
        assert changed.shape[2] == 1, p.name
        assert not np.array_equal(changed[..., :base.shape[1], :], base) or changed.shape != base.shape, p.name


# --------------------------------------------------------------------------------------------
# the time estimate


def test_work_units_grow_with_each_part_of_the_work():
    one = work_units(2.0)
    assert one == 2.0 * (1 + 1 + CODEC_STEPS)
    assert work_units(4.0) == 2 * one
    assert work_units(2.0, rows=3) == 3 * one
    assert work_units(2.0, time_stretch_factor=2) == 2 * one
    assert work_units(2.0, sampling_steps=12, feedback_steps=2, c2f_sampling_steps=2) == \
        2.0 * (24 + 2 + CODEC_STEPS)
    assert work_units(2.0, temperature=0.3) == one  # other controls cost nothing


def test_rate_cache_is_per_model_and_thread_count(tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    a.write_bytes(b"a")
    b.write_bytes(b"bb")
    assert RateCache(a, 2).get() is None
    RateCache(a, 2).put(0.5)
    assert RateCache(a, 2).get() == 0.5  # read back by a new instance: kept on disk
    assert RateCache(a, 1).get() is None and RateCache(b, 2).get() is None
    RateCache(a, 1).put(0.25)
    assert (RateCache(a, 2).get(), RateCache(a, 1).get()) == (0.5, 0.25)
    assert RateCache(a, 2).file.parent == tmp_path / "cache" / "vampnet-onnx"
    RateCache(a, 2).file.write_text("not json")
    assert RateCache(a, 2).get() is None  # a damaged cache is no error


def test_second_run_is_estimated_from_the_first(model):
    x = tone(44100, 1.0, 1)
    first = Bar("model", io.StringIO())
    r = model.vamp(x, 44100, seed=1, progress=first)
    assert "no estimate" in first.summary(r.model_s)
    rate = RateCache(model.path, model.threads).get()
    assert rate is not None and rate > 0
    bar = Bar("model", io.StringIO())
    model.vamp(x[:22050], 44100, seed=1, sampling_steps=4, progress=bar)
    units = work_units(0.5, **{**model.defaults(), "sampling_steps": 4})
    assert bar.estimate == pytest.approx(rate * units)
    assert bar.stream.getvalue() == ""  # off a terminal the bar writes nothing


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_bar_ends_with_the_actual_time_beside_the_estimate():
    bar = Bar("model", Tty())
    bar.start(10.0)
    bar(4.0)
    assert bar.stream.getvalue().endswith("4.0 s elapsed, about 6.0 s left\033[K")
    bar(12.0)
    assert "12 s elapsed, 2.0 s over the estimate" in bar.stream.getvalue()
    bar.finish(8.0)
    assert bar.stream.getvalue().endswith("\r\033[Kmodel: 8.0 s, estimated 10 s, +25 %\n")
    quiet = Bar("model", Tty(), quiet=True)
    quiet.start(1.0)
    quiet(0.5)
    quiet.finish(1.0)
    assert quiet.stream.getvalue() == ""
