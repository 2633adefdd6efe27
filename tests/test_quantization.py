"""Quantization: k-bit analysis, config checks, ONNX Runtime int8 and bitsandbytes on tiny models, bad input."""

import json

import datasets
import pytest
import torch
from conftest import make_bert, make_text_dataset, make_tokenizer
from transformers import AutoModelForSequenceClassification, FNetConfig, FNetForSequenceClassification

from hfcompress import HfCompressError
from hfcompress.quantization import (
    QuantizationConfig,
    backends,
    is_bitsandbytes_available,
    is_optimum_onnx_available,
    is_torchao_available,
    kbit_error_report,
    linear_quantize,
    load_quantized,
    quantize,
)

needs_onnx = pytest.mark.skipif(not is_optimum_onnx_available(), reason="needs the [onnx] extra")
needs_bnb = pytest.mark.skipif(not is_bitsandbytes_available(), reason="needs the [bnb] extra")
needs_torchao = pytest.mark.skipif(
    not is_torchao_available() or backends.transformers_major() < 5,
    reason="needs the [torchao] extra and transformers>=5 (make test-v5)",
)


@pytest.fixture
def saved(tmp_path):
    """A tiny fine-tuned-looking classifier saved with its tokenizer, and a few texts."""
    tok = make_tokenizer(tmp_path)
    model = make_bert(num_layers=2, tokenizer=tok, seed=3).eval()
    model.save_pretrained(tmp_path / "fp32")
    tok.save_pretrained(tmp_path / "fp32")
    texts = list(make_text_dataset(16)["text"])
    return tmp_path / "fp32", tok, model, texts


