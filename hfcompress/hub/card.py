"""Model cards for compressed variants, built from a run's own report: ``CompressionInfo`` (what a card says)
and ``build_model_card`` (huggingface_hub's ``ModelCard``: ``base_model`` and ``base_model_relation``, datasets,
metrics in model-index form, tags, and a compression section whose figures come from the report, never typed
in)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import HfCompressError, check_choice
from ..quantization.config import ENGINES, METHODS

RELATIONS = {  # our kind of variant -> the Hub's base_model_relation
    "finetuned": "finetune",
    "distilled": "finetune",
    "pruned": "finetune",
    "quantized": "quantized",
    "onnx": "quantized",
    "adapter": "adapter",
}
TAGS = {
    "distilled": ["distillation"],
    "pruned": ["pruning"],
    "quantized": ["quantization"],
    "onnx": ["onnx", "quantization"],
    "adapter": ["peft", "lora"],
    "finetuned": [],
}


@dataclass
class CompressionInfo:
    """What a model card says about one variant; the figures come from a run's report."""

    kind: str  # finetuned, distilled, pruned, quantized, onnx, adapter
    base_model: str
    dataset: str
    task_name: str = "Text Classification"
    task_type: str = "text-classification"
    method: str = ""
    settings: dict = field(default_factory=dict)
    teacher: str | None = None
    metrics: dict = field(default_factory=dict)  # this model: test_accuracy, parameters, size_mb, latency...
    reference: dict = field(default_factory=dict)  # the uncompressed model, same keys
    command: str = ""
    license: str | None = None
    notes: str = ""  # a paragraph the card must carry (e.g. where the base weights came from)
    tasks: dict = field(default_factory=dict)  # harness scores: {task: {metric: value, metric_stderr: ...}}
    reference_tasks: dict = field(default_factory=dict)  # the uncompressed model's, same shape
    gguf_file: str | None = None  # the GGUF file the variant is: the card says how to run it in llama.cpp and Ollama

    def __post_init__(self):
        check_choice("kind", self.kind, RELATIONS)


REQUIRED_FIGURES = ("size_mb",)  # and at least one test_* figure (accuracy, f1, ...: what the task reports)
REQUIRED_FIGURES_LM = ("test_perplexity", "size_mb")  # task_type text-generation
CARD_FIGURES = ("test_", "ood_", "parameters", "size_mb", "latency_ms_", "generate_", "prompt_")


