"""Unstructured pruning: schedule, masks, the callback with Trainer and DistillationTrainer, resume, errors."""

import pytest
import torch
from conftest import make_bert, make_tokenizer
from test_trainer import args as distill_args
from test_trainer import tiny_data
from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

from hfcompress import (
    DistillationTrainer,
    HfCompressError,
    PruningCallback,
    PruningConfig,
    create_student_from_teacher,
)
from hfcompress.data import DistillationDataCollator
from hfcompress.pruning import cubic_sparsity, masks_for_sparsity


def test_cubic_schedule():
    values = [cubic_sparsity(t, 0.0, 0.8, 10, 50, 10) for t in range(0, 61)]
    assert values[9] == 0.0 and values[10] == 0.0 and values[50] == values[60] == 0.8
    assert all(a <= b for a, b in zip(values, values[1:]))  # never decreases
    assert len(set(values[10:50])) == 4  # changes only every 10 steps
    assert values[20] == pytest.approx(0.8 * (1 - (1 - 0.25) ** 3))
    assert cubic_sparsity(4, 0.0, 0.5, 5, 5) == 0.0 and cubic_sparsity(5, 0.0, 0.5, 5, 5) == 0.5  # one-shot


def test_masks_exact_sparsity_layer_and_global():
    torch.manual_seed(0)
    scores = {"a": 0.5 + 0.5 * torch.rand(10, 10), "b": 0.01 * torch.rand(20, 5)}  # every b below every a
    layer = masks_for_sparsity(scores, 0.3, "layer")
    assert int((~layer["a"]).sum()) == 30 and int((~layer["b"]).sum()) == 30
    glob = masks_for_sparsity(scores, 0.5, "global")
    assert int((~glob["a"]).sum()) + int((~glob["b"]).sum()) == 100
    assert bool((~glob["b"]).all())  # the global threshold takes all of the unimportant tensor first
    kept = scores["a"][layer["a"]]
    assert kept.min() >= scores["a"][~layer["a"]].max()  # the lowest scores went


@pytest.fixture
def setup(tmp_path):
    tok = make_tokenizer(tmp_path)
    return tok, make_bert(num_layers=2, tokenizer=tok, seed=1), tiny_data(tok)


def plain_trainer(tmp_path, model, tok, data, callback, **kwargs):
    args = TrainingArguments(
        **{
            **dict(
                output_dir=str(tmp_path / "out"),
                num_train_epochs=2,
                per_device_train_batch_size=8,
                learning_rate=1e-3,
                report_to=[],
                save_strategy="no",
                use_cpu=True,
                disable_tqdm=True,
                seed=0,
            ),
            **kwargs,
        }
    )
    return Trainer(
        model=model,
        args=args,
        train_dataset=data["train"],
        data_collator=DistillationDataCollator(tok),
        callbacks=[callback],
    )


@pytest.mark.parametrize(
    "method,scope",
    [("magnitude", "layer"), ("magnitude", "global"), ("gradient", "layer"), ("movement", "global")],
)
def test_gradual_pruning_with_plain_trainer(tmp_path, setup, method, scope):
    tok, model, data = setup
    embedding_zeros = int((model.bert.embeddings.word_embeddings.weight == 0).sum())  # the padding row
    head = model.classifier.weight.detach().clone()
    callback = PruningCallback(
        PruningConfig(
            method=method, scope=scope, target_sparsity=0.75, start_step=2, end_step=12, frequency=2
        )
    )
    plain_trainer(
        tmp_path, model, tok, data, callback
    ).train()  # 16 steps: schedule ends at 12, 4 recovery steps
    assert callback.report["overall"] == pytest.approx(0.75, abs=0.01)
    if scope == "layer":
        assert all(v == pytest.approx(0.75, abs=0.01) for v in callback.report["layers"].values())
    assert set(callback.modules) == {
        n for n, m in model.named_modules() if "encoder.layer" in n and isinstance(m, torch.nn.Linear)
    }
    assert not torch.equal(model.classifier.weight, head)  # the head trained...
    assert bool((model.classifier.weight != 0).all())  # ...and was not pruned
    assert int((model.bert.embeddings.word_embeddings.weight == 0).sum()) == embedding_zeros  # not pruned
    model.save_pretrained(tmp_path / "pruned")
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "pruned")
    zeros = float((loaded.bert.encoder.layer[0].attention.self.query.weight == 0).float().mean())
    assert zeros == pytest.approx(0.75, abs=0.05)  # the zeros are in the saved weights


