"""Seconds per training step of a causal LM, side by side in one run: the plain LM loss, chunked KD from a live
teacher, and QAD (chunked KD with every linear on the int4 grid), each in fp32 and under bfloat16 autocast.

    python scripts/bench_kd_step.py                          # 20-layer student cut from SmolLM2-135M, 8 x 512
    python scripts/bench_kd_step.py --layers 30 --batch 4 --seq 256

The student is cut from SmolLM2-135M-Instruct (its first ``--layers`` layers, the real 49,152-token vocabulary); the
teacher is the whole model (30 layers). A step is one forward, backward and AdamW update through ``Trainer``; each
mode runs ``--warmup`` steps first, then ``--steps`` timed ones, and the modes take turns (``--rounds`` rounds, a
new order each round), so a slow spell of this shared machine falls on all of them. Medians. The bf16 rows run under
``torch.autocast("cpu", bfloat16)`` (``TrainingArguments(bf16=True)``), the teacher's forward included; weights,
gradients and the optimizer stay fp32. Each row also reports its first step's loss against the fp32 row's on the
same batch. Target (issue 31): chunked KD at most 1.7x the plain LM step.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

import torch
from harness import ROOT, fmt, machine, table, threads_line, write_benchmark
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

from hfcompress import DistillationConfig, DistillationTrainer, create_student_from_teacher
from hfcompress.assets import resolve_model
from hfcompress.data import task_collator
from hfcompress.data.causal_lm import group_texts, load_lm_texts
from hfcompress.quantization.grids import Grid
from hfcompress.quantization.qad import GridCallback
from hfcompress.runtime import configure_cpu_threads, fast_bf16_cpu, mixed_precision_env_kept

TEACHER = "HuggingFaceTB/SmolLM2-135M-Instruct"
MODES = ("lm", "kd", "qad")
TARGET = 1.7  # chunked KD step / plain LM step


class StepTimes(TrainerCallback):
    def __init__(self):
        self.times, self.losses, self._start = [], [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))


def bf16_matmul_ratio(repeats: int = 3) -> float:
    """Seconds of a bf16 512 x 576 x 1536 matmul (a SmolLM2 FFN projection of 512 tokens) over the fp32 one's."""
    seconds = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(512, 576, dtype=dtype), torch.randn(576, 1536, dtype=dtype)
        a @ b
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        seconds[dtype] = time.perf_counter() - start
    return seconds[torch.bfloat16] / seconds[torch.float32]


