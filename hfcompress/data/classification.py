"""Single-label text classification: integer labels with names, and tokenization (twice, for distillation
between two tokenizers: the teacher's ids go in ``teacher_``-prefixed columns).

Label problems are caught here, before training: a training set with one class, and validation or test
labels that training never saw, are errors that list what was found.
"""

from __future__ import annotations

import datasets

from ..errors import HfCompressError
from .collators import TEACHER_PREFIX
from .loading import SPLITS, is_list_feature, load_splits
from .unlabelled import ALIGNMENT, token_alignment


def _check_label_coverage(raw: datasets.DatasetDict, label_names: list[str], name: str) -> None:
    """Training must hold at least two classes, and every evaluation label must occur in training."""
    seen = set(raw["train"].unique("label"))
    if len(seen) < 2:
        only = label_names[next(iter(seen))] if seen else "none"
        raise HfCompressError(
            f"dataset {name!r}: every training label is {only!r}; a classifier needs at least two classes"
        )
    for split in ("validation", "test"):
        unseen = sorted(set(raw[split].unique("label")) - seen)
        if unseen:
            names = ", ".join(repr(label_names[i]) for i in unseen[:5])
            raise HfCompressError(
                f"dataset {name!r}: {split} labels {names} never occur in train; training has "
                f"{', '.join(repr(label_names[i]) for i in sorted(seen))}"
            )


def load_text_classification(
    name_or_path: str,
    text_column: str = "text",
    label_column: str = "label",
    validation_fraction: float = 0.1,
    seed: int = 42,
) -> tuple[datasets.DatasetDict, list[str]]:
    """Load a text-classification dataset with train/validation/test splits and integer ``label``s.

    Returns the splits (columns ``text`` and ``label``, renamed from the given ones) and the label names.
    Missing validation/test splits are carved out of train deterministically. String labels get ids in the
    order of their sorted names, taken from the training split.
    """
    raw, label_names = load_splits(name_or_path, text_column, label_column, validation_fraction, seed)
    feature = raw["train"].features["label"]
    if is_list_feature(feature):
        raise HfCompressError(
            f"label column {label_column!r} holds lists of labels: that is multi-label data, use "
            "task_type multi_label_classification"
        )
    if isinstance(feature, datasets.ClassLabel):
        label_names = list(feature.names)
    elif "string" in str(getattr(feature, "dtype", "")):  # "string" or "large_string"
        everywhere = sorted({v for s in SPLITS for v in raw[s]["label"]})
        label_names = sorted(set(raw["train"]["label"]))
        unseen = [v for v in everywhere if v not in label_names]
        if unseen:
            raise HfCompressError(
                f"dataset {name_or_path!r}: validation/test labels {unseen[:5]} never occur in train; "
                f"training has {label_names}"
            )
        to_id = {name: i for i, name in enumerate(label_names)}
        features = raw["train"].features.copy()
        features["label"] = datasets.ClassLabel(names=label_names)
        raw = raw.map(lambda b: {"label": [to_id[v] for v in b["label"]]}, batched=True, features=features)
    elif label_names is None:
        values = {int(v) for s in SPLITS for v in raw[s]["label"]}
        if min(values) < 0:
            raise HfCompressError(
                f"label column {label_column!r} has negative values {sorted(values)[:5]}; labels must be 0..N-1"
            )
        label_names = [str(i) for i in range(max(values) + 1)]
    _check_label_coverage(raw, label_names, name_or_path)
    return raw, label_names


def same_vocabulary(tokenizer_a, tokenizer_b) -> bool:
    """True when both tokenizers map the same tokens to the same ids."""
    return tokenizer_a is tokenizer_b or tokenizer_a.get_vocab() == tokenizer_b.get_vocab()


def tokenize_dataset(
    dataset: datasets.DatasetDict,
    tokenizer,
    max_length: int,
    teacher_tokenizer=None,
) -> datasets.DatasetDict:
    """Tokenize ``text`` for the student (and, when given, again for the teacher under ``teacher_`` keys).

    ``label`` becomes ``labels``; ``text`` is dropped. Padding is left to the collator (dynamic padding).
    With two fast tokenizers, ``ALIGNMENT`` holds each student token's teacher position (-1: none), the
    alignment hidden-state terms between two tokenizers are computed on.
    """
    align = teacher_tokenizer is not None and tokenizer.is_fast and teacher_tokenizer.is_fast
    extra = {"return_offsets_mapping": True, "return_special_tokens_mask": True} if align else {}

    def encode(batch: dict[str, list]) -> dict[str, list]:
        out = dict(tokenizer(batch["text"], truncation=True, max_length=max_length, **extra))
        if teacher_tokenizer is not None:
            teacher = teacher_tokenizer(batch["text"], truncation=True, max_length=max_length, **extra)
            if align:
                out[ALIGNMENT] = [
                    token_alignment(*pair)
                    for pair in zip(
                        out.pop("offset_mapping"),
                        out.pop("special_tokens_mask"),
                        teacher.pop("offset_mapping"),
                        teacher.pop("special_tokens_mask"),
                    )
                ]
            out.update({TEACHER_PREFIX + k: v for k, v in teacher.items()})
        out["labels"] = batch["label"]
        return out

    return dataset.map(encode, batched=True, remove_columns=dataset["train"].column_names, desc="Tokenizing")
