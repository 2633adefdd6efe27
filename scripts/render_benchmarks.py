"""Generate the benchmark tables in docs/benchmarks.md from the committed JSON under scripts/results/.

    python scripts/render_benchmarks.py           # rewrite every generated block in docs/benchmarks.md
    python scripts/render_benchmarks.py --check   # exit 1 if a committed block differs from its JSON

docs/benchmarks.md holds prose and blocks ``<!-- generated: NAME -->`` ... ``<!-- end generated -->``; each
block is rendered from one results file by a function below, so tables (and the figures in the sentences
these functions write) are never copied by hand. tests/test_docs.py runs the check.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "scripts" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)


def load(relative: str) -> dict:
    return json.loads((RESULTS / relative).read_text())


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 1 or value == 0 else f"{value:.4f}"
    return str(value)


def points(value) -> str:
    return "-" if value is None else f"{value:+.2f}"


def table(rows: list[dict], columns: list[tuple[str, str, callable]]) -> str:
    """Markdown table; ``columns`` is [(key, header, formatter)]."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(f(row.get(k)) for k, _, f in columns) + " |")
    return "\n".join(lines) + "\n"


def threads_line(data: dict) -> str:
    machine = data.get("machine") or {}
    torch_threads = machine.get("torch_threads", machine.get("threads"))
    ort = machine.get("ort_intra_op_threads")
    has_onnx = any(str(r.get("model", "")).startswith("onnx") for r in data.get("results", []))
    ort_text = ""
    if has_onnx:
        ort_text = (
            f", ONNX Runtime {ort} intra-op threads"
            if ort
            else ", ONNX Runtime threads not pinned (its default)"
        )
    return f"Threads: PyTorch {torch_threads}{ort_text}.\n" if torch_threads else ""


def headline(data: dict) -> str:
    """The sentence that says which row a written rule chose on validation, and whether the target is met."""
    target = data.get("target") or {}
    selection = target.get("selection")
    if not selection:
        return (
            "\nThis run has no validation figures, so no row can be chosen from it: its rows are kept as "
            "measured, and none of them is a headline.\n"
        )
    chosen = selection["chosen"] or "none"
    figures = (
        f": {points(target['chosen_test_delta_points'])} test points at {target['chosen_speedup_b32']:.2f}x "
        "(batch 32)"
        if selection["chosen"]
        else ""
    )
    verdict = "met" if target["met"] else "not met"
    return f"\nRule (validation split): {selection['rule']}. Chosen: **{chosen}**{figures}. Target ({target['target']}): **{verdict}**.\n"


def distill(relative: str) -> str:
    data = load(relative)
    rows = data["rows"]
    acc = "accuracy" if "accuracy" in rows[0] else "test_accuracy"
    columns = [("model", "model", str)]
    if "validation_accuracy" in rows[0]:
        columns.append(("validation_accuracy", "validation acc", fmt))
    columns += [
        (acc, "test acc", fmt),
        ("f1" if "f1" in rows[0] else "test_f1", "test F1", fmt),
        ("parameters", "parameters", fmt),
        ("size_mb", "size MB", fmt),
        ("latency_ms_b1", "b1 ms", fmt),
        ("latency_ms_b32", "b32 ms", fmt),
    ]
    per_seed = []
    for name, runs in data["runs"].items():
        per_seed.append({"arm": name.replace("_", " "), **{str(r["seed"]): r["test_accuracy"] for r in runs}})
    seeds = [str(r["seed"]) for r in next(iter(data["runs"].values()))]
    latency_note = (
        "Latency: teacher and every trained student interleaved.\n"
        if "teacher" in data
        else "Latency: measured on the untrained 3-layer student (same shape as the trained ones), not "
        "interleaved with the teacher (the script now does both; this run predates that).\n"
    )
    return (
        table(rows, columns)
        + "\nTest accuracy per seed:\n\n"
        + table(per_seed, [("arm", "arm", str)] + [(s, f"seed {s}", fmt) for s in seeds])
        + "\n"
        + latency_note
    )