def logits(model, tok, texts):
    inputs = tok(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        return model(**inputs).logits


def test_linear_quantize_levels_and_error():
    torch.manual_seed(0)
    w = torch.randn(64, 64)
    for bits in (2, 4, 8):
        q = linear_quantize(w, bits)
        assert len(torch.unique(q)) <= 2**bits
        assert q.min() >= w.min() - 1e-6 and q.max() <= w.max() + 1e-6
    report = kbit_error_report(
        torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    )
    assert set(report) == {"0", "2"}
    errors = [report["0"][b] for b in range(2, 9)]
    assert all(a > b for a, b in zip(errors, errors[1:])) and errors[-1] < 0.01  # more bits, less error


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(method="int3"), "quantization method must be one of"),
        (dict(preset="avx9"), "preset must be one of"),
        (dict(calibration_samples=0), "calibration_samples must be >= 1"),
        (dict(compute_dtype="int8"), "compute_dtype must be one of"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(HfCompressError, match=message):
        QuantizationConfig(**kwargs)


def test_missing_backend_names_the_extra(saved, tmp_path, monkeypatch):
    monkeypatch.setitem(backends.AVAILABLE, "optimum-onnx", lambda: False)
    monkeypatch.setitem(backends.AVAILABLE, "bitsandbytes", lambda: False)
    with pytest.raises(
        HfCompressError, match=r"needs optimum-onnx, which is not installed: pip install 'hfcompress\[onnx\]'"
    ):
        quantize(saved[0], tmp_path / "q", method="onnx-int8-dynamic")
    with pytest.raises(HfCompressError, match=r"hfcompress\[bnb\]"):
        quantize(saved[0], tmp_path / "q", method="bnb-nf4")
    monkeypatch.setitem(backends.AVAILABLE, "torchao", lambda: False)
    with pytest.raises(
        HfCompressError, match=r"needs torchao, which is not installed: .*hfcompress\[torchao\]"
    ):
        quantize(saved[0], tmp_path / "q", method="torchao-int8")
    monkeypatch.setitem(backends.AVAILABLE, "torchao", lambda: True)
    monkeypatch.setattr(backends, "transformers_major", lambda: 4)
    with pytest.raises(
        HfCompressError, match=r"'torchao-int8' needs transformers>=5 \(found .*use onnx-int8"
    ):
        quantize(saved[0], tmp_path / "q", method="torchao-int8")
    assert not (tmp_path / "q").exists()


def card_snippet_model(artifact, method, kind):
    """Run the usage snippet of the model card ``share_variant`` would write, with the repo id replaced by the
    local artifact folder; returns the ``model`` it loads."""
    from hfcompress.hub import CompressionInfo, build_model_card

    info = CompressionInfo(
        kind=kind,
        base_model="tiny",
        dataset="toy",
        method=method,
        settings={},
        metrics={"test_accuracy": 0.5, "size_mb": 1.0},
        reference={"test_accuracy": 0.5, "size_mb": 1.0},
        command="test",
    )
    card = str(build_model_card(info, "me/x")).replace('"me/x"', repr(str(artifact)))
    scope = {}
    exec(card.split("```python\n")[1].split("```")[0], scope)
    return scope["model"]


def leftovers(folder):
    return [p.name for p in folder.iterdir() if ".tmp-" in p.name]


def flushes_denormals() -> bool:
    return torch.tensor([1e-39]).item() == 0.0  # a float32 denormal, flushed or kept


@pytest.fixture
def denormal_state():
    """The process-wide denormal setting, as it was before the test, restored after it: ONNX Runtime sessions
    and ``load_quantized`` change it for the whole process, and later tests must not inherit that."""
    before = flushes_denormals()
    yield
    torch.set_flush_denormal(before)


@needs_onnx
@pytest.mark.onnx
def test_onnx_fp32_dynamic_static(saved, tmp_path, denormal_state):
    source, tok, model, texts = saved
    reference = logits(model, tok, texts)
    fp32 = load_quantized(quantize(source, tmp_path / "onnx", method="onnx-fp32"))
    torch.testing.assert_close(logits(fp32, tok, texts), reference, rtol=1e-4, atol=1e-4)
    calibration = datasets.Dataset.from_dict({"text": texts})
    for method in ("onnx-int8-dynamic", "onnx-int8-static"):
        out = quantize(
            source, tmp_path / method, method=method, calibration_dataset=calibration, per_channel=True
        )
        assert (out / "model_quantized.onnx").exists() and (out / "tokenizer_config.json").exists()
        assert json.loads((out / "hfcompress_quantization.json").read_text())["method"] == method
        from optimum.onnxruntime import ORTModelForSequenceClassification

        loaded = ORTModelForSequenceClassification.from_pretrained(out, file_name="model_quantized.onnx")
        result = logits(loaded, tok, texts)
        assert result.shape == reference.shape and torch.isfinite(result).all()
        # int8 stays close to fp32, relative to the size of this tiny model's logits, and it is int8: not equal.
        # 10%: on some CPUs (VNNI/AMX kernels) dynamic int8 of these 0.01-sized logits was 5.3% off.
        error = (result - reference).abs().max()
        assert 0 < error < 0.10 * reference.abs().max(), (method, float(error), float(reference.abs().max()))
        # what load_quantized and the model card's snippet do: the same model, denormals flushed to zero
        for fast in (load_quantized(out), card_snippet_model(out, method, "onnx")):
            options = fast.model.get_session_options()
            assert options.get_session_config_entry("session.set_denormal_as_zero") == "1"
            torch.testing.assert_close(logits(fast, tok, texts), result, rtol=1e-4, atol=1e-4)
    # this process made other sessions first, so ONNX Runtime left this thread alone: load_quantized sets it
    assert flushes_denormals()
    torch.set_flush_denormal(False)
    slow = load_quantized(out, denormal_as_zero=False).model.get_session_options()
    assert not flushes_denormals()
    with pytest.raises(Exception, match="does not have configuration with key"):
        slow.get_session_config_entry("session.set_denormal_as_zero")
    assert type(card_snippet_model(tmp_path / "onnx", "onnx-fp32", "onnx")).__name__.startswith("ORTModel")
    assert leftovers(tmp_path) == []


@needs_onnx
@pytest.mark.onnx
def test_onnx_bad_input_writes_nothing(saved, tmp_path):
    source, *_ = saved
    stars = datasets.Dataset.from_dict({"review": ["good", "bad"]})
    with pytest.raises(HfCompressError, match="calibration data needs a 'text' text column .* it has review"):
        quantize(source, tmp_path / "static", method="onnx-int8-static", calibration_dataset=stars)
    with pytest.raises(HfCompressError, match="needs calibration data"):
        quantize(source, tmp_path / "static", method="onnx-int8-static")
    assert not (tmp_path / "static").exists() and leftovers(tmp_path) == []

    fnet = FNetForSequenceClassification(
        FNetConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, intermediate_size=32)
    )
    fnet.save_pretrained(tmp_path / "fnet")
    make_tokenizer(tmp_path).save_pretrained(tmp_path / "fnet")
    with pytest.raises(HfCompressError, match="Optimum can't export .* to ONNX: .*fnet"):
        quantize(tmp_path / "fnet", tmp_path / "fnet-int8", method="onnx-int8-dynamic")
    assert not (tmp_path / "fnet-int8").exists() and leftovers(tmp_path) == []

    done = quantize(source, tmp_path / "dyn", method="onnx-int8-dynamic")
    with pytest.raises(HfCompressError, match="is already quantized \\(onnx-int8-dynamic\\)"):
        quantize(done, tmp_path / "twice", method="onnx-int8-dynamic")
    before = (done / "model_quantized.onnx").read_bytes()
    with pytest.raises(HfCompressError, match="already exists and is not empty"):
        quantize(source, done, method="onnx-int8-dynamic")
    assert (done / "model_quantized.onnx").read_bytes() == before
    with pytest.raises(HfCompressError, match="not a saved model folder"):
        quantize(tmp_path / "nothing", tmp_path / "x", method="onnx-int8-dynamic")


