"""recipes/prune_bert.py end to end on tiny random models (structured and unstructured), and its bad input."""

import json
from pathlib import Path

import pytest
import torch
from conftest import launch_two_processes
from conftest import load_recipe as load_conftest_recipe
from test_recipe import assets, base_args  # noqa: F401  (assets is a fixture)
from transformers import AutoModelForSequenceClassification

from hfcompress import HfCompressError
from hfcompress.pruning.structured import bert_head_pruning_supported

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "prune_bert.py"


def load_recipe():
    return load_conftest_recipe("prune_bert")


def test_structured_end_to_end(assets, tmp_path):  # noqa: F811
    out = tmp_path / "structured"
    heads = bert_head_pruning_supported(AutoModelForSequenceClassification.from_pretrained(assets / "base"))
    extra = ["--prune_layers", "1", "--prune_ffn_fraction", "0.5", "--num_iterations", "2"]
    extra += [
        "--hidden_mse_weight",
        "1",
        "--cache_teacher_logits",
        "false",
    ]  # kept layers learn from their own
    if heads:  # transformers 4.x: BERT heads through config.pruned_heads
        extra += ["--prune_heads_fraction", "0.5"]
    report = load_recipe().main(base_args(assets, out, *extra))
    assert [r["model"] for r in report["results"]] == ["teacher", "pruned (structured)"]
    assert report["results"][1]["parameters"] < report["results"][0]["parameters"]
    assert [s["structure"]["intermediate_size"] for s in report["details"]["iterations"]] == [48, 32]
    kept = report["details"]["teacher_layers"]
    assert len(kept) == 3 and kept == sorted(kept) and set(kept) <= {0, 1, 2, 3}
    assert json.loads((out / "report.json").read_text())["pruning"] == "structured"
    assert "smaller and faster" in (out / "report.md").read_text()
    pruned = AutoModelForSequenceClassification.from_pretrained(out / "pruned")
    assert pruned.config.num_hidden_layers == 3 and pruned.config.intermediate_size == 32
    if heads:
        assert all(len(h) == 2 for h in pruned.config.pruned_heads.values())
    assert (out / "teacher" / "hfcompress_finetune.json").exists()


def test_unstructured_end_to_end(assets, tmp_path):  # noqa: F811
    out = tmp_path / "unstructured"
    extra = ["--pruning", "unstructured", "--target_sparsity", "0.6", "--end_step", "2", "--frequency", "1"]
    report = load_recipe().main(base_args(assets, out, *extra))
    assert report["details"]["sparsity"]["overall"] == pytest.approx(0.6, abs=0.01)
    assert "no faster" in (out / "report.md").read_text()
    pruned = AutoModelForSequenceClassification.from_pretrained(out / "pruned")
    query = pruned.bert.encoder.layer[0].attention.self.query.weight
    assert float((query == 0).float().mean()) == pytest.approx(0.6, abs=0.02)
    assert bool((pruned.classifier.weight != 0).all())


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--prune_layers", "4"], "would remove all 4 layers"),
        (["--prune_ffn_fraction", "1.0"], r"prune_ffn_fraction must be in \[0, 1\), got 1.0"),
        (["--prune_ffn_fraction", "0", "--prune_layers", "0"], "nothing to do"),
        (["--pruning", "unstructured", "--target_sparsity", "1"], r"target_sparsity must be in \[0, 1\)"),
        (["--pruning", "unstructured", "--start_step", "5", "--end_step", "2"], "precedes start_step"),
        (["--pruning", "unstructured", "--target_modules", "decoder"], "matches no nn.Linear"),
        (["--pruning", "lottery"], "pruning must be one of structured, unstructured"),
    ],
)
def test_bad_input_stops_before_writing(assets, tmp_path, extra, message):  # noqa: F811
    out = tmp_path / "never"
    base = ["--prune_ffn_fraction", "0.5"]
    with pytest.raises(HfCompressError, match=message):
        load_recipe().main(base_args(assets, out, *base, *extra))
    assert not out.exists()


def test_too_many_heads_refused(assets, tmp_path):  # noqa: F811
    out = tmp_path / "never"
    with pytest.raises(HfCompressError, match="would remove all 4 attention heads"):
        load_recipe().main(base_args(assets, out, "--prune_heads_fraction", "0.9"))
    assert not out.exists()


@pytest.mark.ddp
def test_structured_under_two_process_accelerate(assets, tmp_path):  # noqa: F811
    out = tmp_path / "ddp"
    args = base_args(assets, out, "--prune_layers", "1", "--prune_ffn_fraction", "0.5")
    result = launch_two_processes([RECIPE, *args], cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("# prune_bert report") == 1
    pruned = AutoModelForSequenceClassification.from_pretrained(out / "pruned")
    assert pruned.config.num_hidden_layers == 3 and pruned.config.intermediate_size == 32
    assert torch.isfinite(pruned.classifier.weight).all()
