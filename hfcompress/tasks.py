"""Tasks beyond single-label classification: multi-label classification and token classification.

Loading (label names, multi-hot or aligned labels), tokenization and metrics for each, so the fine-tuning
recipe handles all three task types with one code path. Single-label classification lives in ``data.py``.
"""

from __future__ import annotations

import datasets
import numpy as np

from .data import SPLITS, is_list_feature, load_splits
from .errors import HfCompressError

TASK_TYPES = ("single_label_classification", "multi_label_classification", "token_classification")


def _names_of(feature, values) -> list[str]:
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
    names = _names_of(feature, [row for split in SPLITS for row in raw[split]["label"]])
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


def load_token_classification(name_or_path: str, tokens_column: str = "tokens", tags_column: str = "tags"):
    """Splits with ``text`` (a list of words) and ``label`` (a tag id per word); returns (splits, tag names)."""
    raw, _ = load_splits(name_or_path, tokens_column, tags_column)
    for column, role in ((tokens_column, "words"), (tags_column, "tags")):
        key = "text" if role == "words" else "label"
        if not is_list_feature(raw["train"].features[key]):
            raise HfCompressError(
                f"token classification needs a list of {role} per example in column {column!r}; it holds single values"
            )
    feature = raw["train"].features["label"]
    names = _names_of(feature, [row for split in SPLITS for row in raw[split]["label"]])
    if (
        not isinstance(getattr(feature, "feature", None), datasets.ClassLabel)
        and names
        and not names[0].isdigit()
    ):
        index = {name: i for i, name in enumerate(names)}
        raw = raw.map(lambda b: {"label": [[index[t] for t in row] for row in b["label"]]}, batched=True)
    return raw, names


def tokenize_token_dataset(raw: datasets.DatasetDict, tokenizer, max_length: int) -> datasets.DatasetDict:
    """Tokenize word lists; each word's tag goes to its first sub-word, the rest (and specials) get -100."""
    if not getattr(tokenizer, "is_fast", False):
        raise HfCompressError("token classification needs a fast tokenizer (word ids to align the tags)")

    def encode(batch):
        out = tokenizer(batch["text"], is_split_into_words=True, truncation=True, max_length=max_length)
        labels = []
        for i, tags in enumerate(batch["label"]):
            previous, row = None, []
            for word in out.word_ids(i):
                row.append(-100 if word is None or word == previous else int(tags[word]))
                previous = word
            labels.append(row)
        out = dict(out)
        out["labels"] = labels
        return out

    return raw.map(encode, batched=True, remove_columns=raw["train"].column_names, desc="Tokenizing")


def _f1(predictions: np.ndarray, references: np.ndarray, num_labels: int) -> float:
    """Macro F1 over the classes that occur in predictions or references."""
    scores = []
    for c in range(num_labels):
        tp = np.sum((predictions == c) & (references == c))
        fp = np.sum((predictions == c) & (references != c))
        fn = np.sum((predictions != c) & (references == c))
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def multilabel_metrics(threshold: float = 0.5):
    """``compute_metrics``: micro F1 and exact-match (subset) accuracy of sigmoid(logits) > threshold."""

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
    """``compute_metrics``: accuracy and macro F1 over the labelled (first sub-word) tokens."""

    def compute(eval_pred) -> dict[str, float]:
        logits, labels = np.asarray(eval_pred[0]), np.asarray(eval_pred[1])
        keep = labels != -100
        predictions, references = logits.argmax(-1)[keep], labels[keep]
        return {
            "accuracy": float(np.mean(predictions == references)) if keep.any() else 0.0,
            "f1": _f1(predictions, references, num_labels),
        }

    return compute
