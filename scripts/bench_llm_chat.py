"""Chat benchmark: SmolLM2-135M-Instruct teaches a pruned copy of itself on chat-formatted Austen data.

    python scripts/bench_llm_chat.py                       # 3 seeds, about 45 minutes on 2 cores
    python scripts/bench_llm_chat.py --seeds 42 --train_rows 32 --eval_tokens 1024   # a smoke run

Data: ``austen_chat`` (the user asks to continue the opening of a paragraph; split by novel: four novels train,
Persuasion validation, Pride and Prejudice test). Sequence-level KD (Kim & Rush 2016): the teacher answers the
first ``train_rows`` training prompts once, greedily (cached); every arm trains on those answers.

Rows, all measured as completion perplexity (only assistant tokens) of Austen's own continuations of held-out
paragraphs, on the same validation and test rows: the teacher; the student before training (30 -> 20 layers by
block influence, one pruned copy shared by every arm); and per seed, with the same tokens, steps and learning
rate: ``lm`` (the LM loss on the teacher's answers: sequence-level KD alone) and ``kd`` (alpha 0.5: half the LM
loss, half forward KL to the teacher's token distributions). The arms and their settings were fixed before any
run; no setting was chosen on test figures. Target: ``kd`` at least 5% lower test completion perplexity than
``lm`` on every seed. JSON + markdown under scripts/results/llm_chat/; finished (arm, seed) rows are kept and
skipped when run again.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import LM_TEACHER, fmt, machine, results_dir, table, threads_line, write_benchmark  # noqa: E402

from hfcompress import DistillationConfig, DistillationTrainer, create_student_from_teacher  # noqa: E402
from hfcompress.data import task_collator  # noqa: E402
from hfcompress.data.causal_lm import ensure_pad_token  # noqa: E402
from hfcompress.data.lm_examples import lm_examples, load_lm_data  # noqa: E402
from hfcompress.distillation.sequence import teacher_answers  # noqa: E402
from hfcompress.evaluation.lm import rows_perplexity  # noqa: E402
from hfcompress.modeling import count_parameters, load_causal_lm, load_tokenizer  # noqa: E402
from hfcompress.pruning import StructuredPruningConfig  # noqa: E402
from hfcompress.pruning.iterative import calibration_batches, structured_prune, structured_targets  # noqa: E402
from hfcompress.runtime import configure_cpu_threads  # noqa: E402

RESULTS = results_dir("llm_chat")
TEACHER = LM_TEACHER
COLUMNS = {"text": "text", "messages": "messages", "prompt": "prompt", "completion": "completion"}
BLOCK = 512  # every austen_chat row fits (median 149 tokens with SmolLM2's template)
BATCH, LR = 4, 1e-4
PRUNING = StructuredPruningConfig(prune_layers=10, layer_selection="block_influence", calibration_batches=4)
ARMS = {"lm": None, "kd": 0.5}  # arm -> alpha (None: plain LM loss, no teacher)


def training_args(output_dir: Path, seed: int, alpha: float) -> DistillationConfig:
    return DistillationConfig(
        output_dir=str(output_dir), per_device_train_batch_size=BATCH, per_device_eval_batch_size=BATCH,
        num_train_epochs=1, learning_rate=LR, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
        logging_steps=8, report_to=[], save_strategy="no", eval_strategy="no", use_cpu=True, disable_tqdm=True,
        seed=seed, data_seed=seed, alpha=alpha, temperature=1.0, divergence="forward_kl", lm_chunk_size=1024,
    )  # fmt: skip


def completion_perplexities(model, rows: dict, tokenizer) -> dict:
    out = {}
    for split, examples in rows.items():
        result = rows_perplexity(model, examples, tokenizer, batch_size=BATCH)
        out |= {f"{split}_perplexity": result["perplexity"], f"{split}_tokens": result["tokens"]}
    return out


def train_arm(student, teacher, alpha, train, tokenizer, seed: int, work: Path):
    """One arm from the shared pruned copy: the plain LM loss (``alpha`` None) or KD with ``alpha``."""
    args = training_args(work / "run", seed, alpha if alpha is not None else 0.0)
    if alpha is None:
        from transformers import Trainer

        trainer = Trainer(model=student, args=args, train_dataset=train, processing_class=tokenizer,
                          data_collator=task_collator(tokenizer, "causal_lm"))  # fmt: skip
    else:
        trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=train,
                                      processing_class=tokenizer)  # fmt: skip
    start = time.perf_counter()
    result = trainer.train()
    return trainer.model.eval(), {"train_seconds": time.perf_counter() - start,
                                  "train_samples_per_second": result.metrics.get("train_samples_per_second"),
                                  "steps": result.global_step}  # fmt: skip


def summarise(data: dict, seeds: list[int]) -> dict:
    """Per seed, how much lower kd's test (and validation) completion perplexity is than lm's; the target."""
    per_seed = {}
    for seed in seeds:
        lm, kd = data["runs"].get(f"lm/{seed}"), data["runs"].get(f"kd/{seed}")
        if lm and kd:
            per_seed[str(seed)] = {
                split: 1 - kd[f"{split}_perplexity"] / lm[f"{split}_perplexity"] for split in ("validation", "test")
            }
    met = bool(per_seed) and len(per_seed) == len(seeds) and all(v["test"] >= 0.05 for v in per_seed.values())
    median = {
        arm: {split: statistics.median(data["runs"][f"{arm}/{s}"][f"{split}_perplexity"] for s in seeds
                                       if f"{arm}/{s}" in data["runs"]) for split in ("validation", "test")}
        for arm in ARMS if any(f"{arm}/{s}" in data["runs"] for s in seeds)
    }  # fmt: skip
    return {"kd_vs_lm_reduction": per_seed, "median_perplexity": median, "target": "kd >= 5% lower test "
            "completion perplexity than lm on every seed", "target_met": met}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--train_rows", type=int, default=256, help="training prompts the teacher answers")
    parser.add_argument("--eval_tokens", type=int, default=8192, help="validation/test rows up to this many tokens")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    args = parser.parse_args()
    configure_cpu_threads()
    seeds = [int(s) for s in args.seeds.split(",")]
    RESULTS.mkdir(parents=True, exist_ok=True)
    work = RESULTS / "work"
    out_json = RESULTS / "chat.json"
    settings = {"train_rows": args.train_rows, "eval_tokens": args.eval_tokens, "max_new_tokens": args.max_new_tokens,
                "batch": BATCH, "lr": LR, "block": BLOCK, "pruning": "30 -> 20 layers, block influence"}  # fmt: skip
    data = json.loads(out_json.read_text()) if out_json.exists() else {}
    if data.get("settings", {}) | {"train_tokens": None} != settings | {"train_tokens": None}:
        data = {"runs": {}, "references": {}}  # other settings: start over

    tokenizer = ensure_pad_token(load_tokenizer(TEACHER))
    teacher = load_causal_lm(TEACHER).eval()
    raw, fmt = load_lm_data("austen_chat")
    answered = teacher_answers(teacher, tokenizer, raw["train"].select(range(args.train_rows)), fmt, COLUMNS,
                               work, args.max_new_tokens, batch_size=8)  # fmt: skip
    train = lm_examples(answered, tokenizer, BLOCK, where="austen_chat (train, teacher answers)")
    rows = {split: lm_examples(raw[split], tokenizer, BLOCK, max_tokens=args.eval_tokens, where=f"austen_chat ({split})")
            for split in ("validation", "test")}  # fmt: skip
    settings["train_tokens"] = sum(len(r) for r in train["input_ids"])
    data["settings"], data["machine"] = settings, machine()
    data["command"] = "python scripts/bench_llm_chat.py " + " ".join(sys.argv[1:])
    data["example_answer"] = {"prompt": answered[0]["messages"][-2]["content"][:300],
                              "teacher": answered[0]["messages"][-1]["content"]}  # fmt: skip

    pruned_dir = work / "pruned"
    if not (pruned_dir / "config.json").exists():
        student = create_student_from_teacher(teacher, list(range(teacher.config.num_hidden_layers)))
        batches = calibration_batches(train, tokenizer, BATCH, PRUNING.calibration_batches, 0)
        (target,) = structured_targets(student, PRUNING)
        student, removed = structured_prune(student, target, PRUNING, batches)
        student.save_pretrained(pruned_dir)
        data["removed_layers"] = removed["layers"]
    refs = data["references"]
    if "teacher" not in refs:
        refs["teacher"] = completion_perplexities(teacher, rows, tokenizer) | {"parameters": count_parameters(teacher)}
        pruned = load_causal_lm(str(pruned_dir)).eval()
        refs["pruned-untrained"] = completion_perplexities(pruned, rows, tokenizer) | {
            "parameters": count_parameters(pruned)}  # fmt: skip
    for seed in seeds:
        for arm, alpha in ARMS.items():
            key = f"{arm}/{seed}"
            if key in data["runs"]:
                continue
            torch.manual_seed(seed)
            student = load_causal_lm(str(pruned_dir))
            model, timing = train_arm(student, teacher, alpha, train, tokenizer, seed, work / key.replace("/", "-"))
            data["runs"][key] = completion_perplexities(model, rows, tokenizer) | timing | {"alpha": alpha}
            data["summary"] = summarise(data, seeds)
            write_benchmark(RESULTS, "chat", data, render)
            print(key, {k: round(v, 3) for k, v in data["runs"][key].items() if isinstance(v, float)}, flush=True)
    data["summary"] = summarise(data, seeds)
    print(write_benchmark(RESULTS, "chat", data, render))


def render(data: dict) -> str:
    two = lambda v: f"{v:.2f}"  # noqa: E731
    rows = [{"model": name, "seed": "-", **row} for name, row in data["references"].items()]
    rows += [{"model": key.split("/")[0], "seed": key.split("/")[1], **row} for key, row in sorted(data["runs"].items())]
    text = table(
        rows,
        [("model", "model / arm", fmt), ("seed", "seed", fmt), ("parameters", "parameters", lambda v: "-" if v is None else f"{v / 1e6:.1f}M"),
         ("validation_perplexity", "val completion ppl", two), ("test_perplexity", "test completion ppl", two),
         ("train_seconds", "train s", lambda v: "-" if v is None else f"{v:.0f}")],
    )  # fmt: skip
    s, summary = data["settings"], data["summary"]
    seeds = sorted({key.split("/")[1] for key in data["runs"]})
    text += (
        f"\nSettings: the first {s['train_rows']} training prompts answered by the teacher (greedy, at most "
        f"{s['max_new_tokens']} new tokens; {s['train_tokens']:,} tokens with the chat template), batch {s['batch']}, "
        f"learning rate {s['lr']}, one epoch, the same steps in every arm; validation and test rows up to "
        f"{s['eval_tokens']:,} tokens each ({data['references']['teacher']['test_tokens']:,} completion tokens "
        f"scored on test). {threads_line(data)}"
    )
    text += f"\nTarget ({summary['target']}): **{'met' if summary['target_met'] else 'not met'}**.\n\n"
    for seed, value in summary["kd_vs_lm_reduction"].items():
        text += f"- seed {seed}: kd is {value['test']:.1%} lower than lm on test ({value['validation']:.1%} on validation)\n"
    command = data.get("command") or (
        f"python scripts/bench_llm_chat.py --seeds {','.join(seeds)} --train_rows {s['train_rows']} "
        f"--eval_tokens {s['eval_tokens']} --max_new_tokens {s['max_new_tokens']}"
    )
    return text + f"\n`{command}`\n"


if __name__ == "__main__":
    main()
