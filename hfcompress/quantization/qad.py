"""Quantization-aware distillation (QAD): a causal LM trained through the exact 4-bit grid of the format it will be
served in, with its own unquantized weights as the teacher, then exported onto that grid.

    quantize("outputs/distill_llm/student", "student-qad", method="qad-w4a16", group_size=64,
             calibration_dataset=train_rows, text_column="text", max_length=512, qad_steps=200)

- ``qad-w4a16``: compressed-tensors' symmetric int4 in groups of ``group_size`` with scales in ``compute_dtype``
  (``grids.Grid('int4')``); written as a ``pack-quantized`` checkpoint that vLLM serves and transformers reloads
  with ``from_pretrained`` (with ``compressed-tensors`` installed).
- ``qad-gguf-q4_0``: GGUF Q4_0 (``grids.Grid('q4_0')``); the trained weights, baked onto the grid in fp32, go
  through the ``gguf-q4_0`` writer (llama.cpp's converter and llama-quantize, or the package's own), which
  reproduces them exactly because Q4_0 is idempotent.

Every ``nn.Linear`` but the output projection computes with its weight on the grid, recomputed from the fp32 weight
at each step (round to nearest at step 0), with a straight-through gradient; the loss is the forward KL divergence
from the unquantized model's next-token distribution (``DistillationTrainer``, alpha 1, temperature 1, chunked
through the LM head). The scales follow the weights (absmax per group, as the formats' own writers compute them);
they are not separate parameters. With ``qad_start="gptq"`` (``qad-w4a16`` only) training starts from GPTQ's model
instead, run on the same rows: its integers and scales, the scales then kept fixed, so that step 0 is exactly the
GPTQ checkpoint and the export writes the trained integers on GPTQ's scales. With ``qad_learn_scales``
(``qad-w4a16`` only) each group's scale is a parameter too, from the start's scales (absmax / 7.5, or GPTQ's),
trained with LSQ's gradient (``grids.learned_fake_quantize``), and the export writes the trained scales; Q4_0 can't
keep a trained scale, since its writer derives each block's scale from the block's weights. The output projection
(the tied embedding) stays as the format keeps it: unquantized in W4A16, llama-quantize's 6 or 8 bits (or
``gguf_embedding_type``) in GGUF; it trains like every other weight. ``qad_bf16`` runs the forward and backward
passes (the teacher's too) under bfloat16 autocast; the weights, the grid and the export stay in fp32. It pays on a
GPU or a CPU with AMX / avx512_bf16, and is refused on a CPU without them, where PyTorch's bf16 matmuls run 30 to
250x slower than fp32 (measured on an AVX2-only EPYC).

Training rows come from ``calibration_dataset`` (text, chat ``messages`` rendered with the chat template, or
``input_ids``): ``calibration_samples`` rows of at most ``max_length`` tokens, cycled for ``qad_steps`` steps of
``qad_batch_size`` rows.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import tempfile
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import TrainerCallback

from ..errors import HfCompressError
from .grids import (
    Grid,
    dequantize_weight,
    fake_quantize,
    learned_fake_quantize,
    quantize_weight,
    stored_scale,
)

METHOD_GRIDS = {"qad-w4a16": "int4", "qad-gguf-q4_0": "q4_0"}
GGUF_METHODS = {"qad-gguf-q4_0": "gguf-q4_0"}  # the gguf-* method that writes a QAD method's file


def method_grid(method: str, group_size: int, compute_dtype: str) -> Grid:
    """The grid a ``qad-*`` method trains on and exports to."""
    if METHOD_GRIDS[method] == "q4_0":
        return Grid("q4_0")
    return Grid("int4", group_size, getattr(torch, compute_dtype))


def check_qad_source(model_config: dict, config) -> None:
    """A one-line error, before any work, for a model or a setting QAD can't take."""
    from ..modeling import is_causal_lm, per_layer_shapes
    from .compressed import divisors_of_all, linear_inputs

    if not is_causal_lm(model_config):
        raise HfCompressError(f"{config.method} trains causal LMs (an *ForCausalLM model), got "
                              f"architectures {model_config.get('architectures') or 'unknown'}")  # fmt: skip
    for key in per_layer_shapes(model_config):
        raise HfCompressError(f"{config.method} needs every layer to have the same shape; {key} differs per layer")
    grid = method_grid(config.method, config.group_size, config.compute_dtype)
    sizes = linear_inputs(model_config)
    bad = {k: v for k, v in sizes.items() if v % grid.group_size}
    if bad:
        raise HfCompressError(
            f"{config.method} quantizes groups of {grid.group_size} input columns; "
            f"{', '.join(f'{k} {v}' for k, v in bad.items())} doesn't divide by it"
            + ("" if grid.kind == "q4_0" else
               f"; group sizes that divide every layer: {', '.join(map(str, divisors_of_all(list(sizes.values()))))}")
        )  # fmt: skip
    from ..runtime import accelerator_available, fast_bf16_cpu

    if config.qad_bf16 and not accelerator_available() and not fast_bf16_cpu():
        raise HfCompressError(
            "qad_bf16: this CPU has neither avx512_bf16 nor AMX, and its bf16 matmuls run 30 to 250x slower than fp32 "
            "(measured on an AVX2-only CPU); leave qad_bf16 off here, or train on a GPU or a CPU with AMX"
        )
    if config.qad_start == "gptq":
        from .backends import is_llmcompressor_available

        if grid.kind != "int4":
            raise HfCompressError(f"qad_start='gptq' is for qad-w4a16 (GPTQ writes compressed-tensors int4); "
                                  f"{config.method} starts from round to nearest: qad_start='rtn'")  # fmt: skip
        if not is_llmcompressor_available():
            raise HfCompressError("qad_start='gptq' runs GPTQ through llmcompressor, which is not installed: "
                                  "pip install 'hfcompress[llmcompressor]', or qad_start='rtn'")  # fmt: skip
    if config.qad_learn_scales and grid.kind != "int4":
        raise HfCompressError(f"qad_learn_scales is for qad-w4a16; {config.method}'s writer derives each block's "
                              "scale from its weights, so a trained scale would not survive the export")  # fmt: skip
    if config.gguf_imatrix:
        raise HfCompressError(
            f"{config.method} can't take gguf_imatrix: with an importance matrix llama-quantize searches other Q4_0 "
            "scales, which would move the trained weights off their grid"
        )


