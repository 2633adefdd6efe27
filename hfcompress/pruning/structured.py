"""Structured pruning: remove attention heads, FFN neurons and whole layers, and shrink the weight matrices.

The result is an ordinary model of its stock architecture whose config describes the new shapes, so it saves
and loads with plain ``from_pretrained`` (no ``trust_remote_code``) and is really smaller and faster. What a
config can express decides what is allowed:

- FFN neurons: one ``intermediate_size`` for all layers, so every layer keeps the same number of neurons
  (each its own most important ones).
- Llama-style attention (``head_dim`` and ``num_key_value_heads`` in the config): whole KV groups (a KV head
  and the query heads that share it) are removed, the same number in every layer.
- BERT-style attention: the head size is derived as ``hidden_size / num_attention_heads``, so fewer heads are
  only expressible through ``config.pruned_heads``, which transformers 4.x honours on load and 5.x no longer
  does: head pruning of BERT-style models is refused there.
- Hidden size (embedding channels, Minitron), Llama-style only: the same channels leave the embeddings, every
  projection that reads or writes the residual stream, every RMSNorm and the LM head; ``head_dim`` is written
  explicitly so the head size does not follow ``hidden_size / num_attention_heads``.
- Layers: the model is rebuilt with the kept layers (as ``create_student_from_teacher``).

Where the parts of a layer are (BERT- and Llama-style) is ``hfcompress.modeling``'s business.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import HfCompressError
from ..modeling import (
    attention_inputs,
    attention_output,
    decoder_family,
    ffn_inputs,
    ffn_output,
    find_layer_list,
    head_layout,
    keep_layers,
    layer_style,
    neuron_rows,
)

__all__ = [
    "attention_output",
    "bert_head_pruning_supported",
    "ffn_inputs",
    "ffn_output",
    "head_layout",
    "keep_rows",
    "keep_columns",
    "layer_style",
    "prune_attention_heads",
    "prune_ffn_neurons",
    "prune_hidden_channels",
    "remove_layers",
]


# -- shrinking Linear layers --------------------------------------------------------------------------------
def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    new = nn.Linear(
        weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype
    )
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    return new


def keep_rows(linear: nn.Linear, index: torch.Tensor) -> nn.Linear:
    """A Linear with only the output features ``index``."""
    index = index.to(linear.weight.device)
    bias = linear.bias[index] if linear.bias is not None else None
    return _linear(linear.weight[index], bias)


def keep_columns(linear: nn.Linear, index: torch.Tensor) -> nn.Linear:
    """A Linear with only the input features ``index`` (bias unchanged)."""
    index = index.to(linear.weight.device)
    return _linear(linear.weight[:, index], linear.bias)


def _unit_index(units: torch.Tensor, size: int) -> torch.Tensor:
    """Feature indices of the kept units (heads), each ``size`` features wide."""
    units = units.sort().values
    return (units[:, None] * size + torch.arange(size)).flatten()


# -- pruning ------------------------------------------------------------------------------------------------
def prune_ffn_neurons(model: nn.Module, keep: dict[int, torch.Tensor]) -> None:
    """Keep only the neurons ``keep[layer]`` (indices into the current FFN) in each layer, in place.

    Every layer must keep the same number (the config has one ``intermediate_size``); layers not in
    ``keep`` must already have that size.
    """
    _, layers = find_layer_list(model)
    sizes = {len(index) for index in keep.values()}
    if len(sizes) != 1:
        raise HfCompressError(
            f"FFN widths must be the same in every layer (one intermediate_size in the config), got {sorted(sizes)}"
        )
    width = sizes.pop()
    if width == 0:
        raise HfCompressError("pruning would remove every FFN neuron of a layer; keep at least one")
    for i, layer in enumerate(layers):
        if i not in keep:
            if ffn_output(layer).in_features != width:
                raise HfCompressError(f"layer {i} is not pruned but its FFN width differs from {width}")
            continue
        index = keep[i].sort().values
        current = ffn_output(layer).in_features
        for parent, name in ffn_inputs(layer):
            linear = getattr(parent, name)
            setattr(parent, name, keep_rows(linear, neuron_rows(linear, index, current)))
        if layer_style(layer) == "bert":
            layer.output.dense = keep_columns(layer.output.dense, index)
        else:
            layer.mlp.down_proj = keep_columns(layer.mlp.down_proj, index)
        if layer_style(layer) == "llama" and hasattr(layer.mlp, "intermediate_size"):
            layer.mlp.intermediate_size = width
    model.config.intermediate_size = width


def bert_head_pruning_supported(model: nn.Module) -> bool:
    """True when the installed transformers rebuilds pruned BERT heads from ``config.pruned_heads`` (4.x)."""
    return callable(getattr(model, "prune_heads", None)) and hasattr(model.config, "pruned_heads")


def prune_attention_heads(model: nn.Module, remove: dict[int, list[int]]) -> None:
    """Remove heads (indices into each layer's current heads; Llama-style: KV groups), in place.

    Llama-style: every layer must lose the same number of groups (one ``num_key_value_heads`` in the
    config). BERT-style: through ``model.prune_heads``, recorded in ``config.pruned_heads`` (transformers 4.x).
    """
    _, layers = find_layer_list(model)
    for i, heads in remove.items():
        q_heads, kv_heads, _ = head_layout(layers[i])
        units = kv_heads if layer_style(layers[i]) == "llama" else q_heads
        if len(set(heads)) >= units:
            raise HfCompressError(
                f"pruning would remove every attention head of layer {i} ({units}); keep at least one"
            )
        if not all(0 <= h < units for h in heads):
            raise HfCompressError(f"heads {sorted(heads)} of layer {i} are not all in 0..{units - 1}")
    if layer_style(layers[0]) == "bert":
        _prune_bert_heads(model, layers, remove)
    else:
        _prune_llama_groups(model, layers, remove)


def _prune_bert_heads(model, layers, remove: dict[int, list[int]]) -> None:
    if not bert_head_pruning_supported(model):
        import transformers

        raise HfCompressError(
            f"can't prune heads of {type(model).__name__} with transformers {transformers.__version__}: BERT-style "
            "configs derive the head size from hidden_size / num_attention_heads and this version no longer "
            "honours config.pruned_heads, so the pruned model would not load; prune FFN neurons or layers "
            "instead, or use transformers < 5"
        )
    original = {}
    for i, heads in remove.items():
        # prune_heads takes indices among the layer's original heads; skip the ones pruned before.
        already = set(getattr(layers[i].attention, "pruned_heads", set()))
        total = layers[i].attention.self.num_attention_heads + len(already)
        alive = [h for h in range(total) if h not in already]
        original[i] = [alive[h] for h in heads]
    model.prune_heads(original)


def config_reload_error(config, **changes) -> str | None:
    """Why transformers would not load ``config`` back with ``changes`` applied, or None if it would."""
    import copy

    trial = copy.deepcopy(config)
    for key, value in changes.items():
        setattr(trial, key, value)
    try:
        type(config).from_dict(trial.to_dict())
    except Exception as err:  # ValueError (4.57) or a strict-dataclass validation error (5.x)
        return str(err).strip().splitlines()[-1].strip()
    return None


def check_config_reloads(config, what: str, **changes) -> None:
    """Refuse, before any weight changes, a pruning whose config transformers would not load back: Phi-3's
    longrope check derives the rope size from ``hidden_size / num_attention_heads`` (not ``head_dim``), so a
    Phi-3.5-mini or Phi-4-mini with fewer heads or a narrower hidden size can't be saved as one; transformers 5's
    Llama config wants ``hidden_size`` a multiple of ``num_attention_heads`` even with an explicit ``head_dim``."""
    reason = config_reload_error(config, **changes)
    if reason is not None:
        raise HfCompressError(
            f"can't prune {what} of this {config.model_type} model: transformers would not load its config back "
            f"({reason}); prune FFN neurons or layers instead"
        )


def group_count_reload_errors(model: nn.Module, hidden_size: int | None = None) -> dict[int, str | None]:
    """For each KV-group count a Llama-style model could be pruned to, why the installed transformers would not
    load it back at ``hidden_size`` (default its own), or None where it would: every count loads under 4.57; under
    5, those whose query heads divide the hidden size (Llama 3 8B: 1, 2, 4 or 8 of its 8 groups)."""
    _, layers = find_layer_list(model)
    q_heads, kv_heads, head_dim = head_layout(layers[0])
    group = q_heads // kv_heads
    hidden = model.config.hidden_size if hidden_size is None else hidden_size
    return {
        kv: config_reload_error(model.config, head_dim=head_dim, num_key_value_heads=kv,
                                num_attention_heads=kv * group, hidden_size=hidden)  # fmt: skip
        for kv in range(1, kv_heads + 1)
    }


def _prune_llama_groups(model, layers, remove: dict[int, list[int]]) -> None:
    counts = {len(set(groups)) for groups in remove.values()} | ({0} if len(remove) < len(layers) else set())
    if len(counts) != 1:
        raise HfCompressError(
            "Llama-style configs hold one num_key_value_heads for all layers: remove the same number of KV "
            f"groups from every layer, got {sorted(counts)}"
        )
    q_heads, kv_heads, head_dim = head_layout(layers[0])
    group = q_heads // kv_heads
    new_kv = kv_heads - counts.pop()
    check_config_reloads(model.config, "attention heads", head_dim=head_dim, num_key_value_heads=new_kv,
                         num_attention_heads=new_kv * group)  # fmt: skip
    for i, groups in remove.items():
        attention = layers[i].self_attn
        kept = torch.tensor([g for g in range(kv_heads) if g not in set(groups)])
        kept_q = _unit_index((kept[:, None] * group + torch.arange(group)).flatten(), head_dim)
        kept_kv = _unit_index(kept, head_dim)
        if hasattr(attention, "qkv_proj"):  # Phi-3: rows [q; k; v] in one projection
            offset_k, offset_v = q_heads * head_dim, (q_heads + kv_heads) * head_dim
            rows = torch.cat([kept_q, kept_kv + offset_k, kept_kv + offset_v])
            attention.qkv_proj = keep_rows(attention.qkv_proj, rows)
        else:
            attention.q_proj = keep_rows(attention.q_proj, kept_q)
            attention.k_proj = keep_rows(attention.k_proj, kept_kv)
            attention.v_proj = keep_rows(attention.v_proj, kept_kv)
        attention.o_proj = keep_columns(attention.o_proj, kept_q)
        for name, value in (("num_heads", len(kept) * group), ("num_key_value_heads", len(kept))):
            if isinstance(getattr(attention, name, None), int):  # counts some modules keep (Phi-3's split)
                setattr(attention, name, value)
    model.config.head_dim = head_dim  # explicit, so hidden_size // num_attention_heads no longer decides it
    model.config.num_key_value_heads = new_kv
    model.config.num_attention_heads = new_kv * group


def _keep_norm(norm: nn.Module, index: torch.Tensor) -> None:
    norm.weight = nn.Parameter(norm.weight.detach()[index.to(norm.weight.device)].clone())
    if getattr(norm, "bias", None) is not None:
        norm.bias = nn.Parameter(norm.bias.detach()[index.to(norm.bias.device)].clone())


def prune_hidden_channels(model: nn.Module, keep: torch.Tensor) -> None:
    """Keep only the hidden (embedding) channels ``keep`` across a Llama-style causal LM, in place.

    The embedding keeps its class (Gemma3's scaled embedding stays scaled); which norms carry the hidden size
    comes from the family table. Gemma scales embeddings by ``sqrt(hidden_size)``: the scale follows the new
    hidden size (as the config will say on reload), so the pruned model is the reloaded one; the tied head is
    kept tied (untying it would add a vocabulary-sized matrix).
    """
    _, layers = find_layer_list(model)
    if layer_style(layers[0]) != "llama" or not hasattr(model, "get_decoder"):
        raise HfCompressError(
            "hidden-size pruning is implemented for Llama-style decoders (self_attn.q_proj ... mlp.down_proj); "
            "prune heads, FFN neurons or layers of this model instead"
        )
    family = decoder_family(model, "hidden-size pruning")
    index = keep.sort().values
    check_config_reloads(model.config, "hidden channels", hidden_size=len(index),
                         head_dim=head_layout(layers[0])[2])  # fmt: skip
    if (
        len(index) == 0
        or len(set(index.tolist())) != len(index)
        or int(index.max()) >= model.config.hidden_size
    ):
        raise HfCompressError(
            f"hidden channels to keep must be distinct indices in 0..{model.config.hidden_size - 1}"
        )
    head_dim = head_layout(layers[0])[2]
    embeddings = model.get_input_embeddings()
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is embeddings.weight
    embeddings.weight = nn.Parameter(embeddings.weight.detach()[:, index.to(embeddings.weight.device)].clone())
    embeddings.embedding_dim = len(index)
    if family.embedding_scale and isinstance(getattr(embeddings, "embed_scale", None), torch.Tensor):
        embeddings.embed_scale.fill_(len(index) ** 0.5)  # Gemma3: what a reload computes from hidden_size
    for layer in layers:
        for parent, name in attention_inputs(layer) + ffn_inputs(layer):
            setattr(parent, name, keep_columns(getattr(parent, name), index))
        layer.self_attn.o_proj = keep_rows(layer.self_attn.o_proj, index)
        layer.mlp.down_proj = keep_rows(layer.mlp.down_proj, index)
        if hasattr(layer.mlp, "hidden_size"):
            layer.mlp.hidden_size = len(index)
        for name in family.layer_norms:
            _keep_norm(layer.get_submodule(name), index)
    _keep_norm(model.get_decoder().norm, index)
    if tied:
        model.get_output_embeddings().weight = embeddings.weight
        model.get_output_embeddings().in_features = len(index)
    else:
        model.set_output_embeddings(keep_columns(head, index))
    model.config.head_dim = head_dim  # explicit: hidden_size / num_attention_heads no longer gives it
    model.config.hidden_size = len(index)


def remove_layers(model: nn.Module, layers: list[int]) -> nn.Module:
    """A new model without the given transformer layers (weights of the others copied)."""
    total = model.config.num_hidden_layers
    keep = [i for i in range(total) if i not in set(layers)]
    if not keep:
        raise HfCompressError(f"pruning would remove all {total} layers; keep at least one")
    return keep_layers(model, keep)