def prune(relative: str, with_headline: bool = True) -> str:
    data = load(relative)
    rows = data["summary"]
    columns = [("model", "variant", str)]
    if "validation_accuracy" in rows[-1]:
        columns.append(("validation_accuracy", "val acc", fmt))
    columns += [
        ("test_accuracy", "test acc", fmt),
        ("accuracy_delta_points", "Δ test (pts)", points),
        ("parameters", "params", fmt),
        ("size_mb", "size MB", fmt),
        ("gzip_mb", "gzip MB", fmt),
        ("speedup_b1", "speed-up b1", fmt),
        ("speedup_b32", "speed-up b32", fmt),
    ]
    seeds = ", ".join(map(str, data["seeds"]))
    seeds = f"Seeds {seeds} (medians)" if len(data["seeds"]) > 1 else f"Seed {seeds}"
    return (
        f"{seeds}; recovery {data['recovery_epochs']:g} epochs; {data['test_examples']} test "
        f"snippets. "
        + threads_line(data)
        + "\n"
        + table(rows, columns)
        + (headline(data) if with_headline else "")
    )


def prune_seeds(selection_file: str, seeds_file: str) -> str:
    """The chosen variant's further seeds, and its median over every seed it ran (the selection run's seed
    included): the target is judged on that median."""
    first, more = load(selection_file), load(seeds_file)
    chosen = first["target"]["selection"]["chosen"]
    deltas = {}
    speedups = {}
    for data in (first, more):
        for run in data["runs"]:
            if run.get("variant") == chosen:
                deltas[run["seed"]] = run["accuracy_delta_points"]
                speedups[run["seed"]] = run["speedup_b32"]
    median_delta = statistics.median(deltas.values())
    median_speedup = statistics.median(speedups.values())
    met = median_delta >= -1.0 and median_speedup >= 1.8  # the target bench_prune.py states
    per_seed = ", ".join(f"seed {s}: {points(d)} at {speedups[s]:.2f}x" for s, d in sorted(deltas.items()))
    return (
        prune(seeds_file, with_headline=False)
        + f"\n{chosen}, every seed against the teacher's test accuracy ({per_seed}): median "
        f"**{points(median_delta)} points at {median_speedup:.2f}x** (batch 32). Target on the median of "
        f"{len(deltas)} seeds: **{'met' if met else 'not met'}**.\n"
    )


def quantize(relative: str) -> str:
    data = load(relative)
    rows = data["results"]
    columns = [("model", "method", str)]
    if "validation_accuracy" in rows[0]:
        columns += [("validation_accuracy", "val acc", fmt)]
    columns += [
        ("test_accuracy", "test acc", fmt),
        ("accuracy_delta_points", "Δ test (pts)", points),
        ("size_mb", "size MB", fmt),
        ("peak_rss_mb", "peak RSS MB", fmt),
        ("latency_ms_b1", "b1 ms", fmt),
        ("speedup_b1", "speed-up b1", fmt),
        ("latency_ms_b32", "b32 ms", fmt),
        ("speedup_b32", "speed-up b32", fmt),
    ]
    if "ort_intra_op_threads" in rows[0]:
        columns.append(("ort_intra_op_threads", "ORT threads", fmt))
    return threads_line(data) + "\n" + table(rows, columns) + headline(data)


def qat(relative: str) -> str:
    data = load(relative)
    teacher = data["teacher_fp32_accuracy"]
    rows = []
    deltas = []
    for row in data["results"]:
        per_seed = [float(x) for x in str(row["int8_per_seed"]).split(",")]
        seed_deltas = [100 * (a - teacher) for a in per_seed]
        if row["variant"].startswith("QAT"):
            deltas += seed_deltas
        rows.append(
            {
                **row,
                "int8_vs_own_fp32": 100 * (row["int8_accuracy"] - row["fp32_accuracy"]),
                "per_seed": ", ".join(points(d) for d in seed_deltas) if row["seeds"] > 1 else "",
            }
        )
    columns = [
        ("variant", "variant", str),
        ("fp32_accuracy", "fp32 acc", fmt),
        ("int8_accuracy", "int8 acc", fmt),
        ("int8_delta_points", "int8 Δ vs teacher fp32 (pts)", points),
        ("int8_vs_own_fp32", "int8 Δ vs its own fp32 (pts)", points),
        ("per_seed", "int8 Δ vs teacher, per seed", str),
    ]
    qat_rows = [r for r in rows if r["variant"].startswith("QAT")]
    own = ", ".join(f"{points(r['int8_vs_own_fp32'])} ({r['variant'].split(' +')[0]})" for r in qat_rows)
    sentence = (
        f"\nAfter QAT, int8 against the same model in fp32 (medians): {own}. Per seed, the QAT models' int8 "
        f"accuracy lies between {points(min(deltas))} and {points(max(deltas))} points of the teacher's fp32 "
        f"(median {points(statistics.median(deltas))}).\n"
    )
    return (
        f"Teacher fp32 test accuracy {fmt(teacher)}; {data['test_examples']} test snippets.\n\n"
        + table(rows, columns)
        + sentence
    )


