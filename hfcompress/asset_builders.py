"""Builders of the offline text assets' files (Jane Austen's novels from an R lazy-load database, one-document
texts such as Hamlet), kept with the assets so that ``assets`` imports nothing from ``data``."""

from __future__ import annotations

import zlib
from pathlib import Path

from .errors import HfCompressError

# Split by novel, so no novel is on two sides: four novels train (about 512k words), Persuasion (83k words)
# is for choices and Pride and Prejudice (122k words) for the reported figures.
AUSTEN_SPLITS = {
    "train": ("emma", "mansfieldpark", "sensesensibility", "northangerabbey"),
    "validation": ("persuasion",),
    "test": ("prideprejudice",),
}


def _paragraphs(lines) -> str:
    """Gutenberg lines -> paragraphs (lines joined by spaces) separated by blank lines."""
    paragraphs, current = [], []
    for line in list(lines) + [""]:
        line = str(line).strip()
        if line:
            current.append(line)
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    return "\n\n".join(paragraphs)


def read_r_lazyload(folder: Path, stem: str = "Rdata") -> dict:
    """The objects of an R lazy-load database (``<stem>.rdx`` index + ``<stem>.rdb`` zlib blobs)."""
    import warnings

    import rdata

    warnings.filterwarnings("ignore", message=".*(Unknown file type|Wrong extension).*")
    index = rdata.conversion.convert(rdata.parser.parse_file(folder / f"{stem}.rdx", extension="rds"))
    blob = (folder / f"{stem}.rdb").read_bytes()
    objects = {}
    for name, (offset, length) in index["variables"].items():
        raw = zlib.decompress(blob[int(offset) + 4 : int(offset) + int(length)])  # 4-byte length header
        objects[str(name)] = rdata.conversion.convert(rdata.parser.parse_data(raw, extension="rds"))
    return objects


def build_austen_splits(folder: Path) -> None:
    """train/validation/test parquet files, one row per novel (``text``, ``title``), from janeaustenr's data."""
    import pandas as pd

    novels = read_r_lazyload(folder)
    missing = sorted({n for names in AUSTEN_SPLITS.values() for n in names} - set(novels))
    if missing:
        raise HfCompressError(f"janeaustenr's data lacks {missing}; the package changed")
    for split, names in AUSTEN_SPLITS.items():
        rows = [{"text": _paragraphs(novels[name]), "title": name} for name in names]
        pd.DataFrame(rows).to_parquet(folder / f"{split}.parquet")


def build_single_text_split(source: Path, folder: Path, split: str = "test") -> None:
    """One plain-text document as the only row of ``<split>.parquet``."""
    import pandas as pd

    text = source.read_text(encoding="utf-8").strip()
    pd.DataFrame([{"text": text, "title": source.stem}]).to_parquet(folder / f"{split}.parquet")
