"""Distillation for causal language models: next-token divergences over the vocabulary, in chunks.

A causal LM predicts token ``i + 1`` at position ``i``: the divergence and the LM loss count the positions
whose next label is not ``-100`` (padding, prompt tokens). With a 49k vocabulary, ``[batch, seq, vocab]``
logits of two models do not fit comfortably, so the default path never builds them: it takes both models'
final hidden states and sends ``chunk_size`` positions at a time through each ``lm_head``, under activation
checkpointing, so that only one chunk's logits exist at any moment, in the forward and in the backward
pass (the same idea as TRL/Liger's chunked JSD). ``chunk_size=0`` is the plain path, for comparison.

The teacher can also come from a cache of its top-k log-probabilities per position plus the tail mass
(DistillKit's offline mode): the student's distribution is folded into the same k + 1 buckets.
"""

from __future__ import annotations

import inspect
import random

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..errors import HfCompressError
from ..modeling import logit_transform
from . import losses
from .cache import teacher_logits_in_order


def unwrap(model):
    """The model inside DDP/FSDP-style wrappers (``.module``)."""
    while hasattr(model, "module"):
        model = model.module
    return model


def output_vocab_size(model) -> int:
    return unwrap(model).get_output_embeddings().weight.shape[0]


def common_vocab_size(student, teacher, tokenizer=None, teacher_tokenizer=None) -> int:
    """How many output ids student and teacher share; raises unless they read one tokenizer.

    Two tokenizers given are compared by their vocabularies (token -> id), not their sizes. Output sizes that
    differ only by padding rows (Qwen2.5's 151,936 vs 152,064 for one tokenizer of 151,665 tokens) are
    aligned on the smaller size; the rows beyond the tokenizer are never real tokens.
    """
    from ..data import same_vocabulary

    if tokenizer is not None and teacher_tokenizer is not None and not same_vocabulary(tokenizer, teacher_tokenizer):
        raise HfCompressError(
            f"teacher and student tokenizers differ (same size {len(teacher_tokenizer)} or not, their tokens map "
            "to other ids); cross-tokenizer LM distillation is not supported: use a student with the teacher's "
            "tokenizer"
        )
    student_size, teacher_size = output_vocab_size(student), output_vocab_size(teacher)
    if student_size == teacher_size:
        return student_size
    used = len(tokenizer) if tokenizer is not None else None
    if used is not None and used <= min(student_size, teacher_size):
        return min(student_size, teacher_size)
    raise HfCompressError(
        f"teacher ({teacher_size} output ids) and student ({student_size}) have different vocabularies"
        + (f" (the tokenizer has {used} tokens)" if used is not None else " and no tokenizer was given")
        + "; cross-tokenizer LM distillation is not supported: use a student with the teacher's tokenizer"
    )


class OutputHead(torch.nn.Module):
    """The model's LM head followed by what the model does to its output (Gemma2/3's final-logit
    softcapping, Granite's ``logits_scaling``; from the family table), so that ``OutputHead(h)`` equals the
    model's own logits at those states."""

    def __init__(self, model):
        super().__init__()
        model = unwrap(model)
        self.head = model.get_output_embeddings()
        self.transform = logit_transform(model.config)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.head(hidden)
        return logits if self.transform is None else self.transform(logits)


def accepts(model, argument: str) -> bool:
    """True when the (unwrapped, PEFT-unwrapped) model's forward takes ``argument``."""
    model = unwrap(model)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return argument in inspect.signature(base.forward).parameters


def final_hidden_states(model, inputs: dict, teacher: bool = False) -> torch.Tensor:
    """The states the ``lm_head`` reads, ``(B, L, H)``, without computing the full logits.

    The student runs through its own (possibly DDP-wrapped) forward so gradient synchronisation works; its
    ``lm_head`` sees only the last position (``logits_to_keep=1``). The teacher, unwrapped and frozen, runs
    its decoder alone when it exposes one.
    """
    if teacher and hasattr(model, "get_decoder"):
        return model.get_decoder()(**inputs).last_hidden_state
    extra = {"logits_to_keep": 1} if accepts(model, "logits_to_keep") else {}
    return model(**inputs, output_hidden_states=True, **extra).hidden_states[-1]


