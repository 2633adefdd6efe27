"""Benchmark of the compress pipeline on a causal LM (SmolLM2-135M-Instruct on Austen, offline), against the
target of issues 22 and 30: a variant at least 2x faster in greedy tokens/s at batch 1 and 3x smaller than the
teacher whose test perplexity is within 25% of the teacher's and whose task scores are within their standard
error of the teacher's or better, each variant judged in the engine it runs in (GGUF in llama.cpp when its tools
are installed: ``make setup-llama-tools``; its perplexity is then compared with the teacher's over the same
chunks, the ``kept`` figures of the report).

    python scripts/bench_compress_llm.py                                  # 3 seeds of compress_default.yaml
    python scripts/bench_compress_llm.py --seeds 42 --out /tmp/bench_llm  # one seed

Each seed runs the whole pipeline of ``recipes/configs/smollm2/austen/compress_default.yaml`` (its share stage
left out) with that seed into ``<out>/seed<N>``: the teacher adapted, the search, the distillation, the
quantized variants, every artifact measured. The figures of each variant are medians over the seeds (the
search may choose a different student per seed; the rows are named by stage, as the report names them).

The rule, on validation: among the compressed variants (students, and the quantized forms of the student and of
the teacher), those whose median validation perplexity is <= 1.25x the teacher's (1 / kept_validation), whose median greedy speed-up is >= 2x and that are >= 3x
smaller on disk; of those, the fastest. The target is met when that variant's median test perplexity is
within 25% of the teacher's and each of its task accuracies is at least the teacher's minus the standard
error of their difference (the root of the sum of the two squared standard errors the harness reports).
Every row of every run stays in the JSON.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import yaml
from harness import ROOT, machine, write_benchmark

from hfcompress.evaluation import markdown_table
from hfcompress.pipeline import run_pipeline
from hfcompress.recipe import setup_logging_and_threads

CONFIG = ROOT / "recipes/configs/smollm2/austen/compress_default.yaml"
PERPLEXITY_WITHIN, MIN_SPEEDUP, MIN_SMALLER = 1.25, 2.0, 3.0
FIGURES = ("validation_perplexity", "test_perplexity", "test_bits_per_byte", "ood_perplexity", "kept_validation",
           "kept_test", "generate_tokens_per_s_b1", "speedup_generate", "prompt_tokens_per_s", "speedup_prompt",
           "size_mb", "size_ratio", "parameters", "peak_rss_mb", "model_peak_mb")  # fmt: skip


def seed_config(out: Path, seed: int) -> Path:
    """The shipped default with this seed and output folder, without its share stage."""
    config = yaml.safe_load(CONFIG.read_text())
    config["output_dir"], config["seed"] = str(out / f"seed{seed}"), seed
    config["stages"] = [s for s in config["stages"] if "share" not in s]
    path = out / f"seed{seed}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# written by scripts/bench_compress_llm.py from {CONFIG.relative_to(ROOT)}\n"
                    + yaml.safe_dump(config, sort_keys=False))  # fmt: skip
    return path


def median(rows: list[dict], key: str):
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def task_medians(rows: list[dict]) -> dict[str, dict[str, float]]:
    """task -> {acc, acc_stderr, ...}: the median of each figure over the seeds."""
    tasks: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        for task, metrics in (row.get("tasks") or {}).items():
            for metric, value in metrics.items():
                tasks.setdefault(task, {}).setdefault(metric, []).append(value)
    return {task: {m: statistics.median(v) for m, v in metrics.items()} for task, metrics in tasks.items()}


def variant_table(runs: list[dict]) -> list[dict]:
    by_name: dict[str, list[dict]] = {}
    for run in runs:
        for row in run["report"]["results"]:
            if row["stage"] != "candidate":
                by_name.setdefault(row["model"], []).append(row)
    table = []
    for name, rows in by_name.items():
        entry = {"variant": name, "stage": rows[0]["stage"], "seeds": len(rows), "engine": rows[0].get("engine")}
        entry |= {key: median(rows, key) for key in FIGURES}
        entry["tasks"] = task_medians(rows)
        entry["test_perplexity_per_seed"] = [round(r["test_perplexity"], 3) for r in rows]
        entry["speedup_generate_per_seed"] = [round(r["speedup_generate"], 3) for r in rows]
        table.append(entry)
    return table


def task_verdicts(variant: dict, teacher: dict) -> list[dict]:
    """Per task accuracy: the variant's, the teacher's, the standard error of the difference, within or not."""
    verdicts = []
    for task, metrics in teacher["tasks"].items():
        mine = variant["tasks"].get(task)
        if "acc" not in metrics:
            continue
        if not mine or "acc" not in mine:
            verdicts.append({"task": task, "teacher_acc": metrics["acc"], "acc": None, "within": False})
            continue
        se = math.sqrt(mine.get("acc_stderr", 0.0) ** 2 + metrics.get("acc_stderr", 0.0) ** 2)
        verdicts.append({"task": task, "acc": mine["acc"], "teacher_acc": metrics["acc"], "difference_se": se,
                         "within": mine["acc"] >= metrics["acc"] - se})  # fmt: skip
    return verdicts


def summary(table: list[dict]) -> dict:
    teacher = next(r for r in table if r["variant"] == "teacher")
    rule = (f"among compressed variants whose median validation perplexity is <= {PERPLEXITY_WITHIN:g}x the "
            f"teacher's, whose median greedy speed-up at batch 1 is >= {MIN_SPEEDUP:g}x and that are >= "
            f"{MIN_SMALLER:g}x smaller on disk, the fastest (median greedy tokens/s)")  # fmt: skip
    eligible = [r for r in table if r["stage"] != "teacher" and 1 / r["kept_validation"] <= PERPLEXITY_WITHIN
                and r["speedup_generate"] >= MIN_SPEEDUP and r["size_ratio"] >= MIN_SMALLER]  # fmt: skip
    chosen = max(eligible, key=lambda r: r["speedup_generate"]) if eligible else None
    result = {"rule": rule, "chosen": chosen and chosen["variant"], "met": False}
    if chosen is None:
        closest = [r for r in table if r["stage"] != "teacher"]
        result["why"] = "no variant meets the validation rule: " + "; ".join(
            f"{r['variant']}: validation ppl {1 / r['kept_validation']:.2f}x "
            f"the teacher's, {r['speedup_generate']:.2f}x faster, {r['size_ratio']:.2f}x smaller"
            for r in closest
        )
        return result
    tasks = task_verdicts(chosen, teacher)
    test_ratio = 1 / chosen["kept_test"]  # against the teacher over the same windows
    result |= {"test_perplexity_ratio": test_ratio, "tasks": tasks,
               "met": test_ratio <= PERPLEXITY_WITHIN and all(t["within"] for t in tasks)}  # fmt: skip
    return result


def render(data: dict) -> str:
    s = data["summary"]
    verdict = "**met**" if s["met"] else "**missed**"
    lines = [
        "# compress pipeline, causal LM: SmolLM2-135M-Instruct on Austen",
        "",
        f"{len(data['seeds'])} seeds ({', '.join(map(str, data['seeds']))}) of `{data['config']}`; medians. "
        f"{data['machine']['torch_threads']} CPU threads.",
        "",
        f"Target {verdict}. Rule (validation): {s['rule']}. Chosen: {s['chosen'] or 'none'}"
        + (f"; {s['why']}." if s.get("why") else ".")
        + (f" Its test perplexity is {s['test_perplexity_ratio']:.3f}x the teacher's." if "test_perplexity_ratio" in s else ""),
        "",
        markdown_table(data["variants"], [
            ("variant", "variant"), ("engine", "engine"), ("parameters", "parameters"), ("size_mb", "MB"),
            ("size_ratio", "x smaller"),
            ("validation_perplexity", "val ppl"), ("test_perplexity", "test ppl"), ("test_bits_per_byte", "test bpb"),
            ("ood_perplexity", "Hamlet ppl"), ("kept_test", "kept (test)"),
            ("generate_tokens_per_s_b1", "generate tok/s b1"), ("speedup_generate", "generate speed-up"),
            ("prompt_tokens_per_s", "prompt tok/s"), ("speedup_prompt", "prompt speed-up"),
            ("peak_rss_mb", "peak RSS (MB)"), ("test_perplexity_per_seed", "test ppl per seed"),
        ]),  # fmt: skip
    ]
    in_llama_cpp = [r["variant"] for r in data["variants"] if r.get("engine") == "llama.cpp"]
    if in_llama_cpp:
        lines += ["", f"Measured in llama.cpp: {', '.join(in_llama_cpp)}: their perplexity is llama-perplexity's "
                  "over chunks of the block size (each chunk's second half scored), not the strided windows of the "
                  "other rows, and their kept figures divide by the teacher's perplexity over those same chunks; "
                  "their speeds are llama-bench's at batch 1 (the others' prompt figure is at batch 8)."]  # fmt: skip
    task_rows = []
    for row in data["variants"]:
        cells = {"variant": row["variant"]}
        for task, metrics in row["tasks"].items():
            if "acc" in metrics:
                cells[task] = f"{metrics['acc']:.3f} ± {metrics.get('acc_stderr', 0):.3f}"
        task_rows.append(cells)
    names = sorted({k for r in task_rows for k in r if k != "variant"})
    if names:
        lines += ["", "Task accuracy (lm-evaluation-harness; median over seeds ± median standard error):", "",
                  markdown_table(task_rows, [("variant", "variant"), *((n, n) for n in names)])]  # fmt: skip
    if s.get("tasks"):
        lines += ["", "Task verdicts of the chosen variant:", "",
                  markdown_table(s["tasks"], [("task", "task"), ("acc", "acc"), ("teacher_acc", "teacher acc"),
                                              ("difference_se", "s.e. of the difference"), ("within", "within")])]  # fmt: skip
    for run in data["runs"]:
        search = run["report"]["search"]
        lines += ["", f"Seed {run['seed']}: search chose {search['chosen']} ({search['rule']}).", "",
                  markdown_table(search["candidates"], [
                      ("candidate", "candidate"), ("parameters", "parameters"), ("latency_ms", "ms per token"),
                      ("speedup", "speed-up"), ("within_budget", "within budget"),
                      ("validation_perplexity", "proxy val ppl"), ("within_noise_of_best", "within noise")])]  # fmt: skip
    return "\n".join(lines) + "\n"


def docs_block(data: dict) -> str:
    """``render`` without its title, and the command that reproduces it: docs/benchmarks.md's block."""
    return render(data).split("\n", 2)[2].lstrip("\n") + "\n`python scripts/bench_compress_llm.py`\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--out", default=str(ROOT / "scripts/results/compress_llm"))
    args = parser.parse_args(argv)
    setup_logging_and_threads()
    out, seeds = Path(args.out), [int(s) for s in args.seeds.split(",")]
    runs = []
    for seed in seeds:
        report = run_pipeline(seed_config(out / "work", seed))
        runs.append({"seed": seed, "report": report})
    table = variant_table(runs)
    data = {"config": str(CONFIG.relative_to(ROOT)), "seeds": seeds, "machine": machine(), "variants": table,
            "summary": summary(table), "runs": runs}  # fmt: skip
    write_benchmark(out, "compress_llm_benchmark", data, render)
    print(render(data))


if __name__ == "__main__":
    sys.exit(main())
