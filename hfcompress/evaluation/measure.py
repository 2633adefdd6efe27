"""Measurements for reports: task metrics of a model, parameters, size on disk, CPU latency.

Latency is the median wall time of ``runs`` forward passes after ``warmup`` untimed ones, on one fixed batch
of real examples padded to their longest, in ``torch.inference_mode``. Figures meant to be compared (a
teacher and its student, fp32 and int8) are measured with the models taking turns (``interleaved_latency``),
so noise on a shared machine hits them alike; every report records the thread counts next to them.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx", ".gguf")
NOT_WEIGHTS = ("training_args.bin",)  # Trainer.save_model writes it next to the weights


def weight_files(folder: str | os.PathLike) -> list[Path]:
    """The weight files of a saved model folder (sub-folders included), in a fixed order."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix in WEIGHT_SUFFIXES and p.name not in NOT_WEIGHTS)


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
    if all_logits[0].ndim == 3:  # token classification: batches padded to different lengths
        length = max(x.shape[1] for x in all_logits)
        all_logits = [np.pad(x, ((0, 0), (0, length - x.shape[1]), (0, 0))) for x in all_logits]
        all_labels = [np.pad(y, ((0, 0), (0, length - y.shape[1])), constant_values=-100) for y in all_labels]
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
    seed: int = 0,
) -> dict[str, float]:
    """Per model, the median over ``rounds`` of ``measure_latency`` (median of ``runs``), the models taking
    turns within each round, so that ratios between them are measured side by side on a noisy machine. The
    turn order is shuffled every round (``seed``): a model that always ran first, on a machine still warming up
    or just after another job, would otherwise carry a bias of its own. ``tokenizer`` is one tokenizer for
    all, or a dict with each model's own."""
    import random

    tokenizers = tokenizer if isinstance(tokenizer, dict) else {name: tokenizer for name in models}
    per_round = {name: [] for name in models}
    order, shuffle = list(models), random.Random(seed).shuffle
    for _ in range(rounds):
        shuffle(order)
        for name in order:
            per_round[name].append(
                measure_latency(models[name], tokenizers[name], texts, batch_size, max_length, runs)
            )
    return {name: statistics.median(values) for name, values in per_round.items()}


def size_on_disk(folder: str | os.PathLike) -> int:
    """Bytes of weight files in a saved model folder."""
    return sum(p.stat().st_size for p in weight_files(folder))


def gzip_size_on_disk(folder: str | os.PathLike, level: int = 6) -> int:
    """Bytes of the weight files once gzip-compressed (streamed): what a download costs, and how much of the
    zeros of unstructured pruning a file really saves."""
    import zlib

    total = 0
    for path in weight_files(folder):
        stream = zlib.compressobj(level, zlib.DEFLATED, 31)  # wbits 31: the gzip format
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(2**22), b""):
                total += len(stream.compress(chunk))
        total += len(stream.flush())
    return total


def measure_model(
    model,
    saved_dir: str | Path | None,
    eval_datasets: dict,
    collator,
    compute_metrics,
) -> dict:
    """Metrics on each of ``eval_datasets`` (split name -> tokenized dataset; keys become ``<split>_<metric>``),
    parameters and size on disk of one model, for a report row. Latency is measured separately, with the
    models interleaved (``interleaved_latency``)."""
    from ..modeling import count_parameters

    result = {}
    for split, dataset in eval_datasets.items():
        metrics = evaluate_model(model, dataset, collator, compute_metrics)
        result.update({f"{split}_{k}": v for k, v in metrics.items()})
    result["parameters"] = count_parameters(model)
    result["size_mb"] = size_on_disk(saved_dir) / 2**20 if saved_dir else None
    return result


def add_latency(
    rows: list[dict],
    models: list,
    tokenizers: list,
    texts: list[str],
    batch_sizes: list[int],
    max_length: int,
    rounds: int = 3,
    runs: int = 10,
) -> None:
    """Add ``latency_ms_b<N>`` (median over ``rounds`` of the median of ``runs``) and ``torch_threads`` to
    each row; the models (one per row, each with its tokenizer) take turns within each round."""
    named = dict(enumerate(models))
    for batch_size in batch_sizes:
        latency = interleaved_latency(
            named, dict(enumerate(tokenizers)), texts, batch_size, max_length, rounds, runs
        )
        for i, row in enumerate(rows):
            row[f"latency_ms_b{batch_size}"] = latency[i]
    for row in rows:
        row["torch_threads"] = torch.get_num_threads()


def compare_models(
    entries: list[tuple],
    compute_metrics,
    texts: list[str],
    batch_sizes: list[int],
    max_length: int,
    runs: int = 10,
    splits: tuple[str, ...] = ("validation", "test"),
    collator_for=None,
) -> list[dict]:
    """One report row per entry ``(name, model, saved folder or None, tokenized splits, tokenizer)``: metrics
    on each of ``splits``, parameters, size on disk, and latency with the models taking turns."""
    if collator_for is None:
        from ..data import DistillationDataCollator as collator_for
    rows = [
        {
            "model": name,
            **measure_model(model, folder, {s: data[s] for s in splits}, collator_for(tok), compute_metrics),
        }
        for name, model, folder, data, tok in entries
    ]
    models, tokenizers = [e[1] for e in entries], [e[4] for e in entries]
    add_latency(rows, models, tokenizers, texts, batch_sizes, max_length, runs=runs)
    return rows
