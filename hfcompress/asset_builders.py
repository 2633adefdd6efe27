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
