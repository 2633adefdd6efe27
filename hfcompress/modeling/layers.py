"""Where a model's layers are and what their parts are: the layer list (``find_layer_list``, ``select_layers``,
``keep_layers``), BERT- and Llama-style attention and FFN projections (fused ones too), the head layout, the
norms over the hidden size, ``matching_linears`` and ``count_parameters``. Distillation, pruning, fine-tuning and
quantization-aware training find layers through here, so no method imports another method's internals."""

from __future__ import annotations

import copy
import re

import torch
from torch import nn

from ..errors import HfCompressError
from .families import decoder_family

# -- the layer list -----------------------------------------------------------------------------------------


def find_layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The dotted name and module of the ``ModuleList`` holding the model's transformer layers."""
    num_layers = model.config.num_hidden_layers
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) == num_layers
    ]
    preferred = [c for c in candidates if c[0].split(".")[-1] in ("layer", "layers", "h", "block")]
    if not (preferred or candidates):
        raise HfCompressError(
            f"can't find the transformer layers of {type(model).__name__}: no ModuleList of length {num_layers}"
        )
    return (preferred or candidates)[0]


def select_layers(spec: str | int | list[int], num_layers: int) -> list[int]:
    """Indices of the layers to keep out of ``num_layers``.

    ``"every_other"`` keeps 0, 2, 4, ... (DistilBERT); an int ``k`` (or a string of one) keeps ``k`` layers
    spread evenly, starting at layer 0; a list (or ``"0,2,5"``) names the layers explicitly.
    """
    if isinstance(spec, str):
        spec = spec.strip()
        if spec == "every_other":
            return list(range(0, num_layers, 2))
        if spec.isdigit():
            spec = int(spec)
        else:
            try:
                spec = [int(x) for x in spec.split(",")]
            except ValueError:
                raise HfCompressError(
                    f"student_layers {spec!r} is not 'every_other', a layer count or a list like '0,2,4'"
                ) from None
    if isinstance(spec, int):
        if not 1 <= spec <= num_layers:
            raise HfCompressError(f"a model of {spec} layers can't be cut from one of {num_layers} layers")
        return [round(i * num_layers / spec) for i in range(spec)]
    layers = list(spec)
    bad = [i for i in layers if not 0 <= i < num_layers]
    if bad or not layers or len(set(layers)) != len(layers):
        raise HfCompressError(f"layers {layers} must be distinct layer indices in 0..{num_layers - 1}")
    return sorted(layers)


def keep_layers(model, keep: list[int]):
    """A new model of the same class with only the layers ``keep`` (weights copied, everything else too).

    The config gets the new ``num_hidden_layers`` (and per-layer lists such as ``layer_types`` and BERT's
    ``pruned_heads`` renumbered), so the result saves and reloads with plain ``from_pretrained``.
    """
    prefix, _ = find_layer_list(model)
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = len(keep)
    if isinstance(getattr(config, "layer_types", None), list):  # per-layer attention types (Gemma, ...)
        config.layer_types = [config.layer_types[i] for i in keep]
    if getattr(config, "pruned_heads", None):  # BERT heads pruned earlier (transformers 4.x): renumber
        config.pruned_heads = {
            new: list(config.pruned_heads[old]) for new, old in enumerate(keep) if old in config.pruned_heads
        }
    smaller = type(model)(config).to(model.dtype)
    if getattr(model, "generation_config", None) is not None:  # end-of-turn ids, sampling defaults: the teacher's
        smaller.generation_config = copy.deepcopy(model.generation_config)
    renumber = {old: new for new, old in enumerate(keep)}
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.(.*)$")
    state = {}
    for key, value in model.state_dict().items():
        match = pattern.match(key)
        if match is None:
            state[key] = value
        elif int(match.group(1)) in renumber:
            state[f"{prefix}.{renumber[int(match.group(1))]}.{match.group(2)}"] = value
    missing, unexpected = smaller.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.endswith("position_ids")]:
        raise HfCompressError(
            f"weights of the kept layers don't line up: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    return smaller


def stop_token_ids(model, tokenizer=None) -> list[int]:
    """Every id generation must stop on: the model's ``generation_config.eos_token_id`` (Llama 3's
    ``<|eot_id|>``, Gemma's ``<end_of_turn>``, Phi-3's ``<|end|>`` beside the EOS) and the tokenizer's EOS."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    eos = getattr(tokenizer, "eos_token_id", None)
    return ids + ([eos] if eos is not None and eos not in ids else [])


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (shared weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


# -- the parts of one layer ---------------------------------------------------------------------------------


def layer_style(layer: nn.Module) -> str:
    """'bert' or 'llama', from the names of the layer's submodules (Phi-3's fused projections count as
    Llama-style)."""
    names = {name for name, _ in layer.named_modules()}
    if {"attention.self.query", "intermediate.dense", "output.dense"} <= names:
        return "bert"
    if {"self_attn.o_proj", "mlp.down_proj"} <= names and (
        "self_attn.q_proj" in names or "self_attn.qkv_proj" in names
    ):
        return "llama"
    raise HfCompressError(
        f"hfcompress knows BERT-style (attention.self.query, intermediate.dense) and Llama-style "
        f"(self_attn.q_proj, mlp.down_proj) layers; {type(layer).__name__} is neither"
    )


def attention_output(layer: nn.Module) -> nn.Linear:
    """The Linear that mixes the heads' outputs back into the hidden size (its input columns are per head)."""
    return layer.attention.output.dense if layer_style(layer) == "bert" else layer.self_attn.o_proj


