"""How a built model is written: its weights in one `.data` file beside the `.onnx` when they do not
fit a protobuf (2 GB), aligned so that onnxruntime can memory-map them."""
from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx.external_data_helper import set_external_data

from vampnet_onnx.paths import data_file

PROTOBUF_LIMIT = 2_000_000_000


def weights_size(model: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) for t in model.graph.initializer)


def externalize_weights(components: dict[str, onnx.ModelProto], data: Path, threshold: int = 1024,
                        align: int = 4096, align_threshold: int = 1 << 20) -> int:
    """Move the components' weights (raw tensors of >= `threshold` bytes) into the one file `data`,
    leaving external-data references (relative location `data.name`) in their place; returns the
    size of `data`. Each component is replaced by a re-parse of its stripped bytes, so the protobuf
    memory that held its weights is freed at once. Tensors of >= `align_threshold` bytes start at
    multiples of `align`, as onnxruntime's own writer aligns them, so that it can memory-map them.
    """
    with open(data, "ab") as f:
        for name in list(components):
            _externalize(components[name], f, data.name, threshold, align, align_threshold)
            components[name] = onnx.ModelProto.FromString(components[name].SerializeToString())
        return f.tell()


def _externalize(model: onnx.ModelProto, f, location: str, threshold: int, align: int, align_threshold: int) -> None:
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL or not tensor.HasField("raw_data"):
            continue
        raw = tensor.raw_data
        if len(raw) < threshold:
            continue
        if len(raw) >= align_threshold and f.tell() % align:
            f.write(b"\0" * (align - f.tell() % align))
        offset = f.tell()
        f.write(raw)
        set_external_data(tensor, location, offset, len(raw))
        tensor.ClearField("raw_data")


def save_model(model: onnx.ModelProto, path: Path) -> list[Path]:
    """Save, with the weights in `<name>.data` beside it when the model is too big for one file."""
    if weights_size(model) < PROTOBUF_LIMIT - (64 << 20):
        onnx.save_model(model, path)
        return [path]
    data = data_file(path)
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data.name, size_threshold=1024)
    # onnx creates the data file readable by its owner only; give it what any new file gets here
    umask = os.umask(0)
    os.umask(umask)
    data.chmod(0o666 & ~umask)
    return [path, data]
