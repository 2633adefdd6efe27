"""Distillation losses as pure tensor functions; trainers call these and nobody re-implements them.

Shapes: logits are ``(..., num_classes)`` so one function serves sequence-level ``(batch, C)`` and
token-level ``(batch, seq, C)`` distillation. ``mask`` has the leading shape (``(batch,)`` or
``(batch, seq)``), is 1/True where a position counts, and excludes padding and ``-100`` labels. Every loss is
a mean over the positions that count, so it does not depend on batch size or on padding.
"""

from __future__ import annotations

import math

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


# -- token-level divergences for causal language models -----------------------------------------------------
# Each takes log-probabilities over the same categories (the vocabulary, or top-k buckets plus a tail) and
# returns one value per position; callers mask and average. Conventions follow TRL's GKD and DistiLLM.
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl", "tv")


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per position, with 0 * log 0 = 0."""
    gap = torch.where(log_p.isneginf(), 0.0, log_p - log_q)  # finite gradients where p is 0
    return (log_p.exp() * gap).sum(-1)


def _mix(log_p: torch.Tensor, log_q: torch.Tensor, weight_p: float) -> torch.Tensor:
    """log(weight_p * p + (1 - weight_p) * q), computed in log space."""
    stacked = torch.stack([log_p + math.log(weight_p), log_q + math.log1p(-weight_p)])
    return torch.logsumexp(stacked, dim=0)


def divergence_from_log_probs(
    student_log_probs: torch.Tensor,
    teacher_log_probs: torch.Tensor,
    kind: str = "forward_kl",
    beta: float = 0.5,
) -> torch.Tensor:
    """Per-position divergence between teacher ``t`` and student ``s`` distributions.

    - ``forward_kl``: KL(t || s), mean-seeking (the classic KD loss).
    - ``reverse_kl``: KL(s || t), mode-seeking (MiniLLM).
    - ``jsd``: generalized JSD of GKD, ``beta * KL(t || m) + (1 - beta) * KL(s || m)`` with
      ``m = beta * t + (1 - beta) * s``; as in TRL, ``beta=0`` is forward KL and ``beta=1`` reverse KL.
    - ``skew_kl``: KL(t || beta * t + (1 - beta) * s) (DistiLLM; beta around 0.1); ``skew_reverse_kl``:
      KL(s || beta * s + (1 - beta) * t).
    - ``tv``: total variation, half the L1 distance between the distributions.
    """
    s, t = student_log_probs.float(), teacher_log_probs.float()
    if kind == "forward_kl":
        return _kl(t, s)
    if kind == "reverse_kl":
        return _kl(s, t)
    if kind == "jsd":
        if beta <= 0:
            return _kl(t, s)
        if beta >= 1:
            return _kl(s, t)
        mixture = _mix(t, s, beta)
        return beta * _kl(t, mixture) + (1 - beta) * _kl(s, mixture)
    if kind == "skew_kl":
        return _kl(t, t if beta >= 1 else _mix(t, s, beta) if beta > 0 else s)
    if kind == "skew_reverse_kl":
        return _kl(s, s if beta >= 1 else _mix(s, t, beta) if beta > 0 else t)
    if kind == "tv":
        return 0.5 * (s.exp() - t.exp()).abs().sum(-1)
    raise ValueError(f"unknown divergence {kind!r}; allowed: {', '.join(DIVERGENCES)}")


def token_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    kind: str = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-position divergence between temperature-softened logits, times T² (as ``kd_kl_loss``)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return divergence_from_log_probs(student, teacher, kind, beta) * temperature**2


def topk_student_log_probs(
    student_logits: torch.Tensor, indices: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """The student's log-probabilities on the teacher's top-k token ids, plus (when k is less than the
    vocabulary) one last bucket for every other token, so it compares with a cached top-k teacher."""
    log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    top = log_probs.gather(-1, indices.long())
    return with_tail(top, student_logits.shape[-1])


def with_tail(top_log_probs: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Append log(1 - sum(exp(top))) as a last bucket, unless the top-k already covers the vocabulary."""
    if top_log_probs.shape[-1] >= vocab_size:
        return top_log_probs
    covered = torch.logsumexp(top_log_probs, dim=-1, keepdim=True).clamp(max=-1e-7)
    return torch.cat([top_log_probs, torch.log(-torch.expm1(covered))], dim=-1)


