"""Pruning: unstructured pruning on a schedule (``PruningCallback``) and structured pruning of heads, FFN
neurons and layers that shrinks the model (``structured_targets`` + ``structured_prune``), and
``prune_and_recover``, which alternates pruning with distillation from the unpruned model."""

from .callback import PruningCallback, prunable_linears
from .config import PruningConfig, StructuredPruningConfig
from .importance import block_influence, gradient_importance, magnitude_importance
from .iterative import (
    calibration_batches,
    lowest_influence_layers,
    structure,
    structured_prune,
    structured_targets,
)
from .masks import masks_for_sparsity, sparsity_report
from .recover import prune_and_recover
from .schedules import cubic_sparsity
from .structured import prune_attention_heads, prune_ffn_neurons, remove_layers

__all__ = [
    "PruningCallback",
    "PruningConfig",
    "StructuredPruningConfig",
    "block_influence",
    "calibration_batches",
    "lowest_influence_layers",
    "cubic_sparsity",
    "gradient_importance",
    "magnitude_importance",
    "masks_for_sparsity",
    "prunable_linears",
    "prune_and_recover",
    "prune_attention_heads",
    "prune_ffn_neurons",
    "remove_layers",
    "sparsity_report",
    "structure",
    "structured_prune",
    "structured_targets",
]
