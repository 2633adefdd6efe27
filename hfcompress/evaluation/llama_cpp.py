"""A GGUF file measured in llama.cpp itself (through ``llama-cpp-python``): perplexity from llama.cpp's own
logits, over the same token windows as ``strided_perplexity``, and its generation and prompt speeds.

    llm = load_llama_cpp("student-gguf/model-Q8_0.gguf", threads=2)
    strided_perplexity_llama_cpp(llm, token_ids, window=256, stride=128)

``llama-cpp-python`` builds llama.cpp from source (``pip install 'hfcompress[llama-cpp]'``, 12-18 minutes on two
cores). On Xeon CPUs with AMX, quantized files crashed in llama.cpp's AMX path; building with
``CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_AVX512=OFF"``
runs them (docs/quantization.md).
"""

from __future__ import annotations

import numpy as np

from ..errors import HfCompressError


def load_llama_cpp(gguf_file, context: int = 512, threads: int | None = None):
    """A ``llama_cpp.Llama`` that keeps the logits of every position (what perplexity needs)."""
    try:
        from llama_cpp import Llama
    except ImportError:
        raise HfCompressError(
            "running GGUF in llama.cpp needs llama-cpp-python: pip install 'hfcompress[llama-cpp]' "
            "(it builds llama.cpp from source)"
        ) from None
    import torch

    return Llama(model_path=str(gguf_file), n_ctx=context, n_batch=context, n_threads=threads or
                 torch.get_num_threads(), logits_all=True, verbose=False)  # fmt: skip


def window_logits(llm, tokens: list[int]) -> np.ndarray:
    """llama.cpp's logits for every position of ``tokens`` (one fresh sequence)."""
    llm.reset()
    llm.eval(tokens)
    return np.asarray(llm.scores[: len(tokens)], dtype=np.float64)


def strided_perplexity_llama_cpp(llm, ids: list[int], window: int, stride: int) -> dict:
    """Perplexity of ``ids`` with windows of ``window`` tokens every ``stride``, each token scored once with the
    most context its window gives: the same windows and tokens as ``hfcompress.evaluation.lm.strided_perplexity``."""
    if window > llm.n_ctx():
        raise HfCompressError(f"window {window} is longer than the llama.cpp context {llm.n_ctx()}")
    from .lm import strided_windows

    nll, count = 0.0, 0
    for begin, end, previous_end in strided_windows(len(ids), window, stride):
        logits = window_logits(llm, ids[begin:end])
        first = max(previous_end, begin + 1)  # tokens scored by an earlier window are context only
        targets = np.asarray(ids[first:end])
        rows = logits[first - 1 - begin : end - 1 - begin]  # position i predicts token i + 1
        peak = rows.max(axis=1, keepdims=True)
        log_z = np.log(np.exp(rows - peak).sum(axis=1)) + peak[:, 0]
        nll += float((log_z - rows[np.arange(len(targets)), targets]).sum())
        count += len(targets)
    return {"perplexity": float(np.exp(nll / count)), "tokens": count}


def greedy_generate(llm, prompt: list[int], new_tokens: int) -> list[int]:
    """Greedy decoding of exactly ``new_tokens`` tokens after ``prompt`` (never stopping at the end-of-sequence
    token), as ``hfcompress.evaluation.lm.generation_call`` times transformers models."""
    llm.reset()
    llm.eval(prompt)
    eos, generated = llm.token_eos(), []
    for _ in range(new_tokens):
        row = np.array(llm.scores[llm.n_tokens - 1])
        row[eos] = -np.inf
        generated.append(int(row.argmax()))
        llm.eval(generated[-1:])
    return generated
