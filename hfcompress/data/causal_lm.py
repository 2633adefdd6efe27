"""Text for causal language models: documents by split, and fixed-length token blocks for training.

Sources are the same as for classification (``loading.load_raw``): an offline data asset
(``austen_novels``, ``hamlet``), a local ``.txt`` (one file, one document), ``.jsonl``/CSV/parquet file or
folder, or a Hub dataset. (What builds the offline assets' files lives with the assets: ``asset_builders``.) Training rows are ``block_size`` tokens cut from the split's documents joined by
the EOS token (the ``run_clm`` convention); labels are the input ids, and the model shifts them.
"""

from __future__ import annotations

import logging

import datasets

from ..errors import HfCompressError
from .loading import SPLITS, load_raw

logger = logging.getLogger(__name__)

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


def group_texts(
    dataset: datasets.Dataset,
    tokenizer,
    block_size: int,
    max_positions: int | None = None,
    max_tokens: int | None = None,
) -> datasets.Dataset:
    """Consecutive ``block_size``-token rows (``input_ids``, ``attention_mask``, ``labels``) over the documents,
    each followed by EOS; the remainder shorter than a block is dropped. ``max_tokens`` keeps only the first
    blocks. (``lm_examples`` with ``data_format='text'``, through ``datasets.map``.)"""
    from .lm_examples import lm_examples

    check_block_size(block_size, max_positions)
    return lm_examples(dataset, tokenizer, block_size, data_format="text", max_tokens=max_tokens)


def split_text(raw: datasets.DatasetDict, split: str) -> str:
    """A split's documents joined by blank lines: the single text that perplexity slides over."""
    if split not in raw:
        raise HfCompressError(
            f"the dataset has no {split!r} split; it has {', '.join(raw)} (allowed: {SPLITS})"
        )
    return "\n\n".join(raw[split]["text"])
