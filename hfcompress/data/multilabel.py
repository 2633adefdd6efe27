"""Multi-label classification: the label column holds a list per example (names or ids 0..N-1); it becomes
a multi-hot float vector, as ``problem_type="multi_label_classification"`` models expect."""

from __future__ import annotations

import datasets

from ..errors import HfCompressError
from .loading import SPLITS, is_list_feature, load_splits


def label_names_of(feature, values) -> list[str]:
    """Names of the labels in lists of labels: a ClassLabel's names, the sorted strings, or "0".."N-1"."""
    inner = getattr(feature, "feature", None)
    if isinstance(inner, datasets.ClassLabel):
        return list(inner.names)
    flat = {v for row in values for v in row}
    if all(isinstance(v, str) for v in flat):
        return sorted(flat)
    if not all(isinstance(v, int) and v >= 0 for v in flat):
        raise HfCompressError(f"labels must be names or ids 0..N-1, got {sorted(flat, key=str)[:5]}")
    return [str(i) for i in range(max(flat) + 1)]


def load_multilabel_classification(name_or_path: str, text_column: str = "text", label_column: str = "label"):
    """Splits with ``text`` and ``label`` as a multi-hot float vector; returns (splits, label names).

    The label column holds a list per example: label names, or ids 0..N-1.
    """
    raw, _ = load_splits(name_or_path, text_column, label_column)
    feature = raw["train"].features["label"]
    if not is_list_feature(feature):
        raise HfCompressError(
            f"label column {label_column!r} holds one label per example, not a list: that is single-label data, "
            "use task_type single_label_classification"
        )
    names = label_names_of(feature, [row for split in SPLITS for row in raw[split]["label"]])
    index = {name: i for i, name in enumerate(names)}

    def encode(batch):
        out = []
        for row in batch["label"]:
            hot = [0.0] * len(names)
            for value in row:
                hot[index[value] if isinstance(value, str) else int(value)] = 1.0
            out.append(hot)
        return {"label": out}

    features = raw["train"].features.copy()
    features["label"] = datasets.Sequence(datasets.Value("float32"), length=len(names))
    return raw.map(encode, batched=True, features=features), names