def demo_threads(relative: str) -> str:
    data = load(relative)
    folder = Path(relative).parent
    rows = []
    for label, seconds in data["seconds"].items():
        report = load(str(folder / data["reports"]["before" if label.startswith("before") else "after"]))
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


def compress(relative: str) -> str:
    """Per route: the verdict, the rule and the variants' medians; then every artifact of every run."""
    data = load(relative)
    parts = []
    for summary in data["summary"]:
        verdict = "met" if summary["met"] else "not met"
        parts.append(
            f"**{summary['route'].upper()}** ({summary['target']}): **{verdict}**. Rule (validation): "
            f"{summary['rule']}; chosen: {summary['chosen'] or 'none'}.\n\n"
        )
        parts.append(
            table(
                summary["variants"],
                [
                    ("variant", "variant", str),
                    ("kept_validation", "kept (val, median)", fmt),
                    ("kept_test", "kept (test, median)", fmt),
                    ("test_accuracy", "test acc", fmt),
                    ("speedup_b32", "speed-up b32", fmt),
                    ("speedup_b1", "speed-up b1", fmt),
                    ("size_ratio", "x smaller", fmt),
                    ("size_mb", "MB", fmt),
                    ("kept_test_per_seed", "kept (test) per seed", lambda v: ", ".join(map(str, v))),
                    ("speedup_b32_per_seed", "b32 speed-up per seed", lambda v: ", ".join(map(str, v))),
                ],
            )
            + "\n"
        )
    rows = []
    for route, runs in data["runs"].items():
        for run in runs:
            report = run["report"]
            for row in report["results"]:
                rows.append(
                    {"route": route, "seed": run["seed"], "chosen": row["model"] == report["chosen"], **row}
                )
    parts.append(
        "Every artifact of every run (the search candidates are the proxies, trained for the same few steps):\n\n"
        + table(
            rows,
            [
                ("route", "route", str),
                ("seed", "seed", str),
                ("model", "artifact", str),
                ("validation_accuracy", "val acc", fmt),
                ("test_accuracy", "test acc", fmt),
                ("parameters", "parameters", fmt),
                ("size_mb", "MB", fmt),
                ("gzip_size_mb", "gzip MB", fmt),
                ("latency_ms_b1", "b1 ms", fmt),
                ("latency_ms_b32", "b32 ms", fmt),
                ("speedup_b32", "speed-up b32", fmt),
                ("peak_rss_mb", "peak RSS MB", fmt),
                ("chosen", "run's rule chose it", fmt),
            ],
        )
    )
    searches = []
    for route, runs in data["runs"].items():
        search = runs[0]["report"]["search"]
        for row in search["candidates"]:
            searches.append({"route": route, **row, "chosen": row["candidate"] == search["chosen"]})
    first = next(iter(data["runs"].values()))[0]["report"]["search"]
    columns = [
        ("route", "route", str),
        ("candidate", "candidate", str),
        ("parameters", "parameters", fmt),
        ("latency_ms", "b32 ms", fmt),
        ("speedup", "speed-up (fp32)", fmt),
        ("within_budget", "within budget", fmt),
        ("validation_accuracy", "proxy val acc", fmt),
    ]
    if any("share_below_best" in row for row in searches):  # runs with the within-noise rule
        columns += [("validation_accuracy_se", "bootstrap s.e.", fmt), ("share_below_best", "draws below best", fmt),
                    ("within_noise_of_best", "within noise", fmt), ("chosen", "chosen", fmt)]  # fmt: skip
    parts.append(
        "\nThe searches (seed 42; later seeds distil the structure chosen here). The rule, as the first route's "
        f"report words it: {first['rule']}.\n\n" + table(searches, columns)
    )
    return "".join(parts)


