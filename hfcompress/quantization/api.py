"""``quantize``: one entry point from a saved full-precision model to a saved quantized artifact.

Every method writes into a temporary folder next to ``output_dir`` and renames it into place only when
complete, so a failure leaves no half-written output and never touches an earlier result. The artifact
holds the tokenizer and ``hfcompress_quantization.json`` (method, settings, source), and loads with
``load_quantized`` or directly: plain ``from_pretrained`` for bitsandbytes and torchao, ``ORTModelFor...`` for
ONNX.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import HfCompressError
from ..modeling import is_causal_lm
from .backends import require_backend
from .config import QuantizationConfig, causal_lm_refusal, compressed_tensors_method, gguf_method

RECORD = "hfcompress_quantization.json"


def check_method_fits(model_dir: str | os.PathLike, config: QuantizationConfig) -> None:
    """Refuse, before any work, a method the saved model can't go through: a classifier-only method for a causal
    LM; an architecture, a shape or a tokenizer GGUF can't hold; a model or a group size compressed-tensors
    can't take."""
    model_dir = Path(model_dir)
    model_config = json.loads((model_dir / "config.json").read_text())
    if is_causal_lm(model_dir) and causal_lm_refusal(config.method):
        raise HfCompressError(f"{config.method} {causal_lm_refusal(config.method)}")
    if config.backend == "qad":
        from .qad import check_qad_source

        check_qad_source(model_config, config)
        if gguf_method(config.method):  # the GGUF writer's own checks, on the method that writes the file
            config = dataclasses.replace(config, method=gguf_method(config.method))
    if config.backend == "gguf":
        from .gguf_export import check_gguf_source, check_gguf_tokenizer, gguf_type
        from .gguf_llama_cpp import check_gguf_writer

        if check_gguf_writer(model_config, config) == "hfcompress":
            check_gguf_source(model_config, gguf_type(config.method))
            check_gguf_tokenizer(model_dir)
    if config.backend == "llmcompressor":
        from .compressed import check_compressed_source

        check_compressed_source(model_config, config.method, config.group_size)


def _check_source(model_dir: Path) -> None:
    if not (model_dir / "config.json").is_file():
        raise HfCompressError(f"{model_dir} is not a saved model folder (no config.json)")
    config = json.loads((model_dir / "config.json").read_text())
    if config.get("quantization_config") or (model_dir / RECORD).exists():
        method = config.get("quantization_config", {}).get("quant_method") or json.loads(
            (model_dir / RECORD).read_text()
        ).get("method")
        raise HfCompressError(
            f"{model_dir} is already quantized ({method}); quantize the full-precision model it came from"
        )
    if any(model_dir.glob("*.onnx")):
        raise HfCompressError(
            f"{model_dir} holds an ONNX model; quantize the PyTorch model it was exported from"
        )


# what a saved tokenizer may consist of; copied byte for byte into the artifact
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json")  # fmt: skip


def copy_tokenizer(model_dir: Path, out: Path, tokenizer) -> None:
    """The source's tokenizer files, copied as they are: re-saving would relabel the tokenizer with the running
    transformers' class (5.x writes ``TokenizersBackend``, which 4.x can't load). Saved anew only when the
    source has none of these files."""
    files = [model_dir / name for name in TOKENIZER_FILES if (model_dir / name).is_file()]
    if not files:
        tokenizer.save_pretrained(out)
    for file in files:
        shutil.copyfile(file, out / file.name)


def calibration_features(
    dataset, tokenizer, input_names: list[str], text_column: str, samples: int, max_length: int, seed: int = 0
):
    """The ONNX inputs for static calibration: ``samples`` examples, tokenized from ``text_column`` unless the
    dataset already holds the inputs."""
    if dataset is None:
        raise HfCompressError("onnx-int8-static needs calibration data (examples of the task's own text)")
    columns = dataset.column_names
    dataset = dataset.shuffle(seed=seed).select(range(min(samples, len(dataset))))
    if not all(name in columns for name in input_names):
        if text_column not in columns:
            raise HfCompressError(
                f"calibration data needs a {text_column!r} text column or the model inputs "
                f"{', '.join(input_names)}; it has {', '.join(columns)}"
            )
        dataset = dataset.map(
            # one fixed length: the percentile and entropy calibrators stack all activations into one array
            lambda batch: tokenizer(
                batch[text_column], truncation=True, max_length=max_length, padding="max_length"
            ),
            batched=True,
        )
    return dataset.remove_columns([c for c in dataset.column_names if c not in input_names])


