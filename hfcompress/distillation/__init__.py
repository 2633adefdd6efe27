"""Knowledge distillation: config, trainer, students built from their teacher, teacher-logit cache."""

from .config import DistillationConfig
from .student import count_parameters, create_student_from_teacher, find_layer_list, select_layers
from .trainer import DistillationTrainer, check_shared_vocabulary

__all__ = [
    "DistillationConfig",
    "DistillationTrainer",
    "check_shared_vocabulary",
    "count_parameters",
    "create_student_from_teacher",
    "find_layer_list",
    "select_layers",
]
