"""Metrics through ``evaluate``, with modules of our own that load offline by file path.

``load_metric("accuracy")`` loads ``hfcompress/metrics/accuracy.py`` with ``evaluate.load``; any other name
is passed to ``evaluate.load`` unchanged (a Hub metric, needs the network).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

LOCAL_METRICS = {p.stem: p for p in Path(__file__).parent.glob("*.py") if p.stem != "__init__"}


def load_metric(name: str):
    import evaluate

    return evaluate.load(str(LOCAL_METRICS[name]) if name in LOCAL_METRICS else name)


def classification_metrics(names: list[str], num_labels: int):
    """A ``compute_metrics`` for Trainer and for our own evaluation: argmax of logits against labels."""
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
