"""``RunContext``: what every stage of a run shares (the parsed config, the task object and its data, the
outputs of earlier stages, the process group), and ``train_figures``, what a training stage records."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..distillation import DistillationConfig
from ..training_args import stage_args
from .settings import PipelineConfig, Stage
from .spec import ModelOutput, TeacherOutput
from .tasks import TaskData, TaskKind

TEACHER_CACHE = "teacher_cache"  # a folder: one logit file per teacher, data and setting


@dataclass
class RunContext:
    """What every stage shares: the config, the task and its data, and the outputs of earlier stages."""

    config: PipelineConfig
    task: TaskKind
    data: TaskData
    out: Path
    outputs: dict = field(default_factory=dict)  # stage name -> typed output, in run order
    records: dict = field(default_factory=dict)  # stage name -> record (fingerprint, figures)
    artifacts: dict = field(default_factory=dict)  # report name -> Artifact: the models the stages made so far
    callbacks: list = field(default_factory=list)  # extra TrainerCallbacks for the training stages
    group: object = None  # accelerate's PartialState of this launch (None: one process)

    @property
    def tokenizer(self):
        return self.data.tokenizer

    def output(self, kind: type):
        """The latest output of type ``kind`` (None when no earlier stage produced one)."""
        return next((o for o in reversed(self.outputs.values()) if isinstance(o, kind)), None)

    @property
    def teacher_dir(self) -> Path | None:
        """The fine-tuned teacher's folder (None: model_name_or_path as given)."""
        out = self.output(TeacherOutput)
        return out and out.folder

    @property
    def latest(self) -> ModelOutput | None:
        """The last PyTorch model a stage trained (what prune and quantize take)."""
        return self.output(ModelOutput)

    def teacher(self):
        """The teacher model, freshly loaded (a stage may change or move the model it gets)."""
        return self.task.load(str(self.teacher_dir or self.config.pipeline.model_name_or_path), self.data)

    def load_model(self, folder):
        """A model an earlier stage saved (a student, a pruned model, a search candidate), freshly loaded."""
        return self.task.load(str(folder), self.data)

    def teacher_folder(self, folder: Path) -> Path:
        """The teacher's saved folder; the model as given (no finetune stage) is saved in ``folder`` first, so
        that the quantizers and the measurements read a plain folder."""
        if self.teacher_dir is not None:
            return self.teacher_dir
        self.teacher().save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        return folder

    def distill_args(self, stage: Stage, folder: Path, **changes) -> DistillationConfig:
        args = stage.get(DistillationConfig)
        # the user's teacher_cache_path is honoured; else one file per teacher in <output_dir>/teacher_cache/
        cache = args.teacher_cache_path or str(self.out / TEACHER_CACHE) + os.sep
        return stage_args(args, cls=DistillationConfig, output_dir=folder, teacher_cache_path=cache,
                          **self.task.distillation_overrides(), **changes)  # fmt: skip


def train_figures(trainer) -> dict:
    """What a training stage's record keeps of its Trainer run."""
    history = [h for h in trainer.state.log_history if "train_runtime" in h]
    final = history[-1] if history else {}
    return {
        "global_step": trainer.state.global_step,
        "train_runtime_s": final.get("train_runtime"),
        "train_samples_per_second": final.get("train_samples_per_second"),
        "train_loss": final.get("train_loss"),
    }


def check_distillation(config: PipelineConfig, stage: Stage) -> None:
    """A training stage's ``validate``: the task refuses distillation settings its outputs can't take."""
    config.task.check_distillation(stage.name, stage.get(DistillationConfig))
