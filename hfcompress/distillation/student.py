"""Build a student from its teacher by keeping a subset of the teacher's transformer layers.

As DistilBERT: the student has the teacher's class and config with fewer ``num_hidden_layers``, and copies
the teacher's embeddings, kept layers, pooler and task head. The result is an ordinary model of a stock
architecture, so it saves and loads with plain ``from_pretrained``. Works for any model whose layers sit in
one ``nn.ModuleList`` of length ``config.num_hidden_layers`` (BERT family, Llama family, ...).
"""

from __future__ import annotations

from transformers import PreTrainedModel

from ..modeling import keep_layers, select_layers


def create_student_from_teacher(
    teacher: PreTrainedModel, layers: str | int | list[int] = "every_other"
) -> PreTrainedModel:
    """A copy of ``teacher`` with only the given layers (see ``modeling.select_layers``), weights copied."""
    return keep_layers(teacher, select_layers(layers, teacher.config.num_hidden_layers))
