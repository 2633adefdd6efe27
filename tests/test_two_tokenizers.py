"""Distillation between two tokenizers (token alignment, hidden-state terms across widths), unlabelled rows,
and the augmentation data stage, on tiny random models."""

import json

import datasets
import pytest
import torch
from conftest import make_bert, make_text_dataset, make_tokenizer
from test_trainer import args, tiny_data

from hfcompress import DistillationTrainer, HfCompressError
from hfcompress.data import DistillationDataCollator
from hfcompress.data.augment import AugmentConfig, Candidates, augment_texts, write_augmented
from hfcompress.data.unlabelled import (
    ALIGNMENT,
    UNLABELLED,
    add_unlabelled,
    load_unlabelled_texts,
    token_alignment,
)
from hfcompress.distillation.losses import hard_label_loss


def shifted_copy(teacher, shift, vocab_size):
    """The same network reading ids shifted by ``shift``: equal outputs on the shifted tokenization."""
    twin = make_bert(num_layers=teacher.config.num_hidden_layers, hidden=teacher.config.hidden_size,
                     vocab_size=vocab_size)  # fmt: skip
    state = teacher.state_dict()
    table = twin.bert.embeddings.word_embeddings.weight.detach().clone()
    table[shift : shift + state["bert.embeddings.word_embeddings.weight"].shape[0]] = state[
        "bert.embeddings.word_embeddings.weight"
    ]
    state["bert.embeddings.word_embeddings.weight"] = table
    twin.load_state_dict(state)
    return twin


def test_token_alignment_by_character_spans():
    # same spans: identity; a student word split in two has no partner; specials pair in order
    assert token_alignment([(0, 0), (0, 3), (4, 8), (0, 0)], [1, 0, 0, 1],
                           [(0, 0), (0, 3), (4, 8), (0, 0)], [1, 0, 0, 1]) == [0, 1, 2, 3]  # fmt: skip
    assert token_alignment([(0, 0), (0, 2), (2, 3), (0, 0)], [1, 0, 0, 1],
                           [(0, 0), (0, 3), (0, 0)], [1, 0, 1]) == [0, -1, -1, 2]  # fmt: skip


def test_shifted_vocabularies_align_fully(tmp_path):
    student_tok, teacher_tok = make_tokenizer(tmp_path), make_tokenizer(tmp_path, shift=9)
    data = tiny_data(student_tok, teacher_tok)
    row = data["train"][0]
    assert row[ALIGNMENT] == list(range(len(row["input_ids"])))
    assert row["teacher_input_ids"] != row["input_ids"]


def test_hidden_terms_across_tokenizers_equal_the_shared_ones(tmp_path):
    """768->384-style transfer on a defined alignment: with a teacher that reads shifted ids, every loss term
    equals the one computed with one shared tokenization (the alignment is exact here)."""
    student_tok, teacher_tok = make_tokenizer(tmp_path), make_tokenizer(tmp_path, shift=9)
    teacher = make_bert(num_layers=4, hidden=32, tokenizer=student_tok, seed=1)
    twin = shifted_copy(teacher, 9, len(teacher_tok))
    config = dict(hidden_mse_weight=1.0, hidden_cosine_weight=0.5, alpha=0.5)
    losses, terms = [], []
    for teacher_model, data, tok in ((teacher, tiny_data(student_tok), None),
                                     (twin, tiny_data(student_tok, teacher_tok), teacher_tok)):  # fmt: skip
        trainer = DistillationTrainer(
            model=make_bert(num_layers=2, hidden=16, heads=2, tokenizer=student_tok, seed=2),
            teacher_model=teacher_model,
            args=args(tmp_path, **config),
            train_dataset=data["train"],
            processing_class=student_tok,
            teacher_processing_class=tok,
        )
        assert trainer.projections is not None and trainer.hidden_pairs == [(1, 2), (2, 4)]
        batch = trainer.data_collator([data["train"][i] for i in range(8)])
        trainer.model.train()
        torch.manual_seed(0)
        losses.append(trainer.compute_loss(trainer.model, batch))
        terms.append(dict(trainer._term_sums))
    assert torch.allclose(losses[0], losses[1], atol=1e-6)
    assert terms[0].keys() == terms[1].keys() == {"hard_ce", "kd_kl", "hidden_mse", "hidden_cosine"}
    for name in terms[0]:  # term by term, not only their sum
        assert terms[1][name] == pytest.approx(terms[0][name], abs=1e-6)
    assert terms[0]["hidden_mse"] > 1e-3 and terms[0]["hidden_cosine"] > 1e-3  # the terms compared are not zero