# -- training through the grid ----------------------------------------------------------------------------------


def grid_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The Linear layers that go on the grid: all but the output projection."""
    output = model.get_output_embeddings()
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and m is not output}


def _grid_forward(self, x):
    scale = getattr(self, "qad_scale", None)
    if isinstance(scale, nn.Parameter):
        return F.linear(x, learned_fake_quantize(self.weight, scale, self.qad_grid), self.bias)
    return F.linear(x, fake_quantize(self.weight, self.qad_grid, scale), self.bias)


def attach_grid(
    model: nn.Module, grid: Grid, scales: dict[str, torch.Tensor] | None = None, learn_scales: bool = False
) -> list[str]:
    """Make every grid Linear compute with its weight on ``grid`` (straight-through), on its fixed int4 scales in
    ``scales`` (by module name) if given; with ``learn_scales``, on a trainable fp32 scale per group (the module's
    ``qad_scale`` parameter, from ``scales`` or absmax / 7.5), which an optimizer made after this call trains.
    Returns their names."""
    modules = grid_linears(model)
    for name, module in modules.items():
        grid.check_width(name, module.in_features)
    if scales is not None and set(scales) != set(modules):
        raise HfCompressError(f"fixed scales for {len(scales)} modules, but the model has {len(modules)} grid linears")
    for name, module in modules.items():
        module.qad_grid = grid
        scale = scales[name] if scales is not None else None
        if learn_scales:
            start = scale if scale is not None else quantize_weight(module.weight, grid)[1]
            module.qad_scale = nn.Parameter(start.detach().to(module.weight.device, torch.float32).clone())
        elif scale is not None:
            module.qad_scale = scale
        module.forward = types.MethodType(_grid_forward, module)
    return list(modules)


def grid_scales(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trained scales of every grid Linear that ``attach_grid(..., learn_scales=True)`` gave one, by module
    name, as the checkpoint stores them (``grids.stored_scale``)."""
    return {name: stored_scale(m.qad_scale, m.qad_grid).cpu() for name, m in grid_linears(model).items()
            if isinstance(getattr(m, "qad_scale", None), nn.Parameter)}  # fmt: skip


def detach_grid(model: nn.Module) -> int:
    """Restore the plain forward of every Linear ``attach_grid`` changed; the weights stay as trained."""
    count = 0
    for module in model.modules():
        if isinstance(module, nn.Linear) and hasattr(module, "qad_grid"):
            del module.forward, module.qad_grid
            if hasattr(module, "qad_scale"):
                del module.qad_scale
            count += 1
    return count


