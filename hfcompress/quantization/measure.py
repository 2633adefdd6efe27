"""Measuring saved artifacts side by side (PyTorch folders and ``quantize`` outputs): metrics, size, peak
memory of a fresh process, interleaved latency. The trade-off plots are ``hfcompress.evaluation.plots``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ..errors import HfCompressError

_PEAK_SCRIPT = """
import json, sys
import torch
from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoModelForTokenClassification,
                          AutoTokenizer)
from hfcompress.modeling import is_causal_lm
from hfcompress.quantization import load_quantized
from hfcompress.quantization.api import RECORD
from pathlib import Path

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024

path, max_length = sys.argv[1], int(sys.argv[2])
texts = json.loads(sys.stdin.read())
tokenizer = AutoTokenizer.from_pretrained(path)
if tokenizer.pad_token is None:  # causal LMs without one pad with EOS, as the pipeline does
    tokenizer.pad_token = tokenizer.eos_token
with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark left by the imports
    f.write("5")
base = status("VmRSS:")
if (Path(path) / RECORD).exists():
    model = load_quantized(path)
else:
    config = json.loads((Path(path) / "config.json").read_text())
    architectures = config.get("architectures") or []
    token = any("TokenClassification" in a for a in architectures)
    causal = is_causal_lm(config)
    auto = AutoModelForTokenClassification if token else AutoModelForSequenceClassification
    auto = AutoModelForCausalLM if causal else auto
    model = auto.from_pretrained(path)
inputs = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
with torch.inference_mode():
    model(**inputs)
print(json.dumps({"peak_rss_mb": status("VmHWM:"), "model_peak_mb": status("VmHWM:") - base}))
"""


def peak_memory_mb(
    model_dir: str | Path, texts: list[str], max_length: int = 128, timeout: int = 600
) -> dict:
    """Memory of a fresh Python process that loads the saved model and runs one forward pass on ``texts``
    (Linux): ``peak_rss_mb``, its peak resident memory from the moment the libraries were imported on, and
    ``model_peak_mb``, that peak minus the resident memory before loading: what the model itself costs."""
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(model_dir), str(max_length)],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith('{"peak_rss_mb"')]
    if result.returncode != 0 or not lines:
        raise HfCompressError(f"measuring peak memory of {model_dir} failed: {result.stderr.strip()[-300:]}")
    return json.loads(lines[-1])


def measure_artifacts(
    artifacts: dict,
    baseline: str,
    tokenizer,
    eval_datasets: dict,
    compute_metrics,
    texts: list[str],
    batch_sizes: list[int],
    max_length: int,
    rounds: int = 3,
    runs: int = 10,
    memory: bool = True,
    load_kwargs: dict[str, dict] | None = None,
    model_class=None,
) -> list[dict]:
    """Load each saved model in ``artifacts`` (name -> folder; fp32 PyTorch folders and ``quantize`` outputs)
    and measure it: metrics on each of ``eval_datasets`` (split -> tokenized dataset; keys ``<split>_<metric>``),
    size on disk, peak memory of a fresh process, CPU latency at each batch size with the models taking turns
    (ONNX Runtime on as many intra-op threads as PyTorch has; both counts go in each row); ratios and accuracy
    differences against the ``baseline`` entry. ``load_kwargs`` (name -> keyword
    arguments of ``load_quantized``) loads an artifact differently, e.g. ``{"denormal_as_zero": False}``.
    ``model_class`` loads the PyTorch folders (default ``AutoModelForSequenceClassification``)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from ..data import DistillationDataCollator
    from ..evaluation import evaluate_model, gzip_size_on_disk, interleaved_latency, size_on_disk
    from ..modeling import count_parameters
    from .api import RECORD, load_quantized

    model_class = model_class or AutoModelForSequenceClassification
    threads = torch.get_num_threads()
    models = {
        name: load_quantized(path, **{"threads": threads, **(load_kwargs or {}).get(name, {})})
        if (Path(path) / RECORD).exists()
        else model_class.from_pretrained(path)
        for name, path in artifacts.items()
    }
    collator = DistillationDataCollator(tokenizer)
    rows = {}
    for name, model in models.items():
        rows[name] = {"model": name}
        for split, dataset in eval_datasets.items():
            metrics = evaluate_model(model, dataset, collator, compute_metrics)
            rows[name].update({f"{split}_{k}": v for k, v in metrics.items()})
        session = getattr(model, "session", None)  # Optimum's ORTModel holds its onnxruntime session
        rows[name].update(
            {
                "torch_threads": threads,
                "ort_intra_op_threads": session.get_session_options().intra_op_num_threads
                if session
                else None,
                "parameters": count_parameters(model) if isinstance(model, torch.nn.Module) else None,
                "size_mb": size_on_disk(artifacts[name]) / 2**20,
                "gzip_size_mb": gzip_size_on_disk(artifacts[name]) / 2**20,
                **(peak_memory_mb(artifacts[name], texts[:32], max_length) if memory else {}),
            }
        )
    for batch_size in batch_sizes:
        latency = interleaved_latency(models, tokenizer, texts, batch_size, max_length, rounds, runs)
        for name, value in latency.items():
            rows[name][f"latency_ms_b{batch_size}"] = value
            rows[name][f"speedup_b{batch_size}"] = latency[baseline] / value
    base = rows[baseline]
    for row in rows.values():
        for split in eval_datasets:
            if f"{split}_accuracy" in base:  # a task evaluated without accuracy (metrics: f1) has no delta
                row[f"{split}_accuracy_delta_points"] = 100 * (
                    row[f"{split}_accuracy"] - base[f"{split}_accuracy"]
                )
        row["accuracy_delta_points"] = row.get("test_accuracy_delta_points")
        row["size_ratio"] = base["size_mb"] / row["size_mb"]
    return list(rows.values())


def report_columns(batch_sizes: list[int]) -> list[tuple[str, str]]:
    columns = [
        ("model", "method"),
        ("validation_accuracy", "validation acc"),
        ("test_accuracy", "test acc"),
        ("accuracy_delta_points", "Δ test acc (pts)"),
        ("size_mb", "size (MB)"),
        ("peak_rss_mb", "peak RSS (MB)"),
        ("model_peak_mb", "model's share (MB)"),
    ]
    for b in batch_sizes:
        columns += [(f"latency_ms_b{b}", f"b{b} ms"), (f"speedup_b{b}", f"speed-up b{b}")]
    return columns + [("torch_threads", "torch threads"), ("ort_intra_op_threads", "ORT threads")]
