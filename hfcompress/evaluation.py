"""Measurements for reports: task metrics, parameters, size on disk, CPU latency; JSON/markdown output.

Latency is the median wall time of ``runs`` forward passes after ``warmup`` untimed ones, on one fixed batch
of real examples padded to their longest, in ``torch.inference_mode``.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx", ".gguf")


def _prepare(model) -> torch.device:
    """Eval mode (PyTorch models) and the device inputs go to; ONNX Runtime models (Optimum) run on CPU here."""
    if hasattr(model, "eval"):
        model.eval()
    return getattr(model, "device", None) or torch.device("cpu")


@torch.inference_mode()
def predict(model, dataset, collator, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of ``model`` (PyTorch or Optimum ONNX Runtime) on a tokenized dataset."""
    device = _prepare(model)
    all_logits, all_labels = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collator):
        labels = batch.pop("labels")
        inputs = {
            k: v.to(device)
            for k, v in batch.items()
            if k in ("input_ids", "attention_mask", "token_type_ids")
        }
        all_logits.append(model(**inputs).logits.float().cpu().numpy())
        all_labels.append(labels.numpy())
    return np.concatenate(all_logits), np.concatenate(all_labels)


def evaluate_model(model, dataset, collator, compute_metrics, batch_size: int = 64) -> dict[str, float]:
    logits, labels = predict(model, dataset, collator, batch_size)
    return compute_metrics((logits, labels))


@torch.inference_mode()
def measure_latency(
    model, tokenizer, texts: list[str], batch_size: int, max_length: int, runs: int = 10, warmup: int = 3
) -> float:
    """Median milliseconds per forward pass on a batch of ``batch_size`` of ``texts``."""
    device = _prepare(model)
    batch = [texts[i % len(texts)] for i in range(batch_size)]
    inputs = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(
        device
    )
    for _ in range(warmup):
        model(**inputs)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model(**inputs)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def interleaved_latency(
    models: dict,
    tokenizer,
    texts: list[str],
    batch_size: int,
    max_length: int,
    rounds: int = 5,
    runs: int = 10,
) -> dict[str, float]:
    """Per model, the median over ``rounds`` of ``measure_latency`` (median of ``runs``), the models taking
    turns within each round, so that ratios between them are measured side by side on a noisy machine."""
    per_round = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            per_round[name].append(measure_latency(model, tokenizer, texts, batch_size, max_length, runs))
    return {name: statistics.median(values) for name, values in per_round.items()}


def size_on_disk(folder: str | os.PathLike) -> int:
    """Bytes of weight files in a saved model folder."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.suffix in WEIGHT_SUFFIXES)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """``columns`` is [(key, header)]; floats get 4 significant digits, missing values a dash."""

    def cell(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(k)) for k, _ in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_report(folder: str | os.PathLike, name: str, data: dict, markdown: str) -> tuple[Path, Path]:
    """Write ``name.json`` and ``name.md`` atomically (a reader never sees half a report)."""
    folder = Path(folder)
    json_path, md_path = folder / f"{name}.json", folder / f"{name}.md"
    write_text_atomic(json_path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    write_text_atomic(md_path, markdown)
    return json_path, md_path
