"""The evaluate stage (every artifact of the run measured side by side, the variant to ship chosen on the
validation split by a stated rule, ``report.json``/``report.md`` and plots) and the share stage (the chosen
variant exported or pushed with a card that carries its row and the teacher's)."""

from __future__ import annotations

import logging
from pathlib import Path

from ..configs import parse_int_list
from ..errors import HfCompressError
from ..evaluation import markdown_table, write_report
from ..hub import CompressionInfo, share_variant
from .config import EvaluateConfig, ShareConfig

logger = logging.getLogger(__name__)
KINDS = {"teacher": "finetuned", "candidate": "distilled", "student": "distilled", "pruned": "pruned"}


def collect_artifacts(ctx, folder: Path) -> dict[str, tuple[str, str]]:
    """name -> (folder, stage) for every model the run made, in order: teacher, trained search candidates,
    student, pruned model, quantized variants."""
    artifacts = {"teacher": (str(ctx.teacher_folder(folder / "teacher")), "teacher")}
    records = ctx.records
    if "search" in records:
        for row in records["search"]["figures"]["candidates"]:
            if row.get("folder"):  # trained (in budget); saved with its tokenizer
                artifacts[f"candidate {row['candidate']}"] = (row["folder"], "candidate")
    for name, label in (("distill", "student"), ("prune", "pruned")):
        if name in records:
            artifacts[label] = (records[name]["artifact"], label)
    if "quantize" in records:
        base = "pruned" if "prune" in records else "student" if "distill" in records else "teacher"
        for method, path in records["quantize"]["figures"]["artifacts"].items():
            artifacts[f"{base} {method}"] = (path, "quantized")
    return artifacts


def choose(rows: list[dict], config: EvaluateConfig, batch_size: int, metric: str = "accuracy") -> tuple[str | None, str]:
    """The variant to ship: among compressed variants (not the teacher, not search proxies) whose validation
    ``metric`` is >= min_kept x the teacher's, the fastest at ``batch_size`` (or the smallest). Returns
    (name or None, the rule in words)."""
    score = f"validation_{metric}"
    floor = config.min_kept * rows[0][score]
    if config.objective == "latency":
        cost, best = f"latency_ms_b{batch_size}", f"the fastest at batch {batch_size}"
    else:
        cost, best = "size_mb", "the smallest on disk"
    rule = (
        f"among compressed variants whose validation {metric} is >= {config.min_kept:g} x the teacher's "
        f"({floor:.4f}), {best} (chosen on the validation split; test figures only reported)"
    )
    eligible = [r for r in rows[1:] if r["stage"] != "candidate" and r[score] >= floor]
    if not eligible:
        return None, rule
    return min(eligible, key=lambda r: (r[cost], -r[score]))["model"], rule


def run_evaluate(ctx, stage, folder: Path):
    from ..evaluation.plots import plot_front, plot_tradeoffs
    from ..quantization import measure_artifacts
    from ..quantization.measure import report_columns

    config = stage.get(EvaluateConfig)
    batch_sizes = parse_int_list(config.latency_batch_sizes, "latency_batch_sizes")
    artifacts = collect_artifacts(ctx, folder)
    model_class = None
    if ctx.task == "token_classification":
        from transformers import AutoModelForTokenClassification as model_class
    splits = {s: ctx.data[s] for s in ("validation", "test")}
    rows = measure_artifacts({k: v[0] for k, v in artifacts.items()}, "teacher", ctx.tokenizer, splits, ctx.metrics,
                             ctx.texts, batch_sizes, ctx.config.data.max_seq_length, runs=config.latency_runs,
                             memory=config.memory, model_class=model_class)  # fmt: skip
    metric = ctx.config.pipeline.selection_metric
    teacher = rows[0]
    for row in rows:
        row["stage"] = artifacts[row["model"]][1]
        row["folder"] = artifacts[row["model"]][0]
        for split in ("test", "validation"):  # the share of the teacher's selection metric each variant keeps
            base = teacher[f"{split}_{metric}"]
            row[f"kept_{split}"] = row[f"{split}_{metric}"] / base if base else None
    chosen, rule = choose(rows, config, max(batch_sizes), metric)
    plots = []
    if config.plots:
        plots = [str(p) for p in plot_tradeoffs(rows, ctx.out, max(batch_sizes), score=f"test_{metric}")]
        if "search" in ctx.records:
            plots.append(str(plot_front(ctx.records["search"]["figures"]["candidates"], "latency_ms",
                                        "candidate CPU latency (ms)", f"validation_{metric}",
                                        ctx.out / "search_candidates.png", "candidate")))  # fmt: skip
    report = build_report(ctx, rows, chosen, rule, plots, batch_sizes)
    columns = [("stage", "stage"), *report_columns(batch_sizes)[:4], ("kept_test", "kept (test)"),
               ("parameters", "parameters"), *report_columns(batch_sizes)[4:5], ("gzip_size_mb", "gzip (MB)"),
               *report_columns(batch_sizes)[5:]]  # fmt: skip
    write_report(ctx.out, "report", report, render_markdown(report, columns))
    return {"report": report}, str(ctx.out / "report.json")


