"""Quantized causal LMs on a tiny Llama: ONNX Runtime int8 with the KV cache, bitsandbytes int8/nf4."""

import pytest
import torch
from conftest import make_bpe_tokenizer, make_llama
from transformers import AutoModelForCausalLM

from hfcompress import HfCompressError
from hfcompress.evaluation.lm import generation_call, strided_perplexity
from hfcompress.pruning.structured import prune_attention_heads
from hfcompress.quantization import QuantizationConfig, is_bitsandbytes_available, is_optimum_onnx_available

TEXT = "the film was great and the story was fun but the acting was bad and the music was dull " * 8


@pytest.fixture
def saved(tmp_path):
    """A tiny Llama whose KV groups were pruned (so head_dim != hidden / heads) with its tokenizer."""
    tokenizer = make_bpe_tokenizer(tmp_path / 'bpe')
    model = make_llama(num_layers=2, vocab_size=len(tokenizer))
    prune_attention_heads(model, {0: [1], 1: [0]})  # 2 -> 1 KV groups: 2 query heads of 8 dims, hidden 32
    model.save_pretrained(tmp_path / "fp32")
    tokenizer.save_pretrained(tmp_path / "fp32")
    return tmp_path / "fp32", tokenizer, model.eval()


@pytest.mark.onnx
@pytest.mark.skipif(not is_optimum_onnx_available(), reason="needs the [onnx] extra")
def test_onnx_int8_with_kv_cache_reloads_generates_and_scores(saved, tmp_path):
    from hfcompress.quantization.causal_lm import load_onnx_causal_lm, quantize_onnx_causal_lm

    folder, tokenizer, model = saved
    quantize_onnx_causal_lm(folder, tmp_path / "int8")
    assert (tmp_path / "int8" / "model_quantized.onnx").exists()
    for quantized in (False, True):
        onnx = load_onnx_causal_lm(
            tmp_path / "int8" / "fp32" if not quantized else tmp_path / "int8", quantized
        )
        prompt = torch.tensor([tokenizer(TEXT, add_special_tokens=False)["input_ids"][:6]])
        out = generation_call(onnx, prompt, 5, tokenizer.pad_token_id)  # the KV cache, past the head_dim fix
        assert out.shape == (1, 11)
        ours = strided_perplexity(onnx, tokenizer, TEXT, max_length=32, stride=16)
        torch_ppl = strided_perplexity(model, tokenizer, TEXT, max_length=32, stride=16)["perplexity"]
        tolerance = 0.2 if quantized else 1e-3
        assert abs(ours["perplexity"] / torch_ppl - 1) < tolerance
        if not quantized:  # fp32 ONNX generates what PyTorch generates
            assert torch.equal(out, generation_call(model, prompt, 5, tokenizer.pad_token_id))


@pytest.mark.bnb
@pytest.mark.skipif(not is_bitsandbytes_available(), reason="needs the [bnb] extra")
@pytest.mark.parametrize("method", ["bnb-int8", "bnb-nf4"])
def test_bnb_causal_lm_loads_saves_reloads_and_generates(tmp_path, method):
    from hfcompress.quantization.causal_lm import load_bnb_causal_lm

    # bitsandbytes' 4-bit CPU kernel needs output sizes divisible by its block (64 here, as in real models)
    tokenizer = make_bpe_tokenizer(tmp_path / 'bpe')
    model = make_llama(
        num_layers=2, hidden=64, heads=2, kv_heads=2, intermediate=128, vocab_size=len(tokenizer)
    )
    folder = tmp_path / "fp32"
    model.save_pretrained(folder)
    quantized = load_bnb_causal_lm(folder, QuantizationConfig(method=method))
    assert type(quantized.lm_head) is torch.nn.Linear  # the LM head stays in full precision
    quantized.save_pretrained(tmp_path / method)
    again = AutoModelForCausalLM.from_pretrained(tmp_path / method)
    prompt = torch.tensor([tokenizer(TEXT, add_special_tokens=False)["input_ids"][:6]])
    assert generation_call(again, prompt, 4, tokenizer.pad_token_id).shape == (1, 10)
    ppl = strided_perplexity(again, tokenizer, TEXT, max_length=32, stride=16)["perplexity"]
    reference = strided_perplexity(model, tokenizer, TEXT, max_length=32, stride=16)["perplexity"]
    assert abs(ppl / reference - 1) < 0.2


@pytest.mark.onnx
@pytest.mark.skipif(not is_optimum_onnx_available(), reason="needs the [onnx] extra")
def test_onnx_int8_can_keep_the_output_projection_in_fp32(saved, tmp_path):
    import onnx

    from hfcompress.quantization.causal_lm import output_projection, quantize_onnx_causal_lm

    folder, _, _ = saved
    graphs = {}
    for keep in (False, True):
        out = tmp_path / f"keep{keep}"
        quantize_onnx_causal_lm(folder, out, QuantizationConfig(method="onnx-int8-dynamic", keep_output_fp32=keep))
        graphs[keep] = onnx.load(str(out / "model_quantized.onnx")).graph
    head = output_projection(tmp_path / "keepTrue" / "fp32" / "model.onnx")
    assert "lm_head" in head
    for keep, graph in graphs.items():
        names = {n.name: n.op_type for n in graph.node}
        # kept: the head is still a float MatMul; else ONNX Runtime replaced it (MatMulInteger and friends)
        assert (names.get(head) == "MatMul") is keep
        assert "MatMulInteger" in names.values()  # every other projection is int8 either way