def distill_pair(relative: str) -> str:
    """P2: the verdict and its rule, every arm (medians and per seed), the teacher's figures, throughput."""
    data = load(relative)
    p2 = data["p2"]

    def per_seed(formatter):
        return lambda values: "-" if values is None else ", ".join(formatter(v) for v in values)

    text = (
        f"**P2** ({p2['target']}): **{'met' if p2['met'] else 'not met'}**. Rule (validation): {p2['rule']}; "
        f"chosen: `{p2['chosen']}`; its test points over `l6-plain` per seed: "
        f"{', '.join(points(d) for d in p2['test_delta_points_per_seed'])}.\n\n"
        f"{data['train_examples']:,} labelled training examples, {data['validation_examples']:,} validation, "
        f"{data['test_examples']:,} test; every arm {data['steps']} optimizer steps"
        + (
            f"; `l6-augment` adds {data['unlabelled_rows']:,} unlabelled rows ({data['augment']['rows']:,} "
            f"augmented texts, method `{data['augment']['method_used']}`)"
            if data.get("augment")
            else ""
        )
        + f". Seeds {data['seeds']}"
        + (
            f" (l6-hidden, l6-augment and l3 arms: {', '.join(map(str, data['extra_seeds']))})"
            if data.get("extra_seeds")
            else ""
        )
        + f". {threads_line(data)}\n"
    )
    text += table(
        data["rows"],
        [
            ("model", "arm", str),
            ("validation_accuracy", "val acc (median)", fmt),
            ("test_accuracy", "test acc (median)", fmt),
            ("test_per_seed", "test acc per seed", per_seed(lambda v: f"{v:.4f}")),
            ("delta_vs_l6_plain", "test points vs l6-plain, per seed", per_seed(points)),
            ("kept_pct", "% of teacher's test acc", fmt),
            ("parameters", "parameters", fmt),
            ("size_mb", "MB", fmt),
            ("latency_ms_b1", "b1 ms", fmt),
            ("latency_ms_b32", "b32 ms", fmt),
            ("speedup_b32", "speed-up b32", fmt),
        ],
    )
    speed = data["throughput_median"]
    text += (
        "\nTraining throughput of MiniLM-L6, cached teacher logits (median of interleaved runs):\n\n"
        + table(
            [{"trainer": k, "samples_per_s": v, "vs_plain": v / speed["plain"]} for k, v in speed.items()],
            [
                ("trainer", "trainer", str),
                ("samples_per_s", "samples/s", fmt),
                ("vs_plain", "x plain Trainer", fmt),
            ],
        )
    )
    return text


def llm_memory(relative: str) -> str:
    data = load(relative)
    text = table(
        data["rows"],
        [("mode", "training step", fmt), ("peak_rss_mb", "peak RSS (MB)", lambda v: f"{v:,.0f}"),
         ("rss_before_mb", "RSS before the step (MB)", lambda v: f"{v:,.0f}"), ("seconds", "seconds", lambda v: f"{v:.0f}")],
    )  # fmt: skip
    eq = data["equality"]
    return text + (
        f"\nChunked KD adds **{data['kd_chunked_adds_mb']:,.0f} MB** over the plain LM step, unchunked KD "
        f"**{data['kd_unchunked_adds_mb']:,.0f} MB**: a ratio of {data['ratio']:.2f} (target at most 0.33: "
        f"**{'met' if data['met'] else 'not met'}**). On the real models (batch {eq['batch']} x {eq['seq']}, chunks "
        f"of {eq['chunk_size']} positions, T = 2, alpha 0.5) the loss differs by {eq['loss_abs_diff']:.1e} and the "
        f"largest gradient difference is {eq['grad_max_abs_diff']:.1e} (target 1e-5: "
        f"**{'met' if data['equality_met'] else 'not met'}**). {threads_line(data)}\n\n`{data['command']}`\n"
    )


