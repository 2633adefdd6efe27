"""The run's report: the rule that chooses the variant to ship (on validation), the kept ratios, the search's
budget re-checked on the chosen variant, and ``report.json``/``report.md``. Task-specific figures, columns and
sections come from the task object."""

from __future__ import annotations

import logging
from pathlib import Path

from ..evaluation import markdown_table
from .spec import Budget
from .tasks import TaskKind

logger = logging.getLogger(__name__)


def choose(rows: list[dict], config, metric: str, cost: tuple[str, str], lower: bool = False) -> tuple[str | None, str]:
    """The variant to ship: among compressed variants (not the teacher, not search proxies) that keep ``min_kept``
    of the teacher's validation ``metric`` (>= min_kept x the teacher's; ``lower`` is better, as perplexity: <= the
    teacher's / min_kept), the one lowest in ``cost`` (column, words) for the latency objective, or the smallest on
    disk. Returns (name or None, the rule in words)."""
    score = f"validation_{metric}"
    if lower:
        bound = rows[0][score] / config.min_kept
        keeps, within = f"is <= the teacher's / {config.min_kept:g} ({bound:.4f})", lambda v: v <= bound
    else:
        bound = config.min_kept * rows[0][score]
        keeps, within = f"is >= {config.min_kept:g} x the teacher's ({bound:.4f})", lambda v: v >= bound
    column, best = cost if config.objective == "latency" else ("size_mb", "the smallest on disk")
    rule = (
        f"among compressed variants whose validation {metric} {keeps}, {best} (chosen on the validation split; "
        "test figures only reported)"
    )
    eligible = [r for r in rows[1:] if r["stage"] != "candidate" and r.get(score) is not None and within(r[score])]
    if not eligible:
        return None, rule
    return min(eligible, key=lambda r: (r[column], -r[score] if not lower else r[score]))["model"], rule


def add_kept(row: dict, teacher: dict, metric: str, lower: bool = False) -> None:
    """``kept_test`` and ``kept_validation``: the share of the teacher's ``metric`` the row keeps (its score / the
    teacher's; ``lower`` is better, as perplexity: the teacher's / its own). None where a figure is missing or 0.
    A row measured over other windows than the teacher's row (a GGUF in llama.cpp) carries the teacher's figure
    over its windows as ``<split>_<metric>_reference``, and is kept against that."""
    for split in ("test", "validation"):
        base = row.get(f"{split}_{metric}_reference", teacher.get(f"{split}_{metric}"))
        mine = row.get(f"{split}_{metric}")
        if lower:
            mine, base = base, mine
        row[f"kept_{split}"] = mine / base if mine is not None and base else None


def budget_check(rows: list[dict], chosen: str | None, budget: Budget | None, task: TaskKind) -> dict | None:
    """The search's budget re-checked on the shipped variant as the evaluate stage measured it (the task's
    latency and speed-up figures; its size on disk). None without a search stage or a chosen variant."""
    if budget is None or chosen is None:
        return None
    row = next(r for r in rows if r["model"] == chosen)
    figures = task.budget_figures(row, budget) | {"size_mb": row["size_mb"], "parameters": row.get("parameters")}
    failed = budget.failures(figures)
    where = task.speed_text(budget)
    return {"budget": budget.text(where), "variant": chosen, "where": where, "batch_size": budget.budget_batch_size,
            **figures, "met": not failed, "failed": failed}  # fmt: skip


def warn_budget(report: dict) -> None:
    check = report["budget_check"]
    if check and not check["met"]:
        logger.warning("evaluate: the chosen variant %s fails the search's budget (%s): %s", check["variant"],
                       check["budget"], "; ".join(check["failed"]))  # fmt: skip


def build_report(config, ctx_records: dict, raw, rows, chosen, rule, plots) -> dict:
    """The report's common fields; the task adds its own (``Measurement.report``)."""
    from ..runtime import thread_record

    stages = []
    for stage in config.stages:
        record = ctx_records.get(stage.name)
        stages.append({"stage": stage.name, "fingerprint": record and record["fingerprint"],
                       "resumed_from": record and record["figures"].get("resumed_from")})  # fmt: skip
    return {
        "pipeline": config.path,
        "model": config.pipeline.model_name_or_path,
        "task_type": config.task.name,
        "dataset": config.data.dataset_name,
        **{f"{split}_examples": len(raw[split]) for split in raw},
        "seed": config.pipeline.seed,
        "threads": thread_record(),
        "stages": stages,
        "search": ctx_records["search"]["figures"] if "search" in ctx_records else None,
        "chosen": chosen,
        "selection_metric": config.pipeline.selection_metric,
        "rule": rule,
        "selection_split": "validation",
        "plots": plots,
        "results": rows,
    }


def render_markdown(report: dict, columns, task: TaskKind) -> str:
    lines = [
        f"# compress report: {report['model']} on {report['dataset']}",
        "",
        f"Stages: {' -> '.join(s['stage'] for s in report['stages'])}. {task.examples_text(report)}; "
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
    lines += task.report_sections(report)
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
