"""Fine-tune a pretrained model on a new task: full, with frozen layers, LoRA or QLoRA; evaluate; save; report.

    accelerate launch recipes/finetune.py
    accelerate launch recipes/finetune.py --config recipes/configs/minilm/rotten_tomatoes/finetune_lora.yaml
    accelerate launch recipes/finetune.py --task_type multi_label_classification --dataset_name my.jsonl ...

Task types: single-label, multi-label (the label column holds lists) and token classification (the text column
holds word lists, the label column one tag per word). The model gets a new head with the dataset's label
names (id2label/label2id). With early_stopping_patience the run stops when the validation metric stops
improving and keeps the best checkpoint. LoRA/QLoRA adapters are saved in <output_dir>/adapter and merged
(merge_and_unload, onto a full-precision base) into <output_dir>/model, a plain model any compression recipe
can start from. Writes <output_dir>/report.json and report.md. Bad input stops the run before anything is
written. The compression recipes' teacher stage runs the same ``hfcompress.finetune.finetune``.
"""

import dataclasses
import logging
from pathlib import Path

from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    Trainer,
    set_seed,
)

from hfcompress import HfCompressError, count_parameters
from hfcompress.configs import parse_int_list
from hfcompress.data import load_text_classification, tokenize_dataset
from hfcompress.evaluation import markdown_table, measure_latency, size_on_disk, write_report
from hfcompress.finetune import (
    finetune,
    load_classifier,
    load_qlora_base,
    load_tokenizer,
    merge_adapter,
    task_collator,
)
from hfcompress.hub import CompressionInfo
from hfcompress.metrics import classification_metrics
from hfcompress.pipeline import (
    limit_samples,
    run_recipe,
    share_variant,
    stage_args,
    start_recipe,
)
from hfcompress.tasks import (
    load_multilabel_classification,
    load_token_classification,
    multilabel_metrics,
    token_metrics,
    tokenize_token_dataset,
)

logger = logging.getLogger("finetune")
DEFAULT_CONFIG = Path(__file__).parent / "configs/minilm/rotten_tomatoes/finetune_default.yaml"


def load_task(task_type, data_args, tokenizer, seed):
    """(raw splits, tokenized splits, label names, compute_metrics) for the task type."""
    name, text, label = data_args.dataset_name, data_args.text_column, data_args.label_column
    if task_type == "token_classification":
        raw, names = load_token_classification(name, text, label)
    elif task_type == "multi_label_classification":
        raw, names = load_multilabel_classification(name, text, label)
    else:
        raw, names = load_text_classification(name, text, label)
    raw = limit_samples(raw, data_args.max_train_samples, data_args.max_eval_samples, seed)
    if task_type == "token_classification":
        return (
            raw,
            tokenize_token_dataset(raw, tokenizer, data_args.max_seq_length),
            names,
            token_metrics(len(names)),
        )
    metrics = (
        multilabel_metrics()
        if task_type == "multi_label_classification"
        else classification_metrics(data_args.metric_names, len(names))
    )
    return raw, tokenize_dataset(raw, tokenizer, data_args.max_seq_length), names, metrics


