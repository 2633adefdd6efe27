"""Parts ``recover`` (sub-targets 1-4) and ``quantize`` (6) of scripts/bench_llm.py.

recover: the teacher is SmolLM2-135M-Instruct adapted to the first ``--teacher_tokens`` training tokens (LM
loss, one pass). Students start from it pruned two ways at about the same parameter count: depth (30 -> 20
layers, lowest block influence) and width (KV groups 3 -> 2 and FFN 1536 -> 1024 in every layer, activation
importance). Every arm trains on the same ``--train_tokens`` tokens (blocks of 256, batch 4, the same steps),
for each seed (the seed sets the data order):

    depth-lm        plain LM loss (no teacher)
    depth-fkl       pure KD (alpha 1), forward KL, T = 1, live teacher, chunked through the lm_head
    depth-rkl       the same with reverse KL
    depth-jsd       the same with generalized JSD, beta 0.5
    width-fkl       the width-pruned student with forward KL
    depth-fkl-topk  depth-fkl from a cache of the teacher's top-64 log-probabilities plus the tail mass

Perplexity uses windows of 256 tokens with stride 128 over the first ``--eval_tokens`` tokens of Persuasion
(validation) and Pride and Prejudice (test); the seed-42 models are kept for speeds and for ``quantize``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from pathlib import Path

import torch
from harness import LM_TEACHER as TEACHER
from harness import fmt, llm_arguments, machine, results_dir, table, threads_line, write_benchmark
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from hfcompress import DistillationConfig, DistillationTrainer, create_student_from_teacher
from hfcompress.assets import resolve_model
from hfcompress.data.causal_lm import group_texts, load_lm_texts, split_text
from hfcompress.distillation.causal import topk_bytes_per_token
from hfcompress.evaluation.lm import interleaved_speeds, strided_perplexity
from hfcompress.evaluation.measure import size_on_disk
from hfcompress.finetuning import ensure_finetuned_teacher
from hfcompress.modeling import count_parameters
from hfcompress.pruning import StructuredPruningConfig
from hfcompress.pruning.iterative import calibration_batches, structured_prune, structured_targets
from hfcompress.training_args import stage_args

RESULTS = results_dir("llm")  # scripts/bench_llm.py's

WORK = RESULTS / "work"
BLOCK, BATCH, LR, WINDOW, STRIDE = 256, 4, 2e-4, 256, 128
ARMS = {
    "depth-lm": {"student": "depth", "loss": "lm"},
    "depth-fkl": {"student": "depth", "divergence": "forward_kl"},
    "depth-rkl": {"student": "depth", "divergence": "reverse_kl"},
    "depth-jsd": {"student": "depth", "divergence": "jsd"},
    "width-fkl": {"student": "width", "divergence": "forward_kl"},
    "depth-fkl-topk": {"student": "depth", "divergence": "forward_kl", "topk": 64},
}
PRUNING = {
    "depth": StructuredPruningConfig(prune_layers=10, layer_selection="block_influence", importance="activation",
                                     calibration_batches=4),
    "width": StructuredPruningConfig(prune_heads_fraction=0.34, prune_ffn_fraction=0.3334, importance="activation",
                                     calibration_batches=4),
}  # fmt: skip


def training_args(output_dir, seed: int, **kwargs) -> DistillationConfig:
    return DistillationConfig(
        output_dir=str(output_dir), per_device_train_batch_size=BATCH, per_device_eval_batch_size=BATCH,
        num_train_epochs=1, learning_rate=LR, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
        logging_steps=4, report_to=[], save_strategy="no", eval_strategy="no", use_cpu=True, disable_tqdm=True,
        seed=seed, data_seed=seed, alpha=1.0, temperature=1.0, lm_chunk_size=1024, **kwargs,
    )  # fmt: skip


def load_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def perplexities(model, tokenizer, texts: dict, eval_tokens: int) -> dict:
    row = {}
    for split, text in texts.items():
        result = strided_perplexity(model, tokenizer, text, WINDOW, STRIDE, eval_tokens)
        row |= {f"{split}_perplexity": result["perplexity"], f"{split}_bits_per_byte": result["bits_per_byte"],
                f"{split}_tokens": result["tokens"]}  # fmt: skip
    return row


def setup(args):
    path = resolve_model(TEACHER)
    tokenizer = AutoTokenizer.from_pretrained(path)
    raw = load_lm_texts("austen_novels")
    texts = {"validation": split_text(raw, "validation"), "test": split_text(raw, "test")}
    train = group_texts(raw["train"], tokenizer, BLOCK, max_tokens=args.train_tokens)
    teacher_blocks = {"train": group_texts(raw["train"], tokenizer, BLOCK, max_tokens=args.teacher_tokens)}
    record = {
        "base": TEACHER,
        "tokens": args.teacher_tokens,
        "block": BLOCK,
        "lr": 5e-5,
        "batch": BATCH,
        "seed": 42,
    }
    teacher_args = stage_args(training_args(WORK / "teacher_run", 42), learning_rate=5e-5)
    base = AutoModelForCausalLM.from_pretrained(path)
    teacher, _ = ensure_finetuned_teacher(base, False, "always", tokenizer, teacher_blocks | {"validation": None},
                                          teacher_args, WORK / "teacher", record, task_type="causal_lm")  # fmt: skip
    return tokenizer, texts, train, teacher.eval()


def pruned_student(teacher, kind: str, train, tokenizer):
    config = PRUNING[kind]
    student = create_student_from_teacher(teacher, list(range(teacher.config.num_hidden_layers)))
    batches = calibration_batches(train, tokenizer, BATCH, config.calibration_batches, 0)
    (target,) = structured_targets(student, config)
    student, removed = structured_prune(student, target, config, batches)
    return student, removed


def part_recover(args) -> None:
    seeds = [int(s) for s in args.seeds.split(",")]
    arms = args.arms.split(",") if args.arms else list(ARMS)
    out_json = RESULTS / "recover.json"
    data = load_json(out_json) or {"runs": {}, "references": {}}
    tokenizer, texts, train, teacher = setup(args)
    refs = data["references"]
    if "teacher" not in refs:
        original = AutoModelForCausalLM.from_pretrained(resolve_model(TEACHER)).eval()
        refs["original"] = perplexities(original, tokenizer, texts, args.eval_tokens) | {
            "parameters": count_parameters(original)
        }
        refs["teacher"] = perplexities(teacher, tokenizer, texts, args.eval_tokens) | {
            "parameters": count_parameters(teacher)
        }
        for kind in PRUNING:
            student, removed = pruned_student(teacher, kind, train, tokenizer)
            refs[f"{kind}-pruned-untrained"] = perplexities(student, tokenizer, texts, args.eval_tokens) | {
                "parameters": count_parameters(student), "removed": removed, "config": student.config.to_diff_dict()}  # fmt: skip
        save_recover(data, args)
    for seed in seeds:
        for arm in arms:
            key = f"{arm}/{seed}"
            if key in data["runs"]:
                continue
            spec = ARMS[arm]
            student, _ = pruned_student(teacher, spec["student"], train, tokenizer)
            run_dir = WORK / "runs" / f"{arm}-{seed}"
            extra = {}
            if "topk" in spec:
                extra = {"cache_teacher_logits": True, "teacher_topk": spec["topk"],
                         "teacher_cache_path": str(WORK / "teacher_topk64.safetensors")}  # fmt: skip
            alpha = 0.0 if spec.get("loss") == "lm" else 1.0
            config = training_args(
                run_dir, seed, divergence=spec.get("divergence", "forward_kl"), beta=0.5, **extra
            )
            config.alpha = alpha
            started = time.perf_counter()
            if alpha == 0.0:  # the plain LM loss: a plain Trainer, no teacher at all
                from transformers import Trainer

                from hfcompress.data import task_collator

                trainer = Trainer(model=student, args=stage_args(config, learning_rate=LR), train_dataset=train,
                                  data_collator=task_collator(tokenizer, "causal_lm"))  # fmt: skip
            else:
                trainer = DistillationTrainer(model=student, teacher_model=teacher, args=config, train_dataset=train,
                                              processing_class=tokenizer)  # fmt: skip
            setup_seconds = time.perf_counter() - started
            result = trainer.train()
            row = {"arm": arm, "seed": seed, "train_tokens": len(train) * BLOCK, "steps": result.global_step,
                   "train_samples_per_second": result.metrics["train_samples_per_second"],
                   "train_seconds": result.metrics["train_runtime"], "setup_seconds": setup_seconds,
                   "parameters": count_parameters(student)}  # fmt: skip
            if "topk" in spec:
                row["cache_bytes_per_token"] = topk_bytes_per_token(load_file(extra["teacher_cache_path"]))
            row |= perplexities(trainer.model, tokenizer, texts, args.eval_tokens)
            if seed == seeds[0]:
                trainer.model.save_pretrained(WORK / "models" / arm)
                tokenizer.save_pretrained(WORK / "models" / arm)
            shutil.rmtree(run_dir, ignore_errors=True)
            data["runs"][key] = row
            print(json.dumps(row), flush=True)
            save_recover(data, args)
    if "speeds" not in data and all((WORK / "models" / a).exists() for a in ("depth-fkl", "width-fkl")):
        models = [teacher] + [
            AutoModelForCausalLM.from_pretrained(WORK / "models" / a) for a in ("depth-fkl", "width-fkl")
        ]
        speeds = interleaved_speeds(models, tokenizer, texts["test"], WINDOW, 32, 8, 5)
        data["speeds"] = {name: s for name, s in zip(("teacher", "depth-fkl", "width-fkl"), speeds)}
        save_recover(data, args)


def medians(data: dict) -> dict:
    by_arm: dict[str, list] = {}
    for row in data["runs"].values():
        by_arm.setdefault(row["arm"], []).append(row)
    out = {}
    for arm, rows in by_arm.items():
        out[arm] = {"seeds": sorted(r["seed"] for r in rows)}
        for key in (
            "validation_perplexity",
            "test_perplexity",
            "test_bits_per_byte",
            "train_samples_per_second",
        ):
            out[arm][key] = statistics.median(r[key] for r in rows)
    return out


def save_recover(data: dict, args) -> None:
    data["medians"] = med = medians(data)
    teacher = data["references"].get("teacher", {})
    verdicts = {}
    if {"depth-fkl", "depth-lm"} <= set(med) and teacher:
        kd, lm = med["depth-fkl"]["test_perplexity"], med["depth-lm"]["test_perplexity"]
        verdicts["1_kd_vs_lm"] = {
            "kd_test_ppl": kd, "lm_test_ppl": lm, "teacher_test_ppl": teacher["test_perplexity"],
            "kd_lower_by": 1 - kd / lm, "kd_over_teacher": kd / teacher["test_perplexity"] - 1,
            "met": kd <= 0.95 * lm and kd <= 1.15 * teacher["test_perplexity"],
            "target": "KD test perplexity >= 5% lower than the LM loss's and within 15% of the teacher's",
        }  # fmt: skip
    students = {a: m for a, m in med.items() if len(m["seeds"]) == max(len(x["seeds"]) for x in med.values())}
    if students:
        best = min(students, key=lambda a: students[a]["validation_perplexity"])
        verdicts["best_student"] = {"arm": best, "rule": "lowest median validation perplexity among the arms run on "
                                    "every seed; its seed-42 model is the one quantized"}  # fmt: skip
    data["verdicts"] = verdicts
    data["settings"] = {"block": BLOCK, "batch": BATCH, "learning_rate": LR, "window": WINDOW, "stride": STRIDE,
                        "train_tokens": args.train_tokens, "teacher_tokens": args.teacher_tokens,
                        "eval_tokens": args.eval_tokens, "seeds": args.seeds}  # fmt: skip
    data["machine"] = machine()
    data["command"] = (f"python scripts/bench_llm.py --part recover --seeds {args.seeds} --train_tokens "
                       f"{args.train_tokens} --teacher_tokens {args.teacher_tokens} --eval_tokens {args.eval_tokens}")  # fmt: skip
    write_benchmark(RESULTS, "recover", data, render_recover)


def part_quantize(args) -> None:
    from hfcompress.quantization import QuantizationConfig
    from hfcompress.quantization.causal_lm import (
        load_bnb_causal_lm,
        load_onnx_causal_lm,
        quantize_onnx_causal_lm,
    )

    recover = load_json(RESULTS / "recover.json")
    best = recover["verdicts"]["best_student"]["arm"]
    folder = WORK / "models" / best
    tokenizer = AutoTokenizer.from_pretrained(folder)
    raw = load_lm_texts("austen_novels")
    texts = {"validation": split_text(raw, "validation"), "test": split_text(raw, "test")}
    onnx_dir, nf4_dir = WORK / "quantized" / f"{best}-onnx-int8", WORK / "quantized" / f"{best}-nf4"
    shutil.rmtree(WORK / "quantized", ignore_errors=True)
    channel_dir = WORK / "quantized" / f"{best}-onnx-int8-per-channel"
    for where, per_channel in ((onnx_dir, False), (channel_dir, True)):
        config = QuantizationConfig(method="onnx-int8-dynamic", preset="avx512_vnni", per_channel=per_channel)
        quantize_onnx_causal_lm(folder, where, config)
    nf4 = load_bnb_causal_lm(folder, QuantizationConfig(method="bnb-nf4"))
    nf4.save_pretrained(nf4_dir)  # saved before any forward (docs/quantization.md)
    models = {
        "fp32": (AutoModelForCausalLM.from_pretrained(folder).eval(), folder),
        "onnx-int8": (load_onnx_causal_lm(onnx_dir, threads=torch.get_num_threads()), onnx_dir),
        "onnx-int8-per-channel": (
            load_onnx_causal_lm(channel_dir, threads=torch.get_num_threads()),
            channel_dir,
        ),
        "bnb-nf4": (nf4, nf4_dir),
    }
    rows = []
    for name, (model, where) in models.items():
        row = {"variant": name, "size_mb": size_on_disk(where) / 1e6}
        if name.startswith("onnx"):
            row["size_mb"] = (where / "model_quantized.onnx").stat().st_size / 1e6
        rows.append(row | perplexities(model, tokenizer, texts, args.eval_tokens))
    speeds = interleaved_speeds([m for m, _ in models.values()], tokenizer, texts["test"], WINDOW, 32, 8, 5)
    for row, speed in zip(rows, speeds):
        row |= speed
    data = {"student": best, "rule": recover["verdicts"]["best_student"]["rule"], "rows": rows, "machine": machine(),
            "command": f"python scripts/bench_llm.py --part quantize --eval_tokens {args.eval_tokens}"}  # fmt: skip
    print(write_benchmark(RESULTS, "quantize", data, render_quantize))


def part_onpolicy(args) -> None:
    """GKD's on-policy batches on the real models: the depth-pruned student trained for the same steps with
    lmbda 0 (all batches from the text) and lmbda 0.5 (half the batches sampled by the student from the
    first 64 tokens of a block, 64 new tokens, scored by the teacher). Seed 42; throughput and perplexity."""
    seed, steps = 42, args.onpolicy_steps
    tokenizer, texts, train, teacher = setup(args)
    rows = []
    for lmbda in (0.0, 0.5):
        student, _ = pruned_student(teacher, "depth", train, tokenizer)
        config = training_args(WORK / "runs" / f"onpolicy-{lmbda}", seed, lmbda=lmbda, max_steps=steps,
                               on_policy_prompt_tokens=64, on_policy_max_new_tokens=64)  # fmt: skip
        trainer = DistillationTrainer(model=student, teacher_model=teacher, args=config, train_dataset=train,
                                      processing_class=tokenizer)  # fmt: skip
        result = trainer.train()
        rows.append({"lmbda": lmbda, "steps": result.global_step, "seed": seed,
                     "train_seconds": result.metrics["train_runtime"],
                     "seconds_per_step": result.metrics["train_runtime"] / result.global_step}
                    | perplexities(trainer.model, tokenizer, texts, args.eval_tokens))  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    data = {"rows": rows, "machine": machine(), "command": f"python scripts/bench_llm.py --part onpolicy "
            f"--onpolicy_steps {steps} --train_tokens {args.train_tokens} --eval_tokens {args.eval_tokens}"}  # fmt: skip
    print(write_benchmark(RESULTS, "onpolicy", data, render_onpolicy))


def render_recover(data: dict) -> str:
    refs, med, runs = data["references"], data["medians"], data["runs"]
    rows = [{"model": k, "seeds": "-", **v} for k, v in refs.items()]
    for arm, m in med.items():
        per_seed = [r for r in runs.values() if r["arm"] == arm]
        rows.append({"model": arm, **m, "seeds": ", ".join(map(str, m["seeds"])), "parameters": per_seed[0]["parameters"],
                     "per_seed": " / ".join(f"{r['test_perplexity']:.2f}" for r in sorted(per_seed, key=lambda r: r["seed"]))})  # fmt: skip
    two = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    text = table(
        rows,
        [("model", "model / arm", fmt), ("seeds", "seeds", fmt), ("parameters", "parameters", lambda v: f"{v / 1e6:.1f}M"),
         ("validation_perplexity", "val ppl (median)", two), ("test_perplexity", "test ppl (median)", two),
         ("per_seed", "test ppl per seed", fmt), ("test_bits_per_byte", "test bits/byte", lambda v: f"{v:.3f}"),
         ("train_samples_per_second", "train samples/s", lambda v: "-" if v is None else f"{v:.3f}")],
    )  # fmt: skip
    s = data["settings"]
    text += (
        f"\nEvery arm: {s['train_tokens']:,} training tokens (blocks of {s['block']}, batch {s['batch']}, the same "
        f"steps), learning rate {s['learning_rate']}, seeds {s['seeds']}; the teacher was adapted on the first "
        f"{s['teacher_tokens']:,} training tokens. Perplexity: windows of {s['window']} tokens, stride {s['stride']}, "
        f"over the first {s['eval_tokens']:,} tokens of Persuasion (validation) and Pride and Prejudice (test). "
        f"{threads_line(data)}\n"
    )
    verdict = data["verdicts"].get("1_kd_vs_lm")
    if verdict:
        text += (
            f"\n**1. KD vs the LM loss** (median test perplexity): KD {verdict['kd_test_ppl']:.2f}, LM loss "
            f"{verdict['lm_test_ppl']:.2f}: KD is {verdict['kd_lower_by']:.1%} lower (target >= 5%), and "
            f"{verdict['kd_over_teacher']:.1%} over the adapted teacher's {verdict['teacher_test_ppl']:.2f} (target "
            f"within 15%): **{'met' if verdict['met'] else 'not met'}**.\n"
        )
    speeds = data.get("speeds")
    if speeds:
        text += "\n" + table(
            [{"model": k, **v} for k, v in speeds.items()],
            [("model", "model (seed 42)", fmt), ("generate_tokens_per_s_b1", "greedy tokens/s, batch 1", lambda v: f"{v:.1f}"),
             ("prompt_tokens_per_s", "prompt tokens/s, batch 8 x 256", lambda v: f"{v:.0f}")],
        )  # fmt: skip
    best = data["verdicts"].get("best_student")
    if best:
        text += f"\nQuantized student: `{best['arm']}` (rule: {best['rule']}).\n"
    return text + f"\n`{data['command']}`\n"


def render_quantize(data: dict) -> str:
    two = lambda v: f"{v:.2f}"  # noqa: E731
    text = table(
        data["rows"],
        [("variant", f"{data['student']}", fmt), ("size_mb", "MB", lambda v: f"{v:.0f}"),
         ("validation_perplexity", "val ppl", two), ("test_perplexity", "test ppl", two),
         ("test_bits_per_byte", "test bits/byte", lambda v: f"{v:.3f}"),
         ("generate_tokens_per_s_b1", "greedy tokens/s b1", lambda v: f"{v:.1f}"),
         ("prompt_tokens_per_s", "prompt tokens/s b8", lambda v: f"{v:.0f}")],
    )  # fmt: skip
    return text + f"\n{threads_line(data)}\n\n`{data['command']}`\n"


def render_onpolicy(data: dict) -> str:
    two = lambda v: f"{v:.2f}"  # noqa: E731
    text = table(
        data["rows"],
        [("lmbda", "lmbda", fmt), ("steps", "steps", fmt), ("seconds_per_step", "seconds per step", lambda v: f"{v:.1f}"),
         ("validation_perplexity", "val ppl", two), ("test_perplexity", "test ppl", two)],
    )  # fmt: skip
    return text + f"\n{threads_line(data)}\n\n`{data['command']}`\n"


def main() -> None:
    """``python scripts/bench_llm.py --part recover|quantize|onpolicy`` runs this script with its arguments."""
    args = llm_arguments(__doc__).parse_args()
    torch.set_num_threads(int(os.environ.get("HFC_THREADS", "2")))
    parts = {"recover": part_recover, "quantize": part_quantize, "onpolicy": part_onpolicy}
    if args.part not in parts:
        raise SystemExit(f"bench_llm_recover.py runs --part {', '.join(parts)}; --part {args.part} is bench_llm.py's")
    parts[args.part](args)


if __name__ == "__main__":
    main()
