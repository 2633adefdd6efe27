"""Builders of the offline text assets' files (Jane Austen's novels from an R lazy-load database, one-document
texts such as Hamlet), kept with the assets so that ``assets`` imports nothing from ``data``."""

from __future__ import annotations

import re
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


# Instructions of the chat version, taken in turn; the user asks, the assistant continues the passage.
CONTINUE_INSTRUCTIONS = (
    "Continue this passage from {title}.",
    "Write the next sentences of this passage from {title}, in the same style.",
    "How does this passage from {title} go on? Continue it.",
)
TITLES = {"emma": "Emma", "mansfieldpark": "Mansfield Park", "sensesensibility": "Sense and Sensibility",
          "northangerabbey": "Northanger Abbey", "persuasion": "Persuasion",
          "prideprejudice": "Pride and Prejudice"}  # fmt: skip
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"']?\s+(?=[\"'A-Z])")


def continuation_pairs(text: str, min_words: int = 40, max_words: int = 160) -> list[tuple[str, str]]:
    """(opening, continuation) of each paragraph of ``min_words``..``max_words`` words with at least two
    sentences: the first half of its sentences (at least one), and the rest."""
    pairs = []
    for paragraph in text.split("\n\n"):
        words = len(paragraph.split())
        if not min_words <= words <= max_words or paragraph.upper() == paragraph:
            continue
        sentences = [s for s in _SENTENCE_END.split(paragraph) if s.strip()]
        if len(sentences) < 2:
            continue
        half = (len(sentences) + 1) // 2
        pairs.append((" ".join(sentences[:half]), " ".join(sentences[half:])))
    return pairs


def build_austen_chat(folder: Path) -> None:
    """The chat version of the Austen splits (``messages``, ``title``): a user turn asks to continue the opening
    of a paragraph, the assistant turn is Austen's own continuation. Same novels per split as the text."""
    import pandas as pd

    novels = read_r_lazyload(folder)
    for split, names in AUSTEN_SPLITS.items():
        rows = []
        for name in names:
            for k, (opening, rest) in enumerate(continuation_pairs(_paragraphs(novels[name]))):
                instruction = CONTINUE_INSTRUCTIONS[k % len(CONTINUE_INSTRUCTIONS)].format(title=TITLES[name])
                messages = [{"role": "user", "content": f"{instruction}\n\n{opening}"},
                            {"role": "assistant", "content": rest}]  # fmt: skip
                rows.append({"messages": messages, "title": name})
        pd.DataFrame(rows).to_parquet(folder / f"{split}.parquet")


# -- real tokenizers and chat templates from llama.cpp's test vocabularies ----------------------------------

# Llama 3's pre-tokenizer split (its tokenizer.json on the Hub); transformers' GGUF reader does not carry it.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)


def _byte_level(split_regex: str | None) -> dict:
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    if split_regex is None:
        return {**byte_level, "use_regex": True}
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": split_regex}, "behavior": "Isolated", "invert": False}, byte_level,
    ]}  # fmt: skip


def _fix_llama3(spec: dict, reference: dict | None) -> None:
    """transformers 4.57 reads Llama 3's byte-level BPE with SentencePiece's decoder and no split pattern, and
    without the whole-word lookup Llama 3's BPE does (``ignore_merges``): 35 of llama.cpp's 46 test strings
    came out right. These three settings are those of Llama 3's own tokenizer.json."""
    spec["normalizer"] = None
    spec["pre_tokenizer"] = _byte_level(_LLAMA3_SPLIT)
    spec["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    spec["model"]["ignore_merges"] = True


def _fix_phi3(spec: dict, reference: dict | None) -> None:
    """transformers' reading of Phi-3's vocabulary has no normalizer (every space is dropped: "An apple" ->
    "Anapple") and no byte fallback; Phi-3's is Llama 2's SentencePiece vocabulary plus chat tokens, so it takes
    the normalizer of the Llama 2 conversion, which reproduces llama.cpp's ids."""
    spec["normalizer"] = reference["normalizer"]
    spec["model"]["byte_fallback"] = True


def _fix_starcoder(spec: dict, reference: dict | None) -> None:
    """StarCoder (and Granite 3's vocabulary, built from it) splits digits one by one before byte-level BPE."""
    spec["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, _byte_level(None),
    ]}  # fmt: skip


# vocabulary -> (fix-up of transformers' conversion or None, BOS, EOS, whether BOS is added to plain text).
# BOS/EOS are the base models' (the GGUF metadata); transformers' reader mislabels some (Llama 3's EOS as
# <|begin_of_text|>, Llama 2's as <s>).
VOCAB_FIXES = {
    "llama-bpe": (_fix_llama3, "<|begin_of_text|>", "<|end_of_text|>", True),
    "llama-spm": (None, "<s>", "</s>", True),
    "qwen2": (None, None, "<|endoftext|>", False),
    "phi-3": (_fix_phi3, "<s>", "<|endoftext|>", True),
    "starcoder": (_fix_starcoder, None, "<|endoftext|>", False),
}


def vocab_test_cases(models: Path, vocab: str) -> list[tuple[str, list[int]]]:
    """llama.cpp's test strings for a vocabulary and the ids llama.cpp's tokenizer gives them."""
    texts = (models / f"ggml-vocab-{vocab}.gguf.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    ids = (models / f"ggml-vocab-{vocab}.gguf.out").read_text(encoding="utf-8").strip("\n").split("\n")
    return [(text, [int(i) for i in line.split()]) for text, line in zip(texts, ids)]


def convert_vocab(models: Path, vocab: str, out: Path, reference: Path | None = None) -> None:
    """A llama.cpp vocab-only GGUF -> a tokenizer folder (tokenizer.json + config) that loads with
    ``AutoTokenizer`` in transformers 4.57 and 5, fixed up where transformers' GGUF reader is wrong
    (``VOCAB_FIXES``) and checked against every one of llama.cpp's test strings: a mismatch stops the build."""
    import json

    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    fix, bos, eos, add_bos = VOCAB_FIXES[vocab]
    converted = AutoTokenizer.from_pretrained(models, gguf_file=f"ggml-vocab-{vocab}.gguf")
    spec = json.loads(converted.backend_tokenizer.to_str())
    if fix is not None:
        fix(spec, None if reference is None else json.loads((reference / "tokenizer.json").read_text()))
    backend = Tokenizer.from_str(json.dumps(spec))
    if add_bos:
        from tokenizers.processors import TemplateProcessing

        bos_id = backend.token_to_id(bos)
        backend.post_processor = TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                    special_tokens=[(bos, bos_id)])  # fmt: skip
    else:
        backend.post_processor = None
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos,
                                        unk_token=converted.unk_token, clean_up_tokenization_spaces=False)  # fmt: skip
    wrong = [text for text, ids in vocab_test_cases(models, vocab)
             if tokenizer(text, add_special_tokens=False)["input_ids"] != ids]  # fmt: skip
    if wrong:
        raise HfCompressError(
            f"the {vocab} tokenizer converted from llama.cpp's vocabulary disagrees with llama.cpp on "
            f"{len(wrong)} of its test strings (first: {wrong[0][:40]!r}); transformers' GGUF reader changed"
        )
    tokenizer.save_pretrained(out)
