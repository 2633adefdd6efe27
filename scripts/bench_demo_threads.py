"""Benchmark: wall time of the main job (`make demo`'s launch line) with one CPU thread, which is what
`accelerate launch` gives a script on a machine without GPUs, against the recipes' default (physical cores).

    python scripts/bench_demo_threads.py              # one pair, about 12 min on 2 cores
    python scripts/bench_demo_threads.py --pairs 3    # medians of three pairs

Each run is the exact command `make demo` launches, in a fresh output folder (so the teacher is fine-tuned
every time), with HFCOMPRESS_NUM_THREADS=1 (one thread, as before hfcompress set threads itself) or unset;
the two settings alternate so machine noise hits both alike. Writes <out>/demo_threads.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_setup import ROOT, machine

from hfcompress.evaluation import markdown_table, write_report

LAUNCH = [
    "-m",
    "accelerate.commands.launch",
    "--num_processes",
    "1",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
    "recipes/distill_bert.py",
]


def run(threads: str | None, out: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("HFCOMPRESS_NUM_THREADS", None)
    env.pop("OMP_NUM_THREADS", None)
    if threads:
        env["HFCOMPRESS_NUM_THREADS"] = threads
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, *LAUNCH, "--output_dir", str(out)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"the demo failed:\n{result.stderr[-2000:]}")
    report = json.loads((out / "report.json").read_text())
    return {
        "seconds": seconds,
        "torch_threads": report["threads"]["torch_threads"],
        "train_samples_per_second": report["train_samples_per_second"],
        "teacher_latency_ms_b1": report["results"][0]["latency_ms_b1"],
        "teacher_latency_ms_b32": report["results"][0]["latency_ms_b32"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1)
    parser.add_argument("--out", default="scripts/results/demo_threads")
    opts = parser.parse_args()
    settings = {"1 thread (accelerate's default)": "1", "physical cores (hfcompress default)": None}
    runs = {name: [] for name in settings}
    with tempfile.TemporaryDirectory() as tmp:
        for pair in range(opts.pairs):
            for name, threads in settings.items():
                runs[name].append(run(threads, Path(tmp) / f"{pair}-{threads or 'default'}"))
    rows = [
        {"setting": name, **{k: statistics.median(r[k] for r in values) for k in values[0]}}
        for name, values in runs.items()
    ]
    one, default = rows
    speedup = one["seconds"] / default["seconds"]
    result = {
        "benchmark": "demo_threads",
        "command": " ".join(["python", *sys.argv]),
        "pairs": opts.pairs,
        "machine": machine(),
        "rows": rows,
        "runs": runs,
        "wall_time_speedup": speedup,
    }
    columns = [
        ("setting", "setting"),
        ("torch_threads", "PyTorch threads"),
        ("seconds", "wall time (s)"),
        ("train_samples_per_second", "student training samples/s"),
        ("teacher_latency_ms_b1", "teacher b1 ms"),
        ("teacher_latency_ms_b32", "teacher b32 ms"),
    ]
    markdown = (
        f"# `make demo` wall time by CPU threads\n\n`{result['command']}`; medians of {opts.pairs} "
        f"alternating pair(s).\n\n"
        + markdown_table(rows, columns)
        + f"\nThe default is {speedup:.2f}x faster.\n"
    )
    write_report(opts.out, "demo_threads", result, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
