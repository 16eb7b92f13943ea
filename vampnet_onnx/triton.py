"""``vampnet-onnx triton MODEL DIR``: a Triton Inference Server model repository for the model.

Writes, for the onnxruntime backend::

    DIR/NAME/config.pbtxt             every input and output of the model, dynamic batching off
    DIR/NAME/1/model.onnx             the model file, copied byte for byte
    DIR/NAME/1/<external data>        its external data files under their own names, if any
    DIR/NAME/README.md                how to serve it (tritonserver) and call it (tritonclient)

Everything in config.pbtxt is read from the model through onnxruntime (its inputs, outputs,
types and shapes, its metadata), never from a list kept here; so this needs
only the runtime (no onnx, no torch). The file is copied rather than re-serialised, so the model's
references to its external data (relative names) still hold beside ``model.onnx``.

The config follows what the backend's own auto-complete writes for a model without a batch
dimension: ``max_batch_size: 0`` (the model's rows are variations of one request, so Triton must
not merge requests into them), full shapes in ``dims`` with ``-1`` for dynamic axes and
``dims: [ 1 ]`` for a one-element parameter. Every input is required (the model stores no
defaults; a client sends them, see the README it writes). It has not been tried on a live server.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

from .audio import atomic_writer
from .errors import UsageError
from .paths import DEFAULT_MODEL, data_file
from .session import Session

TRITON_TYPES = {
    "tensor(float)": "TYPE_FP32",
    "tensor(double)": "TYPE_FP64",
    "tensor(float16)": "TYPE_FP16",
    "tensor(bfloat16)": "TYPE_BF16",
    "tensor(int64)": "TYPE_INT64",
    "tensor(int32)": "TYPE_INT32",
    "tensor(int16)": "TYPE_INT16",
    "tensor(int8)": "TYPE_INT8",
    "tensor(uint64)": "TYPE_UINT64",
    "tensor(uint32)": "TYPE_UINT32",
    "tensor(uint16)": "TYPE_UINT16",
    "tensor(uint8)": "TYPE_UINT8",
    "tensor(bool)": "TYPE_BOOL",
    "tensor(string)": "TYPE_STRING",
}
"""onnxruntime's type strings -> Triton's model-config data types."""

MODEL_FILE = "model.onnx"
"""The file name the onnxruntime backend loads from a version folder by default."""


def triton_dims(shape: tuple) -> list[int]:
    """ORT shape -> config dims: -1 for a dynamic axis (None or a symbol), [1] for a scalar."""
    dims = [d if isinstance(d, int) and d >= 0 else -1 for d in shape]
    return dims or [1]


def tensor_entries(model) -> tuple[list[dict], list[dict]]:
    """(inputs, outputs) of ``model`` (a ``vampnet_onnx.session.Session``) as config entries."""
    def entry(info) -> dict:
        dtype = TRITON_TYPES.get(info.type)
        if dtype is None:
            raise UsageError(f"Triton has no data type for {info.name} ({info.type})")
        return {"name": info.name, "data_type": dtype, "dims": triton_dims(info.shape)}

    inputs = [entry(i) for i in model.inputs.values()]
    outputs = [entry(o) for o in model.outputs.values()]
    return inputs, outputs


def config_text(name: str, inputs: list[dict], outputs: list[dict]) -> str:
    """config.pbtxt (protobuf text format of Triton's ModelConfig)."""

    def block(key: str, entries: list[dict]) -> list[str]:
        lines = [f"{key} ["]
        for k, e in enumerate(entries):
            lines.append("  {")
            lines.append(f'    name: "{e["name"]}"')
            lines.append(f"    data_type: {e['data_type']}")
            lines.append(f"    dims: [ {', '.join(str(d) for d in e['dims'])} ]")
            lines.append("  }" + ("," if k < len(entries) - 1 else ""))
        lines.append("]")
        return lines

    lines = [
        "# Written by `vampnet-onnx triton` from the model's own signature. Untested against a",
        "# live Triton server. The model's rows are variations of one request: no batching.",
        f'name: "{name}"',
        'backend: "onnxruntime"',
        "max_batch_size: 0",
        *block("input", inputs),
        *block("output", outputs),
    ]
    return "\n".join(lines) + "\n"


def _np_dtype(triton_type: str) -> str:
    return {"TYPE_FP32": "np.float32", "TYPE_FP64": "np.float64", "TYPE_FP16": "np.float16",
            "TYPE_BOOL": "np.bool_"}.get(triton_type, "np." + triton_type[5:].lower())


def readme_text(name: str, repo_dir: Path, model, inputs: list[dict], outputs: list[dict]) -> str:
    """The repository's README: the tritonserver command and a tritonclient snippet, with every
    input the model requires (values from the model's "defaults" metadata)."""
    defaults = model.defaults()
    feeds = []
    for e in inputs:
        n, dtype = e["name"], _np_dtype(e["data_type"])
        if n == "audio":
            feeds.append('    "audio": audio,')
        elif n == "mask":
            feeds.append(f'    "mask": np.zeros((1, {model.n_codebooks}, 0), np.int64),  # empty: build the mask')
        elif n in defaults:
            feeds.append(f'    "{n}": np.array([{json.dumps(defaults[n])}], {dtype}),')
        else:
            feeds.append(f'    # "{n}": {e["data_type"]} dims {e["dims"]}: give it here')
    rate = model.sample_rate
    out_names = ", ".join(f'"{o["name"]}"' for o in outputs)
    return f"""# Triton model repository for `{model.path.name}`

Written by `vampnet-onnx triton`. **Untested against a live Triton Inference Server**: the
config was generated from the model's signature and checked against it, but no server was run.

```bash
tritonserver --model-repository={repo_dir}
# or in NVIDIA's container (pick a release tag that exists, e.g. 24.08):
docker run --rm -p8000:8000 -p8001:8001 -v {repo_dir}:/models \\
    nvcr.io/nvidia/tritonserver:24.08-py3 tritonserver --model-repository=/models
```

`config.pbtxt` lists every input and output of the model. `max_batch_size: 0`: dynamic
batching is off, because the first axis of `audio` holds the variations of one request (B rows =
B variations), not separate requests. Every input is required: the snippet sends the model's
defaults (from its metadata) for the parameters, shape `[1]`, and an empty mask.

```python
import numpy as np
import tritonclient.http as httpclient  # pip install tritonclient[http]
from tritonclient.utils import np_to_triton_dtype

client = httpclient.InferenceServerClient("localhost:8000")
# (B, S): B variations of one mono clip (the mean of its channels) at the rate given as
# "sample_rate", any loudness: the model resamples and normalises it itself
audio = np.zeros((2, {rate}), np.float32)
feeds = {{
{chr(10).join(feeds)}
}}
inputs = []
for key, value in feeds.items():
    tensor = httpclient.InferInput(key, list(value.shape), np_to_triton_dtype(value.dtype))
    tensor.set_data_from_numpy(value)
    inputs.append(tensor)
wanted = [httpclient.InferRequestedOutput(n) for n in ({out_names})]
result = client.infer("{name}", inputs, outputs=wanted)
audio_out = result.as_numpy("audio_out")  # (B, S) float32 at "sample_rate", the input's loudness
```
"""


def write_repository(model_path: str | Path, repo_dir: str | Path, name: str = "vampnet",
                     overwrite: bool = False) -> Path:
    """Write the repository (see the module docstring); returns DIR/NAME."""
    repo = Path(repo_dir).absolute()
    folder = repo / name
    if repo.exists() and not repo.is_dir():
        raise UsageError(f"not a folder: {repo}")
    if folder.exists() and not overwrite:
        raise UsageError(f"{folder} already exists (pass --overwrite to replace it)")
    model = Session(model_path)
    inputs, outputs = tensor_entries(model)
    version = folder / "1"
    version.mkdir(parents=True, exist_ok=True)
    data_files = [f for f in [data_file(model.path)] if f.is_file()]
    with atomic_writer() as w:
        w.add(version / MODEL_FILE, lambda tmp: shutil.copyfile(model.path, tmp))
        for f in data_files:
            w.add(version / f.name, lambda tmp, f=f: shutil.copyfile(f, tmp))
        w.add(folder / "config.pbtxt",
              lambda tmp: tmp.write_text(config_text(name, inputs, outputs), encoding="utf-8"))
        w.add(folder / "README.md", lambda tmp: tmp.write_text(
            readme_text(name, repo, model, inputs, outputs), encoding="utf-8"))
    return folder


def add_parser(sub) -> None:
    t = sub.add_parser(
        "triton", help="write a Triton Inference Server model repository for the model",
        description="Write DIR/NAME/config.pbtxt (every input and output of MODEL, dynamic "
                    "batching off), DIR/NAME/1/model.onnx (+ external data) and DIR/NAME/README.md "
                    "(the tritonserver command and a tritonclient snippet). Untested against a "
                    "live Triton server.")
    t.add_argument("model", metavar="MODEL", nargs="?", default=DEFAULT_MODEL,
                   help=f"the .onnx model (default: {DEFAULT_MODEL})")
    t.add_argument("dir", metavar="DIR", help="the model repository folder (created if missing)")
    t.add_argument("--name", default="vampnet",
                   help="the model's name in the repository (default: vampnet)")
    t.add_argument("--overwrite", action="store_true", help="replace DIR/NAME if it exists")
    t.set_defaults(func=cmd_triton)


def cmd_triton(args: argparse.Namespace) -> int:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", args.name) or args.name in (".", ".."):
        raise UsageError(f"--name must be letters, digits, '_', '.' or '-', got {args.name!r}")
    folder = write_repository(args.model, args.dir, args.name, overwrite=args.overwrite)
    print(f"wrote {folder / 'config.pbtxt'}")
    print(f"wrote {folder / '1' / MODEL_FILE}")
    print(f"wrote {folder / 'README.md'} (tritonserver command, tritonclient snippet)")
    return 0
