"""Text for causal language models: documents by split, and fixed-length token blocks for training.

Sources are the same as for classification (``loading.load_raw``): an offline data asset
(``austen_novels``, ``hamlet``), a local ``.txt`` (one file, one document), ``.jsonl``/CSV/parquet file or
folder, or a Hub dataset. Training rows are ``block_size`` tokens cut from the split's documents joined by
the EOS token (the ``run_clm`` convention); labels are the input ids, and the model shifts them.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import datasets

from ..errors import HfCompressError
from .loading import SPLITS, load_raw

logger = logging.getLogger(__name__)

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


def load_lm_texts(name_or_path: str, text_column: str = "text") -> datasets.DatasetDict:
    """The dataset's splits with one ``text`` column; a missing column is a one-line error."""
    raw, _ = load_raw(name_or_path)
    for split, dataset in raw.items():
        if text_column not in dataset.column_names:
            raise HfCompressError(
                f"dataset {name_or_path!r} has no text column {text_column!r} in {split}; "
                f"available columns: {', '.join(dataset.column_names)}"
            )
    raw = datasets.DatasetDict({s: d.select_columns([text_column]) for s, d in raw.items()})
    return raw.rename_column(text_column, "text") if text_column != "text" else raw


def ensure_pad_token(tokenizer):
    """Give a tokenizer without a pad token (Llama 3, Mistral) its EOS token as pad, logged once; padding
    never counts in a loss (labels are -100 there; real EOS tokens keep their labels)."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise HfCompressError(
                "the tokenizer has neither a pad token nor an EOS token to pad with; set tokenizer.pad_token"
            )
        tokenizer.pad_token = tokenizer.eos_token
        logger.warning("The tokenizer has no pad token: padding with its EOS token %r", tokenizer.eos_token)
    return tokenizer


def check_block_size(block_size: int, max_positions: int | None) -> None:
    if block_size <= 0:
        raise HfCompressError(f"block_size must be > 0, got {block_size}")
    if max_positions is not None and block_size > max_positions:
        raise HfCompressError(
            f"block_size {block_size} is longer than the model's {max_positions} positions "
            "(max_position_embeddings); use a block_size <= that"
        )


def token_stream(texts, tokenizer) -> list[int]:
    """All documents' tokens, each document followed by the EOS token."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for text in texts:
        ids += tokenizer(text, add_special_tokens=False)["input_ids"]
        if eos is not None:
            ids.append(eos)
    return ids


def group_texts(
    dataset: datasets.Dataset,
    tokenizer,
    block_size: int,
    max_positions: int | None = None,
    max_tokens: int | None = None,
) -> datasets.Dataset:
    """Consecutive ``block_size``-token rows (``input_ids``, ``attention_mask``, ``labels``) over the documents;
    the remainder shorter than a block is dropped. ``max_tokens`` keeps only the first blocks."""
    check_block_size(block_size, max_positions)
    ids = token_stream(dataset["text"], tokenizer)
    count = len(ids) // block_size
    if max_tokens is not None:
        count = min(count, max_tokens // block_size)
    if count == 0:
        raise HfCompressError(
            f"the text holds {len(ids)} tokens, fewer than one block of {block_size} (or max_tokens is too small)"
        )
    blocks = [ids[i * block_size : (i + 1) * block_size] for i in range(count)]
    return datasets.Dataset.from_dict(
        {
            "input_ids": blocks,
            "attention_mask": [[1] * block_size] * count,
            "labels": [list(b) for b in blocks],
        }
    )


def split_text(raw: datasets.DatasetDict, split: str) -> str:
    """A split's documents joined by blank lines: the single text that perplexity slides over."""
    if split not in raw:
        raise HfCompressError(
            f"the dataset has no {split!r} split; it has {', '.join(raw)} (allowed: {SPLITS})"
        )
    return "\n\n".join(raw[split]["text"])
