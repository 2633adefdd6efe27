"""``finetune``: fine-tune model_name_or_path on the task (full, frozen layers, LoRA/QLoRA); the result is the
teacher of every later stage. A causal LM is adapted (or instruction-tuned, on chat data) with the LM loss on
the training rows. An interrupted run resumes from its last checkpoint. Its settings are ``FinetuneConfig`` and
``TrainingArguments`` fields."""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import TrainingArguments, set_seed

from ...finetuning import FinetuneConfig, check_early_stopping, finetune, save_finetuned
from ...training_args import stage_args
from ..context import RunContext, train_figures
from ..records import last_checkpoint
from ..settings import Stage
from ..spec import StageSpec, TeacherOutput

logger = logging.getLogger(__name__)


def cpu_group() -> dict:
    """Several CPU processes train as one gloo group only when TrainingArguments ask for the CPU (as
    DistillationConfig does by itself)."""
    from ...distillation.config import multi_process_without_accelerator

    return {"use_cpu": True} if multi_process_without_accelerator() else {}


def run(ctx: RunContext, stage: Stage, folder: Path):
    config, args = stage.get(FinetuneConfig), stage.get(TrainingArguments)
    check_early_stopping(config, args)
    name = ctx.config.pipeline.model_name_or_path
    set_seed(args.seed)
    if config.qlora:
        model = ctx.task.load_quantized_base(name, ctx.data)
    else:
        model = ctx.task.load(name, ctx.data, for_training=True)
    checkpoints = folder / "checkpoints"
    resume = last_checkpoint(checkpoints)
    if resume:
        logger.info("Resuming the finetune stage from %s", resume)
    trainer = finetune(model, ctx.tokenizer, ctx.data.splits["train"], ctx.data.splits["validation"],
                       stage_args(args, output_dir=checkpoints, **cpu_group()), config, ctx.data.metrics,
                       ctx.callbacks, task_type=ctx.task.name, resume_from_checkpoint=resume)  # fmt: skip

    def full_precision_base():  # QLoRA's adapter is merged onto this
        return ctx.task.load(name, ctx.data, for_training=True)

    saved = save_finetuned(trainer, ctx.tokenizer, config, folder, full_precision_base)
    return {"resumed_from": resume, **train_figures(trainer)}, str(saved)


SPEC = StageSpec(
    name="finetune",
    configs=(FinetuneConfig, TrainingArguments),
    run=run,
    output=lambda record: TeacherOutput(Path(record["artifact"])),
    training=True,
    provides_teacher=True,
)
