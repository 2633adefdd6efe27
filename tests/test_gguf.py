"""GGUF export of a tiny random Llama (tied embeddings, grouped KV heads, a real byte-level BPE tokenizer):
written through ``quantize``, read back by transformers (``gguf_file=``) with logits close to fp32, and the
weights stored in the file really in the chosen type (read with the gguf package's own reader)."""

import json

import pytest
import torch
from conftest import make_decoder, make_llama, shared_bpe_tokenizer

from hfcompress import HfCompressError
from hfcompress.quantization import load_quantized, quantize

gguf = pytest.importorskip("gguf", reason="needs the gguf package (pip install 'hfcompress[gguf]')")

# max |logit - fp32 logit| / max |fp32 logit| on this model: F32 exact, F16 ~3e-4, Q8_0 ~7e-3, Q4_0 ~0.13
TOLERANCE = {"gguf-f16": 2e-3, "gguf-q8_0": 2e-2, "gguf-q5_0": 0.12, "gguf-q4_1": 0.2, "gguf-q4_0": 0.25}
MATRIX_TYPE = {m: m.split("-")[1].upper() for m in TOLERANCE}
EMBEDDING_TYPE = {m: "Q8_0" if m != "gguf-f16" else "F16" for m in TOLERANCE}  # 8 bits under 4 and 5, as llama.cpp
BLOCK_BYTES = {"F16": 64, "Q8_0": 34, "Q5_0": 22, "Q4_1": 20, "Q4_0": 18}  # per 32 weights


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf") / "llama"
    model = make_llama(hidden=64, intermediate=128, heads=4, kv_heads=2)
    model.save_pretrained(folder)
    shared_bpe_tokenizer().save_pretrained(folder)
    return folder


def logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer("the quick brown fox jumps over the lazy dog", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("method", list(TOLERANCE))
def test_gguf_reloads_close_to_fp32_with_low_bit_weights_in_the_file(llama_dir, tmp_path, method):
    from transformers import AutoModelForCausalLM

    reference = logits(AutoModelForCausalLM.from_pretrained(llama_dir).eval(), shared_bpe_tokenizer())
    out = quantize(llama_dir, tmp_path / method, method=method)
    (file,) = out.glob("*.gguf")
    assert file.name == f"model-{MATRIX_TYPE[method]}.gguf"
    result = logits(load_quantized(out).eval(), shared_bpe_tokenizer())
    error = float((result - reference).abs().max() / reference.abs().max())
    assert error < TOLERANCE[method], error
    if method != "gguf-f16":
        assert error > 1e-6  # quantized: close, not equal

    reader = gguf.GGUFReader(str(file))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == types["blk.3.ffn_down.weight"] == MATRIX_TYPE[method]
    assert types["token_embd.weight"] == EMBEDDING_TYPE[method] and "output.weight" not in types  # tied
    assert types["blk.0.attn_norm.weight"] == "F32"
    # the bytes of the matrices are those of the type: Q4_0 is 18 bytes per 32 weights, Q8_0 34, F16 64
    q = next(t for t in reader.tensors if t.name == "blk.0.ffn_up.weight")  # 128 x 64 weights
    assert q.n_bytes == 128 * 64 // 32 * BLOCK_BYTES[MATRIX_TYPE[method]]
    fields = {f.name: f for f in reader.fields.values()}
    assert str(bytes(fields["general.architecture"].parts[-1]), "utf-8") == "llama"
    assert int(fields["llama.attention.head_count_kv"].parts[-1][0]) == 2
    assert "tokenizer.chat_template" in fields and "tokenizer.ggml.merges" in fields


def test_gguf_tokenizer_round_trips(llama_dir, tmp_path):
    from transformers import AutoTokenizer

    out = quantize(llama_dir, tmp_path / "f16", method="gguf-f16")
    loaded = AutoTokenizer.from_pretrained(out, gguf_file="model-F16.gguf")
    original = shared_bpe_tokenizer()
    assert loaded.get_vocab() == original.get_vocab()
    text = "The quick brown fox, again."
    mine = original(text, add_special_tokens=False)["input_ids"]
    assert loaded(text, add_special_tokens=False)["input_ids"] == mine


def test_what_gguf_cannot_hold_is_refused_before_any_work(tmp_path, llama_dir):
    qwen = make_decoder("qwen2", hidden=64, intermediate=128)
    qwen.save_pretrained(tmp_path / "qwen")
    shared_bpe_tokenizer().save_pretrained(tmp_path / "qwen")
    with pytest.raises(HfCompressError, match="GGUF export supports the llama architecture, got model_type 'qwen2'"):
        quantize(tmp_path / "qwen", tmp_path / "out", method="gguf-q8_0")
    odd = make_llama(hidden=48, intermediate=72, heads=4, kv_heads=2)  # 72 columns: not a multiple of 32
    odd.save_pretrained(tmp_path / "odd")
    shared_bpe_tokenizer().save_pretrained(tmp_path / "odd")
    with pytest.raises(HfCompressError, match="Q4_0 quantizes rows in blocks of 32; hidden_size 48, intermediate_size 72"):
        quantize(tmp_path / "odd", tmp_path / "out", method="gguf-q4_0")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))
    config = json.loads((tmp_path / "odd" / "config.json").read_text())
    assert config["hidden_size"] == 48  # F16 has no blocks: the same model is accepted there
    quantize(tmp_path / "odd", tmp_path / "f16", method="gguf-f16")


