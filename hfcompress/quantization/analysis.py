"""Linear k-bit weight quantization (min/max scaling) as an analysis tool: which layers tolerate fewer bits.

``kbit_error_report`` fake-quantizes each Linear weight to 2..8 bits with one asymmetric min/max scale per
tensor and reports the relative error ||W - Q(W)|| / ||W||. Nothing in the model changes.
"""

from __future__ import annotations

import torch
from torch import nn


def linear_quantize(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """``weight`` rounded to ``2**bits`` evenly spaced levels between its min and max (dequantized back)."""
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in 1..16, got {bits}")
    low, high = weight.min(), weight.max()
    levels = 2**bits - 1
    scale = (high - low) / levels if high > low else torch.ones((), dtype=weight.dtype)
    return torch.round((weight - low) / scale).clamp(0, levels) * scale + low


@torch.no_grad()
def kbit_error_report(model: nn.Module, bits=range(2, 9)) -> dict[str, dict[int, float]]:
    """For each Linear layer's weight, the relative quantization error at each bit width."""
    report = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            weight = module.weight.detach().float()
            norm = weight.norm().clamp_min(1e-12)
            report[name] = {b: float((weight - linear_quantize(weight, b)).norm() / norm) for b in bits}
    return report
