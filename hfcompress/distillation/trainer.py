"""``DistillationTrainer``: a ``Trainer`` whose loss adds distillation terms from a frozen teacher.

Only public hooks are overridden: ``compute_loss`` (the loss), ``create_optimizer`` (adds the learned
hidden-state projections when widths differ), ``training_step`` (averages those projections' gradients
across processes; the student's own gradients are synchronised by DDP as usual) and ``log`` (adds the loss
terms). Pruning and other step-driven behaviour compose through callbacks.

The teacher is frozen, in eval mode, without gradients, on the student's device, optionally in lower
precision. Evaluation reports the student's own task loss, so eval loss is comparable with a plain Trainer's.
"""

from __future__ import annotations

import logging
import os
import random
from collections import defaultdict

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from ..data import EXAMPLE_INDEX, TEACHER_PREFIX, DistillationDataCollator, same_vocabulary
from ..data.causal_lm import ensure_pad_token
from ..data.unlabelled import ALIGNMENT, aligned_fraction
from ..errors import HfCompressError
from ..modeling import is_causal_lm, logit_transform, stop_token_ids
from . import causal, losses
from .cache import (
    compute_teacher_logits,
    dataset_fingerprint,
    keyed_cache_path,
    load_or_build_teacher_cache,
    load_or_build_tensors,
    teacher_fingerprint,
    vocabulary_fingerprint,
)
from .config import DistillationConfig
from .layer_maps import resolve_layer_maps

logger = logging.getLogger(__name__)
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
_NOT_STUDENT_INPUTS = (EXAMPLE_INDEX, ALIGNMENT)
MIN_ALIGNED = 0.5  # share of student tokens with a teacher partner below which hidden terms are refused
PROJECTIONS_FILE = "distillation_projections.safetensors"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_shared_vocabulary(student, teacher, student_tokenizer=None, teacher_tokenizer=None) -> None:
    """Raise unless student and teacher can read the same input ids."""
    if student_tokenizer is not None and teacher_tokenizer is not None:
        if not same_vocabulary(student_tokenizer, teacher_tokenizer):
            raise HfCompressError(
                "teacher and student tokenizers have different vocabularies but share one tokenization; "
                "tokenize separately (teacher_* columns, tokenizer_mode 'separate') or use one tokenizer"
            )
    student_vocab = student.get_input_embeddings().num_embeddings
    teacher_vocab = teacher.get_input_embeddings().num_embeddings
    if student_vocab != teacher_vocab:
        raise HfCompressError(
            f"teacher vocabulary ({teacher_vocab} ids) and student vocabulary ({student_vocab} ids) differ, so they "
            "can't share one tokenization; tokenize separately (teacher_* columns, tokenizer_mode 'separate')"
        )


def shard_frozen_layers(teacher: nn.Module) -> None:
    """Shard each transformer layer of a frozen model across the processes (FSDP2 ``fully_shard``, any
    backend: gloo on CPU too). Embeddings, final norm and head stay whole; every process must run the
    model's forward together, as training steps do."""
    import torch.distributed as dist
    from torch.distributed.fsdp import FSDPModule, fully_shard

    from ..modeling import find_layer_list

    if not (dist.is_available() and dist.is_initialized()):
        raise HfCompressError(
            "shard_teacher needs a process group: launch with accelerate and several processes"
        )
    for layer in find_layer_list(teacher)[1]:
        if not isinstance(layer, FSDPModule):  # a teacher reused by a later stage is sharded already
            fully_shard(layer)
    local = sum(getattr(p, "_local_tensor", p).numel() for p in teacher.parameters())
    logger.info(
        "Teacher sharded over %d processes: this one holds %d of its %d parameters",
        dist.get_world_size(), local, sum(p.numel() for p in teacher.parameters()),
    )  # fmt: skip


