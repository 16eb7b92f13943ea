"""Shared fixtures: the upstream golden files and the tiny models built from their checkpoints.

Building a variant (export of four components + assembly) takes about a minute, so each is
built once per test run and shared, also between the xdist workers (`build_variant`).
"""
from __future__ import annotations

import json
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest

from vampnet_onnx.interface import OUTPUT_NAMES

FIXTURES = Path(__file__).parent / "fixtures" / "upstream"
CHECKPOINTS = FIXTURES / "checkpoints"
GOLDEN = FIXTURES / "golden"
CASE_VARIANT = {
    "tiny_periodic": "tiny",
    "tiny_inpaint_c2f_chunks": "tiny",
    "tiny_lora": "tiny-lora",
    "tiny_stochastic_seed5": "tiny",
}
DETERMINISTIC_CASES = ["tiny_periodic", "tiny_inpaint_c2f_chunks", "tiny_lora"]
OUTPUTS = list(OUTPUT_NAMES)  # the model's, in order


def as_a_terminal_starts_it() -> None:
    """`preexec_fn` for a child that a test interrupts with SIGINT: the signal unblocked and at its
    default, as a shell's foreground job has it. A child inherits its parent's ignored signals and
    signal mask, and a pytest worker can have SIGINT ignored or blocked by what ran in it before
    (seen once in a full run on two xdist workers); such a child rightly ignores Ctrl-C."""
    import signal
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def app_case(case: str) -> dict:
    """A golden-app fixture (upstream's app beyond the model: preprocessing, pitch, beats)."""
    return dict(np.load(FIXTURES / "golden-app" / f"{case}.npz"))


def golden(case: str) -> dict:
    data = dict(np.load(GOLDEN / f"{case}.npz"))
    data["meta"] = json.loads(str(data["meta"]))
    return data


def fixture_inputs(g: dict) -> dict:
    """A fixture's mask, seed and sampling settings as model inputs (generate's default is 12
    steps when the fixture names none); feed them through vampnet_onnx.session.interface_feeds."""
    meta = g["meta"]
    inputs = {"mask": g["mask"], "seed": meta["seed"]}
    for prefix, kwargs in (("", meta["coarse_kwargs"]), ("c2f_", meta["c2f_kwargs"])):
        inputs[prefix + "sampling_steps"] = kwargs.get("_sampling_steps", 12)
        for key in ("temperature", "mask_temperature", "top_p", "sample_cutoff"):
            if key in kwargs:
                inputs[prefix + key] = kwargs[key]
    return inputs


def runtime_only(blocked: tuple[str, ...]) -> str:
    """Python source for `python -c`: the CLI's main with the `blocked` packages unimportable
    (exit 98 if torch still imports, 99 if a blocked module was loaded anyway)."""
    return textwrap.dedent(f"""
        import importlib.abc, sys
        BLOCKED = {tuple(blocked)!r}
        class _Blocker(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if any(name == b or name.startswith(b + ".") for b in BLOCKED):
                    raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
                return None
        sys.meta_path.insert(0, _Blocker())
        try:
            import torch
        except ImportError:
            pass
        else:
            sys.exit(98)
        from vampnet_onnx.cli import main
        rc = main(sys.argv[1:])
        leaked = sorted(m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED))
        if leaked:
            print("LEAKED", leaked)
            sys.exit(99)
        sys.exit(rc)
    """)


