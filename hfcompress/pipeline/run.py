"""``run_pipeline``: check everything, then run the stages in order, skipping those already finished with the
same config and inputs, resuming an interrupted training stage from its last checkpoint, and end with one
report for the whole run (``evaluate``) and the chosen variant shared (``share``).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from ..data import limit_samples, load_task_data
from ..errors import HfCompressError
from ..modeling import load_tokenizer
from .config import PipelineConfig, load_pipeline_config
from .records import RunState, config_values
from .stages import REGISTRY, RunContext

logger = logging.getLogger(__name__)


def _tokenize(raw, tokenizer, task: str, max_length: int):
    from ..data import tokenize_dataset, tokenize_token_dataset

    tokenize = tokenize_token_dataset if task == "token_classification" else tokenize_dataset
    return tokenize(raw, tokenizer, max_length)


def prepare(config: PipelineConfig) -> tuple[RunState, list[str], RunContext]:
    """Every check that can fail on bad input, before anything is written: the output folder's records, the
    backends, sharing, the data, the tokenizer and (without a finetune stage) the model's head."""
    from ..evaluation import task_metrics

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise HfCompressError(
            "the compress pipeline runs in one process (its stages measure and write records on one machine); "
            "launch it without --num_processes, or run the recipes (distill_bert.py, ...) under DDP/FSDP"
        )
    state = RunState(config)
    skipped = state.check()
    for stage in config.stages:
        if REGISTRY[stage.name].preflight is not None:
            REGISTRY[stage.name].preflight(config, stage)
    pipeline, data_args = config.pipeline, config.data
    raw, labels = load_task_data(pipeline.task_type, data_args.dataset_name, data_args.text_column,
                                 data_args.label_column)  # fmt: skip
    raw = limit_samples(raw, data_args.max_train_samples, data_args.max_eval_samples, pipeline.seed)
    tokenizer = load_tokenizer(pipeline.model_name_or_path)
    data = _tokenize(raw, tokenizer, pipeline.task_type, data_args.max_seq_length)
    texts = [t if isinstance(t, str) else " ".join(t) for t in raw["validation"]["text"][:64]]
    ctx = RunContext(
        config=config,
        out=Path(pipeline.output_dir),
        raw=raw,
        labels=labels,
        tokenizer=tokenizer,
        data=data,
        metrics=task_metrics(pipeline.task_type, data_args.metric_names, len(labels)),
        texts=texts,
    )
    if "finetune" not in config.names:
        ctx.teacher()  # refuses a model without a head for these labels
    return state, skipped, ctx


def run_pipeline(
    config: PipelineConfig | str | Path, overrides: list[str] | None = None, callbacks: list | None = None
) -> dict:
    """Run a pipeline (a parsed config or a YAML path with ``--field value`` overrides of its top level);
    returns the report. ``callbacks``: extra ``TrainerCallback``s for every training stage."""
    if not isinstance(config, PipelineConfig):
        config = load_pipeline_config(config, overrides)
    state, skipped, ctx = prepare(config)
    state.start()
    try:
        _run_stages(state, skipped, ctx, config, callbacks)
    finally:
        state.release()
    print("\n" + (ctx.out / "report.md").read_text() + f"\nReport in {ctx.out / 'report.md'}")
    return ctx.outputs["evaluate"].report


def _run_stages(state: RunState, skipped: list[str], ctx: RunContext, config: PipelineConfig, callbacks) -> None:
    ctx.callbacks = list(callbacks or [])
    for stage in config.stages:
        record = state.done(stage.name) if stage.name in skipped else None
        if record is not None:
            logger.info("Stage %s: finished earlier with the same config and inputs; skipped", stage.name)
        else:
            logger.info("Stage %s: running", stage.name)
            folder = state.begin_stage(stage.name)
            figures, artifact = REGISTRY[stage.name].run(ctx, stage, folder)
            record = state.finish_stage(stage.name, stage_config_record(stage), figures, artifact)
            shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # finished: the model is saved
        ctx.records[stage.name] = record
        ctx.outputs[stage.name] = REGISTRY[stage.name].output(record)
    state.mark("done", current=None)


def stage_config_record(stage) -> dict:
    """The resolved config of a stage, as JSON-able values (TrainingArguments through ``to_dict``)."""
    return {cls.__name__: config_values(value) for cls, value in stage.configs.items()}