def test_the_pre_tokenizer_llama_cpp_is_told_matches_the_tokenizer(tmp_path, llama_dir):
    """llama.cpp splits text before BPE by the pattern ``tokenizer.ggml.pre`` names: GPT-2's for a plain byte-level
    BPE, GPT-2's after single digits for SmolLM2's; a tokenizer split any other way is refused before any work."""
    from hfcompress.quantization.gguf_export import pre_tokenizer_type

    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    assert pre_tokenizer_type(byte_level) == "gpt-2"
    smollm = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, byte_level]}
    assert pre_tokenizer_type(smollm) == "smollm"
    llama3 = {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "(?i:'s|'t)"}},
                                                     {**byte_level, "use_regex": False}]}  # fmt: skip
    with pytest.raises(HfCompressError, match="split text as GPT-2 does .* this one's pre-tokenizer is"):
        pre_tokenizer_type(llama3)

    out = quantize(llama_dir, tmp_path / "f16", method="gguf-f16")
    fields = gguf.GGUFReader(str(out / "model-F16.gguf")).fields
    assert str(bytes(fields["tokenizer.ggml.pre"].parts[-1]), "utf-8") == "gpt-2"  # the fixture: plain byte-level

    backend = json.loads((llama_dir / "tokenizer.json").read_text())
    backend["pre_tokenizer"] = llama3
    odd = tmp_path / "odd"
    odd.mkdir()
    for name in llama_dir.iterdir():
        (odd / name.name).write_bytes(name.read_bytes())
    (odd / "tokenizer.json").write_text(json.dumps(backend))
    with pytest.raises(HfCompressError, match="GGUF export supports byte-level BPE tokenizers that split"):
        quantize(odd, tmp_path / "out", method="gguf-q8_0")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_classifier_recipes_refuse_gguf(tmp_path):
    """A classifier pipeline refuses GGUF when its YAML is parsed (a causal_lm one takes it: test_pipeline_lm)."""
    import yaml

    from hfcompress.configs import QuantizeRecipeArguments
    from hfcompress.pipeline import load_pipeline_config

    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"stages": [{"quantize": {"methods": "onnx-int8-dynamic,gguf-q4_0"}}]}))
    with pytest.raises(HfCompressError, match="gguf-q4_0 writes GGUF, a format for causal LMs"):
        load_pipeline_config(path)
    with pytest.raises(HfCompressError, match="gguf-q4_0 writes GGUF, a format for causal LMs"):
        QuantizeRecipeArguments(methods="gguf-q4_0")


