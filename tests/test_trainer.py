"""DistillationTrainer on tiny random models: teacher handling, loss terms, tokenizers, errors."""

import datasets
import pytest
import torch
from conftest import make_bert, make_text_dataset, make_tokenizer

from hfcompress import DistillationConfig, DistillationTrainer, HfCompressError, create_student_from_teacher
from hfcompress.data import tokenize_dataset
from hfcompress.distillation.losses import kd_kl_loss


def tiny_data(tokenizer, teacher_tokenizer=None, n=64):
    raw = datasets.DatasetDict(
        train=make_text_dataset(n), validation=make_text_dataset(16, 1), test=make_text_dataset(16, 2)
    )
    return tokenize_dataset(raw, tokenizer, 32, teacher_tokenizer)


def args(tmp_path, **kwargs):
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        num_train_epochs=2,
        per_device_train_batch_size=8,
        learning_rate=5e-3,
        report_to=[],
        save_strategy="no",
        logging_steps=4,
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    return DistillationConfig(**{**defaults, **kwargs})


@pytest.fixture
def setup(tmp_path):
    tok = make_tokenizer(tmp_path)
    teacher = make_bert(num_layers=4, tokenizer=tok, seed=1)
    return tok, teacher, tiny_data(tok)


def test_teacher_is_frozen_and_student_learns(tmp_path, setup):
    tok, teacher, data = setup
    student = create_student_from_teacher(teacher, 2)
    before_teacher = {k: v.clone() for k, v in teacher.state_dict().items()}
    before_student = {k: v.clone() for k, v in student.state_dict().items()}
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args(tmp_path, teacher_dtype="bfloat16"),
        train_dataset=data["train"],
        processing_class=tok,
    )
    assert not trainer.teacher.training
    assert all(not p.requires_grad for p in trainer.teacher.parameters())
    assert next(trainer.teacher.parameters()).dtype == torch.bfloat16
    trainer.train()
    assert all(torch.equal(before_teacher[k].to(v.dtype), v) for k, v in teacher.state_dict().items())
    assert any(not torch.equal(before_student[k], v) for k, v in student.state_dict().items())
    logged = [entry for entry in trainer.state.log_history if "distill_kd_kl" in entry]
    assert logged and "distill_hard_ce" in logged[0]


def test_pure_kd_moves_student_towards_teacher(tmp_path, setup):
    tok, teacher, data = setup
    student = make_bert(num_layers=2, tokenizer=tok, seed=7)  # an unrelated student: KD must do the work
    batch = DistillationDataCollatorBatch(tok, data["train"])

    def divergence():
        with torch.no_grad():
            return float(kd_kl_loss(student.eval()(**batch).logits, teacher.eval()(**batch).logits, 1.0))

    start = divergence()
    DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args(tmp_path, alpha=1.0, temperature=1.0, num_train_epochs=8),
        train_dataset=data["train"],
        processing_class=tok,
    ).train()
    assert divergence() < 0.5 * start


def DistillationDataCollatorBatch(tok, dataset):
    from hfcompress.data import DistillationDataCollator

    batch = DistillationDataCollator(tok)([dataset[i] for i in range(len(dataset))])
    batch.pop("labels")
    return batch


def test_all_terms_with_projection_when_widths_differ(tmp_path, setup):
    tok, teacher, data = setup
    student = make_bert(num_layers=2, hidden=16, heads=2, tokenizer=tok)
    cfg = args(
        tmp_path,
        hidden_mse_weight=1.0,
        hidden_cosine_weight=1.0,
        attention_weight=1.0,
        logits_mse_weight=0.1,
        num_train_epochs=1,
    )
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=cfg, train_dataset=data["train"], processing_class=tok
    )
    assert trainer.hidden_pairs == [(1, 2), (2, 4)] and trainer.attention_pairs == [(0, 1), (1, 3)]
    assert trainer.projections is not None and trainer.projections[0].weight.shape == (32, 16)
    before = trainer.projections[0].weight.clone()
    trainer.train()
    assert not torch.equal(before, trainer.projections[0].weight)  # learned: the optimizer has them
    logged = [e for e in trainer.state.log_history if "distill_attention_kl" in e]
    assert logged and {"distill_hidden_mse", "distill_hidden_cosine", "distill_logits_mse"} <= set(logged[0])


