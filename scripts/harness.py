"""The benchmark harness: what every benchmark script shares. A recipe's configs, CPU threads, the fine-tuned
teacher, the machine record (thread counts of PyTorch and ONNX Runtime) written next to every latency, training
step timing, the language models' perplexity windows, and the markdown helpers each script renders its own
table with (``write_benchmark`` writes the JSON and the markdown rendered from it; render_benchmarks.py collects
the same renderings into docs/benchmarks.md).

Benchmarks choose on the validation split and report the test split: ``choose`` applies a written rule to
validation figures and returns the chosen row together with the rule, for the JSON and the markdown.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import platform
import time
from pathlib import Path

import torch
import transformers
from transformers import TrainerCallback

from hfcompress.evaluation.lm import strided_perplexity
from hfcompress.finetuning import TEACHER_RECORD, finetuned_teacher
from hfcompress.modeling import load_classifier
from hfcompress.parser import parse_config
from hfcompress.runtime import configure_cpu_threads, physical_cores

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "scripts" / "results"
LM_TEACHER = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the causal LM benchmarks' teacher (an offline asset)


def results_dir(name: str) -> Path:
    """Where a benchmark writes its JSON and markdown: scripts/results/<name>, or $HFC_BENCH_RESULTS (smoke runs)."""
    return Path(os.environ.get("HFC_BENCH_RESULTS", ROOT / "scripts" / "results" / name))


def llm_arguments(description: str):
    """The command line of the causal LM benchmarks (bench_llm.py and bench_llm_recover.py): ``--part`` and its
    sizes."""
    import argparse

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--part", required=True, choices=["memory", "memory-step", "recover", "quantize", "onpolicy"]
    )
    parser.add_argument("--onpolicy_steps", type=int, default=6)
    parser.add_argument("--mode", default="lm")
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--train_tokens", type=int, default=8192)
    parser.add_argument("--teacher_tokens", type=int, default=16384)
    parser.add_argument("--eval_tokens", type=int, default=4096)
    parser.add_argument("--arms", default=None, help="comma-separated subset of the recover arms")
    return parser


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


class StepTimer(TrainerCallback):
    """Wall time of optimizer steps after ``skip`` warm-up steps."""

    def __init__(self, skip: int = 3):
        self.skip, self.start, self.steps = skip, None, 0

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.skip:
            self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.start is not None:
            self.steps += 1

    def samples_per_second(self, batch_size: int) -> float:
        return self.steps * batch_size / (time.perf_counter() - self.start)


WINDOW, STRIDE = 256, 128


def calibration_blocks(tokenizer, text: str, samples: int, length: int) -> list[dict]:
    """``samples`` blocks of ``length`` token ids at evenly spaced offsets over ``text`` (the calibration or training
    rows of the LM quantization benchmarks)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    step = (len(ids) - length) // max(samples - 1, 1)
    return [{"input_ids": ids[i * step : i * step + length]} for i in range(samples)]


@torch.inference_mode()
def generated_blocks(model, tokenizer, samples: int, length: int, seed: int = 0, batch_size: int = 16) -> list[dict]:
    """``samples`` blocks of ``length`` tokens that ``model`` writes itself, as LLM-QAT's data-free QAT makes its
    training text (Liu et al., 2023): a first token drawn uniformly from the vocabulary (special tokens left out),
    the next 4 tokens greedy, the rest sampled from the full distribution (temperature 1, no top-k or top-p), EOS
    held back so that every block is full. Seeded: the same blocks for every run with the same ``seed``."""
    special = set(tokenizer.all_special_ids)
    vocabulary = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
    generator = torch.Generator().manual_seed(seed)
    first = vocabulary[torch.randint(len(vocabulary), (samples, 1), generator=generator)]
    torch.manual_seed(seed)  # generate() samples from the global generator
    blocks, greedy = [], 4
    for start in range(0, samples, batch_size):
        ids = first[start : start + batch_size]
        for new, sampling in ((greedy, {"do_sample": False}),
                              (length - 1 - greedy, {"do_sample": True, "top_k": 0, "top_p": 1.0, "temperature": 1.0})):
            ids = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                                 pad_token_id=tokenizer.pad_token_id, **sampling)  # fmt: skip
        blocks += [{"input_ids": row.tolist()} for row in ids]
    return blocks


def perplexities(model, tokenizer, texts: dict, eval_tokens: int) -> dict:
    row = {}
    for split, text in texts.items():
        result = strided_perplexity(model, tokenizer, text, WINDOW, STRIDE, eval_tokens)
        row |= {f"{split}_perplexity": result["perplexity"], f"{split}_tokens": result["tokens"]}
    return row


# -- markdown ----------------------------------------------------------------------------------------------


def load(relative: str) -> dict:
    return json.loads((RESULTS / relative).read_text())


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 1 or value == 0 else f"{value:.4f}"
    return str(value)


def percent(value) -> str:
    return "-" if value is None else f"{value:+.2%}"


def points(value) -> str:
    return "-" if value is None else f"{value:+.2f}"


def table(rows: list[dict], columns: list[tuple[str, str, callable]]) -> str:
    """Markdown table; ``columns`` is [(key, header, formatter)]."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(f(row.get(k)) for k, _, f in columns) + " |")
    return "\n".join(lines) + "\n"


def threads_line(data: dict) -> str:
    machine = data.get("machine") or {}
    torch_threads = machine.get("torch_threads", machine.get("threads"))
    ort = machine.get("ort_intra_op_threads")
    has_onnx = any(str(r.get("model", "")).startswith("onnx") for r in data.get("results", []))
    ort_text = ""
    if has_onnx:
        ort_text = (
            f", ONNX Runtime {ort} intra-op threads"
            if ort
            else ", ONNX Runtime threads not pinned (its default)"
        )
    return f"Threads: PyTorch {torch_threads}{ort_text}.\n" if torch_threads else ""


def headline(data: dict) -> str:
    """The sentence that says which row a written rule chose on validation, and whether the target is met."""
    target = data.get("target") or {}
    selection = target.get("selection")
    if not selection:
        return (
            "\nThis run has no validation figures, so no row can be chosen from it: its rows are kept as "
            "measured, and none of them is a headline.\n"
        )
    chosen = selection["chosen"] or "none"
    figures = (
        f": {points(target['chosen_test_delta_points'])} test points at {target['chosen_speedup_b32']:.2f}x "
        "(batch 32)"
        if selection["chosen"]
        else ""
    )
    verdict = "met" if target["met"] else "not met"
    return f"\nRule (validation split): {selection['rule']}. Chosen: **{chosen}**{figures}. Target ({target['target']}): **{verdict}**.\n"


def write_benchmark(out, name: str, data: dict, render) -> str:
    """``<out>/<name>.json`` and ``<out>/<name>.md``, the markdown rendered by ``render`` from the JSON as
    written (what render_benchmarks.py reads back); returns the markdown."""
    from hfcompress.evaluation import write_report

    markdown = render(json.loads(json.dumps(data, default=str)))
    write_report(out, name, data, markdown)
    return markdown
