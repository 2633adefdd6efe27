"""Students cut from their teacher: layer choice, copied weights, plain from_pretrained loading."""

import pytest
import torch
from conftest import make_bert
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
)

from hfcompress import HfCompressError, count_parameters, create_student_from_teacher
from hfcompress.modeling import select_layers


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("every_other", [0, 2, 4]),
        (3, [0, 2, 4]),
        ("2", [0, 3]),
        ("1,5", [1, 5]),
        ([5, 0], [0, 5]),
        (6, list(range(6))),
    ],
)
def test_select_layers(spec, expected):
    assert select_layers(spec, 6) == expected


@pytest.mark.parametrize("spec", ["0,6", "1,1", 0, 7, "abc", []])
def test_select_layers_rejects_bad_specs(spec):
    with pytest.raises(HfCompressError):
        select_layers(spec, 6)


def test_bert_student_copies_kept_layers(tmp_path):
    teacher = make_bert(num_layers=6)
    student = create_student_from_teacher(teacher, "every_other")
    assert student.config.num_hidden_layers == 3
    assert teacher.config.num_hidden_layers == 6  # the teacher is untouched
    for new, old in enumerate([0, 2, 4]):
        for (n1, p1), (n2, p2) in zip(
            student.bert.encoder.layer[new].named_parameters(),
            teacher.bert.encoder.layer[old].named_parameters(),
        ):
            assert n1 == n2 and torch.equal(p1, p2)
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    assert torch.equal(
        student.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight
    )
    assert count_parameters(student) < count_parameters(teacher)

    student.save_pretrained(tmp_path / "student")
    assert (tmp_path / "student" / "model.safetensors").exists()
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student")
    ids = torch.randint(5, 60, (2, 7))
    student.eval()
    assert torch.allclose(loaded(ids).logits, student(ids).logits, atol=1e-6)


def test_llama_student(tmp_path):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    teacher = LlamaForCausalLM(config)
    student = create_student_from_teacher(teacher, [0, 3])
    assert student.config.num_hidden_layers == 2
    assert torch.equal(student.model.layers[1].mlp.up_proj.weight, teacher.model.layers[3].mlp.up_proj.weight)
    student.save_pretrained(tmp_path / "llama")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "llama")
    ids = torch.randint(0, 64, (1, 6))
    assert torch.allclose(loaded(ids).logits, student.eval()(ids).logits, atol=1e-5)