def test_eval_loss_is_the_students_own(tmp_path, setup):
    tok, teacher, data = setup
    student = create_student_from_teacher(teacher, 2)
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args(tmp_path),
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        processing_class=tok,
    )
    eval_loss = trainer.evaluate()["eval_loss"]
    from hfcompress.data import DistillationDataCollator

    batch = DistillationDataCollator(tok)([data["validation"][i] for i in range(16)])
    with torch.no_grad():
        expected = float(student.eval()(**batch).loss)
    assert eval_loss == pytest.approx(expected, rel=1e-4)


def test_separate_tokenizers(tmp_path):
    student_tok, teacher_tok = make_tokenizer(tmp_path), make_tokenizer(tmp_path, shift=9)
    teacher = make_bert(num_layers=3, tokenizer=teacher_tok)
    student = make_bert(num_layers=2, tokenizer=student_tok)
    data = tiny_data(student_tok, teacher_tok)
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args(tmp_path, num_train_epochs=1),
        train_dataset=data["train"],
        processing_class=student_tok,
        teacher_processing_class=teacher_tok,
    )
    seen = []
    original = trainer._teacher_forward

    def spy(batch, need_internals=False):
        out = original(batch, need_internals)
        seen.append(batch["teacher_input_ids"].max().item())
        return out

    trainer._teacher_forward = spy
    trainer.train()
    assert seen and max(seen) >= 9 + 5  # the teacher read its own (shifted) ids


def test_shared_tokenizer_vocabulary_mismatch(tmp_path):
    student_tok, teacher_tok = make_tokenizer(tmp_path), make_tokenizer(tmp_path, shift=9)
    teacher = make_bert(tokenizer=teacher_tok)
    student = make_bert(tokenizer=student_tok)
    data = tiny_data(student_tok)
    with pytest.raises(HfCompressError, match="tokenizers have different vocabularies"):
        DistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=args(tmp_path),
            train_dataset=data["train"],
            processing_class=student_tok,
            teacher_processing_class=teacher_tok,
        )
    with pytest.raises(HfCompressError, match=r"teacher vocabulary \(200 ids\) and student vocabulary"):
        DistillationTrainer(
            model=student,
            teacher_model=make_bert(vocab_size=200),
            args=args(tmp_path),
            train_dataset=data["train"],
            processing_class=student_tok,
        )


def test_layer_map_naming_missing_layers(tmp_path, setup):
    tok, teacher, data = setup
    student = create_student_from_teacher(teacher, 2)
    with pytest.raises(
        HfCompressError,
        match="hidden_layer_map .* pair 1:9 names a layer that doesn't exist: student has 0..2, teacher has 0..4",
    ):
        DistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=args(tmp_path, hidden_mse_weight=1.0, hidden_layer_map="1:9"),
            train_dataset=data["train"],
            processing_class=tok,
        )
    with pytest.raises(HfCompressError, match="attention_layer_map pair 2:1"):
        DistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=args(tmp_path, attention_weight=1.0, attention_layer_map="2:1"),
            train_dataset=data["train"],
            processing_class=tok,
        )


def test_needs_distillation_config(tmp_path, setup):
    from transformers import TrainingArguments

    tok, teacher, data = setup
    with pytest.raises(HfCompressError, match="needs args=DistillationConfig"):
        DistillationTrainer(
            model=teacher, teacher_model=teacher, args=TrainingArguments(output_dir=str(tmp_path))
        )
    with pytest.raises(HfCompressError, match="needs a teacher_model"):
        DistillationTrainer(model=teacher, args=args(tmp_path))


def test_resume_restores_projections(tmp_path, setup):
    tok, teacher, data = setup

    def run(max_steps, resume=None):
        torch.manual_seed(0)
        student = make_bert(num_layers=2, hidden=16, heads=2, tokenizer=tok)
        cfg = args(tmp_path, hidden_mse_weight=1.0, max_steps=max_steps, save_strategy="steps", save_steps=4)
        trainer = DistillationTrainer(
            model=student, teacher_model=teacher, args=cfg, train_dataset=data["train"], processing_class=tok
        )
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    full = run(8)
    assert (tmp_path / "out" / "checkpoint-4" / "distillation_projections.safetensors").exists()
    # Resume from the step-4 checkpoint: the projections continue from there and end where the full run did
    # (this also catches gradients that leak from one step into the next).
    resumed = run(8, resume=str(tmp_path / "out" / "checkpoint-4"))
    assert torch.allclose(resumed.model.classifier.weight, full.model.classifier.weight, atol=1e-5)
    assert torch.allclose(resumed.projections[0].weight, full.projections[0].weight, atol=1e-5)
