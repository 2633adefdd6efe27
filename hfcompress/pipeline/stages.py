"""One function per stage. Each takes the run's shared ``RunContext``, its ``Stage`` (parsed configs) and its
folder, does its work with library calls only, and returns (figures for its record, artifact folder or None).
The stage order, skipping and records are ``run.py``'s business.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainingArguments, set_seed

from ..distillation import DistillationConfig, DistillationTrainer, create_student_from_teacher
from ..distillation.trainer import kept_layer_maps
from ..errors import HfCompressError
from ..finetune import FinetuneConfig, check_early_stopping, finetune, save_finetuned
from ..modeling import load_classifier, select_layers
from ..pruning import (
    PruningConfig,
    StructuredPruningConfig,
    calibration_batches,
    prune_and_recover,
    structure,
)
from ..quantization import QuantizationConfig, quantize
from ..quantization.backends import require_backend
from ..quantization.config import QuantizationOptions
from ..training_args import stage_args
from .config import PruneStageArguments, QuantizeStageArguments, SearchConfig
from .records import config_values, last_checkpoint

logger = logging.getLogger(__name__)
TEACHER_CACHE = "teacher_cache"  # a folder: one logit file per teacher, data and setting


@dataclass
class RunContext:
    """What every stage shares: the data, the tokenizer, the metrics, and the models the run made so far."""

    config: object  # PipelineConfig
    out: Path
    raw: object
    labels: list[str]
    tokenizer: object
    data: object  # tokenized splits
    metrics: object
    texts: list[str]  # latency inputs (validation texts)
    teacher_dir: Path | None = None  # the fine-tuned teacher's folder (None: model_name_or_path as given)
    latest: Path | None = None  # the last PyTorch model a stage made (what prune and quantize take)
    latest_layers: list[int] | None = None  # the teacher layer each of its layers came from
    records: dict = field(default_factory=dict)  # stage name -> record (this run's or a skipped one's)
    # extra TrainerCallbacks for the finetune and distill stages
    callbacks: list = field(default_factory=list)

    @property
    def task(self) -> str:
        return self.config.pipeline.task_type

    def teacher(self):
        """The teacher model, freshly loaded (a stage may change or move the model it gets)."""
        model, head_ready = load_classifier(
            str(self.teacher_dir or self.config.pipeline.model_name_or_path), self.labels, self.task
        )
        if not head_ready:
            raise HfCompressError(
                f"{self.config.pipeline.model_name_or_path} has no head for these labels: add a 'finetune' stage "
                "before the others"
            )
        return model

    def teacher_folder(self, folder: Path) -> Path:
        """The teacher's saved folder; the model as given (no finetune stage) is saved in ``folder`` first, so
        that the quantizers and the measurements read a plain folder."""
        if self.teacher_dir is not None:
            return self.teacher_dir
        self.teacher().save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        return folder

    def distill_args(self, stage, folder: Path, **changes) -> DistillationConfig:
        args = stage.get(DistillationConfig)
        extra = {"cache_teacher_logits": False} if self.task == "token_classification" else {}
        # the user's teacher_cache_path is honoured; else one file per teacher in <output_dir>/teacher_cache/
        cache = args.teacher_cache_path or str(self.out / TEACHER_CACHE) + os.sep
        return stage_args(args, cls=DistillationConfig, output_dir=folder, teacher_cache_path=cache, **extra,
                          **changes)  # fmt: skip


def run_finetune(ctx: RunContext, stage, folder: Path):
    """Fine-tune model_name_or_path on the task (resuming from the last checkpoint of an interrupted run)."""
    config, args = stage.get(FinetuneConfig), stage.get(TrainingArguments)
    check_early_stopping(config, args)
    name = ctx.config.pipeline.model_name_or_path
    set_seed(args.seed)
    if config.qlora:
        from ..finetune import load_qlora_base

        model = load_qlora_base(name, ctx.labels, ctx.task)
    else:
        model, _ = load_classifier(name, ctx.labels, ctx.task, dataset=ctx.raw)
    checkpoints = folder / "checkpoints"
    resume = last_checkpoint(checkpoints)
    if resume:
        logger.info("Resuming the finetune stage from %s", resume)
    trainer = finetune(model, ctx.tokenizer, ctx.data["train"], ctx.data["validation"],
                       stage_args(args, output_dir=checkpoints), config, ctx.metrics, ctx.callbacks,
                       task_type=ctx.task, resume_from_checkpoint=resume)  # fmt: skip
    saved = save_finetuned(
        trainer, ctx.tokenizer, config, folder, lambda: load_classifier(name, ctx.labels, ctx.task)[0]
    )
    figures = {"resumed_from": resume, **_train_figures(trainer)}
    return figures, str(saved)


def run_search(ctx: RunContext, stage, folder: Path):
    """Cut candidates, measure, drop those over budget, train the rest briefly; save the chosen cut."""
    from .search import check_grid, search_student

    config = stage.get(SearchConfig)
    teacher = ctx.teacher()
    check_grid(teacher, config)
    set_seed(ctx.config.pipeline.seed)
    calibration = calibration_batches(ctx.data["train"], ctx.tokenizer,
                                      stage.get(DistillationConfig).per_device_train_batch_size,
                                      config.calibration_batches, ctx.config.pipeline.seed)  # fmt: skip
    result = search_student(teacher, config, ctx.distill_args(stage, folder), ctx.data, ctx.tokenizer, ctx.metrics,
                            ctx.texts, ctx.config.data.max_seq_length, folder, calibration,
                            ctx.config.pipeline.selection_metric)  # fmt: skip
    chosen = result.pop("chosen_model")
    chosen.save_pretrained(folder / "chosen")
    ctx.tokenizer.save_pretrained(folder / "chosen")
    return result, str(folder / "chosen")


def run_distill(ctx: RunContext, stage, folder: Path):
    """Distil the teacher into the search's chosen student, or into the layers student_layers names."""
    from .config import DistillStageArguments

    teacher = ctx.teacher()
    search = ctx.records.get("search")
    set_seed(ctx.config.pipeline.seed)
    if search is not None:
        student, _ = load_classifier(search["artifact"], ctx.labels, ctx.task)
        kept = search["figures"]["teacher_layers"]
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
        train_dataset=ctx.data["train"],
        eval_dataset=ctx.data["validation"],
        processing_class=ctx.tokenizer,
        compute_metrics=ctx.metrics,
        callbacks=list(ctx.callbacks),
    )
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(str(folder / "model"))
    figures = {"resumed_from": resume, "teacher_layers": kept, "structure": structure(student),
               **_train_figures(trainer)}  # fmt: skip
    return figures, str(folder / "model")


