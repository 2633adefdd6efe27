"""Importance scores for structured pruning: attention heads, FFN neurons, whole layers.

Heads and neurons by gradient (default) or magnitude. The gradient score of a head is Michel et al.'s (2019)
|dL/dxi_h| for a gate xi_h on the head's output, computed without any gate: the head's output enters the
attention output projection W_o through its own columns, so dL/dxi_h = sum over those columns of
W_o * dL/dW_o. The same identity on the FFN's down projection gives the first-order Taylor score of each
neuron (Molchanov et al. 2019). Absolute values are taken per batch and summed over the calibration batches.

Layers by block influence (Men et al. 2024, ShortGPT): 1 - cosine similarity between a layer's input and
output hidden states, averaged over real tokens; a layer that barely changes its input is the first to go.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import HfCompressError
from ..modeling import attention_output, ffn_inputs, ffn_output, find_layer_list, head_layout, layer_style

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "labels")


def _inputs(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items() if k in MODEL_INPUTS}


def _per_unit(column_scores: torch.Tensor, units: int) -> torch.Tensor:
    return column_scores.view(units, -1).sum(-1)


def _group_heads(head_scores: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """Llama-style: one score per KV group (the sum of its query heads'), the unit that is removed."""
    q_heads, kv_heads, _ = head_layout(layer)
    if layer_style(layer) == "llama":
        return head_scores.view(kv_heads, q_heads // kv_heads).sum(-1)
    return head_scores


def gradient_importance(model: nn.Module, batches) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """(head scores, neuron scores) per layer index, from |sum W * dL/dW| on the output projections.

    ``batches`` are collated training batches with ``labels``; the model's own loss is used. Weights are not
    changed; gradients are cleared afterwards.
    """
    _, layers = find_layer_list(model)
    device = next(model.parameters()).device
    heads = {i: torch.zeros(head_layout(layer)[0]) for i, layer in enumerate(layers)}
    neurons = {i: torch.zeros(ffn_output(layer).in_features) for i, layer in enumerate(layers)}
    frozen = [
        i
        for i, layer in enumerate(layers)
        if not (attention_output(layer).weight.requires_grad and ffn_output(layer).weight.requires_grad)
    ]
    if frozen:
        raise HfCompressError(
            f"gradient importance needs gradients, but the output projections of layers {frozen} are frozen "
            "(requires_grad=False); unfreeze them or use importance='magnitude'"
        )
    was_training = model.training
    model.eval()  # no dropout: score the network that will be kept
    for batch in batches:
        model.zero_grad(set_to_none=True)
        model(**_inputs(batch, device)).loss.backward()
        with torch.no_grad():
            for i, layer in enumerate(layers):
                o, down = attention_output(layer), ffn_output(layer)
                heads[i] += _per_unit((o.weight * o.weight.grad).sum(0), len(heads[i])).abs().float().cpu()
                neurons[i] += (down.weight * down.weight.grad).sum(0).abs().float().cpu()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {i: _group_heads(s, layers[i]) for i, s in heads.items()}, neurons


@torch.no_grad()
def magnitude_importance(model: nn.Module) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """(head scores, neuron scores): L2 norm of each head's output-projection columns; for neurons, the norm
    of the neuron's input row(s) times the norm of its output column."""
    _, layers = find_layer_list(model)
    heads, neurons = {}, {}
    for i, layer in enumerate(layers):
        o = attention_output(layer).weight.float()
        heads[i] = _group_heads(_per_unit(o.pow(2).sum(0), head_layout(layer)[0]).sqrt().cpu(), layer)
        rows = sum(getattr(parent, name).weight.float().pow(2).sum(1) for parent, name in ffn_inputs(layer))
        neurons[i] = (rows.sqrt() * ffn_output(layer).weight.float().norm(dim=0)).cpu()
    return heads, neurons


@torch.no_grad()
def block_influence(model: nn.Module, batches) -> torch.Tensor:
    """Per layer, 1 - cos(input, output) of its hidden states, averaged over non-padding tokens."""
    device = next(model.parameters()).device
    total, count = torch.zeros(model.config.num_hidden_layers), 0.0
    was_training = model.training
    model.eval()
    for batch in batches:
        inputs = _inputs(batch, device)
        inputs.pop("labels", None)
        hidden = model(**inputs, output_hidden_states=True).hidden_states
        mask = inputs.get("attention_mask", torch.ones(hidden[0].shape[:2], device=device)).float()
        for i in range(len(hidden) - 1):
            cos = nn.functional.cosine_similarity(hidden[i].float(), hidden[i + 1].float(), dim=-1)
            total[i] += ((1 - cos) * mask).sum().cpu()
        count += float(mask.sum())
    model.train(was_training)
    return total / max(count, 1.0)