def test_pruned_weights_stay_zero_while_training(tmp_path, setup):
    tok, model, data = setup
    callback = PruningCallback(
        PruningConfig(target_sparsity=0.5, start_step=0, end_step=0)
    )  # one-shot at the start
    trainer = plain_trainer(tmp_path, model, tok, data, callback)
    seen = []

    class Check(PruningCallback.__mro__[1]):  # a TrainerCallback observing after the pruning callback
        def on_step_end(self, args, state, control, **kwargs):
            seen.append(
                all(bool((m.weight[~callback.masks[n]] == 0).all()) for n, m in callback.modules.items())
            )

    trainer.add_callback(Check())
    trainer.train()
    assert seen and all(seen)


def test_composes_with_distillation(tmp_path):
    tok = make_tokenizer(tmp_path)
    teacher = make_bert(num_layers=4, tokenizer=tok, seed=2)
    data = tiny_data(tok)
    student = create_student_from_teacher(teacher, 2)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    callback = PruningCallback(PruningConfig(target_sparsity=0.6, start_step=1, end_step=8, frequency=1))
    DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=distill_args(tmp_path),
        train_dataset=data["train"],
        processing_class=tok,
        callbacks=[callback],
    ).train()
    assert callback.report["overall"] == pytest.approx(0.6, abs=0.01)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # the teacher is untouched


def test_resume_mid_schedule_gives_the_same_masks(tmp_path, setup):
    tok, _, data = setup
    config = PruningConfig(method="gradient", target_sparsity=0.7, start_step=1, end_step=12, frequency=2)

    def run(resume=None, max_steps=16):
        model = make_bert(num_layers=2, tokenizer=tok, seed=1)
        callback = PruningCallback(config)
        plain_trainer(
            tmp_path,
            model,
            tok,
            data,
            callback,
            max_steps=max_steps,
            save_strategy="steps",
            save_steps=5,
            num_train_epochs=1,
        ).train(resume_from_checkpoint=resume)
        return callback

    full = run()
    resumed = run(resume=str(tmp_path / "out" / "checkpoint-5"))  # as if killed after step 5
    assert all(torch.equal(full.masks[n], resumed.masks[n]) for n in full.masks)
    assert resumed.report["overall"] == pytest.approx(full.report["overall"])
    with pytest.raises(
        HfCompressError, match="pruning config differs from the checkpoint's in target_sparsity"
    ):
        model = make_bert(num_layers=2, tokenizer=tok, seed=1)
        other = PruningCallback(
            PruningConfig(method="gradient", target_sparsity=0.5, start_step=1, end_step=12, frequency=2)
        )
        plain_trainer(tmp_path, model, tok, data, other, max_steps=16, save_strategy="no").train(
            resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-5")
        )


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"target_sparsity": 1.0}, r"target_sparsity must be in \[0, 1\), got 1.0"),
        ({"target_sparsity": -0.1}, r"target_sparsity must be in \[0, 1\)"),
        ({"start_step": 10, "end_step": 5}, r"end_step \(5\) precedes start_step \(10\)"),
        ({"method": "random"}, "pruning method must be one of"),
        ({"initial_sparsity": 0.9, "target_sparsity": 0.5}, "initial_sparsity must be in"),
        ({"method": "gradient", "start_step": 0}, "start_step >= 1"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(HfCompressError, match=message):
        PruningConfig(**kwargs)


def test_pattern_matching_nothing(tmp_path, setup):
    tok, model, data = setup
    callback = PruningCallback(PruningConfig(target_modules=r"decoder\.block"))
    with pytest.raises(HfCompressError, match=r"target_modules 'decoder\\\\.block' matches no nn.Linear"):
        plain_trainer(tmp_path, model, tok, data, callback).train()
