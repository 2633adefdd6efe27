"""``TaskKind``: everything the pipeline does differently for one kind of task, in one object. Stages, the
search algorithm and the report ask the run's task object; none of them reads ``task_type``.

A task knows its data (``prepare``), its metrics and their direction, how to load a model, what the quantizers
calibrate on, how the search times and scores a candidate, how the evaluate stage measures the run's artifacts,
the report's columns and the model card's task. A new kind of task is one subclass and one line in
``tasks/__init__.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ...errors import HfCompressError


@dataclass
class TaskData:
    """A task's data, loaded and tokenized before any work. ``raw``: the splits as loaded; ``splits``: what the
    Trainers take (tokenized splits; a causal LM's token rows); ``texts``: latency inputs (classifiers) or the
    texts perplexity is measured on (causal LM: validation, test, ood); ``fmt``: a causal LM's data format."""

    raw: Any
    tokenizer: Any
    splits: Any
    labels: list[str] = field(default_factory=list)
    metrics: Any = None  # compute_metrics for the Trainers (None: the causal LM's loss is its metric)
    texts: Any = None
    fmt: Optional[str] = None


@dataclass
class Measurement:
    """The evaluate stage's rows (the teacher first) and what the task adds to the report: the column the rule
    minimises for the latency objective (with its words), the markdown columns and extra report fields."""

    rows: list[dict]
    cost: tuple[str, str]
    columns: list[tuple[str, str]]
    report: dict = field(default_factory=dict)
    largest_batch: Optional[int] = None  # classifiers: the largest latency batch size (the plots' latency axis)


class TaskKind:
    """The base of every task kind; subclasses set the attributes and implement the methods that raise here."""

    name: str = ""  # the task_type it answers to
    default_metric: str = "accuracy"
    lower_is_better_metrics: tuple[str, ...] = ()
    card_task: dict = {}  # the model card's task_name / task_type (empty: the card's default)
    teacher_words: str = "fine-tuned on"  # "<teacher> (fine-tuned on <dataset>)" in the model card

    # -- config --------------------------------------------------------------------------------------------
    @property
    def data_arguments(self) -> type:
        """The dataclass the pipeline's ``data:`` block is parsed into."""
        raise NotImplementedError

    def metric_names(self, data_args) -> list[str]:
        """The validation metrics ``selection_metric`` may name."""
        raise NotImplementedError

    def metric_hint(self) -> str:
        """What else the user can do when ``selection_metric`` is not among ``metric_names``."""
        return ""

    def lower_is_better(self, metric: str) -> bool:
        return metric in self.lower_is_better_metrics

    def check_config(self, config) -> None:
        """Refuse, at parse time, what this task can't do with the parsed pipeline config."""
        allowed = self.metric_names(config.data)
        if config.pipeline.selection_metric not in allowed:
            raise HfCompressError(
                f"selection_metric {config.pipeline.selection_metric!r} is not among the metrics the {self.name} "
                f"task reports ({', '.join(allowed)}); set selection_metric to one of them{self.metric_hint()}"
            )

    def check_distillation(self, stage_name: str, args) -> None:
        """Refuse distillation settings that don't fit this task's outputs (parse time)."""

    def check_quantize_methods(self, methods: list[str]) -> None:
        """Refuse quantization methods this task's models can't take (parse time)."""
        raise NotImplementedError

    # -- data and models -----------------------------------------------------------------------------------
    def prepare(self, config) -> TaskData:
        """Load and tokenize the data, with every check that can fail on bad input."""
        raise NotImplementedError

    def check_base_model(self, name: str, data: TaskData) -> None:
        """The model as given is the teacher (no stage makes one): refuse it when it can't be."""

    def load(self, folder: str, data: TaskData, for_training: bool = False):
        """A model of this task from a folder, Hub id or asset (``for_training``: a fresh head may be added)."""
        raise NotImplementedError

    def load_quantized_base(self, name: str, data: TaskData):
        """QLoRA's frozen 4-bit base."""
        from ...finetuning import load_qlora_base

        return load_qlora_base(name, data.labels, self.name)

    def distillation_overrides(self) -> dict:
        """DistillationConfig fields this task must change."""
        return {}

    def calibration(self, data: TaskData, data_args) -> tuple[Any, int]:
        """(rows, max length) the quantizers calibrate on."""
        raise NotImplementedError

    # -- the search ----------------------------------------------------------------------------------------
    search_metric: Optional[str] = None  # the proxy's metric when it is the task's own (None: selection_metric)

    def speed_text(self, budget) -> str:
        """What a latency and a speed-up of ``budget`` measure, in words."""
        return f"at batch {budget.budget_batch_size}"

    def timed_batch_size(self, budget) -> int:
        """The batch size a candidate's latency is timed at."""
        return budget.budget_batch_size

    def candidate_latency(self, models: dict, data: TaskData, data_args, config) -> tuple[dict, dict]:
        """(name -> latency in ms, name -> spread over the rounds or {}) with the models taking turns."""
        raise NotImplementedError

    def proxy_predictions(self, model, data: TaskData):
        """What the search scores a briefly trained candidate from, on validation."""
        raise NotImplementedError

    def proxy_metrics(self, data: TaskData):
        """predictions -> metrics of ``proxy_predictions`` (what the paired bootstrap resamples)."""
        raise NotImplementedError

    def check_evaluation(self, config, data: TaskData, data_args) -> None:
        """Refuse evaluate settings this task and data can't run (before any work)."""

    # -- the report ----------------------------------------------------------------------------------------
    def measure(self, ctx, artifacts: dict, config, folder: Path, search) -> Measurement:
        """Every artifact (name -> ``Artifact``; the teacher first) measured side by side for the report."""
        raise NotImplementedError

    def budget_figures(self, row: dict, budget) -> dict:
        """The latency and speed-up of a report row that the search's budget speaks of."""
        batch = budget.budget_batch_size
        return {"latency_ms": row[f"latency_ms_b{batch}"], "speedup": row[f"speedup_b{batch}"]}

    def plots(self, measured: Measurement, out: Path, metric: str, search) -> list[str]:
        """The trade-off plots of the report (PNG paths)."""
        raise NotImplementedError

    def examples_text(self, report: dict) -> str:
        """What the report's figures were measured on, in words."""
        return f"{report['test_examples']} test examples"

    def report_sections(self, report: dict) -> list[str]:
        """Extra markdown lines of the report."""
        return []