def _position_losses(
    student_logits, targets, teacher_logits, topk_indices, topk_log_probs, vocab_size, kind, beta, temperature
):
    """Summed divergence and summed cross-entropy over a set of positions ``(N, V)``."""
    student_logits = student_logits[..., :vocab_size]
    if topk_indices is not None:
        student = losses.topk_student_log_probs(student_logits, topk_indices, temperature)
        divergence = losses.divergence_from_log_probs(student, topk_log_probs, kind, beta) * temperature**2
    elif kind == "forward_kl":  # both terms from one pass over the logits, closed-form gradients
        divergence, cross_entropy = losses.forward_kl_and_cross_entropy(
            student_logits, teacher_logits[..., :vocab_size], targets, temperature
        )
        return divergence.sum(), cross_entropy.sum()
    else:
        divergence = losses.token_divergence(
            student_logits, teacher_logits[..., :vocab_size], kind, beta, temperature
        )
    cross_entropy = F.cross_entropy(student_logits.float(), targets, reduction="sum")
    return divergence.sum(), cross_entropy


def plain_head_weight(head: torch.nn.Module) -> torch.Tensor | None:
    """The weight of an ``OutputHead`` that is a bias-free Linear with nothing after it, which the fused forward-KL
    path can multiply itself; None for any other head."""
    inner = getattr(head, "head", None)
    if isinstance(head, OutputHead) and head.transform is None and type(inner) is torch.nn.Linear and inner.bias is None:
        return inner.weight
    return None


class _FusedHeadForwardKL(torch.autograd.Function):
    """``kd_weight * T² KL(teacher || student) + ce_weight * CE`` summed over positions, from the final hidden states
    and the two heads' weights, chunk by chunk. Each chunk's logits exist only while it is processed: their gradient
    (closed form, ``losses.forward_kl_logit_grads``) goes straight into the hidden states' and the weight's gradients,
    which backward only scales (Liger's fused linear cross-entropy, for KD). Against the checkpointed path this runs
    each head once per chunk instead of twice. Returns ``(combined, kd, ce)``; only ``combined`` is differentiable."""

    @staticmethod
    def forward(ctx, hidden, weight, teacher_hidden, teacher_weight, targets, vocab_size, temperature, kd_weight,
                ce_weight, chunk_size):  # fmt: skip
        grad_hidden = torch.zeros_like(hidden)
        grad_weight = torch.zeros_like(weight)
        kd_sum = hidden.new_zeros((), dtype=torch.float32)
        ce_sum = kd_sum.clone()
        for start in range(0, targets.numel(), chunk_size):
            part = slice(start, start + chunk_size)
            chunk = hidden[part]
            logits = F.linear(chunk, weight[:vocab_size])
            teacher_logits = F.linear(teacher_hidden[part], teacher_weight[:vocab_size])
            kd, ce, log_student, teacher, log_plain = losses.forward_kl_parts(
                logits, teacher_logits, targets[part], temperature
            )
            del logits, teacher_logits
            kd_sum += kd.sum()
            ce_sum += ce.sum()
            grad = losses.forward_kl_logit_grads(log_student, teacher, targets[part], log_plain, temperature,
                                                 kd_weight, ce_weight).to(weight.dtype)  # fmt: skip
            del log_student, teacher, log_plain
            grad_hidden[part] = grad @ weight[:vocab_size]
            grad_weight[:vocab_size] += grad.T @ chunk
        ctx.save_for_backward(grad_hidden, grad_weight)
        combined = kd_weight * kd_sum + ce_weight * ce_sum
        ctx.mark_non_differentiable(kd_sum, ce_sum)
        return combined, kd_sum, ce_sum

    @staticmethod
    def backward(ctx, grad_combined, _grad_kd, _grad_ce):
        grad_hidden, grad_weight = ctx.saved_tensors
        return (grad_hidden * grad_combined.to(grad_hidden.dtype), grad_weight * grad_combined.to(grad_weight.dtype),
                None, None, None, None, None, None, None, None)  # fmt: skip


