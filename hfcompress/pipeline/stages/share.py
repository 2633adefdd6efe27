"""``share``: export and/or push the variant the evaluate stage chose, with a model card that carries its row,
the teacher's and the rule that chose it. Nothing is shared when no variant met the rule."""

from __future__ import annotations

import logging
from pathlib import Path

from ...errors import HfCompressError
from ...hub import CompressionInfo, share_variant
from ..config import ShareConfig
from .base import ShareOutput, StageSpec

logger = logging.getLogger(__name__)
# the model card's kind of each report row's stage (quantized rows: onnx or quantized, by method)
KINDS = {"teacher": "finetuned", "candidate": "distilled", "student": "distilled", "pruned": "pruned"}


def run(ctx, stage, folder: Path):
    """Export/push the variant the evaluate stage chose, with a card carrying its row and the teacher's."""
    config = stage.get(ShareConfig)
    report = ctx.outputs["evaluate"].report
    if report["chosen"] is None:
        logger.warning("share: no variant met the rule (%s); nothing shared", report["rule"])
        return {"shared": None, "reason": "no variant met the rule"}, None
    rows = {r["model"]: r for r in report["results"]}
    row, teacher = rows[report["chosen"]], rows["teacher"]
    method = report["chosen"].split(" ", 1)[-1]
    kind = KINDS.get(row["stage"]) or ("onnx" if method.startswith("onnx") else "quantized")
    route = " -> ".join(s["stage"] for s in report["stages"] if s["stage"] not in ("evaluate", "share"))
    lm = report.get("task_type") == "causal_lm"
    task = {"task_name": "Text Generation", "task_type": "text-generation"} if lm else {}
    info = CompressionInfo(
        kind=kind,
        base_model=ctx.config.pipeline.model_name_or_path,
        dataset=ctx.config.data.dataset_name,
        method=f"hfcompress pipeline ({route}); chosen: {report['chosen']} by the rule: {report['rule']}",
        settings={s.name: s.values for s in ctx.config.stages},
        teacher=f"{ctx.config.pipeline.model_name_or_path} ({'adapted to' if lm else 'fine-tuned on'} "
        f"{ctx.config.data.dataset_name})",
        metrics=figures(row),
        reference=figures(teacher),
        command=f"hfcompress compress --config {ctx.config.path}",
        tasks=row.get("tasks") or {},
        reference_tasks=teacher.get("tasks") or {},
        **task,
    )
    suffix = report["chosen"].replace("candidate ", "").split(" ")
    shared = share_variant(config, row["folder"], info, *suffix, owner=str(ctx.out.resolve()))
    if not shared:
        raise HfCompressError("share stage: nothing was shared")
    return {"shared": shared, "variant": report["chosen"]}, shared.get("export")


def figures(row: dict) -> dict:
    """A report row's figures for the card: numbers, without the differences."""
    return {k: v for k, v in row.items() if "delta" not in k and isinstance(v, (int, float, str, type(None)))}


def preflight(config, stage) -> None:
    from ...hub import check_sharing

    check_sharing(stage.get(ShareConfig))


SPEC = StageSpec(
    name="share",
    configs=(ShareConfig,),
    run=run,
    output=lambda record: ShareOutput(record["figures"].get("shared")),
    preflight=preflight,
)
