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

from ..data import limit_samples, load_task_data
from ..modeling import load_tokenizer
from . import stages
from .config import PipelineConfig, load_pipeline_config
from .records import RunState, config_values
from .stages import RunContext
from .stages.base import on_main

logger = logging.getLogger(__name__)


def _tokenize(raw, tokenizer, task: str, max_length: int):
    from ..data import tokenize_dataset, tokenize_token_dataset

    tokenize = tokenize_token_dataset if task == "token_classification" else tokenize_dataset
    return tokenize(raw, tokenizer, max_length)


def prepare(config: PipelineConfig) -> tuple[RunState, list[str], RunContext]:
    """Every check that can fail on bad input, before anything is written: the output folder's records, the
    backends, sharing, the data, the tokenizer and (without a finetune stage) the model's head; for a causal LM
    (``lm.prepare_lm``) the model's kind, the block size and the harness tasks."""
    from ..evaluation import task_metrics

    state = RunState(config)
    skipped = state.check()
    for stage in config.stages:
        if stages.REGISTRY[stage.name].preflight is not None:
            stages.REGISTRY[stage.name].preflight(config, stage)
    pipeline, data_args = config.pipeline, config.data
    if pipeline.is_causal_lm:
        from .lm import prepare_lm

        lm = prepare_lm(config)
        ctx = RunContext(config=config, out=Path(pipeline.output_dir), raw=lm["raw"], labels=[],
                         tokenizer=lm["tokenizer"], data=lm["rows"], metrics=None, texts=[], lm=lm)  # fmt: skip
        return state, skipped, ctx
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


def process_group():
    """accelerate's state of this launch: one process, or the group ``accelerate launch`` started (a gloo group
    of CPU processes on a machine without GPUs)."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import DistributedType

    from ..distillation.config import multi_process_without_accelerator

    group = PartialState(cpu=multi_process_without_accelerator())
    if group.distributed_type == DistributedType.MULTI_CPU:
        # accelerate gives CPU processes the device "cpu:0", and Trainer resuming a checkpoint loads the
        # optimizer with map_location=that device, which torch.load can't restore ("don't know how to restore
        # data location ... (tagged with cpu:0)"). CPU storage needs no moving: teach torch.load that tag.
        global _CPU_TAG_REGISTERED
        if not _CPU_TAG_REGISTERED:
            torch.serialization.register_package(11, _no_tag, _indexed_cpu)  # 11: unused by torch, after "cpu"
            _CPU_TAG_REGISTERED = True
    return group


_CPU_TAG_REGISTERED = False


def _no_tag(obj) -> None:
    return None  # tags nothing when saving: "cpu" storages keep torch's own tag


def _indexed_cpu(storage, location: str):
    """torch.load's restore of a storage tagged 'cpu:N' (the storage, as it is); None for any other tag."""
    return storage if location.startswith("cpu:") else None


def _run_stages(group, state: RunState, skipped: list[str], ctx: RunContext, config: PipelineConfig,
                callbacks) -> None:  # fmt: skip
    ctx.callbacks = list(callbacks or [])
    for stage in config.stages:
        spec = stages.REGISTRY[stage.name]
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
    on_main(group, state.mark, "done", None)


def run_and_finish(spec, ctx: RunContext, state: RunState, stage, folder: Path) -> None:
    finish(state, stage, folder, *spec.run(ctx, stage, folder))


def finish(state: RunState, stage, folder: Path, figures: dict, artifact: str | None) -> None:
    state.finish_stage(stage.name, stage_config_record(stage), figures, artifact)
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # finished: the model is saved


def stage_config_record(stage) -> dict:
    """The resolved config of a stage, as JSON-able values (TrainingArguments through ``to_dict``)."""
    return {cls.__name__: config_values(value) for cls, value in stage.configs.items()}