def forward_kl_parts(student_logits, teacher_logits, targets, temperature: float):
    """What ``forward_kl_and_cross_entropy`` computes from logits ``(N, V)``, plus what its gradient needs:
    ``(T² KL per position, cross-entropy per position, student log-probs at T, teacher probs at T, student
    log-probs at 1 or None when T = 1)``."""
    logits = student_logits.float()
    log_student = F.log_softmax(logits / temperature if temperature != 1 else logits, dim=-1)
    teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    difference = teacher - log_student
    teacher = teacher.exp_()  # now the teacher's probabilities
    divergence = (teacher * difference).sum(-1)
    if not torch.isfinite(divergence).all():  # a probability of 0 (a -inf logit): 0 * log 0 counts as 0
        divergence = torch.where(teacher > 0, teacher * difference, 0.0).sum(-1)
    del difference
    log_plain = None if temperature == 1 else F.log_softmax(logits, dim=-1)
    cross_entropy = -(log_student if log_plain is None else log_plain).gather(-1, targets[:, None])[:, 0]
    return divergence * temperature**2, cross_entropy, log_student, teacher, log_plain


def forward_kl_logit_grads(log_student, teacher, targets, log_plain, temperature: float, kd_scale, ce_scale):
    """The gradient on the student logits of ``kd_scale * T² KL + ce_scale * CE`` (scales: scalars or one per
    position): ``kd_scale T (softmax(z/T) - p_teacher) + ce_scale (softmax(z) - onehot)``."""
    kd_scale, ce_scale = torch.as_tensor(kd_scale), torch.as_tensor(ce_scale)
    kd_scale = kd_scale[:, None] if kd_scale.ndim else kd_scale
    ce_scale = ce_scale[:, None] if ce_scale.ndim else ce_scale
    student = log_student.exp()
    grad = (student - teacher).mul_(kd_scale * temperature)
    grad.add_((student if log_plain is None else log_plain.exp()) * ce_scale)
    grad.scatter_add_(-1, targets[:, None], (-ce_scale).expand(targets.shape[0], 1).to(grad.dtype))
    return grad


class _ForwardKLAndCrossEntropy(torch.autograd.Function):
    """``forward_kl_parts``' two per-position terms, with the closed-form gradient ``forward_kl_logit_grads``: the same
    values and gradients as ``token_divergence`` + ``F.cross_entropy``, in about half the passes over the ``(N, V)``
    logits (one log-softmax per model, the student's shared by both terms when T = 1, and no autograd graph through
    the element-wise steps)."""

    @staticmethod
    def forward(ctx, student_logits, teacher_logits, targets, temperature):
        divergence, cross_entropy, log_student, teacher, log_plain = forward_kl_parts(
            student_logits, teacher_logits, targets, temperature
        )
        ctx.temperature, ctx.logits_dtype = temperature, student_logits.dtype
        ctx.save_for_backward(log_student, teacher, targets, log_plain)
        return divergence, cross_entropy

    @staticmethod
    def backward(ctx, grad_divergence, grad_cross_entropy):
        log_student, teacher, targets, log_plain = ctx.saved_tensors
        grad = forward_kl_logit_grads(log_student, teacher, targets, log_plain, ctx.temperature, grad_divergence,
                                      grad_cross_entropy)  # fmt: skip
        return grad.to(ctx.logits_dtype), None, None, None


def forward_kl_and_cross_entropy(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(token_divergence(..., 'forward_kl', temperature=T), F.cross_entropy(student_logits, targets))`` per position
    for logits ``(N, V)`` and targets ``(N,)``, computed in one pass with closed-form gradients."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return _ForwardKLAndCrossEntropy.apply(student_logits, teacher_logits, targets, temperature)
