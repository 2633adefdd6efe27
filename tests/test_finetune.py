"""recipes/finetune.py on tiny models: full with freezing and early stopping, LoRA, QLoRA, multi-label, token
classification; and its bad input."""

import json
import random
from pathlib import Path

import pytest
import torch
from conftest import load_recipe as load_conftest_recipe
from test_recipe import assets, base_args  # noqa: F401  (assets is a fixture)
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

from hfcompress import HfCompressError
from hfcompress.finetuning import FinetuneConfig, freeze
from hfcompress.quantization import is_bitsandbytes_available

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "finetune.py"
WORDS = ["good", "bad", "film", "music", "great", "worst", "acting", "story", "loved", "boring"]


def load_recipe():
    return load_conftest_recipe("finetune")


def args_for(assets, out, *extra):  # noqa: F811
    args = base_args(assets, out, *extra)
    args[args.index("--teacher_model_name_or_path")] = "--model_name_or_path"
    i = args.index("--teacher_num_train_epochs")
    del args[i : i + 2]
    return args


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    """Multi-label and token-classification data as JSON lines."""
    root = tmp_path_factory.mktemp("tasks")
    rng = random.Random(0)
    with open(root / "multi.jsonl", "w") as f:
        for _ in range(90):
            words = rng.sample(WORDS, 4)
            tags = sorted(
                {
                    "positive" if w in ("good", "great", "loved") else "negative"
                    for w in words
                    if w in WORDS[:6] + ["loved", "boring"]
                }
            )
            f.write(
                json.dumps(
                    {
                        "review": " ".join(words),
                        "aspects": tags + (["about_music"] if "music" in words else []),
                    }
                )
                + "\n"
            )
    with open(root / "ner.jsonl", "w") as f:
        for _ in range(90):
            words = rng.sample(WORDS, 5)
            f.write(
                json.dumps(
                    {
                        "words": words,
                        "tags": [
                            "B-OPINION" if w in ("good", "bad", "great", "worst") else "O" for w in words
                        ],
                    }
                )
                + "\n"
            )
    return root


def test_full_finetune_with_freezing_and_early_stopping(assets, tmp_path):  # noqa: F811
    out = tmp_path / "full"
    extra = [
        "--freeze_embeddings",
        "true",
        "--freeze_layers",
        "1",
        "--early_stopping_patience",
        "1",
        "--num_train_epochs",
        "6",
        "--eval_strategy",
        "epoch",
        "--save_strategy",
        "epoch",
        "--load_best_model_at_end",
        "true",
        "--metric_for_best_model",
        "accuracy",
        "--learning_rate",
        "1e-6",
    ]
    report = load_recipe().main(args_for(assets, out, *extra))
    assert report["epochs_run"] < 6  # a tiny learning rate stops improving: early stopping ends the run
    assert report["best_checkpoint"] is not None
    model = AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert model.config.id2label == {0: "0", 1: "1"}
    total = sum(p.numel() for p in model.parameters())
    assert report["results"][0]["trained_parameters"] < total  # embeddings and layer 0 were frozen
    assert {"validation_accuracy", "test_accuracy", "latency_ms_b1"} <= set(report["results"][0])


def test_freeze_leaves_the_rest_trainable():
    from conftest import make_bert

    model = make_bert(num_layers=3)
    freeze(model, embeddings=True, first_layers=2)
    assert not any(p.requires_grad for p in model.bert.embeddings.parameters())
    assert not any(p.requires_grad for layer in model.bert.encoder.layer[:2] for p in layer.parameters())
    assert all(p.requires_grad for p in model.bert.encoder.layer[2].parameters())
    assert model.classifier.weight.requires_grad
    with pytest.raises(HfCompressError, match="freeze_layers=5 but the model has 3 layers"):
        freeze(make_bert(num_layers=3), embeddings=False, first_layers=5)


def test_lora_saves_adapter_and_merged_plain_model(assets, tmp_path):  # noqa: F811
    out = tmp_path / "lora"
    export = tmp_path / "export"
    report = load_recipe().main(
        args_for(
            assets, out, "--use_lora", "true", "--learning_rate", "5e-3", "--share_export_dir", str(export)
        )
    )
    assert (out / "adapter" / "adapter_config.json").exists()
    exported = {p.name for p in export.iterdir()}
    assert exported == {"base-reviews-lora-merged", "base-reviews-lora-adapter"}
    adapter_card = (export / "base-reviews-lora-adapter" / "README.md").read_text()
    assert "base_model_relation: adapter" in adapter_card and "peft" in adapter_card
    assert (export / "base-reviews-lora-adapter" / "adapter_config.json").exists()
    assert not (out / "model" / "adapter_config.json").exists()
    merged = AutoModelForSequenceClassification.from_pretrained(out / "model")  # plain transformers
    assert not any("lora" in n for n, _ in merged.named_parameters())
    row = report["results"][0]
    assert row["trained_parameters"] < 0.5 * row["parameters"]
    from peft import PeftModel

    base = AutoModelForSequenceClassification.from_pretrained(assets / "base", num_labels=2)
    adapted = PeftModel.from_pretrained(base, out / "adapter").eval()
    ids = torch.randint(5, 40, (2, 7))
    torch.testing.assert_close(
        adapted(input_ids=ids).logits, merged.eval()(input_ids=ids).logits, rtol=1e-4, atol=1e-5
    )


