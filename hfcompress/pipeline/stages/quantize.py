"""``quantize``: quantize the last PyTorch model of the run (the teacher when no stage trained one) with each
method; each artifact in <folder>/<method>."""

from __future__ import annotations

from pathlib import Path

from ...errors import HfCompressError
from ...quantization import QuantizationConfig, quantize
from ...quantization.backends import require_backend
from ...quantization.config import QuantizationOptions
from ..config import QuantizeStageArguments
from .base import QuantizedOutput, StageSpec


def run(ctx, stage, folder: Path):
    methods = stage.get(QuantizeStageArguments).method_list
    options = stage.get(QuantizationOptions)
    latest = ctx.latest
    source = latest.folder if latest else ctx.teacher_folder(folder / "source")
    artifacts = {}
    for method in methods:
        config = QuantizationConfig(method=method, **options.to_dict())
        artifacts[method] = str(quantize(source, folder / method, config, calibration_dataset=ctx.raw["train"],
                                         max_length=ctx.config.data.max_seq_length, overwrite=True))  # fmt: skip
    figures = {"source": str(source), "base": latest.label if latest else "teacher", "artifacts": artifacts,
               "settings": options.to_dict()}  # fmt: skip
    return figures, None


def output(record: dict) -> QuantizedOutput:
    figures = record["figures"]
    return QuantizedOutput(figures.get("base", "teacher"), {k: Path(v) for k, v in figures["artifacts"].items()})


def validate(config, stage) -> None:
    if config.pipeline.task_type == "token_classification":
        raise HfCompressError(
            "the quantize stage supports sequence classification only (single- or multi-label); remove it for "
            "token_classification"
        )


def preflight(config, stage) -> None:
    """Every method's backend is installed, before any work."""
    for method in stage.get(QuantizeStageArguments).method_list:
        require_backend(method)


SPEC = StageSpec(
    name="quantize",
    configs=(QuantizeStageArguments, QuantizationOptions),
    run=run,
    output=output,
    validate=validate,
    preflight=preflight,
    artifacts=lambda out: {f"{out.base} {method}": (str(path), "quantized") for method, path in out.artifacts.items()},
)
