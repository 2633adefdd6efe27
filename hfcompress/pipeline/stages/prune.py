"""``prune``: prune the last model (the student, or the teacher when nothing was distilled), recovering by
distillation from the teacher. An interrupted prune stage starts again from its beginning: a pruning
iteration's structure depends on the model before it. Its settings are ``PruneStageArguments``, the pruning
config's and ``DistillationConfig`` fields."""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from transformers import set_seed

from ...distillation import DistillationConfig
from ...errors import check_choice
from ...pruning import PruningConfig, StructuredPruningConfig, prune_and_recover
from ..context import RunContext, check_distillation
from ..processes import on_main
from ..settings import Stage
from ..spec import Artifact, ModelOutput, StageSpec


@dataclass
class PruneStageArguments:
    """Which kind of pruning the prune stage runs (its settings are the PruningConfig fields)."""

    pruning: str = field(
        default="structured",
        metadata={"help": "'structured' (StructuredPruningConfig fields) or 'unstructured' (PruningConfig)."},
    )

    def __post_init__(self):
        check_choice("pruning", self.pruning, ("structured", "unstructured"))


def run(ctx: RunContext, stage: Stage, folder: Path):
    kind = stage.get(PruneStageArguments).pruning
    config = stage.get(StructuredPruningConfig) if kind == "structured" else stage.get(PruningConfig)
    on_main(ctx.group, shutil.rmtree, folder / "recovery", True)  # ignore_errors
    teacher = ctx.teacher()
    latest = ctx.latest
    model = ctx.load_model(latest.folder) if latest else copy.deepcopy(teacher)
    layers = latest.teacher_layers if latest else None
    set_seed(ctx.config.pipeline.seed)
    args = ctx.distill_args(stage, folder / "recovery")
    model, trainer, details = prune_and_recover(model, teacher, config, args, ctx.data.splits, ctx.tokenizer,
                                                ctx.data.metrics, folder / "recovery", teacher_layers=layers)  # fmt: skip
    trainer.save_model(str(folder / "model"))
    figures = {"pruning": kind, "details": details, "teacher_layers": details.get("teacher_layers", layers)}
    return figures, str(folder / "model")


def output(record: dict) -> ModelOutput:
    return ModelOutput(Path(record["artifact"]), "pruned", record["figures"].get("teacher_layers"))


SPEC = StageSpec(
    name="prune",
    configs=(PruneStageArguments, StructuredPruningConfig, PruningConfig, DistillationConfig),
    run=run,
    output=output,
    training=True,
    validate=check_distillation,
    artifacts=lambda out: {out.label: Artifact(str(out.folder), out.label, "pruned")},
)
