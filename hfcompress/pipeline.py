"""Steps that recipes chain: guard the output folder, trim data, get a fine-tuned teacher, measure a model.

Recipes stay thin and linear by calling these; each step is usable on its own from Python.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import datasets
from transformers import TrainingArguments

from .errors import HfCompressError
from .evaluation import evaluate_model, measure_latency, size_on_disk, write_text_atomic
from .finetune import finetune_classifier

logger = logging.getLogger(__name__)

REPORT_NAME = "report"
TEACHER_RECORD = "hfcompress_finetune.json"


def guard_output_dir(output_dir: str | Path, overwrite: bool) -> None:
    """Refuse to run over the finished results of an earlier run unless ``overwrite`` is set."""
    report = Path(output_dir) / f"{REPORT_NAME}.json"
    if report.exists() and not overwrite:
        raise HfCompressError(
            f"{output_dir} already holds the results of a finished run ({report.name}); choose another "
            "output_dir or pass --overwrite_output true"
        )


def limit_samples(
    raw: datasets.DatasetDict, max_train: int | None, max_eval: int | None, seed: int
) -> datasets.DatasetDict:
    """Shuffle-and-take subsets (deterministic for a seed); validation and test get ``max_eval`` each."""
    out = {}
    for split, dataset in raw.items():
        limit = max_train if split == "train" else max_eval
        if limit is not None and limit < len(dataset):
            dataset = dataset.shuffle(seed=seed).select(range(limit))
        out[split] = dataset
    return datasets.DatasetDict(out)


def stage_args(args: TrainingArguments, **changes) -> TrainingArguments:
    """Plain ``TrainingArguments`` for a sub-stage (teacher fine-tuning, a baseline), copying the run's
    settings (batch sizes, seed, precision) with ``changes`` applied."""
    base = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
    base.update({k: str(v) if isinstance(v, Path) else v for k, v in changes.items()})
    return TrainingArguments(**base)


def ensure_finetuned_teacher(
    teacher,
    head_ready: bool,
    mode: str,
    tokenizer,
    tokenized: datasets.DatasetDict,
    args: TrainingArguments,
    teacher_dir: str | Path,
    record: dict,
    compute_metrics=None,
):
    """Return a teacher fine-tuned on the task: as given, reloaded from an earlier run, or trained now.

    ``mode`` is 'auto' (train when the checkpoint has no head for these labels), 'always' or 'never'.
    ``record`` describes the run (base model, data, hyper-parameters); a teacher saved in ``teacher_dir``
    with the same record is reused instead of trained again.
    """
    if mode == "never" or (mode == "auto" and head_ready):
        return teacher
    teacher_dir = Path(teacher_dir)
    record_path = teacher_dir / TEACHER_RECORD
    if record_path.exists() and json.loads(record_path.read_text()) == record:
        logger.info("Reusing the teacher fine-tuned earlier in %s", teacher_dir)
        reloaded = type(teacher).from_pretrained(
            teacher_dir, attn_implementation=teacher.config._attn_implementation
        )
        return reloaded
    logger.info("Fine-tuning the teacher on the task (%s epochs)", record.get("epochs"))
    trainer = finetune_classifier(
        teacher, tokenizer, tokenized["train"], tokenized["validation"], args, compute_metrics=compute_metrics
    )
    if trainer.is_world_process_zero():
        if teacher_dir.exists():
            shutil.rmtree(teacher_dir)
        trainer.save_model(str(teacher_dir))
        write_text_atomic(record_path, json.dumps(record, indent=2, sort_keys=True))
    return trainer.model


def measure_model(
    model,
    saved_dir: str | Path | None,
    tokenizer,
    eval_dataset,
    collator,
    compute_metrics,
    texts: list[str],
    batch_sizes: list[int],
    max_length: int,
    runs: int,
) -> dict:
    """Metrics, parameters, size on disk and CPU latency of one model, for the report."""
    from .distillation.student import count_parameters

    result = {
        f"test_{k}": v for k, v in evaluate_model(model, eval_dataset, collator, compute_metrics).items()
    }
    result["parameters"] = count_parameters(model)
    result["size_mb"] = size_on_disk(saved_dir) / 2**20 if saved_dir else None
    for batch_size in batch_sizes:
        result[f"latency_ms_b{batch_size}"] = measure_latency(
            model, tokenizer, texts, batch_size, max_length, runs
        )
    return result
