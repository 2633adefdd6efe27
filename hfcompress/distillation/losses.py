"""Distillation losses as pure tensor functions; trainers call these and nobody re-implements them.

Shapes: logits are ``(..., num_classes)`` so one function serves sequence-level ``(batch, C)`` and
token-level ``(batch, seq, C)`` distillation. ``mask`` has the leading shape (``(batch,)`` or
``(batch, seq)``), is 1/True where a position counts, and excludes padding and ``-100`` labels. Every loss is
a mean over the positions that count, so it does not depend on batch size or on padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values`` over positions where ``mask`` is set (all positions when mask is None)."""
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def label_mask(labels: torch.Tensor) -> torch.Tensor:
    """True where a label is real, False at ``-100`` (ignored) positions."""
    return labels != IGNORE_INDEX


def kd_kl_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened distributions, times T² (Hinton et al. 2015).

    The T² factor keeps gradient magnitudes comparable across temperatures, so ``alpha`` means the same
    thing at T=1 and T=4.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    per_position = (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(-1)
    return masked_mean(per_position, mask) * temperature**2


def logits_mse_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error between raw logits (Ba & Caruana 2014), averaged over classes then positions."""
    per_position = (student_logits.float() - teacher_logits.float()).pow(2).mean(-1)
    return masked_mean(per_position, mask)


def hard_label_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against gold labels, ignoring ``-100``; works for ``(B, C)`` and ``(B, L, C)``.

    A batch with no real label (all unlabelled rows) gives 0, not NaN.
    """
    total = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return total / label_mask(labels).sum().clamp_min(1)


def hidden_mse_loss(
    student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """MSE between hidden states ``(B, L, H)`` (TinyBERT), averaged over H then over unpadded tokens.

    Widths must match: project the student's states first when they differ (the trainer learns a linear map).
    """
    per_token = (student_hidden.float() - teacher_hidden.float()).pow(2).mean(-1)
    return masked_mean(per_token, mask)


def hidden_cosine_loss(
    student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """1 - cosine similarity of hidden states per token (DistilBERT's cosine loss), over unpadded tokens."""
    per_token = 1.0 - F.cosine_similarity(student_hidden.float(), teacher_hidden.float(), dim=-1)
    return masked_mean(per_token, mask)


def attention_kd_loss(
    student_attentions: torch.Tensor,
    teacher_attentions: torch.Tensor,
    mask: torch.Tensor | None = None,
    eps: float = 1e-12,
) -> torch.Tensor:
    """KL(teacher || student) between attention distributions ``(B, heads, L, L)`` (as MiniLM).

    Head counts may differ between teacher and student, so both are averaged over heads first. Each query
    row is a distribution over keys; padded keys are zeroed and rows renormalised, and padded query rows
    are excluded via ``mask`` ``(B, L)``.
    """
    student = student_attentions.float().mean(1)
    teacher = teacher_attentions.float().mean(1)
    if mask is not None:
        key_mask = mask[:, None, :].to(student.dtype)
        student = student * key_mask
        teacher = teacher * key_mask
        student = student / student.sum(-1, keepdim=True).clamp_min(eps)
        teacher = teacher / teacher.sum(-1, keepdim=True).clamp_min(eps)
    per_query = (teacher * (teacher.clamp_min(eps).log() - student.clamp_min(eps).log())).sum(-1)
    return masked_mean(per_query, mask)
