"""recipes/quantize.py end to end on a tiny model: every method, report, plots; and its bad input."""

import json
from pathlib import Path

import pytest
from conftest import load_recipe as load_conftest_recipe
from test_recipe import assets, base_args  # noqa: F401  (assets is a fixture)

from hfcompress import HfCompressError
from hfcompress.quantization import backends, is_bitsandbytes_available, is_optimum_onnx_available

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "quantize.py"


def load_recipe():
    return load_conftest_recipe("quantize")


def recomputed_accuracy(root, out, model, split: str) -> float:
    """The accuracy of ``model`` on the recipe's ``split`` (the same rows: 64/16 samples, seed 42)."""
    from hfcompress.data import (
        DistillationDataCollator,
        limit_samples,
        load_text_classification,
        tokenize_dataset,
    )
    from hfcompress.evaluation import classification_metrics, evaluate_model
    from hfcompress.modeling import load_tokenizer

    tok = load_tokenizer(str(out / "teacher"))
    raw, _ = load_text_classification(str(root / "reviews.csv"), "review", "fresh")
    data = tokenize_dataset(limit_samples(raw, 64, 16, 42), tok, 64)
    metrics = classification_metrics(["accuracy"], 2)
    return evaluate_model(model, data[split], DistillationDataCollator(tok), metrics)["accuracy"]


def quantize_args(assets, out, *extra):  # noqa: F811
    args = base_args(assets, out, *extra)
    i = args.index("--num_train_epochs")  # the quantize recipe trains only the teacher stage
    del args[i : i + 2]
    return args


@pytest.mark.skipif(
    not (is_optimum_onnx_available() and is_bitsandbytes_available()),
    reason="needs the [onnx] and [bnb] extras",
)
def test_quantize_end_to_end(assets, tmp_path):  # noqa: F811
    out = tmp_path / "q"
    methods = "onnx-int8-dynamic,onnx-int8-static,bnb-int8,bnb-nf4"
    report = load_recipe().main(
        quantize_args(assets, out, "--methods", methods, "--calibration_samples", "8")
    )
    names = [r["model"] for r in report["results"]]
    assert names == ["fp32 (PyTorch)", *methods.split(",")]
    folders = {"fp32 (PyTorch)": out / "teacher", **{m: out / "quantized" / m for m in methods.split(",")}}
    base = report["results"][0]
    for row in report["results"]:
        # size: the weight files of the artifact's own folder, summed here
        weights = [p for p in folders[row["model"]].rglob("*")
                   if p.suffix in (".safetensors", ".bin", ".onnx") and p.name != "training_args.bin"]
        assert weights and row["size_mb"] == pytest.approx(sum(p.stat().st_size for p in weights) / 2**20)
        assert row["model_peak_mb"] > row["size_mb"]  # a process that ran the model held at least its weights
        for b in (1, 4):  # speed-ups are the ratios of the latencies measured side by side
            assert row[f"speedup_b{b}"] == pytest.approx(base[f"latency_ms_b{b}"] / row[f"latency_ms_b{b}"])
        assert row["torch_threads"] >= 1
    onnx_rows = [r for r in report["results"] if r["model"].startswith("onnx")]
    assert all(r["ort_intra_op_threads"] == r["torch_threads"] for r in onnx_rows)  # same cores for both
    # the reported accuracies are each artifact's own, recomputed here through load_quantized
    from hfcompress.quantization import load_quantized

    for row in report["results"][1:3]:  # the two ONNX int8 artifacts
        model = load_quantized(out / "quantized" / row["model"])
        for split in ("validation", "test"):
            assert row[f"{split}_accuracy"] == pytest.approx(recomputed_accuracy(assets, out, model, split))
    assert (out / "accuracy_vs_latency.png").stat().st_size > 1000 and (out / "accuracy_vs_size.png").exists()
    assert json.loads((out / "report.json").read_text())["plots"]
    assert "| onnx-int8-static |" in (out / "report.md").read_text()
    for method in methods.split(","):
        assert (out / "quantized" / method / "hfcompress_quantization.json").exists()


