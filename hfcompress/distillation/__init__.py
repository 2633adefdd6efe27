"""Knowledge distillation: config, trainer, pure loss functions, students built from their teacher, and
the teacher-logit cache."""

from .config import DistillationConfig
from .student import create_student_from_teacher
from .trainer import DistillationTrainer, check_shared_vocabulary, resolve_layer_maps

__all__ = [
    "DistillationConfig",
    "DistillationTrainer",
    "check_shared_vocabulary",
    "create_student_from_teacher",
    "resolve_layer_maps",
]
