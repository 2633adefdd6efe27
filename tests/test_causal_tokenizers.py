"""Causal LM training with real tokenizers: no pad token, left padding, BOS, vocabularies compared by their
tokens, on-policy prompts, and bits per byte by hand."""

import logging
import math

import datasets
import pytest
import torch
from conftest import BPE_CORPUS, make_bpe_tokenizer, make_decoder

from hfcompress import DistillationConfig, DistillationTrainer, HfCompressError
from hfcompress.data import EXAMPLE_INDEX, DistillationDataCollator
from hfcompress.distillation import causal
from hfcompress.evaluation.lm import strided_perplexity


def rows_for(tokenizer):
    encoded = [tokenizer(text)["input_ids"][: 10 + 7 * i] for i, text in enumerate(BPE_CORPUS)]
    return datasets.Dataset.from_dict(
        {"input_ids": encoded, "attention_mask": [[1] * len(r) for r in encoded], "labels": encoded}
    )


def args(tmp_path, **kwargs):
    defaults = dict(
        output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=3, learning_rate=1e-2,
        report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0, alpha=0.5,
    )  # fmt: skip
    return DistillationConfig(**{**defaults, **kwargs})


def test_a_tokenizer_without_pad_token_pads_with_eos_logged_once(tmp_path, caplog):
    tokenizer = make_bpe_tokenizer(tmp_path / "tok", pad=False, bos=True)  # Llama-3-like
    assert tokenizer.pad_token_id is None
    rows = rows_for(tokenizer)
    with caplog.at_level(logging.WARNING):
        trainer = DistillationTrainer(
            model=make_decoder("llama", num_layers=2, seed=1), teacher_model=make_decoder("llama"),
            args=args(tmp_path), train_dataset=rows, processing_class=tokenizer,
        )  # fmt: skip
        trainer.train()
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    assert sum("no pad token" in r.getMessage() for r in caplog.records) == 1
    batch = trainer.data_collator([rows[0], rows[3]])
    assert batch["input_ids"][0, 0] == tokenizer.bos_token_id
    # padding is EOS, but only padding is masked: a real EOS keeps its label
    assert (batch["labels"][0][batch["attention_mask"][0] == 0] == -100).all()
    with_eos = {"input_ids": [5, 6, 2], "attention_mask": [1, 1, 1], "labels": [5, 6, 2]}
    assert trainer.data_collator([with_eos, rows[1]])["labels"][0, 2] == 2


def test_left_padding_tokenizers_get_right_padded_training_batches(tmp_path):
    tokenizer = make_bpe_tokenizer(tmp_path / "tok", padding_side="left")
    rows = rows_for(tokenizer)
    batch = DistillationDataCollator(tokenizer)([rows[i] for i in range(3)])
    mask = batch["attention_mask"].bool()
    assert mask[:, 0].all() and not mask[0, -1]  # real tokens first, padding last
    for i in range(3):
        n = len(rows[i]["input_ids"])
        assert batch["input_ids"][i, :n].tolist() == rows[i]["input_ids"]
        assert batch["labels"][i, :n].tolist() == rows[i]["labels"]
        assert (batch["labels"][i, n:] == -100).all()
    assert tokenizer.padding_side == "left"  # the user's tokenizer is left as it was


def test_top_k_cache_with_a_left_padding_tokenizer_equals_the_live_teacher(tmp_path):
    tokenizer = make_bpe_tokenizer(tmp_path / "tok", padding_side="left", pad=False)
    rows = rows_for(tokenizer)

    def trainer(name, **kwargs):
        return DistillationTrainer(
            model=make_decoder("qwen2", num_layers=2, seed=1), teacher_model=make_decoder("qwen2"),
            args=args(tmp_path / name, per_device_eval_batch_size=4, **kwargs), train_dataset=rows,
            processing_class=tokenizer,
        )  # fmt: skip

    live, cached = trainer("live"), trainer("cache", cache_teacher_logits=True, teacher_topk=len(tokenizer))
    order = [4, 1, 5]
    batch = cached.data_collator([{**rows[i], EXAMPLE_INDEX: i} for i in order])
    losses = []
    for t, b in ((live, {k: v for k, v in batch.items() if k != EXAMPLE_INDEX}), (cached, batch)):
        t.model.train()
        losses.append(float(t.compute_loss(t.model, b)))
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)


def test_on_policy_prompts_move_short_rows_to_the_left():
    ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    left, left_mask = causal.left_padded_prompts(ids, mask, 4, pad_id=0)
    assert left.tolist() == [[5, 6, 7, 8], [0, 0, 5, 6]]
    assert left_mask.tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]


