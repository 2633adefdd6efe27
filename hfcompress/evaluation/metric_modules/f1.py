"""F1 as an ``evaluate`` metric module that loads offline by path.

``average="binary"`` (default) scores ``pos_label``; ``"macro"`` averages the per-class F1 of every class
seen in references or predictions; ``"micro"`` equals accuracy for single-label classification.
"""

import datasets
import evaluate

_DESCRIPTION = "F1: the harmonic mean of precision and recall."


def _f1_for(label, predictions, references):
    tp = sum(1 for p, r in zip(predictions, references) if p == label and r == label)
    fp = sum(1 for p, r in zip(predictions, references) if p == label and r != label)
    fn = sum(1 for p, r in zip(predictions, references) if p != label and r == label)
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description="predictions and references: lists of integer class ids; average: binary|macro|micro",
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, average="binary", pos_label=1):
        if average == "binary":
            return {"f1": _f1_for(pos_label, predictions, references)}
        if average == "macro":
            labels = sorted(set(references) | set(predictions))
            return {"f1": sum(_f1_for(label, predictions, references) for label in labels) / len(labels)}
        if average == "micro":
            return {"f1": sum(int(p == r) for p, r in zip(predictions, references)) / len(references)}
        raise ValueError(f"average={average!r} is not supported; use binary, macro or micro")