def run_steps(mode: str, bf16: bool, teacher, tokenizer, blocks, opts) -> tuple[list[float], float]:
    """(seconds of each step after the warm-up, the first step's loss) of ``mode``."""
    torch.manual_seed(0)
    student = create_student_from_teacher(teacher, opts.layers)
    timer = StepTimes()
    common = {"output_dir": "/tmp/hfc_kd_step", "per_device_train_batch_size": opts.batch, "report_to": [],
              "max_steps": opts.warmup + opts.steps, "save_strategy": "no", "use_cpu": True, "disable_tqdm": True,
              "bf16": bf16, "logging_steps": 1, "learning_rate": 1e-5, "seed": 0}  # fmt: skip
    if mode == "lm":
        trainer = Trainer(model=student, args=TrainingArguments(**common), train_dataset=blocks,
                          data_collator=task_collator(tokenizer, "causal_lm"), callbacks=[timer])  # fmt: skip
    else:
        args = DistillationConfig(**common, alpha=1.0, temperature=1.0, lm_chunk_size=1024)
        callbacks = [timer] + ([GridCallback(Grid("int4", 64, torch.float32))] if mode == "qad" else [])
        trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=blocks,
                                      processing_class=tokenizer, callbacks=callbacks)  # fmt: skip
    trainer.train()
    return timer.times[opts.warmup :], timer.losses[0]



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dtypes", default="fp32,bf16", help="bf16 runs only where the CPU has fast bf16 matmuls")
    parser.add_argument("--name", default="smollm2-20-layers")
    parser.add_argument("--out", default=str(ROOT / "scripts/results/kd_step"))
    opts = parser.parse_args()
    configure_cpu_threads()
    path = resolve_model(TEACHER)
    tokenizer = AutoTokenizer.from_pretrained(path)
    teacher = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokens = opts.batch * opts.seq * (opts.warmup + opts.steps)
    blocks = group_texts(load_lm_texts("austen_novels")["train"], tokenizer, opts.seq, max_tokens=tokens)
    dtypes = opts.dtypes.split(",")
    matmul = bf16_matmul_ratio()
    skipped = None
    if "bf16" in dtypes and not fast_bf16_cpu():
        dtypes.remove("bf16")
        skipped = (f"bf16 not run: this CPU has neither avx512_bf16 nor AMX, and a bf16 512 x 576 x 1536 matmul took "
                   f"{matmul:.0f}x the fp32 one here")  # fmt: skip
    arms = [(mode, dtype == "bf16") for mode in MODES for dtype in dtypes]
    times = {arm: [] for arm in arms}
    first_loss = {}
    rng = random.Random(0)
    for round_ in range(opts.rounds):
        order = arms[:]
        rng.shuffle(order)
        for arm in order:
            with mixed_precision_env_kept():  # a bf16 arm must not put the next fp32 arm under autocast
                seconds, loss = run_steps(*arm, teacher, tokenizer, blocks, opts)
            times[arm] += seconds
            first_loss[arm] = loss
            print(f"round {round_} {arm}: {[round(s, 2) for s in seconds]} s, first loss {loss:.4f}", flush=True)
    lm = statistics.median(times[("lm", False)]) if ("lm", False) in times else None
    rows = []
    for mode, bf16 in arms:
        median = statistics.median(times[(mode, bf16)])
        rows.append({"mode": mode, "dtype": "bf16 autocast" if bf16 else "fp32", "median_s": median,
                     "min_s": min(times[(mode, bf16)]), "max_s": max(times[(mode, bf16)]),
                     "steps": len(times[(mode, bf16)]), "vs_fp32_lm": median / lm if lm else None,
                     "vs_same_dtype_lm": median / statistics.median(times[("lm", bf16)]),
                     "first_loss": first_loss[(mode, bf16)],
                     "first_loss_vs_fp32": first_loss[(mode, bf16)] / first_loss[(mode, False)] - 1
                     if (mode, False) in first_loss else None})  # fmt: skip
    kd = {r["dtype"]: r["vs_same_dtype_lm"] for r in rows if r["mode"] == "kd"}
    data = {"benchmark": "kd_step", "command": " ".join(["scripts/bench_kd_step.py", *sys.argv[1:]]),
            "what": f"a {opts.layers}-layer student cut from SmolLM2-135M-Instruct, teacher the whole model, batch "
            f"{opts.batch} x {opts.seq} tokens", "settings": vars(opts), "machine": machine(), "rows": rows,
            "bf16_matmul_vs_fp32": matmul, "bf16_skipped": skipped,
            "target": {"target": f"chunked KD step at most {TARGET}x the plain LM step", "kd_vs_lm": kd,
                       "met": {dtype: ratio <= TARGET for dtype, ratio in kd.items()}}}  # fmt: skip
    write_benchmark(opts.out, opts.name, data, render)
    print(render(data))


def render(data: dict) -> str:
    text = table(
        data["rows"],
        [("mode", "step", fmt), ("dtype", "dtype", fmt), ("median_s", "median s", fmt), ("min_s", "min s", fmt),
         ("max_s", "max s", fmt), ("steps", "timed steps", fmt), ("vs_same_dtype_lm", "x LM step (same dtype)", fmt),
         ("vs_fp32_lm", "x fp32 LM step", fmt), ("first_loss", "first loss", fmt),
         ("first_loss_vs_fp32", "first loss vs fp32", lambda v: f"{v:+.3%}")],
    )  # fmt: skip
    target = data["target"]
    verdicts = ", ".join(f"{dtype}: {ratio:.2f}x, **{'met' if target['met'][dtype] else 'not met'}**"
                         for dtype, ratio in target["kd_vs_lm"].items())  # fmt: skip
    return (text + f"\n{data['what']}; lm = the plain LM loss, kd = chunked KD (alpha 1, chunks of 1024 positions), "
            f"qad = kd with every linear on the int4 grid (group 64). {threads_line(data)}\n"
            + (f"{data['bf16_skipped']}.\n" if data.get("bf16_skipped") else "")
            + f"- {target['target']}: {verdicts}\n\n`{data['command']}`\n")  # fmt: skip


if __name__ == "__main__":
    main()
