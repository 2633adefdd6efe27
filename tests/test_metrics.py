"""Our evaluate metric modules load offline (conftest sets HF_HUB_OFFLINE and a fresh HF_HOME)."""

import numpy as np
import pytest

from hfcompress.evaluation import classification_metrics, load_metric


def test_accuracy_and_f1_offline():
    assert (
        load_metric("accuracy").compute(predictions=[1, 0, 1, 1], references=[1, 1, 1, 0])["accuracy"] == 0.5
    )
    f1 = load_metric("f1")
    # tp=2, fp=1, fn=1 -> 2*2/(4+1+1)
    assert f1.compute(predictions=[1, 0, 1, 1], references=[1, 1, 1, 0])["f1"] == pytest.approx(4 / 6)
    assert f1.compute(predictions=[0, 1, 2, 2], references=[0, 1, 2, 1], average="macro")[
        "f1"
    ] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)


def test_classification_metrics_for_trainer():
    compute = classification_metrics(["accuracy", "f1"], num_labels=2)
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    result = compute((logits, np.array([0, 1, 0])))
    assert result["accuracy"] == pytest.approx(2 / 3) and result["f1"] == pytest.approx(2 / 3)