@pytest.mark.bnb
@pytest.mark.skipif(not is_bitsandbytes_available(), reason="needs the [bnb] extra")
def test_qlora(assets, tmp_path):  # noqa: F811
    out = tmp_path / "qlora"
    load_recipe().main(args_for(assets, out, "--qlora", "true", "--learning_rate", "5e-3"))
    merged = AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert type(merged.bert.encoder.layer[0].attention.self.query) is torch.nn.Linear  # merged onto fp32
    assert (out / "adapter" / "adapter_config.json").exists()


def test_multilabel(assets, task_files, tmp_path):  # noqa: F811
    out = tmp_path / "multi"
    args = args_for(assets, out, "--task_type", "multi_label_classification", "--learning_rate", "1e-3")
    args[args.index("--dataset_name") + 1] = str(task_files / "multi.jsonl")
    args[args.index("--label_column") + 1] = "aspects"
    report = load_recipe().main(args)
    assert report["labels"] == ["about_music", "negative", "positive"]
    model = AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert model.config.problem_type == "multi_label_classification" and model.config.num_labels == 3
    assert {"test_accuracy", "test_f1"} <= set(report["results"][0])


def test_token_classification(assets, task_files, tmp_path):  # noqa: F811
    out = tmp_path / "ner"
    args = args_for(assets, out, "--task_type", "token_classification", "--learning_rate", "1e-3")
    args[args.index("--dataset_name") + 1] = str(task_files / "ner.jsonl")
    args[args.index("--text_column") + 1] = "words"
    args[args.index("--label_column") + 1] = "tags"
    report = load_recipe().main(args)
    assert report["labels"] == ["B-OPINION", "O"]
    model = AutoModelForTokenClassification.from_pretrained(out / "model")
    assert model.config.id2label == {0: "B-OPINION", 1: "O"}
    # the report's figure is the saved model's, as a plain Trainer.evaluate computes it on the same split
    from transformers import AutoTokenizer, Trainer, TrainingArguments

    from hfcompress.data import (
        limit_samples,
        load_token_classification,
        task_collator,
        tokenize_token_dataset,
    )
    from hfcompress.evaluation import token_metrics

    tok = AutoTokenizer.from_pretrained(out / "model")
    raw, names = load_token_classification(str(task_files / "ner.jsonl"), "words", "tags")
    test = tokenize_token_dataset(limit_samples(raw, 64, 16, 42), tok, 64)["test"]
    trainer = Trainer(
        model=model,
        args=TrainingArguments(output_dir=str(tmp_path / "eval"), report_to=[], per_device_eval_batch_size=4),
        data_collator=task_collator(tok, "token_classification"),
        compute_metrics=token_metrics(len(names)),
    )
    expected = trainer.evaluate(test, metric_key_prefix="test")
    assert report["results"][0]["test_accuracy"] == pytest.approx(expected["test_accuracy"])
    assert report["results"][0]["test_f1"] == pytest.approx(expected["test_f1"])


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--task_type", "multi_label_classification"], "holds one label per example, not a list"),
        (["--task_type", "token_classification"], "needs a list of words per example"),
        (["--task_type", "regression"], "task_type must be one of"),
        (
            [
                "--early_stopping_patience",
                "2",
                "--eval_strategy",
                "no",
                "--save_strategy",
                "no",
                "--load_best_model_at_end",
                "false",
            ],
            "early_stopping_patience needs eval_strategy",
        ),
        (["--use_lora", "true", "--lora_target_modules", "nothing_here"], "matches no module"),
        (["--lora_r", "0"], "lora_r must be >= 1"),
    ],
)
def test_bad_input_stops_before_writing(assets, tmp_path, extra, message):  # noqa: F811
    out = tmp_path / "never"
    with pytest.raises(HfCompressError, match=message):
        load_recipe().main(args_for(assets, out, *extra))
    assert not out.exists() or not any(out.glob("**/*.safetensors"))


def test_multilabel_data_for_single_label_task(assets, task_files, tmp_path):  # noqa: F811
    args = args_for(assets, tmp_path / "never")
    args[args.index("--dataset_name") + 1] = str(task_files / "multi.jsonl")
    args[args.index("--label_column") + 1] = "aspects"
    with pytest.raises(HfCompressError, match="holds lists of labels: that is multi-label data"):
        load_recipe().main(args)
    assert not (tmp_path / "never").exists()


def test_config_defaults():
    assert FinetuneConfig(qlora=True).use_lora
