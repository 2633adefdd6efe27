"""Knowledge distillation: config, trainer, pure loss functions, students built from their teacher, and
the teacher-logit cache."""

from .config import DistillationConfig
from .layer_maps import kept_layer_maps, resolve_layer_maps
from .student import create_student_from_teacher
from .trainer import DistillationTrainer, check_shared_vocabulary

__all__ = [
    "DistillationConfig",
    "DistillationTrainer",
    "check_shared_vocabulary",
    "create_student_from_teacher",
    "kept_layer_maps",
    "resolve_layer_maps",
]
