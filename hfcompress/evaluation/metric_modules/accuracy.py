"""Accuracy as an ``evaluate`` metric module that loads offline by path (the Hub's needs a download)."""

import datasets
import evaluate

_DESCRIPTION = "Accuracy: the fraction of predictions equal to their references."


class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description="predictions and references: lists of integer class ids",
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references):
        if not references:
            raise ValueError("accuracy needs at least one reference")
        correct = sum(int(p == r) for p, r in zip(predictions, references))
        return {"accuracy": correct / len(references)}
