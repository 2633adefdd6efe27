"""``evaluate``: every artifact of the run measured side by side (metrics on validation and test, size, memory,
latency), the variant to ship chosen on the validation split by a stated rule, the search's budget re-checked
on it, ``report.json``/``report.md`` and plots."""

from __future__ import annotations

import logging
from pathlib import Path

from ...configs import parse_int_list
from ...evaluation import markdown_table, write_report
from ..config import EvaluateConfig
from .base import ReportOutput, StageSpec

logger = logging.getLogger(__name__)


def collect_artifacts(ctx, folder: Path) -> dict[str, tuple[str, str]]:
    """name -> (folder, kind) for every model the run made, in run order: the teacher, then what each stage
    declares (its ``StageSpec.artifacts``): trained search candidates, student, pruned model, quantized
    variants."""
    from . import REGISTRY

    artifacts = {"teacher": (str(ctx.teacher_folder(folder / "teacher")), "teacher")}
    for name, output in ctx.outputs.items():
        if REGISTRY[name].artifacts is not None:
            artifacts.update(REGISTRY[name].artifacts(output))
    return artifacts


def choose(rows: list[dict], config: EvaluateConfig, batch_size: int | None, metric: str = "accuracy",
           cost: tuple[str, str] | None = None) -> tuple[str | None, str]:  # fmt: skip
    """The variant to ship: among compressed variants (not the teacher, not search proxies) that keep ``min_kept``
    of the teacher's validation ``metric`` (>= min_kept x the teacher's; perplexity, lower is better: <= the
    teacher's / min_kept), the fastest at ``batch_size`` (or the smallest; ``cost``: another (column, words)
    for the fastest). Returns (name or None, the rule in words)."""
    from ..config import LOWER_IS_BETTER

    score, lower = f"validation_{metric}", metric in LOWER_IS_BETTER
    if lower:
        bound = rows[0][score] / config.min_kept
        keeps, within = f"is <= the teacher's / {config.min_kept:g} ({bound:.4f})", lambda v: v <= bound
    else:
        bound = config.min_kept * rows[0][score]
        keeps, within = f"is >= {config.min_kept:g} x the teacher's ({bound:.4f})", lambda v: v >= bound
    if config.objective == "latency":
        cost, best = cost or (f"latency_ms_b{batch_size}", f"the fastest at batch {batch_size}")
    else:
        cost, best = "size_mb", "the smallest on disk"
    rule = (
        f"among compressed variants whose validation {metric} {keeps}, {best} (chosen on the validation split; "
        "test figures only reported)"
    )
    eligible = [r for r in rows[1:] if r["stage"] != "candidate" and r.get(score) is not None and within(r[score])]
    if not eligible:
        return None, rule
    return min(eligible, key=lambda r: (r[cost], -r[score] if not lower else r[score]))["model"], rule


def add_kept(row: dict, teacher: dict, metric: str) -> None:
    """``kept_test`` and ``kept_validation``: the share of the teacher's ``metric`` the row keeps (its score / the
    teacher's; for perplexity, lower is better: the teacher's / its own). None where a figure is missing or 0."""
    from ..config import LOWER_IS_BETTER

    for split in ("test", "validation"):
        mine, base = row.get(f"{split}_{metric}"), teacher.get(f"{split}_{metric}")
        if metric in LOWER_IS_BETTER:
            mine, base = base, mine
        row[f"kept_{split}"] = mine / base if mine is not None and base else None


