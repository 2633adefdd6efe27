"""bitsandbytes 8-bit (LLM.int8) and 4-bit (nf4/fp4) through transformers' ``BitsAndBytesConfig``.

The CPU pitfalls of bitsandbytes (docs/quantization.md) are handled here so users don't meet them:
- task heads (and anything outside the base model) stay in full precision (``llm_int8_skip_modules``): with
  transformers 5 a 2-label head quantized to 4 bits fails in the forward pass;
- the model is saved right after loading, before any inference forward (saving a 4-bit model after a
  forward roughly doubles its error unless double quantization is on, which is the default here);
- ``disable_avx512bf16`` switches off the AVX512-BF16 path of ``Linear4bit`` that breaks a training
  forward after an eval forward (QLoRA right after its first evaluation); ``load_bnb`` calls it.
On CPU these save memory, not time: bitsandbytes kernels run slower than fp32 there.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .config import QuantizationConfig


def kept_modules(model_dir: str | Path, model_class=None) -> list[str]:
    """Top-level modules outside the base model (the task head, e.g. ``classifier``, ``score``, ``lm_head``)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(model_dir)
    with init_empty_weights():
        model = (model_class or AutoModelForSequenceClassification).from_config(config)
    return [name for name, _ in model.named_children() if name != model.base_model_prefix]


def bnb_config(config: QuantizationConfig, skip: list[str]):
    from transformers import BitsAndBytesConfig

    if config.method == "bnb-int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=config.method.removeprefix("bnb-"),
        bnb_4bit_use_double_quant=config.double_quant,
        bnb_4bit_compute_dtype=getattr(torch, config.compute_dtype),
        llm_int8_skip_modules=skip,
    )


def disable_avx512bf16(model) -> int:
    """Turn off the AVX512-BF16 CPU path of every ``Linear4bit``; returns how many were changed."""
    count = 0
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count


def load_bnb(model_dir: str | Path, config: QuantizationConfig | None = None, model_class=None):
    """Load a model with bitsandbytes quantization (from a full-precision folder with ``config``, or a
    folder saved by ``quantize_bnb``), with the CPU workaround applied."""
    from transformers import AutoModelForSequenceClassification

    model_class = model_class or AutoModelForSequenceClassification
    kwargs = {}
    if config is not None:
        kwargs["quantization_config"] = bnb_config(config, kept_modules(model_dir, model_class))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model_class.from_pretrained(model_dir, device_map=device, **kwargs)
    disable_avx512bf16(model)
    return model


def quantize_bnb(model_dir: str | Path, out: str | Path, config: QuantizationConfig, causal_lm: bool = False) -> None:
    """Quantize while loading, then save at once (safetensors), before any forward pass; ``causal_lm``: the
    folder holds a causal LM (its LM head stays in full precision)."""
    from transformers import AutoModelForCausalLM

    model = load_bnb(model_dir, config, model_class=AutoModelForCausalLM if causal_lm else None)
    model.save_pretrained(out, safe_serialization=True)
