"""ONNX export and ONNX Runtime int8 through Optimum (optimum-onnx): dynamic, or static with calibration.

The results load back with Optimum's ``ORTModelFor...`` classes. Presets pick the int8 kernels of the target
CPU (AVX512-VNNI, AVX512, AVX2, ARM64). Optimum's O2 graph optimisation is not applied before quantizing: the
quantizer's shape inference fails on its output (seen with optimum-onnx 0.1.0).

``session_options`` is how the artifacts should be run on CPU: ONNX Runtime's softmax over masked (padded)
attention positions produces denormal floats, which x86 CPUs handle in slow microcode; flushing them to zero
made the int8 BERT 1.2x faster at batch 32 in one benchmark run (Softmax alone 5x) with the same predictions;
a later run with ONNX Runtime pinned to PyTorch's two threads showed no end-to-end gain (docs/benchmarks.md). ONNX Runtime
sets the calling thread's flag only for the first session of a process (``load_quantized`` sets it itself).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import HfCompressError
from .config import QuantizationConfig

ONNX_FILE = "model.onnx"
QUANTIZED_SUFFIX = "quantized"


def export_onnx(model_dir: str | Path, out: str | Path) -> None:
    """Export a sequence-classification model to ``out/model.onnx`` (fp32) with its config."""
    from optimum.onnxruntime import ORTModelForSequenceClassification

    try:
        model = ORTModelForSequenceClassification.from_pretrained(model_dir, export=True)
    except (ValueError, KeyError, NotImplementedError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HfCompressError(f"Optimum can't export {model_dir} to ONNX: {reason}") from None
    model.save_pretrained(out)


def session_options(denormal_as_zero: bool = True, threads: int | None = None):
    """``onnxruntime.SessionOptions`` for ``ORTModelFor....from_pretrained(..., session_options=...)``, with
    denormals flushed to zero (``session.set_denormal_as_zero``) unless ``denormal_as_zero`` is False, and
    ``threads`` intra-op threads (None: ONNX Runtime's default, one per physical core)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if denormal_as_zero:
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
    return options


def onnx_inputs(onnx_dir: str | Path) -> list[str]:
    import onnx

    graph = onnx.load(str(Path(onnx_dir) / ONNX_FILE), load_external_data=False).graph
    return [i.name for i in graph.input]


def quantize_onnx(
    onnx_dir: str | Path, out: str | Path, config: QuantizationConfig, calibration=None, nodes_to_exclude=None
) -> None:
    """int8-quantize ``onnx_dir/model.onnx`` into ``out/model_quantized.onnx``.

    ``calibration`` (static only): a ``datasets.Dataset`` with the ONNX model's input columns.
    ``nodes_to_exclude``: graph node names left in fp32.
    """
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoCalibrationConfig, AutoQuantizationConfig

    static = config.method == "onnx-int8-static"
    qconfig = getattr(AutoQuantizationConfig, config.preset)(
        is_static=static, per_channel=config.per_channel, nodes_to_exclude=list(nodes_to_exclude or [])
    )
    quantizer = ORTQuantizer.from_pretrained(onnx_dir, file_name=ONNX_FILE)
    ranges = None
    if static:
        calibration_config = getattr(AutoCalibrationConfig, config.calibration_method)(calibration)
        try:
            ranges = quantizer.fit(
                dataset=calibration,
                calibration_config=calibration_config,
                operators_to_quantize=qconfig.operators_to_quantize,
                onnx_augmented_model_name=str(Path(out) / "augmented_model.onnx"),
            )
        except ValueError as err:  # e.g. histogram calibrators on a constant activation ("Too many bins")
            raise HfCompressError(
                f"ONNX Runtime's {config.calibration_method} calibration failed on this model "
                f"({str(err).splitlines()[0]}); try calibration_method minmax"
            ) from None
        (Path(out) / "augmented_model.onnx").unlink(missing_ok=True)
    quantizer.quantize(
        quantization_config=qconfig,
        save_dir=out,
        file_suffix=QUANTIZED_SUFFIX,
        calibration_tensors_range=ranges,
    )
