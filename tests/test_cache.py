"""Teacher-logit cache: same training as the live teacher, built once, stale caches refused."""

import pytest
import torch
from conftest import make_bert, make_tokenizer
from safetensors.torch import load_file
from test_trainer import args, tiny_data

from hfcompress import DistillationTrainer, HfCompressError, create_student_from_teacher


@pytest.fixture
def setup(tmp_path):
    tok = make_tokenizer(tmp_path)
    teacher = make_bert(num_layers=4, tokenizer=tok, seed=3)
    return tok, teacher, tiny_data(tok)


def train(tmp_path, tok, teacher, data, **kwargs):
    torch.manual_seed(0)
    student = create_student_from_teacher(teacher, 2)
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args(tmp_path, **kwargs),
        train_dataset=data["train"],
        processing_class=tok,
    )
    trainer.train()
    return trainer, [e["loss"] for e in trainer.state.log_history if "loss" in e]


def test_cached_training_matches_live_teacher(tmp_path, setup):
    tok, teacher, data = setup
    _, live = train(tmp_path / "live", tok, teacher, data)
    trainer, cached = train(tmp_path / "cached", tok, teacher, data, cache_teacher_logits=True)
    assert live and cached == pytest.approx(live, abs=1e-3)
    stored = load_file(str(tmp_path / "cached" / "out" / "teacher_logits.safetensors"))["logits"]
    assert stored.shape == (len(data["train"]), 2)


def test_cache_is_reused_without_running_the_teacher(tmp_path, setup):
    tok, teacher, data = setup
    path = str(tmp_path / "cache.safetensors")
    train(tmp_path / "a", tok, teacher, data, cache_teacher_logits=True, teacher_cache_path=path)
    calls = []
    original = DistillationTrainer._teacher_forward

    def counting(self, batch, need_internals=False):
        calls.append(1)
        return original(self, batch, need_internals)

    DistillationTrainer._teacher_forward = counting
    try:
        train(tmp_path / "b", tok, teacher, data, cache_teacher_logits=True, teacher_cache_path=path)
    finally:
        DistillationTrainer._teacher_forward = original
    assert calls == []


def test_stale_cache_is_refused_and_kept(tmp_path, setup):
    tok, teacher, data = setup
    path = tmp_path / "cache.safetensors"
    train(tmp_path / "a", tok, teacher, data, cache_teacher_logits=True, teacher_cache_path=str(path))
    before = path.read_bytes()
    other_teacher = make_bert(num_layers=4, tokenizer=tok, seed=99)
    with pytest.raises(HfCompressError, match="stale teacher cache .* different teacher"):
        train(
            tmp_path / "b", tok, other_teacher, data, cache_teacher_logits=True, teacher_cache_path=str(path)
        )
    smaller = data["train"].select(range(32))
    with pytest.raises(HfCompressError, match="different dataset"):
        DistillationTrainer(
            model=create_student_from_teacher(teacher, 2),
            teacher_model=teacher,
            args=args(tmp_path, cache_teacher_logits=True, teacher_cache_path=str(path)),
            train_dataset=smaller,
            processing_class=tok,
        )
    assert path.read_bytes() == before
