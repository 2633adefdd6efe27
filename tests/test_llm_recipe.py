"""recipes/distill_llm.py end to end on a tiny random Llama, and its bad-input errors (nothing written)."""

import json
import re

import pytest
from conftest import load_recipe, make_bpe_tokenizer, make_llama
from transformers import AutoModelForCausalLM, AutoTokenizer

from hfcompress import HfCompressError
from hfcompress.evaluation.lm import rows_perplexity, strided_perplexity

TEXT = "the film was great and the story was fun but the acting was bad and the music was dull " * 12


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny 'pretrained' Llama with a byte-level BPE tokenizer (chat template, pad token), a student whose
    vocabulary lacks tokenizer ids (another vocabulary, not padding rows), .txt folders and a chat folder."""
    root = tmp_path_factory.mktemp("llm_assets")
    tokenizer = make_bpe_tokenizer(root / "bpe")
    make_llama(num_layers=4, vocab_size=len(tokenizer)).save_pretrained(root / "teacher")
    tokenizer.save_pretrained(root / "teacher")
    make_llama(num_layers=2, vocab_size=len(tokenizer) - 10).save_pretrained(root / "other_vocab")
    make_llama(num_layers=2, vocab_size=len(tokenizer)).save_pretrained(root / "other_tokens")
    import conftest  # the same size, other tokens: a tokenizer trained on upper-case text

    corpus = list(conftest.BPE_CORPUS)
    conftest.BPE_CORPUS[:] = [t.upper() for t in corpus]
    try:
        make_bpe_tokenizer(root / "other_tokens")
    finally:
        conftest.BPE_CORPUS[:] = corpus
    text = root / "text"
    text.mkdir()
    for split in ("train", "validation", "test"):
        (text / f"{split}.txt").write_text(TEXT)
    (root / "ood").mkdir()
    (root / "ood" / "test.txt").write_text(TEXT[::-1])
    chat = root / "chat"
    chat.mkdir()
    for split in ("train", "validation", "test"):
        rows = [{"messages": [{"role": "user", "content": f"Continue: {TEXT[i:i + 40]}"},
                              {"role": "assistant", "content": TEXT[i + 40:i + 70]}]} for i in range(0, 240, 20)]  # fmt: skip
        (chat / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    broken = root / "broken_chat"
    broken.mkdir()
    for split in ("train", "validation", "test"):
        rows = [{"messages": [{"role": "user", "content": "Hello?"}, {"role": "assistant", "content": "Hi."}]},
                {"messages": [{"role": "user", "content": "No answer"}]}]  # fmt: skip
        (broken / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
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
    assert json.loads((out / "report.json").read_text())["student_config"]["num_hidden_layers"] == 2
    saved = AutoModelForCausalLM.from_pretrained(out / "student")
    assert saved.config.num_hidden_layers == 2
    tokenizer = AutoTokenizer.from_pretrained(out / "student")
    again = strided_perplexity(saved, tokenizer, TEXT, max_length=16, stride=8, max_tokens=64)  # test.txt
    assert student["test_perplexity"] == pytest.approx(again["perplexity"], rel=1e-5)
    assert student["test_bits_per_byte"] == pytest.approx(again["bits_per_byte"], rel=1e-5)
    # sizes are the saved weight files, in 10^6 bytes (speeds are pinned in test_measure.py)
    assert student["size_mb"] == pytest.approx((out / "student" / "model.safetensors").stat().st_size / 1e6)
    assert set(student) == set(teacher) >= {"generate_tokens_per_s_b1", "prompt_tokens_per_s"}
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


def test_chat_data_with_sequence_kd_and_a_lora_teacher(assets, tmp_path):
    out = tmp_path / "chat"
    report = load_recipe("distill_llm").main(
        args(assets, out, "--dataset_name", str(assets / "chat"), "--block_size", "64", "--max_eval_tokens",
             "null", "--sequence_kd", "true", "--sequence_kd_max_new_tokens", "6", "--teacher_lora_r", "4",
             "--eval_stride", "32")
    )  # fmt: skip
    assert report["data_format"] == "messages"
    (answers_file,) = (out / "teacher_answers").glob("teacher_answers-*.json")
    answers = json.loads(answers_file.read_text())["answers"]
    assert len(answers) == 12
    record = json.loads((out / "teacher" / "hfcompress_finetune.json").read_text())
    assert record["lora_r"] == 4 and not (out / "teacher" / "adapter_config.json").exists()  # merged
    teacher, student = report["results"]
    saved = AutoModelForCausalLM.from_pretrained(out / "student")
    tokenizer = AutoTokenizer.from_pretrained(out / "student")
    from hfcompress.data.lm_examples import lm_examples, load_lm_data

    raw, _ = load_lm_data(str(assets / "chat"))
    test_rows = lm_examples(raw["test"], tokenizer, 64)
    again = rows_perplexity(saved, test_rows, tokenizer)
    assert student["test_perplexity"] == pytest.approx(again["perplexity"], rel=1e-5)
    assert student["test_tokens"] == again["tokens"] == sum(
        sum(1 for t in r[1:] if t != -100) for r in test_rows["labels"]
    )  # only assistant tokens are scored


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--dataset_name", "MISSING"], "not found"),
        (["--text_column", "body"], "has none of the columns a causal LM reads: 'body' \\(plain text\\)"),
        (["--dataset_name", "BROKEN", "--block_size", "64"], "row 1: the conversation has no assistant turn"),
        (["--dataset_name", "CHAT", "--block_size", "8", "--max_eval_tokens", "null"], "the prompt is \\d+ tokens"),
        (["--torch_dtype", "float64"], "torch_dtype must be one of auto"),
        (["--block_size", "512", "--max_eval_tokens", "1024"], "longer than the model's 256 positions"),
        (["--block_size", "0"], "block_size must be > 0"),
        (["--student_model_name_or_path", "OTHER"], "cross-tokenizer LM distillation is not supported"),
        (["--student_model_name_or_path", "TOKENS"], "tokenizers differ.*cross-tokenizer"),
        (["--prune_heads_fraction", "0.75"], "would remove all 2 KV groups"),
        (["--divergence", "kl"], "divergence must be one of forward_kl"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(assets, tmp_path, extra, message):
    names = {"OTHER": assets / "other_vocab", "MISSING": tmp_path / "nope", "BROKEN": assets / "broken_chat",
             "CHAT": assets / "chat", "TOKENS": assets / "other_tokens"}  # fmt: skip
    extra = [str(names.get(x, x)) for x in extra]
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
