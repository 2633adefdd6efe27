"""Transfer learning: load a pretrained model with a new head for the task's labels and fine-tune it (full,
with frozen embeddings/first layers, or LoRA/QLoRA through peft), with early stopping on the validation
metric. ``finetune`` is the one implementation: recipes/finetune.py and the teacher stage of the compression
recipes (``finetuned_teacher``) both run it. Loading a model with a head for the labels is
``hfcompress.modeling.load_classifier``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from transformers import EarlyStoppingCallback, Trainer, TrainingArguments

from .data import task_collator
from .errors import HfCompressError
from .evaluation import write_text_atomic
from .modeling import find_layer_list, load_classifier
from .training_args import stage_args

logger = logging.getLogger(__name__)
TEACHER_RECORD = "hfcompress_finetune.json"

LORA_TARGETS = r"(query|key|value|dense|q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj|qkv_proj|gate_up_proj|c_attn|c_proj|fc1|fc2)"


@dataclass
class FinetuneConfig:
    """How to fine-tune: what to freeze, LoRA/QLoRA, early stopping."""

    freeze_embeddings: bool = field(default=False, metadata={"help": "Keep the embedding layer frozen."})
    freeze_layers: int = field(
        default=0, metadata={"help": "Keep the first N transformer layers frozen; >= 0."}
    )
    early_stopping_patience: Optional[int] = field(
        default=None,
        metadata={
            "help": "Stop after N evaluations without improvement of metric_for_best_model (needs an eval_strategy; "
            "the best checkpoint is loaded at the end). None: no early stopping."
        },
    )
    use_lora: bool = field(
        default=False, metadata={"help": "Train LoRA adapters (peft) instead of all weights."}
    )
    qlora: bool = field(
        default=False,
        metadata={"help": "QLoRA: the frozen base is loaded in 4-bit nf4 (bitsandbytes); implies use_lora."},
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank; >= 1."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA path, in [0, 1)."})
    lora_target_modules: str = field(
        default="auto",
        metadata={
            "help": "'auto': the attention and MLP Linear layers inside the transformer layers, found by name for "
            "BERT- and Llama-style models; else a regex on module names. The task head is trained in full."
        },
    )

    def __post_init__(self):
        if self.freeze_layers < 0:
            raise HfCompressError(f"freeze_layers must be >= 0, got {self.freeze_layers}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise HfCompressError(
                f"early_stopping_patience must be >= 1 or null, got {self.early_stopping_patience}"
            )
        if self.lora_r < 1:
            raise HfCompressError(f"lora_r must be >= 1, got {self.lora_r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise HfCompressError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.qlora:
            self.use_lora = True

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def freeze(model, embeddings: bool, first_layers: int) -> None:
    """Stop gradients to the embeddings and/or the first ``first_layers`` transformer layers."""
    if embeddings:
        model.get_input_embeddings().requires_grad_(False)
        base = getattr(model, model.base_model_prefix, model)
        if hasattr(base, "embeddings"):  # BERT family: positions and token types too
            base.embeddings.requires_grad_(False)
    if first_layers:
        _, layers = find_layer_list(model)
        if first_layers > len(layers):
            raise HfCompressError(f"freeze_layers={first_layers} but the model has {len(layers)} layers")
        for layer in layers[:first_layers]:
            layer.requires_grad_(False)


def lora_target_regex(model, spec: str = "auto") -> str:
    """The module-name regex LoRA attaches to: by default the Linear layers inside the transformer layers."""
    if spec != "auto":
        return spec
    prefix, _ = find_layer_list(model)
    return rf"{re.escape(prefix)}\.\d+\..*{LORA_TARGETS}"


def apply_lora(model, config: FinetuneConfig, task_type: str):
    """Wrap ``model`` with LoRA adapters (peft); the task head is trained and saved in full."""
    from peft import LoraConfig, TaskType, get_peft_model

    target = lora_target_regex(model, config.lora_target_modules)
    if not any(re.fullmatch(target, name) for name, _ in model.named_modules()):
        raise HfCompressError(f"lora_target_modules {target!r} matches no module of {type(model).__name__}")
    head = [name for name, _ in model.named_children() if name != model.base_model_prefix]
    kinds = {"token_classification": TaskType.TOKEN_CLS, "causal_lm": TaskType.CAUSAL_LM}
    lora = LoraConfig(
        task_type=kinds.get(task_type, TaskType.SEQ_CLS),
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=target,
        # a classifier's new head trains in full; a causal LM's head (often tied to the embeddings) stays
        modules_to_save=None if task_type == "causal_lm" else [h for h in head if h not in ("dropout",)],
    )
    return get_peft_model(model, lora)


def load_qlora_base(name_or_path: str, label_names: list[str], task_type: str):
    """The frozen 4-bit (nf4, double-quantized) base for QLoRA, head in full precision, ready for training."""
    from peft import prepare_model_for_kbit_training

    from .assets import resolve_model
    from .quantization.backends import require_backend
    from .quantization.bnb import bnb_config, disable_avx512bf16, kept_modules
    from .quantization.config import QuantizationConfig

    require_backend("bnb-nf4")
    path = resolve_model(name_or_path)
    if task_type == "causal_lm":  # the LM head stays in full precision
        from transformers import AutoModelForCausalLM

        quantization = bnb_config(QuantizationConfig(method="bnb-nf4"), kept_modules(path, AutoModelForCausalLM))
        model = AutoModelForCausalLM.from_pretrained(path, quantization_config=quantization)
    else:
        quantization = bnb_config(QuantizationConfig(method="bnb-nf4"), kept_modules(path))
        model, _ = load_classifier(name_or_path, label_names, task_type, quantization_config=quantization)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    disable_avx512bf16(model)  # the CPU eval-then-train failure (docs/quantization.md)
    return model


def merge_adapter(model):
    """A plain transformers model with the LoRA weights merged in (``merge_and_unload``)."""
    return model.merge_and_unload()


def check_early_stopping(config: FinetuneConfig, args: TrainingArguments) -> None:
    """Early stopping needs evaluations and the best checkpoint loaded at the end."""
    if config.early_stopping_patience is not None and (
        args.eval_strategy == "no" or not args.load_best_model_at_end
    ):
        raise HfCompressError(
            "early_stopping_patience needs eval_strategy (epoch or steps), save_strategy to match and "
            "load_best_model_at_end: true"
        )


def save_finetuned(
    trainer: Trainer, tokenizer, config: FinetuneConfig, out: str | Path, reload_base=None
) -> Path:
    """Save a plain model to ``<out>/model``; with LoRA also the adapter to ``<out>/adapter``, merged onto the
    base (QLoRA: onto a full-precision base from ``reload_base()``, since merging into 4-bit weights would
    round the update away). Returns the model folder."""
    out = Path(out)
    if not config.use_lora:
        trainer.save_model(str(out / "model"))  # the main process only, under DDP
        return out / "model"
    if not trainer.args.should_save:  # another process of a DDP run: the main one saves
        return out / "model"
    trainer.model.save_pretrained(out / "adapter")
    tokenizer.save_pretrained(out / "adapter")
    if config.qlora:
        from peft import PeftModel

        final = merge_adapter(PeftModel.from_pretrained(reload_base(), out / "adapter"))
    else:
        final = merge_adapter(trainer.model)
    final.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    return out / "model"


def finetune(
    model,
    tokenizer,
    train_dataset,
    eval_dataset,
    args,
    config: FinetuneConfig | None = None,
    compute_metrics=None,
    callbacks=None,
    task_type: str = "single_label_classification",
    resume_from_checkpoint: str | None = None,
) -> Trainer:
    """Fine-tune with a plain ``Trainer`` (after freezing and LoRA as ``config`` asks); returns the Trainer.

    With ``early_stopping_patience`` the run stops when ``args.metric_for_best_model`` stops improving and
    ends with the best checkpoint loaded (``load_best_model_at_end``). ``resume_from_checkpoint``: a checkpoint
    folder of an interrupted run to continue from.
    """
    config = config or FinetuneConfig()
    callbacks = list(callbacks or [])
    check_early_stopping(config, args)
    if config.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    freeze(model, config.freeze_embeddings, config.freeze_layers)
    if config.use_lora and not hasattr(model, "peft_config"):
        model = apply_lora(model, config, task_type)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=task_collator(tokenizer, task_type),
        compute_metrics=compute_metrics,
        callbacks=callbacks,
    )
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    return trainer


# -- the teacher stage of the compression recipes ----------------------------------------------------------


def teacher_record(recipe, data_args, args) -> dict:
    """What a fine-tuned teacher depends on; a teacher saved with an equal record is reused, not retrained."""
    return {
        "base": recipe.teacher_model_name_or_path,
        "dataset": data_args.dataset_name,
        "text_column": data_args.text_column,
        "label_column": data_args.label_column,
        "max_train_samples": data_args.max_train_samples,
        "max_seq_length": data_args.max_seq_length,
        "epochs": recipe.teacher_num_train_epochs,
        "learning_rate": recipe.teacher_learning_rate,
        "batch_size": args.per_device_train_batch_size,
        "seed": args.seed,
    }


def ensure_finetuned_teacher(
    teacher,
    head_ready: bool,
    mode: str,
    tokenizer,
    tokenized,
    args: TrainingArguments,
    teacher_dir: str | Path,
    record: dict,
    compute_metrics=None,
    task_type: str = "single_label_classification",
    config: FinetuneConfig | None = None,
):
    """A teacher fine-tuned on the task: as given, reloaded from an earlier run, or trained now.

    Returns (model, folder it is saved in, or None when it was used as given). ``mode`` is 'auto' (train when
    the checkpoint has no head for these labels), 'always' or 'never'. ``record`` describes the run (base
    model, data, hyper-parameters); a teacher saved in ``teacher_dir`` with the same record is reused instead
    of trained again. The fine-tuned teacher is kept on purpose: later runs (and other recipes pointed at the
    same output folder) reuse it.
    """
    if mode == "never" or (mode == "auto" and head_ready):
        return teacher, None
    teacher_dir = Path(teacher_dir)
    record_path = teacher_dir / TEACHER_RECORD
    if record_path.exists() and json.loads(record_path.read_text()) == record:
        logger.info("Reusing the teacher fine-tuned earlier in %s", teacher_dir)
        reloaded = type(teacher).from_pretrained(  # in the dtype the teacher was given in (bf16 stays bf16)
            teacher_dir, attn_implementation=teacher.config._attn_implementation, dtype=teacher.dtype
        )
        return reloaded, teacher_dir
    logger.info("Fine-tuning the teacher on the task (%s epochs)", record.get("epochs"))
    trainer = finetune(
        teacher, tokenizer, tokenized["train"], tokenized["validation"], args, config, compute_metrics,
        task_type=task_type,
    )  # fmt: skip
    model = trainer.model
    if hasattr(model, "peft_config"):  # LoRA: the teacher is the base with the adapters merged in
        model = merge_adapter(model)
    if trainer.is_world_process_zero():
        if teacher_dir.exists():
            shutil.rmtree(teacher_dir)
        if model is trainer.model:
            trainer.save_model(str(teacher_dir))
        else:
            model.save_pretrained(teacher_dir)
            tokenizer.save_pretrained(teacher_dir)
        write_text_atomic(record_path, json.dumps(record, indent=2, sort_keys=True))
    return model, teacher_dir


def finetuned_teacher(
    recipe, data_args, args, teacher, head_ready, tokenizer, tokenized, out, compute_metrics
):
    """The compression recipes' teacher stage: ``ensure_finetuned_teacher`` with the recipe's settings, saved
    in ``<out>/teacher`` and reused by a later run with the same record. Returns (model, folder or None)."""
    teacher_args = stage_args(
        args,
        output_dir=Path(out) / "teacher_checkpoints",
        num_train_epochs=recipe.teacher_num_train_epochs,
        learning_rate=recipe.teacher_learning_rate,
        eval_strategy="no",
        save_strategy="no",
    )
    return ensure_finetuned_teacher(
        teacher,
        head_ready,
        recipe.teacher_finetune,
        tokenizer,
        tokenized,
        teacher_args,
        Path(out) / "teacher",
        teacher_record(recipe, data_args, args),
        compute_metrics,
    )


def adapted_causal_teacher(recipe, data_args, args, teacher, tokenizer, rows, out, data_format: str):
    """The causal LM recipe's teacher stage: the teacher adapted to the training rows with the LM loss, in full or
    with LoRA (``recipe.teacher_lora_r``, merged), saved in ``<out>/teacher`` and reused by a later run with the
    same record; as given when ``teacher_finetune`` is 'never'. Returns (model, folder or None)."""
    record = {
        "base": recipe.teacher_model_name_or_path, "dataset": data_args.dataset_name,
        "block_size": data_args.block_size, "max_train_tokens": data_args.max_train_tokens,
        "epochs": recipe.teacher_num_train_epochs, "learning_rate": recipe.teacher_learning_rate,
        "batch_size": args.per_device_train_batch_size, "seed": args.seed, "data_format": data_format,
        "max_train_samples": data_args.max_train_samples, "lora_r": recipe.teacher_lora_r,
        "completion_only_loss": data_args.completion_only_loss, "torch_dtype": recipe.torch_dtype,
    }  # fmt: skip
    teacher_args = stage_args(
        args, output_dir=Path(out) / "teacher_checkpoints", num_train_epochs=recipe.teacher_num_train_epochs,
        max_steps=-1, learning_rate=recipe.teacher_learning_rate, eval_strategy="no", save_strategy="no",
    )  # fmt: skip
    lora = None
    if recipe.teacher_lora_r:
        r = recipe.teacher_lora_r
        lora = FinetuneConfig(use_lora=True, lora_r=r, lora_alpha=2 * r, lora_dropout=0.0)
    return ensure_finetuned_teacher(
        teacher, False, recipe.teacher_finetune, tokenizer, rows, teacher_args, Path(out) / "teacher", record,
        task_type="causal_lm", config=lora,
    )  # fmt: skip

