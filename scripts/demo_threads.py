"""The one-off measurement of ``make demo`` before and after the recipes set PyTorch's threads to the physical
cores (two runs back to back on one machine, recorded by hand in scripts/results/demo_threads/): its table."""

from __future__ import annotations

from harness import fmt, table


def render(data: dict, before: dict, after: dict) -> str:
    """The table of ``data`` (demo_timing.json) and the two runs' reports (``data["reports"]`` names them)."""
    rows = []
    for label, seconds in data["seconds"].items():
        report = before if label.startswith("before") else after
        teacher, student = report["results"][0], report["results"][1]
        threads = report.get("threads", {}).get("torch_threads", 1)
        rows.append(
            {
                "run": label,
                "threads": threads,
                "seconds": seconds,
                "teacher_b1": teacher["latency_ms_b1"],
                "teacher_b32": teacher["latency_ms_b32"],
                "student_test": student["test_accuracy"],
                "samples": report["train_samples_per_second"],
            }
        )
    columns = [
        ("run", "run", str),
        ("threads", "PyTorch threads", fmt),
        ("seconds", "wall time (s)", fmt),
        ("samples", "student training samples/s", fmt),
        ("teacher_b1", "teacher b1 ms", fmt),
        ("teacher_b32", "teacher b32 ms", fmt),
        ("student_test", "student test acc", fmt),
    ]
    return (
        table(rows, columns)
        + f"\nThe main job ran {data['speedup']:.2f}x faster (one run each, back to back).\n"
    )
