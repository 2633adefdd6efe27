"""Quantization-aware training (QAT) for ONNX Runtime dynamic int8, as a ``TrainerCallback``.

While training, every selected ``nn.Linear`` computes with its weight and its input rounded the way ONNX
Runtime's dynamic int8 will round them: weights symmetric int8 in [-127, 127] with one scale per tensor (or
per output row with ``per_channel``), inputs uint8 with a scale and zero point from each batch's own min/max
(``DynamicQuantizeLinear``). Gradients pass through the rounding unchanged (straight-through estimator), so
the fp32 weights learn to sit where rounding hurts least. At the end of training the weights are replaced by
their rounded values, which ONNX Runtime's quantizer then reproduces exactly: ``quantize(..., method=
"onnx-int8-dynamic", per_channel=...)`` with the same ``per_channel``.

The model's parameters and state dict are untouched while training (only the Linear modules' ``forward`` is
swapped), so checkpoints, resuming, DDP and ``save_pretrained`` work as usual. Not modelled: the attention
score matmuls, which ONNX Runtime also quantizes dynamically.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn
from transformers import TrainerCallback

from ..modeling import matching_linears


def fake_quant_weight(weight: torch.Tensor, per_channel: bool = False) -> torch.Tensor:
    """``weight`` rounded to symmetric int8 (ONNX Runtime's QInt8 weights), with a straight-through gradient."""
    absmax = weight.detach().abs().amax(dim=1, keepdim=True) if per_channel else weight.detach().abs().amax()
    scale = (absmax / 127).clamp_min(torch.finfo(weight.dtype).tiny)
    rounded = torch.clamp(torch.round(weight / scale), -127, 127) * scale
    return weight + (rounded - weight).detach()


def fake_quant_activation(x: torch.Tensor) -> torch.Tensor:
    """``x`` rounded as ``DynamicQuantizeLinear`` does (uint8, range from this tensor, always holding 0), with a
    straight-through gradient."""
    low, high = x.detach().min().clamp(max=0), x.detach().max().clamp(min=0)
    scale = ((high - low) / 255).clamp_min(torch.finfo(x.dtype).tiny)
    zero_point = torch.clamp(torch.round(-low / scale), 0, 255)
    rounded = (torch.clamp(torch.round(x / scale) + zero_point, 0, 255) - zero_point) * scale
    return x + (rounded - x).detach()


def _qat_forward(self, x):
    if self.qat_activations:
        x = fake_quant_activation(x)
    return F.linear(x, fake_quant_weight(self.weight, self.qat_per_channel), self.bias)


def attach_fake_quant(model: nn.Module, per_channel=False, activations=True, pattern=None) -> list[str]:
    """Make the selected Linear layers compute with fake-quantized weights (and inputs); returns their names."""
    # by default every Linear: ONNX Runtime's dynamic int8 quantizes them all, task head included
    modules = matching_linears(model, pattern or ".")
    for module in modules.values():
        module.qat_per_channel, module.qat_activations = per_channel, activations
        module.forward = types.MethodType(_qat_forward, module)
    return list(modules)


@torch.no_grad()
def bake_fake_quant(model: nn.Module) -> int:
    """Restore the plain forward of every fake-quantized Linear and write its rounded weights into it; returns
    how many were baked."""
    count = 0
    for module in model.modules():
        if isinstance(module, nn.Linear) and hasattr(module, "qat_per_channel"):  # ours, not other hooks
            module.weight.copy_(fake_quant_weight(module.weight, module.qat_per_channel))
            del module.forward, module.qat_per_channel, module.qat_activations
            count += 1
    return count


class QuantizationAwareCallback(TrainerCallback):
    """Trains with ONNX Runtime dynamic int8 rounding simulated (see the module docstring); bakes the rounded
    weights in at the end of training. Quantize the result with ``onnx-int8-dynamic`` and the same
    ``per_channel``."""

    def __init__(
        self, per_channel: bool = False, activations: bool = True, target_modules: str | None = None
    ):
        self.per_channel, self.activations, self.target_modules = per_channel, activations, target_modules
        self.modules: list[str] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.modules = attach_fake_quant(model, self.per_channel, self.activations, self.target_modules)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        bake_fake_quant(model)
