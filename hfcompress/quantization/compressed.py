"""GPTQ, AWQ and W8A8 through ``llmcompressor`` (the vLLM project's library), saved in the compressed-tensors
format that vLLM and SGLang serve and transformers reloads (``AutoModelForCausalLM.from_pretrained``, with the
``compressed-tensors`` package installed).

    quantize("outputs/distill_llm/student", "student-gptq", method="gptq-w4a16", group_size=64,
             calibration_dataset=train_rows, text_column="text")

The methods, one-shot and calibrated on the caller's own text (or chat rendered with the chat template):
- ``gptq-w4a16``: 4-bit symmetric weights in groups of ``group_size`` columns, chosen by GPTQ (each column's
  rounding error is compensated on the columns not yet quantized, using the calibration activations' Hessian);
  activations stay in full precision. Stored packed, eight 4-bit values per int32 (``pack-quantized``).
- ``awq-w4a16``: activation-aware scaling of the weights (AWQ) first, then 4-bit asymmetric weights in groups
  of ``group_size`` (round to nearest, with a zero point).
- ``gptq-w8a8``: 8-bit weights (one scale per output channel, chosen by GPTQ) and 8-bit activations quantized
  per token at run time (``int-quantized``): vLLM runs it with int8 kernels; transformers on CPU simulates it.
The LM head (the tied embedding) stays in full precision in all three, as in llmcompressor's own examples;
``compute_dtype`` (float32 by default; bfloat16 or float16, as vLLM serves W4A16) is the dtype the model is
calibrated and saved in, and so the dtype of everything left unquantized.

What is checked before any work: the model is a causal LM; under a grouped method, ``group_size`` divides the
input size of every linear layer (SmolLM2's 576 columns take 64, not the usual 128); and the calibration text
holds at least as many tokens as the widest layer's input, below which GPTQ's Hessian estimate is singular and
AWQ's activation statistics say little.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from ..errors import HfCompressError
from ..modeling import is_causal_lm, per_layer_shapes

# method -> (compressed-tensors preset scheme, algorithm)
SCHEMES = {"gptq-w4a16": ("W4A16", "gptq"), "awq-w4a16": ("W4A16_ASYM", "awq"), "gptq-w8a8": ("W8A8", "gptq")}
GROUPED = ("gptq-w4a16", "awq-w4a16")  # the methods that take group_size
ENGINES = "vLLM and SGLang (compressed-tensors), transformers with `pip install compressed-tensors`"
IGNORED = ["lm_head"]  # the output projection stays in full precision


def linear_inputs(config: dict) -> dict[str, int]:
    """The input sizes of a decoder layer's linear layers, by the config field they come from."""
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    sizes = {"hidden_size": config["hidden_size"], "intermediate_size": config["intermediate_size"]}
    if heads * head_dim != config["hidden_size"]:  # o_proj reads the concatenated heads
        sizes["num_attention_heads x head_dim"] = heads * head_dim
    return sizes


def check_compressed_source(config: dict, method: str, group_size: int) -> None:
    """A one-line error for a model or a group size the method can't take, before any work."""
    architectures = config.get("architectures") or []
    if not is_causal_lm(config):
        raise HfCompressError(
            f"{method} quantizes causal LMs (an *ForCausalLM model), got architectures {architectures or 'unknown'}"
        )
    for key in per_layer_shapes(config):
        raise HfCompressError(f"{method} needs every layer to have the same shape; {key} differs per layer")
    if method in GROUPED:
        if group_size < 1:
            raise HfCompressError(f"group_size must be >= 1, got {group_size}")
        sizes = linear_inputs(config)
        bad = {k: v for k, v in sizes.items() if v % group_size}
        if bad:
            common = divisors_of_all(list(sizes.values()))
            raise HfCompressError(
                f"{method} with group_size {group_size}: {', '.join(f'{k} {v}' for k, v in bad.items())} doesn't "
                f"divide by it; group sizes that divide every layer: {', '.join(map(str, common))}"
            )


def divisors_of_all(values: list[int]) -> list[int]:
    """Powers of two (16 and up) dividing every value, largest first: the group sizes kernels support."""
    return [g for g in (256, 128, 64, 32, 16) if all(v % g == 0 for v in values)]


