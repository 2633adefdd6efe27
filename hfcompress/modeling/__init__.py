"""What every method needs to know about a model: where its layers are, what their parts are, how many
parameters it has, and how to load it (with a head for the task's labels) and its tokenizer.

Two layer layouts are known: BERT-style (``attention.self.query`` ... ``intermediate.dense``,
``output.dense``) and Llama-style (``self_attn.q_proj`` ... ``mlp.gate_proj/up_proj/down_proj``). Distillation
(students cut from their teacher), pruning (structured and unstructured), fine-tuning (freezing, LoRA targets)
and quantization-aware training all find layers and Linear modules through this module, so no method imports
another method's internals.
"""

from __future__ import annotations

import copy
import re

import torch
from torch import nn

from ..errors import HfCompressError
from .families import (  # noqa: F401 (re-exported)
    FAMILIES,
    DecoderFamily,
    decoder_family,
    logit_transform,
    model_type,
    rope_settings,
)

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


# -- loading ------------------------------------------------------------------------------------------------


def _not_found(name_or_path: str, err: Exception) -> HfCompressError:
    from ..assets import ASSETS

    known = ", ".join(sorted(n for a in ASSETS.values() if a.kind == "model" for n in (a.name, *a.hub_ids)))
    return HfCompressError(
        f"model {name_or_path!r} not found: not a local folder, not an offline asset ({known}), and the Hub "
        f"could not provide it ({type(err).__name__})"
    )


def load_tokenizer(name_or_path: str):
    """``AutoTokenizer`` for a Hub id, a local folder or an offline asset (see ``assets.resolve_model``)."""
    from transformers import AutoTokenizer

    from ..assets import resolve_model

    path = resolve_model(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise _not_found(name_or_path, err) from None


TORCH_DTYPES = ("auto", "bfloat16", "float16", "float32")


def load_causal_lm(
    name_or_path: str,
    dtype: str = "float32",
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
):
    """``AutoModelForCausalLM`` for a Hub id, a local folder or an offline asset.

    ``dtype``: 'auto' keeps the checkpoint's (bf16 for most Hub LMs), else one of ``TORCH_DTYPES``;
    ``attn_implementation``: 'eager', 'sdpa', 'flash_attention_2', ... (None: transformers' choice);
    ``trust_remote_code`` runs the repository's own modelling code, so it is off unless asked.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from ..assets import resolve_model
    from ..errors import check_choice

    check_choice("torch_dtype", dtype, TORCH_DTYPES)
    kwargs = {"dtype": dtype if dtype == "auto" else getattr(torch, dtype), "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    path = resolve_model(name_or_path)
    check_text_only(path, name_or_path, trust_remote_code)
    try:
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as err:
        raise _not_found(name_or_path, err) from None


def check_text_only(path: str, name_or_path: str, trust_remote_code: bool = False) -> None:
    """Refuse, before any weight is read, a checkpoint whose causal-LM class is a vision-language model:
    Gemma 3 from 4B up (``model_type`` gemma3) loads as ``Gemma3ForConditionalGeneration``, which has no layer
    list, family entry or LM head where the methods look for them."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise _not_found(name_or_path, err) from None
    if getattr(config, "vision_config", None) is not None:
        raise HfCompressError(
            f"model {name_or_path!r} is a vision-language checkpoint (model_type {config.model_type!r}); hfcompress "
            "compresses text decoders: save its language model alone (Gemma 3: Gemma3ForCausalLM, model_type "
            "gemma3_text) and pass that folder"
        )


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


def saved_tokenizer(name_or_path: str):
    """The tokenizer saved with a model, or None for a local folder that holds none (a Hub id is loaded)."""
    from pathlib import Path

    from ..assets import resolve_model

    path = Path(resolve_model(name_or_path))
    if path.is_dir() and not any((path / name).exists() for name in TOKENIZER_FILES):
        return None
    return load_tokenizer(name_or_path)


def has_classification_head(config) -> bool:
    """True when the checkpoint was saved with a sequence-classification head."""
    return any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))


def load_classifier(
    name_or_path: str,
    label_names: list[str],
    task_type: str = "single_label_classification",
    dataset=None,
    **kwargs,
):
    """A model with a head for these labels; returns (model, head_was_pretrained).

    ``AutoModelForSequenceClassification`` (``AutoModelForTokenClassification`` for token classification). A
    base model gets a new head with ``id2label``/``label2id`` from the dataset. A checkpoint that already has a
    classification head of another size is refused: its labels don't fit the task. With ``dataset`` (single-
    label splits with integer ``label``s) every label is checked to fit the head (``check_labels_fit``).
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification

    from ..assets import resolve_model

    path = resolve_model(name_or_path)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise _not_found(name_or_path, err) from None
    num_labels = len(label_names)
    saved_head = has_classification_head(config)
    if saved_head and config.num_labels != num_labels:
        raise HfCompressError(
            f"model {name_or_path!r} has a classification head with num_labels={config.num_labels} but the "
            f"dataset has {num_labels} labels ({', '.join(label_names)}); use a base model or matching data"
        )
    id2label = dict(enumerate(label_names))
    model_class = AutoModelForSequenceClassification
    if task_type == "token_classification":
        model_class = AutoModelForTokenClassification
        saved_head = any(a.endswith("ForTokenClassification") for a in (config.architectures or []))
    elif task_type == "multi_label_classification":
        kwargs["problem_type"] = "multi_label_classification"
    model = model_class.from_pretrained(
        path, num_labels=num_labels, id2label=id2label, label2id={v: k for k, v in id2label.items()}, **kwargs
    )
    if dataset is not None and task_type == "single_label_classification":
        check_labels_fit(dataset, model.config.num_labels, f"model {name_or_path!r}")
    return model, saved_head  # a saved head of another size was refused above


def check_labels_fit(dataset, num_labels: int, who: str) -> None:
    """Raise if any integer label of any split is outside ``0..num_labels-1`` of the model called ``who``."""
    for split in dataset:
        values = dataset[split].unique("label")
        bad = [v for v in values if not 0 <= int(v) < num_labels]
        if bad:
            raise HfCompressError(
                f"{split} labels {sorted(bad)[:5]} don't fit {who} with num_labels={num_labels}; "
                f"allowed 0..{num_labels - 1}"
            )
