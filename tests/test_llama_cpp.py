"""GGUF in llama.cpp (llama-cpp-python): the perplexity arithmetic over llama.cpp's logits scores exactly the
tokens ``strided_perplexity`` scores (checked with a stand-in whose logits come from a tiny PyTorch model), and,
where llama-cpp-python is built (``slow``), a GGUF written by hfcompress runs in llama.cpp with logits close to
transformers' reading of the same file and llama.cpp's tokenizer giving the same ids."""

import numpy as np
import pytest
import torch
from conftest import make_llama, shared_bpe_tokenizer

from hfcompress.evaluation.llama_cpp import strided_perplexity_llama_cpp
from hfcompress.evaluation.lm import strided_perplexity

TEXT = "\n\n".join(  # paragraphs: GPT-2's pattern splits "\n\n" before a word as "\n", "\n" (llama.cpp's default
    # pattern would not); digits too
    ["It is a truth universally acknowledged, that a single man in possession of a good fortune must be in want "
     "of a wife. Emma Woodhouse, handsome, clever, and rich, seemed to unite some of the best blessings.",
     '"My dear Mr. Bennet," said his lady to him one day, "have you heard that Netherfield Park is let at last?"',
     "Chapter 12, in the year 1811: 4,000 a year."]
)  # fmt: skip


class TorchAsLlamaCpp:
    """The part of ``llama_cpp.Llama`` the perplexity uses (reset, eval, scores, n_ctx), backed by a torch model."""

    def __init__(self, model, context=64):
        self.model, self.context, self.tokens = model, context, []

    def n_ctx(self):
        return self.context

    def reset(self):
        self.tokens = []

    def eval(self, tokens):
        self.tokens += list(tokens)
        with torch.no_grad():
            self.scores = self.model(torch.tensor([self.tokens])).logits[0].double().numpy()


@pytest.mark.parametrize("window, stride", [(32, 16), (32, 32), (24, 7)])
def test_llama_cpp_perplexity_scores_the_tokens_strided_perplexity_scores(window, stride):
    model, tokenizer = make_llama(hidden=64, intermediate=128), shared_bpe_tokenizer()
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    expected = strided_perplexity(model, tokenizer, TEXT, window, stride)
    result = strided_perplexity_llama_cpp(TorchAsLlamaCpp(model), ids, window, stride)
    assert result["tokens"] == expected["tokens"]
    # overlapping windows score every token but the first; back-to-back ones leave each window's first out
    assert result["tokens"] == (len(ids) - 1 if stride < window else len(ids) - -(-len(ids) // window))
    assert result["perplexity"] == pytest.approx(expected["perplexity"], rel=1e-6)


@pytest.mark.slow
def test_a_gguf_written_here_runs_in_llama_cpp(tmp_path):
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (pip install 'hfcompress[llama-cpp]')")
    pytest.importorskip("gguf", reason="needs the gguf package")
    from hfcompress.evaluation.llama_cpp import load_llama_cpp, window_logits
    from hfcompress.quantization import load_quantized, quantize

    model = make_llama(hidden=64, intermediate=128, heads=4, kv_heads=2)
    model.save_pretrained(tmp_path / "llama")
    tokenizer = shared_bpe_tokenizer()
    tokenizer.save_pretrained(tmp_path / "llama")
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    assert len(ids) <= 256  # one window
    for method in ("gguf-f16", "gguf-q8_0", "gguf-q4_0"):
        out = quantize(tmp_path / "llama", tmp_path / method, method=method)
        (file,) = out.glob("*.gguf")
        llm = load_llama_cpp(file, context=256, threads=1)
        assert llm.tokenize(TEXT.encode(), add_bos=False, special=False) == ids  # the embedded tokenizer
        with torch.no_grad():
            reference = load_quantized(out)(torch.tensor([ids])).logits[0].double().numpy()
        ours = window_logits(llm, ids)
        # transformers dequantizes the same file to fp32; llama.cpp computes with the quantized blocks (and 8-bit
        # activations against them): measured 2e-4 (F16), 4e-3 (Q8_0), 5e-3 (Q4_0) of the largest logit
        error = float(np.abs(ours - reference).max() / np.abs(reference).max())
        assert error < {"gguf-f16": 2e-3, "gguf-q8_0": 2e-2, "gguf-q4_0": 2e-2}[method], (method, error)
