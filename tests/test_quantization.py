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
    kbit_error_report,
    linear_quantize,
    load_quantized,
    quantize,
)

needs_onnx = pytest.mark.skipif(not is_optimum_onnx_available(), reason="needs the [onnx] extra")
needs_bnb = pytest.mark.skipif(not is_bitsandbytes_available(), reason="needs the [bnb] extra")


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
    assert not (tmp_path / "q").exists()


def leftovers(folder):
    return [p.name for p in folder.iterdir() if ".tmp-" in p.name]


@needs_onnx
@pytest.mark.onnx
def test_onnx_fp32_dynamic_static(saved, tmp_path):
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
        assert (result - reference).abs().max() < 0.5  # int8 stays close to fp32
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