def budget_check(rows: list[dict], chosen: str | None, search, lm: bool = False) -> dict | None:
    """The search's budget re-checked on the shipped variant as the evaluate stage measured it (its latency and
    speed-up at the budget's batch size, or per token for a causal LM; its size on disk). None without a search
    stage or a chosen variant."""
    from ..search import budget_text, speed_text

    if search is None or chosen is None:
        return None
    row, batch = next(r for r in rows if r["model"] == chosen), search.budget_batch_size
    if lm:
        figures = {"latency_ms": row[f"{search.speed}_ms_per_token"], "speedup": row[f"speedup_{search.speed}"]}
    else:
        figures = {"latency_ms": row[f"latency_ms_b{batch}"], "speedup": row[f"speedup_b{batch}"]}
    figures |= {"size_mb": row["size_mb"], "parameters": row.get("parameters")}
    failed = []
    if search.max_latency_ms is not None and figures["latency_ms"] > search.max_latency_ms:
        failed.append(f"latency {figures['latency_ms']:.1f} ms > {search.max_latency_ms} ms")
    if search.min_speedup is not None and figures["speedup"] < search.min_speedup:
        failed.append(f"speed-up {figures['speedup']:.2f}x < {search.min_speedup}x")
    if search.max_size_mb is not None and figures["size_mb"] > search.max_size_mb:
        failed.append(f"size on disk {figures['size_mb']:.1f} MB > {search.max_size_mb} MB")
    if search.max_parameters is not None and (figures["parameters"] or 0) > search.max_parameters:
        failed.append(f"parameters {figures['parameters']:,} > {search.max_parameters:,}")
    return {"budget": budget_text(search, lm), "variant": chosen, "where": speed_text(search, lm), "batch_size": batch,
            **figures, "met": not failed, "failed": failed}  # fmt: skip


def run(ctx, stage, folder: Path):
    if ctx.is_lm:
        return run_lm(ctx, stage, folder)
    from ...evaluation.plots import plot_front, plot_tradeoffs
    from ...quantization import measure_artifacts
    from ...quantization.measure import report_columns
    from ..config import SearchConfig

    config = stage.get(EvaluateConfig)
    batch_sizes = parse_int_list(config.latency_batch_sizes, "latency_batch_sizes")
    search = ctx.config.stage("search").get(SearchConfig) if "search" in ctx.outputs else None
    if search is not None and search.budget_batch_size not in batch_sizes:  # the budget is re-checked there
        batch_sizes.append(search.budget_batch_size)
    artifacts = collect_artifacts(ctx, folder)
    model_class = None
    if ctx.task == "token_classification":
        from transformers import AutoModelForTokenClassification as model_class
    splits = {s: ctx.data[s] for s in ("validation", "test")}
    rows = measure_artifacts({k: v[0] for k, v in artifacts.items()}, "teacher", ctx.tokenizer, splits, ctx.metrics,
                             ctx.texts, batch_sizes, ctx.config.data.max_seq_length, rounds=config.latency_rounds, runs=config.latency_runs,
                             memory=config.memory, model_class=model_class)  # fmt: skip
    metric = ctx.config.pipeline.selection_metric
    teacher = rows[0]
    for row in rows:
        row["stage"] = artifacts[row["model"]][1]
        row["folder"] = artifacts[row["model"]][0]
        add_kept(row, teacher, metric)
    chosen, rule = choose(rows, config, max(batch_sizes), metric)
    plots = []
    if config.plots:
        plots = [str(p) for p in plot_tradeoffs(rows, ctx.out, max(batch_sizes), score=f"test_{metric}")]
        if "search" in ctx.outputs:
            plots.append(str(plot_front(ctx.outputs["search"].candidates, "latency_ms",
                                        "candidate CPU latency (ms)", f"validation_{metric}",
                                        ctx.out / "search_candidates.png", "candidate")))  # fmt: skip
    report = build_report(ctx, rows, chosen, rule, plots)
    report["budget_check"] = budget_check(rows, chosen, search)
    warn_budget(report)
    columns = [("stage", "stage"), *report_columns(batch_sizes)[:4], ("kept_test", "kept (test)"),
               ("parameters", "parameters"), *report_columns(batch_sizes)[4:5], ("gzip_size_mb", "gzip (MB)"),
               *report_columns(batch_sizes)[5:]]  # fmt: skip
    write_report(ctx.out, "report", report, render_markdown(report, columns))
    return {"report": report}, str(ctx.out / "report.json")


def warn_budget(report: dict) -> None:
    check = report["budget_check"]
    if check and not check["met"]:
        logger.warning("evaluate: the chosen variant %s fails the search's budget (%s): %s", check["variant"],
                       check["budget"], "; ".join(check["failed"]))  # fmt: skip


