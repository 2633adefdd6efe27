"""Prune a fine-tuned BERT-family model, recovering accuracy by distillation from the unpruned model.

    accelerate launch recipes/prune_bert.py
    accelerate launch recipes/prune_bert.py --config recipes/configs/minilm/rotten_tomatoes/prune_structured_full.yaml
    accelerate launch recipes/prune_bert.py --config recipes/configs/minilm/rotten_tomatoes/prune_unstructured_80.yaml

Steps: load the data; load the teacher and fine-tune it on the task if it has no head for these labels (saved in
<output_dir>/teacher, reused by later runs); then either
- structured: for each of num_iterations steps, remove the lowest-scoring layers, heads and FFN neurons and
  shrink the matrices, then recover by distilling from the unpruned teacher for num_train_epochs; or
- unstructured: distil from the teacher while PruningCallback zeroes weights on its schedule;
evaluate teacher and pruned model on the test split; save the pruned model to <output_dir>/pruned (plain
from_pretrained loads it); write <output_dir>/report.json and report.md. Bad input stops the run before anything
is written.
"""

import copy
import logging
from pathlib import Path

from transformers import set_seed

from hfcompress import count_parameters
from hfcompress.configs import parse_int_list
from hfcompress.data import DistillationDataCollator, load_text_classification, tokenize_dataset
from hfcompress.distillation.trainer import resolve_layer_maps
from hfcompress.evaluation import markdown_table, write_report
from hfcompress.finetune import load_classifier, load_tokenizer
from hfcompress.hub import CompressionInfo
from hfcompress.metrics import classification_metrics
from hfcompress.pipeline import (
    finetuned_teacher,
    limit_samples,
    measure_model,
    prune_and_recover,
    report_columns,
    run_recipe,
    share_variant,
    start_recipe,
)
from hfcompress.pruning import prunable_linears, structure, structured_targets

logger = logging.getLogger("prune_bert")
DEFAULT_CONFIG = Path(__file__).parent / "configs/minilm/rotten_tomatoes/prune_default.yaml"


def main(argv=None) -> dict | None:
    argv, (recipe, data_args, args, unstructured, structured) = start_recipe("prune", DEFAULT_CONFIG, argv)
    out = Path(args.output_dir)
    set_seed(args.seed)

    # 1. Data and teacher; every check that can fail on bad input happens here, before anything is written.
    raw, label_names = load_text_classification(
        data_args.dataset_name, data_args.text_column, data_args.label_column
    )
    raw = limit_samples(raw, data_args.max_train_samples, data_args.max_eval_samples, args.seed)
    tokenizer = load_tokenizer(recipe.teacher_model_name_or_path)
    teacher, head_ready = load_classifier(recipe.teacher_model_name_or_path, label_names)
    if recipe.pruning == "structured":
        targets = structured_targets(teacher, structured)  # refuses impossible settings up front
        depth = targets[-1]["num_layers"]
    else:
        prunable_linears(teacher, unstructured.target_modules)  # refuses patterns that match nothing
        depth = teacher.config.num_hidden_layers
    resolve_layer_maps(args, depth, teacher.config.num_hidden_layers)
    batch_sizes = parse_int_list(recipe.latency_batch_sizes, "latency_batch_sizes")
    compute_metrics = classification_metrics(data_args.metric_names, len(label_names))
    data = tokenize_dataset(raw, tokenizer, data_args.max_seq_length)
    collator = DistillationDataCollator(tokenizer)

    # 2. Teacher: fine-tuned on the task first unless it already is (transfer learning).
    teacher = finetuned_teacher(
        recipe, data_args, args, teacher, head_ready, label_names, tokenizer, data, out, compute_metrics
    )
    model = copy.deepcopy(teacher)

    # 3. Prune, recovering by distillation from the unpruned teacher.
    config = structured if recipe.pruning == "structured" else unstructured
    model, trainer, details = prune_and_recover(
        model, teacher, config, args, data, tokenizer, compute_metrics, out
    )
    trainer.save_model(str(out / "pruned"))
    if not trainer.is_world_process_zero():
        return None

    # 4. Evaluate both on the held-out test split and report.
    measure = dict(
        texts=raw["test"]["text"][:64],
        batch_sizes=batch_sizes,
        max_length=data_args.max_seq_length,
        runs=recipe.latency_runs,
    )
    teacher_dir = out / "teacher" if (out / "teacher").exists() else None
    rows = [
        {
            "model": "teacher",
            **measure_model(
                teacher, teacher_dir, tokenizer, data["test"], collator, compute_metrics, **measure
            ),
        },
        {
            "model": f"pruned ({recipe.pruning})",
            **measure_model(
                model, out / "pruned", tokenizer, data["test"], collator, compute_metrics, **measure
            ),
        },
    ]
    gain = (
        "Structured pruning removed whole heads, neurons or layers: the model is smaller and faster."
        if recipe.pruning == "structured"
        else "Unstructured pruning zeroes single weights: the file compresses, but dense kernels run no faster."
    )
    report = {
        "recipe": "prune_bert",
        "command": " ".join(["recipes/prune_bert.py", *argv]),
        "teacher": recipe.teacher_model_name_or_path,
        "pruning": recipe.pruning,
        "dataset": data_args.dataset_name,
        "train_examples": len(raw["train"]),
        "test_examples": len(raw["test"]),
        "parameters_kept": count_parameters(model) / count_parameters(teacher),
        "details": details,
        "results": rows,
    }
    markdown = (
        f"# prune_bert report ({recipe.pruning})\n\n{len(raw['test'])} test examples of "
        f"{data_args.dataset_name}. {gain}\n\n" + markdown_table(rows, report_columns(batch_sizes))
    )
    write_report(out, "report", report, markdown)

    # 5. Share: export and/or push with a model card made from the figures above.
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
    report["hub"] = share_variant(recipe, out / "pruned", info, "pruned", *suffix)
    if report["hub"]:
        write_report(out, "report", report, markdown)
    print(
        "\n"
        + markdown
        + f"\nSaved the pruned model to {out / 'pruned'} and the report to {out / 'report.md'}"
    )
    return report


if __name__ == "__main__":
    run_recipe(main, "prune_bert")
