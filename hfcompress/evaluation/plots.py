"""Trade-off plots (accuracy against latency and against size) with the Pareto front marked."""

from __future__ import annotations

from pathlib import Path

from ..errors import HfCompressError


def pareto_front(rows: list[dict], cost: str, score: str) -> list[int]:
    """Indices of the rows no other row beats: none is at most as costly and at least as good, and strictly
    better on one of the two. Rows missing either figure are left out."""
    points = [
        (i, r[cost], r[score])
        for i, r in enumerate(rows)
        if r.get(cost) is not None and r.get(score) is not None
    ]
    front = []
    for i, c, s in points:
        dominated = any((c2 <= c and s2 >= s) and (c2 < c or s2 > s) for j, c2, s2 in points if j != i)
        if not dominated:
            front.append(i)
    return front


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise HfCompressError(
            "plots need matplotlib: pip install 'hfcompress[plots]' (or set plots false)"
        ) from None
    return plt


def plot_front(
    rows: list[dict], x: str, x_label: str, y: str, path: str | Path, label: str = "model"
) -> Path:
    """One labelled point per row (``y`` against ``x``), the Pareto front (low ``x``, high ``y``) joined by a
    dashed line and its points ringed."""
    plt = _pyplot()
    points = [r for r in rows if r.get(x) is not None and r.get(y) is not None]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for row in points:
        ax.scatter(row[x], row[y])
        ax.annotate(row[label], (row[x], row[y]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    front = sorted((points[i] for i in pareto_front(points, x, y)), key=lambda r: r[x])
    if front:
        ax.plot([r[x] for r in front], [r[y] for r in front], "k--", lw=0.8, label="Pareto front")
        ax.scatter([r[x] for r in front], [r[y] for r in front], s=120, facecolors="none", edgecolors="k")
        ax.legend(fontsize=8)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y.replace("_", " "))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_tradeoffs(
    rows: list[dict],
    out_dir: str | Path,
    batch_size: int = 32,
    score: str = "test_accuracy",
    label: str = "model",
) -> list[Path]:
    """accuracy_vs_latency.png and accuracy_vs_size.png, with the Pareto front marked."""
    return [
        plot_front(rows, f"latency_ms_b{batch_size}", f"CPU latency at batch {batch_size} (ms)", score,
                   Path(out_dir) / "accuracy_vs_latency.png", label),
        plot_front(rows, "size_mb", "size on disk (MB)", score, Path(out_dir) / "accuracy_vs_size.png", label),
    ]  # fmt: skip
