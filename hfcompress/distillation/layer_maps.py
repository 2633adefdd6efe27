"""Which student layer learns from which teacher layer: the hidden-state and attention maps of the
distillation terms, resolved for two depths (``resolve_layer_maps``) or written for a student cut from its
teacher (``kept_layer_maps``)."""

from __future__ import annotations

from ..errors import HfCompressError
from .config import DistillationConfig, parse_layer_map


def _auto_pairs(num_student: int, num_teacher: int, offset: int) -> list[tuple[int, int]]:
    """Uniform student->teacher map: hidden states (offset 0, 1-based layers) or attentions (offset 1)."""
    return [
        (i, round((i + offset) * num_teacher / num_student) - offset)
        for i in range(1 - offset, num_student + 1 - offset)
    ]


def _check_pairs(pairs, what: str, num_student: int, num_teacher: int) -> None:
    for s, t in pairs:
        if not 0 <= s < num_student or not 0 <= t < num_teacher:
            raise HfCompressError(
                f"{what} pair {s}:{t} names a layer that doesn't exist: student has 0..{num_student - 1}, "
                f"teacher has 0..{num_teacher - 1}"
            )


def resolve_layer_maps(args: DistillationConfig, student_layers: int, teacher_layers: int):
    """(hidden pairs, attention pairs) for these depths; raises if a map names a layer that doesn't exist.

    Hidden-state indices count the embeddings as 0, so a model of L layers has hidden states 0..L.
    """
    hidden = parse_layer_map(args.hidden_layer_map) or _auto_pairs(student_layers, teacher_layers, 0)
    attention = parse_layer_map(args.attention_layer_map) or _auto_pairs(student_layers, teacher_layers, 1)
    _check_pairs(hidden, "hidden_layer_map (0 = embeddings)", student_layers + 1, teacher_layers + 1)
    _check_pairs(attention, "attention_layer_map", student_layers, teacher_layers)
    return hidden, attention


def kept_layer_maps(args: DistillationConfig, kept: list[int]) -> dict[str, str]:
    """Layer maps for a student cut from the teacher: each kept layer learns from the teacher layer it was
    (``kept[i]`` is the teacher index of student layer ``i``), for the maps left at 'auto'."""
    maps = {}
    if args.hidden_layer_map == "auto":
        maps["hidden_layer_map"] = ",".join(f"{i + 1}:{k + 1}" for i, k in enumerate(kept))
    if args.attention_layer_map == "auto":
        maps["attention_layer_map"] = ",".join(f"{i}:{k}" for i, k in enumerate(kept))
    return maps