def check_two_tokenizer_terms(args: DistillationConfig, train_dataset) -> None:
    """With two tokenizations, hidden-state terms run on the character-span alignment of the tokens and need
    most tokens aligned; attention maps would need every query and key aligned and are refused."""
    allowed = "alpha, logits_mse_weight, and hidden_mse_weight/hidden_cosine_weight on aligned tokens"
    if args.attention_weight > 0:
        raise HfCompressError(
            f"attention_weight needs one tokenization for teacher and student; with two tokenizers use {allowed}"
        )
    if not args.uses_hidden_states:
        return
    columns = getattr(train_dataset, "column_names", None) or []
    if ALIGNMENT not in columns:
        raise HfCompressError(
            "hidden-state terms across two tokenizers need the token alignment that tokenize_dataset writes with "
            "two fast tokenizers; without it use alpha and logits_mse_weight only"
        )
    share = aligned_fraction(train_dataset)
    if share < MIN_ALIGNED:
        raise HfCompressError(
            f"only {share:.0%} of student tokens cover the same characters as a teacher token (hidden-state terms "
            f"need {MIN_ALIGNED:.0%}); these tokenizers can't be aligned: use alpha and logits_mse_weight only"
        )


class _ProjectionsCallback(TrainerCallback):
    """Housekeeping for the learned projections, which live outside the model: clear their gradients after
    each optimizer step (Trainer zeroes only the model's), and write them into each checkpoint folder so a
    resumed run continues them."""

    def __init__(self, projections: nn.ModuleList):
        self.projections = projections

    def on_step_end(self, args, state, control, **kwargs):
        self.projections.zero_grad(set_to_none=True)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
            os.makedirs(folder, exist_ok=True)
            state_dict = {k: v.detach().cpu().contiguous() for k, v in self.projections.state_dict().items()}
            save_file(state_dict, os.path.join(folder, PROJECTIONS_FILE))


