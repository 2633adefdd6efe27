"""What the pipeline knows of a stage (``StageSpec``) and the typed outputs stages hand to later ones. Imports
nothing else in ``hfcompress.pipeline``: tasks, the search algorithm and the report read these types without
knowing any stage.

A stage's output is rebuilt from its record (``stage.json``: config, figures and artifact) by
``StageSpec.output``, whether the stage ran now or was skipped as unchanged, so a later stage sees the same
thing either way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..hub.card import RELATIONS

CARD_KINDS = tuple(RELATIONS)  # the model card's kinds (finetuned, distilled, pruned, quantized, onnx, adapter)


# -- typed outputs ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Artifact:
    """A model the run made, as a row of the report: its folder, the stage label of its row (``teacher``,
    ``candidate``, ``student``, ``pruned``, ``quantized``) and the kind of model card it ships with."""

    folder: str
    stage: str
    card_kind: str

    def __post_init__(self):
        if self.card_kind not in CARD_KINDS:
            raise ValueError(f"card_kind must be one of {', '.join(CARD_KINDS)}, got {self.card_kind!r}")


@dataclass(frozen=True)
class TeacherOutput:
    """A fine-tuned teacher (the finetune stage)."""

    folder: Path


@dataclass(frozen=True)
class Budget:
    """The search's budget, re-checked by the report on the shipped variant. ``speed``: what a causal LM's
    latency measures ('generate' or 'prompt'); classifiers are timed at ``budget_batch_size``."""

    max_latency_ms: Optional[float] = None
    min_speedup: Optional[float] = None
    max_size_mb: Optional[float] = None
    max_parameters: Optional[int] = None
    budget_batch_size: int = 32
    speed: str = "generate"

    @classmethod
    def of(cls, config) -> Budget:
        """The budget fields of a ``SearchConfig`` (or of its record, a dict)."""
        get = config.get if isinstance(config, dict) else lambda name, default=None: getattr(config, name, default)
        return cls(**{f: get(f, default) for f, default in (
            ("max_latency_ms", None), ("min_speedup", None), ("max_size_mb", None), ("max_parameters", None),
            ("budget_batch_size", 32), ("speed", "generate"))})  # fmt: skip

    def failures(self, figures: dict) -> list[str]:
        """What ``figures`` (latency_ms, speedup, size_mb, parameters) break of the budget, in words."""
        failed = []
        if self.max_latency_ms is not None and figures["latency_ms"] > self.max_latency_ms:
            failed.append(f"latency {figures['latency_ms']:.1f} ms > {self.max_latency_ms} ms")
        if self.min_speedup is not None and figures["speedup"] < self.min_speedup:
            failed.append(f"speed-up {figures['speedup']:.2f}x < {self.min_speedup}x")
        if self.max_size_mb is not None and figures["size_mb"] > self.max_size_mb:
            failed.append(f"size on disk {figures['size_mb']:.1f} MB > {self.max_size_mb} MB")
        if self.max_parameters is not None and (figures["parameters"] or 0) > self.max_parameters:
            failed.append(f"parameters {figures['parameters']:,} > {self.max_parameters:,}")
        return failed

    def text(self, where: str) -> str:
        """The budget in words; ``where``: what its latency measures (the task's ``speed_text``)."""
        parts = []
        if self.max_latency_ms is not None:
            parts.append(f"latency <= {self.max_latency_ms} ms {where}")
        if self.min_speedup is not None:
            parts.append(f"speed-up >= {self.min_speedup}x {where}")
        if self.max_size_mb is not None:
            parts.append(f"fp32 weights <= {self.max_size_mb} MB")
        if self.max_parameters is not None:
            parts.append(f"parameters <= {self.max_parameters:,}")
        return " and ".join(parts) or "no budget"


@dataclass(frozen=True)
class SearchOutput:
    """The search's chosen candidate (its cut before any training, in ``folder``), the candidate table and the
    budget it searched under."""

    chosen: str
    folder: Path
    teacher_layers: list[int]
    candidates: list[dict]
    budget: Budget = field(default_factory=Budget)


@dataclass(frozen=True)
class ModelOutput:
    """A PyTorch model a stage trained: what prune and quantize take next, and a row of the report."""

    folder: Path
    label: str  # its name in the report ("student", "pruned")
    teacher_layers: Optional[list[int]] = None  # the teacher layer each of its layers came from


@dataclass(frozen=True)
class QuantizedOutput:
    """Quantized artifacts: the model's name in the report ("student", "teacher") -> method -> folder."""

    artifacts: dict[str, dict[str, Path]]


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
    """Everything the pipeline knows about one stage, declared in its module (``stages/<name>.py``) and listed
    in ``registry.py``, in run order."""

    name: str
    configs: tuple[type, ...]  # the dataclasses its YAML mapping is parsed into (strictly)
    run: Callable  # (ctx, stage, folder) -> (figures for its record, artifact folder or None)
    output: Callable[[dict], object]  # its record -> its typed output (for this run's stages and skipped ones)
    training: bool = False  # trains with a Trainer: checkpoints under <stage>/checkpoints, every process trains
    always: bool = False  # every run has it: added with its defaults where the YAML doesn't list it
    provides_teacher: bool = False  # its output is the teacher of the later stages (else the model as given)
    requires: dict[str, str] = field(default_factory=dict)  # other stage -> why it must be listed too
    validate: Optional[Callable] = None  # (config, stage) -> None; raises on a config it can't run (parse time)
    preflight: Optional[Callable] = None  # (config, stage) -> None; checks the machine (backends, Hub login)
    check_data: Optional[Callable] = None  # (ctx, stage) -> None; checks that need the loaded data, before any work
    artifacts: Optional[Callable] = None  # output -> {report name: Artifact}: the models it adds to the report