def run_prune(ctx: RunContext, stage, folder: Path):
    """Prune the last model (the student, or the teacher when nothing was distilled), recovering by
    distillation from the teacher. An interrupted prune stage starts again from its beginning."""
    kind = stage.get(PruneStageArguments).pruning
    config = stage.get(StructuredPruningConfig) if kind == "structured" else stage.get(PruningConfig)
    shutil.rmtree(folder / "recovery", ignore_errors=True)
    teacher = ctx.teacher()
    model, _ = (
        load_classifier(str(ctx.latest), ctx.labels, ctx.task)
        if ctx.latest
        else (copy.deepcopy(teacher), None)
    )
    set_seed(ctx.config.pipeline.seed)
    args = ctx.distill_args(stage, folder / "recovery")
    model, trainer, details = prune_and_recover(model, teacher, config, args, ctx.data, ctx.tokenizer, ctx.metrics,
                                                folder / "recovery", teacher_layers=ctx.latest_layers)  # fmt: skip
    trainer.save_model(str(folder / "model"))
    figures = {
        "pruning": kind,
        "details": details,
        "teacher_layers": details.get("teacher_layers", ctx.latest_layers),
    }
    return figures, str(folder / "model")


def run_quantize(ctx: RunContext, stage, folder: Path):
    """Quantize the last PyTorch model with each method; each artifact in <folder>/<method>."""
    methods = stage.get(QuantizeStageArguments).method_list
    options = stage.get(QuantizationOptions)
    source = ctx.latest or ctx.teacher_folder(folder / "source")
    artifacts = {}
    for method in methods:
        config = QuantizationConfig(method=method, **options.to_dict())
        artifacts[method] = str(quantize(source, folder / method, config, calibration_dataset=ctx.raw["train"],
                                         max_length=ctx.config.data.max_seq_length, overwrite=True))  # fmt: skip
    return {"source": str(source), "artifacts": artifacts, "settings": options.to_dict()}, None


def check_backends(config) -> None:
    """Before any work: every quantization method's backend is installed."""
    stage = config.stage("quantize")
    if stage is not None:
        for method in stage.get(QuantizeStageArguments).method_list:
            require_backend(method)


def _train_figures(trainer) -> dict:
    history = [h for h in trainer.state.log_history if "train_runtime" in h]
    final = history[-1] if history else {}
    return {
        "global_step": trainer.state.global_step,
        "train_runtime_s": final.get("train_runtime"),
        "train_samples_per_second": final.get("train_samples_per_second"),
        "train_loss": final.get("train_loss"),
    }


def stage_config_record(stage) -> dict:
    """The resolved config of a stage, as JSON-able values (TrainingArguments through ``to_dict``)."""
    return {cls.__name__: config_values(value) for cls, value in stage.configs.items()}
