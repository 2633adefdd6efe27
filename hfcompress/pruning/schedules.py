"""Sparsity schedules: how much of the weights is pruned at a given optimizer step."""

from __future__ import annotations


def cubic_sparsity(
    step: int, initial: float, final: float, start_step: int, end_step: int, frequency: int = 1
) -> float:
    """Gradual pruning of Zhu and Gupta (2017): ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0))^3``.

    Sparsity is 0 before ``start_step``, ``initial`` at it, ``final`` from ``end_step`` on, and changes only
    every ``frequency`` steps in between (pruning fast at first, when redundant weights abound, and slowly
    near the end). ``start_step == end_step`` is one-shot pruning to ``final``.
    """
    if step < start_step:
        return 0.0
    if step >= end_step:
        return final
    step = start_step + (step - start_step) // frequency * frequency
    progress = (step - start_step) / (end_step - start_step)
    return final + (initial - final) * (1.0 - progress) ** 3
