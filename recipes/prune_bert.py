"""Prune a fine-tuned BERT-family model, recovering accuracy by distillation from the unpruned model.

    accelerate launch recipes/prune_bert.py
    accelerate launch recipes/prune_bert.py --config recipes/configs/minilm/rotten_tomatoes/prune_structured_full.yaml
    accelerate launch recipes/prune_bert.py --config recipes/configs/minilm/rotten_tomatoes/prune_unstructured_full.yaml
    python recipes/prune_bert.py --help

Steps: load the data; load the teacher and fine-tune it on the task if it has no head for these labels (saved
in <output_dir>/teacher, reused by later runs); then either
- structured: for each of num_iterations steps, remove the lowest-scoring layers, heads and FFN neurons and
  shrink the matrices, then recover by distilling from the unpruned teacher for a share of num_train_epochs; or
- unstructured: distil from the teacher while PruningCallback zeroes weights on its schedule;
evaluate teacher and pruned model on the validation and test splits (latency interleaved); save the pruned
model to <output_dir>/pruned (plain from_pretrained loads it); write <output_dir>/report.json and report.md;
export/push it if asked. Bad input stops the run before anything is written.
"""

import copy
from pathlib import Path

from transformers import set_seed

from hfcompress import DistillationConfig, PruningConfig, StructuredPruningConfig
from hfcompress.configs import DataArguments, PruneRecipeArguments, parse_int_list
from hfcompress.data import (
    limit_samples,
    load_text_classification,
    tokenize_dataset,
)
from hfcompress.distillation import resolve_layer_maps
from hfcompress.evaluation import classification_metrics, compare_models, markdown_table, report_columns
from hfcompress.finetuning import finetuned_teacher
from hfcompress.hub import CompressionInfo
from hfcompress.modeling import count_parameters, load_classifier, load_tokenizer
from hfcompress.pruning import prunable_linears, prune_and_recover, structure, structured_targets
from hfcompress.recipe import finish_recipe, report_header, run_recipe, start_recipe

CONFIG_TYPES = (
    PruneRecipeArguments,
    DataArguments,
    DistillationConfig,
    PruningConfig,
    StructuredPruningConfig,
)
DEFAULT_CONFIG = Path(__file__).parent / "configs/minilm/rotten_tomatoes/prune_default.yaml"


def main(argv=None) -> dict | None:
    argv, (recipe, data_args, args, unstructured, structured) = start_recipe(
        CONFIG_TYPES, DEFAULT_CONFIG, argv
    )
    out = Path(args.output_dir)
    set_seed(args.seed)

    # 1. Data and teacher; every check that can fail on bad input happens here, before anything is written.
    raw, labels = load_text_classification(
        data_args.dataset_name, data_args.text_column, data_args.label_column
    )
    raw = limit_samples(raw, data_args.max_train_samples, data_args.max_eval_samples, args.seed)
    tokenizer = load_tokenizer(recipe.teacher_model_name_or_path)
    teacher, head_ready = load_classifier(recipe.teacher_model_name_or_path, labels, dataset=raw)
    if recipe.pruning == "structured":
        depth = structured_targets(teacher, structured)[-1]["num_layers"]  # refuses impossible settings
    else:
        prunable_linears(teacher, unstructured.target_modules)  # refuses patterns that match nothing
        depth = teacher.config.num_hidden_layers
    resolve_layer_maps(args, depth, teacher.config.num_hidden_layers)
    batch_sizes = parse_int_list(recipe.latency_batch_sizes, "latency_batch_sizes")
    metrics = classification_metrics(data_args.metric_names, len(labels))
    data = tokenize_dataset(raw, tokenizer, data_args.max_seq_length)

    # 2. Teacher: fine-tuned on the task first unless it already is (transfer learning).
    teacher, teacher_dir = finetuned_teacher(
        recipe, data_args, args, teacher, head_ready, tokenizer, data, out, metrics
    )

    # 3. Prune, recovering by distillation from the unpruned teacher.
    config = structured if recipe.pruning == "structured" else unstructured
    model, trainer, details = prune_and_recover(
        copy.deepcopy(teacher), teacher, config, args, data, tokenizer, metrics, out
    )
    trainer.save_model(str(out / "pruned"))
    if not trainer.is_world_process_zero():
        return None

    # 4. Evaluate both on validation and test; latency with the models taking turns.
    entries = [("teacher", teacher, teacher_dir, data, tokenizer),
               (f"pruned ({recipe.pruning})", model, out / "pruned", data, tokenizer)]  # fmt: skip
    rows = compare_models(entries, metrics, raw["test"]["text"][:64], batch_sizes, data_args.max_seq_length,
                          recipe.latency_runs)  # fmt: skip
    gain = (
        "Structured pruning removed whole heads, neurons or layers: the model is smaller and faster."
        if recipe.pruning == "structured"
        else "Unstructured pruning zeroes single weights: the file compresses, but dense kernels run no faster."
    )
    report = {
        **report_header("prune_bert", argv, data_args, raw),
        "teacher": recipe.teacher_model_name_or_path,
        "pruning": recipe.pruning,
        "parameters_kept": count_parameters(model) / count_parameters(teacher),
        "details": details,
        "results": rows,
    }
    markdown = (
        f"# prune_bert report ({recipe.pruning})\n\n{len(raw['test'])} test examples of "
        f"{data_args.dataset_name}; latency on {rows[0]['torch_threads']} CPU threads, models interleaved. "
        f"{gain}\n\n" + markdown_table(rows, report_columns(batch_sizes))
    )

    # 5. Report and share: export and/or push with a model card made from the figures above.
    final = structure(model) if recipe.pruning == "structured" else None
    suffix = (
        [f"{final['num_layers']}L", f"ffn{final['intermediate_size']}"]
        if final
        else [f"sparse{round(100 * unstructured.target_sparsity)}"]
    )
    info = CompressionInfo(
        kind="pruned",
        base_model=recipe.teacher_model_name_or_path,
        dataset=data_args.dataset_name,
        method=f"{recipe.pruning} pruning, recovered by distillation from the unpruned model",
        settings=details["config"],
        teacher=f"{recipe.teacher_model_name_or_path} (fine-tuned, unpruned)",
        metrics=rows[1],
        reference=rows[0],
        command=report["command"],
    )
    variants = {"pruned": (out / "pruned", info, ["pruned", *suffix])}
    return finish_recipe(
        out, recipe, report, markdown, variants, f"Saved the pruned model to {out / 'pruned'}"
    )


if __name__ == "__main__":
    run_recipe(main, "prune_bert")
