"""How sure a comparison of scores is: a paired bootstrap over evaluation examples.

Two students scored on the same 1,000 validation examples differ by 0.2 points when they disagree on two
examples; that is noise, not a reason to ship the slower one. ``paired_bootstrap`` resamples the examples
(the same resamples for every model, so that the models are compared on equal draws) and recomputes the
metric on each; ``within_noise`` says which models the best one does not beat in at least ``confidence`` of
the draws.
"""

from __future__ import annotations

import numpy as np


def paired_bootstrap(
    predictions: dict[str, tuple[np.ndarray, np.ndarray]],
    compute_metrics,
    metric: str,
    samples: int = 200,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """name -> ``samples`` values of ``metric``, each computed by ``compute_metrics((logits, labels))`` on one
    resample (with replacement) of the examples. Every model is given (logits, labels) over the same examples
    in the same order, and every model sees the same resamples."""
    sizes = {len(labels) for _, labels in predictions.values()}
    if len(sizes) != 1:
        raise ValueError(f"paired_bootstrap needs the same examples for every model, got sizes {sorted(sizes)}")
    n = sizes.pop()
    draws = np.random.default_rng(seed).integers(0, n, size=(samples, n))
    return {
        name: np.array([compute_metrics((logits[i], labels[i]))[metric] for i in draws])
        for name, (logits, labels) in predictions.items()
    }


def share_below(best: str, draws: dict[str, np.ndarray]) -> dict[str, float]:
    """name -> the share of the bootstrap draws in which it scores below ``best`` (0 for ``best`` itself).
    A model below the best in at least ``confidence`` (say 0.95) of the draws is worse beyond noise; any other
    is within the noise of the best."""
    return {name: float(np.mean(values < draws[best])) for name, values in draws.items()}
