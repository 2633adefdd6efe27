"""``search``: cut candidate students from the teacher, measure them, drop those over the budget, train the
rest briefly and choose one on validation (``hfcompress.pipeline.search`` holds the algorithm; a causal LM's
candidates are timed in tokens/s and scored on validation perplexity)."""

from __future__ import annotations

from pathlib import Path

from transformers import set_seed

from ...distillation import DistillationConfig
from ...pruning import calibration_batches
from ..config import SearchConfig
from .base import SearchOutput, StageSpec, on_main, refuse_soft_targets_for_multi_label


def run(ctx, stage, folder: Path):
    from ..search import check_grid, search_student

    config = stage.get(SearchConfig)
    teacher = ctx.teacher()
    check_grid(teacher, config)
    set_seed(ctx.config.pipeline.seed)
    calibration = calibration_batches(ctx.data["train"], ctx.tokenizer,
                                      stage.get(DistillationConfig).per_device_train_batch_size,
                                      config.calibration_batches, ctx.config.pipeline.seed)  # fmt: skip
    lm = None
    if ctx.is_lm:  # candidates timed in tokens/s on the validation text, scored on validation perplexity
        from ..lm import speed_source

        lm = {"source": speed_source(ctx, "validation"), "window": ctx.config.data.block_size}
    max_length = None if ctx.is_lm else ctx.config.data.max_seq_length
    result = search_student(teacher, config, ctx.distill_args(stage, folder), ctx.data, ctx.tokenizer, ctx.metrics,
                            ctx.texts, max_length, folder, calibration, ctx.config.pipeline.selection_metric,
                            group=ctx.group, lm=lm)  # fmt: skip
    on_main(ctx.group, save_model, result.pop("chosen_model"), ctx.tokenizer, folder / "chosen")
    return result, str(folder / "chosen")


def save_model(model, tokenizer, folder: Path) -> None:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def output(record: dict) -> SearchOutput:
    figures = record["figures"]
    return SearchOutput(figures["chosen"], Path(record["artifact"]), figures["teacher_layers"], figures["candidates"])


def artifacts(output: SearchOutput) -> dict:
    """The trained (in-budget) candidates, each saved with its tokenizer: proxies in the report."""
    return {f"candidate {r['candidate']}": (r["folder"], "candidate") for r in output.candidates if r.get("folder")}


SPEC = StageSpec(
    name="search",
    configs=(SearchConfig, DistillationConfig),
    run=run,
    output=output,
    training=True,
    requires={"distill": "the search stage chooses the student of a distill stage: add 'distill' after it"},
    validate=refuse_soft_targets_for_multi_label,
    artifacts=artifacts,
)