class GridCallback(TrainerCallback):
    """Trains with every Linear but the output projection on ``grid`` (see the module docstring). With
    ``learn_scales`` the scales are parameters, which the Trainer's optimizer must see: call ``attach(model)`` before
    the Trainer is made; ``learned`` holds them, as stored, after training."""

    def __init__(self, grid: Grid, scales: dict[str, torch.Tensor] | None = None, learn_scales: bool = False):
        self.grid, self.scales, self.learn_scales = grid, scales, learn_scales
        self.modules: list[str] = []
        self.learned: dict[str, torch.Tensor] = {}

    def attach(self, model: nn.Module) -> None:
        if not self.modules:
            self.modules = attach_grid(model, self.grid, self.scales, self.learn_scales)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.learn_scales and not self.modules:
            raise HfCompressError("GridCallback(learn_scales=True): call attach(model) before making the Trainer, "
                                  "so that its optimizer trains the scales")  # fmt: skip
        self.attach(model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.learned = grid_scales(model)
        detach_grid(model)
        self.modules = []


def train_through_grid(model_dir: str | Path, grid: Grid, rows, config, work: Path, start: Path | None = None):
    """The model in ``model_dir`` trained through ``grid`` with itself as the teacher, from the GPTQ checkpoint in
    ``start`` if given (its scales), else from round to nearest; returns (model, facts, the scales to export onto:
    the trained ones with ``config.qad_learn_scales``, GPTQ's fixed ones, or None where they follow the weights)."""
    from ..runtime import mixed_precision_env_kept

    with mixed_precision_env_kept():
        return _train_through_grid(model_dir, grid, rows, config, work, start)


def _train_through_grid(model_dir: str | Path, grid: Grid, rows, config, work: Path, start: Path | None):
    from ..distillation import DistillationConfig, DistillationTrainer
    from ..modeling import load_causal_lm, load_tokenizer
    from ..runtime import accelerator_available

    tokenizer = load_tokenizer(str(model_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    teacher = load_causal_lm(str(model_dir), "float32")
    student = load_causal_lm(str(model_dir), "float32")
    scales = None if start is None else gptq_start(student, start, grid)
    grid_callback = GridCallback(grid, scales, config.qad_learn_scales)
    grid_callback.attach(student)  # before the Trainer makes its optimizer: trainable scales are parameters
    first = grid_scales(student)
    args = DistillationConfig(
        output_dir=str(work / "qad-training"), max_steps=config.qad_steps, learning_rate=config.qad_learning_rate,
        per_device_train_batch_size=config.qad_batch_size, lr_scheduler_type="cosine", warmup_steps=math.ceil(0.05 * config.qad_steps),
        alpha=1.0, temperature=1.0, divergence="forward_kl", bf16=config.qad_bf16, save_strategy="no",
        use_cpu=not accelerator_available(),  # transformers 4.57 takes bf16 on a CPU only when told so
        report_to=[], logging_steps=max(1, config.qad_steps // 10), seed=0, remove_unused_columns=False,
        disable_tqdm=True,
    )  # fmt: skip
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=rows, processing_class=tokenizer,
        callbacks=[grid_callback],
    )  # fmt: skip
    started = time.perf_counter()
    trainer.train()
    minutes = (time.perf_counter() - started) / 60
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    tokens = sum(len(ids) for ids in rows["input_ids"])
    steps_per_epoch = math.ceil(len(rows) / config.qad_batch_size)
    facts = {
        "steps": config.qad_steps, "batch_size": config.qad_batch_size, "learning_rate": config.qad_learning_rate,
        "bf16": config.qad_bf16, "rows": len(rows), "epochs": round(config.qad_steps / steps_per_epoch, 3),
        "tokens_seen": int(tokens * config.qad_steps / steps_per_epoch),  # the rows' tokens, times the epochs
        "minutes": round(minutes, 2),
        "kd_loss_first": losses[0] if losses else None, "kd_loss_last": losses[-1] if losses else None,
        "grid": {"kind": grid.kind, "group_size": grid.group_size, "scale_dtype": str(grid.scale_dtype)},
        "modules": len(grid_linears(trainer.model)), "start": "gptq" if start is not None else "rtn",
        "scales": "learned" if config.qad_learn_scales else "fixed" if start is not None else "absmax",
    }  # fmt: skip
    if config.qad_learn_scales:  # how far training moved them: the mean relative change over all groups
        scales = grid_callback.learned
        moved = [(scales[k].float() / first[k].float() - 1).abs() for k in scales]
        facts["scale_change_mean"] = float(torch.cat([m.flatten() for m in moved]).mean())
    shutil.rmtree(work / "qad-training", ignore_errors=True)
    return trainer.model.float().cpu().eval(), facts, scales


@torch.no_grad()
def gptq_start(model: nn.Module, gptq_dir: Path, grid: Grid) -> dict[str, torch.Tensor]:
    """Set every grid Linear of ``model`` to its weight in the symmetric int4 checkpoint in ``gptq_dir`` (what
    ``gptq-w4a16`` writes: ``weight_packed``, ``weight_scale``), dequantized exactly; returns the scales by module
    name, which training then keeps fixed."""
    from safetensors.torch import load_file

    tensors = {}
    for file in sorted(Path(gptq_dir).glob("*.safetensors")):
        tensors |= load_file(file)
    scales = {}
    for name, module in grid_linears(model).items():
        packed, scale = tensors.get(f"{name}.weight_packed"), tensors.get(f"{name}.weight_scale")
        if packed is None or scale is None or f"{name}.weight_zero_point" in tensors or f"{name}.weight_g_idx" in tensors:
            raise HfCompressError(f"{gptq_dir} holds no symmetric int4 weight for {name} in groups (weight_packed "
                                  "and weight_scale, no zero point or g_idx) to start QAD from")  # fmt: skip
        q = unpack_int4(packed, module.in_features)
        scale = scale.to(grid.scale_dtype)
        module.weight.copy_(dequantize_weight(q, scale, grid, module.weight.dtype))
        scales[name] = scale
    return scales


# -- export -----------------------------------------------------------------------------------------------------


@torch.no_grad()
def bake_grid(model: nn.Module, grid: Grid) -> int:
    """Write each grid Linear's weight as the format reads it back (fp32 model): what the GGUF writers re-quantize
    to the same integers and scales."""
    modules = grid_linears(model)
    for module in modules.values():
        q, scale = quantize_weight(module.weight, grid)
        module.weight.copy_(dequantize_weight(q, scale, grid, module.weight.dtype))
    return len(modules)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """int4 values ``(rows, columns)`` in -8..7 packed eight to an int32 along the columns, the first value in the
    lowest bits, each offset by 8 (compressed-tensors' ``pack_to_int32`` at 4 bits)."""
    rows, columns = q.shape
    if columns % 8:
        raise HfCompressError(f"int4 packing needs a multiple of 8 columns, got {columns}")
    unsigned = (q.to(torch.int64) + 8).reshape(rows, columns // 8, 8)
    words = (unsigned << (4 * torch.arange(8, dtype=torch.int64))).sum(-1)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def unpack_int4(packed: torch.Tensor, columns: int) -> torch.Tensor:
    """``pack_int4`` undone: int8 values in -8..7 ``(rows, columns)``."""
    words = packed.to(torch.int64) & 0xFFFFFFFF
    values = (words[..., None] >> (4 * torch.arange(8, dtype=torch.int64))) & 0xF
    return (values.reshape(packed.shape[0], -1)[:, :columns] - 8).to(torch.int8)


def compressed_tensors_config(grid: Grid, ignore: list[str]) -> dict:
    """The ``quantization_config`` of a symmetric int4 W4A16 ``pack-quantized`` checkpoint (what llmcompressor
    writes for ``gptq-w4a16``), which transformers and vLLM read."""
    weights = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": grid.group_size,
               "dynamic": False, "actorder": None, "observer": "minmax", "observer_kwargs": {}, "block_structure": None}  # fmt: skip
    return {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "quantization_status": "compressed",
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights, "input_activations": None,
                                      "output_activations": None, "format": "pack-quantized"}},  # fmt: skip
        "ignore": ignore,
        "kv_cache_scheme": None,
        "global_compression_ratio": None,
        "sparsity_config": {},
        "transform_config": {},
    }


@torch.no_grad()
def save_compressed_w4a16(model: nn.Module, out: Path, grid: Grid, scales: dict[str, torch.Tensor] | None = None) -> None:
    """``model`` (fp32, trained through the int4 ``grid``) as a compressed-tensors pack-quantized checkpoint in
    ``out``: each grid Linear's integers and scales from ``grids.quantize_weight`` (on its fixed ``scales``, by
    module name, where training kept them fixed), the rest in the scale dtype."""
    from safetensors.torch import load_file, save_file

    modules = grid_linears(model)
    scales = scales or {}
    quantized = {f"{name}.weight": quantize_weight(m.weight, grid, scales.get(name)) for name, m in modules.items()}
    output = [name for name, m in model.named_modules() if m is model.get_output_embeddings()]
    copy.deepcopy(model).to(grid.scale_dtype).save_pretrained(out, safe_serialization=True)  # model stays fp32
    index_file = out / "model.safetensors.index.json"
    index = json.loads(index_file.read_text()) if index_file.exists() else None
    for file in sorted(out.glob("*.safetensors")):
        tensors = load_file(file)
        for key in [k for k in tensors if k in quantized]:
            q, scale = quantized[key]
            base = key[: -len(".weight")]
            del tensors[key]
            tensors |= {f"{base}.weight_packed": pack_int4(q), f"{base}.weight_scale": scale.contiguous(),
                        f"{base}.weight_shape": torch.tensor(list(q.shape), dtype=torch.int64)}  # fmt: skip
            if index is not None:
                del index["weight_map"][key]
                for suffix in ("packed", "scale", "shape"):
                    index["weight_map"][f"{base}.weight_{suffix}"] = file.name
        save_file(tensors, file, metadata={"format": "pt"})
    if index is not None:
        index_file.write_text(json.dumps(index, indent=2) + "\n")
    config = json.loads((out / "config.json").read_text())
    config["quantization_config"] = compressed_tensors_config(grid, output)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def quantize_qad(model_dir, work: Path, config, calibration_dataset, text_column: str, max_length: int) -> dict:
    """``config.method`` (``qad-*``) on the model in ``model_dir``, written into ``work``; returns the record's
    training facts."""
    from ..modeling import load_tokenizer
    from .compressed import calibration_rows

    model_dir = Path(model_dir)
    grid = method_grid(config.method, config.group_size, config.compute_dtype)

    rows = calibration_rows(calibration_dataset, load_tokenizer(str(model_dir)), text_column,
                            config.calibration_samples, max_length, min_tokens=1)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix=".qad-start-", dir=work) as tmp:
        start = None
        if config.qad_start == "gptq":  # GPTQ's checkpoint on the same rows, the configured group size and dtype
            from .compressed import quantize_compressed
            from .config import QuantizationConfig

            start, started = Path(tmp), time.perf_counter()
            gptq = QuantizationConfig(**{**config.to_dict(), "method": "gptq-w4a16", "calibration_samples": len(rows)})
            quantize_compressed(model_dir, start, gptq, rows, text_column, max_length)
            start_minutes = round((time.perf_counter() - started) / 60, 2)
        rows = rows.add_column("labels", rows["input_ids"])  # every token is learned from the teacher
        model, facts, scales = train_through_grid(model_dir, grid, rows, config, work, start)
    if start is not None:
        facts["start_minutes"] = start_minutes
    return {"qad": facts, **export_trained(model, model_dir, work, config, scales)}


