"""``evaluate``: every artifact of the run measured side by side (metrics on validation and test, size, memory,
latency; the task object says how), the variant to ship chosen on the validation split by a stated rule
(``report.py``), the search's budget re-checked on it, ``report.json``/``report.md`` and plots. Its settings are
``EvaluateConfig`` fields."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ...configs import parse_int_list
from ...errors import HfCompressError, check_choice
from ...evaluation import write_report
from ..context import RunContext
from ..report import add_kept, budget_check, build_report, choose, render_markdown, warn_budget
from ..settings import Stage
from ..spec import Artifact, ReportOutput, SearchOutput, StageSpec

logger = logging.getLogger(__name__)
OBJECTIVES = ("latency", "size")
GGUF_ENGINES = ("auto", "llama.cpp", "transformers")


@dataclass
class EvaluateConfig:
    """How every artifact is measured, and the rule that chooses the variant to ship (on validation)."""

    latency_batch_sizes: str = field(
        default="1,32", metadata={"help": "Batch sizes of the latency columns (classifiers)."}
    )
    latency_runs: int = field(default=10, metadata={"help": "Timed runs per latency figure; >= 1."})
    latency_rounds: int = field(
        default=3,
        metadata={"help": "Rounds in which the artifacts take turns (order shuffled each round); >= 1."},
    )
    min_kept: float = field(
        default=0.99,
        metadata={
            "help": "Rule: keep variants that keep this fraction of the teacher's validation score: score / "
            "teacher's >= min_kept (higher-is-better metrics), teacher's / score >= min_kept (perplexity: 0.8 "
            "allows 1.25x the teacher's)."
        },
    )
    objective: str = field(
        default="latency",
        metadata={
            "help": "Rule: among those, choose the fastest (classifiers: at the largest batch size; causal LMs: "
            "greedy tokens/s at batch 1) or the smallest on disk."
        },
    )
    tasks: str = field(
        default="",
        metadata={
            "help": "causal_lm: lm-evaluation-harness tasks every PyTorch artifact is scored on, comma-separated: "
            "harness names (hellaswag, arc_easy, ...; they download their data) and/or 'offline' (the project's "
            "own final-word and cloze tasks, built from the test text and the out-of-domain text). Empty: none."
        },
    )
    task_examples: int = field(
        default=200, metadata={"help": "'offline' tasks: examples per task (fewer when the text has fewer)."}
    )
    task_limit: Optional[int] = field(
        default=None, metadata={"help": "Harness tasks by name: score only the first N examples (None: all)."}
    )
    task_batch_size: int = field(default=8, metadata={"help": "Batch size of the harness; >= 1."})
    generate_tokens: int = field(
        default=32, metadata={"help": "causal_lm: tokens generated per greedy speed run (batch 1)."}
    )
    prompt_batch_size: int = field(
        default=8, metadata={"help": "causal_lm: batch of the prompt tokens/s figure (rows of block_size)."}
    )
    gguf_engine: str = field(
        default="auto",
        metadata={
            "help": "causal_lm: where GGUF artifacts are measured over plain text: 'llama.cpp' (llama-perplexity "
            "over chunks of block_size, the teacher's reference over the same chunks; llama-bench tokens/s), "
            "'transformers' (dequantized to fp32, the strided windows of every other row), or 'auto' (llama.cpp "
            "when its tools are installed)."
        },
    )
    memory: bool = field(
        default=True, metadata={"help": "Measure peak memory of a fresh process per artifact."}
    )
    plots: bool = field(
        default=True, metadata={"help": "Write accuracy-vs-latency and -size PNGs (matplotlib)."}
    )

    def __post_init__(self):
        parse_int_list(self.latency_batch_sizes, "latency_batch_sizes")
        for name in ("latency_runs", "latency_rounds", "task_examples", "task_batch_size", "generate_tokens",
                     "prompt_batch_size"):  # fmt: skip
            if getattr(self, name) < 1:
                raise HfCompressError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.min_kept <= 1:
            raise HfCompressError(f"min_kept must be in (0, 1], got {self.min_kept}")
        check_choice("objective", self.objective, OBJECTIVES)
        check_choice("gguf_engine", self.gguf_engine, GGUF_ENGINES)
        if self.task_limit is not None and self.task_limit < 1:
            raise HfCompressError(f"task_limit must be >= 1 or null, got {self.task_limit}")

    @property
    def task_list(self) -> list[str]:
        return [t.strip() for t in self.tasks.split(",") if t.strip()]


def run(ctx: RunContext, stage: Stage, folder: Path):
    config = stage.get(EvaluateConfig)
    search = ctx.output(SearchOutput)
    # the teacher first, then every model the earlier stages declared (their StageSpec.artifacts), in run order
    teacher = Artifact(str(ctx.teacher_folder(folder / "teacher")), "teacher", "finetuned")
    artifacts = {"teacher": teacher, **ctx.artifacts}
    measured = ctx.task.measure(ctx, artifacts, config, folder, search)
    metric = ctx.config.pipeline.selection_metric
    lower = ctx.task.lower_is_better(metric)
    rows = measured.rows
    for row in rows:
        artifact = artifacts[row["model"]]
        row |= {"stage": artifact.stage, "folder": artifact.folder, "card_kind": artifact.card_kind}
        add_kept(row, rows[0], metric, lower)
    chosen, rule = choose(rows, config, metric, measured.cost, lower)
    plots = ctx.task.plots(measured, ctx.out, metric, search) if config.plots else []
    report = build_report(ctx.config, ctx.records, ctx.data.raw, rows, chosen, rule, plots)
    report["budget_check"] = budget_check(rows, chosen, search and search.budget, ctx.task)
    report |= measured.report
    warn_budget(report)
    write_report(ctx.out, "report", report, render_markdown(report, measured.columns, ctx.task))
    return {"report": report}, str(ctx.out / "report.json")


SPEC = StageSpec(
    name="evaluate",
    configs=(EvaluateConfig,),
    run=run,
    output=lambda record: ReportOutput(record["figures"]["report"]),
    always=True,  # every run ends with its report (and share takes the variant it chose)
    check_data=lambda ctx, stage: ctx.task.check_evaluation(stage.get(EvaluateConfig), ctx.data, ctx.config.data),
)
