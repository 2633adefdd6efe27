"""What every benchmark script shares: a recipe's configs, CPU threads, the fine-tuned teacher, and the
machine record (thread counts of PyTorch and ONNX Runtime) written next to every latency.

Benchmarks choose on the validation split and report the test split: ``choose`` applies a written rule to
validation figures and returns the chosen row together with the rule, for the JSON and the markdown.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import platform
from pathlib import Path

import torch
import transformers

from hfcompress.finetune import TEACHER_RECORD, finetuned_teacher
from hfcompress.modeling import load_classifier
from hfcompress.parser import parse_config
from hfcompress.runtime import configure_cpu_threads, physical_cores

ROOT = Path(__file__).resolve().parents[1]
LM_TEACHER = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the causal LM benchmarks' teacher (an offline asset)


def results_dir(name: str) -> Path:
    """Where a benchmark writes its JSON and markdown: scripts/results/<name>, or $HFC_BENCH_RESULTS (smoke runs)."""
    return Path(os.environ.get("HFC_BENCH_RESULTS", ROOT / "scripts" / "results" / name))


def recipe_config_types(recipe: str) -> tuple:
    """The ``CONFIG_TYPES`` a recipe script declares (``recipes/<recipe>.py``)."""
    spec = importlib.util.spec_from_file_location(f"recipe_{recipe}", ROOT / "recipes" / f"{recipe}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CONFIG_TYPES


def start(recipe: str, config: str, overrides: list[str]):
    """Logging, CPU threads (physical cores, as the recipes), and the recipe's parsed configs."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    configure_cpu_threads()
    return parse_config(recipe_config_types(recipe), ["--config", config, *overrides])


def machine() -> dict:
    """Platform, versions and the thread counts latencies were measured with (ONNX Runtime sessions are
    opened with PyTorch's count: ``load_quantized(threads=...)``)."""
    record = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "physical_cores": physical_cores(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    try:
        import onnxruntime

        record.update(onnxruntime=onnxruntime.__version__, ort_intra_op_threads=torch.get_num_threads())
    except ImportError:
        pass
    return record


def fine_tuned_teacher(teacher_dir, recipe, data_args, args, labels, tokenizer, data, work, metrics):
    """(model, folder, record): the model in ``teacher_dir`` when given (it must have a head and the record
    the teacher stage writes), else the recipe's teacher stage in ``work`` (fine-tuned once, reused while its
    record, which names the base model, data, learning rate, epochs and seed, is unchanged)."""
    if teacher_dir:
        teacher_dir = Path(teacher_dir)
        model, head_ready = load_classifier(str(teacher_dir), labels)
        record_path = teacher_dir / TEACHER_RECORD
        if not head_ready or not record_path.exists():
            raise SystemExit(
                f"--teacher_dir {teacher_dir} is not a teacher fine-tuned by hfcompress ({TEACHER_RECORD})"
            )
        return model, teacher_dir, json.loads(record_path.read_text())
    model, head_ready = load_classifier(recipe.teacher_model_name_or_path, labels)
    model, folder = finetuned_teacher(
        recipe, data_args, args, model, head_ready, tokenizer, data, work, metrics
    )
    return model, folder, json.loads((folder / TEACHER_RECORD).read_text())


def choose(rows: list[dict], rule: str, eligible, key, higher_is_better: bool = True) -> dict:
    """The row ``rule`` picks: among ``eligible(row)`` rows, the best by ``key(row)`` (validation figures).
    Returns {"rule", "chosen", "candidates"}; "chosen" is None when no row is eligible."""
    candidates = [r for r in rows if eligible(r)]
    chosen = (max if higher_is_better else min)(candidates, key=key) if candidates else None
    return {
        "rule": rule,
        "chosen": chosen["model"] if chosen else None,
        "candidates": [r["model"] for r in candidates],
    }


def judge(rows, rule, eligible, key, target: str, delta_key: str, speed_target: float, loss_target: float):
    """The target record: the row ``choose`` picks on validation, its test accuracy change (``delta_key``,
    points) and batch-32 speed-up, and whether those test figures meet ``target``."""
    selection = choose(rows, rule, eligible, key)
    chosen = next((r for r in rows if r["model"] == selection["chosen"]), None)
    return {
        "target": target,
        "selection": selection,
        "chosen_test_delta_points": chosen[delta_key] if chosen else None,
        "chosen_speedup_b32": chosen["speedup_b32"] if chosen else None,
        "met": bool(chosen and chosen["speedup_b32"] >= speed_target and chosen[delta_key] >= -loss_target),
    }
