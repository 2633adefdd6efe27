"""Property tests of the pure loss functions."""

import pytest
import torch
import torch.nn.functional as F

from hfcompress.distillation import losses


@pytest.fixture
def logits():
    torch.manual_seed(0)
    return torch.randn(4, 3), torch.randn(4, 3)


def test_identical_inputs_give_zero(logits):
    s, _ = logits
    hidden = torch.randn(2, 5, 8)
    attn = torch.softmax(torch.randn(2, 4, 5, 5), -1)
    assert losses.kd_kl_loss(s, s.clone(), 2.0).abs() < 1e-6
    assert losses.logits_mse_loss(s, s.clone()) == 0
    assert losses.hidden_mse_loss(hidden, hidden.clone()) == 0
    assert losses.hidden_cosine_loss(hidden, hidden.clone()).abs() < 1e-6
    assert losses.attention_kd_loss(attn, attn.clone()).abs() < 1e-6


def test_different_inputs_give_positive_losses(logits):
    s, t = logits
    assert losses.kd_kl_loss(s, t, 1.0) > 0
    assert losses.logits_mse_loss(s, t) > 0
    assert losses.hidden_cosine_loss(torch.randn(2, 5, 8), torch.randn(2, 5, 8)) > 0


def test_kd_matches_definition(logits):
    s, t = logits
    T = 3.0
    expected = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean") * T * T
    assert torch.allclose(losses.kd_kl_loss(s, t, T), expected, atol=1e-6)


def test_temperature_scaling_is_t_squared(logits):
    # Scaling both logits by T and dividing by T recovers the T=1 distributions: the loss differs by T^2 exactly.
    s, t = logits
    for T in (0.5, 2.0, 4.0):
        assert torch.allclose(
            losses.kd_kl_loss(s * T, t * T, T), T**2 * losses.kd_kl_loss(s, t, 1.0), rtol=1e-5
        )


def test_higher_temperature_softens_targets(logits):
    s, t = logits
    # Without the T^2 factor the divergence shrinks as distributions flatten.
    assert losses.kd_kl_loss(s, t, 8.0) / 64 < losses.kd_kl_loss(s, t, 1.0)


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_non_positive_temperature_rejected(logits, temperature):
    with pytest.raises(ValueError, match="temperature must be > 0"):
        losses.kd_kl_loss(*logits, temperature)


def test_token_level_padding_is_masked():
    torch.manual_seed(0)
    s, t = torch.randn(2, 6, 5), torch.randn(2, 6, 5)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]])
    base = losses.kd_kl_loss(s, t, 2.0, mask)
    s2 = s.clone()
    s2[mask == 0] = 100.0  # garbage at padded positions must not matter
    assert torch.allclose(losses.kd_kl_loss(s2, t, 2.0, mask), base)
    h, g = torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    h2 = h.clone()
    h2[mask == 0] = 50.0
    assert torch.allclose(losses.hidden_mse_loss(h2, g, mask), losses.hidden_mse_loss(h, g, mask))
    assert torch.allclose(losses.hidden_cosine_loss(h2, g, mask), losses.hidden_cosine_loss(h, g, mask))
    # A masked mean is a mean over real tokens, not diluted by padding.
    per_token = (h - g).pow(2).mean(-1)
    assert torch.allclose(losses.hidden_mse_loss(h, g, mask), per_token[mask.bool()].mean())


def test_ignored_labels_are_masked():
    torch.manual_seed(0)
    s, t = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    labels = torch.tensor([[1, -100, 2, -100], [0, 1, -100, -100]])
    mask = losses.label_mask(labels)
    s2 = s.clone()
    s2[labels == -100] = -30.0
    assert torch.allclose(losses.kd_kl_loss(s2, t, 1.0, mask), losses.kd_kl_loss(s, t, 1.0, mask))
    hard = losses.hard_label_loss(s, labels)
    expected = F.cross_entropy(s[mask], labels[mask])
    assert torch.allclose(hard, expected)


def test_attention_loss_handles_different_head_counts_and_padding():
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    scores = torch.randn(2, 4, 4, 4).masked_fill(mask[:, None, None, :] == 0, -1e9)
    teacher = torch.softmax(scores, -1)
    student = torch.softmax(torch.randn(2, 2, 4, 4), -1)  # 2 heads against the teacher's 4
    value = losses.attention_kd_loss(student, teacher, mask)
    assert value > 0 and torch.isfinite(value)
    # Head-averaged identical maps give zero even with different head counts.
    same = teacher.mean(1, keepdim=True).expand(2, 2, 4, 4)
    assert losses.attention_kd_loss(same, teacher, mask).abs() < 1e-5


def test_losses_are_differentiable(logits):
    s, t = logits
    s = s.clone().requires_grad_(True)
    (losses.kd_kl_loss(s, t, 2.0) + losses.logits_mse_loss(s, t)).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
