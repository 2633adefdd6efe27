"""``PruningConfig``: what ``PruningCallback`` prunes, by which criterion, on which schedule."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from ..errors import HfCompressError

METHODS = ("magnitude", "gradient")
SCOPES = ("layer", "global")


@dataclass
class PruningConfig:
    """Unstructured pruning settings; steps are optimizer steps (``state.global_step``)."""

    method: str = field(
        default="magnitude",
        metadata={
            "help": "'magnitude': |w|; 'gradient': |w * dL/dw| accumulated over the steps between updates."
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
        if self.method not in METHODS:
            raise HfCompressError(f"pruning method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.scope not in SCOPES:
            raise HfCompressError(f"pruning scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")
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
        if self.method == "gradient" and self.start_step < 1:
            raise HfCompressError(
                "gradient importance needs gradients from at least one step: set start_step >= 1"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
