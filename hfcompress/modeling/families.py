"""Decoder families in one table: where each keeps the parts that pruning and distillation must know about.

A Llama-style decoder layer is ``self_attn`` (q/k/v/o projections) + ``mlp`` (gate/up/down) + RMSNorms. The
families differ in a few facts, and each fact lives here and nowhere else:

- ``layer_norms``: the per-layer norms over the hidden size (Gemma2/3 add pre/post feed-forward norms);
- ``qk_norms``: per-head norms on queries and keys (Qwen3, Gemma3), which read ``head_dim``, not the hidden
  size, so they are not hidden channels;
- ``fused_qkv`` / ``fused_gate_up``: Phi-3 keeps q, k and v in one projection (rows ``[q; k; v]``) and
  gate and up in another (rows ``[gate; up]``);
- ``logit_softcap`` / ``logit_divisor``: what the model does to the LM head's output (Gemma2/3:
  ``tanh(x / cap) * cap``; Granite: ``x / logits_scaling``), so a path that calls the head itself (chunked
  KD) computes the same logits as the model;
- ``embedding_scale``: Gemma multiplies embeddings by ``sqrt(hidden_size)``, a factor that follows the
  config's hidden size after hidden-size pruning.

A new family is one entry in ``FAMILIES`` (and a tiny config in the tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import HfCompressError


@dataclass(frozen=True)
class DecoderFamily:
    """The facts about one decoder family that the methods need (see the module docstring)."""

    layer_norms: tuple[str, ...] = ("input_layernorm", "post_attention_layernorm")
    qk_norms: tuple[str, ...] = ()
    fused_qkv: str | None = None
    fused_gate_up: str | None = None
    logit_softcap: str | None = None
    logit_divisor: str | None = None
    embedding_scale: bool = False


_GEMMA_NORMS = ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                "post_feedforward_layernorm")  # fmt: skip

# model_type -> facts. Tested on a tiny random config of each (tests/test_families.py).
FAMILIES: dict[str, DecoderFamily] = {
    "llama": DecoderFamily(),
    "mistral": DecoderFamily(),
    "qwen2": DecoderFamily(),  # q/k/v carry a bias: the row and column slicing keeps it
    "qwen3": DecoderFamily(qk_norms=("self_attn.q_norm", "self_attn.k_norm")),
    "gemma": DecoderFamily(embedding_scale=True),
    "gemma2": DecoderFamily(layer_norms=_GEMMA_NORMS, logit_softcap="final_logit_softcapping", embedding_scale=True),
    "gemma3_text": DecoderFamily(
        layer_norms=_GEMMA_NORMS,
        qk_norms=("self_attn.q_norm", "self_attn.k_norm"),
        logit_softcap="final_logit_softcapping",
        embedding_scale=True,
    ),
    "phi3": DecoderFamily(fused_qkv="qkv_proj", fused_gate_up="gate_up_proj"),
    "granite": DecoderFamily(logit_divisor="logits_scaling"),
}

# Config attributes that change logits after the LM head: a family outside the table that sets one can't
# use a path that calls the head itself.
_LOGIT_ATTRIBUTES = ("final_logit_softcapping", "logits_scaling", "logit_scale", "output_multiplier_scale")


def model_type(model_or_config) -> str:
    config = getattr(model_or_config, "config", model_or_config)
    return getattr(getattr(config, "get_text_config", lambda: config)(), "model_type", None) or config.model_type


def decoder_family(model_or_config, purpose: str = "this") -> DecoderFamily:
    """The table entry of the model's family; a family outside the table is a one-line error naming the
    supported ones."""
    kind = model_type(model_or_config)
    if kind not in FAMILIES:
        raise HfCompressError(
            f"{purpose} is not supported for model_type {kind!r}; supported decoder families: "
            f"{', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[kind]


def logit_transform(config):
    """The function the model applies to the LM head's output (None: none), from the family table.

    A family outside the table passes only when its config sets none of the known logit-scaling fields.
    """
    kind = model_type(config)
    if kind not in FAMILIES:
        set_fields = [a for a in _LOGIT_ATTRIBUTES if getattr(config, a, None) not in (None, 1, 1.0)]
        if set_fields:
            raise HfCompressError(
                f"model_type {kind!r} rescales its logits ({', '.join(set_fields)}) and is not in the family "
                f"table ({', '.join(sorted(FAMILIES))}): set lm_chunk_size 0 to use the model's own logits"
            )
        return None
    family = FAMILIES[kind]
    cap = getattr(config, family.logit_softcap, None) if family.logit_softcap else None
    divisor = getattr(config, family.logit_divisor, None) if family.logit_divisor else None
    if cap:
        return lambda logits: torch.tanh(logits / cap) * cap
    if divisor and divisor != 1:
        return lambda logits: logits / divisor
    return None


def rope_settings(config) -> tuple[float, dict | None]:
    """(rope base, scaling or None) of a config object or a config.json dict, read the same way in
    transformers 4.57 (top-level ``rope_theta`` and ``rope_scaling``) and 5 (one ``rope_parameters`` dict, per
    attention type for Gemma 3). Scaling is None for plain rope ('default'), whichever version wrote it."""
    get = config.get if isinstance(config, dict) else (lambda key: getattr(config, key, None))
    params = get("rope_parameters") or {}
    if "full_attention" in params:  # per layer type (Gemma 3 under transformers 5): the global layers' rope
        params = params["full_attention"]
    theta = params.get("rope_theta", get("rope_theta"))
    scaling = params if params else get("rope_scaling")
    if scaling and scaling.get("rope_type", scaling.get("type", "default")) == "default":
        scaling = None
    if scaling:
        scaling = {k: v for k, v in scaling.items() if k != "rope_theta"}
    return float(10000.0 if theta is None else theta), scaling
