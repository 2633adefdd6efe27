"""TinyBERT-style data augmentation: more in-domain text for distillation by replacing words with close ones.

TinyBERT (Jiao et al. 2020) makes new training sentences by replacing each word, with probability
``replace_prob``, by one of its ``top_k`` candidates: a masked language model's predictions for single-piece
words, GloVe neighbours otherwise. Here the candidates come from a model you name:

- ``mlm``: its masked-LM head predicts each masked word (one word masked at a time, as TinyBERT);
- ``embedding``: nearest neighbours by cosine similarity in its input word-embedding table, the GloVe route
  with the model's own embeddings. Sentence-transformer checkpoints ship no MLM head, so this is the route
  that works with them (``auto`` picks ``mlm`` when the checkpoint has the head).

Only words that are one whole-word token of the model's vocabulary are replaced; candidates are whole-word,
alphabetic tokens. A replacement may change the meaning (even the sentiment): the rows are for soft targets
only, never for gold labels. ``augment_texts`` is pure; ``write_augmented`` writes an ordinary dataset folder
(``augmented.parquet`` and ``augment.json``) atomically and refuses an existing folder.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..errors import HfCompressError, check_choice
from .unlabelled import RECORD_FILE

METHODS = ("auto", "embedding", "mlm")
_WORDS = re.compile(r"([A-Za-z]+)")


@dataclass
class AugmentConfig:
    """Settings of the augmentation data stage."""

    augment_model_name_or_path: str = field(
        default="sentence-transformers/all-mpnet-base-v2",
        metadata={
            "help": "Model whose masked-LM head (mlm) or word embeddings (embedding) propose candidates."
        },
    )
    augment_method: str = field(default="auto", metadata={"help": f"One of {', '.join(METHODS)}."})
    copies: int = field(default=2, metadata={"help": "New texts made from each source text; >= 1."})
    replace_prob: float = field(
        default=0.4, metadata={"help": "Chance that an eligible word is replaced; (0, 1]."}
    )
    top_k: int = field(default=15, metadata={"help": "Candidates per word to draw from; >= 1."})
    augment_batch_size: int = field(default=64, metadata={"help": "Masked texts per MLM forward pass."})

    def __post_init__(self):
        check_choice("augment_method", self.augment_method, METHODS)
        if self.copies < 1 or self.top_k < 1 or self.augment_batch_size < 1:
            raise HfCompressError(
                f"copies, top_k and augment_batch_size must be >= 1, got {self.copies}, {self.top_k}, "
                f"{self.augment_batch_size}"
            )
        if not 0 < self.replace_prob <= 1:
            raise HfCompressError(f"replace_prob must be in (0, 1], got {self.replace_prob}")


class Candidates:
    """Whole-word replacement candidates for a word, from a model's MLM head or its word embeddings."""

    def __init__(self, model, tokenizer, method: str, top_k: int, batch_size: int = 64):
        self.model, self.tokenizer, self.top_k, self.batch_size = model.eval(), tokenizer, top_k, batch_size
        self.method = method
        vocab = tokenizer.get_vocab()
        special = set(tokenizer.all_special_ids)
        self.word_ids = sorted(i for t, i in vocab.items() if t.isalpha() and len(t) > 1 and i not in special)
        if not self.word_ids:
            raise HfCompressError("the augmentation model's vocabulary has no whole-word tokens to propose")
        self.vocab = vocab
        self.allowed = torch.zeros(len(tokenizer), dtype=torch.bool)
        self.allowed[self.word_ids] = True
        if method == "embedding":
            table = model.get_input_embeddings().weight.detach().float()[: len(tokenizer)]
            self.table = torch.nn.functional.normalize(table, dim=-1)
        self._neighbours: dict[int, list[int]] = {}

    def word_id(self, word: str) -> int | None:
        """The id of ``word`` when it is one whole-word token of the vocabulary (cased as the tokenizer wants)."""
        pieces = self.tokenizer.tokenize(word)
        if len(pieces) != 1:
            return None
        token_id = self.vocab.get(pieces[0])
        return token_id if token_id is not None and bool(self.allowed[token_id]) else None

    def neighbours(self, token_id: int) -> list[int]:
        """Embedding route: the ``top_k`` closest whole-word tokens, the word itself excluded."""
        if token_id not in self._neighbours:
            scores = self.table @ self.table[token_id]
            scores[~self.allowed] = -2.0
            scores[token_id] = -2.0
            self._neighbours[token_id] = scores.topk(self.top_k).indices.tolist()
        return self._neighbours[token_id]

    @torch.no_grad()
    def predicted(self, pieces: list[str], positions: list[int]) -> dict[int, list[int]]:
        """MLM route: for each word position, the ``top_k`` whole-word predictions with that word masked."""
        mask = self.tokenizer.mask_token
        texts = ["".join(mask if i == p else piece for i, piece in enumerate(pieces)) for p in positions]
        out: dict[int, list[int]] = {}
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=256)
            logits = self.model(**enc).logits
            rows, cols = (enc["input_ids"] == self.tokenizer.mask_token_id).nonzero(as_tuple=True)
            for row, col in zip(rows.tolist(), cols.tolist()):
                scores = logits[row, col].float()
                scores[~self.allowed] = float("-inf")
                out[positions[start + row]] = scores.topk(self.top_k).indices.tolist()
        return out


