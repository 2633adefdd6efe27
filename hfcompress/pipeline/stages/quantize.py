"""``quantize``: quantize the last PyTorch model of the run (the teacher when no stage trained one) with each
method, and the teacher too when ``sources`` names it (so the report shows whether pruning and distillation pay
for themselves over quantization alone); each artifact in <folder>/<method> (the teacher's in
<folder>/teacher/<method>). A causal LM takes bitsandbytes, ONNX Runtime int8 with the KV cache,
GGUF and compressed-tensors (GPTQ/AWQ), calibrated on the training rows where a method calibrates (the task
object says which rows). Its settings are ``QuantizeStageArguments`` and ``QuantizationOptions`` fields."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import HfCompressError, check_choice
from ...quantization import QuantizationConfig, quantize
from ...quantization.api import check_method_fits
from ...quantization.backends import require_backend
from ...quantization.config import METHODS, QuantizationOptions
from ..context import RunContext
from ..settings import PipelineConfig, Stage
from ..spec import Artifact, QuantizedOutput, StageSpec

SOURCES = ("latest", "teacher")  # the models a quantize stage can quantize


@dataclass
class QuantizeStageArguments:
    """Which quantization methods the quantize stage runs, each on the last PyTorch model of the run."""

    methods: str = field(
        default="onnx-int8-dynamic", metadata={"help": "Comma-separated QuantizationConfig methods."}
    )
    sources: str = field(
        default="latest",
        metadata={
            "help": "Comma-separated models each method quantizes: 'latest' (the last PyTorch model of the run, "
            "the teacher when no stage trained one) and/or 'teacher' (the teacher itself: quantization alone)."
        },
    )

    def __post_init__(self):  # which methods fit the model is the quantize stage's check (it knows the task)
        for method in self.method_list:
            check_choice("each of methods", method, METHODS)
        if not self.method_list:
            raise HfCompressError("methods must name at least one quantization method")
        for source in self.source_list:
            check_choice("each of sources", source, SOURCES)
        if not self.source_list:
            raise HfCompressError(f"sources must name at least one of {', '.join(SOURCES)}")

    @property
    def method_list(self) -> list[str]:
        return [m.strip() for m in self.methods.split(",") if m.strip()]

    @property
    def source_list(self) -> list[str]:
        return [s.strip() for s in self.sources.split(",") if s.strip()]


def run(ctx: RunContext, stage: Stage, folder: Path):
    arguments = stage.get(QuantizeStageArguments)
    options = stage.get(QuantizationOptions)
    latest = ctx.latest
    # base -> (the folder quantized, where its artifacts go); the teacher once when no stage trained a model
    sources = {}
    if "latest" in arguments.source_list and latest is not None:
        sources[latest.label] = (Path(latest.folder), folder)
    if "teacher" in arguments.source_list or latest is None:
        teacher_out = folder if latest is None else folder / "teacher"
        sources["teacher"] = (ctx.teacher_folder(folder / "source"), teacher_out)
    calibration, max_length = ctx.task.calibration(ctx.data, ctx.config.data)
    configs = {method: QuantizationConfig(method=method, **options.to_dict()) for method in arguments.method_list}
    for source, _ in sources.values():  # a shape a format can't hold: refused before any method runs
        for config in configs.values():
            check_method_fits(source, config)
    quantized = {}
    for base, (source, out) in sources.items():
        quantized[base] = {"source": str(source), "artifacts": {
            method: str(quantize(source, out / method, config, calibration_dataset=calibration, max_length=max_length,
                                 overwrite=True))
            for method, config in configs.items()}}  # fmt: skip
    first = next(iter(quantized))  # the latest model's (older records hold only these three keys)
    figures = {"source": quantized[first]["source"], "base": first, "artifacts": quantized[first]["artifacts"],
               "quantized": quantized, "settings": options.to_dict()}  # fmt: skip
    return figures, None


def output(record: dict) -> QuantizedOutput:
    figures = record["figures"]
    quantized = figures.get("quantized") or {figures.get("base", "teacher"): {"artifacts": figures["artifacts"]}}
    return QuantizedOutput({base: {k: Path(v) for k, v in q["artifacts"].items()} for base, q in quantized.items()})


def validate(config: PipelineConfig, stage: Stage) -> None:
    methods = stage.get(QuantizeStageArguments).method_list
    config.task.check_quantize_methods(methods)
    trained = [m for m in methods if METHODS[m][0] == "qad"]
    if trained and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise HfCompressError(
            f"{', '.join(trained)} trains inside the quantize stage, which runs in the main process alone; launch "
            "this pipeline with one process (its training stages scale across processes, QAD does not yet)"
        )


def preflight(config: PipelineConfig, stage: Stage) -> None:
    """Every method's backend is installed, before any work."""
    for method in stage.get(QuantizeStageArguments).method_list:
        require_backend(method)


def artifacts(out: QuantizedOutput) -> dict:
    """One row per model and method ("student gguf-q8_0", "teacher gguf-q8_0"); its model card says ONNX Runtime
    or quantized."""
    return {f"{base} {method}": Artifact(str(path), "quantized", "onnx" if method.startswith("onnx") else "quantized")
            for base, methods in out.artifacts.items() for method, path in methods.items()}  # fmt: skip


SPEC = StageSpec(
    name="quantize",
    configs=(QuantizeStageArguments, QuantizationOptions),
    run=run,
    output=output,
    validate=validate,
    preflight=preflight,
    artifacts=artifacts,
)