def test_two_tokenizer_terms_refused_with_the_allowed_ones(tmp_path):
    student_tok, teacher_tok = make_tokenizer(tmp_path), make_tokenizer(tmp_path, shift=9)
    data = tiny_data(student_tok, teacher_tok)
    kwargs = dict(model=make_bert(tokenizer=student_tok), teacher_model=make_bert(tokenizer=teacher_tok),
                  processing_class=student_tok, teacher_processing_class=teacher_tok)  # fmt: skip
    with pytest.raises(HfCompressError, match="attention_weight needs one tokenization.*use alpha"):
        DistillationTrainer(args=args(tmp_path, attention_weight=1.0), train_dataset=data["train"], **kwargs)
    unaligned = data["train"].map(lambda row: {ALIGNMENT: [-1] * len(row[ALIGNMENT])})
    with pytest.raises(HfCompressError, match="only 0% of student tokens .* use alpha and logits_mse_weight"):
        DistillationTrainer(args=args(tmp_path, hidden_mse_weight=1.0), train_dataset=unaligned, **kwargs)
    with pytest.raises(HfCompressError, match="need the token alignment"):
        DistillationTrainer(args=args(tmp_path, hidden_mse_weight=1.0),
                            train_dataset=data["train"].remove_columns(ALIGNMENT), **kwargs)  # fmt: skip


def test_unlabelled_rows_get_soft_targets_only(tmp_path):
    tok = make_tokenizer(tmp_path)
    raw = datasets.DatasetDict(train=make_text_dataset(16), validation=make_text_dataset(8, 1),
                               test=make_text_dataset(8, 2))  # fmt: skip
    raw["train"] = add_unlabelled(raw["train"], ["great film", "boring story"] * 8)
    from hfcompress.data import tokenize_dataset

    data = tokenize_dataset(raw, tok, 16)
    unlabelled = [data["train"][i] for i in range(16, 24)]
    batch = DistillationDataCollator(tok)(unlabelled)
    assert batch["labels"].tolist() == [-100] * 8
    assert float(hard_label_loss(torch.randn(8, 2), batch["labels"])) == 0.0  # not NaN
    trainer = DistillationTrainer(model=make_bert(num_layers=2, tokenizer=tok), teacher_model=make_bert(tokenizer=tok),
                                  args=args(tmp_path, alpha=0.5, num_train_epochs=1), train_dataset=data["train"],
                                  processing_class=tok)  # fmt: skip
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    kd = trainer._term_sums["kd_kl"]
    assert torch.isfinite(loss) and float(loss.detach()) == pytest.approx(0.5 * kd, rel=1e-5)
    trainer.train()  # mixed batches train without NaN
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_load_unlabelled_texts(tmp_path):
    (tmp_path / "a.txt").write_text("one text\n\n  two text \n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "three"}) + "\n")
    assert load_unlabelled_texts(str(tmp_path / "a.txt")) == ["one text", "two text"]
    assert sorted(load_unlabelled_texts(str(tmp_path))) == ["one text", "three", "two text"]
    with pytest.raises(HfCompressError, match="has no column 'body'"):
        load_unlabelled_texts(str(tmp_path / "b.jsonl"), "body")
    with pytest.raises(HfCompressError, match="neither a file, a folder nor a data asset"):
        load_unlabelled_texts(str(tmp_path / "missing"))
    assert UNLABELLED == -1


def tiny_mlm(tok):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)  # fmt: skip
    return BertForMaskedLM(config)


