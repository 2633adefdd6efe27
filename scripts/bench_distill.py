"""Benchmark: distillation against no distillation on the full Rotten Tomatoes snippets.

    python scripts/bench_distill.py                       # full data, seeds 42; ~35 min on 2 CPU cores
    python scripts/bench_distill.py --seeds 42,43,44      # medians over several student seeds
    python scripts/bench_distill.py --max_train_samples 256 --throughput_steps 5 --out /tmp/b   # smoke run

Uses recipes/configs/minilm/rotten_tomatoes/distill_full.yaml. Steps, all in one process so ratios are
side by side: fine-tune the all-MiniLM-L6-v2 teacher; cut a 3-layer student from it; train that student
(a) with distillation (cached teacher logits) and (b) without (plain Trainer, same init, data, steps and
learning rate); evaluate on the test split; measure parameters, size on disk, CPU latency at batch 1 and 32
(median of runs); measure training throughput of distillation with and without the teacher cache against a
plain Trainer (interleaved repeats, median). Writes <out>/distill_benchmark.json and .md.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
from hfcompress.pipeline import ensure_finetuned_teacher, limit_samples, measure_model, stage_args
from transformers import Trainer, TrainerCallback, set_seed

from hfcompress import DistillationConfig, DistillationTrainer, create_student_from_teacher
from hfcompress.configs import DataArguments, DistillRecipeArguments
from hfcompress.data import DistillationDataCollator, load_text_classification, tokenize_dataset
from hfcompress.evaluation import classification_metrics, markdown_table, write_report
from hfcompress.modeling import load_classifier, load_tokenizer
from hfcompress.parser import parse_config

CONFIG = Path(__file__).resolve().parents[1] / "recipes/configs/minilm/rotten_tomatoes/distill_full.yaml"


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


def throughput(kind, student, teacher, data, tok, args, steps, cache_dir) -> float:
    """Training samples/s for ``kind`` in (plain, distill_live, distill_cached) over ``steps`` timed steps."""
    timer = StepTimer()
    common = dict(
        output_dir=cache_dir,
        max_steps=steps + timer.skip,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to=[],
        disable_tqdm=True,
    )
    model = copy.deepcopy(student)
    if kind == "plain":
        trainer = Trainer(
            model=model,
            args=stage_args(args, **common),
            train_dataset=data,
            data_collator=DistillationDataCollator(tok),
            processing_class=tok,
            callbacks=[timer],
        )
    else:
        cfg = dataclasses.replace(
            args,
            **common,
            cache_teacher_logits=kind == "distill_cached",
            teacher_cache_path=str(Path(cache_dir) / "teacher_logits.safetensors"),
            # the cache holds logits only: the cached run measures the logit terms whatever the config says
            **(
                {"hidden_mse_weight": 0.0, "hidden_cosine_weight": 0.0, "attention_weight": 0.0}
                if kind == "distill_cached"
                else {}
            ),
        )
        trainer = DistillationTrainer(
            model=model,
            teacher_model=teacher,
            args=cfg,
            train_dataset=data,
            processing_class=tok,
            callbacks=[timer],
        )
    trainer.train()
    return timer.samples_per_second(args.per_device_train_batch_size * args.gradient_accumulation_steps)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--config", default=str(CONFIG), help="recipe config (distill_bert's dataclasses)")
    cli.add_argument("--seeds", default="42", help="student training seeds; accuracies are medians over them")
    cli.add_argument("--max_train_samples", type=int, default=None)
    cli.add_argument("--throughput_steps", type=int, default=30, help="timed steps per throughput run")
    cli.add_argument("--throughput_repeats", type=int, default=3)
    cli.add_argument("--latency_runs", type=int, default=20)
    cli.add_argument("--out", default="scripts/results")
    opts = cli.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    transformers.utils.logging.set_verbosity_warning()
    started = time.time()

    overrides = ["--output_dir", str(Path(opts.out) / "work"), "--disable_tqdm", "true"]
    if opts.max_train_samples:
        overrides += ["--max_train_samples", str(opts.max_train_samples)]
    recipe, data_args, args = parse_config(
        (DistillRecipeArguments, DataArguments, DistillationConfig), ["--config", opts.config, *overrides]
    )
    work = Path(args.output_dir)
    raw, labels = load_text_classification(data_args.dataset_name)
    raw = limit_samples(raw, data_args.max_train_samples, data_args.max_eval_samples, args.seed)
    tok = load_tokenizer(recipe.teacher_model_name_or_path)
    data = tokenize_dataset(raw, tok, data_args.max_seq_length)
    metrics = classification_metrics(data_args.metric_names, len(labels))

    set_seed(args.seed)
    teacher, ready = load_classifier(recipe.teacher_model_name_or_path, labels)
    record = {
        "bench": "distill",
        "epochs": recipe.teacher_num_train_epochs,
        "n": len(raw["train"]),
        "seed": args.seed,
    }
    teacher = ensure_finetuned_teacher(
        teacher,
        ready,
        "auto",
        tok,
        data,
        stage_args(
            args,
            output_dir=work / "teacher_ckpt",
            num_train_epochs=recipe.teacher_num_train_epochs,
            learning_rate=recipe.teacher_learning_rate,
            eval_strategy="no",
        ),
        work / "teacher",
        record,
        metrics,
    )
    teacher.eval()
    init_student = create_student_from_teacher(teacher, recipe.student_layers)

    runs = {"distilled": [], "no_distillation": []}
    for seed in [int(s) for s in opts.seeds.split(",")]:
        for name in runs:
            set_seed(seed)
            model = copy.deepcopy(init_student)
            if name == "distilled":
                cfg = dataclasses.replace(
                    args, seed=seed, teacher_cache_path=str(work / "teacher_logits.safetensors")
                )
                trainer = DistillationTrainer(
                    model=model,
                    teacher_model=teacher,
                    args=cfg,
                    train_dataset=data["train"],
                    eval_dataset=data["validation"],
                    processing_class=tok,
                    compute_metrics=metrics,
                )
            else:
                trainer = Trainer(
                    model=model,
                    args=stage_args(args, output_dir=work / "plain", seed=seed),
                    train_dataset=data["train"],
                    eval_dataset=data["validation"],
                    data_collator=DistillationDataCollator(tok),
                    processing_class=tok,
                    compute_metrics=metrics,
                )
            trainer.train()
            save_dir = work / f"{name}-seed{seed}"
            trainer.save_model(str(save_dir))
            result = measure_model(
                model,
                save_dir,
                tok,
                data["test"],
                DistillationDataCollator(tok),
                metrics,
                raw["test"]["text"][:64],
                [],
                data_args.max_seq_length,
                1,
            )
            runs[name].append({"seed": seed, **result})

    texts = raw["test"]["text"][:64]
    measured = {}
    for name, model, folder in [
        ("teacher", teacher, work / "teacher"),
        ("student", init_student, work / f"distilled-seed{runs['distilled'][0]['seed']}"),
    ]:
        measured[name] = measure_model(
            model,
            folder,
            tok,
            data["test"],
            DistillationDataCollator(tok),
            metrics,
            texts,
            [1, 32],
            data_args.max_seq_length,
            opts.latency_runs,
        )

    speeds = {"plain": [], "distill_live": [], "distill_cached": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(opts.throughput_repeats):  # interleaved, so machine noise hits every kind alike
            for kind in speeds:
                speeds[kind].append(
                    throughput(
                        kind, init_student, teacher, data["train"], tok, args, opts.throughput_steps, tmp
                    )
                )
    speed = {k: statistics.median(v) for k, v in speeds.items()}

    def median_of(name, key):
        return statistics.median(r[key] for r in runs[name])

    rows = [
        {
            "model": "teacher (MiniLM-L6, fine-tuned)",
            "accuracy": measured["teacher"]["test_accuracy"],
            "f1": measured["teacher"]["test_f1"],
            **{
                k: measured["teacher"][k]
                for k in ("parameters", "size_mb", "latency_ms_b1", "latency_ms_b32")
            },
        },
        {
            "model": "student 3L, distilled",
            "accuracy": median_of("distilled", "test_accuracy"),
            "f1": median_of("distilled", "test_f1"),
            **{
                k: measured["student"][k]
                for k in ("parameters", "size_mb", "latency_ms_b1", "latency_ms_b32")
            },
        },
        {
            "model": "student 3L, no distillation",
            "accuracy": median_of("no_distillation", "test_accuracy"),
            "f1": median_of("no_distillation", "test_f1"),
            **{
                k: measured["student"][k]
                for k in ("parameters", "size_mb", "latency_ms_b1", "latency_ms_b32")
            },
        },
    ]
    columns = [
        ("model", "model"),
        ("accuracy", "test accuracy"),
        ("f1", "test F1"),
        ("parameters", "parameters"),
        ("size_mb", "size (MB)"),
        ("latency_ms_b1", "CPU latency b1 (ms)"),
        ("latency_ms_b32", "CPU latency b32 (ms)"),
    ]
    speed_rows = [
        {"trainer": k, "samples_per_s": v, "vs_plain": v / speed["plain"]} for k, v in speed.items()
    ]
    seeds_note = f"median over seeds {opts.seeds}" if "," in opts.seeds else f"seed {opts.seeds}"
    markdown = (
        "# Distillation benchmark: all-MiniLM-L6-v2 -> 3-layer student, Rotten Tomatoes snippets\n\n"
        f"Train {len(raw['train'])}, test {len(raw['test'])} examples; student accuracy {seeds_note}. "
        f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; latency is the median "
        f"of {opts.latency_runs} runs; throughput the median of {opts.throughput_repeats} interleaved runs of "
        f"{opts.throughput_steps} steps at batch {args.per_device_train_batch_size}.\n\n"
        + markdown_table(rows, columns)
        + "\nTraining throughput of the student:\n\n"
        + markdown_table(
            speed_rows,
            [("trainer", "trainer"), ("samples_per_s", "samples/s"), ("vs_plain", "x plain Trainer")],
        )
        + f"\nConfig: `{Path(opts.config).name}`. Reproduce: `python scripts/bench_distill.py {' '.join(sys.argv[1:])}`"
        f" ({(time.time() - started) / 60:.0f} min here).\n"
    )
    data_out = {
        "config": opts.config,
        "seeds": opts.seeds,
        "rows": rows,
        "runs": runs,
        "measured": measured,
        "throughput": speeds,
        "throughput_median": speed,
        "train_examples": len(raw["train"]),
        "test_examples": len(raw["test"]),
        "minutes": (time.time() - started) / 60,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    write_report(opts.out, "distill_benchmark", data_out, markdown)
    print(markdown)


if __name__ == "__main__":
    sys.exit(main())