# The heaviest test files first (minutes each on two cores), the rest in collection order: the
# xdist scheduler hands out whole files in this order (--no-loadscope-reorder in pyproject.toml),
# so the two workers end together instead of one running a long file alone at the end.
HEAVY_FIRST = ("test_web.py", "test_adapters.py", "test_realsize.py", "test_model.py", "test_hardening.py",
               "test_runtimes.py", "test_batch.py", "test_reliability.py", "test_int8.py", "test_build.py",
               "test_cli.py", "test_demo.py", "test_codec_windows.py", "test_export.py", "test_beats.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@dataclass
class Built:
    """One variant: the torch modules, each exported component, and the single model on disk."""

    codec: object
    coarse: object
    c2f: object
    components: dict[str, onnx.ModelProto]
    path: Path


@pytest.fixture(scope="session")
def build_variant(tmp_path_factory):
    """`build(variant)`: the variant built once per test run, shared by the xdist workers.

    The first worker to ask builds it into a folder beside the workers' own temporary folders
    (under a file lock), with its exported components; the others load those files, and the torch
    modules from the checkpoints (seconds instead of a build's minute). Tests treat the files as
    read-only."""
    from filelock import FileLock

    from vampnet_onnx.builder.assemble import assemble, export_components
    from vampnet_onnx.builder.files import save_model
    from vampnet_onnx.builder.codec import load_codec
    from vampnet_onnx.builder.transformer import load_transformer

    base_temp = tmp_path_factory.getbasetemp()
    shared = (base_temp.parent if os.environ.get("PYTEST_XDIST_WORKER") else base_temp) / "built"
    shared.mkdir(exist_ok=True)
    cache: dict[str, Built] = {}

    def modules(folder_name: str):
        folder = CHECKPOINTS / folder_name
        codec = load_codec(folder / "codec.pth")
        return codec, load_transformer(folder / "coarse.pth", codec, "coarse"), load_transformer(folder / "c2f.pth", codec, "c2f")

    def make(variant: str, folder: Path) -> None:
        folder_name, _, weights = variant.partition(":")
        if weights:  # assembled from copies of the float32 build's exported components
            base = build(folder_name)
            codec, coarse, c2f = base.codec, base.coarse, base.c2f
            components = {}
            for name, component in base.components.items():
                components[name] = onnx.ModelProto()
                components[name].CopyFrom(component)
            model = assemble(codec, coarse, c2f, components=components, weights=weights)
        else:
            codec, coarse, c2f = modules(folder_name)
            components = export_components(codec, coarse, c2f)
            model = assemble(codec, coarse, c2f, components=components)
        save_model(model, folder / "vampnet.onnx")
        for name, component in components.items():
            onnx.save_model(component, folder / f"{name}.component.onnx")
        (folder / "components.json").write_text(json.dumps(list(components)))  # written last: complete

    def build(variant: str) -> Built:
        """`variant` names a checkpoint folder; "<folder>:<weights>" is that build with `--weights
        <weights>` (int8, int8-dynamic, web)."""
        if variant not in cache:
            folder = shared / variant.replace(":", "-")
            with FileLock(str(folder) + ".lock"):
                if not (folder / "components.json").exists():
                    folder.mkdir(exist_ok=True)
                    make(variant, folder)
            components = {name: onnx.load_model(folder / f"{name}.component.onnx")
                          for name in json.loads((folder / "components.json").read_text())}
            cache[variant] = Built(*modules(variant.partition(":")[0]), components, folder / "vampnet.onnx")
        return cache[variant]

    return build


@pytest.fixture(scope="session")
def tiny(build_variant) -> Built:
    return build_variant("tiny")


@pytest.fixture(scope="session")
def model_path(request) -> Path:
    """The model the host-side tests run: the real tiny model, or VAMPNET_ONNX_TEST_MODEL if set."""
    override = os.environ.get("VAMPNET_ONNX_TEST_MODEL")
    if override:
        return Path(override)
    return Path(request.getfixturevalue("tiny").path)


@pytest.fixture(scope="session")
def tiny_lora(build_variant) -> Built:
    return build_variant("tiny-lora")


@pytest.fixture(autouse=True)
def _rate_cache_in_tmp(tmp_path_factory, monkeypatch):
    """`vamp` records this machine's rate (vampnet_onnx.progress): in a temporary folder, never
    the user's cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))
def prepared_audio(g: dict) -> np.ndarray:
    """A fixture's preprocessed audio (B, S) without upstream's zero padding to whole hops: what
    upstream's `_preprocess` returns for its 44.1 kHz input, at −24 LUFS. The model passes such
    audio through unchanged (graphs/preprocess.py, normalize_unless_there) and pads it to whole
    hops itself; the padded array would measure quieter and be scaled."""
    assert int(g["input_sr"]) == 44100
    return g["preprocessed_audio"][:, 0, : g["input_audio"].shape[-1]]


def app_output(decoded: np.ndarray, fed: np.ndarray, rate: int = 44100) -> np.ndarray:
    """Upstream's decoded audio as its app hands it out: `out.normalize(loudness_in)`, the loudness
    of the audio it was fed (audiotools' meter, tests/numpy_reference.py). The model's `audio_out`
    is this, so the fixtures' decoded audio is compared after the same gain."""
    from numpy_reference import loudness

    gain = 10 ** ((loudness(fed, rate) - loudness(decoded, rate)) / 20)
    return (decoded * gain[:, None]).astype(np.float32)
