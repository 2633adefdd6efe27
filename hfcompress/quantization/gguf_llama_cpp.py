"""GGUF written by llama.cpp's own tools: its converter makes an F32 (or F16/BF16) file of the saved model, with
its architecture table, tokenizer and pre-tokenizer detection, chat template, special ids and rope scaling;
``llama-quantize`` turns that into the chosen type (K-quants, IQ types, the legacy ones), with an importance
matrix that ``llama-imatrix`` computes from the user's calibration text when asked.

Which writer a ``gguf-*`` method uses is ``QuantizationOptions.gguf_writer``: llama.cpp's tools when they are
installed (``auto``), else the package's own writer (``gguf_export.py``: Llama architecture, legacy types), which
stays for installs without a llama.cpp build.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import HfCompressError
from ..modeling import per_layer_shapes
from .gguf_export import GGUF_TYPES, gguf_file_name, gguf_type
from .llama_cpp_tools import (
    INSTALL,
    compute_imatrix,
    convert_to_gguf,
    llama_bench,
    llama_perplexity,
    quantize_gguf,
    tools_available,
)

CONVERTER_TYPES = {"F32": "f32", "F16": "f16", "BF16": "bf16"}  # written by the converter itself
IMATRIX_CONTEXT = 512  # tokens per llama-imatrix chunk (llama.cpp's default)


def gguf_writer(config) -> str:
    """'llama.cpp' or 'hfcompress': the writer a ``gguf-*`` method uses under ``config.gguf_writer``."""
    if config.gguf_writer != "auto":
        return config.gguf_writer
    return "llama.cpp" if tools_available() else "hfcompress"


def check_gguf_writer(model_config: dict, config) -> str:
    """A one-line error, before any work, for a type or option the chosen writer can't give; returns the writer."""
    writer, qtype = gguf_writer(config), gguf_type(config.method)
    if writer == "hfcompress":
        if qtype not in GGUF_TYPES:
            raise HfCompressError(f"{config.method} is written by llama.cpp's quantizer, which is not installed: {INSTALL}")
        if config.gguf_imatrix:
            raise HfCompressError(f"gguf_imatrix needs llama.cpp's llama-imatrix, which is not installed: {INSTALL}")
        if config.gguf_embedding_type is not None:
            raise HfCompressError(
                f"gguf_embedding_type is llama-quantize's setting, which is not installed: {INSTALL} (the package's "
                "own writer keeps the embedding at Q8_0 under 4- and 5-bit types)"
            )
        return writer
    if not tools_available():
        raise HfCompressError(f"gguf_writer llama.cpp: llama.cpp's tools are not installed: {INSTALL}")
    for key, value in per_layer_shapes(model_config).items():  # the converter writes one value per model
        raise HfCompressError(
            f"GGUF needs every layer to have the same shape; this model's {key} differs per layer ({value}), "
            f"which llama.cpp's converter can't write for {model_config.get('model_type')}"
        )
    return writer


def calibration_text(dataset, tokenizer, text_column: str, rows: int) -> str:
    """The first ``rows`` rows of ``dataset`` as text: its ``text_column``, or its token rows decoded."""
    if dataset is None:
        raise HfCompressError("gguf_imatrix needs calibration text: pass calibration_dataset (text or token rows)")
    rows = min(rows, len(dataset))
    if text_column in dataset.column_names:
        return "\n\n".join(dataset[text_column][:rows])
    if "input_ids" in dataset.column_names:
        return "\n\n".join(tokenizer.decode(ids, skip_special_tokens=True) for ids in dataset["input_ids"][:rows])
    raise HfCompressError(
        f"gguf_imatrix reads the calibration rows' {text_column!r} or 'input_ids' column; this dataset has "
        f"{', '.join(dataset.column_names)}"
    )


def write_gguf_with_llama_cpp(model_dir: str | os.PathLike, work: Path, config, calibration_dataset=None,
                              text_column: str = "text", tokenizer=None) -> dict:  # fmt: skip
    """``work/model-<TYPE>.gguf`` by llama.cpp's converter and quantizer; returns what the record keeps: the
    writer, whether an importance matrix was used (and over how many characters of text), and the tensors that
    fell back to another type."""
    qtype = gguf_type(config.method)
    out = work / gguf_file_name(config.method)
    if qtype in CONVERTER_TYPES:
        convert_to_gguf(model_dir, out, CONVERTER_TYPES[qtype])
        return {"writer": "llama.cpp", "imatrix": None, "fallbacks": []}
    with tempfile.TemporaryDirectory(prefix=".gguf-", dir=work) as tmp:
        source = convert_to_gguf(model_dir, Path(tmp) / "model-F32.gguf", "f32")
        imatrix = None
        if config.gguf_imatrix:
            text = calibration_text(calibration_dataset, tokenizer, text_column, config.calibration_samples)
            (Path(tmp) / "calibration.txt").write_text(text)
            imatrix = compute_imatrix(source, Path(tmp) / "calibration.txt", Path(tmp) / "imatrix.gguf", IMATRIX_CONTEXT)
        fallbacks = quantize_gguf(source, out, qtype, imatrix, embedding_type=config.gguf_embedding_type)
    record = {"rows": config.calibration_samples, "characters": len(text)} if config.gguf_imatrix else None
    return {"writer": "llama.cpp", "imatrix": record, "fallbacks": fallbacks}


def gguf_parameters(gguf: str | os.PathLike) -> int:
    """The number of weights the GGUF file holds (every tensor's elements)."""
    import gguf as gguf_py

    return sum(int(t.n_elements) for t in gguf_py.GGUFReader(str(gguf)).tensors)


def measure_gguf(gguf: str | os.PathLike, texts: dict[str, str], context: int, chunks: int | None,
                 generate_tokens: int, repetitions: int, threads: int) -> dict:  # fmt: skip
    """A GGUF file measured in llama.cpp: ``<split>_perplexity`` per text by ``llama-perplexity`` (chunks of
    ``context`` tokens, BOS first when the model adds one, each chunk's second half scored: what
    ``evaluation.lm.chunked_perplexity`` computes in transformers) with its ``<split>_perplexity_error``, and
    ``llama-bench``'s prompt tokens/s (``context`` tokens) and greedy generation tokens/s at batch 1."""
    row = {}
    with tempfile.TemporaryDirectory() as tmp:
        for split, text in texts.items():
            text_file = Path(tmp) / f"{split}.txt"
            text_file.write_text(text, encoding="utf-8")
            result = llama_perplexity(gguf, text_file, context, threads=threads, chunks=chunks)
            row |= {f"{split}_perplexity": result["perplexity"], f"{split}_perplexity_error": result["error"]}
    return row | llama_bench(gguf, context, generate_tokens, repetitions, threads)
