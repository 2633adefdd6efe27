"""``quantize``: quantize the last PyTorch model of the run (the teacher when no stage trained one) with each
method; each artifact in <folder>/<method>. A causal LM takes bitsandbytes, ONNX Runtime int8 with the KV cache,
GGUF and compressed-tensors (GPTQ/AWQ), calibrated on the training rows where a method calibrates."""

from __future__ import annotations

from pathlib import Path

from ...errors import HfCompressError
from ...quantization import QuantizationConfig, quantize
from ...quantization.api import check_method_fits
from ...quantization.backends import require_backend
from ...quantization.config import QuantizationOptions, causal_lm_refusal, check_classifier_methods
from ..config import QuantizeStageArguments
from .base import QuantizedOutput, StageSpec


def run(ctx, stage, folder: Path):
    methods = stage.get(QuantizeStageArguments).method_list
    options = stage.get(QuantizationOptions)
    latest = ctx.latest
    source = latest.folder if latest else ctx.teacher_folder(folder / "source")
    artifacts = {}
    if ctx.is_lm:  # the training rows as tokenized for training: text blocks, chat or prompt/completion rows
        calibration, max_length = ctx.data["train"], ctx.config.data.block_size
    else:
        calibration, max_length = ctx.raw["train"], ctx.config.data.max_seq_length
    configs = {method: QuantizationConfig(method=method, **options.to_dict()) for method in methods}
    for config in configs.values():  # a shape a format can't hold: refused before any method runs
        check_method_fits(source, config)
    for method, config in configs.items():
        artifacts[method] = str(quantize(source, folder / method, config, calibration_dataset=calibration,
                                         max_length=max_length, overwrite=True))  # fmt: skip
    figures = {"source": str(source), "base": latest.label if latest else "teacher", "artifacts": artifacts,
               "settings": options.to_dict()}  # fmt: skip
    return figures, None


def output(record: dict) -> QuantizedOutput:
    figures = record["figures"]
    return QuantizedOutput(figures.get("base", "teacher"), {k: Path(v) for k, v in figures["artifacts"].items()})


def validate(config, stage) -> None:
    methods = stage.get(QuantizeStageArguments).method_list
    if config.pipeline.task_type == "token_classification":
        raise HfCompressError(
            "the quantize stage supports sequence classification and causal LMs; remove it for token_classification"
        )
    if not config.pipeline.is_causal_lm:
        check_classifier_methods(methods)
        return
    for method in methods:
        if causal_lm_refusal(method):
            raise HfCompressError(f"quantize method {method!r} {causal_lm_refusal(method)}")


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
