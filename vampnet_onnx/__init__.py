"""Runtime side of vampnet-onnx: onnxruntime + numpy only (never torch)."""
