"""``share``: export and/or push the variant the evaluate stage chose, with a model card that carries its row,
the teacher's and the rule that chose it. Nothing is shared when no variant met the rule. Its settings are
``ShareConfig`` fields."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ...configs import ReportingArguments
from ...errors import HfCompressError
from ...hub import CompressionInfo, check_sharing, share_variant
from ..context import RunContext
from ..settings import PipelineConfig, Stage
from ..spec import ShareOutput, StageSpec

logger = logging.getLogger(__name__)


@dataclass
class ShareConfig:
    """Where the chosen variant goes (the share_* fields of the recipes)."""

    share_namespace: Optional[str] = field(default=None, metadata={"help": "Push to <namespace>/<name>."})
    share_export_dir: Optional[str] = field(
        default=None, metadata={"help": "Write what would be pushed here."}
    )
    share_private: bool = field(default=False, metadata={"help": "Create pushed repos as private."})
    share_revision: Optional[str] = field(default=None, metadata={"help": "Push to this branch."})

    def __post_init__(self):
        ReportingArguments(share_namespace=self.share_namespace)  # same namespace check as the recipes
        if not (self.share_namespace or self.share_export_dir):
            raise HfCompressError("the share stage needs share_namespace or share_export_dir")


def run(ctx: RunContext, stage: Stage, folder: Path):
    """Export/push the variant the evaluate stage chose, with a card carrying its row and the teacher's."""
    config = stage.get(ShareConfig)
    report = ctx.outputs["evaluate"].report
    if report["chosen"] is None:
        logger.warning("share: no variant met the rule (%s); nothing shared", report["rule"])
        return {"shared": None, "reason": "no variant met the rule"}, None
    rows = {r["model"]: r for r in report["results"]}
    row, teacher = rows[report["chosen"]], rows["teacher"]
    route = " -> ".join(s["stage"] for s in report["stages"] if s["stage"] not in ("evaluate", "share"))
    pipeline, dataset = ctx.config.pipeline, ctx.config.data.dataset_name
    info = CompressionInfo(
        kind=row["card_kind"],  # set by the stage that made the artifact (StageSpec.artifacts)
        base_model=pipeline.model_name_or_path,
        dataset=dataset,
        method=f"hfcompress pipeline ({route}); chosen: {report['chosen']} by the rule: {report['rule']}",
        settings={s.name: s.values for s in ctx.config.stages},
        teacher=f"{pipeline.model_name_or_path} ({ctx.task.teacher_words} {dataset})",
        metrics=figures(row),
        reference=figures(teacher) | references(row),
        command=f"hfcompress compress --config {ctx.config.path}",
        tasks=row.get("tasks") or {},
        reference_tasks=teacher.get("tasks") or {},
        gguf_file=gguf_name(row["folder"]),
        **ctx.task.card_task,
    )
    suffix = report["chosen"].replace("candidate ", "").split(" ")
    shared = share_variant(config, row["folder"], info, *suffix, owner=str(ctx.out.resolve()))
    if not shared:
        raise HfCompressError("share stage: nothing was shared")
    return {"shared": shared, "variant": report["chosen"]}, shared.get("export")


def figures(row: dict) -> dict:
    """A report row's figures for the card: numbers, without the differences and the references."""
    return {k: v for k, v in row.items()
            if "delta" not in k and not k.endswith("_reference") and isinstance(v, (int, float, str, type(None)))}  # fmt: skip


def references(row: dict) -> dict:
    """The teacher's figures over the windows a row was measured on, where they differ from the teacher's row
    (a GGUF measured in llama.cpp): ``test_perplexity_reference`` -> ``test_perplexity``."""
    return {k.removesuffix("_reference"): v for k, v in row.items() if k.endswith("_reference")}


def gguf_name(folder: str) -> str | None:
    from ...quantization.api import gguf_file

    found = gguf_file(folder)
    return found.name if found else None


def preflight(config: PipelineConfig, stage: Stage) -> None:
    check_sharing(stage.get(ShareConfig))


SPEC = StageSpec(
    name="share",
    configs=(ShareConfig,),
    run=run,
    output=lambda record: ShareOutput(record["figures"].get("shared")),
    preflight=preflight,
)