def load_candidates(config: AugmentConfig) -> Candidates:
    """The model and tokenizer named in ``config``, with the method resolved (``auto``: mlm when it has the head)."""
    from transformers import AutoModel, AutoModelForMaskedLM

    from ..assets import resolve_model
    from ..modeling import load_tokenizer

    path = resolve_model(config.augment_model_name_or_path)
    tokenizer = load_tokenizer(path)
    method = config.augment_method
    if method == "embedding":
        model = AutoModel.from_pretrained(path)
    else:  # the input embeddings load either way, so a missing head leaves the embedding route on this model
        model, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True)
        head_missing = any("lm_head" in k or "cls.predictions" in k for k in info["missing_keys"])
        if head_missing and method == "mlm":
            raise HfCompressError(
                f"{config.augment_model_name_or_path} has no masked-LM head; use augment_method embedding or auto"
            )
        method = "embedding" if head_missing else "mlm"
    if method == "mlm" and tokenizer.mask_token is None:
        raise HfCompressError(f"{config.augment_model_name_or_path}'s tokenizer has no mask token for mlm")
    return Candidates(model, tokenizer, method, config.top_k, config.augment_batch_size)


def augment_texts(texts: list[str], candidates: Candidates, copies: int, replace_prob: float, seed: int):
    """``copies`` new texts per source text (fewer when a text has nothing to replace), as (text, source index)
    pairs. Words keep their capitalisation; spacing and punctuation are kept as they were."""
    rng = random.Random(seed)
    out: list[tuple[str, int]] = []
    for index, text in enumerate(texts):
        pieces = _WORDS.split(text)  # odd positions are words, even ones what lies between them
        ids = {i: candidates.word_id(pieces[i]) for i in range(1, len(pieces), 2)}
        eligible = [i for i, token_id in ids.items() if token_id is not None]
        if not eligible:
            continue
        if candidates.method == "mlm":
            options = candidates.predicted(pieces, eligible)
        else:
            options = {i: candidates.neighbours(ids[i]) for i in eligible}
        seen = {text}
        for _ in range(copies):
            new = list(pieces)
            for i in eligible:
                if options.get(i) and rng.random() < replace_prob:
                    word = candidates.tokenizer.convert_ids_to_tokens(rng.choice(options[i]))
                    new[i] = word.capitalize() if pieces[i][:1].isupper() else word
            candidate = "".join(new)
            if candidate not in seen:
                seen.add(candidate)
                out.append((candidate, index))
    return out


def write_augmented(folder: str | os.PathLike, rows: list[tuple[str, int]], record: dict) -> Path:
    """Write ``augmented.parquet`` (text, source_index) and ``augment.json`` into a new folder, atomically."""
    import pandas as pd

    folder = Path(folder)
    if folder.exists():
        raise HfCompressError(f"output folder {folder} already exists; augmented data is never overwritten")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    try:
        frame = pd.DataFrame({"text": [t for t, _ in rows], "source_index": [i for _, i in rows]})
        frame.to_parquet(tmp / "augmented.parquet")
        (tmp / RECORD_FILE).write_text(json.dumps({**record, "rows": len(rows)}, indent=2, sort_keys=True))
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def run_augment(config: AugmentConfig, texts: list[str], output_dir: str, seed: int, source: str) -> Path:
    """The data stage: candidates from ``config``'s model, ``augment_texts``, ``write_augmented``."""
    if Path(output_dir).exists():
        raise HfCompressError(
            f"output folder {output_dir} already exists; augmented data is never overwritten"
        )
    candidates = load_candidates(config)
    rows = augment_texts(texts, candidates, config.copies, config.replace_prob, seed)
    record = {**asdict(config), "method_used": candidates.method, "seed": seed, "source": source,
              "source_texts": len(texts)}  # fmt: skip
    return write_augmented(output_dir, rows, record)
