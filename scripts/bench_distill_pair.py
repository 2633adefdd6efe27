"""Benchmark P2: a big teacher with another tokenizer (all-mpnet-base-v2) into pretrained MiniLM students.

    python scripts/bench_distill_pair.py --teacher_dir DIR          # a teacher fine-tuned by hfcompress
    python scripts/bench_distill_pair.py                            # fine-tunes MPNet first (~35 min, once)
    python scripts/bench_distill_pair.py --max_train_samples 256 --seeds 42 --out /tmp/b   # smoke run

Config: recipes/configs/mpnet/rotten_tomatoes/distill_minilm.yaml (distill_bert's dataclasses). Every arm
starts from the same student init and trains the same number of optimizer steps (one pass over the labelled
training set) at the same learning rate; per seed:

- ``l6-plain``: all-MiniLM-L6-v2 fine-tuned with the plain Trainer (no distillation): the baseline;
- ``l6-soft``: soft targets (cached teacher logits, two tokenizers);
- ``l6-hidden``: soft targets + hidden-state MSE, 384 -> 768 through learned projections on the auto layer
  map (student i <- teacher 2i), on the character-span token alignment (live teacher);
- ``l6-augment``: soft targets (live teacher) on the labelled rows plus unlabelled text (the training movies' plot
  summaries and one augmented copy of each training text, `hfcompress augment`), same steps;
- ``l3-plain`` / ``l3-soft``: a 3-layer cut of MiniLM-L6 (every other layer), without and with soft targets.

The headline arm is chosen on validation (highest median validation accuracy among the L6 distillation arms);
P2 is judged on its test accuracy against ``l6-plain``, seed by seed. Latency of the teacher and the students
is measured with the models taking turns; training throughput of the two-tokenizer path against a
shared-tokenizer path (both with cached logits) and the plain Trainer, interleaved. Each arm's result is
written under <out>/work and reused by a rerun, so an interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from datasets import DatasetDict
from harness import (
    StepTimer,
    fine_tuned_teacher,
    fmt,
    machine,
    points,
    start,
    table,
    threads_line,
    write_benchmark,
)
from transformers import AutoModelForSequenceClassification, Trainer, set_seed

from hfcompress import DistillationTrainer, create_student_from_teacher
from hfcompress.data import (
    DistillationDataCollator,
    limit_samples,
    load_text_classification,
    tokenize_dataset,
)
from hfcompress.data.augment import AugmentConfig, run_augment
from hfcompress.data.unlabelled import add_unlabelled, load_unlabelled_texts
from hfcompress.evaluation import (
    add_latency,
    classification_metrics,
    measure_model,
)
from hfcompress.modeling import load_classifier, load_tokenizer
from hfcompress.training_args import stage_args

CONFIG = Path(__file__).resolve().parents[1] / "recipes/configs/mpnet/rotten_tomatoes/distill_minilm.yaml"
ARMS = ("l6-plain", "l6-soft", "l6-hidden", "l6-augment", "l3-plain", "l3-soft")
DISTILLED_L6 = ("l6-soft", "l6-hidden", "l6-augment")
ORDER = (("l6-plain", "l6-soft"), ("l6-hidden",), ("l6-augment",), ("l3-plain", "l3-soft"))


def train_arm(arm, seed, students, teacher, data, args, steps, work, tokenizers):
    """Train one arm from its init for ``steps`` optimizer steps; returns the trained model."""
    student_tok, teacher_tok = tokenizers
    set_seed(seed)
    model = copy.deepcopy(students[arm[:2]])
    common = dict(output_dir=work / "checkpoints", seed=seed, max_steps=steps, eval_strategy="no",
                  save_strategy="no", disable_tqdm=True)  # fmt: skip
    if arm.endswith("plain"):
        trainer = Trainer(model=model, args=stage_args(args, **common), train_dataset=data["student"],
                          data_collator=DistillationDataCollator(student_tok), processing_class=student_tok)  # fmt: skip
    else:
        # The logit cache serves the arms that pass over the labelled set (l6-soft, l3-soft). l6-hidden needs
        # the live teacher; l6-augment samples 319 batches from a pool twice that size, so the live teacher
        # (on the rows drawn) costs less than caching the whole pool.
        cached = arm in ("l6-soft", "l3-soft")
        cfg = dataclasses.replace(
            args, **common, teacher_dtype="bfloat16", cache_teacher_logits=cached,
            hidden_mse_weight=1.0 if arm == "l6-hidden" else 0.0,
            teacher_cache_path=str(work / "teacher_logits_train.safetensors"),
        )  # fmt: skip
        trainer = DistillationTrainer(model=model, teacher_model=teacher, args=cfg,
                                      train_dataset=data["augment" if arm == "l6-augment" else "pair"],
                                      processing_class=student_tok, teacher_processing_class=teacher_tok)  # fmt: skip
    trainer.train()
    return model.eval()


def throughput(kind, student, teacher, dataset, tokenizers, args, steps, folder) -> float:
    """Training samples/s over ``steps`` timed steps: plain Trainer, or distillation from cached logits with
    two tokenizers (``pair``) or one (``shared``)."""
    timer = StepTimer()
    common = dict(output_dir=folder, max_steps=steps + timer.skip, eval_strategy="no", save_strategy="no",
                  logging_strategy="no", report_to=[], disable_tqdm=True)  # fmt: skip
    model = copy.deepcopy(student)
    if kind == "plain":
        trainer = Trainer(model=model, args=stage_args(args, **common), train_dataset=dataset,
                          data_collator=DistillationDataCollator(tokenizers[0]), callbacks=[timer])  # fmt: skip
    else:
        cfg = dataclasses.replace(args, **common, cache_teacher_logits=True, teacher_dtype="bfloat16",
                                  teacher_cache_path=str(Path(folder) / f"{kind}.safetensors"))  # fmt: skip
        trainer = DistillationTrainer(model=model, teacher_model=teacher, args=cfg, train_dataset=dataset,
                                      processing_class=tokenizers[0],
                                      teacher_processing_class=tokenizers[1] if kind == "pair" else None,
                                      callbacks=[timer])  # fmt: skip
    trainer.train()
    return timer.samples_per_second(args.per_device_train_batch_size)


def augmented_texts(work, raw, unlabelled, seed) -> tuple[list[str], dict]:
    """One augmented copy of each training text and of the unlabelled plots (written once, then reused)."""
    folder = work / "augmented"
    if not folder.exists():
        run_augment(AugmentConfig(copies=1), list(raw["train"]["text"]) + unlabelled, str(folder), seed,
                    source="rotten_tomatoes_snippets train + plots")  # fmt: skip
    return load_unlabelled_texts(str(folder)), json.loads((folder / "augment.json").read_text())


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--config", default=str(CONFIG))
    cli.add_argument("--seeds", default="42,43,44")
    cli.add_argument(
        "--arms", default=",".join(ARMS), help="arms to run and report (l6-plain and one distilled)"
    )
    cli.add_argument(
        "--extra_seeds",
        default=None,
        help="seeds of the l6-hidden, l6-augment and l3 arms (default: --seeds); the headline is chosen only "
        "among distilled arms run on every seed of --seeds",
    )
    cli.add_argument(
        "--teacher_dir", default=None, help="a teacher fine-tuned by hfcompress (skips fine-tuning)"
    )
    cli.add_argument("--max_train_samples", type=int, default=None)
    cli.add_argument("--max_eval_samples", type=int, default=None)
    cli.add_argument("--throughput_steps", type=int, default=20)
    cli.add_argument("--throughput_repeats", type=int, default=3)
    cli.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds")
    cli.add_argument("--latency_runs", type=int, default=10)
    cli.add_argument("--out", default="scripts/results/distill_pair")
    opts = cli.parse_args()
    started = time.time()
    overrides = ["--output_dir", str(Path(opts.out) / "work"), "--disable_tqdm", "true"]
    if opts.max_train_samples:
        overrides += ["--max_train_samples", str(opts.max_train_samples)]
    if opts.max_eval_samples:
        overrides += ["--max_eval_samples", str(opts.max_eval_samples)]
    recipe, data_args, args = start("distill_bert", opts.config, overrides)
    work = Path(args.output_dir)
    raw, labels = load_text_classification(data_args.dataset_name)
    raw = limit_samples(raw, data_args.max_train_samples, data_args.max_eval_samples, args.seed)
    metrics = classification_metrics(data_args.metric_names, len(labels))
    teacher_tok = load_tokenizer(recipe.teacher_model_name_or_path)
    student_tok = load_tokenizer(recipe.student_model_name_or_path)
    teacher_data = tokenize_dataset(raw, teacher_tok, data_args.max_seq_length)
    set_seed(args.seed)
    teacher, teacher_dir, teacher_record = fine_tuned_teacher(
        opts.teacher_dir, recipe, data_args, args, labels, teacher_tok, teacher_data, work, metrics
    )
    teacher.eval()

    arms = [a for a in ARMS if a in opts.arms.split(",")]
    unknown = set(opts.arms.split(",")) - set(ARMS)
    if unknown or "l6-plain" not in arms or not set(arms) & set(DISTILLED_L6):
        raise SystemExit(f"--arms must name l6-plain, one of {DISTILLED_L6} and only arms of {ARMS}")
    max_len = data_args.max_seq_length
    pair = tokenize_dataset(raw, student_tok, max_len, teacher_tok)
    data = {"student": tokenize_dataset(raw, student_tok, max_len)["train"], "pair": pair["train"]}
    extra, augment_record = [], None
    if "l6-augment" in arms:  # the training movies' plot summaries, plus one augmented copy of every text
        unlabelled = load_unlabelled_texts(recipe.unlabelled_data or data_args.dataset_name)
        augmented, augment_record = augmented_texts(work, raw, unlabelled, args.seed)
        augment_record["plot_summaries"] = len(unlabelled)
        extra = unlabelled + augmented
        augmented_raw = DatasetDict({**raw, "train": add_unlabelled(raw["train"], extra)})
        data["augment"] = tokenize_dataset(augmented_raw, student_tok, max_len, teacher_tok)["train"]
    splits = {s: pair[s] for s in ("validation", "test")}
    collator = DistillationDataCollator(student_tok)
    l6, _ = load_classifier(recipe.student_model_name_or_path, labels)
    students = {"l6": l6, "l3": create_student_from_teacher(l6, recipe.student_layers)}
    steps = -(-len(raw["train"]) // args.per_device_train_batch_size) * int(args.num_train_epochs)

    runs = {arm: [] for arm in arms}
    seeds = [int(s) for s in opts.seeds.split(",")]
    extra_seeds = [int(s) for s in (opts.extra_seeds or opts.seeds).split(",")]
    for group in ORDER:  # the baseline and soft targets on every seed first: P2 needs them
        for seed in seeds if group == ORDER[0] else extra_seeds:
            for arm in (a for a in group if a in arms):
                folder = work / f"{arm}-seed{seed}"
                if not (folder / "result.json").exists():  # an interrupted run's finished arms are reused
                    tick = time.time()
                    model = train_arm(
                        arm, seed, students, teacher, data, args, steps, work, (student_tok, teacher_tok)
                    )
                    model.save_pretrained(folder)
                    result = {"seed": seed, **measure_model(model, folder, splits, collator, metrics),
                              "train_minutes": (time.time() - tick) / 60}  # fmt: skip
                    (folder / "result.json").write_text(json.dumps(result, indent=2))
                runs[arm].append(json.loads((folder / "result.json").read_text()))

    teacher = AutoModelForSequenceClassification.from_pretrained(
        teacher_dir
    ).eval()  # fp32 (arms ran it in bf16)
    teacher_figures = measure_model(teacher, teacher_dir, {s: teacher_data[s] for s in ("validation", "test")},
                                    DistillationDataCollator(teacher_tok), metrics)  # fmt: skip
    timed = {
        "teacher": teacher,
        "l6": students["l6"].eval(),
        "l3": students["l3"].eval(),
    }  # latency: shape only
    latency_rows = [{"model": k} for k in timed]
    add_latency(latency_rows, list(timed.values()), [teacher_tok, student_tok, student_tok],
                raw["validation"]["text"][:64], [1, 32], max_len, rounds=opts.rounds, runs=opts.latency_runs)  # fmt: skip
    latency = {row["model"]: row for row in latency_rows}

    # Throughput: two tokenizers vs one (a same-vocabulary teacher: the seed's trained baseline), both cached.
    subset = min(1024, len(data["pair"]))
    shared_teacher = AutoModelForSequenceClassification.from_pretrained(work / f"l6-plain-seed{seeds[0]}")
    speeds = {"plain": [], "pair": [], "shared": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(opts.throughput_repeats):
            for kind in speeds:
                dataset = data["student" if kind != "pair" else "pair"].select(range(subset))
                speeds[kind].append(throughput(kind, l6, teacher if kind == "pair" else shared_teacher, dataset,
                                               (student_tok, teacher_tok), args, opts.throughput_steps, tmp))  # fmt: skip
    speed = {k: statistics.median(v) for k, v in speeds.items()}

    def med(arm, key):
        return statistics.median(r[key] for r in runs[arm])

    base = {r["seed"]: r["test_accuracy"] for r in runs["l6-plain"]}
    deltas = {
        arm: [round(100 * (r["test_accuracy"] - base[r["seed"]]), 2) for r in runs[arm]]
        for arm in DISTILLED_L6
        if arm in arms
    }
    eligible = [arm for arm in deltas if {r["seed"] for r in runs[arm]} >= set(seeds)]
    chosen = max(eligible, key=lambda arm: med(arm, "validation_accuracy"))
    p2 = {
        "target": "the distilled MiniLM-L6 beats the same student without distillation by >= 1.0 test point, every seed",
        "rule": f"the L6 distillation arm with the highest median validation accuracy, among those run on every "
        f"seed ({', '.join(eligible)})",
        "chosen": chosen,
        "test_delta_points_per_seed": deltas[chosen],
        "met": all(d >= 1.0 for d in deltas[chosen]),
    }
    teacher_test = teacher_figures["test_accuracy"]
    rows = [{"model": "teacher: all-mpnet-base-v2 fine-tuned", "arm": "teacher",
             **{k: teacher_figures[k] for k in ("validation_accuracy", "test_accuracy", "parameters", "size_mb")},
             "kept_pct": 100.0, **{k: latency["teacher"][k] for k in ("latency_ms_b1", "latency_ms_b32")}}]  # fmt: skip
    for arm in arms:
        size_of = arm[:2]
        row = {"model": arm, "arm": arm, "validation_accuracy": med(arm, "validation_accuracy"),
               "test_accuracy": med(arm, "test_accuracy"), "parameters": runs[arm][0]["parameters"],
               "size_mb": runs[arm][0]["size_mb"], "kept_pct": 100 * med(arm, "test_accuracy") / teacher_test,
               "latency_ms_b1": latency[size_of]["latency_ms_b1"], "latency_ms_b32": latency[size_of]["latency_ms_b32"],
               "test_per_seed": [r["test_accuracy"] for r in runs[arm]],
               "delta_vs_l6_plain": deltas.get(arm)}  # fmt: skip
        rows.append(row)
    for row in rows:
        row["speedup_b32"] = latency["teacher"]["latency_ms_b32"] / row["latency_ms_b32"]
        row["speedup_b1"] = latency["teacher"]["latency_ms_b1"] / row["latency_ms_b1"]
    minutes = (time.time() - started) / 60
    data = {
        "config": opts.config, "seeds": opts.seeds, "extra_seeds": extra_seeds, "teacher_dir": str(teacher_dir), "teacher_record": teacher_record,
        "teacher": {**teacher_figures, **latency["teacher"]}, "steps": steps, "rows": rows, "runs": runs, "p2": p2,
        "augment": augment_record, "unlabelled_rows": len(extra), "throughput": speeds, "throughput_median": speed,
        "train_examples": len(raw["train"]), "validation_examples": len(raw["validation"]),
        "test_examples": len(raw["test"]), "minutes": minutes, "machine": machine(),
    }  # fmt: skip
    print(write_benchmark(opts.out, "distill_pair_benchmark", data, render))


def render(data: dict) -> str:
    """P2: the verdict and its rule, every arm (medians and per seed), the teacher's figures, throughput."""
    p2 = data["p2"]

    def per_seed(formatter):
        return lambda values: "-" if values is None else ", ".join(formatter(v) for v in values)

    text = (
        f"**P2** ({p2['target']}): **{'met' if p2['met'] else 'not met'}**. Rule (validation): {p2['rule']}; "
        f"chosen: `{p2['chosen']}`; its test points over `l6-plain` per seed: "
        f"{', '.join(points(d) for d in p2['test_delta_points_per_seed'])}.\n\n"
        f"{data['train_examples']:,} labelled training examples, {data['validation_examples']:,} validation, "
        f"{data['test_examples']:,} test; every arm {data['steps']} optimizer steps"
        + (
            f"; `l6-augment` adds {data['unlabelled_rows']:,} unlabelled rows ({data['augment']['rows']:,} "
            f"augmented texts, method `{data['augment']['method_used']}`)"
            if data.get("augment")
            else ""
        )
        + f". Seeds {data['seeds']}"
        + (
            f" (l6-hidden, l6-augment and l3 arms: {', '.join(map(str, data['extra_seeds']))})"
            if data.get("extra_seeds")
            else ""
        )
        + f". {threads_line(data)}\n"
    )
    text += table(
        data["rows"],
        [
            ("model", "arm", str),
            ("validation_accuracy", "val acc (median)", fmt),
            ("test_accuracy", "test acc (median)", fmt),
            ("test_per_seed", "test acc per seed", per_seed(lambda v: f"{v:.4f}")),
            ("delta_vs_l6_plain", "test points vs l6-plain, per seed", per_seed(points)),
            ("kept_pct", "% of teacher's test acc", fmt),
            ("parameters", "parameters", fmt),
            ("size_mb", "MB", fmt),
            ("latency_ms_b1", "b1 ms", fmt),
            ("latency_ms_b32", "b32 ms", fmt),
            ("speedup_b32", "speed-up b32", fmt),
        ],
    )
    speed = data["throughput_median"]
    text += (
        "\nTraining throughput of MiniLM-L6, cached teacher logits (median of interleaved runs):\n\n"
        + table(
            [{"trainer": k, "samples_per_s": v, "vs_plain": v / speed["plain"]} for k, v in speed.items()],
            [
                ("trainer", "trainer", str),
                ("samples_per_s", "samples/s", fmt),
                ("vs_plain", "x plain Trainer", fmt),
            ],
        )
    )
    return text


if __name__ == "__main__":
    sys.exit(main())
