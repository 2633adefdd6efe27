"""Quantization: bitsandbytes 8/4-bit, ONNX Runtime int8 (dynamic, static) and torchao int8 weight-only behind
one ``quantize`` call, quantization-aware training for ONNX Runtime int8 (a ``TrainerCallback``), and a k-bit
error analysis. Backends are optional and imported lazily."""

from .analysis import kbit_error_report, linear_quantize
from .api import load_quantized, quantize
from .backends import is_bitsandbytes_available, is_optimum_onnx_available, is_torchao_available
from .config import METHODS, QuantizationConfig, QuantizationOptions
from .measure import measure_artifacts, peak_memory_mb
from .qat import QuantizationAwareCallback

__all__ = [
    "METHODS",
    "QuantizationAwareCallback",
    "QuantizationConfig",
    "QuantizationOptions",
    "is_bitsandbytes_available",
    "is_optimum_onnx_available",
    "is_torchao_available",
    "kbit_error_report",
    "linear_quantize",
    "load_quantized",
    "measure_artifacts",
    "peak_memory_mb",
    "quantize",
]