def test_gguf_embedding_type_is_a_setting(llama_dir, tmp_path):
    from hfcompress.quantization.gguf_export import export_gguf

    file = export_gguf(llama_dir, tmp_path / "all4.gguf", "Q4_0", embedding_type="Q4_0")
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(file)).tensors}
    assert types["token_embd.weight"] == types["blk.0.ffn_up.weight"] == "Q4_0"


def test_rope_base_and_scaling_are_read_as_transformers_4_and_5_write_them(tmp_path):
    """transformers 5 keeps rope in ``rope_parameters``: every export got base 10000 and scaling was never
    refused. A non-default base, saved by whichever transformers runs this, lands in the GGUF."""
    from hfcompress.modeling import rope_settings

    v4 = {"rope_theta": 100000.0, "rope_scaling": None}
    v5 = {"rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}}
    llama3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": 64}  # fmt: skip
    assert rope_settings(v4) == rope_settings(v5) == (100000.0, None)
    assert rope_settings({"rope_theta": 5e5, "rope_scaling": llama3}) == (5e5, llama3)
    assert rope_settings({"rope_parameters": {**llama3, "rope_theta": 5e5}}) == (5e5, llama3)
    assert rope_settings({}) == (10000.0, None)
    gemma3 = {"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                                  "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}}  # fmt: skip
    assert rope_settings(gemma3) == (1e6, None)

    model = make_llama(hidden=64, intermediate=128, heads=4, kv_heads=2)
    model.config.rope_theta = 100000.0  # SmolLM2's base
    if hasattr(model.config, "rope_parameters") and model.config.rope_parameters:
        model.config.rope_parameters["rope_theta"] = 100000.0
    model.save_pretrained(tmp_path / "base")
    shared_bpe_tokenizer().save_pretrained(tmp_path / "base")
    assert rope_settings(json.loads((tmp_path / "base" / "config.json").read_text()))[0] == 100000.0
    quantize(tmp_path / "base", tmp_path / "out", method="gguf-f16")
    reader = gguf.GGUFReader(next((tmp_path / "out").glob("*.gguf")))
    assert float(reader.fields["llama.rope.freq_base"].contents()) == 100000.0

    scaled = make_llama(hidden=64, intermediate=128, heads=4, kv_heads=2)
    scaled.config.rope_scaling = dict(llama3)  # an alias of rope_parameters under transformers 5
    scaled.config.rope_theta = 5e5
    scaled.save_pretrained(tmp_path / "scaled")
    shared_bpe_tokenizer().save_pretrained(tmp_path / "scaled")
    with pytest.raises(HfCompressError, match="GGUF export with rope scaling .*llama3.* is not supported"):
        quantize(tmp_path / "scaled", tmp_path / "out2", method="gguf-f16")
    assert not (tmp_path / "out2").exists()


def test_per_layer_shapes_are_refused_by_every_exporter_that_writes_one_value(tmp_path):
    from hfcompress.modeling import per_layer_shapes
    from hfcompress.quantization.compressed import check_compressed_source
    from hfcompress.quantization.gguf_export import check_gguf_source

    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64,
              "intermediate_size": [128, 96], "num_attention_heads": 4, "num_key_value_heads": 2}  # fmt: skip
    assert per_layer_shapes(config) == {"intermediate_size": [128, 96]}
    with pytest.raises(HfCompressError, match=r"intermediate_size differs per layer \(\[128, 96\]\)"):
        check_gguf_source(config, "Q8_0")
    with pytest.raises(HfCompressError, match="gptq-w4a16 needs every layer to have the same shape; intermediate_size"):
        check_compressed_source(config, "gptq-w4a16", 32)
