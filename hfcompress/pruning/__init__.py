"""Pruning: unstructured pruning on a schedule as a TrainerCallback (structured pruning: not yet)."""

from .callback import PruningCallback, prunable_linears
from .config import PruningConfig
from .masks import masks_for_sparsity, sparsity_report
from .schedules import cubic_sparsity

__all__ = [
    "PruningCallback",
    "PruningConfig",
    "cubic_sparsity",
    "masks_for_sparsity",
    "prunable_linears",
    "sparsity_report",
]
