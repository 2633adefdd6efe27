"""Causal LM distillation: token divergences, chunked KD through the lm_head, top-k cache, on-policy, vocab."""

import pytest
import torch
from conftest import make_llama, make_lm_blocks, shared_bpe_tokenizer
from safetensors.torch import load_file

from hfcompress import DistillationConfig, DistillationTrainer, HfCompressError
from hfcompress.data import DistillationDataCollator
from hfcompress.distillation import causal, losses


def config(tmp_path, **kwargs):
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        alpha=0.5,
        temperature=2.0,
    )
    return DistillationConfig(**{**defaults, **kwargs})


def trainer(tmp_path, student=None, teacher=None, data=None, **kwargs):
    tokenizer = shared_bpe_tokenizer()
    return DistillationTrainer(
        model=student if student is not None else make_llama(num_layers=2, seed=1),
        teacher_model=teacher if teacher is not None else make_llama(num_layers=4, seed=0),
        args=config(tmp_path, **kwargs),
        train_dataset=data if data is not None else make_lm_blocks(),
        data_collator=DistillationDataCollator(tokenizer),
        processing_class=tokenizer,
    )


def batch_of(data, n=4):
    return DistillationDataCollator(shared_bpe_tokenizer())([data[i] for i in range(n)])


# -- pure divergences ---------------------------------------------------------------------------------------
@pytest.fixture
def log_probs():
    torch.manual_seed(0)
    return torch.randn(5, 7, 11).log_softmax(-1), torch.randn(5, 7, 11).log_softmax(-1)


def test_divergences_against_their_definitions(log_probs):
    s, t = log_probs
    p_s, p_t = s.exp(), t.exp()
    div = losses.divergence_from_log_probs
    torch.testing.assert_close(div(s, t, "forward_kl"), (p_t * (t - s)).sum(-1))
    torch.testing.assert_close(div(s, t, "reverse_kl"), (p_s * (s - t)).sum(-1))
    m = 0.3 * p_t + 0.7 * p_s
    jsd = 0.3 * (p_t * (t - m.log())).sum(-1) + 0.7 * (p_s * (s - m.log())).sum(-1)
    torch.testing.assert_close(div(s, t, "jsd", 0.3), jsd)
    torch.testing.assert_close(div(s, t, "jsd", 0.0), div(s, t, "forward_kl"))  # TRL's limits
    torch.testing.assert_close(div(s, t, "jsd", 1.0), div(s, t, "reverse_kl"))
    skew = (p_t * (t - (0.1 * p_t + 0.9 * p_s).log())).sum(-1)
    torch.testing.assert_close(div(s, t, "skew_kl", 0.1), skew)
    torch.testing.assert_close(div(s, t, "tv"), 0.5 * (p_s - p_t).abs().sum(-1))
    for kind in losses.DIVERGENCES:
        assert div(t, t, kind, 0.5).abs().max() < 1e-6, kind
        assert (div(s, t, kind, 0.5) > 0).all(), kind


def test_top_k_buckets_equal_the_full_distribution_when_k_is_the_vocabulary(log_probs):
    s_logits, t_logits = log_probs[0] * 3, log_probs[1] * 3
    t = t_logits.log_softmax(-1)
    values, ids = t.topk(11, dim=-1)
    folded = losses.topk_student_log_probs(s_logits, ids)
    for kind in losses.DIVERGENCES:
        full = losses.token_divergence(s_logits, t_logits, kind, 0.5)
        torch.testing.assert_close(losses.divergence_from_log_probs(folded, values, kind, 0.5), full)
    values, ids = t.topk(4, dim=-1)  # a real top-k: k + 1 buckets that each sum to 1
    teacher = losses.with_tail(values, 11)
    assert teacher.shape[-1] == 5
    torch.testing.assert_close(teacher.exp().sum(-1), torch.ones(5, 7))
    torch.testing.assert_close(losses.topk_student_log_probs(s_logits, ids).exp().sum(-1), torch.ones(5, 7))


# -- the trainer ----------------------------------------------------------------------------------------------
def loss_and_grads(tmp_path, chunk, divergence="forward_kl", data=None, **kwargs):
    student = make_llama(num_layers=2, seed=1)
    t = trainer(tmp_path, student=student, data=data, lm_chunk_size=chunk, divergence=divergence, **kwargs)
    student.train()
    loss = t.compute_loss(student, batch_of(t.train_dataset))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in student.named_parameters()}


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd", "tv"])
def test_chunked_kd_equals_unchunked_loss_and_gradients(tmp_path, divergence):
    full_loss, full_grads = loss_and_grads(tmp_path / "a", 0, divergence)
    chunk_loss, chunk_grads = loss_and_grads(tmp_path / "b", 7, divergence)  # 7 does not divide 4 * 23
    assert abs(full_loss - chunk_loss) < 1e-5
    for name, grad in full_grads.items():
        assert (grad - chunk_grads[name]).abs().max() < 1e-5, name


def test_ignored_labels_never_count(tmp_path):
    # labels from position 15 on are -100: positions 14.. predict nothing that counts, and a causal model's
    # positions < 14 never see tokens 15.., so changing those tokens must leave the loss unchanged
    data = make_lm_blocks().map(lambda row: {"labels": row["labels"][:15] + [-100] * 9})
    changed = data.map(lambda row: {"input_ids": row["input_ids"][:15] + [7] * 9})
    for chunk in (0, 5):
        loss_a, _ = loss_and_grads(tmp_path / f"a{chunk}", chunk, data=data)
        loss_b, _ = loss_and_grads(tmp_path / f"b{chunk}", chunk, data=changed)
        assert abs(loss_a - loss_b) < 1e-6
    nothing = data.map(lambda row: {"labels": [-100] * 24})
    student = make_llama(num_layers=2, seed=1).train()
    t = trainer(tmp_path / "c", student=student, data=nothing)
    assert float(t.compute_loss(student, batch_of(nothing))) == 0.0  # nothing counts: 0, not NaN


