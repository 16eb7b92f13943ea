"""``python -m vampnet_onnx`` = the ``vampnet-onnx`` console script."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
