"""What every stage module shares: the ``StageSpec`` it registers, the ``RunContext`` it runs in, and the typed
outputs stages hand to later ones.

A stage's output is rebuilt from its record (``stage.json``: figures and artifact) by ``StageSpec.output``,
whether the stage ran now or was skipped as unchanged, so a later stage sees the same thing either way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ...distillation import DistillationConfig
from ...errors import HfCompressError
from ...modeling import load_causal_lm, load_classifier
from ...training_args import stage_args

TEACHER_CACHE = "teacher_cache"  # a folder: one logit file per teacher, data and setting


# -- typed outputs ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TeacherOutput:
    """A fine-tuned teacher (the finetune stage)."""

    folder: Path


@dataclass(frozen=True)
class SearchOutput:
    """The search's chosen candidate (its cut before any training, in ``folder``) and the candidate table."""

    chosen: str
    folder: Path
    teacher_layers: list[int]
    candidates: list[dict]


@dataclass(frozen=True)
class ModelOutput:
    """A PyTorch model a stage trained: what prune and quantize take next, and a row of the report."""

    folder: Path
    label: str  # its name in the report ("student", "pruned")
    teacher_layers: Optional[list[int]] = None  # the teacher layer each of its layers came from


@dataclass(frozen=True)
class QuantizedOutput:
    """Quantized artifacts (method -> folder) of the model called ``base`` in the report."""

    base: str
    artifacts: dict[str, Path]


@dataclass(frozen=True)
class ReportOutput:
    """The evaluate stage's report (``report.json``) with the chosen variant."""

    report: dict


@dataclass(frozen=True)
class ShareOutput:
    shared: Optional[dict]


# -- a stage's declaration -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StageSpec:
    """Everything the pipeline knows about one stage. Registered in ``stages/__init__.py``, in run order."""

    name: str
    configs: tuple[type, ...]  # the dataclasses its YAML mapping is parsed into (strictly)
    run: Callable  # (ctx, stage, folder) -> (figures for its record, artifact folder or None)
    output: Callable[[dict], object]  # its record -> its typed output (for this run's stages and skipped ones)
    training: bool = False  # trains with a Trainer: checkpoints under <stage>/checkpoints, every process trains
    requires: dict[str, str] = field(default_factory=dict)  # other stage -> why it must be listed too
    validate: Optional[Callable] = None  # (config, stage) -> None; raises on a config it can't run (parse time)
    preflight: Optional[Callable] = None  # (config, stage) -> None; checks the machine (backends, Hub login)
    artifacts: Optional[Callable] = None  # output -> {report name: (folder, kind)}: the models it adds


# -- the context every stage runs in ---------------------------------------------------------------------------
@dataclass
class RunContext:
    """What every stage shares: the data, the tokenizer, the metrics, and the outputs of earlier stages."""

    config: object  # PipelineConfig
    out: Path
    raw: object
    labels: list[str]
    tokenizer: object
    data: object  # tokenized splits
    metrics: object
    texts: list[str]  # latency inputs (validation texts)
    outputs: dict = field(default_factory=dict)  # stage name -> typed output, in run order
    records: dict = field(default_factory=dict)  # stage name -> record (fingerprint, figures)
    callbacks: list = field(default_factory=list)  # extra TrainerCallbacks for the training stages
    group: object = None  # accelerate's PartialState of this launch (None: one process)
    lm: Optional[dict] = None  # causal_lm: ``lm.prepare_lm``'s data (format, token rows, texts)

    @property
    def task(self) -> str:
        return self.config.pipeline.task_type

    @property
    def is_lm(self) -> bool:
        return self.lm is not None

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
        if self.is_lm:
            return load_causal_lm(str(self.teacher_dir or self.config.pipeline.model_name_or_path))
        model, head_ready = load_classifier(
            str(self.teacher_dir or self.config.pipeline.model_name_or_path), self.labels, self.task
        )
        if not head_ready:
            raise HfCompressError(
                f"{self.config.pipeline.model_name_or_path} has no head for these labels: add a 'finetune' stage "
                "before the others"
            )
        return model

    def load_model(self, folder):
        """A model an earlier stage saved (a student, a pruned model, a search candidate), freshly loaded."""
        if self.is_lm:
            return load_causal_lm(str(folder))
        return load_classifier(str(folder), self.labels, self.task)[0]

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


def on_main(group, work, *args):
    """``work(*args)`` on the main process only, its result given to every process; the others wait. A failure
    there is raised on every process (the others would otherwise wait forever). ``group`` None: one process."""
    result, error = None, None
    if group is None or group.is_main_process:
        try:
            result = work(*args)
        except BaseException as e:  # noqa: BLE001 - raised below, after the others heard of it
            error = e
    if group is not None and group.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        message = [f"{type(error).__name__}: {error}" if error else None, None if error else result]
        broadcast_object_list(message, from_process=0)
        if message[0] and error is None:
            raise HfCompressError(f"the main process failed: {message[0]}")
        result = message[1]
    if error is not None:
        raise error
    return result


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


def refuse_soft_targets_for_multi_label(config, stage) -> None:
    """Soft-target KD is a softmax over classes; multi-label outputs need the MSE or hidden-state terms."""
    if config.pipeline.task_type == "multi_label_classification" and stage.get(DistillationConfig).alpha > 0:
        raise HfCompressError(
            f"stage {stage.name!r}: soft-target KD (alpha > 0) is a softmax over classes, which doesn't fit "
            "multi-label outputs; set alpha: 0 and logits_mse_weight > 0 (or hidden-state terms)"
        )