@pytest.mark.skipif(not is_optimum_onnx_available(), reason="needs the [onnx] extra")
def test_overwrite_quantizes_the_model_given_not_an_older_run(assets, tmp_path):  # noqa: F811
    """With --overwrite_output and another model that already has its head, the new model is quantized
    (the recipe once reused <out>/teacher from the earlier run)."""
    from conftest import make_bert, make_tokenizer

    tok = make_tokenizer(tmp_path)
    for seed in (1, 2):
        model = make_bert(num_layers=1, tokenizer=tok, seed=seed)
        model.save_pretrained(tmp_path / f"classifier{seed}")
        tok.save_pretrained(tmp_path / f"classifier{seed}")
    out = tmp_path / "q"
    common = ["--methods", "onnx-fp32", "--teacher_finetune", "never"]
    first = load_recipe().main(
        quantize_args(assets, out, "--teacher_model_name_or_path", str(tmp_path / "classifier1"), *common)
    )
    second = load_recipe().main(
        quantize_args(
            assets,
            out,
            "--teacher_model_name_or_path",
            str(tmp_path / "classifier2"),
            "--overwrite_output",
            "true",
            *common,
        )
    )
    import safetensors.torch

    saved = safetensors.torch.load_file(out / "model" / "model.safetensors")
    expected = make_bert(num_layers=1, tokenizer=tok, seed=2).state_dict()
    shared = [k for k in saved if k in expected]
    assert len(shared) > 10 and all(torch_equal(saved[k], expected[k]) for k in shared)
    assert second["results"][0]["test_accuracy"] == second["results"][1]["test_accuracy"]  # fp32 ONNX of it
    assert first["model"] != second["model"]


def torch_equal(a, b):
    import torch

    return torch.equal(a, b)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--methods", "onnx-int8-dynamic,int3"], "each of methods must be one of .*got 'int3'"),
        (["--preset", "avx9"], "preset must be one of"),
        (["--teacher_model_name_or_path", "/no/such/model"], "model '/no/such/model' not found"),
    ],
)
def test_bad_input_stops_before_writing(assets, tmp_path, extra, message, monkeypatch):  # noqa: F811
    for backend in backends.AVAILABLE:  # the default methods' backends: checked before the model is
        monkeypatch.setitem(backends.AVAILABLE, backend, lambda: True)
    out = tmp_path / "never"
    with pytest.raises(HfCompressError, match=message):
        load_recipe().main(quantize_args(assets, out, *extra))
    assert not out.exists()


def test_missing_backend_stops_before_writing(assets, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setitem(backends.AVAILABLE, "bitsandbytes", lambda: False)
    out = tmp_path / "never"
    with pytest.raises(HfCompressError, match=r"pip install 'hfcompress\[bnb\]'"):
        load_recipe().main(quantize_args(assets, out, "--methods", "bnb-int8"))
    assert not out.exists()


def test_torchao_on_transformers_4_stops_before_writing(assets, tmp_path, monkeypatch):  # noqa: F811
    for backend in backends.AVAILABLE:
        monkeypatch.setitem(backends.AVAILABLE, backend, lambda: True)
    monkeypatch.setattr(backends, "transformers_major", lambda: 4)
    out = tmp_path / "never"
    with pytest.raises(HfCompressError, match=r"'torchao-int8' needs transformers>=5"):
        load_recipe().main(quantize_args(assets, out, "--methods", "onnx-int8-dynamic,torchao-int8"))
    assert not out.exists()


@pytest.mark.skipif(
    not backends.method_available("torchao-int8"), reason="needs torchao and transformers>=5 (make test-v5)"
)
def test_torchao_end_to_end(assets, tmp_path):  # noqa: F811
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "q"
    report = load_recipe().main(quantize_args(assets, out, "--methods", "torchao-int8"))
    row = report["results"][1]
    assert row["model"] == "torchao-int8"
    assert row["size_mb"] < report["results"][0]["size_mb"]
    assert row["speedup_b4"] == pytest.approx(report["results"][0]["latency_ms_b4"] / row["latency_ms_b4"])
    model = AutoModelForSequenceClassification.from_pretrained(out / "quantized" / "torchao-int8")
    assert model.config.quantization_config.quant_method == "torchao"
    assert row["test_accuracy"] == pytest.approx(recomputed_accuracy(assets, out, model, "test"))
