"""Build a student from its teacher by keeping a subset of the teacher's transformer layers.

As DistilBERT: the student has the teacher's class and config with fewer ``num_hidden_layers``, and copies
the teacher's embeddings, kept layers, pooler and task head. The result is an ordinary model of a stock
architecture, so it saves and loads with plain ``from_pretrained``. Works for any model whose layers sit in
one ``nn.ModuleList`` of length ``config.num_hidden_layers`` (BERT family, Llama family, ...).
"""

from __future__ import annotations

import copy
import re

from torch import nn
from transformers import PreTrainedModel

from ..errors import HfCompressError


def find_layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The dotted name and module of the ``ModuleList`` holding the model's transformer layers."""
    num_layers = model.config.num_hidden_layers
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) == num_layers
    ]
    preferred = [c for c in candidates if c[0].split(".")[-1] in ("layer", "layers", "h", "block")]
    if not (preferred or candidates):
        raise HfCompressError(
            f"can't find the transformer layers of {type(model).__name__}: no ModuleList of length {num_layers}"
        )
    return (preferred or candidates)[0]


def select_layers(spec: str | int | list[int], num_teacher_layers: int) -> list[int]:
    """Teacher layer indices to keep.

    ``"every_other"`` keeps 0, 2, 4, ... (DistilBERT); an int ``k`` (or a string of one) keeps ``k`` layers
    spread evenly, starting at layer 0; a list (or ``"0,2,5"``) names the layers explicitly.
    """
    if isinstance(spec, str):
        spec = spec.strip()
        if spec == "every_other":
            return list(range(0, num_teacher_layers, 2))
        if spec.isdigit():
            spec = int(spec)
        else:
            try:
                spec = [int(x) for x in spec.split(",")]
            except ValueError:
                raise HfCompressError(
                    f"student_layers {spec!r} is not 'every_other', a layer count or a list like '0,2,4'"
                ) from None
    if isinstance(spec, int):
        if not 1 <= spec <= num_teacher_layers:
            raise HfCompressError(
                f"a student of {spec} layers can't be cut from a {num_teacher_layers}-layer teacher"
            )
        return [round(i * num_teacher_layers / spec) for i in range(spec)]
    layers = list(spec)
    bad = [i for i in layers if not 0 <= i < num_teacher_layers]
    if bad or not layers or len(set(layers)) != len(layers):
        raise HfCompressError(
            f"student layers {layers} must be distinct teacher layers in 0..{num_teacher_layers - 1}"
        )
    return sorted(layers)


def create_student_from_teacher(
    teacher: PreTrainedModel, layers: str | int | list[int] = "every_other"
) -> PreTrainedModel:
    """A copy of ``teacher`` with only the given layers (see ``select_layers``), weights copied."""
    keep = select_layers(layers, teacher.config.num_hidden_layers)
    prefix, _ = find_layer_list(teacher)
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(keep)
    if isinstance(
        getattr(config, "layer_types", None), list
    ):  # per-layer attention types (Llama 4, Gemma ...)
        config.layer_types = [config.layer_types[i] for i in keep]
    if getattr(config, "pruned_heads", None):  # BERT heads pruned earlier (transformers 4.x): renumber
        config.pruned_heads = {
            new: list(config.pruned_heads[old]) for new, old in enumerate(keep) if old in config.pruned_heads
        }
    student = type(teacher)(config).to(teacher.dtype)

    renumber = {old: new for new, old in enumerate(keep)}
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.(.*)$")
    state = {}
    for key, value in teacher.state_dict().items():
        match = pattern.match(key)
        if match is None:
            state[key] = value
        elif int(match.group(1)) in renumber:
            state[f"{prefix}.{renumber[int(match.group(1))]}.{match.group(2)}"] = value
    missing, unexpected = student.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.endswith("position_ids")]:
        raise HfCompressError(
            f"student weights don't line up with the teacher's: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return student


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (shared weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
