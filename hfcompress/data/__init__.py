"""Data by task: loading (Hub, local files, offline assets) with train/validation/test splits, single-label,
multi-label and token classification, tokenization and collators."""

from .classification import load_text_classification, same_vocabulary, tokenize_dataset
from .collators import EXAMPLE_INDEX, TEACHER_PREFIX, DistillationDataCollator, task_collator
from .loading import SPLITS, is_list_feature, limit_samples, load_splits
from .multilabel import load_multilabel_classification
from .token_classification import load_token_classification, tokenize_token_dataset

TASK_TYPES = ("single_label_classification", "multi_label_classification", "token_classification")


def load_task_data(task_type: str, name_or_path: str, text_column: str = "text", label_column: str = "label"):
    """(splits, label names) for one of ``TASK_TYPES``."""
    if task_type == "token_classification":
        return load_token_classification(name_or_path, text_column, label_column)
    if task_type == "multi_label_classification":
        return load_multilabel_classification(name_or_path, text_column, label_column)
    return load_text_classification(name_or_path, text_column, label_column)


__all__ = [
    "EXAMPLE_INDEX",
    "SPLITS",
    "TASK_TYPES",
    "TEACHER_PREFIX",
    "DistillationDataCollator",
    "is_list_feature",
    "limit_samples",
    "load_multilabel_classification",
    "load_splits",
    "load_task_data",
    "load_text_classification",
    "load_token_classification",
    "same_vocabulary",
    "task_collator",
    "tokenize_dataset",
    "tokenize_token_dataset",
]