class DistillationTrainer(Trainer):
    """Trains ``model`` (the student) on the task loss plus distillation terms from ``teacher_model``."""

    def __init__(
        self,
        model=None,
        teacher_model: nn.Module | None = None,
        args: DistillationConfig | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        teacher_processing_class=None,
        **kwargs,
    ):
        if not isinstance(args, DistillationConfig):
            raise HfCompressError(
                f"DistillationTrainer needs args=DistillationConfig(...), got {type(args).__name__}"
            )
        if teacher_model is None:
            raise HfCompressError("DistillationTrainer needs a teacher_model")
        columns = getattr(train_dataset, "column_names", None) or []
        self.separate_tokenization = any(c.startswith(TEACHER_PREFIX) for c in columns)
        self.causal = is_causal_lm(model)
        self.vocab_size = None
        if self.causal:
            if self.separate_tokenization or args.uses_teacher_internals:
                raise HfCompressError(
                    "causal LM distillation takes one tokenization and the logit terms (alpha, divergence); "
                    "hidden-state, attention and two-tokenizer terms are for encoders"
                )
            if args.lm_chunk_size > 0:  # the chunked path applies the family's logit transform itself
                for m in (model, teacher_model):
                    logit_transform(causal.unwrap(m).config)  # an unknown rescaling family: refused now
            if processing_class is not None:
                ensure_pad_token(processing_class)
            self.vocab_size = causal.common_vocab_size(
                model, teacher_model, processing_class, teacher_processing_class
            )
        elif self.separate_tokenization:
            check_two_tokenizer_terms(args, train_dataset)
            if data_collator is None and teacher_processing_class is None:
                raise HfCompressError(
                    "train_dataset has teacher_* columns: pass teacher_processing_class to pad them"
                )
        else:
            check_shared_vocabulary(model, teacher_model, processing_class, teacher_processing_class)
        if data_collator is None and processing_class is not None:
            data_collator = DistillationDataCollator(processing_class, teacher_processing_class)
        self._train_fingerprint = None
        self._teacher_vocabulary = (
            vocabulary_fingerprint(teacher_processing_class)
            if self.separate_tokenization and teacher_processing_class is not None
            else None
        )
        if args.cache_teacher_logits and train_dataset is not None:
            self._train_fingerprint = dataset_fingerprint(train_dataset)
            train_dataset = train_dataset.add_column(EXAMPLE_INDEX, list(range(len(train_dataset))))

        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        # Classifiers: the loss is a per-batch mean and Trainer divides it by the accumulation steps. Causal LMs: the
        # loss is weighted by the micro-batch's share of the step's label tokens (get_batch_samples, _token_weight).
        self.model_accepts_loss_kwargs = self.causal
        self.teacher = self._prepare_teacher(teacher_model)
        self.hidden_pairs, self.attention_pairs = self._layer_pairs()
        self.projections = self._build_projections()
        if self.projections is not None:
            self.add_callback(_ProjectionsCallback(self.projections))
        self._term_sums: dict[str, float] = defaultdict(float)
        self._term_steps = 0
        self._policy_rng = random.Random(args.seed)
        self.teacher_logits = (
            self._teacher_cache() if args.cache_teacher_logits and train_dataset is not None else None
        )

    # -- set-up ---------------------------------------------------------------------------------------------
    def _prepare_teacher(self, teacher: nn.Module) -> nn.Module:
        teacher.eval().requires_grad_(False)
        if self.args.teacher_dtype != "auto":
            teacher = teacher.to(_DTYPES[self.args.teacher_dtype])
        if self.args.attention_weight > 0:
            for model in (teacher, self.model):
                if getattr(model.config, "_attn_implementation", "eager") != "eager":
                    try:  # transformers 5 switches in place; 4.57's BERT falls back to eager by itself
                        model.set_attn_implementation("eager")
                    except (AttributeError, ValueError):
                        pass
        teacher = teacher.to(self.args.device)
        self._teacher_fingerprint = teacher_fingerprint(teacher) if self.args.cache_teacher_logits else None
        if self.args.shard_teacher and self.accelerator.num_processes > 1:
            shard_frozen_layers(teacher)
        return teacher

    def _layer_pairs(self):
        student_layers = getattr(self.model.config, "num_hidden_layers", None)
        teacher_layers = getattr(self.teacher.config, "num_hidden_layers", None)
        if student_layers is None or teacher_layers is None:
            if self.args.uses_teacher_internals:
                raise HfCompressError("hidden-state and attention terms need configs with num_hidden_layers")
            return [], []
        return resolve_layer_maps(self.args, student_layers, teacher_layers)

    def _build_projections(self) -> nn.ModuleList | None:
        """Learned linear maps student width -> teacher width, one per hidden pair, when the widths differ."""
        if not self.args.uses_hidden_states:
            return None
        student_width, teacher_width = self.model.config.hidden_size, self.teacher.config.hidden_size
        if student_width == teacher_width:
            return None
        layers = nn.ModuleList(nn.Linear(student_width, teacher_width) for _ in self.hidden_pairs)
        return layers.to(self.args.device)

    def _teacher_cache(self) -> torch.Tensor | dict:
        """Classifiers: the teacher's logits (a tensor). Causal LMs: its top-k log-probabilities at the training
        temperature, their ids and the tail bucket (a dict), keyed to k and the temperature too."""
        stem = "teacher_topk" if self.causal else "teacher_logits"
        key = {"teacher": self._teacher_fingerprint, "dataset": self._train_fingerprint}
        if self._teacher_vocabulary:  # two tokenizers: logits of the teacher's own tokenization
            key["teacher_tokenizer"] = self._teacher_vocabulary
        if self.causal:
            key.update(topk=str(self.args.teacher_topk), temperature=str(self.args.temperature), layout="targets")
        path = keyed_cache_path(
            self.args.teacher_cache_path or os.path.join(self.args.output_dir, f"{stem}.safetensors"), key, stem
        )
        batches = (
            self._teacher_forward,
            self.train_dataset,
            self.data_collator,
            self.args.per_device_eval_batch_size,
        )
        with self.args.main_process_first(desc="teacher cache"):  # rank 0 builds, the others load
            if self.causal:
                args = (self.args.teacher_topk, self.args.temperature, self.vocab_size)
                return load_or_build_tensors(path, key, lambda: causal.compute_teacher_topk(*batches, *args))
            return load_or_build_teacher_cache(path, key, lambda: compute_teacher_logits(*batches))

    # -- public hooks ---------------------------------------------------------------------------------------
    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        """``Trainer.train``, also restoring the learned projections when resuming from a checkpoint."""
        if resume_from_checkpoint and self.projections is not None:
            folder = (
                get_last_checkpoint(self.args.output_dir)
                if resume_from_checkpoint is True
                else resume_from_checkpoint
            )
            path = os.path.join(folder or "", PROJECTIONS_FILE)
            if not os.path.exists(path):
                raise HfCompressError(
                    f"checkpoint {folder} has no {PROJECTIONS_FILE}: it was not saved by this distillation run"
                )
            self.projections.load_state_dict(load_file(path))
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def create_optimizer(self, *args, **kwargs):
        optimizer = super().create_optimizer(*args, **kwargs)
        if self.projections is not None:
            known = {id(p) for group in optimizer.param_groups for p in group["params"]}
            new = [p for p in self.projections.parameters() if id(p) not in known]
            if new:
                optimizer.add_param_group({"params": new, "weight_decay": 0.0})
        return optimizer

    def training_step(self, model, inputs, *args, **kwargs):
        loss = super().training_step(model, inputs, *args, **kwargs)
        if self.projections is not None and self.accelerator.num_processes > 1:
            for param in self.projections.parameters():  # outside the DDP wrapper: average by hand
                if param.grad is not None:
                    param.grad = self.accelerator.reduce(param.grad, reduction="mean")
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        student_inputs = {
            k: v
            for k, v in inputs.items()
            if not k.startswith(TEACHER_PREFIX) and k not in _NOT_STUDENT_INPUTS
        }
        if not model.training:  # evaluation: the student's own task loss
            outputs = model(**student_inputs)
            return (outputs.loss, outputs) if return_outputs else outputs.loss
        if self.causal:
            loss = self._causal_lm_loss(model, inputs, num_items_in_batch)
            return (loss, None) if return_outputs else loss
        labels = student_inputs.get("labels")
        if labels is not None and labels.dim() == 1 and not labels.is_floating_point() and (labels < 0).any():
            # unlabelled rows (-100): the model's own loss is NaN on a batch of them; hard_label_loss skips them
            student_inputs.pop("labels")
        internals = self.args.uses_teacher_internals
        extra = {"output_hidden_states": True} if self.args.uses_hidden_states else {}
        if self.args.attention_weight > 0:
            extra["output_attentions"] = True
        outputs = model(**student_inputs, **extra)
        indices = inputs.get(EXAMPLE_INDEX)
        if self.teacher_logits is not None and indices is not None:
            teacher_outputs = None
            teacher_logits = self.teacher_logits[indices.cpu()].to(outputs.logits.device)
        else:
            teacher_outputs = self._teacher_forward(inputs, need_internals=internals)
            teacher_logits = teacher_outputs.logits
        terms = self._loss_terms(
            outputs,
            teacher_logits,
            teacher_outputs,
            labels,
            student_inputs.get("attention_mask"),
            inputs.get(ALIGNMENT),
        )
        loss = self._record(terms)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and self._term_steps:
            for name, total in self._term_sums.items():
                logs[f"distill_{name}"] = round(total / self._term_steps, 4)
            self._term_sums.clear()
            self._term_steps = 0
        super().log(logs, *args, **kwargs)

    # -- loss -----------------------------------------------------------------------------------------------
    def _record(self, terms: dict[str, tuple[float, torch.Tensor]]) -> torch.Tensor:
        loss = sum(weight * value for weight, value in terms.values())
        for name, (_, value) in terms.items():
            self._term_sums[name] += float(value.detach())
        self._term_steps += 1
        return loss

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The micro-batches of one optimizer step and, for causal LMs, the next-token targets they hold in all
        (``labels[..., 1:]``, on every process when ``average_tokens_across_devices``). transformers 5 counts the
        same; 4.57 counts position 0 too, which no loss predicts."""
        batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self.causal and batches and "labels" in batches[0]:
            count = sum(causal.target_count(batch["labels"]) for batch in batches)
            if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
                count = int(self.accelerator.gather(torch.tensor([count], device=device)).sum())
            num_items = count
        return batches, num_items

    def _token_weight(self, count: int, num_items_in_batch) -> float:
        """What turns this micro-batch's per-token mean into its share of the step's loss: its targets over the
        step's (``get_batch_samples``). The step's loss is then the mean over all its tokens, as one large batch
        would give, not a mean of micro-batch means (in chat data a micro-batch of 5 answer tokens weighed as much
        as one of 500). The Trainer does not divide it by the accumulation steps (``model_accepts_loss_kwargs``);
        without a count it does, and the micro-batch mean is returned as is."""
        if num_items_in_batch is None:
            return 1.0
        weight = count / max(float(num_items_in_batch), 1.0)
        if self.args.average_tokens_across_devices:  # the count covers every process; DDP averages gradients
            weight *= self.accelerator.num_processes
        return weight

    def _causal_lm_loss(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        """alpha * divergence + (1 - alpha) * LM cross-entropy over the next-token positions that count, weighted
        by this micro-batch's share of the step's tokens (``_token_weight``)."""
        args = self.args
        indices = inputs.get(EXAMPLE_INDEX)
        weight = self._token_weight(causal.target_count(inputs["labels"]), num_items_in_batch)  # before on-policy
        if causal.draw_on_policy(args.lmbda, self._policy_rng):
            pad = getattr(self.processing_class, "pad_token_id", None)
            inputs, indices = (
                causal.on_policy_inputs(
                    model, inputs, args.on_policy_prompt_tokens, args.on_policy_max_new_tokens, 1.0, pad,
                    stop_token_ids(causal.unwrap(model), self.processing_class),
                ),
                None,
            )
        model_inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids")}
        mask, targets = causal.next_token_positions(inputs["labels"])
        teacher = {}
        if self.teacher_logits is not None and indices is not None:
            rows = causal.cached_topk_rows(self.teacher_logits, indices.cpu(), int(mask.sum()))
            teacher = {name: value.to(mask.device) for name, value in rows.items()}
        fused = None
        if args.lm_chunk_size > 0:
            hidden = causal.final_hidden_states(model, model_inputs)[:, :-1][mask]
            if not teacher:
                with torch.no_grad():
                    states = causal.final_hidden_states(self.teacher, model_inputs, teacher=True)
                teacher = {
                    "teacher_hidden": states[:, :-1][mask],
                    "teacher_head": causal.OutputHead(self.teacher),
                }
                heads = (causal.plain_head_weight(causal.OutputHead(model)), causal.plain_head_weight(teacher["teacher_head"]))
                if args.divergence == "forward_kl" and None not in heads and targets.numel() > 0:
                    fused = causal.fused_lm_distillation_loss(
                        hidden, heads[0], targets, teacher["teacher_hidden"], heads[1], vocab_size=self.vocab_size,
                        kd_weight=args.alpha, ce_weight=1 - args.alpha, temperature=args.temperature,
                        chunk_size=args.lm_chunk_size,
                    )  # fmt: skip
        if fused is not None:  # each head once per chunk; the loss is already alpha * KD + (1 - alpha) * CE
            combined, kd, ce = fused
            self._record({f"kd_{args.divergence}": (args.alpha, kd), **({"lm_ce": (1 - args.alpha, ce)} if args.alpha < 1 else {})})
            return combined * weight
        if args.lm_chunk_size > 0:
            kd, ce = causal.lm_distillation_losses(
                hidden, causal.OutputHead(model), targets, vocab_size=self.vocab_size, kind=args.divergence, beta=args.beta,
                temperature=args.temperature, chunk_size=args.lm_chunk_size, **teacher,
            )  # fmt: skip
        else:  # both models' full logits, as a plain implementation would hold them
            logits = model(**model_inputs).logits[:, :-1][mask]
            if not teacher:
                with torch.no_grad():
                    teacher = {"teacher_hidden": self.teacher(**model_inputs).logits[:, :-1][mask]}
                teacher["teacher_head"] = nn.Identity()
            kd, ce = causal.lm_distillation_losses(
                logits, nn.Identity(), targets, vocab_size=self.vocab_size, kind=args.divergence, beta=args.beta,
                temperature=args.temperature, chunk_size=0, **teacher,
            )  # fmt: skip
        terms = {f"kd_{args.divergence}": (args.alpha, kd)}
        if args.alpha < 1:
            terms["lm_ce"] = (1 - args.alpha, ce)
        return self._record(terms) * weight

    @torch.no_grad()
    def _teacher_forward(self, batch: dict, need_internals: bool = False):
        """Run the frozen teacher on its inputs: the ``teacher_*`` columns if present, else the student's."""
        if any(k.startswith(TEACHER_PREFIX) for k in batch):
            source = {k[len(TEACHER_PREFIX) :]: v for k, v in batch.items() if k.startswith(TEACHER_PREFIX)}
        else:
            source = batch
        inputs = {k: v.to(self.args.device) for k, v in source.items() if k in _MODEL_INPUTS}
        extra = {}
        if need_internals and self.args.uses_hidden_states:
            extra["output_hidden_states"] = True
        if need_internals and self.args.attention_weight > 0:
            extra["output_attentions"] = True
        return self.teacher(**inputs, **extra)

    def _loss_terms(
        self, outputs, teacher_logits, teacher_outputs, labels, attention_mask, alignment=None
    ) -> dict[str, tuple[float, torch.Tensor]]:
        """Each active term as (weight, value)."""
        args = self.args
        logits = outputs.logits
        # Token-level logits (B, L, C) count only real tokens; sequence-level (B, C) count every example.
        position_mask = None
        if logits.dim() == 3:
            position_mask = (
                losses.label_mask(labels)
                if labels is not None and labels.shape == logits.shape[:2]
                else attention_mask
            )
        terms: dict[str, tuple[float, torch.Tensor]] = {}
        if labels is not None and args.alpha < 1:
            hard = outputs.loss if outputs.loss is not None else losses.hard_label_loss(logits, labels)
            terms["hard_ce"] = (1 - args.alpha, hard)
        if args.alpha > 0 or labels is None:
            if args.divergence == "forward_kl":
                value = losses.kd_kl_loss(logits, teacher_logits, args.temperature, position_mask)
            else:
                per_position = losses.token_divergence(
                    logits, teacher_logits, args.divergence, args.beta, args.temperature
                )
                value = losses.masked_mean(per_position, position_mask)
            terms["kd_kl"] = (args.alpha if labels is not None else 1.0, value)
        if args.logits_mse_weight > 0:
            terms["logits_mse"] = (
                args.logits_mse_weight,
                losses.logits_mse_loss(logits, teacher_logits, position_mask),
            )
        if args.uses_hidden_states:
            mse, cosine = self._hidden_terms(
                outputs.hidden_states, teacher_outputs.hidden_states, attention_mask, alignment
            )
            if args.hidden_mse_weight > 0:
                terms["hidden_mse"] = (args.hidden_mse_weight, mse)
            if args.hidden_cosine_weight > 0:
                terms["hidden_cosine"] = (args.hidden_cosine_weight, cosine)
        if args.attention_weight > 0:
            if (
                not outputs.attentions
                or outputs.attentions[0] is None
                or teacher_outputs.attentions[0] is None
            ):
                raise HfCompressError(
                    "the models returned no attention maps: load them with attn_implementation='eager'"
                )
            value = sum(
                losses.attention_kd_loss(outputs.attentions[s], teacher_outputs.attentions[t], attention_mask)
                for s, t in self.attention_pairs
            ) / len(self.attention_pairs)
            terms["attention_kl"] = (args.attention_weight, value)
        return terms

    def _hidden_terms(self, student_hidden, teacher_hidden, attention_mask, alignment=None):
        """Hidden-state MSE and cosine averaged over the layer pairs; a term with weight 0 is not computed.

        With two tokenizations, ``alignment`` (B, L_student) gives each student token's teacher position: the
        teacher's states are gathered at those positions and unaligned tokens (-1) don't count.
        """
        mse, cosine = 0.0, 0.0
        mask = attention_mask
        if alignment is not None:
            alignment = alignment.to(student_hidden[0].device)
            mask = (alignment >= 0) if mask is None else mask.bool() & (alignment >= 0)
        for k, (s, t) in enumerate(self.hidden_pairs):
            projected = (
                student_hidden[s] if self.projections is None else self.projections[k](student_hidden[s])
            )
            target = teacher_hidden[t]
            if alignment is not None:
                index = alignment.clamp_min(0).unsqueeze(-1).expand(-1, -1, target.shape[-1])
                target = target.gather(1, index)
            if self.args.hidden_mse_weight > 0:
                mse = mse + losses.hidden_mse_loss(projected, target, mask)
            if self.args.hidden_cosine_weight > 0:
                cosine = cosine + losses.hidden_cosine_loss(projected, target, mask)
        return mse / len(self.hidden_pairs), cosine / len(self.hidden_pairs)
