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


def start_recipe(name: str, default_config: str | Path, argv: list[str] | None = None):
    """A recipe's first step: parse its YAML config (``default_config`` when no ``--config`` is given) and
    command-line overrides, set up logging, refuse to run over a finished run, check sharing settings.
    Returns (argv as used, the parsed dataclasses in ``recipe_config_types(name)`` order)."""
    import sys

    import transformers

    from .configs import recipe_config_types
    from .parser import parse_config

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" not in argv:  # no config: the offline default, with any flags applied on top
        argv = ["--config", str(default_config), *argv]
    parsed = parse_config(recipe_config_types(name), argv)
    recipe = parsed[0]
    args = next(p for p in parsed if isinstance(p, TrainingArguments))
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    guard_output_dir(args.output_dir, recipe.overwrite_output)
    check_sharing(recipe)
    return argv, parsed


def run_recipe(main, name: str) -> None:
    """Run a recipe's ``main`` as a command: bad input prints ``<name>: error: ...`` and exits with 2."""
    import sys

    try:
        main()
    except HfCompressError as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        sys.exit(2)


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


def stage_args(args: TrainingArguments, cls=TrainingArguments, **changes) -> TrainingArguments:
    """Arguments of class ``cls`` (plain ``TrainingArguments`` by default) for a sub-stage (teacher
    fine-tuning, a baseline, one pruning iteration), copying the run's settings (batch sizes, seed,
    precision) with ``changes`` applied."""
    base = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.init}
    base.update({k: str(v) if isinstance(v, Path) else v for k, v in changes.items()})
    return cls(**base)


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


def finetuned_teacher(
    recipe, data_args, args, teacher, head_ready, label_names, tokenizer, tokenized, out, compute_metrics
):
    """The recipes' teacher stage: ``ensure_finetuned_teacher`` with the recipe's settings, saved in
    ``<out>/teacher`` and reused by a later run with the same record."""
    record = {
        "base": recipe.teacher_model_name_or_path,
        "dataset": data_args.dataset_name,
        "labels": label_names,
        "max_train_samples": data_args.max_train_samples,
        "max_seq_length": data_args.max_seq_length,
        "epochs": recipe.teacher_num_train_epochs,
        "learning_rate": recipe.teacher_learning_rate,
        "seed": args.seed,
    }
    teacher_args = stage_args(
        args,
        output_dir=Path(out) / "teacher_checkpoints",
        num_train_epochs=recipe.teacher_num_train_epochs,
        learning_rate=recipe.teacher_learning_rate,
        eval_strategy="no",
        save_strategy="no",
    )
    return ensure_finetuned_teacher(
        teacher,
        head_ready,
        recipe.teacher_finetune,
        tokenizer,
        tokenized,
        teacher_args,
        Path(out) / "teacher",
        record,
        compute_metrics,
    )


def report_columns(batch_sizes: list[int]) -> list[tuple[str, str]]:
    """The report table's columns: metrics, size, latency at each batch size."""
    return [
        ("model", "model"),
        ("test_accuracy", "accuracy"),
        ("test_f1", "F1"),
        ("parameters", "parameters"),
        ("size_mb", "size (MB)"),
    ] + [(f"latency_ms_b{b}", f"latency b{b} (ms)") for b in batch_sizes]


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


