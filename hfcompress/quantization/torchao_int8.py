"""PyTorch-native int8 for users without ONNX: torchao int8 weight-only, through transformers' ``TorchAoConfig``.

The base model's ``nn.Linear`` weights become int8 with one scale per output row (torchao's ``Int8Tensor``);
activations stay float, and the task head stays in full precision (as for bitsandbytes). The artifact is one
``model.safetensors`` plus a config with its ``quantization_config``, and reloads with plain
``AutoModelFor....from_pretrained`` wherever torchao is installed.

Needs transformers 5 (``backends.require_backend`` says so): transformers 4.57 refuses to save torchao int8
as safetensors (its save gate lists only float8 configs), and its loader expects an older torchao key format
(``weight:qdata``) than torchao 0.18 writes (``_weight_qdata``), so even a hand-written file does not reload.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .bnb import kept_modules
from .config import QuantizationConfig


def quiet_torchao() -> None:
    """torchao logs a warning for each of its CUDA kernel libraries a CPU-only torch can't load; int8
    weight-only on CPU does not use them."""
    logging.getLogger("torchao").setLevel(logging.ERROR)


def torchao_config(skip: list[str]):
    quiet_torchao()
    from torchao.quantization import Int8WeightOnlyConfig
    from transformers import TorchAoConfig

    return TorchAoConfig(Int8WeightOnlyConfig(), modules_to_not_convert=skip)


def quantize_torchao(model_dir: str | Path, out: str | Path, config: QuantizationConfig) -> None:
    """Quantize while loading (int8 weight-only, head kept in full precision) and save as safetensors."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, quantization_config=torchao_config(kept_modules(model_dir)), dtype=torch.float32
    )
    model.save_pretrained(out)
