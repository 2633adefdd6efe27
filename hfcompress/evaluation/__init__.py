"""Evaluation: task metrics (own ``evaluate`` modules that load offline), model measurements (metrics per
split, parameters, size, interleaved CPU latency) and reports (atomic JSON + markdown tables)."""

from .measure import (
    add_latency,
    compare_models,
    evaluate_model,
    gzip_size_on_disk,
    interleaved_latency,
    measure_latency,
    measure_model,
    predict,
    size_on_disk,
)
from .metrics import classification_metrics, load_metric, multilabel_metrics, task_metrics, token_metrics
from .reports import markdown_table, report_columns, write_report, write_text_atomic

__all__ = [
    "add_latency",
    "classification_metrics",
    "compare_models",
    "evaluate_model",
    "interleaved_latency",
    "load_metric",
    "markdown_table",
    "measure_latency",
    "measure_model",
    "multilabel_metrics",
    "predict",
    "report_columns",
    "gzip_size_on_disk",
    "size_on_disk",
    "task_metrics",
    "token_metrics",
    "write_report",
    "write_text_atomic",
]
