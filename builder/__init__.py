"""Torch side: VampNet/LAC checkpoints, export-friendly modules, ONNX export and assembly."""
