"""The pipeline's YAML: top-level settings, shared data and training blocks, and an ordered list of stages.

```yaml
output_dir: outputs/compress
model_name_or_path: sentence-transformers/all-MiniLM-L6-v2
task_type: single_label_classification
data: {dataset_name: rotten_tomatoes_snippets}          # DataArguments fields
training: {per_device_train_batch_size: 32}              # TrainingArguments fields every training stage starts from
stages:
  - finetune: {num_train_epochs: 2}                      # FinetuneConfig + TrainingArguments fields
  - search: {min_speedup: 2.0, depths: "2,3"}            # SearchConfig + DistillationConfig fields
  - distill: {hidden_mse_weight: 1.0}                    # DistillStageArguments + DistillationConfig fields
  - quantize: {methods: onnx-int8-dynamic}               # QuantizeStageArguments + QuantizationOptions fields
  - evaluate: {min_kept: 0.99}                           # EvaluateConfig fields
  - share: {share_export_dir: outputs/shipped}           # ShareConfig fields
```

Each stage's mapping is parsed strictly against the dataclasses it wraps (an unknown key is an error naming
the closest allowed one), so a shipped YAML can't drift; every one is parsed by a test.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from transformers import TrainingArguments

from ..configs import DataArguments, LMDataArguments, ReportingArguments, parse_int_list
from ..errors import HfCompressError, check_choice
from ..parser import check_keys, known_fields, parse_config, read_yaml
from ..quantization.config import METHODS

OBJECTIVES = ("latency", "size")
CAUSAL_LM = "causal_lm"
LOWER_IS_BETTER = ("perplexity", "bits_per_byte")  # the causal LM's selection metrics
SPEEDS = ("generate", "prompt")  # a causal LM's speed budget: greedy tokens/s at batch 1, or prompt tokens/s
# Set by the pipeline itself: a stage's checkpoints go under <output_dir>/<stage>/, one seed for the run.
RESERVED = ("output_dir", "seed")


def _float_list(spec: str, name: str) -> list[float]:
    try:
        values = [float(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise HfCompressError(
            f"{name} must be comma-separated numbers like '1.0,0.5', got {spec!r}"
        ) from None
    if not values or not all(0 < v <= 1 for v in values):
        raise HfCompressError(f"{name} must list fractions in (0, 1], got {spec!r}")
    return values


@dataclass
class PipelineArguments:
    """Top-level settings of a pipeline run."""

    output_dir: str = field(default="outputs/compress", metadata={"help": "Where every stage writes."})
    model_name_or_path: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        metadata={"help": "The model to start from: Hub id, local folder or offline asset."},
    )
    task_type: str = field(
        default="single_label_classification",
        metadata={
            "help": "single_label_classification, multi_label_classification, token_classification or causal_lm "
            "(data: then LMDataArguments fields)."
        },
    )
    seed: int = field(default=42, metadata={"help": "Seed of every stage."})
    selection_metric: Optional[str] = field(
        default=None,
        metadata={
            "help": "The validation metric that chooses the search's student, the shipped variant and the model "
            "card's headline: one the task reports (single-label: a name in data.metrics; multi-label and token "
            "classification: accuracy or f1, higher is better; causal_lm: perplexity or bits_per_byte, lower is "
            "better). None: accuracy, or perplexity for causal_lm."
        },
    )
    overwrite_output: bool = field(
        default=False,
        metadata={"help": "Start over: delete what an earlier run wrote in output_dir (refused otherwise)."},
    )

    def __post_init__(self):
        from ..data import TASK_TYPES

        check_choice("task_type", self.task_type, (*TASK_TYPES, CAUSAL_LM))
        if self.selection_metric is None:
            self.selection_metric = "perplexity" if self.task_type == CAUSAL_LM else "accuracy"

    @property
    def is_causal_lm(self) -> bool:
        return self.task_type == CAUSAL_LM

    @property
    def higher_is_better(self) -> bool:
        return self.selection_metric not in LOWER_IS_BETTER


@dataclass
class SearchConfig:
    """The student search: cut candidates from the teacher over a grid, drop those over budget, train each
    remaining one for the same few steps and keep, on the validation split, the fastest one whose score is
    within the noise of the best (or the best: ``selection``)."""

    max_latency_ms: Optional[float] = field(
        default=None, metadata={"help": "Budget: CPU latency at budget_batch_size, in ms (None: no limit)."}
    )
    min_speedup: Optional[float] = field(
        default=None,
        metadata={
            "help": "Budget: teacher latency / candidate latency at budget_batch_size (None: no limit)."
        },
    )
    max_size_mb: Optional[float] = field(
        default=None, metadata={"help": "Budget: the candidate's fp32 weights in MB (None: no limit)."}
    )
    max_parameters: Optional[int] = field(
        default=None, metadata={"help": "Budget: the candidate's parameter count (None: no limit)."}
    )
    budget_batch_size: int = field(
        default=32,
        metadata={"help": "Batch size the latency budget is for (causal_lm with speed 'prompt': the prompt batch); "
                  ">= 1."},
    )
    speed: str = field(
        default="generate",
        metadata={
            "help": "causal_lm: what latency and speed-up measure: 'generate' (ms per greedy token at batch 1, KV "
            "cache) or 'prompt' (ms per prompt token at budget_batch_size x the data's block_size)."
        },
    )
    generate_tokens: int = field(
        default=16, metadata={"help": "causal_lm, speed 'generate': tokens generated per timed run; >= 1."}
    )
    depths: str = field(default="2,3", metadata={"help": "Layer counts to try."})
    layer_selection: str = field(
        default="spread",
        metadata={"help": "Which layers a depth keeps: 'spread' (evenly) or 'block_influence' (drop the layers "
                  "that change their input least on the calibration batches, ShortGPT)."},
    )
    ffn_fractions: str = field(
        default="1.0,0.5", metadata={"help": "Fractions of FFN neurons to keep (lowest importance go)."}
    )
    head_fractions: str = field(
        default="1.0",
        metadata={"help": "Fractions of attention heads to keep (needs a transformers that prunes heads)."},
    )
    layer_presets: str = field(
        default="",
        metadata={
            "help": "More candidates at full width with these teacher layers, ';'-separated student_layers "
            "specs: 'every_other', or explicit lists like '0,2,5' (layers chosen by you, not spread)."
        },
    )
    proxy_steps: int = field(
        default=100,
        metadata={"help": "Distillation steps each in-budget candidate gets before scoring; >= 1."},
    )
    importance: str = field(
        default="gradient",
        metadata={"help": "How heads (KV groups) and neurons are scored: 'gradient', 'activation' or 'magnitude'."},
    )
    calibration_batches: int = field(
        default=8, metadata={"help": "Training batches used to score heads and neurons; >= 1."}
    )
    latency_runs: int = field(default=5, metadata={"help": "Timed runs per candidate latency; >= 1."})
    latency_rounds: int = field(
        default=3,
        metadata={"help": "Rounds in which the candidates and the teacher take turns (order shuffled each round); "
                  "the latency is the median over rounds; >= 1."},
    )
    selection: str = field(
        default="within_noise",
        metadata={
            "help": "'within_noise': the fastest candidate whose proxy score the best one does not beat in at "
            "least `confidence` of the bootstrap draws over validation examples; 'best': the best proxy score "
            "(ties: the faster)."
        },
    )
    confidence: float = field(
        default=0.95,
        metadata={"help": "within_noise: the share of bootstrap draws the best must win to rule a candidate "
                  "out; in (0.5, 1)."},
    )
    bootstrap_samples: int = field(
        default=200, metadata={"help": "Bootstrap draws over the validation examples; >= 10."}
    )

    def __post_init__(self):
        check_choice("selection", self.selection, ("within_noise", "best"))
        if not 0.5 < self.confidence < 1:
            raise HfCompressError(f"confidence must be in (0.5, 1), got {self.confidence}")
        if self.bootstrap_samples < 10:
            raise HfCompressError(f"bootstrap_samples must be >= 10, got {self.bootstrap_samples}")
        for name in ("max_latency_ms", "min_speedup", "max_size_mb", "max_parameters"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise HfCompressError(f"{name} must be > 0 or null, got {value}")
        for name in ("budget_batch_size", "proxy_steps", "calibration_batches", "latency_runs", "latency_rounds",
                     "generate_tokens"):  # fmt: skip
            if getattr(self, name) < 1:
                raise HfCompressError(f"{name} must be >= 1, got {getattr(self, name)}")
        check_choice("importance", self.importance, ("gradient", "activation", "magnitude"))
        check_choice("speed", self.speed, SPEEDS)
        check_choice("layer_selection", self.layer_selection, ("spread", "block_influence"))
        parse_int_list(self.depths, "depths")
        _float_list(self.ffn_fractions, "ffn_fractions")
        _float_list(self.head_fractions, "head_fractions")

    @property
    def grid(self) -> list[tuple[int | str, float, float]]:
        """(depth or layer spec, FFN fraction kept, head fraction kept) of every candidate."""
        presets = [(spec.strip(), 1.0, 1.0) for spec in self.layer_presets.split(";") if spec.strip()]
        return presets + [
            (d, f, h)
            for d in parse_int_list(self.depths, "depths")
            for f in _float_list(self.ffn_fractions, "ffn_fractions")
            for h in _float_list(self.head_fractions, "head_fractions")
        ]


@dataclass
class DistillStageArguments:
    """Which student the distill stage trains when no search stage chose one."""

    student_layers: str = field(
        default="every_other",
        metadata={"help": "Teacher layers the student keeps: 'every_other', a count like '3', or '0,2,4'."},
    )


@dataclass
class PruneStageArguments:
    """Which kind of pruning the prune stage runs (its settings are the PruningConfig fields)."""

    pruning: str = field(
        default="structured",
        metadata={"help": "'structured' (StructuredPruningConfig fields) or 'unstructured' (PruningConfig)."},
    )

    def __post_init__(self):
        check_choice("pruning", self.pruning, ("structured", "unstructured"))


@dataclass
class QuantizeStageArguments:
    """Which quantization methods the quantize stage runs, each on the last PyTorch model of the run."""

    methods: str = field(
        default="onnx-int8-dynamic", metadata={"help": "Comma-separated QuantizationConfig methods."}
    )

    def __post_init__(self):  # which methods fit the model is the quantize stage's check (it knows the task)
        for method in self.method_list:
            check_choice("each of methods", method, METHODS)
        if not self.method_list:
            raise HfCompressError("methods must name at least one quantization method")

    @property
    def method_list(self) -> list[str]:
        return [m.strip() for m in self.methods.split(",") if m.strip()]


@dataclass
class EvaluateConfig:
    """How every artifact is measured, and the rule that chooses the variant to ship (on validation)."""

    latency_batch_sizes: str = field(
        default="1,32", metadata={"help": "Batch sizes of the latency columns (classifiers)."}
    )
    latency_runs: int = field(default=10, metadata={"help": "Timed runs per latency figure; >= 1."})
    latency_rounds: int = field(
        default=3,
        metadata={"help": "Rounds in which the artifacts take turns (order shuffled each round); >= 1."},
    )
    min_kept: float = field(
        default=0.99,
        metadata={
            "help": "Rule: keep variants that keep this fraction of the teacher's validation score: score / "
            "teacher's >= min_kept (higher-is-better metrics), teacher's / score >= min_kept (perplexity: 0.8 "
            "allows 1.25x the teacher's)."
        },
    )
    objective: str = field(
        default="latency",
        metadata={
            "help": "Rule: among those, choose the fastest (classifiers: at the largest batch size; causal LMs: "
            "greedy tokens/s at batch 1) or the smallest on disk."
        },
    )
    tasks: str = field(
        default="",
        metadata={
            "help": "causal_lm: lm-evaluation-harness tasks every PyTorch artifact is scored on, comma-separated: "
            "harness names (hellaswag, arc_easy, ...; they download their data) and/or 'offline' (the project's "
            "own final-word and cloze tasks, built from the test text and the out-of-domain text). Empty: none."
        },
    )
    task_examples: int = field(
        default=200, metadata={"help": "'offline' tasks: examples per task (fewer when the text has fewer)."}
    )
    task_limit: Optional[int] = field(
        default=None, metadata={"help": "Harness tasks by name: score only the first N examples (None: all)."}
    )
    task_batch_size: int = field(default=8, metadata={"help": "Batch size of the harness; >= 1."})
    generate_tokens: int = field(
        default=32, metadata={"help": "causal_lm: tokens generated per greedy speed run (batch 1)."}
    )
    prompt_batch_size: int = field(
        default=8, metadata={"help": "causal_lm: batch of the prompt tokens/s figure (rows of block_size)."}
    )
    memory: bool = field(
        default=True, metadata={"help": "Measure peak memory of a fresh process per artifact."}
    )
    plots: bool = field(
        default=True, metadata={"help": "Write accuracy-vs-latency and -size PNGs (matplotlib)."}
    )

    def __post_init__(self):
        parse_int_list(self.latency_batch_sizes, "latency_batch_sizes")
        for name in ("latency_runs", "latency_rounds", "task_examples", "task_batch_size", "generate_tokens",
                     "prompt_batch_size"):  # fmt: skip
            if getattr(self, name) < 1:
                raise HfCompressError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.min_kept <= 1:
            raise HfCompressError(f"min_kept must be in (0, 1], got {self.min_kept}")
        check_choice("objective", self.objective, OBJECTIVES)
        if self.task_limit is not None and self.task_limit < 1:
            raise HfCompressError(f"task_limit must be >= 1 or null, got {self.task_limit}")

    @property
    def task_list(self) -> list[str]:
        return [t.strip() for t in self.tasks.split(",") if t.strip()]


@dataclass
class ShareConfig:
    """Where the chosen variant goes (the share_* fields of the recipes)."""

    share_namespace: Optional[str] = field(default=None, metadata={"help": "Push to <namespace>/<name>."})
    share_export_dir: Optional[str] = field(
        default=None, metadata={"help": "Write what would be pushed here."}
    )
    share_private: bool = field(default=False, metadata={"help": "Create pushed repos as private."})
    share_revision: Optional[str] = field(default=None, metadata={"help": "Push to this branch."})

    def __post_init__(self):
        ReportingArguments(share_namespace=self.share_namespace)  # same namespace check as the recipes
        if not (self.share_namespace or self.share_export_dir):
            raise HfCompressError("the share stage needs share_namespace or share_export_dir")


@dataclass
class Stage:
    """One parsed stage: its name, the YAML mapping as given (what its fingerprint hashes) and its configs."""

    name: str
    values: dict
    configs: dict  # dataclass type -> instance

    def get(self, cls):
        return self.configs[cls]


@dataclass
class PipelineConfig:
    pipeline: PipelineArguments
    data: DataArguments | LMDataArguments  # LMDataArguments for task_type causal_lm
    data_values: dict
    training_values: dict
    stages: list[Stage]
    path: str

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]


def _check_keys(values, allowed: set[str], where: str) -> dict:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise HfCompressError(f"{where} must be a mapping of field: value, got {type(values).__name__}")
    reserved = [k for k in values if k in RESERVED and where != "the top level"]
    if reserved:
        raise HfCompressError(
            f"{reserved[0]!r} in {where}: set {reserved[0]} once, at the top level of the config"
        )
    check_keys(values, allowed, where)
    return dict(values)


def build(cls, values: dict, **fixed):
    """An instance of ``cls`` from the keys of ``values`` it defines (plus ``fixed``), converted to the fields'
    types as the recipes' parser does (``learning_rate: 1e-4`` is a string to PyYAML, a float here)."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    chosen = {k: v for k, v in values.items() if k in names} | {k: v for k, v in fixed.items() if k in names}
    (instance,) = parse_config((cls,), [], defaults=chosen)
    return instance


