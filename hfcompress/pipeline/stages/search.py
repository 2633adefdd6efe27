"""``search``: cut candidate students from the teacher, measure them, drop those over the budget, train the
rest briefly and choose one on validation. ``SearchConfig`` and the stage live here; the algorithm is
``hfcompress.pipeline.student_search`` (the task object times and scores a candidate: a causal LM's in tokens/s
and on validation perplexity)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from transformers import set_seed

from ...configs import parse_int_list
from ...distillation import DistillationConfig
from ...errors import HfCompressError, check_choice
from ...pruning import calibration_batches
from ..context import RunContext, check_distillation
from ..processes import on_main
from ..settings import Stage
from ..spec import Artifact, Budget, SearchOutput, StageSpec
from ..student_search import check_grid, search_student

SPEEDS = ("generate", "prompt")  # a causal LM's speed budget: greedy tokens/s at batch 1, or prompt tokens/s


def _float_list(spec: str, name: str) -> list[float]:
    try:
        values = [float(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise HfCompressError(
            f"{name} must be comma-separated numbers like '1.0,0.5', got {spec!r}"
        ) from None
    if not values or not all(0 < v <= 1 for v in values):
        raise HfCompressError(f"{name} must list fractions in (0, 1], got {spec!r}")
    return values


@dataclass
class SearchConfig:
    """The student search: cut candidates from the teacher over a grid, drop those over budget, train each
    remaining one for the same few steps and keep, on the validation split, the fastest one whose score is
    within the noise of the best (or the best: ``selection``)."""

    max_latency_ms: Optional[float] = field(
        default=None, metadata={"help": "Budget: CPU latency at budget_batch_size, in ms (None: no limit)."}
    )
    min_speedup: Optional[float] = field(
        default=None,
        metadata={
            "help": "Budget: teacher latency / candidate latency at budget_batch_size (None: no limit)."
        },
    )
    max_size_mb: Optional[float] = field(
        default=None, metadata={"help": "Budget: the candidate's fp32 weights in MB (None: no limit)."}
    )
    max_parameters: Optional[int] = field(
        default=None, metadata={"help": "Budget: the candidate's parameter count (None: no limit)."}
    )
    budget_batch_size: int = field(
        default=32,
        metadata={"help": "Batch size the latency budget is for (causal_lm with speed 'prompt': the prompt batch); "
                  ">= 1."},
    )
    speed: str = field(
        default="generate",
        metadata={
            "help": "causal_lm: what latency and speed-up measure: 'generate' (ms per greedy token at batch 1, KV "
            "cache) or 'prompt' (ms per prompt token at budget_batch_size x the data's block_size)."
        },
    )
    generate_tokens: int = field(
        default=16, metadata={"help": "causal_lm, speed 'generate': tokens generated per timed run; >= 1."}
    )
    depths: str = field(default="2,3", metadata={"help": "Layer counts to try."})
    layer_selection: str = field(
        default="spread",
        metadata={"help": "Which layers a depth keeps: 'spread' (evenly) or 'block_influence' (drop the layers "
                  "that change their input least on the calibration batches, ShortGPT)."},
    )
    ffn_fractions: str = field(
        default="1.0,0.5", metadata={"help": "Fractions of FFN neurons to keep (lowest importance go)."}
    )
    head_fractions: str = field(
        default="1.0",
        metadata={"help": "Fractions of attention heads to keep (needs a transformers that prunes heads)."},
    )
    layer_presets: str = field(
        default="",
        metadata={
            "help": "More candidates at full width with these teacher layers, ';'-separated student_layers "
            "specs: 'every_other', or explicit lists like '0,2,5' (layers chosen by you, not spread)."
        },
    )
    proxy_steps: int = field(
        default=100,
        metadata={"help": "Distillation steps each in-budget candidate gets before scoring; >= 1."},
    )
    importance: str = field(
        default="gradient",
        metadata={"help": "How heads (KV groups) and neurons are scored: 'gradient', 'activation' or 'magnitude'."},
    )
    calibration_batches: int = field(
        default=8, metadata={"help": "Training batches used to score heads and neurons; >= 1."}
    )
    latency_runs: int = field(default=5, metadata={"help": "Timed runs per candidate latency; >= 1."})
    latency_rounds: int = field(
        default=3,
        metadata={"help": "Rounds in which the candidates and the teacher take turns (order shuffled each round); "
                  "the latency is the median over rounds; >= 1."},
    )
    selection: str = field(
        default="within_noise",
        metadata={
            "help": "'within_noise': the fastest candidate whose proxy score the best one does not beat in at "
            "least `confidence` of the bootstrap draws over validation examples; 'best': the best proxy score "
            "(ties: the faster)."
        },
    )
    confidence: float = field(
        default=0.95,
        metadata={"help": "within_noise: the share of bootstrap draws the best must win to rule a candidate "
                  "out; in (0.5, 1)."},
    )
    bootstrap_samples: int = field(
        default=200, metadata={"help": "Bootstrap draws over the validation examples; >= 10."}
    )

    def __post_init__(self):
        check_choice("selection", self.selection, ("within_noise", "best"))
        if not 0.5 < self.confidence < 1:
            raise HfCompressError(f"confidence must be in (0.5, 1), got {self.confidence}")
        if self.bootstrap_samples < 10:
            raise HfCompressError(f"bootstrap_samples must be >= 10, got {self.bootstrap_samples}")
        for name in ("max_latency_ms", "min_speedup", "max_size_mb", "max_parameters"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise HfCompressError(f"{name} must be > 0 or null, got {value}")
        for name in ("budget_batch_size", "proxy_steps", "calibration_batches", "latency_runs", "latency_rounds",
                     "generate_tokens"):  # fmt: skip
            if getattr(self, name) < 1:
                raise HfCompressError(f"{name} must be >= 1, got {getattr(self, name)}")
        check_choice("importance", self.importance, ("gradient", "activation", "magnitude"))
        check_choice("speed", self.speed, SPEEDS)
        check_choice("layer_selection", self.layer_selection, ("spread", "block_influence"))
        parse_int_list(self.depths, "depths")
        _float_list(self.ffn_fractions, "ffn_fractions")
        _float_list(self.head_fractions, "head_fractions")

    @property
    def grid(self) -> list[tuple[int | str, float, float]]:
        """(depth or layer spec, FFN fraction kept, head fraction kept) of every candidate."""
        presets = [(spec.strip(), 1.0, 1.0) for spec in self.layer_presets.split(";") if spec.strip()]
        return presets + [
            (d, f, h)
            for d in parse_int_list(self.depths, "depths")
            for f in _float_list(self.ffn_fractions, "ffn_fractions")
            for h in _float_list(self.head_fractions, "head_fractions")
        ]


def run(ctx: RunContext, stage: Stage, folder: Path):
    config = stage.get(SearchConfig)
    teacher = ctx.teacher()
    check_grid(teacher, config)
    set_seed(ctx.config.pipeline.seed)
    calibration = calibration_batches(ctx.data.splits["train"], ctx.tokenizer,
                                      stage.get(DistillationConfig).per_device_train_batch_size,
                                      config.calibration_batches, ctx.config.pipeline.seed)  # fmt: skip
    result = search_student(teacher, config, ctx.distill_args(stage, folder), ctx.task, ctx.data, ctx.config.data,
                            folder, calibration, ctx.config.pipeline.selection_metric, group=ctx.group)  # fmt: skip
    on_main(ctx.group, save_model, result.pop("chosen_model"), ctx.tokenizer, folder / "chosen")
    return result, str(folder / "chosen")


def save_model(model, tokenizer, folder: Path) -> None:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def output(record: dict) -> SearchOutput:
    figures = record["figures"]
    return SearchOutput(figures["chosen"], Path(record["artifact"]), figures["teacher_layers"], figures["candidates"],
                        Budget.of(record["config"]["SearchConfig"]))  # fmt: skip


def artifacts(output: SearchOutput) -> dict:
    """The trained (in-budget) candidates, each saved with its tokenizer: proxies in the report."""
    return {f"candidate {r['candidate']}": Artifact(r["folder"], "candidate", "distilled")
            for r in output.candidates if r.get("folder")}  # fmt: skip


SPEC = StageSpec(
    name="search",
    configs=(SearchConfig, DistillationConfig),
    run=run,
    output=output,
    training=True,
    requires={"distill": "the search stage chooses the student of a distill stage: add 'distill' after it"},
    validate=check_distillation,
    artifacts=artifacts,
)
