"""Quantized causal LMs: ONNX Runtime int8 through Optimum's ``ORTModelForCausalLM`` (with the KV cache) and
bitsandbytes 8/4-bit. Both reload with their library's own ``from_pretrained``; ``hfcompress.evaluation.lm``
measures them like PyTorch models (perplexity, bits per byte, generation and prompt tokens/s).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import HfCompressError
from .config import QuantizationConfig
from .onnx import ONNX_FILE, QUANTIZED_SUFFIX, quantize_onnx, session_options


def export_onnx_causal_lm(model_dir: str | Path, out: str | Path) -> None:
    """Export to ``out/model.onnx`` (fp32) with past key/values inputs and outputs (the KV cache)."""
    from optimum.onnxruntime import ORTModelForCausalLM

    try:
        model = ORTModelForCausalLM.from_pretrained(model_dir, export=True, use_cache=True)
    except (ValueError, KeyError, NotImplementedError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HfCompressError(f"Optimum can't export {model_dir} to ONNX: {reason}") from None
    model.save_pretrained(out)


def quantize_onnx_causal_lm(model_dir: str | Path, out: str | Path, config: QuantizationConfig | None = None):
    """Export, then dynamic int8 (``config.preset`` kernels) into ``out/model_quantized.onnx``."""
    config = config or QuantizationConfig(method="onnx-int8-dynamic")
    if config.method != "onnx-int8-dynamic":
        raise HfCompressError(f"causal LMs take onnx-int8-dynamic here, got {config.method}")
    exported = Path(out) / "fp32"
    export_onnx_causal_lm(model_dir, exported)
    quantize_exported_causal_lm(exported, out, config)


def quantize_exported_causal_lm(exported: str | Path, out: str | Path, config: QuantizationConfig) -> None:
    """Dynamic int8 of an ``export_onnx_causal_lm`` folder into ``out``, leaving in fp32 the output projection
    (``keep_output_fp32``) and the MatMuls named by ``keep_fp32``."""
    exported = Path(exported)
    excluded = [output_projection(exported / ONNX_FILE)] if config.keep_output_fp32 else []
    if config.keep_fp32:
        excluded += matmuls_named(exported / ONNX_FILE, [p.strip() for p in config.keep_fp32.split(",") if p.strip()])
    quantize_onnx(exported, out, config, nodes_to_exclude=excluded)
    for name in exported.iterdir():  # config, generation config and tokenizer files travel with the model
        if not name.name.startswith("model") and not (Path(out) / name.name).exists():
            (Path(out) / name.name).write_bytes(name.read_bytes())


def matmuls_named(onnx_file: str | Path, parts: list[str]) -> list[str]:
    """The MatMul nodes whose name contains one of ``parts``; none is a one-line error with an example name."""
    import onnx

    graph = onnx.load(str(onnx_file), load_external_data=False).graph
    matmuls = [node.name for node in graph.node if node.op_type in ("MatMul", "Gemm")]
    chosen = [name for name in matmuls if any(part in name for part in parts)]
    if not chosen:
        raise HfCompressError(
            f"keep_fp32 {', '.join(parts)}: no MatMul node name contains it; names look like "
            f"{matmuls[0] if matmuls else '(no MatMul)'}"
        )
    return chosen


def output_projection(onnx_file: str | Path) -> str:
    """The name of the MatMul that makes the ``logits`` output (the LM head), found by walking back from it."""
    import onnx

    graph = onnx.load(str(onnx_file), load_external_data=False).graph
    producer = {output: node for node in graph.node for output in node.output}
    name = "logits"
    for _ in range(8):  # a Cast or a Reshape may stand between the MatMul and the output
        node = producer.get(name)
        if node is None:
            break
        if node.op_type in ("MatMul", "Gemm"):
            return node.name
        name = node.input[0]
    raise HfCompressError(f"{onnx_file}: no MatMul makes the logits output; keep_output_fp32 can't apply")


def load_onnx_causal_lm(folder: str | Path, quantized: bool = True, threads: int | None = None):
    from optimum.onnxruntime import ORTModelForCausalLM

    name = f"model_{QUANTIZED_SUFFIX}.onnx" if quantized else ONNX_FILE
    model = ORTModelForCausalLM.from_pretrained(
        folder, file_name=name, use_cache=True, session_options=session_options(threads=threads)
    )
    head_dim = getattr(model.config, "head_dim", None)
    if head_dim and getattr(model, "embed_size_per_head", head_dim) != head_dim:
        # optimum-onnx 0.1.0 sizes the empty KV cache as hidden_size / num_attention_heads for Llama, which is
        # wrong once width pruning made head_dim explicit (the exported graph itself is right)
        model.embed_size_per_head = head_dim
    return model


def load_bnb_causal_lm(model_dir: str | Path, config: QuantizationConfig):
    """A causal LM loaded in bitsandbytes int8/nf4/fp4; the LM head stays in full precision."""
    from transformers import AutoModelForCausalLM

    from .bnb import load_bnb

    if config.backend != "bitsandbytes":
        raise HfCompressError(f"load_bnb_causal_lm takes a bnb-* method, got {config.method}")
    return load_bnb(model_dir, config, model_class=AutoModelForCausalLM)