@pytest.mark.onnx
@pytest.mark.skipif(not is_optimum_onnx_available(), reason="needs the [onnx] extra")
def test_onnx_int8_keeps_the_named_matmuls_in_fp32(saved, tmp_path):
    import onnx

    from hfcompress.quantization.causal_lm import export_onnx_causal_lm, quantize_exported_causal_lm

    folder, _, _ = saved
    export_onnx_causal_lm(folder, tmp_path / "onnx")
    quantize_exported_causal_lm(
        tmp_path / "onnx", tmp_path / "q", QuantizationConfig(method="onnx-int8-dynamic", keep_fp32="down_proj")
    )
    before = [n.name for n in onnx.load(str(tmp_path / "onnx" / "model.onnx")).graph.node if n.op_type == "MatMul"]
    after = {n.name: n.op_type for n in onnx.load(str(tmp_path / "q" / "model_quantized.onnx")).graph.node}
    down = [name for name in before if "down_proj" in name]
    assert len(down) == 2  # one per layer of the tiny Llama
    assert all(after.get(name) == "MatMul" for name in down)  # left in fp32
    others = [name for name in before if "proj" in name and "down_proj" not in name]
    assert others and not any(after.get(name) == "MatMul" for name in others)  # replaced by int8 ops
    with pytest.raises(HfCompressError, match="keep_fp32 nope: no MatMul node name contains it; names look like /"):
        quantize_exported_causal_lm(
            tmp_path / "onnx", tmp_path / "q2", QuantizationConfig(method="onnx-int8-dynamic", keep_fp32="nope")
        )


@pytest.mark.onnx
@pytest.mark.skipif(not is_optimum_onnx_available(), reason="needs the [onnx] extra")
def test_quantize_entry_point_takes_causal_lms(saved, tmp_path):
    """``quantize`` sees a causal LM in the folder: ONNX int8 keeps the KV cache (and its export does not stay
    behind), ``load_quantized`` gives a causal LM back, and a classifier-only method is refused first."""
    import json

    from optimum.onnxruntime import ORTModelForCausalLM

    from hfcompress.quantization import load_quantized, quantize

    folder, tokenizer, model = saved
    out = quantize(folder, tmp_path / "onnx", method="onnx-int8-dynamic")
    assert sorted(p.name for p in out.glob("*.onnx")) == ["model_quantized.onnx"] and not (out / "fp32").exists()
    assert json.loads((out / "hfcompress_quantization.json").read_text())["causal_lm"] is True
    reloaded = load_quantized(out)
    assert isinstance(reloaded, ORTModelForCausalLM)
    prompt = torch.tensor([tokenizer(TEXT, add_special_tokens=False)["input_ids"][:6]])
    assert generation_call(reloaded, prompt, 3, tokenizer.pad_token_id).shape == (1, 9)
    ours = strided_perplexity(reloaded, tokenizer, TEXT, max_length=32, stride=16)["perplexity"]
    reference = strided_perplexity(model, tokenizer, TEXT, max_length=32, stride=16)["perplexity"]
    assert ours != reference and abs(ours / reference - 1) < 0.2
    with pytest.raises(HfCompressError, match="onnx-int8-static is for classifiers; a causal LM takes bnb-int8"):
        quantize(folder, tmp_path / "static", method="onnx-int8-static")
    assert not (tmp_path / "static").exists()


@pytest.mark.bnb
@pytest.mark.skipif(not is_bitsandbytes_available(), reason="needs the [bnb] extra")
def test_quantize_entry_point_bnb_causal_lm(tmp_path):
    from hfcompress.quantization import load_quantized, quantize

    tokenizer = make_bpe_tokenizer(tmp_path / "bpe")
    model = make_llama(num_layers=2, hidden=64, heads=2, kv_heads=2, intermediate=128, vocab_size=len(tokenizer))
    model.save_pretrained(tmp_path / "fp32")
    tokenizer.save_pretrained(tmp_path / "fp32")
    reloaded = load_quantized(quantize(tmp_path / "fp32", tmp_path / "int8", method="bnb-int8"))
    assert type(reloaded).__name__ == "LlamaForCausalLM" and type(reloaded.lm_head) is torch.nn.Linear
    assert type(reloaded.model.layers[0].mlp.down_proj).__name__ == "Linear8bitLt"
    ppl = strided_perplexity(reloaded, tokenizer, TEXT, max_length=32, stride=16)["perplexity"]
    reference = strided_perplexity(model, tokenizer, TEXT, max_length=32, stride=16)["perplexity"]
    assert abs(ppl / reference - 1) < 0.2