@pytest.mark.parametrize("method", ["mlm", "embedding"])
def test_augmentation_replaces_whole_words(tmp_path, method):
    tok = make_tokenizer(tmp_path)
    candidates = Candidates(tiny_mlm(tok), tok, method, top_k=3)
    texts = ["The film was great, and fun!", "zzz qqq"]  # the second has no known word
    rows = augment_texts(texts, candidates, copies=3, replace_prob=1.0, seed=0)
    assert rows and {i for _, i in rows} == {0}
    for text, _ in rows:
        assert text != texts[0] and text.endswith("!") and text[0].isupper()  # punctuation and case kept
        assert all(
            tok.convert_tokens_to_ids(w.lower()) != tok.unk_token_id
            for w in text[:-1].replace(",", "").split()
        )
    assert augment_texts(texts, candidates, copies=3, replace_prob=1.0, seed=0) == rows  # seeded


def test_augmented_dataset_is_written_once(tmp_path):
    folder = write_augmented(tmp_path / "aug", [("a text", 0)], {"seed": 1})
    assert load_unlabelled_texts(str(folder)) == ["a text"]
    with pytest.raises(HfCompressError, match="already exists"):
        write_augmented(tmp_path / "aug", [("b", 0)], {})
    assert load_unlabelled_texts(str(folder)) == ["a text"]
    with pytest.raises(HfCompressError, match="replace_prob must be in"):
        AugmentConfig(replace_prob=0)
    with pytest.raises(HfCompressError, match="augment_method must be one of"):
        AugmentConfig(augment_method="glove")


def test_augment_command_writes_a_dataset_once(tmp_path, capsys):
    from hfcompress.cli import main

    tok = make_tokenizer(tmp_path)
    tiny_mlm(tok).save_pretrained(tmp_path / "mlm")
    tok.save_pretrained(tmp_path / "mlm")
    make_text_dataset(40).to_csv(tmp_path / "train.csv", index=False)
    argv = ["augment", "--output_dir", str(tmp_path / "aug"), "--dataset_name", str(tmp_path / "train.csv"),
            "--augment_model_name_or_path", str(tmp_path / "mlm"), "--copies", "2", "--top_k", "3"]  # fmt: skip
    assert main(argv) == 0
    record = json.loads((tmp_path / "aug" / "augment.json").read_text())
    assert record["method_used"] == "mlm" and record["copies"] == 2
    import pandas

    written = pandas.read_parquet(tmp_path / "aug" / "augmented.parquet")
    assert record["rows"] == len(written)
    assert written["source_index"].value_counts().max() == 2  # at most two copies of a text (duplicates dropped)
    before = (tmp_path / "aug" / "augmented.parquet").read_bytes()
    assert main(argv) == 2 and "already exists" in capsys.readouterr().err
    assert (tmp_path / "aug" / "augmented.parquet").read_bytes() == before


def test_cache_made_with_another_teacher_tokenizer_is_refused(tmp_path):
    student_tok, teacher_tok = make_tokenizer(tmp_path), make_tokenizer(tmp_path, shift=9)
    data = tiny_data(student_tok, teacher_tok)
    teacher = make_bert(tokenizer=make_tokenizer(tmp_path, shift=11))  # reads either tokenization's ids
    cache = tmp_path / "logits.safetensors"
    kwargs = dict(model=make_bert(tokenizer=student_tok), teacher_model=teacher, train_dataset=data["train"],
                  args=args(tmp_path, cache_teacher_logits=True, teacher_cache_path=str(cache)),
                  processing_class=student_tok)  # fmt: skip
    DistillationTrainer(teacher_processing_class=teacher_tok, **kwargs)
    before = cache.read_bytes()
    other = make_tokenizer(tmp_path, shift=11)
    with pytest.raises(HfCompressError, match="stale teacher cache .* different teacher_tokenizer"):
        DistillationTrainer(teacher_processing_class=other, **kwargs)
    assert cache.read_bytes() == before
