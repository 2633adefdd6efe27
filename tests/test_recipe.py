"""recipes/distill_bert.py end to end on tiny random models, and its bad-input errors (nothing written)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import launch_two_processes, make_bert, make_text_dataset, make_tokenizer
from conftest import load_recipe as load_conftest_recipe
from transformers import AutoModelForSequenceClassification, BertConfig, BertModel

from hfcompress import HfCompressError

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "distill_bert.py"


def load_recipe():
    return load_conftest_recipe("distill_bert")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny 'pretrained' base encoder (no head) with its tokenizer, and a CSV dataset."""
    root = tmp_path_factory.mktemp("recipe_assets")
    tok = make_tokenizer(root)
    base = BertModel(
        BertConfig(
            vocab_size=len(tok),
            hidden_size=32,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
        )
    )
    base.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    other_tok = make_tokenizer(root, shift=11)
    other = make_bert(num_layers=2, tokenizer=other_tok)
    other.config.architectures = ["BertModel"]  # a base model: gets a fresh head
    other.bert.save_pretrained(root / "other_vocab_student")
    other_tok.save_pretrained(root / "other_vocab_student")
    three = make_bert(num_layers=2, tokenizer=tok, num_labels=3)
    three.save_pretrained(root / "three_label_student")
    tok.save_pretrained(root / "three_label_student")
    make_text_dataset(120).to_pandas().rename(columns={"text": "review", "label": "fresh"}).to_csv(
        root / "reviews.csv", index=False
    )
    return root


def base_args(assets, out, *extra):
    return [
        "--teacher_model_name_or_path",
        str(assets / "base"),
        "--dataset_name",
        str(assets / "reviews.csv"),
        "--text_column",
        "review",
        "--label_column",
        "fresh",
        "--output_dir",
        str(out),
        "--max_train_samples",
        "64",
        "--max_eval_samples",
        "16",
        "--num_train_epochs",
        "1",
        "--teacher_num_train_epochs",
        "1",
        "--latency_runs",
        "1",
        "--latency_batch_sizes",
        "1,4",
        "--disable_tqdm",
        "true",
        "--logging_steps",
        "5",
        "--report_to",
        "none",
        *extra,
    ]


