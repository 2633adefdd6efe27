"""``distill``: distil the teacher into the search's chosen student, or into the layers ``student_layers``
names. An interrupted run resumes from its last checkpoint. Its settings are ``DistillStageArguments`` and
``DistillationConfig`` fields."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from transformers import set_seed

from ...distillation import (
    DistillationConfig,
    DistillationTrainer,
    create_student_from_teacher,
    kept_layer_maps,
)
from ...modeling import select_layers
from ...pruning import structure
from ..context import RunContext, check_distillation, train_figures
from ..records import last_checkpoint
from ..settings import Stage
from ..spec import Artifact, ModelOutput, SearchOutput, StageSpec

logger = logging.getLogger(__name__)


@dataclass
class DistillStageArguments:
    """Which student the distill stage trains when no search stage chose one."""

    student_layers: str = field(
        default="every_other",
        metadata={"help": "Teacher layers the student keeps: 'every_other', a count like '3', or '0,2,4'."},
    )


def run(ctx: RunContext, stage: Stage, folder: Path):
    teacher = ctx.teacher()
    search = ctx.output(SearchOutput)
    set_seed(ctx.config.pipeline.seed)
    if search is not None:
        student = ctx.load_model(search.folder)
        kept = search.teacher_layers
    else:
        kept = select_layers(
            stage.get(DistillStageArguments).student_layers, teacher.config.num_hidden_layers
        )
        student = create_student_from_teacher(teacher, kept)
    checkpoints = folder / "checkpoints"
    args = ctx.distill_args(stage, checkpoints, **kept_layer_maps(stage.get(DistillationConfig), kept))
    resume = last_checkpoint(checkpoints)
    if resume:
        logger.info("Resuming the distill stage from %s", resume)
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=ctx.data.splits["train"],
        eval_dataset=ctx.data.splits["validation"],
        processing_class=ctx.tokenizer,
        compute_metrics=ctx.data.metrics,  # None for a causal LM: its evaluation loss is the LM loss
        callbacks=list(ctx.callbacks),
    )
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(str(folder / "model"))
    figures = {"resumed_from": resume, "teacher_layers": kept, "structure": structure(student),
               **train_figures(trainer)}  # fmt: skip
    return figures, str(folder / "model")


def output(record: dict) -> ModelOutput:
    return ModelOutput(Path(record["artifact"]), "student", record["figures"].get("teacher_layers"))


SPEC = StageSpec(
    name="distill",
    configs=(DistillStageArguments, DistillationConfig),
    run=run,
    output=output,
    training=True,
    validate=check_distillation,
    artifacts=lambda out: {out.label: Artifact(str(out.folder), out.label, "distilled")},
)