def run_lm(ctx, stage, folder: Path):
    """The causal LM's evaluate: ``lm.measure_lm_artifacts`` for every model of the run, kept = the teacher's
    perplexity / the variant's, the rule over validation, the harness task table."""
    from ...evaluation.plots import plot_front
    from ..config import SearchConfig
    from ..lm import check_speeds_against_search, measure_lm_artifacts

    config = stage.get(EvaluateConfig)
    search = ctx.config.stage("search").get(SearchConfig) if "search" in ctx.outputs else None
    artifacts = collect_artifacts(ctx, folder)
    proxies = [name for name, (_, kind) in artifacts.items() if kind == "candidate"]
    folders = {k: v[0] for k, v in artifacts.items()}
    rows = measure_lm_artifacts(ctx, folders, config, folder, proxies)
    metric = ctx.config.pipeline.selection_metric
    teacher = rows[0]
    for row in rows:
        row["stage"], row["folder"] = artifacts[row["model"]][1], artifacts[row["model"]][0]
        add_kept(row, teacher, metric)
    speed_checks = []
    if search is not None:
        speed_checks = check_speeds_against_search(ctx, rows, folders, config, ctx.outputs["search"], search.speed)
    chosen, rule = choose(rows, config, None, metric, ("generate_ms_per_token", "the fastest in greedy tokens/s at batch 1"))
    plots = []
    if config.plots:
        plots = [str(plot_front(rows, x, label, "kept_test", ctx.out / name, "model")) for x, label, name in (
            ("generate_ms_per_token", "ms per greedy token at batch 1 (CPU)", "kept_vs_generate_latency.png"),
            ("size_mb", "size on disk (MB)", "kept_vs_size.png"))]  # fmt: skip
        if "search" in ctx.outputs:
            plots.append(str(plot_front(ctx.outputs["search"].candidates, "latency_ms", "candidate ms per token",
                                        "speedup", ctx.out / "search_candidates.png", "candidate")))  # fmt: skip
    report = build_report(ctx, rows, chosen, rule, plots)
    report["budget_check"] = budget_check(rows, chosen, search, lm=True)
    report["speed_checks"] = speed_checks
    report["tasks"] = {"names": config.task_list, "limit": config.task_limit, "examples": config.task_examples}
    data = ctx.config.data
    report["lm"] = {"data_format": ctx.lm["fmt"], "block_size": data.block_size, "eval_stride": data.eval_stride,
                    "max_eval_tokens": data.max_eval_tokens, "ood_dataset": data.ood_dataset_name,
                    "generate_tokens": config.generate_tokens, "prompt_batch_size": config.prompt_batch_size}  # fmt: skip
    warn_budget(report)
    write_report(ctx.out, "report", report, render_markdown(report, lm_columns(ctx, metric)))
    return {"report": report}, str(ctx.out / "report.json")


def lm_columns(ctx, metric: str) -> list[tuple[str, str]]:
    """Perplexity of each split: strided over text (with bits per byte), completion perplexity over chat or
    prompt/completion rows (validation and test), and over an out-of-domain text when there is one."""
    columns = [("model", "model"), ("stage", "stage"), ("parameters", "parameters"), ("size_mb", "MB"),
               ("dtype", "dtype"), ("device", "device")]  # fmt: skip
    if ctx.lm["fmt"] != "text":
        columns += [(f"{split}_perplexity", f"{split} completion ppl") for split in ("validation", "test")]
    for split in ctx.lm["texts"]:
        columns += [(f"{split}_perplexity", f"{split} ppl"), (f"{split}_bits_per_byte", f"{split} bpb")]
    return columns + [("kept_test", f"kept (test {metric})"), ("generate_tokens_per_s_b1", "generate tok/s b1"),
                      ("generate_spread", "spread"), ("speedup_generate", "generate speed-up"),
                      ("prompt_tokens_per_s", "prompt tok/s"), ("speedup_prompt", "prompt speed-up"),
                      ("peak_rss_mb", "peak RSS (MB)"), ("model_peak_mb", "model's share (MB)"),
                      ("torch_threads", "torch threads")]  # fmt: skip