def test_recipe_end_to_end(assets, tmp_path):
    out = tmp_path / "run"
    report = load_recipe().main(base_args(assets, out, "--student_layers", "2"))
    saved = json.loads((out / "report.json").read_text())
    assert saved["results"][0]["model"] == "teacher" and saved["results"][1]["model"] == "student"
    assert report["results"][1]["parameters"] < report["results"][0]["parameters"]
    for row in saved["results"]:
        assert row["latency_ms_b1"] > 0 and row["latency_ms_b4"] > 0
        assert row["torch_threads"] == saved["threads"]["torch_threads"] >= 1  # recorded next to latency
    # the reported accuracies are the saved student's, recomputed here from its predictions
    import torch

    from hfcompress.data import load_text_classification, tokenize_dataset

    raw, _ = load_text_classification(str(assets / "reviews.csv"), "review", "fresh")
    tok = make_tokenizer(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(out / "student").eval()
    from hfcompress.data import limit_samples

    data = tokenize_dataset(limit_samples(raw, 64, 16, 42), tok, 64)
    for split in ("validation", "test"):
        with torch.no_grad():
            batch = tok.pad([{"input_ids": x} for x in data[split]["input_ids"]], return_tensors="pt")
            predicted = reloaded(**batch).logits.argmax(-1)
        expected = (predicted == torch.tensor(data[split]["labels"])).float().mean().item()
        assert saved["results"][1][f"{split}_accuracy"] == pytest.approx(expected)
    assert "| student |" in (out / "report.md").read_text()
    student = AutoModelForSequenceClassification.from_pretrained(out / "student")
    assert student.config.num_hidden_layers == 2 and student.config.id2label == {0: "0", 1: "1"}
    assert (out / "student" / "model.safetensors").exists()
    assert (out / "teacher" / "hfcompress_finetune.json").exists()

    # A finished run is never overwritten by accident...
    before = (out / "report.json").read_bytes()
    with pytest.raises(HfCompressError, match="already holds the results of a finished run"):
        load_recipe().main(base_args(assets, out))
    assert (out / "report.json").read_bytes() == before
    # ...and with --overwrite_output the fine-tuned teacher of the earlier run is reused, not trained again.
    mtime = (out / "teacher" / "model.safetensors").stat().st_mtime
    load_recipe().main(base_args(assets, out, "--overwrite_output", "true", "--student_layers", "1"))
    assert (out / "teacher" / "model.safetensors").stat().st_mtime == mtime
    assert AutoModelForSequenceClassification.from_pretrained(out / "student").config.num_hidden_layers == 1


def test_recipe_with_separately_tokenized_student_and_all_terms(assets, tmp_path):
    out = tmp_path / "sep"
    (tmp_path / "extra.txt").write_text("great fun film\nboring dull story\n" * 10)
    other = ["--student_model_name_or_path", str(assets / "other_vocab_student")]
    # two tokenizers: hidden-state MSE on the token alignment, plus unlabelled text (soft targets only)
    load_recipe().main(
        base_args(assets, out, *other, "--hidden_mse_weight", "1", "--cache_teacher_logits", "false",
                  "--unlabelled_data", str(tmp_path / "extra.txt"))
    )  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert report["tokenization"] == "separate" and report["unlabelled_rows"] == 20
    with pytest.raises(HfCompressError, match="attention_weight needs one tokenization"):
        load_recipe().main(base_args(assets, tmp_path / "att", *other, "--attention_weight", "1",
                                     "--cache_teacher_logits", "false"))  # fmt: skip
    assert not (tmp_path / "att" / "report.json").exists()
    assert AutoModelForSequenceClassification.from_pretrained(out / "student").config.vocab_size == len(
        make_tokenizer(tmp_path, 11)
    )


def test_recipe_with_every_loss_term(assets, tmp_path, capsys):
    """Every term is computed and logged, and the logged loss is their weighted sum (alpha 0.5 between the
    hard labels and the soft targets, weight 1 for each hidden-state and attention term)."""
    import ast
    import math

    load_recipe().main(base_args(assets, tmp_path / "terms", "--hidden_mse_weight", "1", "--attention_weight", "1",
                                 "--hidden_cosine_weight", "1", "--cache_teacher_logits", "false",
                                 "--logging_steps", "1", "--alpha", "0.5", "--per_device_train_batch_size", "8"))  # fmt: skip
    logs = [ast.literal_eval(line) for line in capsys.readouterr().out.splitlines()
            if line.startswith("{'loss'") and "distill_hidden_mse" in line]  # fmt: skip
    assert len(logs) == 8  # 64 examples at batch 8, one epoch, a log per step
    weights = {"hard_ce": 0.5, "kd_kl": 0.5, "hidden_mse": 1.0, "hidden_cosine": 1.0, "attention_kl": 1.0}
    for log in logs:
        terms = {name: float(log[f"distill_{name}"]) for name in weights}  # transformers 5 prints strings
        assert all(math.isfinite(v) and v >= 0 for v in terms.values()), terms
        # the KL to a teacher trained one epoch on 64 rows rounds to 0 at 4 decimals; the others can't
        assert all(terms[n] > 0 for n in ("hard_ce", "hidden_mse", "hidden_cosine", "attention_kl")), terms
        assert float(log["loss"]) == pytest.approx(sum(weights[n] * v for n, v in terms.items()), abs=1e-3)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--teacher_model_name_or_path", "/no/such/model"], "model '/no/such/model' not found"),
        (["--label_column", "stars"], "has no label column 'stars'; available columns: review, fresh"),
        (["--student_model_name_or_path", "THREE"], "num_labels=3 but the dataset has 2 labels"),
        (["--student_model_name_or_path", "OTHER", "--tokenizer_mode", "shared"], "different vocabularies"),
        (["--temperature", "0"], "temperature must be > 0, got 0.0"),
        (["--alpha", "1.2"], r"alpha must be in \[0, 1\], got 1.2"),
        (
            ["--hidden_mse_weight", "1", "--cache_teacher_logits", "false", "--hidden_layer_map", "1:2,3:9"],
            "names a layer that doesn't exist",
        ),
        (["--student_layers", "0,7"], "must be distinct layer indices in 0..3"),
        (["--no_such_flag", "1"], "unknown option --no_such_flag"),
        (["--unlabelled_data", "/no/such.txt"], "neither a file, a folder nor a data asset"),
    ],
)
def test_bad_input_stops_before_writing(assets, tmp_path, extra, message):
    extra = [
        str(assets / "three_label_student")
        if e == "THREE"
        else str(assets / "other_vocab_student")
        if e == "OTHER"
        else e
        for e in extra
    ]
    out = tmp_path / "never"
    with pytest.raises(HfCompressError, match=message):
        load_recipe().main(base_args(assets, out, *extra))
    assert not out.exists()


