"""``PruningConfig`` (unstructured, for ``PruningCallback``) and ``StructuredPruningConfig`` (heads, FFN
neurons, layers, for ``structured_prune``): what is pruned, by which criterion, on which schedule."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from ..errors import HfCompressError, check_choice

METHODS = ("magnitude", "gradient", "movement")
IMPORTANCE = ("gradient", "magnitude", "activation")
LAYER_SELECTIONS = ("block_influence", "spread")
SCOPES = ("layer", "global")


@dataclass
class PruningConfig:
    """Unstructured pruning settings; steps are optimizer steps (``state.global_step``)."""

    method: str = field(
        default="magnitude",
        metadata={
            "help": "'magnitude': |w|; 'gradient': |w * dL/dw| accumulated over the steps between updates; "
            "'movement': -w * dL/dw accumulated over all steps (Sanh et al. 2020: keep weights moving away "
            "from zero)."
        },
    )
    target_sparsity: float = field(
        default=0.5, metadata={"help": "Final fraction of pruned weights, in [0, 1)."}
    )
    initial_sparsity: float = field(
        default=0.0, metadata={"help": "Sparsity at start_step, in [0, target_sparsity]."}
    )
    start_step: int = field(default=0, metadata={"help": "First pruning step; >= 0 (>= 1 for 'gradient')."})
    end_step: int = field(
        default=0, metadata={"help": "Step at which target_sparsity is reached; start_step = one-shot."}
    )
    frequency: int = field(
        default=100, metadata={"help": "Steps between mask updates of the cubic schedule; >= 1."}
    )
    scope: str = field(
        default="layer", metadata={"help": "'layer': same sparsity per tensor; 'global': one threshold."}
    )
    target_modules: Optional[str] = field(
        default=None,
        metadata={
            "help": "Regex on module names selecting the nn.Linear layers to prune. None: every Linear inside the "
            "transformer layers (never embeddings or the task head)."
        },
    )

    def __post_init__(self):
        check_choice("pruning method", self.method, METHODS)
        check_choice("pruning scope", self.scope, SCOPES)
        if not 0.0 <= self.target_sparsity < 1.0:
            raise HfCompressError(f"target_sparsity must be in [0, 1), got {self.target_sparsity}")
        if not 0.0 <= self.initial_sparsity <= self.target_sparsity:
            raise HfCompressError(
                f"initial_sparsity must be in [0, target_sparsity={self.target_sparsity}], got {self.initial_sparsity}"
            )
        if self.start_step < 0:
            raise HfCompressError(f"start_step must be >= 0, got {self.start_step}")
        if self.end_step < self.start_step:
            raise HfCompressError(f"end_step ({self.end_step}) precedes start_step ({self.start_step})")
        if self.frequency < 1:
            raise HfCompressError(f"frequency must be >= 1, got {self.frequency}")
        if self.method in ("gradient", "movement") and self.start_step < 1:
            raise HfCompressError(
                f"{self.method} pruning needs gradients from at least one step: set start_step >= 1"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class StructuredPruningConfig:
    """Structured pruning: remove whole attention heads, FFN neurons and layers, and shrink the matrices.

    Removals are uniform across layers (every layer keeps the same number of heads and neurons), because
    configs hold one ``num_attention_heads``/``intermediate_size`` for all layers. With
    ``num_iterations > 1`` the targets are reached in equal steps (prune, recover, prune again).
    """

    prune_heads_fraction: float = field(
        default=0.0,
        metadata={
            "help": "Fraction of attention heads removed from every layer, in [0, 1) (Llama-style models with "
            "grouped KV heads: fraction of KV groups)."
        },
    )
    prune_ffn_fraction: float = field(
        default=0.0,
        metadata={"help": "Fraction of FFN (intermediate) neurons removed from every layer, in [0, 1)."},
    )
    prune_hidden_fraction: float = field(
        default=0.0,
        metadata={
            "help": "Fraction of hidden (embedding) channels removed across the whole model, in [0, 1); "
            "Llama-style decoders only (Minitron's embedding-channel pruning, scored by activation)."
        },
    )
    prune_layers: int = field(
        default=0,
        metadata={"help": "Number of whole transformer layers removed (lowest block influence first); >= 0."},
    )
    importance: str = field(
        default="gradient",
        metadata={
            "help": "Head/neuron ranking: 'gradient' (|sum w * dL/dw| over a head's or neuron's output weights: "
            "Michel et al. 2019 head importance, first-order Taylor for neurons), 'magnitude' (weight norms) or "
            "'activation' (mean squared activations on calibration text, Minitron; no gradients)."
        },
    )
    num_iterations: int = field(
        default=1, metadata={"help": "Reach the targets in this many prune-then-recover steps; >= 1."}
    )
    calibration_batches: int = field(
        default=16, metadata={"help": "Training batches used to score heads, neurons and layers; >= 1."}
    )
    layer_selection: str = field(
        default="block_influence",
        metadata={
            "help": "Which layers prune_layers removes: 'block_influence' (the layers that change their input "
            "least) or 'spread' (keep layers spread evenly, DistilBERT's rule: 6 -> 3 keeps 0, 2, 4)."
        },
    )

    def __post_init__(self):
        for name in ("prune_heads_fraction", "prune_ffn_fraction", "prune_hidden_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise HfCompressError(f"{name} must be in [0, 1), got {value}")
        if self.prune_layers < 0:
            raise HfCompressError(f"prune_layers must be >= 0, got {self.prune_layers}")
        check_choice("importance", self.importance, IMPORTANCE)
        if self.num_iterations < 1:
            raise HfCompressError(f"num_iterations must be >= 1, got {self.num_iterations}")
        check_choice("layer_selection", self.layer_selection, LAYER_SELECTIONS)
        if self.calibration_batches < 1:
            raise HfCompressError(f"calibration_batches must be >= 1, got {self.calibration_batches}")

    @property
    def removes_anything(self) -> bool:
        """True when some heads, neurons, hidden channels or layers are to be removed."""
        return bool(
            self.prune_heads_fraction
            or self.prune_ffn_fraction
            or self.prune_hidden_fraction
            or self.prune_layers
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