def main(argv=None) -> dict | None:
    argv, (recipe, data_args, config, args) = start_recipe("finetune", DEFAULT_CONFIG, argv)
    out = Path(args.output_dir)
    if config.early_stopping_patience is not None and (
        args.eval_strategy == "no" or not args.load_best_model_at_end
    ):
        raise HfCompressError(
            "early_stopping_patience needs eval_strategy (epoch or steps), save_strategy to match and "
            "load_best_model_at_end: true"
        )
    set_seed(args.seed)
    task = recipe.task_type

    # 1. Data and model; every check that can fail on bad input happens here, before anything is written.
    tokenizer = load_tokenizer(recipe.model_name_or_path)
    raw, data, label_names, compute_metrics = load_task(task, data_args, tokenizer, args.seed)
    if config.qlora:
        model = load_qlora_base(recipe.model_name_or_path, label_names, task)
    else:
        model, _ = load_classifier(recipe.model_name_or_path, label_names, task)
    batch_sizes = parse_int_list(recipe.latency_batch_sizes, "latency_batch_sizes")

    # 2. Fine-tune (freezing / LoRA as configured; early stopping keeps the best checkpoint).
    trainer = finetune(
        model, tokenizer, data["train"], data["validation"], args, config, compute_metrics, task_type=task
    )
    if not trainer.is_world_process_zero():
        return None

    # 3. Save a plain model: LoRA adapters merged onto a full-precision copy of the base.
    trained_parameters = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    if config.use_lora:
        trainer.model.save_pretrained(out / "adapter")
        tokenizer.save_pretrained(out / "adapter")
        if config.qlora:  # merging into 4-bit weights would round the update away: merge onto fp32
            from peft import PeftModel

            base, _ = load_classifier(recipe.model_name_or_path, label_names, task)
            final = merge_adapter(PeftModel.from_pretrained(base, out / "adapter"))
        else:
            final = merge_adapter(trainer.model)
        final.save_pretrained(out / "model")
        tokenizer.save_pretrained(out / "model")
    else:
        trainer.save_model(str(out / "model"))

    # 4. Evaluate the saved model (as anyone loading it gets it) on the held-out test split.
    auto = (
        AutoModelForTokenClassification
        if task == "token_classification"
        else AutoModelForSequenceClassification
    )
    final = auto.from_pretrained(out / "model")
    evaluator = Trainer(
        model=final,
        args=stage_args(
            args,
            output_dir=out / "eval",
            eval_strategy="no",
            save_strategy="no",
            load_best_model_at_end=False,
        ),
        data_collator=task_collator(tokenizer, task),
        compute_metrics=compute_metrics,
    )
    test = evaluator.evaluate(data["test"], metric_key_prefix="test")
    texts = [t if isinstance(t, str) else " ".join(t) for t in raw["test"]["text"][:64]]
    row = {
        "model": Path(recipe.model_name_or_path).name + (" + LoRA (merged)" if config.use_lora else ""),
        **{
            k: v
            for k, v in test.items()
            if k.startswith("test_") and not k.endswith(("runtime", "per_second"))
        },
        "parameters": count_parameters(final),
        "trained_parameters": trained_parameters,
        "size_mb": size_on_disk(out / "model") / 2**20,
    }
    for b in batch_sizes:
        row[f"latency_ms_b{b}"] = measure_latency(
            final, tokenizer, texts, b, data_args.max_seq_length, recipe.latency_runs
        )
    report = {
        "recipe": "finetune",
        "command": " ".join(["recipes/finetune.py", *argv]),
        "model": recipe.model_name_or_path,
        "task_type": task,
        "labels": label_names,
        "dataset": data_args.dataset_name,
        "train_examples": len(raw["train"]),
        "test_examples": len(raw["test"]),
        "epochs_run": trainer.state.epoch,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "settings": config.to_dict(),
        "results": [row],
    }
    columns = [("model", "model")] + [(k, k.removeprefix("test_")) for k in row if k.startswith("test_")]
    columns += [("parameters", "parameters"), ("trained_parameters", "trained"), ("size_mb", "size (MB)")]
    columns += [(f"latency_ms_b{b}", f"latency b{b} (ms)") for b in batch_sizes]
    markdown = (
        f"# finetune report ({task})\n\n{len(raw['test'])} test examples of {data_args.dataset_name}; "
        f"labels: {', '.join(label_names)}.\n\n" + markdown_table([row], columns)
    )
    write_report(out, "report", report, markdown)

    # 5. Share: export and/or push with a model card made from the figures above.
    info = CompressionInfo(
        kind="finetuned",
        base_model=recipe.model_name_or_path,
        dataset=data_args.dataset_name,
        task_name=task.replace("_", " ").title(),
        task_type="token-classification" if task == "token_classification" else "text-classification",
        method="LoRA fine-tuning, merged" if config.use_lora else "full fine-tuning",
        settings=config.to_dict(),
        metrics=row,
        command=report["command"],
    )
    report["hub"] = {
        "model": share_variant(recipe, out / "model", info, "lora-merged" if config.use_lora else "finetuned")
    }
    if config.use_lora:  # the adapter on its own, for users who keep the base model
        adapter = dataclasses.replace(
            info, kind="adapter", method="LoRA adapter (load with peft onto the base)"
        )
        report["hub"]["adapter"] = share_variant(recipe, out / "adapter", adapter, "lora-adapter")
    if any(report["hub"].values()):
        write_report(out, "report", report, markdown)
    print("\n" + markdown + f"\nSaved the model to {out / 'model'} and the report to {out / 'report.md'}")
    return report


if __name__ == "__main__":
    run_recipe(main, "finetune")