def _check_order(names: list[str]) -> None:
    from .stages import ORDER, REGISTRY

    for name in names:
        check_choice("each stage", name, ORDER)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise HfCompressError(f"stage {repeated[0]!r} is listed twice; each stage runs at most once")
    positions = [ORDER.index(n) for n in names]
    for (a, pa), (b, pb) in zip(zip(names, positions), zip(names[1:], positions[1:])):
        if pb < pa:
            raise HfCompressError(
                f"stage {b!r} can't come after {a!r}; stages run in the order {' -> '.join(ORDER)}"
            )
    for name in names:
        for other, why in REGISTRY[name].requires.items():
            if other not in names:
                raise HfCompressError(why)


def load_pipeline_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Parse and check a pipeline YAML (``overrides``: ``--field value`` pairs for the top-level fields)."""
    from ..parser import parse_config
    from .stages import ORDER, REGISTRY

    path = Path(path)
    raw = read_yaml(path)
    top = known_fields((PipelineArguments,))
    raw = _check_keys(raw, top | {"data", "training", "stages"}, "the top level")
    top_values = {k: v for k, v in raw.items() if k in top}
    (pipeline,) = parse_config((PipelineArguments,), list(overrides or []), defaults=top_values)
    data_class = LMDataArguments if pipeline.is_causal_lm else DataArguments
    data_values = _check_keys(raw.get("data"), known_fields((data_class,)), "data")
    training_values = _check_keys(raw.get("training"), known_fields((TrainingArguments,)), "training")
    entries = raw.get("stages")
    if not isinstance(entries, list) or not entries:
        raise HfCompressError(f"{path} needs 'stages': a list like [finetune: {{}}, quantize: {{}}]")
    names, stage_values = [], []
    for entry in entries:
        if isinstance(entry, str):
            entry = {entry: {}}
        if not isinstance(entry, dict) or len(entry) != 1:
            raise HfCompressError(f"each stage must be 'name: {{fields}}', got {entry!r}")
        ((name, values),) = entry.items()
        check_choice("each stage", name, ORDER)
        names.append(name)
        stage_values.append(_check_keys(values, known_fields(REGISTRY[name].configs), f"stage {name!r}"))
    _check_order(names)
    if "evaluate" not in names:  # every run ends with its report (and share takes the variant it chose)
        at = names.index("share") if "share" in names else len(names)
        names.insert(at, "evaluate")
        stage_values.insert(at, {})
    data = build(data_class, data_values)
    stages = []
    for name, values in zip(names, stage_values):
        configs = {}
        for cls in REGISTRY[name].configs:
            if issubclass(cls, TrainingArguments):
                merged = {**training_values, **values}
                configs[cls] = build(
                    cls, merged, output_dir=str(Path(pipeline.output_dir) / name), seed=pipeline.seed
                )
            else:
                configs[cls] = build(cls, values)
        stages.append(Stage(name, values, configs))
    config = PipelineConfig(pipeline, data, data_values, training_values, stages, str(path))
    _check_task(config)
    return config


def task_metric_names(config: PipelineConfig) -> list[str]:
    """The metrics the task's evaluation reports (what ``selection_metric`` may name)."""
    if config.pipeline.task_type == "single_label_classification":
        return config.data.metric_names
    if config.pipeline.is_causal_lm:
        return list(LOWER_IS_BETTER)
    return ["accuracy", "f1"]


def _check_task(config: PipelineConfig) -> None:
    task = config.pipeline.task_type
    allowed = task_metric_names(config)
    if config.pipeline.selection_metric not in allowed:
        raise HfCompressError(
            f"selection_metric {config.pipeline.selection_metric!r} is not among the metrics the {task} task "
            f"reports ({', '.join(allowed)}); set selection_metric to one of them"
            + (" or add it to data.metrics" if task == "single_label_classification" else "")
        )
    from .stages import REGISTRY

    for stage in config.stages:
        if REGISTRY[stage.name].validate is not None:
            REGISTRY[stage.name].validate(config, stage)