def build_report(ctx, rows, chosen, rule, plots) -> dict:
    from ...runtime import thread_record

    config = ctx.config
    stages = []
    for stage in config.stages:
        record = ctx.records.get(stage.name)
        stages.append({"stage": stage.name, "fingerprint": record and record["fingerprint"],
                       "resumed_from": record and record["figures"].get("resumed_from")})  # fmt: skip
    return {
        "pipeline": config.path,
        "model": config.pipeline.model_name_or_path,
        "task_type": config.pipeline.task_type,
        "dataset": config.data.dataset_name,
        **{f"{split}_examples": len(ctx.raw[split]) for split in ctx.raw},
        "seed": config.pipeline.seed,
        "threads": thread_record(),
        "stages": stages,
        "search": ctx.records["search"]["figures"] if "search" in ctx.records else None,
        "chosen": chosen,
        "selection_metric": config.pipeline.selection_metric,
        "rule": rule,
        "selection_split": "validation",
        "plots": plots,
        "results": rows,
    }


def examples_text(report: dict) -> str:
    lm = report.get("lm")
    if not lm:
        return f"{report['test_examples']} test examples"
    first = report["results"][0]
    tokens = first.get("test_tokens")
    return (f"perplexity over {tokens} test tokens of {report['dataset']} (window {lm['block_size']}, stride "
            f"{lm['eval_stride']}); speeds: {lm['generate_tokens']} greedy tokens at batch 1 and "
            f"{lm['prompt_batch_size']} x {lm['block_size']} prompt tokens")  # fmt: skip


def render_markdown(report: dict, columns) -> str:
    lines = [
        f"# compress report: {report['model']} on {report['dataset']}",
        "",
        f"Stages: {' -> '.join(s['stage'] for s in report['stages'])}. {examples_text(report)}; "
        f"latency on {report['threads']['torch_threads']} CPU threads, every artifact measured side by side in "
        "one process.",
        "",
        f"**Chosen: {report['chosen'] or 'none (no compressed variant met the rule)'}**, by the rule: {report['rule']}.",
        "",
        markdown_table(report["results"], columns),
    ]
    check = report.get("budget_check")
    if check:
        verdict = "meets it" if check["met"] else "**fails it**: " + "; ".join(check["failed"])
        where = check.get("where", f"at batch {check['batch_size']}")
        lines += ["", f"Budget of the search ({check['budget']}), re-checked on {check['variant']} as measured "
                  f"here ({check['latency_ms']:.1f} ms, {check['speedup']:.2f}x {where}, "
                  f"{check['size_mb']:.1f} MB on disk): {verdict}."]  # fmt: skip
    for c in report.get("speed_checks") or []:
        after = "agrees with the search now" if c["agrees_after_remeasure"] else "**still disagrees with the search**"
        lines += ["", f"Speed check: {c['variant']} measured {c['evaluate_speedup']:.2f}x the teacher here and "
                  f"{c['search_speedup']:.2f}x in the search, more apart than the rounds' spreads allow "
                  f"({c['tolerance']:.0%}); measured again against the teacher alone: {c['remeasured_speedup']:.2f}x, "
                  f"which {after}."]  # fmt: skip
    from ..lm import task_table

    tasks = task_table(report["results"])
    if tasks:
        lines += ["", "## Downstream tasks (lm-evaluation-harness, zero-shot; value ± standard error)", "", tasks]
        notes = {}
        for r in report["results"]:
            if r.get("tasks_note"):
                notes.setdefault(r["tasks_note"], []).append(r["model"])
        lines += [f"\n{', '.join(models)}: {note}" for note, models in notes.items()]
    search = report.get("search")
    if search:
        metric = search.get("metric", report["selection_metric"])
        lines += ["", "## Student search", "", f"Rule: {search['rule']}. Chosen: {search['chosen']}.", "",
                  markdown_table(search["candidates"], [("candidate", "candidate"), ("parameters", "parameters"),
                                 ("size_mb", "fp32 MB"), ("latency_ms", "latency (ms)"), ("speedup", "speed-up"),
                                 ("within_budget", "within budget"),
                                 (f"validation_{metric}", f"proxy validation {metric}"),
                                 (f"validation_{metric}_se", "bootstrap s.e."),
                                 ("share_below_best", "draws worse than the best"),
                                 ("within_noise_of_best", "within noise")])]  # fmt: skip
    if report["plots"]:
        lines += ["", "Plots: " + ", ".join(Path(p).name for p in report["plots"])]
    return "\n".join(lines) + "\n"


SPEC = StageSpec(
    name="evaluate",
    configs=(EvaluateConfig,),
    run=run,
    output=lambda record: ReportOutput(record["figures"]["report"]),
)