def test_on_policy_batch_positions_count_real_tokens_only(tmp_path):
    tokenizer = make_bpe_tokenizer(tmp_path / "tok")
    rows = rows_for(tokenizer)
    model = make_decoder("llama", num_layers=2)
    batch = DistillationDataCollator(tokenizer)([rows[0], rows[4]])  # 10 and 38 tokens
    out = causal.on_policy_inputs(model, batch, 12, 3, 1.0, tokenizer.pad_token_id)
    assert out["input_ids"].shape == (2, 15)
    assert out["attention_mask"][0].tolist() == [0, 0] + [1] * 13  # the 10-token row, left-padded
    assert out["position_ids"][0, 2:].tolist() == list(range(13))
    assert out["input_ids"][0, 2:12].tolist() == rows[0]["input_ids"]
    assert (out["labels"][:, :12] == -100).all() and (out["labels"][:, 12:] >= 0).all()


def test_tokenizers_of_the_same_size_but_other_tokens_are_refused(tmp_path, monkeypatch):
    import conftest

    a = make_bpe_tokenizer(tmp_path / "a")
    same = make_bpe_tokenizer(tmp_path / "same")  # trained again on the same text: the same tokens
    assert causal.common_vocab_size(make_decoder("llama"), make_decoder("llama"), a, same) == 320
    monkeypatch.setattr(conftest, "BPE_CORPUS", [t.upper() for t in BPE_CORPUS])
    other = make_bpe_tokenizer(tmp_path / "upper")  # other text: 320 tokens too, other merges
    assert len(other) == len(a) and other.get_vocab() != a.get_vocab()
    with pytest.raises(HfCompressError, match="tokenizers differ.*cross-tokenizer LM distillation is not supported"):
        causal.common_vocab_size(make_decoder("llama"), make_decoder("llama"), other, a)
    with pytest.raises(HfCompressError, match="tokenizers differ"):
        DistillationTrainer(
            model=make_decoder("llama", num_layers=2), teacher_model=make_decoder("llama"), args=args(tmp_path),
            train_dataset=rows_for(a), processing_class=other, teacher_processing_class=a,
        )  # fmt: skip


class OneTokenPerChar:
    """A character-level tokenizer with offsets (ids = code points mod 300 + 5), for hand computations."""

    def __call__(self, text, add_special_tokens=False, return_offsets_mapping=False):
        out = {"input_ids": [ord(c) % 300 + 5 for c in text]}
        if return_offsets_mapping:
            out["offset_mapping"] = [(i, i + 1) for i in range(len(text))]
        return out


@pytest.mark.parametrize("stride", [8, 5])
def test_bits_per_byte_by_hand(stride):
    model = make_decoder("llama", num_layers=2)
    text = "Emma é rich; Anne is not."  # 'é' is two UTF-8 bytes
    ids = torch.tensor([[ord(c) % 300 + 5 for c in text]])
    window = 8
    nll, scored = 0.0, []
    begin, previous_end = 0, 0
    while True:  # the Transformers docs' strided window, written out
        end = min(begin + window, ids.shape[1])
        logits = model(ids[:, begin:end]).logits[0].log_softmax(-1)
        for position in range(max(previous_end, begin + 1), end):  # tokens not scored before, with context
            nll -= float(logits[position - begin - 1, ids[0, position]])
            scored.append(position)
        previous_end = end
        if end == ids.shape[1]:
            break
        begin += stride
    n_bytes = sum(len(text[p].encode()) for p in scored)
    result = strided_perplexity(model, OneTokenPerChar(), text, max_length=window, stride=stride)
    assert result["tokens"] == len(scored)
    assert result["bytes"] == n_bytes
    assert result["bits_per_byte"] == pytest.approx(nll / math.log(2) / n_bytes, rel=1e-5)
    if stride == window:  # the first token of each window has no context: neither it nor its bytes count
        assert len(scored) == len(text) - math.ceil(len(text) / window)


def test_load_causal_lm_takes_dtype_attention_and_remote_code_only_when_asked(tmp_path, monkeypatch):
    from hfcompress.modeling import load_causal_lm

    make_decoder("qwen3", num_layers=2).save_pretrained(tmp_path / "m")
    model = load_causal_lm(str(tmp_path / "m"), "bfloat16", "eager")
    assert next(model.parameters()).dtype == torch.bfloat16 and model.config._attn_implementation == "eager"
    assert next(load_causal_lm(str(tmp_path / "m")).parameters()).dtype == torch.float32
    with pytest.raises(HfCompressError, match="torch_dtype must be one of auto, bfloat16, float16, float32"):
        load_causal_lm(str(tmp_path / "m"), "float64")
    # the repository's own modelling code runs only when asked: the flag reaches from_pretrained as given
    import transformers

    seen = []
    original = transformers.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: seen.append(k["trust_remote_code"]) or original(*a, **k))  # fmt: skip
    load_causal_lm(str(tmp_path / "m"))
    load_causal_lm(str(tmp_path / "m"), trust_remote_code=True)
    assert seen == [False, True]


def test_assets_import_nothing_from_data():
    """assets -> data/causal_lm -> data/loading -> assets was a cycle: the builders now live beside the assets."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "hfcompress"
    for name in ("assets.py", "asset_builders.py"):
        tree = ast.parse((root / name).read_text())
        modules = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        assert not [m for m in modules if "data" in m.split(".")], (name, modules)
