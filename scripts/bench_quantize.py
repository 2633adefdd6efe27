"""Benchmark: quantization of the fine-tuned MiniLM teacher on Rotten Tomatoes against PyTorch fp32.

    python scripts/bench_quantize.py --teacher_dir scripts/results/hidden/work/teacher   # reuse a fine-tuned teacher
    python scripts/bench_quantize.py                            # fine-tunes the teacher first (~15 min more)
    python scripts/bench_quantize.py --max_eval_samples 64 --rounds 1 --runs 2 --out /tmp/q   # smoke run

Settings: recipes/configs/minilm/rotten_tomatoes/quantize_full.yaml. Every method quantizes the same fp32
folder through ``hfcompress.quantization.quantize`` (what recipes/quantize.py runs); every artifact is loaded
back (ONNX with Optimum's ORTModelForSequenceClassification, bitsandbytes with plain from_pretrained) and
measured in this one process (ONNX through load_quantized: denormals flushed to zero, on as many intra-op
threads as PyTorch has, plus rows with ONNX Runtime's default session for comparison): validation and test
accuracy, size on disk, peak RSS of a fresh process, CPU latency at batch 1 and 32 with the models taking turns
(median of ``--rounds`` rounds of ``--runs`` timed passes). Target: ONNX Runtime int8 >= 1.7x PyTorch fp32
throughput at batch 32 with <= 0.5 points of test accuracy lost. The headline int8 variant is chosen on the
validation split by the rule in RULE, and only its test figures decide the target; every row stays in the
JSON. Also writes the k-bit (min/max) weight-error analysis per layer. Output:
<out>/quantize_benchmark.{json,md}, PNGs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import torch
from harness import (
    fine_tuned_teacher,
    fmt,
    headline,
    judge,
    machine,
    points,
    start,
    table,
    threads_line,
    write_benchmark,
)
from transformers import AutoModelForSequenceClassification

from hfcompress.data import limit_samples, load_text_classification, tokenize_dataset
from hfcompress.evaluation import classification_metrics
from hfcompress.evaluation.plots import plot_tradeoffs
from hfcompress.modeling import load_tokenizer
from hfcompress.quantization import (
    QuantizationConfig,
    kbit_error_report,
    measure_artifacts,
    quantize,
)
from hfcompress.quantization.backends import method_available

CONFIG = Path(__file__).resolve().parents[1] / "recipes/configs/minilm/rotten_tomatoes/quantize_full.yaml"

# name -> QuantizationConfig fields on top of the config's options
VARIANTS = {
    "onnx-fp32": dict(method="onnx-fp32"),
    "onnx-int8-dynamic (avx512_vnni)": dict(method="onnx-int8-dynamic", preset="avx512_vnni"),
    "onnx-int8-dynamic (avx512_vnni per-channel)": dict(
        method="onnx-int8-dynamic", preset="avx512_vnni", per_channel=True
    ),
    "onnx-int8-dynamic (avx2)": dict(method="onnx-int8-dynamic", preset="avx2"),
    "onnx-int8-static (avx512_vnni minmax)": dict(method="onnx-int8-static", preset="avx512_vnni"),
    "onnx-int8-static (avx512_vnni minmax per-channel)": dict(
        method="onnx-int8-static", preset="avx512_vnni", per_channel=True
    ),
    "bnb-int8": dict(method="bnb-int8"),
    "bnb-nf4": dict(method="bnb-nf4"),
    "torchao-int8": dict(method="torchao-int8"),
}
# name -> the variant whose artifact it loads with ONNX Runtime's default session options (denormals kept),
# to show what flushing denormals to zero (load_quantized's default) is worth
DEFAULT_SESSION = {
    "onnx-fp32 (default ORT session)": "onnx-fp32",
    "onnx-int8-dynamic (avx512_vnni per-channel; default ORT session)": "onnx-int8-dynamic (avx512_vnni per-channel)",
}
BASELINE = "fp32 (PyTorch)"
SPEED_TARGET, LOSS_TARGET = 1.7, 0.5
RULE = (
    "among the ONNX Runtime int8 variants (load_quantized session), the one that loses least validation "
    "accuracy against PyTorch fp32; ties go to the higher batch-32 speed-up"
)


def layer_kind(name: str) -> str:
    """'attention.self.query' etc. without the layer index, for averaging the k-bit errors."""
    parts = name.split(".")
    return ".".join(p for p in parts if not p.isdigit() and p not in ("bert", "encoder", "layer"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--out", default="scripts/results/quantization")
    parser.add_argument("--teacher_dir", default=None, help="an already fine-tuned model (skips fine-tuning)")
    parser.add_argument(
        "--variants",
        default=None,
        help="comma-separated; default: every variant whose backend this environment has (torchao-int8 needs "
        "transformers 5, the ONNX ones Optimum ONNX Runtime, which needs transformers 4.57: make bench-torchao)",
    )
    parser.add_argument("--max_eval_samples", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=10)
    opts = parser.parse_args()
    if opts.variants is None:
        variants = [v for v in VARIANTS if method_available(VARIANTS[v]["method"])]
        variants += [v for v, base in DEFAULT_SESSION.items() if base in variants]
    else:
        variants = [v.strip() for v in opts.variants.split(",")]
    if any(v not in VARIANTS and v not in DEFAULT_SESSION for v in variants):
        parser.error(f"variants are {', '.join([*VARIANTS, *DEFAULT_SESSION])}")
    overrides = ["--output_dir", str(Path(opts.out) / "work")]
    if opts.max_eval_samples:
        overrides += ["--max_eval_samples", str(opts.max_eval_samples)]
    recipe, data_args, options, args = start("quantize", opts.config, overrides)
    # PyTorch gets denormals flushed too (as ONNX Runtime does through load_quantized): a fair baseline
    torch.set_flush_denormal(True)
    work = Path(args.output_dir)
    raw, label_names = load_text_classification(
        data_args.dataset_name, data_args.text_column, data_args.label_column
    )
    raw = limit_samples(raw, data_args.max_train_samples, data_args.max_eval_samples, args.seed)
    tokenizer = load_tokenizer(opts.teacher_dir or recipe.teacher_model_name_or_path)
    data = tokenize_dataset(raw, tokenizer, data_args.max_seq_length)
    compute_metrics = classification_metrics(data_args.metric_names, len(label_names))
    _, source, teacher_record = fine_tuned_teacher(
        opts.teacher_dir, recipe, data_args, args, label_names, tokenizer, data, work, compute_metrics
    )

    artifacts = {BASELINE: source}
    quantized = [v for v in VARIANTS if v in variants or v in {DEFAULT_SESSION.get(n) for n in variants}]
    for name in quantized:
        config = QuantizationConfig(**{**options.to_dict(), **VARIANTS[name]})
        folder = work / name.replace(" ", "_").replace("(", "").replace(")", "").replace(",", "")
        artifacts[name] = quantize(
            source,
            folder,
            config,
            calibration_dataset=raw["train"],
            max_length=data_args.max_seq_length,
            overwrite=True,
        )
    for name in [v for v in variants if v in DEFAULT_SESSION]:
        artifacts[name] = artifacts[DEFAULT_SESSION[name]]
    artifacts = {name: artifacts[name] for name in [BASELINE, *variants]}
    texts = list(raw["validation"]["text"][:64])  # latency and memory inputs: validation text
    rows = measure_artifacts(
        artifacts,
        BASELINE,
        tokenizer,
        {"validation": data["validation"], "test": data["test"]},
        compute_metrics,
        texts,
        [1, 32],
        data_args.max_seq_length,
        rounds=opts.rounds,
        runs=opts.runs,
        load_kwargs={name: {"denormal_as_zero": False} for name in DEFAULT_SESSION},
    )
    plots = plot_tradeoffs(rows, opts.out, 32)

    # k-bit analysis of the fp32 weights: mean relative error per kind of layer, and the most sensitive layers.
    errors = kbit_error_report(AutoModelForSequenceClassification.from_pretrained(source))
    by_kind = defaultdict(lambda: defaultdict(list))
    for name, per_bits in errors.items():
        for bits, value in per_bits.items():
            by_kind[layer_kind(name)][bits].append(value)
    kbit_rows = [
        {"layer": kind, **{f"{b} bits": statistics.mean(v) for b, v in per_bits.items()}}
        for kind, per_bits in sorted(by_kind.items())
    ]

    target = judge(
        rows,
        RULE,
        eligible=lambda r: r["model"].startswith("onnx-int8") and r["model"] not in DEFAULT_SESSION,
        key=lambda r: (r["validation_accuracy_delta_points"], r["speedup_b32"]),
        target=f"ONNX Runtime int8 >= {SPEED_TARGET}x PyTorch fp32 at batch 32, <= {LOSS_TARGET} points of "
        "test accuracy lost",
        delta_key="test_accuracy_delta_points",
        speed_target=SPEED_TARGET,
        loss_target=LOSS_TARGET,
    )
    result = {
        "benchmark": "quantize",
        "command": " ".join(sys.argv),
        "source": str(source),
        "teacher_record": teacher_record,
        "validation_examples": len(raw["validation"]),
        "test_examples": len(raw["test"]),
        "settings": options.to_dict(),
        "machine": machine(),
        "latency": {"rounds": opts.rounds, "runs": opts.runs, "max_length": data_args.max_seq_length},
        "target": target,
        "results": rows,
        "kbit_errors_by_layer_kind": kbit_rows,
        "kbit_errors": errors,
        "plots": [str(p) for p in plots],
    }
    print(write_benchmark(opts.out, "quantize_benchmark", result, render))


def render(data: dict) -> str:
    rows = data["results"]
    columns = [("model", "method", str)]
    if "validation_accuracy" in rows[0]:
        columns += [("validation_accuracy", "val acc", fmt)]
    columns += [
        ("test_accuracy", "test acc", fmt),
        ("accuracy_delta_points", "Δ test (pts)", points),
        ("size_mb", "size MB", fmt),
        ("peak_rss_mb", "peak RSS MB", fmt),
        ("latency_ms_b1", "b1 ms", fmt),
        ("speedup_b1", "speed-up b1", fmt),
        ("latency_ms_b32", "b32 ms", fmt),
        ("speedup_b32", "speed-up b32", fmt),
    ]
    if "ort_intra_op_threads" in rows[0]:
        columns.append(("ort_intra_op_threads", "ORT threads", fmt))
    return threads_line(data) + "\n" + table(rows, columns) + headline(data)


if __name__ == "__main__":
    main()