def llm_recover(relative: str) -> str:
    data = load(relative)
    refs, med, runs = data["references"], data["medians"], data["runs"]
    rows = [{"model": k, "seeds": "-", **v} for k, v in refs.items()]
    for arm, m in med.items():
        per_seed = [r for r in runs.values() if r["arm"] == arm]
        rows.append({"model": arm, **m, "seeds": ", ".join(map(str, m["seeds"])), "parameters": per_seed[0]["parameters"],
                     "per_seed": " / ".join(f"{r['test_perplexity']:.2f}" for r in sorted(per_seed, key=lambda r: r["seed"]))})  # fmt: skip
    two = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    text = table(
        rows,
        [("model", "model / arm", fmt), ("seeds", "seeds", fmt), ("parameters", "parameters", lambda v: f"{v / 1e6:.1f}M"),
         ("validation_perplexity", "val ppl (median)", two), ("test_perplexity", "test ppl (median)", two),
         ("per_seed", "test ppl per seed", fmt), ("test_bits_per_byte", "test bits/byte", lambda v: f"{v:.3f}"),
         ("train_samples_per_second", "train samples/s", lambda v: "-" if v is None else f"{v:.3f}")],
    )  # fmt: skip
    s = data["settings"]
    text += (
        f"\nEvery arm: {s['train_tokens']:,} training tokens (blocks of {s['block']}, batch {s['batch']}, the same "
        f"steps), learning rate {s['learning_rate']}, seeds {s['seeds']}; the teacher was adapted on the first "
        f"{s['teacher_tokens']:,} training tokens. Perplexity: windows of {s['window']} tokens, stride {s['stride']}, "
        f"over the first {s['eval_tokens']:,} tokens of Persuasion (validation) and Pride and Prejudice (test). "
        f"{threads_line(data)}\n"
    )
    verdict = data["verdicts"].get("1_kd_vs_lm")
    if verdict:
        text += (
            f"\n**1. KD vs the LM loss** (median test perplexity): KD {verdict['kd_test_ppl']:.2f}, LM loss "
            f"{verdict['lm_test_ppl']:.2f}: KD is {verdict['kd_lower_by']:.1%} lower (target >= 5%), and "
            f"{verdict['kd_over_teacher']:.1%} over the adapted teacher's {verdict['teacher_test_ppl']:.2f} (target "
            f"within 15%): **{'met' if verdict['met'] else 'not met'}**.\n"
        )
    speeds = data.get("speeds")
    if speeds:
        text += "\n" + table(
            [{"model": k, **v} for k, v in speeds.items()],
            [("model", "model (seed 42)", fmt), ("generate_tokens_per_s_b1", "greedy tokens/s, batch 1", lambda v: f"{v:.1f}"),
             ("prompt_tokens_per_s", "prompt tokens/s, batch 8 x 256", lambda v: f"{v:.0f}")],
        )  # fmt: skip
    best = data["verdicts"].get("best_student")
    if best:
        text += f"\nQuantized student: `{best['arm']}` (rule: {best['rule']}).\n"
    return text + f"\n`{data['command']}`\n"


def llm_quantize(relative: str) -> str:
    data = load(relative)
    two = lambda v: f"{v:.2f}"  # noqa: E731
    text = table(
        data["rows"],
        [("variant", f"{data['student']}", fmt), ("size_mb", "MB", lambda v: f"{v:.0f}"),
         ("validation_perplexity", "val ppl", two), ("test_perplexity", "test ppl", two),
         ("test_bits_per_byte", "test bits/byte", lambda v: f"{v:.3f}"),
         ("generate_tokens_per_s_b1", "greedy tokens/s b1", lambda v: f"{v:.1f}"),
         ("prompt_tokens_per_s", "prompt tokens/s b8", lambda v: f"{v:.0f}")],
    )  # fmt: skip
    return text + f"\n{threads_line(data)}\n\n`{data['command']}`\n"


