"""Classifier tasks: single-label and multi-label sequence classification, and token classification. Their
models are ``AutoModelFor{Sequence,Token}Classification`` with a head for the data's labels; they are timed in
ms per batch and scored on accuracy-like metrics (higher is better)."""

from __future__ import annotations

from pathlib import Path

from ...configs import DataArguments, parse_int_list
from ...errors import HfCompressError
from .base import Measurement, TaskData, TaskKind


class ClassifierTask(TaskKind):
    """Sequence classification with one label per text (``single_label_classification``); the others below
    change what differs."""

    name = "single_label_classification"
    model_class = None  # measure_artifacts' default: sequence classification

    @property
    def data_arguments(self) -> type:
        return DataArguments

    def metric_names(self, data_args) -> list[str]:
        return data_args.metric_names

    def metric_hint(self) -> str:
        return " or add it to data.metrics"

    def check_quantize_methods(self, methods: list[str]) -> None:
        from ...quantization.config import check_classifier_methods

        check_classifier_methods(methods)

    def prepare(self, config) -> TaskData:
        from ...data import limit_samples, load_task_data
        from ...evaluation import task_metrics
        from ...modeling import load_tokenizer

        data_args, seed = config.data, config.pipeline.seed
        raw, labels = load_task_data(self.name, data_args.dataset_name, data_args.text_column, data_args.label_column)
        raw = limit_samples(raw, data_args.max_train_samples, data_args.max_eval_samples, seed)
        tokenizer = load_tokenizer(config.pipeline.model_name_or_path)
        data = self.tokenize(raw, tokenizer, data_args.max_seq_length)
        texts = [t if isinstance(t, str) else " ".join(t) for t in raw["validation"]["text"][:64]]
        metrics = task_metrics(self.name, data_args.metric_names, len(labels))
        return TaskData(raw=raw, tokenizer=tokenizer, splits=data, labels=labels, metrics=metrics, texts=texts)

    def tokenize(self, raw, tokenizer, max_length: int):
        from ...data import tokenize_dataset

        return tokenize_dataset(raw, tokenizer, max_length)

    def check_base_model(self, name: str, data: TaskData) -> None:
        self.load(name, data)

    def load(self, folder: str, data: TaskData, for_training: bool = False):
        from ...modeling import load_classifier

        if for_training:
            return load_classifier(str(folder), data.labels, self.name, dataset=data.raw)[0]
        model, head_ready = load_classifier(str(folder), data.labels, self.name)
        if not head_ready:
            raise HfCompressError(
                f"{folder} has no head for these labels: add a 'finetune' stage before the others"
            )
        return model

    def calibration(self, data: TaskData, data_args):
        return data.raw["train"], data_args.max_seq_length

    def candidate_latency(self, models: dict, data: TaskData, data_args, config) -> tuple[dict, dict]:
        from ...evaluation import interleaved_latency

        latency = interleaved_latency(models, data.tokenizer, data.texts, config.budget_batch_size,
                                      data_args.max_seq_length, config.latency_rounds, config.latency_runs)  # fmt: skip
        return latency, {}

    def proxy_predictions(self, model, data: TaskData):
        from ...data import DistillationDataCollator
        from ...evaluation import predict

        return predict(model, data.splits["validation"], DistillationDataCollator(data.tokenizer))

    def proxy_metrics(self, data: TaskData):
        return data.metrics

    def measure(self, ctx, artifacts: dict, config, folder: Path, search) -> Measurement:
        from ...quantization import measure_artifacts
        from ...quantization.measure import report_columns

        batch_sizes = self.batch_sizes(config, search)
        data = ctx.data
        splits = {s: data.splits[s] for s in ("validation", "test")}
        rows = measure_artifacts({k: a.folder for k, a in artifacts.items()}, "teacher", data.tokenizer, splits,
                                 data.metrics, data.texts, batch_sizes, ctx.config.data.max_seq_length,
                                 rounds=config.latency_rounds, runs=config.latency_runs, memory=config.memory,
                                 model_class=self.model_class)  # fmt: skip
        largest = max(batch_sizes)
        base = report_columns(batch_sizes)
        columns = [("stage", "stage"), *base[:4], ("kept_test", "kept (test)"), ("parameters", "parameters"),
                   *base[4:5], ("gzip_size_mb", "gzip (MB)"), *base[5:]]  # fmt: skip
        return Measurement(rows, (f"latency_ms_b{largest}", f"the fastest at batch {largest}"), columns,
                           largest_batch=largest)

    @staticmethod
    def batch_sizes(config, search) -> list[int]:
        """The latency columns' batch sizes, with the search budget's (re-checked there)."""
        sizes = parse_int_list(config.latency_batch_sizes, "latency_batch_sizes")
        if search is not None and search.budget.budget_batch_size not in sizes:
            sizes.append(search.budget.budget_batch_size)
        return sizes

    def plots(self, measured: Measurement, out: Path, metric: str, search) -> list[str]:
        from ...evaluation.plots import plot_front, plot_tradeoffs

        plots = [str(p) for p in plot_tradeoffs(measured.rows, out, measured.largest_batch, score=f"test_{metric}")]
        if search is not None:
            plots.append(str(plot_front(search.candidates, "latency_ms", "candidate CPU latency (ms)",
                                        f"validation_{metric}", out / "search_candidates.png", "candidate")))  # fmt: skip
        return plots


class MultiLabelTask(ClassifierTask):
    """Several labels per text (multi-hot targets): accuracy or f1; soft-target KD doesn't fit."""

    name = "multi_label_classification"

    def metric_names(self, data_args) -> list[str]:
        return ["accuracy", "f1"]

    def metric_hint(self) -> str:
        return ""

    def check_distillation(self, stage_name: str, args) -> None:
        if args.alpha > 0:  # soft-target KD is a softmax over classes
            raise HfCompressError(
                f"stage {stage_name!r}: soft-target KD (alpha > 0) is a softmax over classes, which doesn't fit "
                "multi-label outputs; set alpha: 0 and logits_mse_weight > 0 (or hidden-state terms)"
            )


class TokenClassificationTask(ClassifierTask):
    """A tag per word: the teacher's logits aren't cached (rows align differently per tokenizer), and the
    quantize stage doesn't take it."""

    name = "token_classification"

    @property
    def model_class(self):
        from transformers import AutoModelForTokenClassification

        return AutoModelForTokenClassification

    def metric_names(self, data_args) -> list[str]:
        return ["accuracy", "f1"]

    def metric_hint(self) -> str:
        return ""

    def tokenize(self, raw, tokenizer, max_length: int):
        from ...data import tokenize_token_dataset

        return tokenize_token_dataset(raw, tokenizer, max_length)

    def distillation_overrides(self) -> dict:
        return {"cache_teacher_logits": False}

    def check_quantize_methods(self, methods: list[str]) -> None:
        raise HfCompressError(
            "the quantize stage supports sequence classification and causal LMs; remove it for token_classification"
        )
