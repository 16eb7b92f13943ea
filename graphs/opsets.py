"""The opsets every graph in the project is written against (they must match across subgraphs)."""
from onnxscript import opset20 as op
from onnxscript.values import Opset

OPSET_VERSION = 20
# the int8 variant (`build --weights int8`) reads its weights through blocked DequantizeLinear
INT8_OPSET_VERSION = 21
# Local functions of the single model (graph helpers and the exported components) live here.
vampnet = Opset("vampnet", 1)

__all__ = ["op", "vampnet", "OPSET_VERSION", "INT8_OPSET_VERSION"]
