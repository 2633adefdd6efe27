"""Quantize a fine-tuned classifier with several methods and compare them with the fp32 model.

    accelerate launch recipes/quantize.py
    accelerate launch recipes/quantize.py --config recipes/configs/minilm/rotten_tomatoes/quantize_full.yaml
    python recipes/quantize.py --teacher_model_name_or_path outputs/distill_bert/student --methods onnx-int8-dynamic

Steps: load the data; load the model (fine-tuned on the task first if it has no head for these labels, saved
in <output_dir>/teacher); quantize it with each of ``methods`` into <output_dir>/quantized/<method> (each
written whole or not at all); load every artifact back (plain from_pretrained for bitsandbytes and torchao,
Optimum's ORTModelForSequenceClassification for ONNX, denormals flushed to zero) and measure test accuracy, size on disk, CPU latency at each batch
size (models interleaved, median of rounds), and the peak memory of a fresh process; write
<output_dir>/report.json, report.md and the trade-off plots (PNG). Quantization is inference-only: it runs
in the main process.
"""

import logging
from pathlib import Path

from transformers import set_seed

from hfcompress.configs import parse_int_list
from hfcompress.data import load_text_classification, tokenize_dataset
from hfcompress.evaluation import (
    markdown_table,
    write_report,
)
from hfcompress.finetune import load_classifier, load_tokenizer
from hfcompress.hub import CompressionInfo
from hfcompress.metrics import classification_metrics
from hfcompress.pipeline import (
    finetuned_teacher,
    limit_samples,
    run_recipe,
    share_variant,
    start_recipe,
)
from hfcompress.quantization import QuantizationConfig, measure_artifacts, plot_tradeoffs, quantize
from hfcompress.quantization.backends import require_backend
from hfcompress.quantization.measure import report_columns

logger = logging.getLogger("quantize")
DEFAULT_CONFIG = Path(__file__).parent / "configs/minilm/rotten_tomatoes/quantize_default.yaml"


def main(argv=None) -> dict | None:
    argv, (recipe, data_args, options, args) = start_recipe("quantize", DEFAULT_CONFIG, argv)
    out = Path(args.output_dir)
    set_seed(args.seed)
    configs = [QuantizationConfig(method=m, **options.to_dict()) for m in recipe.method_list]
    for config in configs:
        require_backend(config.method)  # a missing backend is reported before any work

    # 1. Data and the full-precision model (fine-tuned first when it has no head for these labels).
    raw, label_names = load_text_classification(
        data_args.dataset_name, data_args.text_column, data_args.label_column
    )
    raw = limit_samples(raw, data_args.max_train_samples, data_args.max_eval_samples, args.seed)
    tokenizer = load_tokenizer(recipe.teacher_model_name_or_path)
    model, head_ready = load_classifier(recipe.teacher_model_name_or_path, label_names)
    batch_sizes = parse_int_list(recipe.latency_batch_sizes, "latency_batch_sizes")
    compute_metrics = classification_metrics(data_args.metric_names, len(label_names))
    data = tokenize_dataset(raw, tokenizer, data_args.max_seq_length)
    model = finetuned_teacher(
        recipe, data_args, args, model, head_ready, label_names, tokenizer, data, out, compute_metrics
    )
    source = out / "teacher"
    if not source.exists():  # already fine-tuned: save it once so every method starts from the same folder
        model.save_pretrained(source)
        tokenizer.save_pretrained(source)

    # 2. Quantize with each method.
    artifacts = {"fp32 (PyTorch)": source}
    for config in configs:
        logger.info("Quantizing with %s", config.method)
        artifacts[config.method] = quantize(
            source,
            out / "quantized" / config.method,
            config,
            calibration_dataset=raw["train"],
            max_length=data_args.max_seq_length,
            overwrite=True,  # ours: guard_output_dir already refused to run over a finished run
        )

    # 3. Load each back and measure it; latency with the models taking turns.
    texts = list(raw["test"]["text"][:64])
    rows = measure_artifacts(
        artifacts,
        "fp32 (PyTorch)",
        tokenizer,
        data["test"],
        compute_metrics,
        texts,
        batch_sizes,
        data_args.max_seq_length,
        runs=recipe.latency_runs,
    )

    # 4. Report.
    plots = [str(p) for p in plot_tradeoffs(rows, out, max(batch_sizes))] if recipe.plots else []
    report = {
        "recipe": "quantize",
        "command": " ".join(["recipes/quantize.py", *argv]),
        "model": recipe.teacher_model_name_or_path,
        "dataset": data_args.dataset_name,
        "test_examples": len(raw["test"]),
        "settings": options.to_dict(),
        "plots": plots,
        "results": rows,
    }
    markdown = (
        f"# quantize report\n\n{len(raw['test'])} test examples of {data_args.dataset_name}; CPU latency "
        "against the fp32 PyTorch model in the same run. bitsandbytes on CPU saves memory, not time.\n\n"
        + markdown_table(rows, report_columns(batch_sizes))
    )
    write_report(out, "report", report, markdown)

    # 5. Share each artifact: export and/or push with a model card made from the figures above.
    report["hub"] = {}
    for config, row in zip(configs, rows[1:]):
        info = CompressionInfo(
            kind="onnx" if config.method.startswith("onnx") else "quantized",
            base_model=recipe.teacher_model_name_or_path,
            dataset=data_args.dataset_name,
            method=config.method,
            settings=config.to_dict(),
            metrics=row,
            reference=rows[0],
            command=report["command"],
        )
        report["hub"][config.method] = share_variant(recipe, artifacts[config.method], info, config.method)
    if any(report["hub"].values()):
        write_report(out, "report", report, markdown)
    print("\n" + markdown + f"\nArtifacts in {out / 'quantized'}; report in {out / 'report.md'}")
    return report


if __name__ == "__main__":
    run_recipe(main, "quantize")