def quantize(
    model_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    config: QuantizationConfig | None = None,
    calibration_dataset=None,
    text_column: str = "text",
    max_length: int = 128,
    overwrite: bool = False,
    **settings,
) -> Path:
    """Quantize the model saved in ``model_dir`` into ``output_dir``; returns ``output_dir``.

    ``config`` or keyword ``settings`` (fields of ``QuantizationConfig``, e.g. ``method="bnb-nf4"``) choose
    the method. ``calibration_dataset`` (static ONNX int8, GPTQ, AWQ): raw text in ``text_column``, chat
    ``messages`` (GPTQ/AWQ) or tokenized rows; ``max_length`` tokens of each row are used.
    """
    config = config or QuantizationConfig(**settings)
    require_backend(config.method)
    model_dir, output_dir = Path(model_dir), Path(output_dir)
    _check_source(model_dir)
    check_method_fits(model_dir, config)
    causal = is_causal_lm(model_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise HfCompressError(
            f"{output_dir} already exists and is not empty; pass overwrite=True to replace it"
        )
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    extra = {}  # what the record keeps besides the method and its settings
    try:
        if config.backend == "qad":
            from .qad import quantize_qad

            extra = quantize_qad(model_dir, work, config, calibration_dataset, text_column, max_length)
        elif config.backend == "gguf":
            from .gguf_export import export_gguf, gguf_file_name, gguf_type
            from .gguf_llama_cpp import gguf_writer, write_gguf_with_llama_cpp

            if gguf_writer(config) == "llama.cpp":
                extra = write_gguf_with_llama_cpp(model_dir, work, config, calibration_dataset, text_column, tokenizer)
            else:
                export_gguf(model_dir, work / gguf_file_name(config.method), gguf_type(config.method))
                extra = {"writer": "hfcompress"}
        elif config.backend == "llmcompressor":
            from .compressed import quantize_compressed

            quantize_compressed(model_dir, work, config, calibration_dataset, text_column, max_length)
        elif config.backend == "bitsandbytes":
            from .bnb import quantize_bnb

            quantize_bnb(model_dir, work, config, causal_lm=causal)
        elif config.backend == "torchao":
            from .torchao_int8 import quantize_torchao

            quantize_torchao(model_dir, work, config)
        elif causal:  # onnx-int8-dynamic with the KV cache
            from .causal_lm import quantize_onnx_causal_lm

            quantize_onnx_causal_lm(model_dir, work, config)
            shutil.rmtree(work / "fp32")
        elif config.method == "onnx-fp32":
            from .onnx import export_onnx

            export_onnx(model_dir, work)
        else:
            from .onnx import export_onnx, onnx_inputs, quantize_onnx

            exported = work / "fp32"
            export_onnx(model_dir, exported)
            calibration = None
            if config.method == "onnx-int8-static":
                calibration = calibration_features(
                    calibration_dataset,
                    tokenizer,
                    onnx_inputs(exported),
                    text_column,
                    config.calibration_samples,
                    # calibration pads to one length: never past the model's position embeddings
                    min(
                        max_length,
                        json.loads((model_dir / "config.json").read_text()).get(
                            "max_position_embeddings", max_length
                        ),
                    ),
                )
            quantize_onnx(exported, work, config, calibration)
            shutil.rmtree(exported)
        copy_tokenizer(model_dir, work, tokenizer)
        record = {"method": config.method, "settings": config.to_dict(), "source": str(model_dir),
                  "causal_lm": causal, **extra}  # fmt: skip
        (work / RECORD).write_text(json.dumps(record, indent=2) + "\n")
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(work, output_dir)
    finally:
        if work.exists():
            shutil.rmtree(work)
    return output_dir


def gguf_file(path: str | os.PathLike) -> Path | None:
    """The GGUF file of a ``quantize`` artifact, or None when ``path`` holds another format."""
    record_file = Path(path) / RECORD
    method = json.loads(record_file.read_text()).get("method") if record_file.exists() else None
    if not (method and gguf_method(method)):
        return None
    from .gguf_export import gguf_file_name

    return Path(path) / gguf_file_name(gguf_method(method))


def load_quantized(path: str | os.PathLike, denormal_as_zero: bool = True, threads: int | None = None):
    """Load an artifact written by ``quantize`` (a PyTorch or ONNX Runtime sequence classifier or causal LM; a GGUF causal LM,
    dequantized by transformers; a compressed-tensors causal LM, which transformers runs compressed).

    ONNX artifacts run with ``threads`` intra-op threads (default: PyTorch's count, so the two runtimes are
    compared on the same cores) and ``onnx.session_options(denormal_as_zero)``: flushing denormals to zero is
    what makes ONNX Runtime's attention softmax fast on x86 (see ``hfcompress.quantization.onnx``).

    Process-wide side effect: ONNX Runtime applies that option to its own threads, but to the calling thread
    (which does a share of every run) only for the first session of the process, so when an earlier session
    (an export, a calibration) came first the calling thread would keep denormals and hold every run back.
    With ``denormal_as_zero`` this function therefore calls ``torch.set_flush_denormal(True)`` on the calling
    thread, and leaves it set: later PyTorch work on that thread (training too) flushes denormals to zero.
    That changes results only where values below 1e-38 matter; call ``torch.set_flush_denormal(False)`` to
    undo it, or pass ``denormal_as_zero=False``."""
    path = Path(path)
    record = json.loads((path / RECORD).read_text()) if (path / RECORD).exists() else {}
    method = record.get("method")
    causal = record.get("causal_lm", False) or is_causal_lm(path)
    if method and method.startswith("onnx") and causal:
        require_backend(method)
        import torch

        from .causal_lm import load_onnx_causal_lm

        model = load_onnx_causal_lm(path, threads=threads or torch.get_num_threads())
        if denormal_as_zero:
            torch.set_flush_denormal(True)  # process-wide, on purpose: see the docstring
        return model
    if method and method.startswith("onnx"):
        require_backend(method)
        from optimum.onnxruntime import ORTModelForSequenceClassification

        from .onnx import session_options

        file_name = "model.onnx" if method == "onnx-fp32" else "model_quantized.onnx"
        import torch

        options = session_options(denormal_as_zero, threads or torch.get_num_threads())
        model = ORTModelForSequenceClassification.from_pretrained(
            path, file_name=file_name, session_options=options
        )
        if denormal_as_zero:
            torch.set_flush_denormal(True)  # process-wide, on purpose: see the docstring
        return model
    if method and gguf_method(method):  # a causal LM, dequantized to fp32 by transformers
        require_backend(method)
        import torch
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf_file(path).name, dtype=torch.float32)
    if method and compressed_tensors_method(method):
        from .backends import is_compressed_tensors_available

        if not is_compressed_tensors_available():
            raise HfCompressError(
                f"{path} holds a compressed-tensors checkpoint ({method}): pip install compressed-tensors"
            )
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(path)
    if method and method.startswith("bnb"):
        require_backend(method)
        from transformers import AutoModelForCausalLM

        from .bnb import load_bnb

        return load_bnb(path, model_class=AutoModelForCausalLM if causal else None)
    if method and method.startswith("torchao"):
        require_backend(method)
        from .torchao_int8 import quiet_torchao

        quiet_torchao()
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return (AutoModelForCausalLM if causal else AutoModelForSequenceClassification).from_pretrained(path)