def write_csv(folder, name, rows, encoding="utf-8"):
    import csv

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / name, "w", newline="", encoding=encoding) as f:
        writer = csv.writer(f)
        writer.writerow(["review", "fresh"])
        writer.writerows(rows)
    return folder


def sentences(n, labels=("pos", "neg"), start=0):
    words = ["great film", "bad acting", "loved the music", "boring story", "fun script", "awful plot"]
    return [(f"{words[i % len(words)]} {i}", labels[i % len(labels)]) for i in range(start, start + n)]


@pytest.mark.parametrize(
    "case,message",
    [
        ("empty_text", r"text column 'review' is empty in train rows 3, 7 \(0-based"),
        ("one_class", r"every training label is 'pos'; a classifier needs at least two classes"),
        ("unseen_label", r"labels \['weird'\] never occur in train; training has \['neg', 'pos'\]"),
        ("latin1", r"train.csv is not UTF-8 text \(byte 0xe8 on line 2\); save it as UTF-8"),
    ],
)
def test_bad_data_folders_stop_before_writing(assets, tmp_path, case, message):
    """Data a new user might bring, each a one-line error naming what is wrong, with nothing written."""
    data = tmp_path / "data"
    rows = sentences(40)
    if case == "empty_text":
        rows[3], rows[7] = ("", "pos"), ("   ", "neg")
        write_csv(data, "train.csv", rows)
    elif case == "one_class":
        write_csv(data, "train.csv", sentences(40, labels=("pos",)))
    elif case == "unseen_label":
        write_csv(data, "train.csv", rows)
        write_csv(data, "validation.csv", sentences(8, labels=("pos", "weird"), start=40))
        write_csv(data, "test.csv", sentences(8, start=50))
    else:
        write_csv(data, "train.csv", [("un film très réussi", "pos"), *rows], encoding="latin-1")
    out = tmp_path / "never"
    with pytest.raises(HfCompressError, match=message):
        load_recipe().main(base_args(assets, out, "--dataset_name", str(data)))
    assert not out.exists()


def test_carved_splits_are_logged(assets, tmp_path, caplog):
    """A folder with only train.csv: validation and test are carved from it, and the run says so."""
    import logging

    data = write_csv(tmp_path / "data", "train.csv", sentences(60))
    with caplog.at_level(logging.WARNING, logger="hfcompress.data.loading"):
        report = load_recipe().main(
            base_args(assets, tmp_path / "run", "--dataset_name", str(data), "--max_train_samples", "null")
        )
    carved = [r.getMessage() for r in caplog.records if "carved" in r.getMessage()]
    assert carved == [
        f"Dataset {data} has no validation split: carved 6 examples out of train (seed 42), 54 left for training",
        f"Dataset {data} has no test split: carved 6 examples out of train (seed 42), 48 left for training",
    ]
    assert report["train_examples"] == 48 and report["test_examples"] == 6  # null: all of train


def test_help_lists_the_recipe_options():
    result = subprocess.run([sys.executable, str(RECIPE), "--help"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-500:]
    assert "--student_layers" in result.stdout and "Teacher layers the student keeps" in result.stdout
    assert "--temperature" in result.stdout and "unknown option" not in result.stderr


def test_stale_teacher_cache_is_an_error(assets, tmp_path):
    stale = tmp_path / "stale.safetensors"
    load_recipe().main(
        base_args(assets, tmp_path / "a", "--teacher_cache_path", str(stale), "--max_train_samples", "32")
    )
    before = stale.read_bytes()
    with pytest.raises(HfCompressError, match="stale teacher cache"):
        load_recipe().main(base_args(assets, tmp_path / "b", "--teacher_cache_path", str(stale)))
    assert stale.read_bytes() == before
    assert not (tmp_path / "b" / "student").exists() and not (tmp_path / "b" / "report.json").exists()


def test_cli_prints_one_line_error(assets, tmp_path):
    result = subprocess.run(
        [sys.executable, str(RECIPE), *base_args(assets, tmp_path / "x", "--alpha", "3")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "distill_bert: error: alpha must be in [0, 1], got 3.0"
    assert "Traceback" not in result.stderr


@pytest.mark.ddp
def test_recipe_under_two_process_accelerate(assets, tmp_path):
    out = tmp_path / "ddp"
    result = launch_two_processes([RECIPE, *base_args(assets, out)], cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("# distill_bert report") == 1  # reported once, by the main process
    report = json.loads((out / "report.json").read_text())
    assert report["train_examples"] == 64
    assert AutoModelForSequenceClassification.from_pretrained(out / "student").config.num_hidden_layers == 2