def llm_onpolicy(relative: str) -> str:
    data = load(relative)
    two = lambda v: f"{v:.2f}"  # noqa: E731
    text = table(
        data["rows"],
        [("lmbda", "lmbda", fmt), ("steps", "steps", fmt), ("seconds_per_step", "seconds per step", lambda v: f"{v:.1f}"),
         ("validation_perplexity", "val ppl", two), ("test_perplexity", "test ppl", two)],
    )  # fmt: skip
    return text + f"\n{threads_line(data)}\n\n`{data['command']}`\n"


def llm_chat(relative: str) -> str:
    data = load(relative)
    two = lambda v: f"{v:.2f}"  # noqa: E731
    rows = [{"model": name, "seed": "-", **row} for name, row in data["references"].items()]
    rows += [{"model": key.split("/")[0], "seed": key.split("/")[1], **row} for key, row in sorted(data["runs"].items())]
    text = table(
        rows,
        [("model", "model / arm", fmt), ("seed", "seed", fmt), ("parameters", "parameters", lambda v: "-" if v is None else f"{v / 1e6:.1f}M"),
         ("validation_perplexity", "val completion ppl", two), ("test_perplexity", "test completion ppl", two),
         ("train_seconds", "train s", lambda v: "-" if v is None else f"{v:.0f}")],
    )  # fmt: skip
    s, summary = data["settings"], data["summary"]
    seeds = sorted({key.split("/")[1] for key in data["runs"]})
    text += (
        f"\nSettings: the first {s['train_rows']} training prompts answered by the teacher (greedy, at most "
        f"{s['max_new_tokens']} new tokens; {s['train_tokens']:,} tokens with the chat template), batch {s['batch']}, "
        f"learning rate {s['lr']}, one epoch, the same steps in every arm; validation and test rows up to "
        f"{s['eval_tokens']:,} tokens each ({data['references']['teacher']['test_tokens']:,} completion tokens "
        f"scored on test). {threads_line(data)}"
    )
    text += f"\nTarget ({summary['target']}): **{'met' if summary['target_met'] else 'not met'}**.\n\n"
    for seed, value in summary["kd_vs_lm_reduction"].items():
        text += f"- seed {seed}: kd is {value['test']:.1%} lower than lm on test ({value['validation']:.1%} on validation)\n"
    command = data.get("command") or (
        f"python scripts/bench_llm_chat.py --seeds {','.join(seeds)} --train_rows {s['train_rows']} "
        f"--eval_tokens {s['eval_tokens']} --max_new_tokens {s['max_new_tokens']}"
    )
    return text + f"\n`{command}`\n"


def llm_formats(relative: str) -> str:
    """GGUF variants against their own fp32: perplexities, sizes, the targets."""
    data = load(relative)
    pct = lambda v: f"{v:+.2%}"  # noqa: E731
    text = table(
        data["rows"],
        [("variant", "variant", fmt), ("size_mb", "MB (10^6 bytes)", fmt), ("x_smaller", "x smaller", fmt),
         ("validation_perplexity", "val ppl", fmt), ("test_perplexity", "test ppl", fmt),
         ("validation_ppl_vs_fp32", "val vs fp32", pct), ("test_ppl_vs_fp32", "test vs fp32", pct),
         ("write_s", "write s", fmt)],
    )  # fmt: skip
    text += (
        f"\nModel: {data['model']}; perplexity over the first {data['eval_tokens']:,} tokens of each text, windows "
        f"of {data['window']}, stride {data['stride']}. {threads_line(data)}\n\n"
    )
    for t in data["targets"]:
        text += f"- {t['variant']}: {t['target']}: **{'met' if t['met'] else 'not met'}** ({t['test_ppl_vs_fp32']:+.2%})\n"
    if data.get("caveat"):
        text += f"\nCaveat: {data['caveat']}.\n"
    return text + f"\n`{data['command']}`\n"


