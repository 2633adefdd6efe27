"""Collators: dynamic padding for every task, and for distillation with two tokenizers."""

from __future__ import annotations

from typing import Any

import torch

from .unlabelled import ALIGNMENT, UNLABELLED

TEACHER_PREFIX = "teacher_"
EXAMPLE_INDEX = "hfc_example_index"


class DistillationDataCollator:
    """Pads student inputs with the student's tokenizer and ``teacher_*`` inputs with the teacher's.

    Keys that are neither model inputs nor labels (raw text, ids) are dropped, so ``remove_unused_columns``
    can stay False. The token alignment between the two tokenizations is padded with -1, and unlabelled rows'
    label (-1) becomes -100, which every hard-label loss ignores.

    Training batches are padded on the right whatever the tokenizer's ``padding_side`` (Llama tokenizers
    often say 'left', for generation): per-token labels, the alignment and a causal LM's positions
    (``arange`` in a training forward) then line up with the tokens. Generation pads prompts on the left itself
    (``distillation.causal.on_policy_inputs``).
    """

    padding_side = "right"

    def __init__(self, tokenizer, teacher_tokenizer=None, pad_to_multiple_of: int | None = None):
        self.tokenizer = tokenizer
        self.teacher_tokenizer = teacher_tokenizer or tokenizer
        self.pad_to_multiple_of = pad_to_multiple_of

    def _pad(self, tokenizer, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return tokenizer.pad(
            features, padding=True, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt",
            padding_side=self.padding_side,
        )  # fmt: skip

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in features[0]]
        batch = dict(self._pad(self.tokenizer, [{k: f[k] for k in input_keys} for f in features]))
        teacher_keys = [k for k in features[0] if k.startswith(TEACHER_PREFIX)]
        if teacher_keys:
            teacher = self._pad(
                self.teacher_tokenizer,
                [{k[len(TEACHER_PREFIX) :]: f[k] for k in teacher_keys} for f in features],
            )
            batch.update({TEACHER_PREFIX + k: v for k, v in teacher.items()})
        length = batch["input_ids"].shape[1]
        if ALIGNMENT in features[0]:
            batch[ALIGNMENT] = torch.tensor(
                [f[ALIGNMENT] + [-1] * (length - len(f[ALIGNMENT])) for f in features]
            )
        if "labels" in features[0]:
            batch["labels"] = self._labels(features, length)
        if EXAMPLE_INDEX in features[0]:
            batch[EXAMPLE_INDEX] = torch.tensor([f[EXAMPLE_INDEX] for f in features])
        return batch

    @staticmethod
    def _labels(features: list[dict[str, Any]], length: int) -> torch.Tensor:
        """Labels as a tensor; one integer tag per token (token classification) is padded with -100 to the
        batch's length. Multi-hot float vectors (multi-label) have one fixed length and stay as they are."""
        labels = [f["labels"] for f in features]
        if isinstance(labels[0], list) and labels[0] and isinstance(labels[0][0], int):
            labels = [tags + [-100] * (length - len(tags)) for tags in labels]
        elif isinstance(labels[0], int):
            labels = [-100 if label == UNLABELLED else label for label in labels]
        return torch.tensor(labels)


def task_collator(tokenizer, task_type: str = "single_label_classification"):
    """Dynamic padding; for token classification the labels are padded with -100 too."""
    from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding

    if task_type == "causal_lm":  # token blocks with labels: pad them with -100, never mask real EOS tokens
        return DistillationDataCollator(tokenizer)
    if task_type == "token_classification":
        return DataCollatorForTokenClassification(tokenizer)
    return DataCollatorWithPadding(tokenizer)
