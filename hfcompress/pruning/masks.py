"""Binary masks from importance scores, at a target sparsity, per layer or global; sparsity reports."""

from __future__ import annotations

import torch


def _keep_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Boolean mask keeping exactly ``numel - round(sparsity * numel)`` highest-scoring entries."""
    flat = scores.flatten()
    keep = flat.numel() - round(sparsity * flat.numel())
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if keep > 0:
        mask[torch.topk(flat.float(), keep, sorted=False).indices] = True
    return mask.view_as(scores)


def masks_for_sparsity(
    scores: dict[str, torch.Tensor], sparsity: float, scope: str = "layer"
) -> dict[str, torch.Tensor]:
    """Masks (True = keep) removing the lowest-scoring ``sparsity`` fraction.

    ``scope="layer"``: each tensor loses the same fraction. ``"global"``: one threshold across all tensors,
    so layers with many unimportant weights lose more (see Frankle & Carbin 2019 on global magnitude pruning).
    """
    if scope == "layer":
        return {name: _keep_mask(score, sparsity) for name, score in scores.items()}
    names = list(scores)
    flat = torch.cat([scores[n].flatten().float() for n in names])
    keep_all = _keep_mask(flat, sparsity)
    masks, offset = {}, 0
    for name in names:
        n = scores[name].numel()
        masks[name] = keep_all[offset : offset + n].view_as(scores[name])
        offset += n
    return masks


def sparsity_report(weights: dict[str, torch.Tensor]) -> dict:
    """Fraction of exact zeros per tensor and overall (what really is pruned, not what a mask says)."""
    layers = {name: float((w == 0).sum()) / w.numel() for name, w in weights.items()}
    total = sum(w.numel() for w in weights.values())
    zeros = sum(float((w == 0).sum()) for w in weights.values())
    return {"overall": zeros / total if total else 0.0, "parameters": total, "layers": layers}
