"""`vampnet-onnx build`: VampNet checkpoints in, the single ONNX model out.

    build_model(codec, coarse, c2f, output, coarse_lora=None, c2f_lora=None, adapters=()) -> Path

`coarse_lora` / `c2f_lora` fold one fine-tune into the weights; `adapters`, (name, coarse LoRA file
or None, c2f LoRA file or None) triples, build several into one model instead, chosen at run time
by the input `adapter` (docs/adapters.md).

Writes atomically: everything goes to a temporary folder beside the output and is renamed into
place only after the checker and one short run have passed. Weights go to external data
(`<output>.data`) when the model would not fit a 2 GB protobuf.

Memory (real size, 2.6 GB of weights): the torch modules are dropped once the components are
exported, and big weights are written to `<output>.data` straight from the exported components,
which keep only references; assembly and saving then never copy the weights, and the peak is set
by the export. `python -m benchmarks.realsize` measures it.
"""
from __future__ import annotations

import gc
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from vampnet_onnx.builder.assemble import assemble, export_components
from vampnet_onnx.builder.codec import load_codec
from vampnet_onnx.builder.files import PROTOBUF_LIMIT, externalize_weights, save_model, weights_size
from vampnet_onnx.builder.quantize import WEB, quantize_components
from vampnet_onnx.builder.transformer import load_transformer
from vampnet_onnx.builder.web import preoptimize
from vampnet_onnx.interface import MAX_ADAPTERS
from vampnet_onnx.paths import data_file
from vampnet_onnx.session import interface_feeds



