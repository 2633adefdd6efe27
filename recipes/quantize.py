"""Quantize a fine-tuned classifier with several methods and compare them with the fp32 model.

    accelerate launch recipes/quantize.py
    accelerate launch recipes/quantize.py --config recipes/configs/minilm/rotten_tomatoes/quantize_full.yaml
    python recipes/quantize.py --teacher_model_name_or_path outputs/distill_bert/student --methods onnx-int8-dynamic
    python recipes/quantize.py --help

Steps: load the data; load the model (fine-tuned on the task first if it has no head for these labels, saved
in <output_dir>/teacher; a model that already has its head is saved as given in <output_dir>/model);
quantize it with each of ``methods`` into <output_dir>/quantized/<method> (each written whole or not at all);
load every artifact back (plain from_pretrained for bitsandbytes and torchao, Optimum's
ORTModelForSequenceClassification for ONNX, on as many threads as PyTorch, denormals flushed to zero) and
measure validation and test accuracy, size on disk, CPU latency at each batch size (models interleaved,
median of rounds) and the peak memory of a fresh process; write <output_dir>/report.json, report.md and the
trade-off plots (PNG); export/push each artifact if asked. Quantization is inference-only: it runs in the
main process.
"""

from pathlib import Path

from transformers import TrainingArguments, set_seed

from hfcompress.configs import DataArguments, QuantizeRecipeArguments, parse_int_list
from hfcompress.data import limit_samples, load_text_classification, tokenize_dataset
from hfcompress.evaluation import classification_metrics, markdown_table
from hfcompress.evaluation.plots import plot_tradeoffs
from hfcompress.finetuning import finetuned_teacher
from hfcompress.hub import CompressionInfo
from hfcompress.modeling import load_classifier, load_tokenizer
from hfcompress.quantization import QuantizationConfig, QuantizationOptions, measure_artifacts
from hfcompress.quantization import quantize as quantize_model
from hfcompress.quantization.backends import require_backend
from hfcompress.quantization.measure import report_columns
from hfcompress.recipe import finish_recipe, report_header, run_recipe, start_recipe

CONFIG_TYPES = (QuantizeRecipeArguments, DataArguments, QuantizationOptions, TrainingArguments)
DEFAULT_CONFIG = Path(__file__).parent / "configs/minilm/rotten_tomatoes/quantize_default.yaml"


def main(argv=None) -> dict | None:
    argv, (recipe, data_args, options, args) = start_recipe(CONFIG_TYPES, DEFAULT_CONFIG, argv)
    out = Path(args.output_dir)
    set_seed(args.seed)
    configs = [QuantizationConfig(method=m, **options.to_dict()) for m in recipe.method_list]
    for config in configs:
        require_backend(config.method)  # a missing backend is reported before any work

    # 1. Data and the full-precision model (fine-tuned first when it has no head for these labels).
    raw, labels = load_text_classification(
        data_args.dataset_name, data_args.text_column, data_args.label_column
    )
    raw = limit_samples(raw, data_args.max_train_samples, data_args.max_eval_samples, args.seed)
    tokenizer = load_tokenizer(recipe.teacher_model_name_or_path)
    model, head_ready = load_classifier(recipe.teacher_model_name_or_path, labels, dataset=raw)
    batch_sizes = parse_int_list(recipe.latency_batch_sizes, "latency_batch_sizes")
    metrics = classification_metrics(data_args.metric_names, len(labels))
    data = tokenize_dataset(raw, tokenizer, data_args.max_seq_length)
    model, source = finetuned_teacher(
        recipe, data_args, args, model, head_ready, tokenizer, data, out, metrics
    )
    if source is None:  # used as given: save this model (never an older run's folder) for every method
        source = out / "model"
        model.save_pretrained(source)
        tokenizer.save_pretrained(source)

    # 2. Quantize with each method.
    artifacts = {"fp32 (PyTorch)": source}
    for config in configs:
        artifacts[config.method] = quantize_model(
            source,
            out / "quantized" / config.method,
            config,
            calibration_dataset=raw["train"],
            max_length=data_args.max_seq_length,
            overwrite=True,  # ours: the output guard already refused to run over a finished run
        )

    # 3. Load each back and measure it; latency with the models taking turns.
    splits = {s: data[s] for s in ("validation", "test")}
    rows = measure_artifacts(artifacts, "fp32 (PyTorch)", tokenizer, splits, metrics, raw["test"]["text"][:64],
                             batch_sizes, data_args.max_seq_length, runs=recipe.latency_runs)  # fmt: skip

    # 4. Report and share each artifact with a model card made from the figures above.
    plots = [str(p) for p in plot_tradeoffs(rows, out, max(batch_sizes))] if recipe.plots else []
    report = {
        **report_header("quantize", argv, data_args, raw),
        "model": recipe.teacher_model_name_or_path,
        "settings": options.to_dict(),
        "plots": plots,
        "results": rows,
    }
    markdown = (
        f"# quantize report\n\n{len(raw['test'])} test examples of {data_args.dataset_name}; CPU latency "
        f"against the fp32 PyTorch model in the same run, {rows[0]['torch_threads']} threads for PyTorch and "
        "ONNX Runtime alike. bitsandbytes on CPU saves memory, not time.\n\n"
        + markdown_table(rows, report_columns(batch_sizes))
    )
    variants = {}
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
        variants[config.method] = (artifacts[config.method], info, [config.method])
    return finish_recipe(out, recipe, report, markdown, variants, f"Artifacts in {out / 'quantized'}")


if __name__ == "__main__":
    run_recipe(main, "quantize")
