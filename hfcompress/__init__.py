"""hfcompress: shrink Hugging Face Transformers models and ship the result.

The public API is flat: ``from hfcompress import DistillationConfig, DistillationTrainer``.
"""

from .distillation import DistillationConfig, DistillationTrainer, create_student_from_teacher
from .errors import HfCompressError
from .finetuning import FinetuneConfig, finetune
from .modeling import count_parameters
from .pipeline import run_pipeline
from .pruning import (
    PruningCallback,
    PruningConfig,
    StructuredPruningConfig,
    prune_and_recover,
    structured_prune,
    structured_targets,
)
from .quantization import QuantizationAwareCallback, QuantizationConfig, load_quantized, quantize

__version__ = "0.1.0"

__all__ = [
    "DistillationConfig",
    "DistillationTrainer",
    "FinetuneConfig",
    "HfCompressError",
    "PruningCallback",
    "PruningConfig",
    "QuantizationAwareCallback",
    "QuantizationConfig",
    "StructuredPruningConfig",
    "count_parameters",
    "create_student_from_teacher",
    "finetune",
    "load_quantized",
    "prune_and_recover",
    "quantize",
    "run_pipeline",
    "structured_prune",
    "structured_targets",
]