def test_top_k_cache_with_the_whole_vocabulary_trains_as_the_live_teacher(tmp_path):
    live = trainer(tmp_path / "live", student=make_llama(num_layers=2, seed=1), max_steps=3)
    live.train()
    cached = trainer(
        tmp_path / "cache",
        student=make_llama(num_layers=2, seed=1),
        max_steps=3,
        cache_teacher_logits=True,
        teacher_topk=320,
    )
    cached.train()
    # float rounding only: the live teacher takes the fused forward-KL path, the cache the top-k one (equal per step
    # to 1e-6, test_the_fused_forward_kl_gives_the_chunked_paths_loss_and_gradients); three Adam steps amplify it
    for (name, a), b in zip(live.model.named_parameters(), cached.model.parameters()):
        assert (a - b).abs().max() < 5e-5, name
    cache = load_file(tmp_path / "cache" / "out" / "teacher_topk.safetensors")
    rows = cached.train_dataset
    targets = sum(sum(label != -100 for label in labels[1:]) for labels in rows["labels"])
    assert cache["indices"].shape == (targets, 320)  # trained positions only: no padding, no prompts
    assert causal.topk_bytes_per_token(cache) == (targets * 320 * 8 + 8 * (len(rows) + 1)) / targets


def test_stale_top_k_cache_is_refused_and_kept(tmp_path):
    path = tmp_path / "topk.safetensors"
    trainer(tmp_path / "a", cache_teacher_logits=True, teacher_cache_path=str(path), teacher_topk=8)
    before = path.read_bytes()
    with pytest.raises(HfCompressError, match="stale teacher cache.*temperature"):
        trainer(
            tmp_path / "b",
            cache_teacher_logits=True,
            teacher_cache_path=str(path),
            teacher_topk=8,
            temperature=1.0,
        )
    assert path.read_bytes() == before


def test_on_policy_batches_are_generated_and_trained_on(tmp_path):
    t = trainer(tmp_path, lmbda=1.0, on_policy_prompt_tokens=8, on_policy_max_new_tokens=6, max_steps=2)
    batch = causal.on_policy_inputs(t.model, batch_of(t.train_dataset), 8, 6, 1.0, 4)
    assert batch["input_ids"].shape == (4, 14)
    assert (batch["labels"][:, :8] == -100).all() and (batch["labels"][:, 8:] >= 0).all()
    before = [p.detach().clone() for p in t.model.parameters()]
    t.train()
    assert any((a - b).abs().max() > 0 for a, b in zip(before, t.model.parameters()))


def test_vocabularies_padding_rows_align_else_one_line_error(tmp_path):
    teacher = make_llama(vocab_size=328, seed=0)  # 8 padding rows past the tokenizer's 320 real tokens
    student = make_llama(num_layers=2, vocab_size=320, seed=1)
    assert causal.common_vocab_size(student, teacher, shared_bpe_tokenizer()) == 320
    t = trainer(tmp_path, student=student, teacher=teacher)
    t.train()
    with pytest.raises(HfCompressError, match="cross-tokenizer LM distillation is not supported"):
        causal.common_vocab_size(make_llama(vocab_size=300), teacher, shared_bpe_tokenizer())
    with pytest.raises(HfCompressError, match="cross-tokenizer"):
        trainer(tmp_path / "b", student=make_llama(num_layers=2, vocab_size=300), teacher=teacher)


@pytest.mark.parametrize("alpha,temperature", [(1.0, 1.0), (0.5, 1.0), (0.3, 2.0)])
def test_the_fused_forward_kl_gives_the_chunked_paths_loss_and_gradients(alpha, temperature):
    """The fused path (each head once per chunk, closed-form logit gradients) against the checkpointed chunks and
    against the plain one-shot computation: the same combined loss and the same gradients on the hidden states
    and on the head weight, with a vocabulary cut to the common size and chunks that don't divide the positions."""
    torch.manual_seed(0)
    hidden, head = torch.randn(37, 16, requires_grad=True), torch.nn.Linear(16, 50, bias=False)
    teacher_hidden, teacher_head = torch.randn(37, 16), torch.nn.Linear(16, 52, bias=False)
    head.weight.data *= 4
    targets = torch.randint(0, 48, (37,))
    results = []
    for path in ("fused", "chunked", "plain"):
        hidden.grad, head.weight.grad = None, None
        if path == "fused":
            loss, kd, ce = causal.fused_lm_distillation_loss(
                hidden, head.weight, targets, teacher_hidden, teacher_head.weight, vocab_size=48, kd_weight=alpha,
                ce_weight=1 - alpha, temperature=temperature, chunk_size=10,
            )  # fmt: skip
        else:
            kd, ce = causal.lm_distillation_losses(
                hidden, head, targets, teacher_hidden=teacher_hidden, teacher_head=teacher_head, vocab_size=48,
                temperature=temperature, chunk_size=10 if path == "chunked" else 0,
            )  # fmt: skip
            loss = alpha * kd + (1 - alpha) * ce
        loss.backward()
        results.append((float(loss), float(kd), float(ce), hidden.grad.clone(), head.weight.grad.clone()))
    fused = results[0]
    for other in results[1:]:
        assert fused[:3] == pytest.approx(other[:3], rel=1e-5)
        assert torch.allclose(fused[3], other[3], atol=1e-6) and torch.allclose(fused[4], other[4], atol=1e-6)
    assert causal.plain_head_weight(causal.OutputHead(make_llama(num_layers=1))) is not None
