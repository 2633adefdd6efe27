"""Unlabelled in-domain text for distillation, and the token alignment between two tokenizers.

Distillation needs no gold label: the teacher's soft targets are the signal. Rows added with
``add_unlabelled`` carry the label ``UNLABELLED`` (-1, the ``datasets`` convention for "no label"); the
collators turn it into -100, so the hard-label loss skips them and the distillation terms use them.

``token_alignment`` pairs each student token with the teacher token that covers exactly the same characters
(special tokens pair up in order), the defined alignment on which hidden-state terms between two tokenizers
are computed; tokens with no exact partner are left out of those terms.
"""

from __future__ import annotations

from pathlib import Path

import datasets

from ..errors import HfCompressError
from .loading import FILE_BUILDERS

UNLABELLED = -1
ALIGNMENT = "hfc_token_alignment"
TEXT_SUFFIXES = (".txt", *FILE_BUILDERS)
RECORD_FILE = "augment.json"  # what `hfcompress augment` writes next to its data; not text to read


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(
            p
            for p in path.iterdir()
            if p.suffix in TEXT_SUFFIXES and not p.name.startswith(".") and p.name != RECORD_FILE
        )
        if not files:
            raise HfCompressError(f"unlabelled_data folder {path} holds no {'/'.join(TEXT_SUFFIXES)} files")
        return files
    if path.suffix not in TEXT_SUFFIXES:
        raise HfCompressError(f"unlabelled_data file {path} must end in one of {', '.join(TEXT_SUFFIXES)}")
    return [path]


def load_unlabelled_texts(name_or_path: str, text_column: str = "text") -> list[str]:
    """Texts from a ``.txt`` file (one text per line), a CSV/JSON(L)/parquet file, a folder of those, or a
    registered data asset that ships unlabelled text (its ``unlabelled.parquet``). Empty texts are dropped."""
    from ..assets import ASSETS, fetch_asset

    if name_or_path in ASSETS and ASSETS[name_or_path].kind == "data":
        path = fetch_asset(name_or_path) / "unlabelled.parquet"
        if not path.exists():
            raise HfCompressError(f"asset {name_or_path!r} ships no unlabelled text")
    else:
        path = Path(name_or_path).expanduser()
        if not path.exists():
            raise HfCompressError(
                f"unlabelled_data {name_or_path!r} is neither a file, a folder nor a data asset "
                f"({', '.join(n for n, a in ASSETS.items() if a.kind == 'data')})"
            )
    texts: list[str] = []
    for file in _files(path):
        if file.suffix == ".txt":
            texts += file.read_text(encoding="utf-8").splitlines()
            continue
        table = datasets.load_dataset(FILE_BUILDERS[file.suffix], data_files=str(file), split="train")
        if text_column not in table.column_names:
            raise HfCompressError(
                f"unlabelled_data file {file} has no column {text_column!r}; it has {table.column_names}"
            )
        texts += [t for t in table[text_column] if isinstance(t, str)]
    texts = [t.strip() for t in texts if t and t.strip()]
    if not texts:
        raise HfCompressError(f"unlabelled_data {name_or_path!r} holds no non-empty text")
    return texts


def add_unlabelled(train: datasets.Dataset, texts: list[str]) -> datasets.Dataset:
    """``train`` followed by ``texts`` as rows labelled ``UNLABELLED``; other columns are left empty."""
    extra = {c: [None] * len(texts) for c in train.column_names if c not in ("text", "label")}
    rows = datasets.Dataset.from_dict(
        {"text": texts, "label": [UNLABELLED] * len(texts), **extra}, features=train.features
    )
    return datasets.concatenate_datasets([train, rows])


def token_alignment(student_offsets, student_special, teacher_offsets, teacher_special) -> list[int]:
    """For each student position, the teacher position covering the same characters, or -1.

    Special tokens ([CLS]/<s>, [SEP]/</s>) pair up in order when both sides have the same number of them.
    """
    by_span = {
        tuple(span): j
        for j, (span, special) in enumerate(zip(teacher_offsets, teacher_special))
        if not special
    }
    teacher_specials = [j for j, special in enumerate(teacher_special) if special]
    student_specials = [i for i, special in enumerate(student_special) if special]
    specials = (
        dict(zip(student_specials, teacher_specials))
        if len(student_specials) == len(teacher_specials)
        else {}
    )
    return [
        specials.get(i, -1) if special else by_span.get(tuple(span), -1)
        for i, (span, special) in enumerate(zip(student_offsets, student_special))
    ]


def aligned_fraction(dataset: datasets.Dataset) -> float:
    """Share of student tokens that have a teacher partner in ``dataset``'s ``ALIGNMENT`` column."""
    total = aligned = 0
    for row in dataset[ALIGNMENT]:
        total += len(row)
        aligned += sum(1 for j in row if j >= 0)
    return aligned / max(total, 1)
