"""Importance scores for structured pruning: attention heads, FFN neurons, whole layers.

Heads and neurons by gradient (default) or magnitude. The gradient score of a head is Michel et al.'s (2019)
|dL/dxi_h| for a gate xi_h on the head's output, computed without any gate: the head's output enters the
attention output projection W_o through its own columns, so dL/dxi_h = sum over those columns of
W_o * dL/dW_o. The same identity on the FFN's down projection gives the first-order Taylor score of each
neuron (Molchanov et al. 2019). Absolute values are taken per batch and summed over the calibration batches.

Activation importance (Minitron, Muralidharan et al. 2024) needs no gradient: a forward pass over calibration
text, and each head's (KV group's), neuron's and embedding channel's mean squared activation: the inputs of the
attention output projection and of the FFN down projection, and the outputs of the norms over the hidden size
(what the hidden channels carry; per-head q/k norms are not among them: ``modeling.hidden_norms``).

Layers by block influence (Men et al. 2024, ShortGPT): 1 - cosine similarity between a layer's input and
output hidden states, averaged over real tokens; a layer that barely changes its input is the first to go.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import HfCompressError
from ..modeling import (
    attention_output,
    ffn_inputs,
    ffn_output,
    find_layer_list,
    head_layout,
    hidden_norms,
    layer_style,
)

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
        width = ffn_output(layer).in_features
        rows = sum(  # a fused [gate; up] projection: both rows of a neuron
            getattr(parent, name).weight.float().pow(2).sum(1).view(-1, width).sum(0)
            for parent, name in ffn_inputs(layer)
        )
        neurons[i] = (rows.sqrt() * ffn_output(layer).weight.float().norm(dim=0)).cpu()
    return heads, neurons


def _forward_with_hooks(model: nn.Module, batches, hooks: list, mask: list) -> float:
    """Run ``batches`` through ``model`` in eval mode with ``hooks`` registered (removed afterwards, always);
    ``mask[0]`` holds the current batch's attention mask for the hooks. Returns the real tokens seen."""
    device = next(model.parameters()).device
    count = 0.0
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            inputs = _inputs(batch, device)
            inputs.pop("labels", None)
            mask[:] = [inputs.get("attention_mask", torch.ones_like(inputs["input_ids"])).float()]
            model(**inputs)
            count += float(mask[0].sum())
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return count


@torch.no_grad()
def activation_importance(
    model: nn.Module, batches
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor], torch.Tensor]:
    """(head scores, neuron scores, hidden-channel scores) from activations on ``batches`` (Minitron).

    Head (KV group) and neuron scores are per layer; the channel score sums every norm's output over layers.
    Padding tokens don't count.
    """
    _, layers = find_layer_list(model)
    heads = {i: torch.zeros(head_layout(layer)[0]) for i, layer in enumerate(layers)}
    neurons = {i: torch.zeros(ffn_output(layer).in_features) for i, layer in enumerate(layers)}
    channels = torch.zeros(model.config.hidden_size)
    mask: list[torch.Tensor] = []

    def squares(x: torch.Tensor) -> torch.Tensor:  # sum over real tokens of x^2, per feature
        return (x.float().pow(2) * mask[0][..., None]).sum((0, 1)).cpu()

    def add(total: torch.Tensor, scores_of=lambda x: x):  # a hook must return None, or it replaces values
        def hook(module, args, output=None):
            total.add_(scores_of(squares(args[0] if output is None else output)))

        return hook

    hooks = []
    for i, layer in enumerate(layers):
        units = len(heads[i])
        hooks.append(
            attention_output(layer).register_forward_pre_hook(
                add(heads[i], lambda x, u=units: _per_unit(x, u))
            )
        )
        hooks.append(ffn_output(layer).register_forward_pre_hook(add(neurons[i])))
    hooks += [norm.register_forward_hook(add(channels)) for norm in hidden_norms(model)]
    _forward_with_hooks(model, batches, hooks, mask)
    return {i: _group_heads(s, layers[i]) for i, s in heads.items()}, neurons, channels


@torch.no_grad()
def block_influence(model: nn.Module, batches) -> torch.Tensor:
    """Per layer, 1 - cos(input, output) of its hidden states, averaged over non-padding tokens.

    Read with hooks on the layers themselves: a model's ``hidden_states`` output may hold the final norm's
    output in place of the last layer's (Llama does).
    """
    _, layers = find_layer_list(model)
    total = torch.zeros(len(layers))
    mask: list[torch.Tensor] = []
    seen: dict[int, torch.Tensor] = {}

    def before(i):
        def hook(module, args, kwargs):
            seen[i] = args[0] if args else kwargs["hidden_states"]

        return hook

    def after(i):
        def hook(module, args, kwargs, output):
            out = output[0] if isinstance(output, tuple) else output
            cos = nn.functional.cosine_similarity(seen.pop(i).float(), out.float(), dim=-1)
            total[i] += ((1 - cos) * mask[0]).sum().cpu()

        return hook

    hooks = [layer.register_forward_pre_hook(before(i), with_kwargs=True) for i, layer in enumerate(layers)]
    hooks += [layer.register_forward_hook(after(i), with_kwargs=True) for i, layer in enumerate(layers)]
    count = _forward_with_hooks(model, batches, hooks, mask)
    return total / max(count, 1.0)
