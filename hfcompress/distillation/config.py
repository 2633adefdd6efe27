"""``DistillationConfig``: ``TrainingArguments`` plus the distillation terms and their weights.

The loss is ``alpha * KD + (1 - alpha) * CE + logits_mse_weight * MSE(logits) + hidden_mse_weight * MSE(hidden)
+ hidden_cosine_weight * cos(hidden) + attention_weight * KL(attentions)``; a weight of 0 switches a term off
and spares the work it needs (hidden states, attention maps).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from transformers import TrainingArguments

from ..errors import HfCompressError, check_choice
from .losses import DIVERGENCES

TEACHER_DTYPES = ("auto", "float32", "bfloat16", "float16")


def multi_process_without_accelerator() -> bool:
    """True when launched as several processes (accelerate/torchrun set WORLD_SIZE) on a machine with no GPU.

    accelerate forms a gloo process group for CPU processes only when asked for the CPU: without
    ``use_cpu=True`` each process silently trains alone on all the data (accelerate 1.15).
    """
    from ..runtime import accelerator_available

    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not accelerator_available()


def parse_layer_map(spec: str) -> list[tuple[int, int]] | None:
    """``"auto"`` -> None; ``"1:2,2:4,3:6"`` -> [(1, 2), (2, 4), (3, 6)] (student index, teacher index)."""
    if spec.strip() == "auto":
        return None
    pairs = []
    for item in spec.split(","):
        try:
            student, teacher = (int(x) for x in item.split(":"))
        except ValueError:
            raise HfCompressError(
                f"layer map entry {item.strip()!r} is not 'student:teacher' integers; write e.g. '1:2,2:4,3:6' or 'auto'"
            ) from None
        pairs.append((student, teacher))
    return pairs


@dataclass
class DistillationConfig(TrainingArguments):
    """Training arguments for ``DistillationTrainer``."""

    temperature: float = field(
        default=2.0,
        metadata={"help": "Softmax temperature for the KD term; > 0. Higher gives softer targets."},
    )
    alpha: float = field(
        default=0.5,
        metadata={
            "help": "Weight of the KD (soft-target) loss in [0, 1]; the hard-label loss gets 1 - alpha."
        },
    )
    logits_mse_weight: float = field(
        default=0.0, metadata={"help": "Weight of MSE between raw logits; >= 0."}
    )
    hidden_mse_weight: float = field(
        default=0.0, metadata={"help": "Weight of hidden-state MSE over hidden_layer_map; >= 0 (TinyBERT)."}
    )
    hidden_cosine_weight: float = field(
        default=0.0, metadata={"help": "Weight of 1 - cosine similarity of hidden states; >= 0 (DistilBERT)."}
    )
    attention_weight: float = field(
        default=0.0, metadata={"help": "Weight of attention-map KL over attention_layer_map; >= 0 (MiniLM)."}
    )
    hidden_layer_map: str = field(
        default="auto",
        metadata={
            "help": "Student:teacher hidden-state pairs, indices into output hidden_states (0 = embeddings, i = "
            "output of layer i), e.g. '1:2,2:4,3:6'. 'auto' maps student i to teacher round(i * T / S)."
        },
    )
    attention_layer_map: str = field(
        default="auto",
        metadata={
            "help": "Student:teacher attention pairs, 0-based layer indices, e.g. '0:1,1:3,2:5'. 'auto' maps "
            "student layer i to teacher layer round((i + 1) * T / S) - 1."
        },
    )
    teacher_dtype: str = field(
        default="auto",
        metadata={
            "help": f"Precision the frozen teacher runs in: one of {', '.join(TEACHER_DTYPES)}. 'auto' keeps it."
        },
    )
    cache_teacher_logits: bool = field(
        default=False,
        metadata={
            "help": "Compute the teacher's logits on the training set once and reuse them every epoch. Only for "
            "logit terms (KD, logits MSE): hidden-state and attention terms need the live teacher."
        },
    )
    teacher_cache_path: Optional[str] = field(
        default=None,
        metadata={
            "help": "File for the cached teacher logits (default: <output_dir>/teacher_logits.safetensors); "
            "a cache made for another teacher or dataset is refused, never overwritten. A folder (ending in "
            "'/') holds one file per teacher, dataset and setting instead."
        },
    )
    divergence: str = field(
        default="forward_kl",
        metadata={
            "help": f"Token-level divergence of the KD term: one of {', '.join(DIVERGENCES)} (see losses.py)."
        },
    )
    beta: float = field(
        default=0.5,
        metadata={"help": "In [0, 1]: the mixture weight of 'jsd' (GKD) and of 'skew_kl'/'skew_reverse_kl'."},
    )
    lm_chunk_size: int = field(
        default=1024,
        metadata={
            "help": "Causal LMs: positions sent through the lm_heads at a time, so [batch, seq, vocab] logits are "
            "never built; 0 computes the full logits of both models (more memory, same result)."
        },
    )
    teacher_topk: int = field(
        default=64,
        metadata={
            "help": "Causal LMs with cache_teacher_logits: keep the teacher's top-k log-probabilities per "
            "position plus the tail mass (k >= the vocabulary keeps all of it)."
        },
    )
    lmbda: float = field(
        default=0.0,
        metadata={
            "help": "Causal LMs, in [0, 1]: share of batches the student generates itself, scored by the teacher "
            "(GKD's on-policy lambda): chat and prompt/completion rows are continued from the end of their prompt, "
            "plain-text rows from their first on_policy_prompt_tokens tokens; generation stops on the model's "
            "end-of-turn ids."
        },
    )
    on_policy_prompt_tokens: int = field(default=64, metadata={"help": "Prompt length of on-policy batches over plain text (rows whose every token is a label)."})
    on_policy_max_new_tokens: int = field(
        default=64, metadata={"help": "Most tokens the student samples for an on-policy batch (it stops earlier at an end-of-turn id)."}
    )
    shard_teacher: bool = field(
        default=False,
        metadata={
            "help": "Several processes: shard the frozen teacher's transformer layers across them with torch's "
            "fully_shard (FSDP2), so each holds 1/N of them, gathered layer by layer in its forward. The student "
            "is wrapped as accelerate decides (DDP on CPU processes). No effect in one process."
        },
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Kept False: the distillation collator drops what the models don't take itself."},
    )

    def __post_init__(self):
        if not self.temperature > 0:
            raise HfCompressError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise HfCompressError(f"alpha must be in [0, 1], got {self.alpha}")
        for name in ("logits_mse_weight", "hidden_mse_weight", "hidden_cosine_weight", "attention_weight"):
            if getattr(self, name) < 0:
                raise HfCompressError(f"{name} must be >= 0, got {getattr(self, name)}")
        check_choice("teacher_dtype", self.teacher_dtype, TEACHER_DTYPES)
        check_choice("divergence", self.divergence, DIVERGENCES)
        for name in ("beta", "lmbda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise HfCompressError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("teacher_topk", "on_policy_prompt_tokens", "on_policy_max_new_tokens"):
            if getattr(self, name) < 1:
                raise HfCompressError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lm_chunk_size < 0:
            raise HfCompressError(f"lm_chunk_size must be >= 0 (0 = unchunked), got {self.lm_chunk_size}")
        if self.shard_teacher and self.cache_teacher_logits:
            raise HfCompressError(
                "shard_teacher and cache_teacher_logits don't combine (one process builds the cache, and a sharded "
                "teacher runs only with all processes): set one of them to false"
            )
        if self.lmbda > 0 and self.cache_teacher_logits:
            raise HfCompressError(
                "lmbda > 0 scores student-generated text with the live teacher: set cache_teacher_logits to false"
            )
        parse_layer_map(self.hidden_layer_map)
        parse_layer_map(self.attention_layer_map)
        if self.cache_teacher_logits and self.uses_teacher_internals:
            raise HfCompressError(
                "cache_teacher_logits caches logits only; set hidden_mse_weight, hidden_cosine_weight and "
                "attention_weight to 0, or cache_teacher_logits to false"
            )
        if self.remove_unused_columns:
            raise HfCompressError(
                "remove_unused_columns must be false for distillation: it would drop the teacher's inputs"
            )
        if multi_process_without_accelerator():
            self.use_cpu = True  # same config on GPUs and CPU processes: no code or config change needed
        super().__post_init__()

    @property
    def uses_hidden_states(self) -> bool:
        return self.hidden_mse_weight > 0 or self.hidden_cosine_weight > 0

    @property
    def uses_teacher_internals(self) -> bool:
        return self.uses_hidden_states or self.attention_weight > 0
