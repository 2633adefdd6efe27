"""Causal LM benchmark: SmolLM2-135M-Instruct on Jane Austen (train: four novels; validation: Persuasion;
test: Pride and Prejudice) and Hamlet (out of domain). JSON + markdown under scripts/results/llm/.

    python scripts/bench_llm.py --part memory     # 5: peak memory of one training step, three ways
    python scripts/bench_llm.py --part recover    # 1-4: KD vs LM, depth vs width, fKL/rKL/JSD, top-k vs live
    python scripts/bench_llm.py --part quantize   # 6: ONNX int8 and bnb nf4 of the student chosen on validation
    python scripts/bench_llm.py --part onpolicy   # GKD's on-policy batches (lmbda 0.5) on the real models

Every choice is made on validation perplexity; test figures are reported, never used to choose. ``recover``
keeps each finished (arm, seed) in its JSON and skips it when run again, so an interrupted run continues.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import LM_TEACHER as TEACHER
from harness import fmt, llm_arguments, machine, results_dir, table, threads_line, write_benchmark  # noqa: E402

from hfcompress.assets import resolve_model  # noqa: E402

RESULTS = results_dir("llm")


# -- 5. peak memory of one training step --------------------------------------------------------------------
def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakSampler:
    """Highest resident set size seen every ``interval`` seconds while active (CPU has no allocator stats)."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def __enter__(self):
        self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def memory_step(mode: str, batch: int, seq: int, layers: int) -> dict:
    """One optimizer step of a ``layers``-layer student cut from SmolLM2 (the real 49,152 vocabulary), in
    this process: ``lm`` (plain LM loss), ``kd_unchunked`` or ``kd_chunked`` (teacher live, full 30 layers)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hfcompress import DistillationConfig, DistillationTrainer, create_student_from_teacher
    from hfcompress.data.causal_lm import group_texts, load_lm_texts

    torch.manual_seed(0)
    path = resolve_model(TEACHER)
    tokenizer = AutoTokenizer.from_pretrained(path)
    teacher = AutoModelForCausalLM.from_pretrained(path)
    student = create_student_from_teacher(teacher, layers)
    blocks = group_texts(load_lm_texts("austen_novels")["train"], tokenizer, seq, max_tokens=batch * seq)
    args = DistillationConfig(
        output_dir="/tmp/hfc_memory", per_device_train_batch_size=batch, max_steps=1, report_to=[],
        save_strategy="no", use_cpu=True, disable_tqdm=True, alpha=1.0, temperature=1.0,
        lm_chunk_size=1024 if mode == "kd_chunked" else 0,
    )  # fmt: skip
    if mode == "lm":
        del teacher
        from transformers import Trainer, TrainingArguments

        from hfcompress.data import task_collator

        plain = TrainingArguments(output_dir="/tmp/hfc_memory", per_device_train_batch_size=batch, max_steps=1,
                                  report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True)  # fmt: skip
        trainer = Trainer(model=student, args=plain, train_dataset=blocks,
                          data_collator=task_collator(tokenizer, "causal_lm"))  # fmt: skip
    else:
        trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=blocks,
                                      processing_class=tokenizer)  # fmt: skip
    trainer.create_optimizer_and_scheduler(num_training_steps=1)
    before = rss_bytes()
    start = time.perf_counter()
    with PeakSampler() as sampler:
        trainer.train()
    return {"mode": mode, "rss_before_mb": before / 2**20, "peak_rss_mb": sampler.peak / 2**20,
            "step_peak_over_before_mb": (sampler.peak - before) / 2**20, "seconds": time.perf_counter() - start}  # fmt: skip


def real_equality(layers: int, batch: int = 2, seq: int = 128) -> dict:
    """Loss and gradients of KD chunked vs unchunked on the real models (largest absolute differences)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hfcompress import DistillationConfig, DistillationTrainer, create_student_from_teacher
    from hfcompress.data import DistillationDataCollator
    from hfcompress.data.causal_lm import group_texts, load_lm_texts

    path = resolve_model(TEACHER)
    tokenizer = AutoTokenizer.from_pretrained(path)
    teacher = AutoModelForCausalLM.from_pretrained(path)
    blocks = group_texts(load_lm_texts("austen_novels")["train"], tokenizer, seq, max_tokens=batch * seq)
    batch_inputs = DistillationDataCollator(tokenizer)([blocks[i] for i in range(batch)])
    results = {}
    for chunk in (0, 100):
        student = create_student_from_teacher(teacher, layers).train()
        args = DistillationConfig(output_dir="/tmp/hfc_eq", report_to=[], use_cpu=True, alpha=0.5,
                                  temperature=2.0, lm_chunk_size=chunk)  # fmt: skip
        trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=blocks,
                                      processing_class=tokenizer)  # fmt: skip
        loss = trainer.compute_loss(student, batch_inputs)
        loss.backward()
        results[chunk] = (float(loss), {n: p.grad.clone() for n, p in student.named_parameters()})
    (loss_a, grads_a), (loss_b, grads_b) = results[0], results[100]
    diff = max(float((grads_a[n] - grads_b[n]).abs().max()) for n in grads_a)
    return {"loss_unchunked": loss_a, "loss_chunked": loss_b, "loss_abs_diff": abs(loss_a - loss_b),
            "grad_max_abs_diff": diff, "batch": batch, "seq": seq, "chunk_size": 100}  # fmt: skip


