"""VampNet as one ONNX model; the runtime side needs onnxruntime and numpy only (never torch).

    from vampnet_onnx import Model
    Model("artifacts/vampnet.onnx").vamp_file("in.wav", "out.wav", seed=1, temperature=0.9)

See vampnet_onnx/model.py for the API.
"""
from .model import Model, Vamped  # noqa: F401
