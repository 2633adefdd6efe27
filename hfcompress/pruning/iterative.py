"""Structured pruning as a plan of steps: what each iteration prunes, and one step that scores and prunes.

A recipe alternates ``structured_prune`` with recovery training (distillation from the unpruned model):

    targets = structured_targets(model, config)
    for step in targets:
        model = structured_prune(model, step, config, calibration_batches)
        ... recover ...
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ..errors import HfCompressError
from ..modeling import decoder_family, find_layer_list, head_layout, layer_style, select_layers
from .config import StructuredPruningConfig
from .importance import activation_importance, block_influence, gradient_importance, magnitude_importance
from .structured import (
    bert_head_pruning_supported,
    group_count_reload_errors,
    prune_attention_heads,
    prune_ffn_neurons,
    prune_hidden_channels,
    remove_layers,
)


def structure(model: nn.Module) -> dict:
    """Layers, attention units per layer (heads; Llama-style: KV groups) and FFN width, as they are now."""
    _, layers = find_layer_list(model)
    units = []
    for layer in layers:
        q_heads, kv_heads, _ = head_layout(layer)
        units.append(kv_heads if layer_style(layer) == "llama" else q_heads)
    return {
        "num_layers": len(layers),
        "attention_units": units,
        "intermediate_size": model.config.intermediate_size,
        "hidden_size": model.config.hidden_size,
    }


def structured_targets(model: nn.Module, config: StructuredPruningConfig) -> list[dict]:
    """For each iteration, the structure to reach: layers, attention units per layer, FFN width.

    Checked up front, before anything is pruned: a setting that would remove every head, neuron or layer,
    or head pruning the installed transformers can't express, is an error here.
    """
    if layer_style(find_layer_list(model)[1][0]) == "llama":
        decoder_family(model, "structured pruning")  # a family outside the table: refused before any work
    now = structure(model)
    units, width, depth = min(now["attention_units"]), now["intermediate_size"], now["num_layers"]
    hidden = now["hidden_size"]
    if not config.removes_anything:
        raise HfCompressError(
            "structured pruning has nothing to do: set prune_heads_fraction, prune_ffn_fraction, "
            "prune_hidden_fraction or prune_layers"
        )
    final_hidden = hidden - round(config.prune_hidden_fraction * hidden)
    if config.prune_hidden_fraction and layer_style(find_layer_list(model)[1][0]) != "llama":
        prune_hidden_channels(model, torch.arange(hidden))  # raises the explanation, changes nothing
    if len(set(now["attention_units"])) != 1 and config.prune_heads_fraction:
        raise HfCompressError(
            f"layers have different head counts {now['attention_units']}; can't prune uniformly"
        )
    final_units = units - round(config.prune_heads_fraction * units)
    final_width = width - round(config.prune_ffn_fraction * width)
    final_depth = depth - config.prune_layers
    unit_name = "KV groups" if layer_style(find_layer_list(model)[1][0]) == "llama" else "attention heads"
    if final_units < 1:
        raise HfCompressError(
            f"prune_heads_fraction={config.prune_heads_fraction} would remove all {units} {unit_name} of each "
            f"layer; the most is {(units - 1) / units:.3f}"
        )
    if final_width < 1:
        raise HfCompressError(
            f"prune_ffn_fraction={config.prune_ffn_fraction} would remove all {width} FFN neurons of each layer"
        )
    if final_depth < 1:
        raise HfCompressError(
            f"prune_layers={config.prune_layers} would remove all {depth} layers; the most is {depth - 1}"
        )
    if final_units < units and layer_style(find_layer_list(model)[1][0]) == "bert":
        if not bert_head_pruning_supported(model):
            prune_attention_heads(model, {})  # raises the explanation
    n = config.num_iterations
    targets = [
        {
            "num_layers": depth - round(config.prune_layers * k / n),
            "attention_units": units - round((units - final_units) * k / n),
            "intermediate_size": width - round((width - final_width) * k / n),
            "hidden_size": hidden - round((hidden - final_hidden) * k / n),
        }
        for k in range(1, n + 1)
    ]
    if final_units < units and layer_style(find_layer_list(model)[1][0]) == "llama":
        _loadable_group_schedule(model, targets, config.prune_heads_fraction)
    return targets


def _loadable_group_schedule(model: nn.Module, targets: list[dict], fraction: float) -> None:
    """Move each step's KV-group count to the nearest one the installed transformers loads back (transformers 5's
    Llama config wants the hidden size a multiple of the query heads); a final count it can't load is an error
    that lists the fractions it can."""
    final = targets[-1]
    errors = group_count_reload_errors(model, final["hidden_size"])
    kv_heads = max(errors)
    if errors[final["attention_units"]] is not None:
        fractions = [f"{(kv_heads - kv) / kv_heads:g}" for kv in sorted(errors, reverse=True)
                     if errors[kv] is None and kv < kv_heads]  # fmt: skip
        instead = f"fractions it can: {', '.join(fractions)}" if fractions else "prune FFN neurons or layers instead"
        raise HfCompressError(
            f"prune_heads_fraction={fraction} leaves {final['attention_units']} of {kv_heads} KV groups of this "
            f"{model.config.model_type} model, which this transformers can't load back "
            f"({errors[final['attention_units']]}); {instead}"
        )
    previous = kv_heads
    for target in targets[:-1]:  # the nearest loadable count between the final one and the last step's
        lowest, wanted = final["attention_units"], target["attention_units"]
        loadable = group_count_reload_errors(model, target["hidden_size"])
        counts = [kv for kv, error in loadable.items() if error is None and lowest <= kv <= previous]
        if counts:
            target["attention_units"] = previous = min(counts, key=lambda kv: (abs(kv - wanted), -kv))
        else:
            target["attention_units"] = previous


def _same_on_all_ranks(value):
    """Rank 0's value everywhere: every process must prune exactly the same units."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return value


