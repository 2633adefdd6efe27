"""hfcompress: shrink Hugging Face Transformers models and ship the result.

The public API is flat: ``from hfcompress import DistillationConfig, DistillationTrainer``.
"""

from .distillation import (
    DistillationConfig,
    DistillationTrainer,
    count_parameters,
    create_student_from_teacher,
)
from .errors import HfCompressError
from .pruning import (
    PruningCallback,
    PruningConfig,
    StructuredPruningConfig,
    structured_prune,
    structured_targets,
)

__version__ = "0.1.0"

__all__ = [
    "DistillationConfig",
    "DistillationTrainer",
    "HfCompressError",
    "PruningCallback",
    "PruningConfig",
    "StructuredPruningConfig",
    "count_parameters",
    "create_student_from_teacher",
    "structured_prune",
    "structured_targets",
]