def calibration_rows(dataset, tokenizer, text_column: str, samples: int, max_length: int, min_tokens: int, seed=0):
    """Up to ``samples`` rows of ``input_ids`` (and ``attention_mask``), each at most ``max_length`` tokens, from
    raw text in ``text_column``, chat ``messages`` (rendered with the chat template) or rows already tokenized.
    Refuses a set with fewer than ``min_tokens`` tokens in all."""
    import datasets

    if dataset is None:
        raise HfCompressError(
            "GPTQ/AWQ/W8A8 need calibration data: pass calibration_dataset (the run's own training text or chat)"
        )
    if isinstance(dataset, list):
        dataset = datasets.Dataset.from_list(dataset)
    columns = dataset.column_names
    dataset = dataset.shuffle(seed=seed).select(range(min(samples, len(dataset))))
    if "input_ids" in columns:
        rows = [list(ids)[:max_length] for ids in dataset["input_ids"]]
    elif text_column in columns:
        rows = [tokenizer(t, truncation=True, max_length=max_length)["input_ids"] for t in dataset[text_column]]
    elif "messages" in columns:
        if not getattr(tokenizer, "chat_template", None):
            raise HfCompressError("calibration data holds chat messages but the tokenizer has no chat template")
        texts = [tokenizer.apply_chat_template(m, tokenize=False) for m in dataset["messages"]]
        rows = [tokenizer(t, truncation=True, max_length=max_length, add_special_tokens=False)["input_ids"]
                for t in texts]  # fmt: skip
    else:
        raise HfCompressError(
            f"calibration data needs a {text_column!r} text column, 'messages' or 'input_ids'; it has "
            f"{', '.join(columns)}"
        )
    rows = [r for r in rows if r]
    tokens = sum(len(r) for r in rows)
    if tokens < min_tokens:
        raise HfCompressError(
            f"calibration set too small: {tokens} tokens in {len(rows)} rows; these layers need at least "
            f"{min_tokens} (the widest layer's input size): raise calibration_samples or max_length"
        )
    return datasets.Dataset.from_dict({"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows]})


def recipe(method: str, group_size: int) -> list:
    """The llmcompressor modifiers of ``method``."""
    from compressed_tensors.quantization import preset_name_to_scheme

    preset, algorithm = SCHEMES[method]
    scheme = preset_name_to_scheme(preset, ["Linear"])
    if method in GROUPED:
        scheme.weights.group_size = group_size
    groups = {"group_0": scheme}
    if algorithm == "awq":
        from llmcompressor.modifiers.quantization import QuantizationModifier
        from llmcompressor.modifiers.transform import AWQModifier

        return [AWQModifier(), QuantizationModifier(config_groups=groups, ignore=IGNORED)]
    from llmcompressor.modifiers.gptq import GPTQModifier

    return [GPTQModifier(config_groups=groups, ignore=IGNORED)]


def quantize_compressed(model_dir, out, config, calibration_dataset, text_column: str, max_length: int) -> None:
    """One-shot ``config.method`` on the model in ``model_dir``; the compressed checkpoint goes to ``out``."""
    import torch
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_config = json.loads((Path(model_dir) / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    calibration = calibration_rows(
        calibration_dataset, tokenizer, text_column, config.calibration_samples, max_length,
        min_tokens=max(linear_inputs(model_config).values()),
    )  # fmt: skip
    # compute_dtype: the dtype the model is calibrated and saved in (the unquantized embedding, norms and scales);
    # bfloat16/float16 is how W4A16 checkpoints are usually served ("A16") and halves what stays unquantized
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, config.compute_dtype))
    with _cpu_without_pinned_memory():
        oneshot(
            model=model,
            tokenizer=tokenizer,
            dataset=calibration,
            recipe=recipe(config.method, config.group_size),
            num_calibration_samples=len(calibration),
            max_seq_length=max_length,
            shuffle_calibration_samples=False,
        )
    model.save_pretrained(out, save_compressed=True)
    (Path(out) / "recipe.yaml").unlink(missing_ok=True)  # llmcompressor's own log of the run; the record says it


@contextlib.contextmanager
def _cpu_without_pinned_memory():
    """AWQ in llmcompressor 0.14 pins its cached activations in page-locked memory for faster copies to the
    GPU, which raises "Cannot access accelerator device when none is available" on a machine without one. Pinning
    only speeds up host-to-device copies, so without an accelerator it is skipped; with one nothing changes."""
    import torch

    accelerator = torch.cuda.is_available() or (hasattr(torch, "accelerator") and torch.accelerator.is_available())
    try:
        from llmcompressor.pipelines.cache import IntermediatesCache
    except ImportError:  # a later release moved it: nothing to skip
        IntermediatesCache = None  # noqa: N806
    if accelerator or not hasattr(IntermediatesCache, "pin_memory"):
        yield
        return
    original = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = lambda cache, *args, **kwargs: None
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original
