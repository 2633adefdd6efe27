"""Transfer learning: load a pretrained model with a new head for the task's labels and fine-tune it (full,
with frozen embeddings/first layers, or LoRA/QLoRA through peft), with early stopping on the validation
metric. ``finetune`` is the one implementation: recipes/finetune.py and the teacher stage of the compression
recipes (``finetune_classifier``) both run it.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Optional

from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    Trainer,
)

from .assets import ASSETS, resolve_model
from .errors import HfCompressError

LORA_TARGETS = r"(query|key|value|dense|q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj|qkv_proj|c_attn|c_proj|fc1|fc2)"


@dataclass
class FinetuneConfig:
    """How to fine-tune: what to freeze, LoRA/QLoRA, early stopping."""

    freeze_embeddings: bool = field(default=False, metadata={"help": "Keep the embedding layer frozen."})
    freeze_layers: int = field(
        default=0, metadata={"help": "Keep the first N transformer layers frozen; >= 0."}
    )
    early_stopping_patience: Optional[int] = field(
        default=None,
        metadata={
            "help": "Stop after N evaluations without improvement of metric_for_best_model (needs an eval_strategy; "
            "the best checkpoint is loaded at the end). None: no early stopping."
        },
    )
    use_lora: bool = field(
        default=False, metadata={"help": "Train LoRA adapters (peft) instead of all weights."}
    )
    qlora: bool = field(
        default=False,
        metadata={"help": "QLoRA: the frozen base is loaded in 4-bit nf4 (bitsandbytes); implies use_lora."},
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank; >= 1."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA path, in [0, 1)."})
    lora_target_modules: str = field(
        default="auto",
        metadata={
            "help": "'auto': the attention and MLP Linear layers inside the transformer layers, found by name for "
            "BERT- and Llama-style models; else a regex on module names. The task head is trained in full."
        },
    )

    def __post_init__(self):
        if self.freeze_layers < 0:
            raise HfCompressError(f"freeze_layers must be >= 0, got {self.freeze_layers}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise HfCompressError(
                f"early_stopping_patience must be >= 1 or null, got {self.early_stopping_patience}"
            )
        if self.lora_r < 1:
            raise HfCompressError(f"lora_r must be >= 1, got {self.lora_r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise HfCompressError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.qlora:
            self.use_lora = True

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _not_found(name_or_path: str, err: Exception) -> HfCompressError:
    known = ", ".join(sorted(n for a in ASSETS.values() if a.kind == "model" for n in (a.name, *a.hub_ids)))
    return HfCompressError(
        f"model {name_or_path!r} not found: not a local folder, not an offline asset ({known}), and the Hub "
        f"could not provide it ({type(err).__name__})"
    )


def load_tokenizer(name_or_path: str):
    path = resolve_model(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise _not_found(name_or_path, err) from None


def has_classification_head(config) -> bool:
    """True when the checkpoint was saved with a sequence-classification head."""
    return any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))


def load_classifier(
    name_or_path: str, label_names: list[str], task_type: str = "single_label_classification", **kwargs
):
    """``AutoModelForSequenceClassification`` for these labels; returns (model, head_was_pretrained).

    A base model gets a new head with ``id2label``/``label2id`` from the dataset. A checkpoint that already
    has a classification head of another size is refused: its labels don't fit the task.
    """
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
    return model, saved_head  # a saved head of another size was refused above


def freeze(model, embeddings: bool, first_layers: int) -> None:
    """Stop gradients to the embeddings and/or the first ``first_layers`` transformer layers."""
    from .distillation.student import find_layer_list

    if embeddings:
        model.get_input_embeddings().requires_grad_(False)
        base = getattr(model, model.base_model_prefix, model)
        if hasattr(base, "embeddings"):  # BERT family: positions and token types too
            base.embeddings.requires_grad_(False)
    if first_layers:
        _, layers = find_layer_list(model)
        if first_layers > len(layers):
            raise HfCompressError(f"freeze_layers={first_layers} but the model has {len(layers)} layers")
        for layer in layers[:first_layers]:
            layer.requires_grad_(False)


def lora_target_regex(model, spec: str = "auto") -> str:
    """The module-name regex LoRA attaches to: by default the Linear layers inside the transformer layers."""
    if spec != "auto":
        return spec
    from .distillation.student import find_layer_list

    prefix, _ = find_layer_list(model)
    return rf"{re.escape(prefix)}\.\d+\..*{LORA_TARGETS}"


def apply_lora(model, config: FinetuneConfig, task_type: str):
    """Wrap ``model`` with LoRA adapters (peft); the task head is trained and saved in full."""
    from peft import LoraConfig, TaskType, get_peft_model

    target = lora_target_regex(model, config.lora_target_modules)
    if not any(re.fullmatch(target, name) for name, _ in model.named_modules()):
        raise HfCompressError(f"lora_target_modules {target!r} matches no module of {type(model).__name__}")
    head = [name for name, _ in model.named_children() if name != model.base_model_prefix]
    lora = LoraConfig(
        task_type=TaskType.TOKEN_CLS if task_type == "token_classification" else TaskType.SEQ_CLS,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=target,
        modules_to_save=[h for h in head if h not in ("dropout",)],
    )
    return get_peft_model(model, lora)


def load_qlora_base(name_or_path: str, label_names: list[str], task_type: str):
    """The frozen 4-bit (nf4, double-quantized) base for QLoRA, head in full precision, ready for training."""
    from peft import prepare_model_for_kbit_training

    from .quantization.backends import require_backend
    from .quantization.bnb import bnb_config, disable_avx512bf16, kept_modules
    from .quantization.config import QuantizationConfig

    require_backend("bnb-nf4")
    path = resolve_model(name_or_path)
    quantization = bnb_config(QuantizationConfig(method="bnb-nf4"), kept_modules(path))
    model, _ = load_classifier(name_or_path, label_names, task_type, quantization_config=quantization)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    disable_avx512bf16(model)  # the CPU eval-then-train failure of shared/ASSETS.md
    return model


def merge_adapter(model):
    """A plain transformers model with the LoRA weights merged in (``merge_and_unload``)."""
    return model.merge_and_unload()


def finetune(
    model,
    tokenizer,
    train_dataset,
    eval_dataset,
    args,
    config: FinetuneConfig | None = None,
    compute_metrics=None,
    callbacks=None,
    task_type: str = "single_label_classification",
) -> Trainer:
    """Fine-tune with a plain ``Trainer`` (after freezing and LoRA as ``config`` asks); returns the Trainer.

    With ``early_stopping_patience`` the run stops when ``args.metric_for_best_model`` stops improving and
    ends with the best checkpoint loaded (``load_best_model_at_end``).
    """
    config = config or FinetuneConfig()
    callbacks = list(callbacks or [])
    if config.early_stopping_patience is not None:
        if args.eval_strategy == "no" or not args.load_best_model_at_end:
            raise HfCompressError(
                "early_stopping_patience needs eval_strategy (epoch or steps), save_strategy to match and "
                "load_best_model_at_end: true"
            )
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    freeze(model, config.freeze_embeddings, config.freeze_layers)
    if config.use_lora and not hasattr(model, "peft_config"):
        model = apply_lora(model, config, task_type)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=task_collator(tokenizer, task_type),
        compute_metrics=compute_metrics,
        callbacks=callbacks,
    )
    trainer.train()
    return trainer


def task_collator(tokenizer, task_type: str = "single_label_classification"):
    """Dynamic padding; for token classification the labels are padded with -100 too."""
    if task_type == "token_classification":
        return DataCollatorForTokenClassification(tokenizer)
    return DataCollatorWithPadding(tokenizer)


def finetune_classifier(
    model, tokenizer, train_dataset, eval_dataset, args, compute_metrics=None, callbacks=None
) -> Trainer:
    """Full fine-tuning of a sequence classifier with defaults: the compression recipes' teacher stage."""
    return finetune(model, tokenizer, train_dataset, eval_dataset, args, None, compute_metrics, callbacks)