def build_report(ctx, rows, chosen, rule, plots, batch_sizes) -> dict:
    from ..runtime import thread_record

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


def render_markdown(report: dict, columns) -> str:
    lines = [
        f"# compress report: {report['model']} on {report['dataset']}",
        "",
        f"Stages: {' -> '.join(s['stage'] for s in report['stages'])}. {report['test_examples']} test examples; "
        f"latency on {report['threads']['torch_threads']} CPU threads, every artifact measured side by side in "
        "one process.",
        "",
        f"**Chosen: {report['chosen'] or 'none (no compressed variant met the rule)'}**, by the rule: {report['rule']}.",
        "",
        markdown_table(report["results"], columns),
    ]
    search = report.get("search")
    if search:
        lines += ["", "## Student search", "", f"Rule: {search['rule']}. Chosen: {search['chosen']}.", "",
                  markdown_table(search["candidates"], [("candidate", "candidate"), ("parameters", "parameters"),
                                 ("size_mb", "fp32 MB"), ("latency_ms", "latency (ms)"), ("speedup", "speed-up"),
                                 ("within_budget", "within budget"),
                                 (f"validation_{report['selection_metric']}", f"proxy validation {report['selection_metric']}")])]  # fmt: skip
    if report["plots"]:
        lines += ["", "Plots: " + ", ".join(Path(p).name for p in report["plots"])]
    return "\n".join(lines) + "\n"


def run_share(ctx, stage, folder: Path):
    """Export/push the variant the evaluate stage chose, with a card carrying its row and the teacher's."""
    config = stage.get(ShareConfig)
    report = ctx.records["evaluate"]["figures"]["report"]
    if report["chosen"] is None:
        logger.warning("share: no variant met the rule (%s); nothing shared", report["rule"])
        return {"shared": None, "reason": "no variant met the rule"}, None
    rows = {r["model"]: r for r in report["results"]}
    row, teacher = rows[report["chosen"]], rows["teacher"]
    method = report["chosen"].split(" ", 1)[-1]
    kind = KINDS.get(row["stage"]) or ("onnx" if method.startswith("onnx") else "quantized")
    route = " -> ".join(s["stage"] for s in report["stages"] if s["stage"] not in ("evaluate", "share"))
    info = CompressionInfo(
        kind=kind,
        base_model=ctx.config.pipeline.model_name_or_path,
        dataset=ctx.config.data.dataset_name,
        method=f"hfcompress pipeline ({route}); chosen: {report['chosen']} by the rule: {report['rule']}",
        settings={s.name: s.values for s in ctx.config.stages},
        teacher=f"{ctx.config.pipeline.model_name_or_path} (fine-tuned on {ctx.config.data.dataset_name})",
        metrics={k: v for k, v in row.items() if "delta" not in k},
        reference={k: v for k, v in teacher.items() if "delta" not in k},
        command=f"hfcompress compress --config {ctx.config.path}",
    )
    suffix = report["chosen"].replace("candidate ", "").split(" ")
    shared = share_variant(config, row["folder"], info, *suffix, owner=str(ctx.out.resolve()))
    if not shared:
        raise HfCompressError("share stage: nothing was shared")
    return {"shared": shared, "variant": report["chosen"]}, shared.get("export")