def build_model_card(info: CompressionInfo, repo_name: str):
    """A ``huggingface_hub.ModelCard`` for a compressed variant; missing figures are an error."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    required = REQUIRED_FIGURES_LM if info.task_type == "text-generation" else REQUIRED_FIGURES
    missing = [k for k in required if info.metrics.get(k) is None]
    if not any(k.startswith("test_") and v is not None for k, v in info.metrics.items()):
        missing.append("a test_* figure (test_accuracy, test_f1, ...)")
    if missing or not info.command:
        absent = missing + ([] if info.command else ["command"])
        raise HfCompressError(
            f"model card figures missing: {', '.join(absent)} (take them from the run's report)"
        )
    metrics = {k.removeprefix("test_"): v for k, v in info.metrics.items()
               if k.startswith("test_") and isinstance(v, (int, float)) and not k.endswith("_tokens")}  # fmt: skip
    eval_results = [
        EvalResult(
            task_type=info.task_type,
            task_name=info.task_name,
            dataset_type=info.dataset,
            dataset_name=info.dataset,
            dataset_split="test",
            metric_type=name,
            metric_value=round(float(value), 4),
        )
        for name, value in metrics.items()
    ]
    data = ModelCardData(
        model_name=repo_name,
        base_model=info.base_model,
        base_model_relation=RELATIONS[info.kind],
        datasets=[info.dataset],
        metrics=sorted(metrics),
        tags=["hfcompress", *TAGS[info.kind]],
        library_name="onnx" if info.kind == "onnx" else "transformers",
        pipeline_tag=info.task_type,
        eval_results=eval_results,
        license=info.license,
    )
    content = f"---\n{data.to_yaml()}\n---\n\n" + _card_body(info, repo_name)
    return ModelCard(content)


def _figure(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def gguf_usage(repo_name: str, gguf_file: str) -> str:
    """How to run a GGUF variant: llama.cpp, Ollama, and transformers (which dequantizes it)."""
    return (
        "# llama.cpp\n"
        f'#   llama-cli --hf-repo {repo_name} --hf-file {gguf_file} -p "Hello"\n'
        f"#   llama-server --hf-repo {repo_name} --hf-file {gguf_file}\n"
        "# Ollama\n"
        f"#   ollama run hf.co/{repo_name}\n"
        "# transformers (dequantized to full precision)\n"
        "from transformers import AutoModelForCausalLM\n"
        f'model = AutoModelForCausalLM.from_pretrained("{repo_name}", gguf_file="{gguf_file}")'
    )


def _card_body(info: CompressionInfo, repo_name: str) -> str:
    keys = [k for k in info.metrics if k.startswith(CARD_FIGURES)]
    rows = "\n".join(
        f"| {k} | {_figure(info.metrics.get(k))} | {_figure(info.reference.get(k))} |" for k in keys
    )
    settings = "\n".join(f"- `{k}`: {v}" for k, v in info.settings.items()) or "- (defaults)"
    teacher = f"Teacher: `{info.teacher}`.\n\n" if info.teacher else ""
    if info.gguf_file:
        how = gguf_usage(repo_name, info.gguf_file)
    elif info.kind == "onnx":
        onnx_file = "model.onnx" if info.method == "onnx-fp32" else "model_quantized.onnx"
        ort = "ORTModelForCausalLM" if info.task_type == "text-generation" else "ORTModelForSequenceClassification"
        how = (
            "import onnxruntime\n"
            f"from optimum.onnxruntime import {ort}\n\n"
            "options = onnxruntime.SessionOptions()\n"
            'options.add_session_config_entry("session.set_denormal_as_zero", "1")  # fast softmax on x86 CPUs\n'
            f"model = {ort}.from_pretrained(\n"
            f'    "{repo_name}", file_name="{onnx_file}", session_options=options\n)'
        )
    else:
        needs = {"torchao": "# needs: pip install torchao\n", "llmcompressor": "# needs: pip install compressed-tensors\n"}
        needs = needs.get("llmcompressor" if info.method == "qad-w4a16" else METHODS.get(info.method, ("",))[0], "")
        auto = (
            "AutoModelForCausalLM"
            if info.task_type == "text-generation"
            else "AutoModelForSequenceClassification"
        )
        how = f'{needs}from transformers import {auto}\nmodel = {auto}.from_pretrained("{repo_name}")'
    notes = f"{info.notes}\n\n" if info.notes else ""
    if info.method in METHODS:
        notes += f"Runs in: {ENGINES[METHODS[info.method][0]]}.\n\n"
    if info.metrics.get("engine") == "llama.cpp":
        notes += ("Measured in llama.cpp: perplexity by `llama-perplexity` (chunks of the text, each chunk's second "
                  "half scored; the uncompressed column is the teacher over the same chunks), tokens/s by "
                  "`llama-bench`.\n\n")  # fmt: skip
    return f"""# {repo_name}

A {info.kind} variant of [`{info.base_model}`](https://huggingface.co/{info.base_model}) for
{info.task_name.lower()} on `{info.dataset}`, made with hfcompress.

{notes}```python
{how}
```

## Compression

Method: {info.method or info.kind}.

{teacher}Settings:
{settings}

Measured by the run that produced this model (test split of `{info.dataset}`; latency on CPU, median of
several runs):

| figure | this model | uncompressed |
|---|---|---|
{rows}

{_task_section(info)}Reproduce:

```bash
{info.command}
```
"""


def _task_section(info: CompressionInfo) -> str:
    """The downstream-task table (lm-evaluation-harness scores with their standard errors), when there is one."""
    if not (info.tasks or info.reference_tasks):
        return ""

    def score(tasks: dict, task: str, metric: str) -> str:
        value = (tasks.get(task) or {}).get(metric)
        stderr = (tasks.get(task) or {}).get(f"{metric}_stderr")
        return "-" if value is None else f"{value:.4g}" + (f" ± {stderr:.2g}" if stderr is not None else "")

    rows = [f"| {task} | {metric} | {score(info.tasks, task, metric)} | {score(info.reference_tasks, task, metric)} |"
            for task, metrics in (info.tasks or info.reference_tasks).items() for metric in metrics
            if not metric.endswith("_stderr") and metric != "sample_len"]  # fmt: skip
    missing = "" if info.tasks else "This model was not scored (the harness runs PyTorch models; this one is not).\n\n"
    return (
        "Downstream tasks (lm-evaluation-harness, zero-shot; value ± standard error as the harness reports it):\n\n"
        "| task | metric | this model | uncompressed |\n|---|---|---|---|\n" + "\n".join(rows) + "\n\n" + missing
    )
