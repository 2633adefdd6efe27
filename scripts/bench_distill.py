"""Benchmark: distillation against no distillation on the full Rotten Tomatoes snippets.

    python scripts/bench_distill.py                       # full data, seeds 42; ~35 min on 2 CPU cores
    python scripts/bench_distill.py --seeds 42,43,44      # medians over several student seeds
    python scripts/bench_distill.py --max_train_samples 256 --throughput_steps 5 --out /tmp/b   # smoke run

Uses recipes/configs/minilm/rotten_tomatoes/distill_full.yaml. Steps, all in one process so ratios are
side by side: fine-tune the all-MiniLM-L6-v2 teacher; cut a 3-layer student from it; train that student
(a) with distillation (cached teacher logits) and (b) without (plain Trainer, same init, data, steps and
learning rate); evaluate each trained student and the teacher on the validation and test splits; measure
parameters, size on disk, and CPU latency at batch 1 and 32 of the teacher and every trained student with the
models taking turns (median of ``--rounds`` rounds of ``--latency_runs`` passes); measure training throughput
of distillation with and without the teacher cache against a plain Trainer (interleaved repeats, median).
Nothing is chosen here: both arms are reported for every seed. Writes <out>/distill_benchmark.json and .md.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import StepTimer, fine_tuned_teacher, fmt, machine, start, table, write_benchmark
from transformers import Trainer, set_seed

from hfcompress import DistillationTrainer, create_student_from_teacher
from hfcompress.data import (
    DistillationDataCollator,
    limit_samples,
    load_text_classification,
    tokenize_dataset,
)
from hfcompress.evaluation import (
    add_latency,
    classification_metrics,
    measure_model,
)
from hfcompress.modeling import load_tokenizer
from hfcompress.training_args import stage_args

CONFIG = Path(__file__).resolve().parents[1] / "recipes/configs/minilm/rotten_tomatoes/distill_full.yaml"


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
    cli.add_argument(
        "--teacher_dir", default=None, help="a teacher fine-tuned by hfcompress (skips fine-tuning)"
    )
    cli.add_argument("--max_train_samples", type=int, default=None)
    cli.add_argument("--throughput_steps", type=int, default=30, help="timed steps per throughput run")
    cli.add_argument("--throughput_repeats", type=int, default=3)
    cli.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds")
    cli.add_argument("--latency_runs", type=int, default=10, help="timed passes per model and round")
    cli.add_argument("--out", default="scripts/results")
    opts = cli.parse_args()
    started = time.time()
    overrides = ["--output_dir", str(Path(opts.out) / "work"), "--disable_tqdm", "true"]
    if opts.max_train_samples:
        overrides += ["--max_train_samples", str(opts.max_train_samples)]
    recipe, data_args, args = start("distill_bert", opts.config, overrides)
    work = Path(args.output_dir)
    raw, labels = load_text_classification(data_args.dataset_name)
    raw = limit_samples(raw, data_args.max_train_samples, data_args.max_eval_samples, args.seed)
    tok = load_tokenizer(recipe.teacher_model_name_or_path)
    data = tokenize_dataset(raw, tok, data_args.max_seq_length)
    metrics = classification_metrics(data_args.metric_names, len(labels))
    collator = DistillationDataCollator(tok)
    splits = {s: data[s] for s in ("validation", "test")}

    set_seed(args.seed)
    teacher, teacher_dir, teacher_record = fine_tuned_teacher(
        opts.teacher_dir, recipe, data_args, args, labels, tok, data, work, metrics
    )
    teacher.eval()
    init_student = create_student_from_teacher(teacher, recipe.student_layers)

    runs = {"distilled": [], "no_distillation": []}
    trained = {}  # run key -> trained student, all measured side by side below
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
                    data_collator=collator,
                    processing_class=tok,
                    compute_metrics=metrics,
                )
            trainer.train()
            save_dir = work / f"{name}-seed{seed}"
            trainer.save_model(str(save_dir))
            trained[f"{name}-seed{seed}"] = model.eval()
            runs[name].append({"seed": seed, **measure_model(model, save_dir, splits, collator, metrics)})

    # Latency: the teacher and every trained student, taking turns (ratios side by side).
    keys = ["teacher", *trained]
    latency_rows = [{"model": k} for k in keys]
    add_latency(latency_rows, [teacher, *trained.values()], [tok] * len(keys), raw["validation"]["text"][:64],
                [1, 32], data_args.max_seq_length, rounds=opts.rounds, runs=opts.latency_runs)  # fmt: skip
    latency = {row["model"]: row for row in latency_rows}
    for name, per_seed in runs.items():
        for run in per_seed:
            run.update(
                {k: v for k, v in latency[f"{name}-seed{run['seed']}"].items() if k.startswith("latency")}
            )
    teacher_figures = {**measure_model(teacher, teacher_dir, splits, collator, metrics), **latency["teacher"]}

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

    figures = ("validation_accuracy", "test_accuracy", "test_f1", "latency_ms_b1", "latency_ms_b32")
    rows = [
        {
            "model": "teacher (MiniLM-L6, fine-tuned)",
            **{k: teacher_figures[k] for k in figures},
            "parameters": teacher_figures["parameters"],
            "size_mb": teacher_figures["size_mb"],
        },  # fmt: skip
    ] + [
        {
            "model": f"student 3L, {label}",
            **{k: median_of(name, k) for k in figures},
            "parameters": runs[name][0]["parameters"],
            "size_mb": runs[name][0]["size_mb"],
        }  # fmt: skip
        for name, label in (("distilled", "distilled"), ("no_distillation", "no distillation"))
    ]
    data_out = {
        "config": opts.config,
        "seeds": opts.seeds,
        "teacher_dir": str(teacher_dir),
        "teacher_record": teacher_record,
        "rows": rows,
        "runs": runs,
        "teacher": teacher_figures,
        "throughput": speeds,
        "throughput_median": speed,
        "train_examples": len(raw["train"]),
        "validation_examples": len(raw["validation"]),
        "test_examples": len(raw["test"]),
        "minutes": (time.time() - started) / 60,
        "machine": machine(),
    }
    print(write_benchmark(opts.out, "distill_benchmark", data_out, render))


def render(data: dict) -> str:
    rows = data["rows"]
    acc = "accuracy" if "accuracy" in rows[0] else "test_accuracy"
    columns = [("model", "model", str)]
    if "validation_accuracy" in rows[0]:
        columns.append(("validation_accuracy", "validation acc", fmt))
    columns += [
        (acc, "test acc", fmt),
        ("f1" if "f1" in rows[0] else "test_f1", "test F1", fmt),
        ("parameters", "parameters", fmt),
        ("size_mb", "size MB", fmt),
        ("latency_ms_b1", "b1 ms", fmt),
        ("latency_ms_b32", "b32 ms", fmt),
    ]
    per_seed = []
    for name, runs in data["runs"].items():
        per_seed.append({"arm": name.replace("_", " "), **{str(r["seed"]): r["test_accuracy"] for r in runs}})
    seeds = [str(r["seed"]) for r in next(iter(data["runs"].values()))]
    latency_note = (
        "Latency: teacher and every trained student interleaved.\n"
        if "teacher" in data
        else "Latency: measured on the untrained 3-layer student (same shape as the trained ones), not "
        "interleaved with the teacher (the script now does both; this run predates that).\n"
    )
    return (
        table(rows, columns)
        + "\nTest accuracy per seed:\n\n"
        + table(per_seed, [("arm", "arm", str)] + [(s, f"seed {s}", fmt) for s in seeds])
        + "\n"
        + latency_note
    )


if __name__ == "__main__":
    sys.exit(main())
