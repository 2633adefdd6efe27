"""GPTQ, AWQ and W8A8 through llmcompressor, saved as compressed-tensors, on tiny random causal LMs with a real
byte-level BPE tokenizer: the file holds packed 4-bit (or int8) weights, read back and dequantized here by hand;
transformers' reload computes exactly what those weights give; its logits are close to fp32; GPTQ beats plain
rounding on the data it was calibrated on; what the methods can't take is refused before any work.

llmcompressor 0.14 needs transformers 5.15-5.17: ``make test-llmc`` runs these in their own environment; elsewhere
the tests that quantize skip, and the checks that need no llmcompressor still run."""

import json

import pytest
import torch
from conftest import FAMILY_CONFIGS, make_bert, make_decoder, make_llama, make_lm_blocks, shared_bpe_tokenizer
from safetensors import safe_open

from hfcompress import HfCompressError
from hfcompress.quantization import load_quantized, quantize
from hfcompress.quantization.backends import is_llmcompressor_available
from hfcompress.quantization.compressed import calibration_rows, check_compressed_source
from hfcompress.quantization.config import check_classifier_methods

needs_llmcompressor = pytest.mark.skipif(
    not is_llmcompressor_available(),
    reason="needs llmcompressor (pip install 'hfcompress[llmcompressor]'; make test-llmc)",
)
pytestmark = pytest.mark.llmcompressor

# max |logit - fp32 logit| / max |fp32 logit| on the tiny Llama: W8A8 ~1e-2, W4A16 (group 32) ~0.1
TOLERANCE = {"gptq-w4a16": 0.2, "awq-w4a16": 0.2, "gptq-w8a8": 0.03}


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compressed") / "llama"
    make_llama(hidden=64, intermediate=128, heads=4, kv_heads=2).save_pretrained(folder)
    shared_bpe_tokenizer().save_pretrained(folder)
    return folder


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def sample_ids() -> torch.Tensor:
    return shared_bpe_tokenizer()("the quick brown fox jumps over the lazy dog", return_tensors="pt")["input_ids"]


def unpack_int4(packed: torch.Tensor, columns: int) -> torch.Tensor:
    """compressed-tensors' pack-quantized layout, read by hand: eight 4-bit values per int32, lowest bits first,
    stored with an offset of 8 (so -8..7 reads as 0..15)."""
    shifts = torch.arange(8, dtype=torch.int32) * 4
    nibbles = (packed.unsqueeze(-1) >> shifts) & 0xF  # (rows, columns / 8, 8)
    return nibbles.reshape(packed.shape[0], -1)[:, :columns] - 8


def dequantized_state(path, method: str) -> dict:
    """The fp32 weights the checkpoint stands for, computed from its int4/int8 tensors and scales here."""
    state = {}
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        for key in keys:
            if key.endswith("weight_packed"):
                base = key.removesuffix("_packed")
                rows, columns = f.get_tensor(base + "_shape").tolist()
                q = unpack_int4(f.get_tensor(key), columns).float()
                scale = f.get_tensor(base + "_scale")
                group = columns // scale.shape[1]
                if base + "_zero_point" in keys:  # asymmetric (AWQ): zero points packed along the rows
                    zero = unpack_int4(f.get_tensor(base + "_zero_point").T.contiguous(), rows).T.float()
                    q = q - zero.repeat_interleave(group, dim=1)
                state[base] = q * scale.repeat_interleave(group, dim=1)
            elif key.endswith("weight_scale") and method == "gptq-w8a8":
                base = key.removesuffix("_scale")
                state[base] = f.get_tensor(base).float() * f.get_tensor(key)
            elif not key.endswith(("_scale", "_shape", "_zero_point")) and key not in state:
                state[key] = f.get_tensor(key)
    return state


