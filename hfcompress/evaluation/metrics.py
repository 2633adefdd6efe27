"""Task metrics through ``evaluate``, with metric modules of our own that load offline by file path.

``load_metric("accuracy")`` loads ``metric_modules/accuracy.py`` with ``evaluate.load``; any other name is
passed to ``evaluate.load`` unchanged (a Hub metric, needs the network). Each ``*_metrics`` function returns
a ``compute_metrics`` for ``Trainer`` and for ``evaluate_model``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

LOCAL_METRICS = {p.stem: p for p in (Path(__file__).parent / "metric_modules").glob("*.py")}


def load_metric(name: str):
    import evaluate

    return evaluate.load(str(LOCAL_METRICS[name]) if name in LOCAL_METRICS else name)


def classification_metrics(names: list[str], num_labels: int):
    """Single-label classification: argmax of logits against labels (F1 binary for 2 labels, else macro)."""
    metrics = {name: load_metric(name) for name in names}
    f1_kwargs = {"average": "binary" if num_labels == 2 else "macro"}

    def compute(eval_pred) -> dict[str, float]:
        logits, labels = eval_pred[0], eval_pred[1]
        logits = logits[0] if isinstance(logits, tuple) else logits
        predictions = np.asarray(logits).argmax(-1).tolist()
        references = np.asarray(labels).tolist()
        result: dict[str, float] = {}
        for name, metric in metrics.items():
            kwargs = f1_kwargs if name == "f1" else {}
            result.update(metric.compute(predictions=predictions, references=references, **kwargs))
        return result

    return compute


def multilabel_metrics(threshold: float = 0.5):
    """Multi-label: micro F1 and exact-match (subset) accuracy of sigmoid(logits) > threshold."""

    def compute(eval_pred) -> dict[str, float]:
        logits, labels = np.asarray(eval_pred[0]), np.asarray(eval_pred[1]).astype(bool)
        predicted = 1 / (1 + np.exp(-logits)) > threshold
        tp = np.sum(predicted & labels)
        denominator = 2 * tp + np.sum(predicted & ~labels) + np.sum(~predicted & labels)
        return {
            "accuracy": float(np.mean(np.all(predicted == labels, axis=1))),
            "f1": float(2 * tp / denominator) if denominator else 0.0,
        }

    return compute


def token_metrics(num_labels: int):
    """Token classification: accuracy and macro F1 over the labelled (first sub-word) tokens."""
    f1 = load_metric("f1")

    def compute(eval_pred) -> dict[str, float]:
        logits, labels = np.asarray(eval_pred[0]), np.asarray(eval_pred[1])
        keep = labels != -100
        predictions, references = logits.argmax(-1)[keep], labels[keep]
        if not keep.any():
            return {"accuracy": 0.0, "f1": 0.0}
        return {
            "accuracy": float(np.mean(predictions == references)),
            **f1.compute(predictions=predictions.tolist(), references=references.tolist(), average="macro"),
        }

    return compute


def task_metrics(task_type: str, names: list[str], num_labels: int):
    """The ``compute_metrics`` of a task type (see ``hfcompress.data.TASK_TYPES``)."""
    if task_type == "token_classification":
        return token_metrics(num_labels)
    if task_type == "multi_label_classification":
        return multilabel_metrics()
    return classification_metrics(names, num_labels)