def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def smoke_run(path: Path) -> float:
    """One short run (0.1 s of noise, one step per stage); returns the seconds it took."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    audio = np.random.default_rng(0).uniform(-0.1, 0.1, (1, 4410)).astype(np.float32)
    start = time.perf_counter()
    feeds = interface_feeds(audio, sampling_steps=1, c2f_sampling_steps=1)
    out = session.run(["audio_out"], feeds)[0]
    if out.shape != audio.shape or not np.isfinite(out).all():
        raise RuntimeError(f"the built model's test run gave {out.shape} / non-finite audio")
    return time.perf_counter() - start


TEST_DATA_SET = "test_data_set_0"
TEST_DATA_SEED = 7


def test_clip(rate: int, seconds: float = 0.5) -> np.ndarray:
    """A short deterministic clip (plucked tones) at ``rate``, the input of the test data set."""
    t = np.arange(int(seconds * rate)) / rate
    tone = np.sin(2 * np.pi * 220.0 * t) + 0.5 * np.sin(2 * np.pi * 331.0 * t)
    return (0.2 * tone * np.exp(-6.0 * (t % 0.25))).astype(np.float32)[None]


def write_test_data(path: Path, folder: Path) -> None:
    """A model-zoo style conformance set beside the model: `folder/input_<i>.pb` for every input
    and `folder/output_<i>.pb` for every output (ONNX TensorProto files, named like the graph's
    values), from onnxruntime on `test_clip(the model's rate)` with seed TEST_DATA_SEED and the defaults."""
    import onnxruntime as ort
    from onnx import numpy_helper

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rate = int(session.get_modelmeta().custom_metadata_map["sample_rate"])
    feeds = interface_feeds(test_clip(rate), seed=TEST_DATA_SEED)
    outputs = session.run(None, feeds)
    folder.mkdir()
    for i, graph_input in enumerate(session.get_inputs()):
        tensor = numpy_helper.from_array(feeds[graph_input.name], graph_input.name)
        (folder / f"input_{i}.pb").write_bytes(tensor.SerializeToString())
    for i, (graph_output, value) in enumerate(zip(session.get_outputs(), outputs)):
        tensor = numpy_helper.from_array(value, graph_output.name)
        (folder / f"output_{i}.pb").write_bytes(tensor.SerializeToString())


ADAPTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_adapters(adapters, coarse_lora=None, c2f_lora=None) -> list[tuple[str, Path | None, Path | None]]:
    """The adapters as (name, coarse file, c2f file), each checked: a plain unique name, a file
    for at least one stage, at most MAX_ADAPTERS, and no LoRA folded in besides."""
    adapters = [(name, Path(c) if c else None, Path(f) if f else None) for name, c, f in adapters]
    if adapters and (coarse_lora or c2f_lora):
        raise ValueError("give either one LoRA file per stage to fold in, or named adapters (NAME=FILE), not both")
    if len(adapters) > MAX_ADAPTERS:
        raise ValueError(f"{len(adapters)} adapters: a model holds at most {MAX_ADAPTERS}")
    seen = set()
    for name, coarse, c2f in adapters:
        if not ADAPTER_NAME.fullmatch(name):
            raise ValueError(f"adapter name {name!r}: use letters, digits, '_', '.' or '-' (not first)")
        if name in seen:
            raise ValueError(f"adapter name {name!r} is given twice; each adapter needs its own name")
        if coarse is None and c2f is None:
            raise ValueError(f"adapter {name!r} has no LoRA file (give it a coarse or a c2f one, or both)")
        seen.add(name)
    return adapters


def build_model(codec: Path, coarse: Path, c2f: Path, output: Path, coarse_lora: Path | None = None,
                c2f_lora: Path | None = None, log=print, weights: str = "float32", adapters=()) -> Path:
    """`weights`: "float32", or "int8" / "int8-dynamic" / "web" for the transformers' and the codec
    decoder's weights (builder/quantize.py)."""
    adapters = check_adapters(adapters, coarse_lora, c2f_lora)
    output = Path(output)
    started = time.perf_counter()

    def step(message: str) -> None:
        log(f"[{time.perf_counter() - started:6.1f}s] {message}")

    step("loading checkpoints")
    codec_model = load_codec(codec)
    # int8 quantizes the base weights, so its adapters run beside them instead of folded in
    fold = weights == "float32"
    coarse_model = load_transformer(coarse, codec_model, "coarse", lora=coarse_lora,
                                    adapters=[(name, c) for name, c, _ in adapters], fold=fold)
    c2f_model = load_transformer(c2f, codec_model, "c2f", lora=c2f_lora,
                                 adapters=[(name, f) for name, _, f in adapters], fold=fold)
    files = {"codec": codec, "coarse": coarse, "c2f": c2f, "coarse_lora": coarse_lora, "c2f_lora": c2f_lora}
    metadata = {f"sha256_{name}": sha256(Path(p)) for name, p in files.items() if p is not None}
    if adapters:
        metadata["adapter_sha256"] = json.dumps(
            {name: {kind: sha256(p) for kind, p in (("coarse", c), ("c2f", f)) if p} for name, c, f in adapters})
    metadata.update({f"parameters_{name}": m.checkpoint_parameters
                     for name, m in [("codec", codec_model), ("coarse", coarse_model), ("c2f", c2f_model)]})

    created = None  # the topmost folder this build creates, removed again if it fails
    if not output.parent.is_dir():
        created = output.parent
        while not created.parent.exists():
            created = created.parent
        step(f"creating the output folder {output.parent}")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    done = False
    try:
        step("exporting components (codec encoder, codec decoder, coarse and c2f transformers)")
        components = export_components(codec_model, coarse_model, c2f_model)
        # Assembly reads only the configurations: let the torch weights go before the next copies.
        codec_model, coarse_model, c2f_model = (_ConfigOnly(m) for m in (codec_model, coarse_model, c2f_model))
        gc.collect()
        if weights != "float32":
            step(f"quantizing the transformers' and the codec decoder's weights ({weights})")
            quantize_components(components, weights)
        data = data_file(staging / output.name)
        # int8 fits one file, but onnxruntime maps external data instead of holding the protobuf
        # and a copy of it (2.0 GB peak instead of 3.8 GB at real size), and the assembly's copies
        # of the graph stay small
        if weights != "float32" or sum(weights_size(c) for c in components.values()) >= PROTOBUF_LIMIT - (64 << 20):
            step(f"moving the weights to {data.name}")
            externalize_weights(components, data)
        step("assembling the single model")
        model = assemble(codec_model, coarse_model, c2f_model, metadata=metadata, components=components,
                         weights=weights)
        del components

        step("writing")
        written = save_model(model, staging / output.name)
        del model
        if data.exists() and data not in written:
            written.append(data)
        if weights == WEB:
            step("onnxruntime's basic graph optimizations, done once for the browser (builder/web.py)")
            preoptimize(written[0])
        step("checking (onnx.checker, full check)")
        onnx.checker.check_model(str(written[0]), full_check=True)
        step("test run in onnxruntime")
        smoke_run(written[0])
        step(f"writing the conformance data ({TEST_DATA_SET}/)")
        write_test_data(written[0], staging / TEST_DATA_SET)
        for path in written:
            os.replace(path, output.parent / path.name)
        test_data = output.parent / TEST_DATA_SET
        shutil.rmtree(test_data, ignore_errors=True)
        os.replace(staging / TEST_DATA_SET, test_data)
        stale = data_file(output)
        if len(written) == 1 and stale.exists():
            stale.unlink()  # left from an earlier, bigger build at the same path
        done = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not done and created is not None:
            _remove_empty_folders(output.parent, created)
    total = sum((output.parent / p.name).stat().st_size for p in written)
    step(f"wrote {', '.join(str(output.parent / p.name) for p in written)} ({total / 1e6:.1f} MB)")
    return output


def _remove_empty_folders(folder: Path, top: Path) -> None:
    """Remove `folder` and its parents up to `top` while they are empty."""
    while True:
        try:
            folder.rmdir()
        except OSError:
            return
        if folder == top:
            return
        folder = folder.parent


class _ConfigOnly:
    """What assembly needs of a loaded codec / transformer: its `config`, without the weights."""

    def __init__(self, model):
        self.config = model.config
        self.adapter_names = getattr(model, "adapter_names", ())
        self.adapter_fold = getattr(model, "adapter_fold", True)
