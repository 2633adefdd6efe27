"""``QuantizationConfig``: which quantization method, with which settings."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from ..errors import HfCompressError, check_choice

# method -> (backend, extra to install)
METHODS = {
    "bnb-int8": ("bitsandbytes", "bnb"),
    "bnb-nf4": ("bitsandbytes", "bnb"),
    "bnb-fp4": ("bitsandbytes", "bnb"),
    "onnx-fp32": ("optimum-onnx", "onnx"),
    "onnx-int8-dynamic": ("optimum-onnx", "onnx"),
    "onnx-int8-static": ("optimum-onnx", "onnx"),
    "torchao-int8": ("torchao", "torchao"),
    "gguf-f16": ("gguf", "gguf"),  # causal LMs (Llama architecture): one .gguf file for llama.cpp/Ollama
    "gguf-q8_0": ("gguf", "gguf"),
    "gguf-q5_0": ("gguf", "gguf"),
    "gguf-q4_1": ("gguf", "gguf"),
    "gguf-q4_0": ("gguf", "gguf"),
    # the K-quants and IQ types are written by llama.cpp's own quantizer (make setup-llama-tools)
    "gguf-bf16": ("gguf", "gguf"),
    "gguf-q6_k": ("gguf", "gguf"),
    "gguf-q5_k_m": ("gguf", "gguf"),
    "gguf-q4_k_m": ("gguf", "gguf"),
    "gguf-q4_k_s": ("gguf", "gguf"),
    "gguf-iq4_nl": ("gguf", "gguf"),
    "gguf-iq4_xs": ("gguf", "gguf"),
    "gptq-w4a16": ("llmcompressor", "llmcompressor"),  # causal LMs: compressed-tensors for vLLM/SGLang
    "awq-w4a16": ("llmcompressor", "llmcompressor"),
    "gptq-w8a8": ("llmcompressor", "llmcompressor"),
    # quantization-aware distillation (qad.py): trained through the format's own 4-bit grid, then exported to it
    "qad-w4a16": ("qad", "llm"),  # compressed-tensors pack-quantized, as gptq-w4a16
    "qad-gguf-q4_0": ("qad", "gguf"),  # GGUF Q4_0, written by the gguf-q4_0 writer
}
# what serves each backend's artifacts: the model card says it
ENGINES = {
    "bitsandbytes": "transformers with bitsandbytes",
    "optimum-onnx": "ONNX Runtime (Optimum's `ORTModel` classes)",
    "torchao": "transformers 5 with torchao",
    "gguf": "llama.cpp, Ollama and LM Studio; transformers with `gguf_file=`",
    "llmcompressor": "vLLM and SGLang (compressed-tensors), as it is; transformers with `pip install compressed-tensors`",
    "qad": "vLLM and SGLang (qad-w4a16: compressed-tensors; transformers with `pip install compressed-tensors`) or "
    "llama.cpp, Ollama and LM Studio (qad-gguf-q4_0: GGUF; transformers with `gguf_file=`)",
}
LM_ONLY_BACKENDS = {"gguf": "GGUF", "llmcompressor": "compressed-tensors", "qad": "compressed-tensors or GGUF"}  # formats that hold causal LMs only
CLASSIFIER_METHODS = tuple(m for m, (backend, _) in METHODS.items() if backend not in LM_ONLY_BACKENDS)
# what a causal LM can go through: bitsandbytes, ONNX int8 with the KV cache, and the LM-only formats
CAUSAL_LM_METHODS = ("bnb-int8", "bnb-nf4", "bnb-fp4", "onnx-int8-dynamic",
                     *(m for m, (backend, _) in METHODS.items() if backend in LM_ONLY_BACKENDS))  # fmt: skip


def gguf_method(method: str) -> str | None:
    """The ``gguf-*`` method whose file ``method`` writes (itself, or a QAD method's), or None."""
    if method.startswith("gguf-"):
        return method
    return method[len("qad-"):] if method.startswith("qad-gguf-") else None


def compressed_tensors_method(method: str) -> bool:
    """Whether ``method`` writes a compressed-tensors checkpoint (reloaded with ``pip install compressed-tensors``)."""
    return METHODS[method][0] == "llmcompressor" or method == "qad-w4a16"


def causal_lm_refusal(method: str) -> str | None:
    """Why a causal LM can't take ``method`` (the end of a sentence that names it), or None when it can."""
    if method in CAUSAL_LM_METHODS:
        return None
    return f"is for classifiers; a causal LM takes {', '.join(CAUSAL_LM_METHODS)}"


def check_classifier_methods(methods: list[str]) -> None:
    """The methods a sequence classifier can go through (the quantize recipe, the compress pipeline)."""
    for method in methods:
        check_choice("each of methods", method, METHODS)
        if method not in CLASSIFIER_METHODS:
            raise HfCompressError(
                f"{method} writes {LM_ONLY_BACKENDS[METHODS[method][0]]}, a format for causal LMs, not classifiers; "
                f"for a classifier use one of {', '.join(CLASSIFIER_METHODS)}"
            )


PRESETS = ("avx512_vnni", "avx512", "avx2", "arm64")
GGUF_WRITERS = ("auto", "llama.cpp", "hfcompress")
GGUF_EMBEDDING_TYPES = ("F16", "Q8_0", "Q6_K", "Q5_K", "Q5_1", "Q5_0", "Q4_K", "Q4_1", "Q4_0", "IQ4_NL", "IQ4_XS")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
CALIBRATION_METHODS = ("minmax", "percentiles", "entropy")
QAD_STARTS = ("rtn", "gptq")  # qad-*: the 4-bit weights training starts from


@dataclass
class QuantizationOptions:
    """Settings shared by the quantization methods; a field that doesn't apply to a method is ignored."""

    preset: str = field(
        default="avx512_vnni",
        metadata={"help": "ONNX Runtime int8 preset for the target CPU: avx512_vnni, avx512, avx2, arm64."},
    )
    per_channel: bool = field(
        default=False,
        metadata={"help": "ONNX int8: one weight scale per output channel instead of per tensor."},
    )
    calibration_samples: int = field(
        default=256,
        metadata={"help": "onnx-int8-static, gptq-*, awq-*: training examples used to calibrate; >= 1."},
    )
    group_size: int = field(
        default=128,
        metadata={"help": "gptq-w4a16, awq-w4a16, qad-w4a16: weight columns that share one scale; must divide every linear "
                  "layer's input size (SmolLM2's 576 takes 64)."},
    )
    calibration_method: str = field(
        default="minmax",
        metadata={"help": "onnx-int8-static: activation range estimate: minmax, percentiles, entropy."},
    )
    double_quant: bool = field(
        default=True,
        metadata={
            "help": "bnb 4-bit: quantize the quantization constants too. Also keeps the error low when the "
            "saved model ran inference first (without it the error roughly doubles; docs/quantization.md)."
        },
    )
    compute_dtype: str = field(
        default="float32",
        metadata={"help": "bnb 4-bit: dtype of the matmuls; gptq-*/awq-*: dtype the model is calibrated and saved "
                  "in (what stays unquantized); qad-w4a16: the dtype of the saved scales and unquantized weights: float32, bfloat16, float16."},
    )
    keep_fp32: str = field(
        default="",
        metadata={"help": "ONNX int8 of causal LMs: comma-separated parts of MatMul node names left in fp32, e.g. "
                  "'down_proj' or 'mlp' (names look like /model/layers.0/mlp/down_proj/MatMul)."},
    )
    keep_output_fp32: bool = field(
        default=False,
        metadata={"help": "ONNX int8 of causal LMs: leave the output projection (lm_head, the tied embedding) "
                  "in fp32."},
    )

    gguf_writer: str = field(
        default="auto",
        metadata={"help": "gguf-*: who writes the file: 'llama.cpp' (its converter and llama-quantize: every "
                  "family, K-quants, IQ types, the importance matrix; needs `make setup-llama-tools`), 'hfcompress' "
                  "(the package's own writer: Llama architecture, F16/Q8_0/Q5_0/Q4_1/Q4_0 only) or 'auto' "
                  "(llama.cpp when its tools are installed, else hfcompress)."},
    )
    gguf_embedding_type: Optional[str] = field(
        default=None,
        metadata={"help": "gguf-* through llama.cpp: the type of the token embedding and the output matrix (e.g. "
                  "Q4_0, IQ4_NL, Q5_0, Q8_0); None: llama-quantize's choice (6 to 8 bits, which dominates the "
                  "size of a small model with a large vocabulary)."},
    )
    gguf_imatrix: bool = field(
        default=False,
        metadata={"help": "gguf-* through llama.cpp: quantize with an importance matrix that llama-imatrix computes "
                  "from the calibration text (calibration_samples rows of it)."},
    )

    qad_steps: int = field(
        default=200,
        metadata={"help": "qad-*: training steps through the 4-bit grid, distilling from the unquantized model; >= 1."},
    )
    qad_batch_size: int = field(
        default=4, metadata={"help": "qad-*: training rows per step (each at most max_length tokens); >= 1."}
    )
    qad_learning_rate: float = field(
        default=2e-5,
        metadata={"help": "qad-*: peak learning rate (AdamW, 5% warm-up, cosine decay); > 0."},
    )
    qad_start: str = field(
        default="rtn",
        metadata={"help": "qad-*: the 4-bit model training starts from: rtn (round to nearest; the scales then follow "
                  "the weights) or gptq (qad-w4a16 only: GPTQ's integers and scales on the same calibration rows, "
                  "the scales then kept fixed; needs llmcompressor)."},
    )
    qad_learn_scales: bool = field(
        default=False,
        metadata={"help": "qad-w4a16: train each group's int4 scale too (LSQ's gradient, as EfficientQAT), from the "
                  "start's scales; the export writes the trained scales. Not for qad-gguf-q4_0, whose writer derives "
                  "each block's scale from its weights."},
    )
    qad_bf16: bool = field(
        default=False,
        metadata={"help": "qad-*: train under bfloat16 autocast (teacher included); weights, grid and export stay "
                  "fp32. For GPUs and CPUs with AMX/avx512_bf16; refused on a CPU without them, where bf16 matmuls "
                  "are far slower than fp32."},
    )

    def __post_init__(self):
        check_choice("preset", self.preset, PRESETS)
        for name in ("qad_steps", "qad_batch_size"):
            if getattr(self, name) < 1:
                raise HfCompressError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.qad_learning_rate <= 0:
            raise HfCompressError(f"qad_learning_rate must be > 0, got {self.qad_learning_rate}")
        check_choice("gguf_writer", self.gguf_writer, GGUF_WRITERS)
        if self.gguf_embedding_type is not None:
            check_choice("gguf_embedding_type", self.gguf_embedding_type.upper(), GGUF_EMBEDDING_TYPES)
            self.gguf_embedding_type = self.gguf_embedding_type.upper()
        check_choice("compute_dtype", self.compute_dtype, COMPUTE_DTYPES)
        check_choice("calibration_method", self.calibration_method, CALIBRATION_METHODS)
        check_choice("qad_start", self.qad_start, QAD_STARTS)
        if self.group_size < 1:
            raise HfCompressError(f"group_size must be >= 1, got {self.group_size}")
        if self.calibration_samples < 1:
            raise HfCompressError(f"calibration_samples must be >= 1, got {self.calibration_samples}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class QuantizationConfig(QuantizationOptions):
    """Settings of ``quantize``: the method and its options."""

    method: str = field(
        default="onnx-int8-dynamic",
        metadata={
            "help": "bnb-int8 (LLM.int8), bnb-nf4, bnb-fp4 (bitsandbytes 4-bit); onnx-fp32 (export only), "
            "onnx-int8-dynamic, onnx-int8-static (ONNX Runtime through Optimum); torchao-int8 (int8 weight-only, "
            "PyTorch-native, safetensors); gguf-f16, gguf-bf16, gguf-q8_0, gguf-q6_k, gguf-q5_k_m, gguf-q5_0, "
            "gguf-q4_k_m, gguf-q4_k_s, gguf-q4_1, gguf-q4_0, gguf-iq4_nl, gguf-iq4_xs (causal LMs, llama.cpp; the "
            "K-quants and IQ types through llama.cpp's tools); "
            "gptq-w4a16, awq-w4a16, gptq-w8a8 (causal LMs, compressed-tensors for vLLM/SGLang, via llmcompressor); "
            "qad-w4a16, qad-gguf-q4_0 (causal LMs: quantization-aware distillation into compressed-tensors W4A16 or "
            "GGUF Q4_0, trained on the calibration data)."
        },
    )

    def __post_init__(self):
        check_choice("quantization method", self.method, METHODS)
        super().__post_init__()

    @property
    def backend(self) -> str:
        return METHODS[self.method][0]
