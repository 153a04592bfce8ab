"""Use a trained model outside speeched: transformers directories, ONNX graphs, model cards, the hub."""

from speeched.export.common import ExportError
from speeched.export.model_card import write_model_card

__all__ = ["ExportError", "write_model_card"]
