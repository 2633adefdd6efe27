"""Transfer learning for text classification: load a pretrained model with a head for the task's labels,
and fine-tune it with a plain ``Trainer``. The distillation recipe uses this as its teacher stage.
"""

from __future__ import annotations

from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
)

from .assets import ASSETS, resolve_model
from .errors import HfCompressError


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


def load_classifier(name_or_path: str, label_names: list[str], **kwargs):
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
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=num_labels, id2label=id2label, label2id={v: k for k, v in id2label.items()}, **kwargs
    )
    return model, saved_head  # a saved head of another size was refused above


def finetune_classifier(
    model, tokenizer, train_dataset, eval_dataset, args, compute_metrics=None, callbacks=None
) -> Trainer:
    """Fine-tune ``model`` on tokenized data with a plain Trainer; returns the trained Trainer."""
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
        callbacks=callbacks,
    )
    trainer.train()
    return trainer
