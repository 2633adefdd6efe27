"""Benchmark: quantization-aware training against post-training ONNX Runtime dynamic int8, on the fine-tuned
MiniLM teacher and Rotten Tomatoes.

    python scripts/bench_qat.py --teacher_dir scripts/results/hidden/work/teacher --seeds 42,43,44
    python scripts/bench_qat.py --teacher_dir DIR --max_train_samples 64 --max_eval_samples 64 --out /tmp/qat  # smoke

From the same fine-tuned teacher: (a) post-training quantization (PTQ) as it is; (b) a control, fine-tuned
``--num_train_epochs`` more without QAT, then PTQ; (c) the same fine-tuning with ``QuantizationAwareCallback``
(per tensor and per channel), then the same ONNX Runtime dynamic int8. Every model is measured on the test
split in fp32 (PyTorch) and as int8 (ONNX Runtime through ``load_quantized``); Δ is against the teacher in
fp32. The control separates what QAT does from what more fine-tuning does. With several ``--seeds`` the
fine-tuned variants are trained once per seed and reported by their median. Output:
<out>/qat_benchmark.{json,md}.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from pathlib import Path

import torch
import transformers
from harness import fmt, points, table, write_benchmark
from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

from hfcompress.data import (
    DistillationDataCollator,
    limit_samples,
    load_text_classification,
    tokenize_dataset,
)
from hfcompress.evaluation import classification_metrics, evaluate_model
from hfcompress.modeling import load_tokenizer
from hfcompress.quantization import load_quantized, quantize
from hfcompress.quantization.qat import QuantizationAwareCallback
from hfcompress.runtime import configure_cpu_threads


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher_dir", required=True, help="the fine-tuned fp32 model")
    parser.add_argument("--out", default="scripts/results/qat")
    parser.add_argument("--dataset_name", default="rotten_tomatoes_snippets")
    parser.add_argument("--max_seq_length", type=int, default=64)
    parser.add_argument("--max_train_samples", type=int, default=4000)
    parser.add_argument("--max_eval_samples", type=int, default=None)
    parser.add_argument("--num_train_epochs", type=float, default=1.0)
    parser.add_argument("--learning_rate", type=float, default=2e-5)
    parser.add_argument("--seeds", default="42", help="comma-separated training seeds")
    opts = parser.parse_args()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    configure_cpu_threads()
    transformers.utils.logging.set_verbosity_warning()

    out, teacher = Path(opts.out), Path(opts.teacher_dir)
    work = out / "work"
    raw, label_names = load_text_classification(opts.dataset_name, "text", "label")
    seeds = [int(s) for s in opts.seeds.split(",")]
    raw = limit_samples(raw, opts.max_train_samples, opts.max_eval_samples, seeds[0])
    tokenizer = load_tokenizer(teacher)
    data = tokenize_dataset(raw, tokenizer, opts.max_seq_length)
    collator = DistillationDataCollator(tokenizer)
    compute_metrics = classification_metrics(["accuracy"], len(label_names))

    def accuracy(model) -> float:
        return evaluate_model(model, data["test"], collator, compute_metrics)["accuracy"]

    def train(name: str, callback, seed: int) -> Path:
        model = AutoModelForSequenceClassification.from_pretrained(teacher)
        args = TrainingArguments(
            output_dir=str(work / name / "trainer"),
            num_train_epochs=opts.num_train_epochs,
            learning_rate=opts.learning_rate,
            per_device_train_batch_size=32,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            seed=seed,
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=data["train"],
            data_collator=collator,
            callbacks=[callback] if callback else [],
        )
        trainer.train()
        model.save_pretrained(work / name / "model")
        tokenizer.save_pretrained(work / name / "model")
        return work / name / "model"

    # name -> (fp32 model, callback to train with: None for the teacher as it is, "plain" for the control)
    plans = {
        "PTQ, per tensor": ("teacher", None, False),
        "PTQ, per channel": ("teacher", None, True),
        "control fine-tune + PTQ, per tensor": ("control", "plain", False),
        "control fine-tune + PTQ, per channel": ("control", "plain", True),
        "QAT per tensor + PTQ, per tensor": (
            "qat-tensor",
            QuantizationAwareCallback(per_channel=False),
            False,
        ),
        "QAT per channel + PTQ, per channel": (
            "qat-channel",
            QuantizationAwareCallback(per_channel=True),
            True,
        ),
    }
    reference = accuracy(AutoModelForSequenceClassification.from_pretrained(teacher))
    runs, fp32_accuracy, folders = [], {}, {}
    for seed in seeds:
        for name, (model_name, callback, per_channel) in plans.items():
            if callback is None and seed != seeds[0]:
                continue  # the teacher as it is does not depend on the seed
            key = model_name if callback is None else f"{model_name}-seed{seed}"
            if key not in folders:
                folders[key] = (
                    teacher
                    if callback is None
                    else train(key, None if callback == "plain" else callback, seed)
                )
                fp32_accuracy[key] = accuracy(
                    AutoModelForSequenceClassification.from_pretrained(folders[key])
                )
            tag = "per-channel" if per_channel else "per-tensor"
            int8 = quantize(
                folders[key], work / key / f"int8-{tag}", method="onnx-int8-dynamic", per_channel=per_channel,
                overwrite=True,
            )  # fmt: skip
            int8_accuracy = accuracy(load_quantized(int8))
            runs.append(
                {
                    "variant": name,
                    "seed": None if callback is None else seed,
                    "fp32_accuracy": fp32_accuracy[key],
                    "int8_accuracy": int8_accuracy,
                }
            )
    rows = []
    for name in plans:
        mine = [r for r in runs if r["variant"] == name]
        fp32 = statistics.median(r["fp32_accuracy"] for r in mine)
        int8 = statistics.median(r["int8_accuracy"] for r in mine)
        rows.append(
            {
                "variant": name,
                "seeds": len(mine),
                "fp32_accuracy": fp32,
                "int8_accuracy": int8,
                "int8_delta_points": 100 * (int8 - reference),
                "int8_per_seed": ", ".join(f"{r['int8_accuracy']:.4f}" for r in mine),
            }
        )
    result = {
        "benchmark": "qat",
        "command": " ".join(sys.argv),
        "teacher": str(teacher),
        "teacher_fp32_accuracy": reference,
        "train_examples": len(raw["train"]),
        "test_examples": len(raw["test"]),
        "settings": vars(opts),
        "torch": torch.__version__,
        "results": rows,
        "runs": runs,
    }
    print(write_benchmark(out, "qat_benchmark", result, render))


def render(data: dict) -> str:
    teacher = data["teacher_fp32_accuracy"]
    rows = []
    deltas = []
    for row in data["results"]:
        per_seed = [float(x) for x in str(row["int8_per_seed"]).split(",")]
        seed_deltas = [100 * (a - teacher) for a in per_seed]
        if row["variant"].startswith("QAT"):
            deltas += seed_deltas
        rows.append(
            {
                **row,
                "int8_vs_own_fp32": 100 * (row["int8_accuracy"] - row["fp32_accuracy"]),
                "per_seed": ", ".join(points(d) for d in seed_deltas) if row["seeds"] > 1 else "",
            }
        )
    columns = [
        ("variant", "variant", str),
        ("fp32_accuracy", "fp32 acc", fmt),
        ("int8_accuracy", "int8 acc", fmt),
        ("int8_delta_points", "int8 Δ vs teacher fp32 (pts)", points),
        ("int8_vs_own_fp32", "int8 Δ vs its own fp32 (pts)", points),
        ("per_seed", "int8 Δ vs teacher, per seed", str),
    ]
    qat_rows = [r for r in rows if r["variant"].startswith("QAT")]
    own = ", ".join(f"{points(r['int8_vs_own_fp32'])} ({r['variant'].split(' +')[0]})" for r in qat_rows)
    sentence = (
        f"\nAfter QAT, int8 against the same model in fp32 (medians): {own}. Per seed, the QAT models' int8 "
        f"accuracy lies between {points(min(deltas))} and {points(max(deltas))} points of the teacher's fp32 "
        f"(median {points(statistics.median(deltas))}).\n"
    )
    return (
        f"Teacher fp32 test accuracy {fmt(teacher)}; {data['test_examples']} test snippets.\n\n"
        + table(rows, columns)
        + sentence
    )


if __name__ == "__main__":
    main()
