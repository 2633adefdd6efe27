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

Each stage's mapping is parsed strictly against the dataclasses its ``StageSpec`` lists (an unknown key is an
error naming the closest allowed one), so a shipped YAML can't drift; every one is parsed by a test. The parsed
types are in ``settings.py``; the stages and their configs in ``stages/``, listed in ``registry.py``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from transformers import TrainingArguments

from ..errors import HfCompressError, check_choice
from ..parser import check_keys, known_fields, parse_config, read_yaml
from .registry import REGISTRY
from .settings import PipelineArguments, PipelineConfig, Stage

# Set by the pipeline itself: a stage's checkpoints go under <output_dir>/<stage>/, one seed for the run.
RESERVED = ("output_dir", "seed")


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
    order = tuple(REGISTRY)
    for name in names:
        check_choice("each stage", name, order)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise HfCompressError(f"stage {repeated[0]!r} is listed twice; each stage runs at most once")
    positions = [order.index(n) for n in names]
    for (a, pa), (b, pb) in zip(zip(names, positions), zip(names[1:], positions[1:])):
        if pb < pa:
            raise HfCompressError(
                f"stage {b!r} can't come after {a!r}; stages run in the order {' -> '.join(order)}"
            )
    for name in names:
        for other, why in REGISTRY[name].requires.items():
            if other not in names:
                raise HfCompressError(why)


def load_pipeline_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Parse and check a pipeline YAML (``overrides``: ``--field value`` pairs for the top-level fields)."""
    path = Path(path)
    raw = read_yaml(path)
    top = known_fields((PipelineArguments,))
    raw = _check_keys(raw, top | {"data", "training", "stages"}, "the top level")
    top_values = {k: v for k, v in raw.items() if k in top}
    (pipeline,) = parse_config((PipelineArguments,), list(overrides or []), defaults=top_values)
    data_class = pipeline.task.data_arguments
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
        check_choice("each stage", name, tuple(REGISTRY))
        names.append(name)
        stage_values.append(_check_keys(values, known_fields(REGISTRY[name].configs), f"stage {name!r}"))
    _check_order(names)
    order = tuple(REGISTRY)
    for name, spec in REGISTRY.items():  # a stage every run has (evaluate: the report) joins at its place
        if spec.always and name not in names:
            at = next((i for i, n in enumerate(names) if order.index(n) > order.index(name)), len(names))
            names.insert(at, name)
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
    config.task.check_config(config)
    for stage in config.stages:
        if REGISTRY[stage.name].validate is not None:
            REGISTRY[stage.name].validate(config, stage)
    return config


