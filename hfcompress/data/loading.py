"""Loading a dataset with train/validation/test splits, from wherever it is.

Everything goes through ``datasets``: a Hub name, a local CSV/JSON/parquet file (or a folder of them named
``train*``, ``validation*``, ``test*``), or a registered offline asset (``rotten_tomatoes_snippets``). Problems
a new user hits (a missing column, empty texts, a file that is not UTF-8) are one-line ``HfCompressError``s
before any training starts; a split carved out of train is logged with its size.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import datasets

from ..errors import HfCompressError

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
FILE_BUILDERS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text"}


def _check_text_encoding(files: list[str]) -> None:
    """CSV/JSON files must be UTF-8: name the file and the first bad byte, not a ``datasets`` traceback."""
    for name in files:
        if Path(name).suffix == ".parquet":
            continue
        data = Path(name).read_bytes()
        if not data.strip():
            raise HfCompressError(f"dataset file {name} is empty; give every split at least one row")
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as err:
            line = data[: err.start].count(b"\n") + 1
            raise HfCompressError(
                f"dataset file {name} is not UTF-8 text (byte 0x{data[err.start]:02x} on line {line}); "
                "save it as UTF-8"
            ) from None


def _load_files(builder: str, files: dict[str, list[str] | str]) -> datasets.DatasetDict:
    _check_text_encoding(
        [f for group in files.values() for f in ([group] if isinstance(group, str) else group)]
    )
    extra = {"sample_by": "document"} if builder == "text" else {}  # a .txt file is one document, one row
    try:
        return datasets.load_dataset(builder, data_files=files, **extra)
    except datasets.exceptions.DatasetGenerationError as err:
        cause = err.__cause__ or err
        raise HfCompressError(
            f"could not read {builder} files {sorted(files.values())}: {str(cause).splitlines()[0]}"
        ) from None


def load_raw(name_or_path: str) -> tuple[datasets.DatasetDict, list[str] | None]:
    """The dataset's splits as stored, and the label names an offline asset declares (else None)."""
    from ..assets import fetch_asset, find_asset

    asset = find_asset(name_or_path)
    if asset is not None and asset.kind == "data":
        folder = fetch_asset(asset.name)
        files = {s: str(folder / f"{s}.parquet") for s in SPLITS if (folder / f"{s}.parquet").exists()}
        labels = folder / "labels.json"  # text for language modelling has none
        label_names = json.loads(labels.read_text()) if labels.exists() else None
        return datasets.load_dataset("parquet", data_files=files), label_names
    path = Path(name_or_path)
    if path.is_file():
        builder = FILE_BUILDERS.get(path.suffix)
        if builder is None:
            raise HfCompressError(
                f"dataset file {name_or_path!r} has an unsupported type; use {', '.join(FILE_BUILDERS)}"
            )
        return _load_files(builder, {"train": str(path)}), None
    if path.is_dir():
        files = {}
        for split in SPLITS:
            found = [p for p in sorted(path.glob(f"{split}*")) if p.suffix in FILE_BUILDERS]
            if found:
                files[split] = [str(p) for p in found]
        if not files:
            raise HfCompressError(
                f"dataset folder {name_or_path!r} has no train/validation/test CSV, JSON, parquet or .txt files"
            )
        builder = FILE_BUILDERS[Path(next(iter(files.values()))[0]).suffix]
        return _load_files(builder, files), None
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


def _check_texts(raw: datasets.DatasetDict, column: str, name: str) -> None:
    """Every text must be a non-empty string (or, for word lists, a non-empty list)."""
    for split, dataset in raw.items():
        empty = [
            i
            for i, value in enumerate(dataset[column])
            if value is None or (isinstance(value, str) and not value.strip())
        ]
        if empty:
            rows = ", ".join(map(str, empty[:5])) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
            raise HfCompressError(
                f"dataset {name!r}: text column {column!r} is empty in {split} rows {rows} (0-based, after the "
                "header); fill or drop those rows"
            )


def load_splits(
    name_or_path: str,
    text_column: str = "text",
    label_column: str = "label",
    validation_fraction: float = 0.1,
    seed: int = 42,
) -> tuple[datasets.DatasetDict, list[str] | None]:
    """train/validation/test splits with only the two columns, renamed ``text`` and ``label``; missing
    validation/test splits are carved out of train deterministically (and logged). Also returns the label
    names the dataset declares, if any."""
    raw, label_names = load_raw(name_or_path)
    if "train" not in raw:
        raise HfCompressError(f"dataset {name_or_path!r} has no 'train' split; found {', '.join(raw)}")
    columns = raw["train"].column_names
    for role, column in (("text", text_column), ("label", label_column)):
        if column not in columns:
            raise HfCompressError(
                f"dataset {name_or_path!r} has no {role} column {column!r}; available columns: {', '.join(columns)}"
            )
    _check_texts(raw, text_column, name_or_path)
    for missing in [s for s in ("validation", "test") if s not in raw]:
        parts = raw["train"].train_test_split(test_size=validation_fraction, seed=seed)
        raw["train"], raw[missing] = parts["train"], parts["test"]
        logger.warning(
            "Dataset %s has no %s split: carved %d examples out of train (seed %d), %d left for training",
            name_or_path,
            missing,
            len(raw[missing]),
            seed,
            len(raw["train"]),
        )
    raw = datasets.DatasetDict({s: raw[s] for s in SPLITS})
    raw = raw.select_columns([text_column, label_column])
    if text_column != "text":
        raw = raw.rename_column(text_column, "text")
    if label_column != "label":
        raw = raw.rename_column(label_column, "label")
    return raw, label_names


def limit_samples(
    raw: datasets.DatasetDict, max_train: int | None, max_eval: int | None, seed: int
) -> datasets.DatasetDict:
    """Shuffle-and-take subsets (deterministic for a seed); validation and test get ``max_eval`` each."""
    out = {}
    for split, dataset in raw.items():
        limit = max_train if split == "train" else max_eval
        if limit is not None and limit < len(dataset):
            dataset = dataset.shuffle(seed=seed).select(range(limit))
        out[split] = dataset
    return datasets.DatasetDict(out)