@needs_bnb
@pytest.mark.bnb
@pytest.mark.parametrize("method", ["bnb-int8", "bnb-nf4"])
def test_bnb_saves_and_reloads_with_plain_transformers(saved, tmp_path, method):
    source, tok, model, texts = saved
    out = quantize(source, tmp_path / method, method=method)
    loaded = AutoModelForSequenceClassification.from_pretrained(out)  # plain transformers
    assert str(loaded.config.quantization_config.quant_method.value) == "bitsandbytes"
    layer = loaded.bert.encoder.layer[0].attention.self.query
    assert type(layer).__name__ in ("Linear8bitLt", "Linear4bit")
    assert type(loaded.classifier) is torch.nn.Linear  # the task head stays in full precision
    result = logits(load_quantized(out), tok, texts)
    assert torch.isfinite(result).all() and (result - logits(model, tok, texts)).abs().max() < 0.5
    with pytest.raises(HfCompressError, match="already quantized \\(bitsandbytes\\)"):
        quantize(out, tmp_path / "again", method="bnb-int8")


@needs_torchao
@pytest.mark.torchao
def test_torchao_int8_safetensors_reload_with_plain_transformers(saved, tmp_path):
    source, tok, model, texts = saved
    out = quantize(source, tmp_path / "ao", method="torchao-int8")
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    loaded = AutoModelForSequenceClassification.from_pretrained(out)  # plain transformers
    assert str(loaded.config.quantization_config.quant_method.value) == "torchao"
    weight = loaded.bert.encoder.layer[0].attention.self.query.weight
    assert type(weight).__name__ == "Int8Tensor" and weight.qdata.dtype == torch.int8
    assert type(loaded.classifier.weight) in (torch.nn.Parameter, torch.Tensor)  # head in full precision
    reference = logits(model, tok, texts)
    result = logits(loaded, tok, texts)
    assert (result - reference).abs().max() < 0.05 and not torch.equal(result, reference)
    # the saved int8 weights are exactly what was quantized: reloading twice gives the same model
    torch.testing.assert_close(logits(load_quantized(out), tok, texts), result, rtol=0, atol=0)
    torch.testing.assert_close(
        logits(card_snippet_model(out, "torchao-int8", "quantized"), tok, texts), result
    )
    with pytest.raises(HfCompressError, match="already quantized \\(torchao\\)"):
        quantize(out, tmp_path / "again", method="torchao-int8")
