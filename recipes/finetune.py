"""Fine-tune a pretrained model on a new task: full, with frozen layers, LoRA or QLoRA; evaluate; save; report.

    accelerate launch recipes/finetune.py
    accelerate launch recipes/finetune.py --config recipes/configs/minilm/rotten_tomatoes/finetune_lora.yaml
    accelerate launch recipes/finetune.py --task_type multi_label_classification --dataset_name my.jsonl ...
    python recipes/finetune.py --help

Task types: single-label, multi-label (the label column holds lists) and token classification (the text column
holds word lists, the label column one tag per word). The model gets a new head with the dataset's label
names (id2label/label2id). With early_stopping_patience the run stops when the validation metric stops
improving and keeps the best checkpoint. LoRA/QLoRA adapters are saved in <output_dir>/adapter and merged
(merge_and_unload, onto a full-precision base) into <output_dir>/model, a plain model any compression recipe
can start from. Writes <output_dir>/report.json and report.md. Bad input stops the run before anything is
written. The compression recipes' teacher stage runs the same ``hfcompress.finetuning.finetune``.
"""

import dataclasses
from pathlib import Path

from transformers import (
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    TrainingArguments,
    set_seed,
)

from hfcompress import FinetuneConfig
from hfcompress.configs import DataArguments, FinetuneRecipeArguments, parse_int_list
from hfcompress.data import (
    limit_samples,
    load_task_data,
    task_collator,
    tokenize_dataset,
    tokenize_token_dataset,
)
from hfcompress.evaluation import compare_models, markdown_table, task_metrics
from hfcompress.finetuning import check_early_stopping, finetune, load_qlora_base, save_finetuned
from hfcompress.hub import CompressionInfo
from hfcompress.modeling import load_classifier, load_tokenizer
from hfcompress.recipe import finish_recipe, report_header, run_recipe, start_recipe

CONFIG_TYPES = (FinetuneRecipeArguments, DataArguments, FinetuneConfig, TrainingArguments)
DEFAULT_CONFIG = Path(__file__).parent / "configs/minilm/rotten_tomatoes/finetune_default.yaml"


def main(argv=None) -> dict | None:
    argv, (recipe, data_args, config, args) = start_recipe(CONFIG_TYPES, DEFAULT_CONFIG, argv)
    out, task = Path(args.output_dir), recipe.task_type
    check_early_stopping(config, args)  # before any work
    set_seed(args.seed)

    # 1. Data and model; every check that can fail on bad input happens here, before anything is written.
    tokenizer = load_tokenizer(recipe.model_name_or_path)
    raw, labels = load_task_data(task, data_args.dataset_name, data_args.text_column, data_args.label_column)
    raw = limit_samples(raw, data_args.max_train_samples, data_args.max_eval_samples, args.seed)
    tokenize = tokenize_token_dataset if task == "token_classification" else tokenize_dataset
    data = tokenize(raw, tokenizer, data_args.max_seq_length)
    metrics = task_metrics(task, data_args.metric_names, len(labels))
    if config.qlora:
        model = load_qlora_base(recipe.model_name_or_path, labels, task)
    else:
        model, _ = load_classifier(recipe.model_name_or_path, labels, task, dataset=raw)
    batch_sizes = parse_int_list(recipe.latency_batch_sizes, "latency_batch_sizes")

    # 2. Fine-tune (freezing / LoRA as configured; early stopping keeps the best checkpoint).
    trainer = finetune(
        model, tokenizer, data["train"], data["validation"], args, config, metrics, task_type=task
    )
    if not trainer.is_world_process_zero():
        return None

    # 3. Save a plain model: LoRA adapters merged onto a full-precision copy of the base.
    trained_parameters = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    save_finetuned(
        trainer, tokenizer, config, out, lambda: load_classifier(recipe.model_name_or_path, labels, task)[0]
    )

    # 4. Evaluate the saved model (as anyone loading it gets it) on validation and test.
    auto = (
        AutoModelForTokenClassification
        if task == "token_classification"
        else AutoModelForSequenceClassification
    )
    final = auto.from_pretrained(out / "model")
    name = Path(recipe.model_name_or_path).name + (" + LoRA (merged)" if config.use_lora else "")
    texts = [t if isinstance(t, str) else " ".join(t) for t in raw["test"]["text"][:64]]
    [row] = compare_models([(name, final, out / "model", data, tokenizer)], metrics, texts, batch_sizes,
                           data_args.max_seq_length, recipe.latency_runs, collator_for=lambda t: task_collator(t, task))  # fmt: skip
    row["trained_parameters"] = trained_parameters
    report = {
        **report_header("finetune", argv, data_args, raw),
        "model": recipe.model_name_or_path,
        "task_type": task,
        "labels": labels,
        "epochs_run": trainer.state.epoch,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "settings": config.to_dict(),
        "results": [row],
    }
    columns = [("model", "model")] + [
        (k, k.replace("_", " ")) for k in row if k.startswith(("validation_", "test_"))
    ]
    columns += [("parameters", "parameters"), ("trained_parameters", "trained"), ("size_mb", "size (MB)")]
    columns += [(f"latency_ms_b{b}", f"latency b{b} (ms)") for b in batch_sizes] + [
        ("torch_threads", "threads")
    ]
    markdown = (
        f"# finetune report ({task})\n\n{len(raw['test'])} test examples of {data_args.dataset_name}; "
        f"labels: {', '.join(labels)}.\n\n" + markdown_table([row], columns)
    )

    # 5. Report and share: the merged model, and the LoRA adapter on its own for users who keep the base.
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
    variants = {"model": (out / "model", info, ["lora-merged" if config.use_lora else "finetuned"])}
    if config.use_lora:
        adapter = dataclasses.replace(
            info, kind="adapter", method="LoRA adapter (load with peft onto the base)"
        )
        variants["adapter"] = (out / "adapter", adapter, ["lora-adapter"])
    return finish_recipe(out, recipe, report, markdown, variants, f"Saved the model to {out / 'model'}")


if __name__ == "__main__":
    run_recipe(main, "finetune")