def _lowest(scores: torch.Tensor, count: int) -> list[int]:
    return sorted(torch.argsort(scores, stable=True)[:count].tolist()) if count > 0 else []


def lowest_influence_layers(model, count: int, batches) -> list[int]:
    """The ``count`` layers of lowest block influence on the calibration ``batches`` (ShortGPT), the same on
    every process."""
    from .importance import block_influence

    if count <= 0:
        return []
    return _same_on_all_ranks(_lowest(block_influence(model, list(batches)), count))


def calibration_batches(dataset, tokenizer, batch_size: int, count: int, seed: int) -> list[dict]:
    """The first ``count`` padded batches of ``dataset`` shuffled with ``seed``: what head, neuron and layer
    importance are scored on."""
    from torch.utils.data import DataLoader

    from ..data import DistillationDataCollator

    loader = DataLoader(
        dataset.shuffle(seed=seed), batch_size=batch_size, collate_fn=DistillationDataCollator(tokenizer)
    )
    return [batch for _, batch in zip(range(count), loader)]


def structured_prune(
    model: nn.Module, target: dict, config: StructuredPruningConfig, batches
) -> tuple[nn.Module, dict]:
    """Prune ``model`` down to ``target`` (one entry of ``structured_targets``); returns (model, what went).

    Layers go first (lowest block influence, or spread evenly with ``layer_selection="spread"``), then heads and neurons are scored on the smaller model and the
    lowest-scoring ones removed from every layer. Layer removal builds a new model; heads and neurons are
    pruned in place.
    """
    batches = list(batches)
    removed: dict = {"layers": [], "heads": {}, "ffn_neurons": 0}
    now = structure(model)
    drop = now["num_layers"] - target["num_layers"]
    if drop > 0:
        if config.layer_selection == "spread":  # keep layers spread evenly over the current depth
            keep = select_layers(target["num_layers"], now["num_layers"])
            chosen = [i for i in range(now["num_layers"]) if i not in keep]
        else:
            chosen = _lowest(block_influence(model, batches), drop)
        removed["layers"] = _same_on_all_ranks(chosen)
        model = remove_layers(model, removed["layers"])
        now = structure(model)
    drop_units = now["attention_units"][0] - target["attention_units"]
    drop_neurons = now["intermediate_size"] - target["intermediate_size"]
    drop_channels = now["hidden_size"] - target.get("hidden_size", now["hidden_size"])
    if drop_units > 0 or drop_neurons > 0 or drop_channels > 0:
        channel_scores = None
        if config.importance == "activation" or drop_channels > 0:  # channels are scored by activation only
            head_scores, neuron_scores, channel_scores = activation_importance(model, batches)
        if config.importance == "gradient":
            head_scores, neuron_scores = gradient_importance(model, batches)
        elif config.importance == "magnitude":
            head_scores, neuron_scores = magnitude_importance(model)
        head_scores, neuron_scores, channel_scores = _same_on_all_ranks(
            (head_scores, neuron_scores, channel_scores)
        )
        if drop_units > 0:
            removed["heads"] = {i: _lowest(s, drop_units) for i, s in head_scores.items()}
            prune_attention_heads(model, removed["heads"])
        if drop_neurons > 0:
            keep = {
                i: torch.argsort(s, descending=True, stable=True)[: target["intermediate_size"]]
                for i, s in neuron_scores.items()
            }
            prune_ffn_neurons(model, keep)
            removed["ffn_neurons"] = drop_neurons
        if drop_channels > 0:
            keep = torch.argsort(channel_scores, descending=True, stable=True)[: target["hidden_size"]]
            prune_hidden_channels(model, keep)
            removed["hidden_channels"] = drop_channels
    return model, removed
