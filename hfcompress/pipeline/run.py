"""``run_pipeline``: check everything, then run the stages in order, skipping those already finished with the
same config and inputs, resuming an interrupted training stage from its last checkpoint, and end with one
report for the whole run (``evaluate``) and the chosen variant shared (``share``).

Launched as several processes (``accelerate launch --num_processes N hfcompress compress ...``), every process
runs the training stages (DDP, or FSDP/DeepSpeed as the accelerate config says), while the main process alone
writes the records, measures latency, quantizes, evaluates and shares; the others wait for it and read what it
wrote. One process is the same code with a group of one.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from .config import load_pipeline_config
from .context import RunContext
from .processes import on_main, process_group
from .records import RunState, config_values
from .registry import REGISTRY
from .settings import PipelineConfig

logger = logging.getLogger(__name__)


def prepare(config: PipelineConfig) -> tuple[RunState, list[str], RunContext]:
    """Every check that can fail on bad input, before anything is written: the output folder's records, the
    backends, sharing, the task's data and tokenizer (``TaskKind.prepare``), the stages' checks of that data
    and, when no stage makes the teacher, the model as given (a classifier needs a head for these labels)."""
    state = RunState(config)
    skipped = state.check()
    for stage in config.stages:
        if REGISTRY[stage.name].preflight is not None:
            REGISTRY[stage.name].preflight(config, stage)
    task = config.task
    data = task.prepare(config)
    ctx = RunContext(config=config, task=task, data=data, out=Path(config.pipeline.output_dir))
    for stage in config.stages:
        if REGISTRY[stage.name].check_data is not None:
            REGISTRY[stage.name].check_data(ctx, stage)
    if not any(REGISTRY[stage.name].provides_teacher for stage in config.stages):
        task.check_base_model(config.pipeline.model_name_or_path, data)
    return state, skipped, ctx


def run_pipeline(
    config: PipelineConfig | str | Path, overrides: list[str] | None = None, callbacks: list | None = None
) -> dict:
    """Run a pipeline (a parsed config or a YAML path with ``--field value`` overrides of its top level);
    returns the report. ``callbacks``: extra ``TrainerCallback``s for every training stage."""
    if not isinstance(config, PipelineConfig):
        config = load_pipeline_config(config, overrides)
    group = process_group()
    # every process checks (reading only) before anything is written; the main process loads and tokenizes the
    # data first, so the others read the datasets cache instead of writing the same files at the same time
    with group.main_process_first():
        state, skipped, ctx = prepare(config)
    ctx.group = group
    group.wait_for_everyone()
    on_main(group, state.start)
    try:
        _run_stages(group, state, skipped, ctx, config, callbacks)
    finally:
        if group.is_main_process:
            state.release()
    if group.is_main_process:
        print("\n" + (ctx.out / "report.md").read_text() + f"\nReport in {ctx.out / 'report.md'}")
    return ctx.outputs["evaluate"].report


def _run_stages(group, state: RunState, skipped: list[str], ctx: RunContext, config: PipelineConfig,
                callbacks) -> None:  # fmt: skip
    ctx.callbacks = list(callbacks or [])
    for stage in config.stages:
        spec = REGISTRY[stage.name]
        record = state.done(stage.name) if stage.name in skipped else None
        if record is not None:
            logger.info("Stage %s: finished earlier with the same config and inputs; skipped", stage.name)
        else:
            logger.info("Stage %s: running", stage.name)
            folder = state.out / stage.name
            on_main(group, state.begin_stage, stage.name)
            if spec.training:  # every process trains; the main one writes the record
                on_main(group, finish, state, stage, folder, *spec.run(ctx, stage, folder))
            else:  # the main process alone runs it; the others wait
                on_main(group, run_and_finish, spec, ctx, state, stage, folder)
            record = state.done(stage.name)
        ctx.records[stage.name] = record
        ctx.outputs[stage.name] = spec.output(record)
        if spec.artifacts is not None:  # the models it adds to the report
            ctx.artifacts.update(spec.artifacts(ctx.outputs[stage.name]))
    on_main(group, state.mark, "done", None)


def run_and_finish(spec, ctx: RunContext, state: RunState, stage, folder: Path) -> None:
    finish(state, stage, folder, *spec.run(ctx, stage, folder))


def finish(state: RunState, stage, folder: Path, figures: dict, artifact: str | None) -> None:
    state.finish_stage(stage.name, stage_config_record(stage), figures, artifact)
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # finished: the model is saved


def stage_config_record(stage) -> dict:
    """The resolved config of a stage, as JSON-able values (TrainingArguments through ``to_dict``)."""
    return {cls.__name__: config_values(value) for cls, value in stage.configs.items()}
