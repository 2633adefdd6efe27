"""Recipe-level dataclass configs: which data, which models, what to report and where to share it.

Training hyper-parameters live in the trainer configs (``DistillationConfig`` extends ``TrainingArguments``);
these hold what a recipe wires together. Every field has help text and is checked in ``__post_init__``. Each
recipe declares the tuple of dataclasses its YAML configs are made of (``CONFIG_TYPES`` in the script).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .errors import HfCompressError, check_choice

TOKENIZER_MODES = ("auto", "shared", "separate")
FINETUNE_MODES = ("auto", "always", "never")
PRUNING_KINDS = ("structured", "unstructured")


def parse_int_list(spec: str, name: str) -> list[int]:
    try:
        values = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise HfCompressError(f"{name} must be comma-separated integers like '1,32', got {spec!r}") from None
    if not values or min(values) < 1:
        raise HfCompressError(f"{name} must list positive integers, got {spec!r}")
    return values


@dataclass
class DataArguments:
    """The task's data: a Hub dataset, local CSV/JSON/parquet, or an offline asset name."""

    dataset_name: str = field(
        default="rotten_tomatoes_snippets",
        metadata={"help": "Hub dataset id, local file or folder (CSV/JSON/parquet), or offline asset name."},
    )
    text_column: str = field(default="text", metadata={"help": "Column holding the input text."})
    label_column: str = field(default="label", metadata={"help": "Column holding the class label."})
    max_seq_length: int = field(default=64, metadata={"help": "Truncate inputs to this many tokens; >= 8."})
    max_train_samples: Optional[int] = field(
        default=None, metadata={"help": "Use only the first N shuffled training examples (None: all)."}
    )
    max_eval_samples: Optional[int] = field(
        default=None, metadata={"help": "Use only the first N validation and test examples (None: all)."}
    )
    metrics: str = field(default="accuracy,f1", metadata={"help": "Comma-separated metric names (evaluate)."})

    def __post_init__(self):
        if self.max_seq_length < 8:
            raise HfCompressError(f"max_seq_length must be >= 8, got {self.max_seq_length}")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise HfCompressError(f"{name} must be >= 1 or null, got {value}")

    @property
    def metric_names(self) -> list[str]:
        return [m.strip() for m in self.metrics.split(",") if m.strip()]


@dataclass
class ReportingArguments:
    """What every recipe measures, whether it may replace an earlier run, and where it shares the result."""

    latency_batch_sizes: str = field(
        default="1,32", metadata={"help": "Batch sizes at which CPU latency is measured for the report."}
    )
    latency_runs: int = field(
        default=10, metadata={"help": "Timed runs per latency figure (median reported); >= 1."}
    )
    overwrite_output: bool = field(
        default=False,
        metadata={"help": "Replace the results of an earlier run in output_dir (refused otherwise)."},
    )
    share_namespace: Optional[str] = field(
        default=None,
        metadata={
            "help": "Push the compressed model(s) to <share_namespace>/<base>-<task>-<variant> with a model card "
            "(token from HF_TOKEN or `hf auth login`). None: don't push."
        },
    )
    share_export_dir: Optional[str] = field(
        default=None,
        metadata={
            "help": "Write exactly what would be pushed (model, tokenizer, README.md card) under this folder."
        },
    )
    share_private: bool = field(default=False, metadata={"help": "Create pushed repos as private."})
    share_revision: Optional[str] = field(
        default=None, metadata={"help": "Push to this branch (created if needed)."}
    )

    def __post_init__(self):
        if self.share_namespace is not None and (
            "/" in self.share_namespace or not self.share_namespace.strip()
        ):
            raise HfCompressError(
                f"share_namespace must be a user or organization name, got {self.share_namespace!r}"
            )
        if self.latency_runs < 1:
            raise HfCompressError(f"latency_runs must be >= 1, got {self.latency_runs}")
        parse_int_list(self.latency_batch_sizes, "latency_batch_sizes")


