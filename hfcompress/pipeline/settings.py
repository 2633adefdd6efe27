"""A parsed pipeline run, as typed values: its top-level settings (``PipelineArguments``), each stage with its
configs (``Stage``) and the whole (``PipelineConfig``). Parsing the YAML is ``config.py``'s job; these types
sit apart from it so that the run context and the stages can name them without importing the stage registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..configs import DataArguments, LMDataArguments
from .tasks import TASK_TYPES, TaskKind, task_kind


@dataclass
class PipelineArguments:
    """Top-level settings of a pipeline run."""

    output_dir: str = field(default="outputs/compress", metadata={"help": "Where every stage writes."})
    model_name_or_path: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        metadata={"help": "The model to start from: Hub id, local folder or offline asset."},
    )
    task_type: str = field(
        default="single_label_classification",
        metadata={
            "help": "single_label_classification, multi_label_classification, token_classification or causal_lm "
            "(data: then LMDataArguments fields)."
        },
    )
    seed: int = field(default=42, metadata={"help": "Seed of every stage."})
    selection_metric: Optional[str] = field(
        default=None,
        metadata={
            "help": "The validation metric that chooses the search's student, the shipped variant and the model "
            "card's headline: one the task reports (single-label: a name in data.metrics; multi-label and token "
            "classification: accuracy or f1, higher is better; causal_lm: perplexity or bits_per_byte, lower is "
            "better). None: accuracy, or perplexity for causal_lm."
        },
    )
    overwrite_output: bool = field(
        default=False,
        metadata={"help": "Start over: delete what an earlier run wrote in output_dir (refused otherwise)."},
    )

    def __post_init__(self):
        task = task_kind(self.task_type)  # refuses a task type not in TASK_TYPES
        if self.selection_metric is None:
            self.selection_metric = task.default_metric

    @property
    def task(self) -> TaskKind:
        """The task object of ``task_type``: what the pipeline does differently for it."""
        return task_kind(self.task_type)


@dataclass
class Stage:
    """One parsed stage: its name, the YAML mapping as given (what its fingerprint hashes) and its configs."""

    name: str
    values: dict
    configs: dict  # dataclass type -> instance

    def get(self, cls):
        return self.configs[cls]


@dataclass
class PipelineConfig:
    pipeline: PipelineArguments
    data: DataArguments | LMDataArguments  # the task's data_arguments (LMDataArguments for causal_lm)
    data_values: dict
    training_values: dict
    stages: list[Stage]
    path: str

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    @property
    def task(self) -> TaskKind:
        return self.pipeline.task


__all__ = ["TASK_TYPES", "PipelineArguments", "PipelineConfig", "Stage"]