def ffn_output(layer: nn.Module) -> nn.Linear:
    """The FFN's down projection (its input columns are the neurons)."""
    return layer.output.dense if layer_style(layer) == "bert" else layer.mlp.down_proj


def ffn_inputs(layer: nn.Module) -> list[tuple[nn.Module, str]]:
    """(parent, attribute) of the FFN's up projections (their output rows are the neurons; a fused
    ``gate_up_proj`` holds two rows per neuron, see ``neuron_rows``)."""
    if layer_style(layer) == "bert":
        return [(layer.intermediate, "dense")]
    return [(layer.mlp, name) for name in ("gate_proj", "up_proj", "gate_up_proj") if hasattr(layer.mlp, name)]


def attention_inputs(layer: nn.Module) -> list[tuple[nn.Module, str]]:
    """(parent, attribute) of the Llama-style projections that read the residual stream into attention."""
    attention = layer.self_attn
    return [(attention, name) for name in ("q_proj", "k_proj", "v_proj", "qkv_proj") if hasattr(attention, name)]


def neuron_rows(linear: nn.Linear, neurons: torch.Tensor, width: int) -> torch.Tensor:
    """Row indices of ``neurons`` in an FFN input projection: the same indices, or for a fused
    ``[gate; up]`` projection (``2 * width`` rows) the neuron's row in each half."""
    if linear.out_features == 2 * width:
        return torch.cat([neurons, neurons + width])
    return neurons


def head_layout(layer: nn.Module) -> tuple[int, int, int]:
    """(query heads, key/value heads, head size) of one layer as it is now."""
    if layer_style(layer) == "bert":
        attention = layer.attention.self
        return attention.num_attention_heads, attention.num_attention_heads, attention.attention_head_size
    attention = layer.self_attn
    head_dim = attention.head_dim
    q_heads = attention.o_proj.in_features // head_dim
    if hasattr(attention, "qkv_proj"):  # rows [q; k; v]
        return q_heads, (attention.qkv_proj.out_features // head_dim - q_heads) // 2, head_dim
    return q_heads, attention.k_proj.out_features // head_dim, head_dim


def hidden_norms(model: nn.Module) -> list[nn.Module]:
    """The norms whose output is the hidden size: a Llama-style family's per-layer norms (from the family
    table) and its final norm; every LayerNorm of a BERT-style model. Per-head q/k norms are left out."""
    _, layers = find_layer_list(model)
    if layer_style(layers[0]) == "bert":
        return [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    family = decoder_family(model, "hidden-channel scoring")
    norms = [layer.get_submodule(name) for layer in layers for name in family.layer_norms]
    return norms + [model.get_decoder().norm]


def matching_linears(model: nn.Module, pattern: str) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` modules whose name matches the regular expression ``pattern`` (``re.search``); a
    pattern that matches none is an error that shows what the Linear layers are called."""
    regex = re.compile(pattern)
    found = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and regex.search(name)}
    if not found:
        examples = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)][:4]
        raise HfCompressError(
            f"target_modules {pattern!r} matches no nn.Linear; Linear layers are named like {examples}"
        )
    return found


PER_LAYER_KEYS = ("intermediate_size", "num_attention_heads", "num_key_value_heads")


def per_layer_shapes(config: dict) -> dict[str, list]:
    """The shape keys of a ``config.json`` that hold one value per layer (a pruned model whose layers differ):
    what exporters that write one value per model refuse."""
    return {key: config[key] for key in PER_LAYER_KEYS if isinstance(config.get(key), list)}
