"""``quantize``: quantize the last PyTorch model of the run (the teacher when no stage trained one) with each
method; each artifact in <folder>/<method>. A causal LM takes bitsandbytes, ONNX Runtime int8 with the KV cache,
GGUF and compressed-tensors (GPTQ/AWQ), calibrated on the training rows where a method calibrates (the task
object says which rows). Its settings are ``QuantizeStageArguments`` and ``QuantizationOptions`` fields."""

from __future__ import annotations

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


@dataclass
class QuantizeStageArguments:
    """Which quantization methods the quantize stage runs, each on the last PyTorch model of the run."""

    methods: str = field(
        default="onnx-int8-dynamic", metadata={"help": "Comma-separated QuantizationConfig methods."}
    )

    def __post_init__(self):  # which methods fit the model is the quantize stage's check (it knows the task)
        for method in self.method_list:
            check_choice("each of methods", method, METHODS)
        if not self.method_list:
            raise HfCompressError("methods must name at least one quantization method")

    @property
    def method_list(self) -> list[str]:
        return [m.strip() for m in self.methods.split(",") if m.strip()]


def run(ctx: RunContext, stage: Stage, folder: Path):
    methods = stage.get(QuantizeStageArguments).method_list
    options = stage.get(QuantizationOptions)
    latest = ctx.latest
    source = latest.folder if latest else ctx.teacher_folder(folder / "source")
    calibration, max_length = ctx.task.calibration(ctx.data, ctx.config.data)
    configs = {method: QuantizationConfig(method=method, **options.to_dict()) for method in methods}
    for config in configs.values():  # a shape a format can't hold: refused before any method runs
        check_method_fits(source, config)
    artifacts = {}
    for method, config in configs.items():
        artifacts[method] = str(quantize(source, folder / method, config, calibration_dataset=calibration,
                                         max_length=max_length, overwrite=True))  # fmt: skip
    figures = {"source": str(source), "base": latest.label if latest else "teacher", "artifacts": artifacts,
               "settings": options.to_dict()}  # fmt: skip
    return figures, None


def output(record: dict) -> QuantizedOutput:
    figures = record["figures"]
    return QuantizedOutput(figures.get("base", "teacher"), {k: Path(v) for k, v in figures["artifacts"].items()})


def validate(config: PipelineConfig, stage: Stage) -> None:
    config.task.check_quantize_methods(stage.get(QuantizeStageArguments).method_list)


def preflight(config: PipelineConfig, stage: Stage) -> None:
    """Every method's backend is installed, before any work."""
    for method in stage.get(QuantizeStageArguments).method_list:
        require_backend(method)


def artifacts(out: QuantizedOutput) -> dict:
    """One row per method; its model card says ONNX Runtime or quantized."""
    return {f"{out.base} {method}": Artifact(str(path), "quantized", "onnx" if method.startswith("onnx") else "quantized")
            for method, path in out.artifacts.items()}  # fmt: skip


SPEC = StageSpec(
    name="quantize",
    configs=(QuantizeStageArguments, QuantizationOptions),
    run=run,
    output=output,
    validate=validate,
    preflight=preflight,
    artifacts=artifacts,
)