def export_trained(model: nn.Module, model_dir: Path, work: Path, config, scales=None) -> dict:
    """A model trained through ``config.method``'s grid (on fixed int4 ``scales`` if given), written into ``work``
    in the method's format (the tokenizer is the caller's); returns what the record keeps of the writer."""
    from .config import QuantizationConfig

    grid = method_grid(config.method, config.group_size, config.compute_dtype)
    if config.method == "qad-w4a16":
        save_compressed_w4a16(model, work, grid, scales)
        return {}
    bake_grid(model, grid)
    with tempfile.TemporaryDirectory(prefix=".qad-", dir=work) as tmp:
        baked = Path(tmp) / "baked"
        model.save_pretrained(baked, safe_serialization=True)  # fp32: Q4_0 values are exact in fp32, not in bf16
        for file in Path(model_dir).iterdir():
            if file.is_file() and not (baked / file.name).exists() and not file.name.endswith(".safetensors"):
                shutil.copyfile(file, baked / file.name)  # tokenizer, chat template, generation config
        gguf_config = QuantizationConfig(**{**config.to_dict(), "method": GGUF_METHODS[config.method]})
        from .gguf_export import export_gguf, gguf_file_name, gguf_type
        from .gguf_llama_cpp import gguf_writer, write_gguf_with_llama_cpp

        if gguf_writer(gguf_config) == "llama.cpp":
            return write_gguf_with_llama_cpp(baked, work, gguf_config)
        export_gguf(baked, work / gguf_file_name(gguf_config.method), gguf_type(gguf_config.method))
        return {"writer": "hfcompress"}