def llm_onnx(relative: str) -> str:
    """The ONNX int8 ablation: every variant against fp32, the target and the rule that chose."""
    data = load(relative)
    pct = lambda v: f"{v:+.1%}" if abs(v) < 100 else f"{v:+.3g}x"  # noqa: E731
    text = table(
        data["rows"],
        [("variant", "variant", fmt), ("size_mb", "MB (10^6 bytes)", fmt), ("validation_perplexity", "val ppl", fmt),
         ("test_perplexity", "test ppl", fmt), ("validation_vs_fp32", "val vs fp32", pct),
         ("test_vs_fp32", "test vs fp32", pct), ("generate_tokens_per_s_b1", "generate tok/s b1", fmt),
         ("generate_speedup", "x fp32", fmt), ("prompt_tokens_per_s", "prompt tok/s b8", fmt)],
    )  # fmt: skip
    t = data["target"]
    text += (
        f"\nModel: {data['model']}; perplexity over the first {data['eval_tokens']:,} tokens, windows of "
        f"{data['window']}, stride {data['stride']}; speeds: the variants taking turns, median of {data['runs']} "
        f"rounds. {threads_line(data)}\n\nTarget ({t['target']}): **{'met' if t['met'] else 'not met'}**. Rule "
        f"(validation): {t['rule']}; chosen: {t['chosen'] or 'none'}.\n"
    )
    return text + f"\n`{data['command']}`\n"


def llm_compressed(relative: str) -> str:
    """GPTQ/AWQ/W8A8 (compressed-tensors) variants against their own fp32; the W4A16 target and its rule."""
    data = load(relative)
    pct = lambda v: f"{v:+.2%}"  # noqa: E731
    text = table(
        data["rows"],
        [("variant", "variant", fmt), ("size_mb", "MB (10^6 bytes)", fmt), ("x_smaller", "x smaller", fmt),
         ("validation_perplexity", "val ppl", fmt), ("test_perplexity", "test ppl", fmt),
         ("validation_ppl_vs_fp32", "val vs fp32", pct), ("test_ppl_vs_fp32", "test vs fp32", pct),
         ("generate_tokens_per_s_b1", "gen tok/s b1", fmt), ("prompt_tokens_per_s", "prompt tok/s b8", fmt),
         ("write_s", "write s", fmt)],
    )  # fmt: skip
    text += (
        f"\nModel: {data['model']}; group size {data['group_size']}; calibration: {data['calibration']}; perplexity "
        f"over the first {data['eval_tokens']:,} tokens of each text, windows of {data['window']}, stride "
        f"{data['stride']}; speeds through transformers on CPU, the variants taking turns, median of "
        f"{data['speed_runs']} rounds. {threads_line(data)}\n\n"
    )
    for t in data["targets"]:
        figure = f"; chosen {t['chosen']}: {t['test_ppl_vs_fp32']:+.2%} on test" if t["chosen"] else "; none qualifies"
        text += f"- {t['method']}: {t['target']}: **{'met' if t['met'] else 'not met'}** (rule: {t['rule']}{figure})\n"
    return text + f"\n`{data['command']}`\n"


def llm_llama_cpp(relative: str) -> str:
    """GGUF variants run in llama.cpp: perplexity from its logits, speeds against fp32 in transformers."""
    data = load(relative)
    pct = lambda v: f"{v:+.2%}"  # noqa: E731
    text = table(
        data["rows"],
        [("variant", "variant", fmt), ("runtime", "runs in", fmt), ("matrix_type", "matrices", fmt),
         ("embedding_type", "embedding", fmt), ("size_mb", "MB (10^6 bytes)", fmt),
         ("x_smaller", "x smaller", fmt), ("validation_perplexity", "val ppl", fmt),
         ("test_perplexity", "test ppl", fmt), ("validation_ppl_vs_fp32", "val vs fp32", pct),
         ("test_ppl_vs_fp32", "test vs fp32", pct), ("generate_tokens_per_s_b1", "gen tok/s b1", fmt),
         ("generate_vs_fp32", "gen x fp32", fmt), ("prompt_tokens_per_s_b1", "prompt tok/s b1", fmt),
         ("tokenizer_agrees", "same token ids", fmt)],
    )  # fmt: skip
    text += (
        f"\nModel: {data['model']}; llama-cpp-python {data['llama_cpp_python']}, {data['threads']} threads; "
        f"perplexity over the first {data['eval_tokens']:,} tokens of each text, windows of {data['window']}, "
        f"stride {data['stride']}; speeds: the variants taking turns, median of {data['runs']} rounds. "
        f"{threads_line(data)}\n\n"
    )
    for t in data["targets"]:
        text += f"- {t['variant']}: {t['target']}: **{'met' if t['met'] else 'not met'}** ({t['test_ppl_vs_fp32']:+.2%})\n"
    return text + f"\n`{data['command']}`\n"


