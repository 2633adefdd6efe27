"""Token classification: a list of words and a tag per word; tags are aligned to the first sub-word of each
word, the other sub-words and the special tokens get -100 (never counted)."""

from __future__ import annotations

import datasets

from ..errors import HfCompressError
from .loading import SPLITS, is_list_feature, load_splits
from .multilabel import label_names_of


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
    names = label_names_of(feature, [row for split in SPLITS for row in raw[split]["label"]])
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