@dataclass
class TeacherRecipeArguments(ReportingArguments):
    """The fine-tuned model a compression recipe starts from (the teacher), fine-tuned first if needed."""

    teacher_model_name_or_path: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        metadata={
            "help": "Teacher: Hub id, local folder, or offline asset; fine-tuned on the task first if needed."
        },
    )
    teacher_finetune: str = field(
        default="auto",
        metadata={
            "help": "'auto': fine-tune the teacher when it has no head for these labels; 'always'; 'never'."
        },
    )
    teacher_num_train_epochs: float = field(default=2.0, metadata={"help": "Epochs of teacher fine-tuning."})
    teacher_learning_rate: float = field(
        default=5e-5, metadata={"help": "Learning rate of teacher fine-tuning."}
    )

    def __post_init__(self):
        super().__post_init__()
        check_choice("teacher_finetune", self.teacher_finetune, FINETUNE_MODES)


@dataclass
class FinetuneRecipeArguments(ReportingArguments):
    """The pretrained model and the task for recipes/finetune.py."""

    model_name_or_path: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        metadata={
            "help": "Pretrained model: Hub id, local folder, or offline asset. It gets a new task head."
        },
    )
    task_type: str = field(
        default="single_label_classification",
        metadata={
            "help": "single_label_classification, multi_label_classification (label column holds lists) or "
            "token_classification (text column holds word lists, label column a tag per word)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        from .data import TASK_TYPES

        check_choice("task_type", self.task_type, TASK_TYPES)


@dataclass
class DistillRecipeArguments(TeacherRecipeArguments):
    """Models and reporting for recipes/distill_bert.py."""

    student_model_name_or_path: Optional[str] = field(
        default=None,
        metadata={
            "help": "A pretrained student. None: build the student from the teacher's layers (student_layers)."
        },
    )
    student_layers: str = field(
        default="every_other",
        metadata={
            "help": "Teacher layers the student keeps: 'every_other', a count like '3', or a list like '0,2,4'."
        },
    )
    tokenizer_mode: str = field(
        default="auto",
        metadata={
            "help": "'shared': one tokenization, vocabularies must match; 'separate': teacher and student each "
            "tokenize the text; 'auto': shared when the vocabularies match."
        },
    )

    unlabelled_data: Optional[str] = field(
        default=None,
        metadata={
            "help": "Extra text without labels for the student's distillation (soft targets only): a .txt/CSV/"
            "JSON(L)/parquet file or folder (e.g. written by `hfcompress augment`), or a data asset's unlabelled "
            "text. The teacher is fine-tuned on labelled rows only."
        },
    )
    unlabelled_text_column: str = field(default="text", metadata={"help": "Text column of unlabelled_data."})

    def __post_init__(self):
        super().__post_init__()
        check_choice("tokenizer_mode", self.tokenizer_mode, TOKENIZER_MODES)


@dataclass
class PruneRecipeArguments(TeacherRecipeArguments):
    """Models and reporting for recipes/prune_bert.py."""

    pruning: str = field(
        default="structured",
        metadata={
            "help": "'structured': remove heads/neurons/layers (StructuredPruningConfig fields), smaller and "
            "faster; 'unstructured': zero single weights on a schedule (PruningConfig fields), same speed."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        check_choice("pruning", self.pruning, PRUNING_KINDS)


@dataclass
class QuantizeRecipeArguments(TeacherRecipeArguments):
    """Models, methods and reporting for recipes/quantize.py (the 'teacher' is the model that is quantized)."""

    methods: str = field(
        default="onnx-int8-dynamic,onnx-int8-static,bnb-int8,bnb-nf4",
        metadata={
            "help": "Comma-separated quantization methods to run and compare (see QuantizationConfig)."
        },
    )
    plots: bool = field(
        default=True,
        metadata={"help": "Write accuracy-vs-latency and accuracy-vs-size PNGs (needs matplotlib)."},
    )

    def __post_init__(self):
        super().__post_init__()
        from .quantization.config import check_classifier_methods

        check_classifier_methods(self.method_list)

    @property
    def method_list(self) -> list[str]:
        return [m.strip() for m in self.methods.split(",") if m.strip()]


@dataclass
class AugmentRunArguments:
    """What `hfcompress augment` reads and where it writes."""

    output_dir: str = field(
        metadata={"help": "New folder for augmented.parquet and augment.json; never overwritten."}
    )
    dataset_name: str = field(
        default="rotten_tomatoes_snippets",
        metadata={
            "help": "Dataset whose training texts are augmented (Hub id, local file or folder, or asset)."
        },
    )
    text_column: str = field(default="text", metadata={"help": "Column holding the input text."})
    label_column: str = field(default="label", metadata={"help": "Column holding the class label."})
    unlabelled_data: Optional[str] = field(
        default=None,
        metadata={"help": "Unlabelled texts to augment as well (as distill_bert's unlabelled_data)."},
    )
    max_texts: Optional[int] = field(
        default=None, metadata={"help": "Augment only the first N source texts."}
    )
    seed: int = field(default=42, metadata={"help": "Seed of the replacement draws."})


# -- causal language models (recipes/distill_llm.py) --------------------------------------------------------
@dataclass
class LMDataArguments:
    """Data for a causal LM: plain text cut into token blocks, chat messages, or prompt/completion pairs."""

    dataset_name: str = field(
        default="austen_novels",
        metadata={
            "help": "Data with train/validation/test splits: Hub dataset id, local .txt (one file, one document) "
            "/ .jsonl / CSV / parquet file or folder (train*, validation*, test*), or offline asset name."
        },
    )
    data_format: str = field(
        default="auto",
        metadata={
            "help": "'text' (a text column, cut into blocks), 'messages' (chat, rendered with the tokenizer's "
            "chat template), 'prompt_completion', or 'auto' (read off the columns)."
        },
    )
    text_column: str = field(default="text", metadata={"help": "Column holding the text."})
    messages_column: str = field(
        default="messages", metadata={"help": "Column holding chat turns: lists of {role, content}."}
    )
    prompt_column: str = field(default="prompt", metadata={"help": "Column holding the prompts."})
    completion_column: str = field(default="completion", metadata={"help": "Column holding the completions."})
    completion_only_loss: bool = field(
        default=True,
        metadata={
            "help": "Chat and prompt/completion data: only assistant/completion tokens count in the LM and KD "
            "terms (and in completion perplexity); false counts every token."
        },
    )
    packing: bool = field(
        default=False,
        metadata={
            "help": "Chat and prompt/completion data: concatenate rows into block_size blocks instead of one "
            "padded row each (text is always packed)."
        },
    )
    num_proc: Optional[int] = field(
        default=None, metadata={"help": "Worker processes of the tokenization (datasets.map); None: one."}
    )
    max_train_samples: Optional[int] = field(
        default=None,
        metadata={"help": "Use the first N rows of the training split (None: all), before tokenization."},
    )
    ood_dataset_name: Optional[str] = field(
        default="hamlet",
        metadata={"help": "Out-of-domain text whose test split is also evaluated (None: skip)."},
    )
    block_size: int = field(
        default=256, metadata={"help": "Tokens per training row; > 0 and <= the model's positions."}
    )
    max_train_tokens: Optional[int] = field(
        default=None, metadata={"help": "Train on the first N tokens of the training split (None: all)."}
    )
    max_eval_tokens: Optional[int] = field(
        default=None,
        metadata={"help": "Evaluate perplexity on the first N tokens of each evaluated text (None: all)."},
    )
    eval_stride: Optional[int] = field(
        default=None,
        metadata={"help": "Stride of the sliding perplexity window (window = block_size); None: block_size."},
    )

    def __post_init__(self):
        from .data.lm_examples import LM_FORMATS

        check_choice("data_format", self.data_format, LM_FORMATS)
        if self.block_size <= 0:
            raise HfCompressError(f"block_size must be > 0, got {self.block_size}")
        for name in ("num_proc", "max_train_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise HfCompressError(f"{name} must be >= 1 or null, got {getattr(self, name)}")
        if self.eval_stride is None:  # one window after another: a block_size alone is a valid config
            self.eval_stride = self.block_size
        if not 0 < self.eval_stride <= self.block_size:
            raise HfCompressError(
                f"eval_stride must be in (0, block_size={self.block_size}], got {self.eval_stride}"
            )
        for name in ("max_train_tokens", "max_eval_tokens"):
            value = getattr(self, name)
            if value is not None and value < self.block_size:
                raise HfCompressError(
                    f"{name} must be >= block_size ({self.block_size}) or null, got {value}"
                )


@dataclass
class DistillLLMRecipeArguments(TeacherRecipeArguments):
    """Models, student and measurements for recipes/distill_llm.py."""

    teacher_model_name_or_path: str = field(
        default="HuggingFaceTB/SmolLM2-135M-Instruct",
        metadata={
            "help": "Teacher causal LM: Hub id, local folder, or offline asset; adapted to the text first."
        },
    )
    teacher_finetune: str = field(
        default="auto",
        metadata={
            "help": "'auto'/'always': adapt the teacher to the training text first (LM loss); 'never'."
        },
    )
    teacher_num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs of teacher adaptation."})
    teacher_learning_rate: float = field(
        default=5e-5, metadata={"help": "Learning rate of teacher adaptation."}
    )
    torch_dtype: str = field(
        default="float32",
        metadata={
            "help": "dtype teacher and student load in: 'auto' (the checkpoint's, bf16 for most Hub LMs), "
            "'bfloat16', 'float16' or 'float32' (trained weights are best kept in float32; use bf16: true)."
        },
    )
    attn_implementation: Optional[str] = field(
        default=None,
        metadata={"help": "'eager', 'sdpa', 'flash_attention_2', ... for both models (None: transformers' choice)."},
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Run a Hub repository's own modelling code (only for models you trust)."},
    )
    teacher_lora_r: int = field(
        default=0,
        metadata={
            "help": "Adapt the teacher with LoRA adapters of this rank (peft), merged afterwards; 0: full fine-tune."
        },
    )
    sequence_kd: bool = field(
        default=False,
        metadata={
            "help": "Sequence-level KD (Kim & Rush 2016), chat or prompt/completion data: the adapted teacher "
            "answers the training prompts once (greedy, cached in <output_dir>) and the student learns from "
            "those answers."
        },
    )
    sequence_kd_max_new_tokens: int = field(
        default=96, metadata={"help": "Longest teacher answer, in tokens (sequence_kd)."}
    )
    student_model_name_or_path: Optional[str] = field(
        default=None,
        metadata={
            "help": "A pretrained student of the same tokenizer. None: cut or prune it from the teacher."
        },
    )
    student_layers: str = field(
        default="every_other",
        metadata={
            "help": "When no pruning is set: teacher layers the student keeps ('every_other', a count like '20', or "
            "a list like '0,2,4'), kept evenly spread."
        },
    )
    generate_tokens: int = field(
        default=32, metadata={"help": "Tokens generated per greedy speed run (batch 1)."}
    )
    prompt_batch_size: int = field(
        default=8, metadata={"help": "Batch of the prompt-processing speed figure."}
    )
    speed_runs: int = field(
        default=3, metadata={"help": "Timed runs per speed figure, models taking turns; >= 1."}
    )

    def __post_init__(self):
        super().__post_init__()
        from .modeling import TORCH_DTYPES

        check_choice("torch_dtype", self.torch_dtype, TORCH_DTYPES)
        if self.teacher_lora_r < 0:
            raise HfCompressError(f"teacher_lora_r must be >= 0 (0: full fine-tune), got {self.teacher_lora_r}")
        for name in ("generate_tokens", "prompt_batch_size", "speed_runs", "sequence_kd_max_new_tokens"):
            if getattr(self, name) < 1:
                raise HfCompressError(f"{name} must be >= 1, got {getattr(self, name)}")
