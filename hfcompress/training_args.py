"""Training arguments for the sub-stages of a run (teacher fine-tuning, a baseline, one pruning iteration)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from transformers import TrainingArguments


def stage_args(args: TrainingArguments, cls=TrainingArguments, **changes) -> TrainingArguments:
    """Arguments of class ``cls`` (plain ``TrainingArguments`` by default) copying the run's settings (batch
    sizes, seed, precision) with ``changes`` applied."""
    base = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.init}
    base.update({k: str(v) if isinstance(v, Path) else v for k, v in changes.items()})
    return cls(**base)