def fused_lm_distillation_loss(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    targets: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_weight: torch.Tensor,
    *,
    vocab_size: int,
    kd_weight: float,
    ce_weight: float,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(kd_weight * KD + ce_weight * CE, KD, CE)``, each a mean over the ``N`` positions, for the forward KL through
    plain heads (``plain_head_weight``): the value and gradients of ``lm_distillation_losses`` combined with those
    weights, with each head run once per chunk. Only the first is differentiable."""
    count = max(int(targets.numel()), 1)
    with torch.no_grad():
        teacher_hidden = teacher_hidden.to(student_hidden.dtype)
        teacher_weight = teacher_weight.to(student_hidden.dtype)
    combined, kd, ce = _FusedHeadForwardKL.apply(
        student_hidden, student_weight, teacher_hidden, teacher_weight, targets, vocab_size, temperature, kd_weight,
        ce_weight, max(chunk_size, 1),
    )  # fmt: skip
    return combined / count, kd / count, ce / count


def lm_distillation_losses(
    student_hidden: torch.Tensor,
    student_head: torch.nn.Module,
    targets: torch.Tensor,
    *,
    teacher_hidden: torch.Tensor | None = None,
    teacher_head: torch.nn.Module | None = None,
    topk_indices: torch.Tensor | None = None,
    topk_log_probs: torch.Tensor | None = None,
    vocab_size: int,
    kind: str = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(divergence, cross-entropy), each a mean over the ``N`` positions given.

    ``student_hidden`` ``(N, H)`` and ``targets`` ``(N,)`` are the positions that count; the teacher is either
    ``teacher_hidden`` + ``teacher_head`` or cached ``topk_indices``/``topk_log_probs`` for those positions.
    Chunks of ``chunk_size`` positions go through the heads under checkpointing; the result and its gradients
    equal the one-shot computation up to float rounding.
    """
    count = max(int(targets.numel()), 1)
    # zeros that hang off the student's graph: a micro-batch with no position that counts (a chat row cut before
    # its answer) still backpropagates, with zero gradients for every parameter, so DDP's other ranks don't wait
    kd_total = student_head(student_hidden[:0]).float().sum() * 0.0
    ce_total = kd_total.clone()
    size = chunk_size if chunk_size > 0 else max(int(targets.numel()), 1)

    def chunk_losses(hidden, chunk_targets, teacher_states, indices, log_probs):
        teacher_logits = None
        if teacher_states is not None:
            with torch.no_grad():
                teacher_logits = teacher_head(teacher_states)
        return _position_losses(
            student_head(hidden), chunk_targets, teacher_logits, indices, log_probs, vocab_size, kind, beta,
            temperature,
        )  # fmt: skip

    for start in range(0, targets.numel(), size):
        part = slice(start, start + size)
        args = (
            student_hidden[part],
            targets[part],
            None if teacher_hidden is None else teacher_hidden[part],
            None if topk_indices is None else topk_indices[part],
            None if topk_log_probs is None else topk_log_probs[part],
        )
        if chunk_size > 0 and torch.is_grad_enabled():
            kd, ce = checkpoint(chunk_losses, *args, use_reentrant=False)
        else:
            kd, ce = chunk_losses(*args)
        kd_total = kd_total + kd
        ce_total = ce_total + ce
    return kd_total / count, ce_total / count


def next_token_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask ``(B, L-1)`` of positions whose next label counts, their targets ``(N,)``)."""
    following = labels[:, 1:]
    mask = following != losses.IGNORE_INDEX
    return mask, following[mask]


def target_count(labels: torch.Tensor) -> int:
    """How many next-token targets ``labels`` holds: the positions :func:`next_token_positions` keeps."""
    return int((labels[..., 1:] != losses.IGNORE_INDEX).sum())


@torch.no_grad()
def compute_teacher_topk(
    teacher_forward, dataset, collator, batch_size: int, k: int, temperature: float, vocab_size: int
) -> dict[str, torch.Tensor]:
    """The teacher's top-k log-probabilities (at ``temperature``) and their token ids, plus the tail bucket when k
    is less than the vocabulary, at the positions that are trained on only (those whose next label counts), row
    after row: ``indices (T, k)``, ``log_probs (T, k or k + 1)``, and ``offsets (N + 1,)``, where row i's
    positions are ``offsets[i]:offsets[i + 1]``. Nothing is stored for padding or for a chat row's prompt."""
    indices, log_probs, counts = [], [], []
    for batch, logits in teacher_logits_in_order(teacher_forward, dataset, collator, batch_size):
        mask, _ = next_token_positions(batch["labels"].to(logits.device))
        log_softmax = F.log_softmax(logits[:, :-1][mask][..., :vocab_size].float() / temperature, dim=-1)
        values, ids = log_softmax.topk(min(k, vocab_size), dim=-1)
        indices.append(ids.to(torch.int32).cpu())
        log_probs.append(losses.with_tail(values, vocab_size).cpu())
        counts.append(mask.sum(1).cpu())
    offsets = F.pad(torch.cat(counts).cumsum(0), (1, 0))
    return {"indices": torch.cat(indices), "log_probs": torch.cat(log_probs), "offsets": offsets}


def cached_topk_rows(cache: dict[str, torch.Tensor], rows: torch.Tensor, expected: int) -> dict[str, torch.Tensor]:
    """The cached positions of dataset rows ``rows``, in batch order: what ``next_token_positions``' mask picks
    from those rows' logits, as ``topk_indices`` and ``topk_log_probs``."""
    offsets = cache["offsets"]
    picks = torch.cat([torch.arange(int(offsets[i]), int(offsets[i + 1])) for i in rows.tolist()])
    if len(picks) != expected:
        raise HfCompressError(
            f"the teacher cache holds {len(picks)} trained positions for these rows, the batch has {expected}: "
            "the cache was made from other labels; delete it to rebuild"
        )
    return {"topk_indices": cache["indices"][picks], "topk_log_probs": cache["log_probs"][picks]}