def compress_llm(relative: str) -> str:
    """The compress pipeline on a causal LM: the bench script's own markdown, without its title."""
    from bench_compress_llm import render as render_compress_llm

    text = render_compress_llm(load(relative))
    return text.split("\n", 2)[2].lstrip("\n") + "\n`python scripts/bench_compress_llm.py`\n"


BLOCKS = {
    "demo-threads": lambda: demo_threads("demo_threads/demo_timing.json"),
    "distill-logits": lambda: distill("distill_benchmark.json"),
    "distill-hidden": lambda: distill("hidden/distill_benchmark.json"),
    "prune-1epoch": lambda: prune("pruning/prune_benchmark.json"),
    "prune-hidden": lambda: prune("pruning_hidden/prune_benchmark.json"),
    "prune-hidden-seeds": lambda: prune("pruning_hidden_seeds/prune_benchmark.json"),
    "prune-spread": lambda: prune("pruning_spread/prune_benchmark.json"),
    "prune-selection": lambda: prune("pruning_selection/prune_benchmark.json"),
    "prune-selection-seeds": lambda: prune_seeds(
        "pruning_selection/prune_benchmark.json", "pruning_selection_seeds/prune_benchmark.json"
    ),
    "quantize": lambda: quantize("quantization/quantize_benchmark.json"),
    "quantize-torchao": lambda: quantize("quantization_torchao/quantize_benchmark.json"),
    "quantize-repeat": lambda: quantize("quantization_repeat/quantize_benchmark.json"),
    "qat": lambda: qat("qat/qat_benchmark.json"),
    "compress": lambda: compress("compress/compress_benchmark.json"),
    "compress-previous-rule": lambda: compress("compress/previous_rule/compress_benchmark.json"),
    "compress-llm": lambda: compress_llm("compress_llm/compress_llm_benchmark.json"),
    "distill-pair": lambda: distill_pair("distill_pair/distill_pair_benchmark.json"),
    "llm-memory": lambda: llm_memory("llm/memory.json"),
    "llm-recover": lambda: llm_recover("llm/recover.json"),
    "llm-quantize": lambda: llm_quantize("llm/quantize.json"),
    "llm-onpolicy": lambda: llm_onpolicy("llm/onpolicy.json"),
    "llm-chat": lambda: llm_chat("llm_chat/chat.json"),
    "llm-formats": lambda: llm_formats("llm_formats/smollm2-135m-instruct.json"),
    "llm-formats-student": lambda: llm_formats("llm_formats/student.json"),
    "llm-onnx": lambda: llm_onnx("llm_onnx/student.json"),
    "llm-onnx-layers": lambda: llm_onnx("llm_onnx/student-layers.json"),
    "llm-compressed-student": lambda: llm_compressed("llm_compressed/student.json"),
    "llm-compressed": lambda: llm_compressed("llm_compressed/smollm2-135m-instruct.json"),
    "llm-llama-cpp-student": lambda: llm_llama_cpp("llm_llama_cpp/student.json"),
    "llm-llama-cpp": lambda: llm_llama_cpp("llm_llama_cpp/smollm2-135m-instruct.json"),
}


def render(text: str) -> str:
    def replace(match):
        name = match["name"]
        if name not in BLOCKS:
            raise SystemExit(
                f"docs/benchmarks.md names an unknown block {name!r}; known: {', '.join(BLOCKS)}"
            )
        return match.group(1) + BLOCKS[name]() + match.group(4)

    return BLOCK.sub(replace, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="fail if a committed block differs from its JSON"
    )
    opts = parser.parse_args()
    text = DOC.read_text()
    rendered = render(text)
    if opts.check:
        if rendered != text:
            stale = [
                m["name"]
                for m, n in zip(BLOCK.finditer(text), BLOCK.finditer(rendered))
                if m["body"] != n["body"]
            ]
            print(
                f"docs/benchmarks.md is out of date with scripts/results for: {', '.join(stale)}",
                file=sys.stderr,
            )
            return 1
        return 0
    DOC.write_text(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
