"""recipes/distill_llm.py end to end on a tiny random Llama, and its bad-input errors (nothing written)."""

import json
import re

import pytest
from conftest import load_recipe, make_llama, make_tokenizer
from transformers import AutoModelForCausalLM

from hfcompress import HfCompressError

TEXT = "the film was great and the story was fun but the acting was bad and the music was dull " * 12


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny 'pretrained' Llama with a tokenizer, a student whose vocabulary lacks tokenizer ids (another
    vocabulary, not padding rows), and .txt folders."""
    root = tmp_path_factory.mktemp("llm_assets")
    tokenizer = make_tokenizer(root)
    make_llama(num_layers=4, vocab_size=len(tokenizer)).save_pretrained(root / "teacher")
    tokenizer.save_pretrained(root / "teacher")
    make_llama(num_layers=2, vocab_size=len(tokenizer) - 10).save_pretrained(root / "other_vocab")
    text = root / "text"
    text.mkdir()
    for split in ("train", "validation", "test"):
        (text / f"{split}.txt").write_text(TEXT)
    (root / "ood").mkdir()
    (root / "ood" / "test.txt").write_text(TEXT[::-1])
    return root


def args(assets, out, *extra, prune_layers="2"):
    return ["--teacher_model_name_or_path", str(assets / "teacher"), "--dataset_name", str(assets / "text"),
            "--ood_dataset_name", str(assets / "ood"), "--block_size", "16", "--eval_stride", "8",
            "--max_eval_tokens", "64", "--output_dir", str(out), "--max_steps", "2", "--teacher_num_train_epochs",
            "1", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4", "--speed_runs", "1",
            "--generate_tokens", "4", "--prompt_batch_size", "2", "--calibration_batches", "1",
            "--prune_layers", prune_layers, *extra]  # fmt: skip


def test_prune_in_two_rounds_distil_measure_and_share(assets, tmp_path):
    out = tmp_path / "run"
    report = load_recipe("distill_llm").main(
        args(assets, out, "--num_iterations", "2", "--lm_chunk_size", "7",
             "--share_export_dir", str(tmp_path / "export"))
    )  # fmt: skip
    assert [len(r["layers"]) for r in report["pruned"]] == [1, 1]  # 4 -> 3 -> 2 layers, distilled between
    teacher, student = report["results"]
    assert student["parameters"] < teacher["parameters"]
    for key in ("validation_perplexity", "test_perplexity", "test_bits_per_byte", "ood_perplexity",
                "generate_tokens_per_s_b1", "prompt_tokens_per_s"):  # fmt: skip
        assert student[key] > 0 and teacher[key] > 0
    assert json.loads((out / "report.json").read_text())["student_config"]["num_hidden_layers"] == 2
    assert AutoModelForCausalLM.from_pretrained(out / "student").config.num_hidden_layers == 2
    (card,) = (tmp_path / "export").glob("*/README.md")
    text = card.read_text()
    assert "test_perplexity" in text and "AutoModelForCausalLM" in text and "generate_tokens_per_s_b1" in text
    # a second run reuses the adapted teacher and refuses to overwrite the finished one
    with pytest.raises(HfCompressError, match="already holds the results of a finished run"):
        load_recipe("distill_llm").main(args(assets, out))


def test_width_pruning_and_cached_top_k(assets, tmp_path):
    report = load_recipe("distill_llm").main(
        args(assets, tmp_path / "w", "--prune_ffn_fraction", "0.5", "--prune_heads_fraction", "0.5",
             "--prune_hidden_fraction", "0.25", "--cache_teacher_logits", "true", "--teacher_topk", "8",
             prune_layers="0")
    )  # fmt: skip
    assert report["student_config"] == {"num_hidden_layers": 4, "hidden_size": 24, "intermediate_size": 32,
                                        "num_key_value_heads": 1}  # fmt: skip
    assert (tmp_path / "w" / "teacher_topk.safetensors").exists()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--dataset_name", "MISSING"], "not found"),
        (["--text_column", "body"], "has no text column 'body'"),
        (["--block_size", "512", "--max_eval_tokens", "1024"], "longer than the model's 256 positions"),
        (["--block_size", "0"], "block_size must be > 0"),
        (["--student_model_name_or_path", "OTHER"], "cross-tokenizer LM distillation is not supported"),
        (["--prune_heads_fraction", "0.75"], "would remove all 2 KV groups"),
        (["--divergence", "kl"], "divergence must be one of forward_kl"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(assets, tmp_path, extra, message):
    extra = [str(assets / "other_vocab") if x == "OTHER" else str(tmp_path / "nope") if x == "MISSING" else x
             for x in extra]  # fmt: skip
    with pytest.raises(HfCompressError, match=message):
        load_recipe("distill_llm").main(args(assets, tmp_path / "out", *extra))
    assert not (tmp_path / "out").exists()


@pytest.mark.ddp
def test_recipe_under_two_process_accelerate(assets, tmp_path):
    from pathlib import Path

    from conftest import launch_two_processes

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "ddp"
    result = launch_two_processes([root / "recipes" / "distill_llm.py", *args(assets, out)], cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("# distill_llm report") == 1  # reported once, by the main process
    assert AutoModelForCausalLM.from_pretrained(out / "student").config.num_hidden_layers == 2


@pytest.mark.ddp
def test_teacher_sharded_over_two_processes(assets, tmp_path):
    from pathlib import Path

    from conftest import launch_two_processes

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "sharded"
    script = [root / "recipes" / "distill_llm.py", *args(assets, out, "--shard_teacher", "true")]
    result = launch_two_processes(script, cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    held = [line for line in result.stderr.splitlines() if "Teacher sharded over 2 processes" in line]
    assert len(held) >= 2  # each process holds its share of the teacher's layers
    local, total = (int(n) for n in re.search(r"holds (\d+) of its (\d+)", held[0]).groups())
    assert local < total
    assert (out / "report.json").exists()