def topk_bytes_per_token(cache: dict[str, torch.Tensor]) -> float:
    """Bytes of cache per trained position (the row offsets included)."""
    total = sum(t.numel() * t.element_size() for t in cache.values())
    return total / max(cache["indices"].shape[0], 1)


def prompt_lengths(labels: torch.Tensor, attention_mask: torch.Tensor | None, prompt_tokens: int) -> torch.Tensor:
    """Where each row's on-policy continuation starts ``(B,)``: the end of its prompt, i.e. its first labelled
    token, for chat and prompt/completion rows; the first ``prompt_tokens`` real tokens for a row whose every
    token is a label (plain text). At least one token each."""
    real = labels.new_full((labels.shape[0],), labels.shape[1]) if attention_mask is None else attention_mask.sum(1)
    labelled = labels != losses.IGNORE_INDEX
    first = torch.where(labelled.any(1), labelled.float().argmax(1), real)
    return torch.where(first > 0, first, real.clamp(max=prompt_tokens)).clamp(min=1)


def left_padded_prompts(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, length, pad_id: int):
    """The first ``length`` real tokens of each right-padded row (an int, or one per row), padded on the left
    instead, as generation needs them: ``(ids, mask)`` of shape ``(B, longest)``."""
    lengths = torch.as_tensor(length, device=input_ids.device).expand(input_ids.shape[0])
    width = min(int(lengths.max()), input_ids.shape[1])
    ids = input_ids[:, :width]
    order = torch.arange(width, device=ids.device)
    mask = torch.ones_like(ids) if attention_mask is None else attention_mask[:, :width]
    mask = mask * (order[None, :] < lengths[:, None]).to(mask.dtype)
    counts = mask.sum(1)
    # row i's token j moves to column j + (width - counts[i]); columns left of that are padding
    shift = (width - counts)[:, None]
    source = (order[None, :] - shift).clamp(min=0)
    left_ids = torch.where(order[None, :] >= shift, ids.gather(1, source), torch.full_like(ids, pad_id))
    left_mask = (order[None, :] >= shift).to(mask.dtype)
    return left_ids, left_mask


@torch.no_grad()
def on_policy_inputs(
    model, inputs: dict, prompt_tokens: int, max_new_tokens: int, temperature: float, pad_token_id: int | None,
    stop_ids: list[int] | None = None,
) -> dict:  # fmt: skip
    """GKD's on-policy batch: the student continues each row from the end of its prompt (``prompt_lengths``) by
    sampling up to ``max_new_tokens`` tokens, stopping on ``stop_ids`` (its end-of-turn ids); only the sampled
    tokens up to and including a row's stop are labels, and what follows it is padding.

    Training batches are right-padded; prompts are moved to the left for generation, and the returned
    ``position_ids`` count real tokens only, as generation did.
    """
    student = unwrap(model)
    was_training = student.training
    student.eval()
    pad = 0 if pad_token_id is None else pad_token_id
    lengths = prompt_lengths(inputs["labels"], inputs.get("attention_mask"), prompt_tokens)
    prompt, attention = left_padded_prompts(inputs["input_ids"], inputs.get("attention_mask"), lengths, pad)
    generated = student.generate(
        input_ids=prompt,
        attention_mask=attention,
        do_sample=True,
        temperature=temperature,
        top_k=0,
        max_new_tokens=max_new_tokens,
        pad_token_id=pad,
        eos_token_id=stop_ids or None,
    )
    student.train(was_training)
    new = generated[:, prompt.shape[1] :]
    stopped = torch.isin(new, torch.as_tensor(stop_ids or [], dtype=new.dtype, device=new.device))
    # a token is real up to and including the row's first stop
    after_stop = (stopped.cumsum(1) - stopped.long()) > 0
    mask = torch.cat([attention, (~after_stop).to(attention.dtype)], dim=1)
    labels = generated.clone()
    labels[:, : prompt.shape[1]] = losses.IGNORE_INDEX
    labels[mask == 0] = losses.IGNORE_INDEX
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": generated, "attention_mask": mask, "position_ids": position_ids, "labels": labels}


def draw_on_policy(lmbda: float, rng: random.Random) -> bool:
    """True for the share ``lmbda`` of batches that are generated by the student."""
    return lmbda > 0 and rng.random() < lmbda
