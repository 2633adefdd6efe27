"""Loading models and tokenizers from a Hub id, a local folder or an offline asset: ``load_tokenizer``,
``load_causal_lm`` (dtype, attention implementation, remote code), ``load_classifier`` (a head for the task's
labels), and ``is_causal_lm``, the one answer to "is this a causal LM?"."""

from __future__ import annotations

from ..errors import HfCompressError


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


def is_causal_lm(model_or_folder) -> bool:
    """True for a causal LM: a model (wrapped ones too: DDP, PEFT), its config (a ``PretrainedConfig`` or the
    dict of a ``config.json``), or a saved folder whose ``config.json`` names a ``*ForCausalLM`` architecture."""
    import json
    from os import PathLike
    from pathlib import Path

    if isinstance(model_or_folder, (str, PathLike)):
        config = Path(model_or_folder) / "config.json"
        if not config.is_file():
            return False
        architectures = json.loads(config.read_text()).get("architectures") or []
    elif isinstance(model_or_folder, dict):
        architectures = model_or_folder.get("architectures") or []
    elif hasattr(model_or_folder, "architectures") and not hasattr(model_or_folder, "config"):
        architectures = model_or_folder.architectures or []  # a PretrainedConfig
    else:
        model = model_or_folder
        while hasattr(model, "module") and not hasattr(model, "config"):  # DDP and friends
            model = model.module
        if hasattr(model, "get_base_model"):  # PEFT
            model = model.get_base_model()
        return type(model).__name__.endswith("ForCausalLM")
    return any(a.endswith("ForCausalLM") for a in architectures)