def part_memory(args) -> None:
    rows = []
    for mode in ("lm", "kd_unchunked", "kd_chunked"):
        command = [sys.executable, __file__, "--part", "memory-step", "--mode", mode, "--layers", str(args.layers),
                   "--batch", str(args.batch), "--seq", str(args.seq)]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"{mode} failed:\n{result.stderr[-3000:]}")
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    peak = {r["mode"]: r["peak_rss_mb"] for r in rows}
    added_chunked, added_unchunked = peak["kd_chunked"] - peak["lm"], peak["kd_unchunked"] - peak["lm"]
    equality = real_equality(args.layers)
    data = {
        "what": f"peak RSS of one training step (forward, backward, AdamW) of a {args.layers}-layer student cut "
        f"from SmolLM2-135M, batch {args.batch} x {args.seq} tokens, vocabulary 49,152; teacher live (30 layers, "
        "fp32). Each mode in its own process; RSS sampled every 2 ms.",
        "rows": rows,
        "kd_chunked_adds_mb": added_chunked,
        "kd_unchunked_adds_mb": added_unchunked,
        "ratio": added_chunked / added_unchunked,
        "target": "chunked KD adds at most a third of what unchunked KD adds over the plain LM step",
        "met": added_chunked <= added_unchunked / 3,
        "equality": equality,
        "equality_met": equality["loss_abs_diff"] <= 1e-5 and equality["grad_max_abs_diff"] <= 1e-5,
        "machine": machine(),
        "command": f"python scripts/bench_llm.py --part memory --layers {args.layers} --batch {args.batch} --seq {args.seq}",
    }
    print(write_benchmark(RESULTS, "memory", data, render))


def main() -> None:
    args = llm_arguments(__doc__).parse_args()
    torch.set_num_threads(int(os.environ.get("HFC_THREADS", "2")))
    if args.part == "memory-step":
        print(json.dumps(memory_step(args.mode, args.batch, args.seq, args.layers)))
    elif args.part == "memory":
        part_memory(args)
    else:  # recover, quantize and onpolicy live in bench_llm_recover.py, run as its own process
        script = Path(__file__).resolve().parent / "bench_llm_recover.py"
        sys.exit(subprocess.run([sys.executable, str(script), *sys.argv[1:]]).returncode)


def render(data: dict) -> str:
    text = table(
        data["rows"],
        [("mode", "training step", fmt), ("peak_rss_mb", "peak RSS (MB)", lambda v: f"{v:,.0f}"),
         ("rss_before_mb", "RSS before the step (MB)", lambda v: f"{v:,.0f}"), ("seconds", "seconds", lambda v: f"{v:.0f}")],
    )  # fmt: skip
    eq = data["equality"]
    return text + (
        f"\nChunked KD adds **{data['kd_chunked_adds_mb']:,.0f} MB** over the plain LM step, unchunked KD "
        f"**{data['kd_unchunked_adds_mb']:,.0f} MB**: a ratio of {data['ratio']:.2f} (target at most 0.33: "
        f"**{'met' if data['met'] else 'not met'}**). On the real models (batch {eq['batch']} x {eq['seq']}, chunks "
        f"of {eq['chunk_size']} positions, T = 2, alpha 0.5) the loss differs by {eq['loss_abs_diff']:.1e} and the "
        f"largest gradient difference is {eq['grad_max_abs_diff']:.1e} (target 1e-5: "
        f"**{'met' if data['equality_met'] else 'not met'}**). {threads_line(data)}\n\n`{data['command']}`\n"
    )


if __name__ == "__main__":
    main()
