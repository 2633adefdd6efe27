"""Reports: JSON and markdown written atomically (a reader never sees half a report), and tables."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """``columns`` is [(key, header)]; floats get 4 significant digits, missing values a dash."""

    def cell(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(k)) for k, _ in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_report(folder: str | os.PathLike, name: str, data: dict, markdown: str) -> tuple[Path, Path]:
    """Write ``name.json`` and ``name.md`` atomically (a reader never sees half a report)."""
    folder = Path(folder)
    json_path, md_path = folder / f"{name}.json", folder / f"{name}.md"
    write_text_atomic(json_path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    write_text_atomic(md_path, markdown)
    return json_path, md_path


def report_columns(batch_sizes: list[int], splits=("validation", "test")) -> list[tuple[str, str]]:
    """A classification report's columns: accuracy per split, F1 on test, size, latency at each batch size
    and the PyTorch thread count the latency was measured with."""
    return (
        [("model", "model")]
        + [(f"{split}_accuracy", f"{split} accuracy") for split in splits]
        + [("test_f1", "test F1"), ("parameters", "parameters"), ("size_mb", "size (MB)")]
        + [(f"latency_ms_b{b}", f"latency b{b} (ms)") for b in batch_sizes]
        + [("torch_threads", "threads")]
    )