def prune_and_recover(model, teacher, config, args, data, tokenizer, compute_metrics, out):
    """Prune ``model`` and recover by distilling from the unpruned ``teacher``; returns (model, trainer, details).

    ``config`` is a ``StructuredPruningConfig`` (each iteration: prune to the next target, then train; the
    ``args.num_train_epochs`` of recovery are split evenly over the iterations) or a ``PruningConfig`` (one training run with ``PruningCallback``). ``args``
    is the run's ``DistillationConfig``; every stage shares one teacher-logit cache in ``out``.
    """
    from torch.utils.data import DataLoader

    from .data import DistillationDataCollator
    from .distillation import DistillationConfig, DistillationTrainer
    from .pruning import (
        PruningCallback,
        StructuredPruningConfig,
        structure,
        structured_prune,
        structured_targets,
    )

    out = Path(out)
    cache = args.teacher_cache_path or str(out / "teacher_logits.safetensors")
    collator = DistillationDataCollator(tokenizer)

    def distil(model, stage_dir, callbacks=None, epochs=args.num_train_epochs, kept=None):
        maps = {}
        if kept is not None:  # a kept layer learns from the teacher layer it was (not a uniform map)
            if args.hidden_layer_map == "auto":
                maps["hidden_layer_map"] = ",".join(f"{i + 1}:{k + 1}" for i, k in enumerate(kept))
            if args.attention_layer_map == "auto":
                maps["attention_layer_map"] = ",".join(f"{i}:{k}" for i, k in enumerate(kept))
        stage = stage_args(
            args,
            cls=DistillationConfig,
            output_dir=stage_dir,
            teacher_cache_path=cache,
            num_train_epochs=epochs,
            **maps,
        )
        trainer = DistillationTrainer(
            model=model,
            teacher_model=teacher,
            args=stage,
            train_dataset=data["train"],
            eval_dataset=data["validation"],
            processing_class=tokenizer,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
        )
        trainer.train()
        return trainer

    if not isinstance(config, StructuredPruningConfig):
        callback = PruningCallback(config)
        trainer = distil(model, out / "training", [callback])
        return model, trainer, {"config": config.to_dict(), "sparsity": callback.report}

    shuffled = data["train"].shuffle(seed=args.seed)
    loader = DataLoader(shuffled, batch_size=args.per_device_train_batch_size, collate_fn=collator)
    calibration = [batch for _, batch in zip(range(config.calibration_batches), loader)]
    steps = []
    targets = structured_targets(model, config)
    kept = list(range(model.config.num_hidden_layers))  # the teacher layer each remaining layer comes from
    for k, target in enumerate(targets, start=1):
        model, removed = structured_prune(model, target, config, calibration)
        kept = [layer for i, layer in enumerate(kept) if i not in removed["layers"]]
        logger.info("Pruning iteration %d/%d removed %s; now %s", k, len(targets), removed, structure(model))
        trainer = distil(
            model, out / f"iteration-{k}", epochs=args.num_train_epochs / len(targets), kept=kept
        )
        steps.append(
            {"iteration": k, "removed": removed, "structure": structure(model), "teacher_layers": kept}
        )
    details = {
        "config": config.to_dict(),
        "iterations": steps,
        "structure": structure(model),
        "teacher_layers": kept,
    }
    return model, trainer, details


def check_sharing(recipe) -> None:
    """Before any work: a push needs a token and a valid namespace; an export folder must not hold files
    that this run would overwrite is checked per variant later (export refuses existing folders)."""
    if recipe.share_namespace:
        from huggingface_hub import get_token

        from .hub import check_repo_id

        check_repo_id(f"{recipe.share_namespace}/variant")
        if not get_token():
            raise HfCompressError(
                "share_namespace is set but there is no Hugging Face token: set HF_TOKEN or run `hf auth login`"
            )


def share_variant(recipe, folder, info, *suffix: str) -> dict:
    """Export and/or push one compressed variant as the recipe's share_* fields ask; returns where it went.

    The repo name follows ``variant_name(base, dataset, *suffix)``; the card is built from ``info`` (figures
    from the run's own report).
    """
    from .hub import build_model_card, export_variant, push_variant, variant_name

    if not (recipe.share_namespace or recipe.share_export_dir):
        return {}
    name = variant_name(info.base_model, info.dataset, *suffix)
    repo_id = f"{recipe.share_namespace or 'local'}/{name}"
    card = build_model_card(info, repo_id)
    shared = {"repo_id": repo_id}
    if recipe.share_export_dir:
        shared["export"] = str(export_variant(folder, Path(recipe.share_export_dir) / name, card))
    if recipe.share_namespace:
        shared["commit_url"] = push_variant(
            folder, repo_id, card, private=recipe.share_private, revision=recipe.share_revision
        )
    return shared