@needs_llmcompressor
@pytest.mark.parametrize("method", list(TOLERANCE))
def test_low_bit_weights_in_the_file_and_a_reload_that_computes_with_them(llama_dir, tmp_path, method):
    from transformers import AutoModelForCausalLM

    out = quantize(llama_dir, tmp_path / method, method=method, group_size=32, calibration_dataset=make_lm_blocks(),
                   max_length=24)  # fmt: skip
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors" and config["ignore"] == ["lm_head"]
    record = json.loads((out / "hfcompress_quantization.json").read_text())
    assert record["method"] == method and record["settings"]["group_size"] == 32
    assert not (out / "recipe.yaml").exists()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):  # copied, not re-saved
        assert (out / name).read_bytes() == (llama_dir / name).read_bytes()

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        if method == "gptq-w8a8":
            weight = f.get_tensor("model.layers.0.mlp.up_proj.weight")
            assert weight.dtype == torch.int8 and tuple(weight.shape) == (128, 64)
            assert tuple(f.get_tensor("model.layers.0.mlp.up_proj.weight_scale").shape) == (128, 1)  # per channel
            assert config["config_groups"]["group_0"]["input_activations"]["strategy"] == "token"
        else:
            packed = f.get_tensor("model.layers.0.mlp.up_proj.weight_packed")  # 128 x 64 weights
            assert packed.dtype == torch.int32 and tuple(packed.shape) == (128, 64 // 8)
            assert tuple(f.get_tensor("model.layers.0.mlp.up_proj.weight_scale").shape) == (128, 64 // 32)
            values = unpack_int4(packed, 64)
            assert int(values.min()) >= -8 and int(values.max()) <= 7
            assert "model.layers.0.mlp.up_proj.weight" not in f.keys()
        assert f.get_tensor("model.embed_tokens.weight").dtype == torch.float32  # tied head: full precision

    reference = logits(AutoModelForCausalLM.from_pretrained(llama_dir).eval(), sample_ids())
    reloaded = logits(load_quantized(out).eval(), sample_ids())
    assert torch.equal(reloaded, logits(AutoModelForCausalLM.from_pretrained(out).eval(), sample_ids()))
    error = float((reloaded - reference).abs().max() / reference.abs().max())
    assert 1e-4 < error < TOLERANCE[method], error  # quantized: close, not equal

    # the weights the file stands for, dequantized by hand, in a plain fp32 Llama: the same logits as the reload
    # (W8A8 also quantizes activations at run time, so only its weight-only counterpart is compared)
    plain = AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    missing, unexpected = plain.load_state_dict(dequantized_state(out, method), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    by_hand = logits(plain, sample_ids())
    if method == "gptq-w8a8":
        assert float((by_hand - reloaded).abs().max() / reference.abs().max()) < TOLERANCE[method]
    else:
        torch.testing.assert_close(by_hand, reloaded, rtol=1e-4, atol=1e-4)


@needs_llmcompressor
def test_compute_dtype_is_the_dtype_of_what_stays_unquantized(llama_dir, tmp_path):
    """bfloat16, as vLLM serves W4A16: the embedding, norms and scales in bfloat16 (half the bytes), the packed
    weights unchanged; the reload runs in bfloat16."""
    out = {dtype: quantize(llama_dir, tmp_path / dtype, method="gptq-w4a16", group_size=32, compute_dtype=dtype,
                           calibration_dataset=make_lm_blocks(), max_length=24) for dtype in ("float32", "bfloat16")}  # fmt: skip
    for dtype, folder in out.items():
        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            for name in ("model.embed_tokens.weight", "model.norm.weight", "model.layers.0.mlp.up_proj.weight_scale"):
                assert f.get_tensor(name).dtype == getattr(torch, dtype), name
            assert f.get_tensor("model.layers.0.mlp.up_proj.weight_packed").dtype == torch.int32
    embedding = 320 * 64  # values kept unquantized in the tied embedding
    saved = {dtype: (folder / "model.safetensors").stat().st_size for dtype, folder in out.items()}
    assert saved["float32"] - saved["bfloat16"] >= embedding * 2
    assert load_quantized(out["bfloat16"]).dtype == torch.bfloat16


@needs_llmcompressor
def test_gptq_beats_rounding_to_nearest_on_its_calibration_data(llama_dir, tmp_path):
    """GPTQ compensates each column's rounding error with the calibration activations: on those activations its
    model is closer to fp32 than rounding every weight to its nearest grid point, with the same grid."""
    from transformers import AutoModelForCausalLM

    blocks = make_lm_blocks(n=16, length=24)
    ids = torch.tensor(blocks["input_ids"])
    reference = logits(AutoModelForCausalLM.from_pretrained(llama_dir).eval(), ids)
    gptq = quantize(llama_dir, tmp_path / "gptq", method="gptq-w4a16", group_size=32, calibration_dataset=blocks,
                    max_length=24)  # fmt: skip
    rounded = dequantized_state(gptq, "gptq-w4a16")
    with safe_open(str(gptq / "model.safetensors"), "pt") as f:  # round to nearest on GPTQ's own scales
        plain = AutoModelForCausalLM.from_pretrained(llama_dir).eval()
        for name, weight in plain.state_dict().items():
            if name + "_scale" in {k.removesuffix("_packed") + "_scale" for k in f.keys() if k.endswith("_packed")}:
                scale = f.get_tensor(name + "_scale").repeat_interleave(32, dim=1)
                rounded[name] = torch.clamp(torch.round(weight / scale), -8, 7) * scale
    plain.load_state_dict(rounded, strict=False)
    error_rtn = float(((logits(plain, ids) - reference) ** 2).mean())
    error_gptq = float(((logits(load_quantized(gptq).eval(), ids) - reference) ** 2).mean())
    assert error_gptq < 0.9 * error_rtn, (error_gptq, error_rtn)


@needs_llmcompressor
@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
def test_gptq_on_every_family(tmp_path, family):
    from transformers import AutoModelForCausalLM

    model = make_decoder(family)  # hidden 32, intermediate 64
    model.save_pretrained(tmp_path / "src")
    shared_bpe_tokenizer().save_pretrained(tmp_path / "src")
    out = quantize(tmp_path / "src", tmp_path / "q", method="gptq-w4a16", group_size=16,
                   calibration_dataset=make_lm_blocks(), max_length=24)  # fmt: skip
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        packed = [k for k in f.keys() if k.endswith("weight_packed")]
        linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n != "lm_head"]
        assert sorted(k.removesuffix(".weight_packed") for k in packed) == sorted(linear)
    # the last hidden state: Gemma's logit soft-capping (0.05 here) would saturate a comparison of logits
    def last_hidden(m):
        with torch.no_grad():
            return m(sample_ids(), output_hidden_states=True).hidden_states[-1]

    reference, reloaded = last_hidden(model), last_hidden(AutoModelForCausalLM.from_pretrained(out).eval())
    plain = make_decoder(family)  # the file's weights, dequantized here: what the reload computes
    plain.load_state_dict(dequantized_state(out, "gptq-w4a16"), strict=False)
    torch.testing.assert_close(last_hidden(plain), reloaded, rtol=1e-4, atol=1e-4)
    # relative error of the last hidden state, measured: 0.01 (granite) to 0.06 (llama), 0.2-0.27 (gemma2/3,
    # whose random embeddings are scaled by sqrt(hidden))
    error = float((reloaded - reference).norm() / reference.norm())
    assert 1e-3 < error < 0.4, error


def test_calibration_rows_from_text_chat_and_ids():
    import datasets

    tokenizer = shared_bpe_tokenizer()
    texts = ["It is a truth universally acknowledged.", "Emma Woodhouse, handsome, clever, and rich."]
    rows = calibration_rows(datasets.Dataset.from_dict({"text": texts}), tokenizer, "text", 8, 6, min_tokens=1)
    assert sorted(rows["input_ids"]) == sorted(tokenizer(t)["input_ids"][:6] for t in texts)
    chats = [[{"role": "user", "content": "hello there!"}, {"role": "assistant", "content": "good morning"}]]
    rows = calibration_rows(datasets.Dataset.from_dict({"messages": chats}), tokenizer, "text", 8, 64, min_tokens=1)
    rendered = tokenizer.apply_chat_template(chats[0], tokenize=False)
    assert rendered.startswith("<|im_start|>user\nhello there!")
    assert rows["input_ids"] == [tokenizer(rendered, add_special_tokens=False)["input_ids"]]
    rows = calibration_rows(make_lm_blocks(n=4, length=24), tokenizer, "text", 2, 10, min_tokens=20)
    assert [len(r) for r in rows["input_ids"]] == [10, 10] and rows["attention_mask"] == [[1] * 10] * 2


def test_what_the_methods_cannot_take_is_a_one_line_error():
    llama = {**make_llama(hidden=64, intermediate=96).config.to_dict(), "architectures": ["LlamaForCausalLM"]}
    with pytest.raises(HfCompressError, match=r"intermediate_size 96 doesn't divide by it; .*: 32, 16$"):
        check_compressed_source(llama, "gptq-w4a16", 64)
    check_compressed_source(llama, "gptq-w4a16", 32)
    check_compressed_source(llama, "gptq-w8a8", 64)  # per channel: no groups
    with pytest.raises(HfCompressError, match=r"causal LMs .*BertForSequenceClassification"):
        bert = {**make_bert().config.to_dict(), "architectures": ["BertForSequenceClassification"]}
        check_compressed_source(bert, "awq-w4a16", 32)
    with pytest.raises(HfCompressError, match="calibration set too small: 20 tokens in 2 rows; .* at least 128"):
        calibration_rows(make_lm_blocks(n=2, length=10), shared_bpe_tokenizer(), "text", 8, 64, min_tokens=128)
    with pytest.raises(HfCompressError, match="needs a 'text' text column, 'messages' or 'input_ids'"):
        import datasets

        calibration_rows(datasets.Dataset.from_dict({"x": ["a"]}), shared_bpe_tokenizer(), "text", 8, 64, 1)
    with pytest.raises(HfCompressError, match="gptq-w4a16 writes compressed-tensors, a format for causal LMs"):
        check_classifier_methods(["onnx-int8-dynamic", "gptq-w4a16"])


@needs_llmcompressor
@pytest.mark.parametrize(
    "settings, message",
    [
        ({"group_size": 128}, "hidden_size 64 doesn't divide by it"),
        ({"group_size": 32}, "calibration set too small: 20 tokens"),
        ({"group_size": 32, "calibration_dataset": None}, "need calibration data"),
    ],
)
def test_refused_input_writes_nothing(llama_dir, tmp_path, settings, message):
    settings = {"calibration_dataset": make_lm_blocks(n=2, length=10), **settings}
    with pytest.raises(HfCompressError, match=message):
        quantize(llama_dir, tmp_path / "out", method="gptq-w4a16", **settings)
    assert list(tmp_path.iterdir()) == []  # no output, no temporary folder left behind


def test_a_missing_llmcompressor_names_the_extra(monkeypatch, llama_dir, tmp_path):
    from hfcompress.quantization import backends

    monkeypatch.setitem(backends.AVAILABLE, "llmcompressor", lambda: False)
    with pytest.raises(HfCompressError, match=r"pip install 'hfcompress\[llmcompressor\]'"):
        quantize(llama_dir, tmp_path / "out", method="awq-w4a16", calibration_dataset=make_lm_blocks())
    assert list(tmp_path.iterdir()) == []
