"""GPTQ, AWQ and W8A8 (llmcompressor -> compressed-tensors) variants of a causal LM against its own fp32:
perplexity on validation and test, size on disk, and speed through transformers on this CPU.

    .venv-llmc/bin/python scripts/bench_llm_compressed.py                      # SmolLM2-135M-Instruct
    .venv-llmc/bin/python scripts/bench_llm_compressed.py --model outputs/distill_llm/student --name student

(llmcompressor 0.14 needs transformers 5.15-5.17: ``make setup-llmc`` builds that environment.)

Each variant is written by ``quantize(method=...)``, calibrated on ``--calibration_samples`` blocks of
``--calibration_length`` tokens spread evenly over the training split of Jane Austen's novels (the LM recipe's own
training text), and reloaded with plain ``AutoModelForCausalLM.from_pretrained``. Perplexity: windows of 256
tokens, stride 128, over the first ``--eval_tokens`` tokens of Persuasion (validation) and Pride and Prejudice
(test). Speed: greedy tokens/s at batch 1 and prompt tokens/s, fp32 and the variants taking turns, medians of
``--speed_runs`` rounds. transformers runs a compressed-tensors checkpoint on CPU by unpacking its weights in every
forward (in bfloat16 for the bf16 rows), so these speeds are not what vLLM's int4/int8 kernels give on a GPU;
they are reported as measured. ``--variants`` picks rows of VARIANTS. Targets (issue 21): GPTQ W4A16 within 10%
of fp32 test perplexity at >= 3.5x smaller, checked on every GPTQ W4A16 row; nothing is chosen here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from harness import (
    ROOT,
    STRIDE,
    WINDOW,
    calibration_blocks,
    fmt,
    machine,
    percent,
    perplexities,
    table,
    threads_line,
    write_benchmark,
)
from transformers import AutoModelForCausalLM, AutoTokenizer

from hfcompress.assets import resolve_model
from hfcompress.data.causal_lm import load_lm_texts, split_text
from hfcompress.evaluation.lm import interleaved_speeds
from hfcompress.evaluation.measure import size_on_disk
from hfcompress.quantization import load_quantized, quantize
from hfcompress.runtime import configure_cpu_threads

VARIANTS = {  # name -> quantize settings; group_size and calibration_samples default to the command line's
    "gptq-w4a16": {"method": "gptq-w4a16"},
    "awq-w4a16": {"method": "awq-w4a16"},
    "gptq-w8a8": {"method": "gptq-w8a8"},
    # what the W4A16 row leaves on the table: the unquantized parts (the tied embedding) in bfloat16, as vLLM
    # serves W4A16; smaller groups; more calibration text
    "gptq-w4a16 bf16": {"method": "gptq-w4a16", "compute_dtype": "bfloat16"},
    "gptq-w4a16 group 32": {"method": "gptq-w4a16", "group_size": 32},
    "gptq-w4a16 128 rows": {"method": "gptq-w4a16", "calibration_samples": 128},
    "awq-w4a16 bf16": {"method": "awq-w4a16", "compute_dtype": "bfloat16"},
}
TARGETS = {"gptq-w4a16": (0.10, 3.5)}  # test perplexity at most this much above fp32's, at least this much smaller


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--name", default="smollm2-135m-instruct")
    parser.add_argument("--variants", default="gptq-w4a16,awq-w4a16,gptq-w8a8", help=f"of {', '.join(VARIANTS)}")
    parser.add_argument("--group_size", type=int, default=64)  # SmolLM2's 576 columns don't divide by 128
    parser.add_argument("--calibration_samples", type=int, default=32)
    parser.add_argument("--calibration_length", type=int, default=256)
    parser.add_argument("--eval_tokens", type=int, default=4096)
    parser.add_argument("--speed_runs", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "scripts/results/llm_compressed"))
    opts = parser.parse_args()
    configure_cpu_threads()
    out = Path(opts.out)
    source = Path(resolve_model(opts.model))
    tokenizer = AutoTokenizer.from_pretrained(source)
    raw = load_lm_texts("austen_novels")
    texts = {"validation": split_text(raw, "validation"), "test": split_text(raw, "test")}
    names = opts.variants.split(",")
    if unknown := [n for n in names if n not in VARIANTS]:
        parser.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    rows_needed = max(VARIANTS[n].get("calibration_samples", opts.calibration_samples) for n in names)
    calibration = calibration_blocks(tokenizer, split_text(raw, "train"), rows_needed, opts.calibration_length)
    models = {"fp32": AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()}
    rows = [{"variant": "fp32", "size_mb": size_on_disk(source) / 1e6, "write_s": None,
             **perplexities(models["fp32"], tokenizer, texts, opts.eval_tokens)}]  # fmt: skip
    for i, name in enumerate(names):
        settings = {"group_size": opts.group_size, "calibration_samples": opts.calibration_samples, **VARIANTS[name]}
        start = time.perf_counter()
        folder = quantize(source, out / "work" / opts.name / f"v{i}", calibration_dataset=calibration,
                          max_length=opts.calibration_length, overwrite=True, **settings)  # fmt: skip
        written = time.perf_counter() - start
        print(f"{name}: written in {written:.0f} s", flush=True)
        models[name] = load_quantized(folder).eval()
        rows.append({"variant": name, "size_mb": size_on_disk(folder) / 1e6, "write_s": written, **settings,
                     **perplexities(models[name], tokenizer, texts, opts.eval_tokens)})  # fmt: skip
    speeds = interleaved_speeds(list(models.values()), tokenizer, texts["validation"], WINDOW, runs=opts.speed_runs)
    base = rows[0]
    for row, speed in zip(rows, speeds):
        row.update(speed)
        for split in ("validation", "test"):
            row[f"{split}_ppl_vs_fp32"] = row[f"{split}_perplexity"] / base[f"{split}_perplexity"] - 1
        row["x_smaller"] = base["size_mb"] / row["size_mb"]
        row["generate_speedup"] = row["generate_tokens_per_s_b1"] / base["generate_tokens_per_s_b1"]
    targets = []
    for method, (limit, smaller) in TARGETS.items():
        # the rule, on validation: of this method's rows at least `smaller` times smaller, the one closest to fp32
        eligible = [r for r in rows if r.get("method") == method and r["x_smaller"] >= smaller]
        chosen = min(eligible, key=lambda r: r["validation_ppl_vs_fp32"]) if eligible else None
        targets.append({"method": method, "target": f"test perplexity within {limit:.0%} of fp32 at >= {smaller}x "
                        "smaller", "rule": f"of the {method} rows at least {smaller}x smaller, the lowest validation "
                        "perplexity", "chosen": chosen and chosen["variant"],
                        "test_ppl_vs_fp32": chosen and chosen["test_ppl_vs_fp32"],
                        "met": bool(chosen and chosen["test_ppl_vs_fp32"] <= limit)})  # fmt: skip
    result = {"benchmark": "llm_compressed", "command": " ".join(["scripts/bench_llm_compressed.py", *sys.argv[1:]]),
              "model": opts.model, "eval_tokens": opts.eval_tokens, "window": WINDOW, "stride": STRIDE,
              "group_size": opts.group_size, "calibration": f"{opts.calibration_samples} x "
              f"{opts.calibration_length} tokens of the training split (unless a row says otherwise)",
              "speed_runs": opts.speed_runs,
              "machine": machine(), "rows": rows, "targets": targets}  # fmt: skip
    write_benchmark(out, opts.name, result, render)
    print(render(result))


def render(data: dict) -> str:
    """GPTQ/AWQ/W8A8 (compressed-tensors) variants against their own fp32; the W4A16 target and its rule."""
    text = table(
        data["rows"],
        [("variant", "variant", fmt), ("size_mb", "MB (10^6 bytes)", fmt), ("x_smaller", "x smaller", fmt),
         ("validation_perplexity", "val ppl", fmt), ("test_perplexity", "test ppl", fmt),
         ("validation_ppl_vs_fp32", "val vs fp32", percent), ("test_ppl_vs_fp32", "test vs fp32", percent),
         ("generate_tokens_per_s_b1", "gen tok/s b1", fmt), ("prompt_tokens_per_s", "prompt tok/s b8", fmt),
         ("write_s", "write s", fmt)],
    )  # fmt: skip
    text += (
        f"\nModel: {data['model']}; group size {data['group_size']}; calibration: {data['calibration']}; perplexity "
        f"over the first {data['eval_tokens']:,} tokens of each text, windows of {data['window']}, stride "
        f"{data['stride']}; speeds through transformers on CPU, the variants taking turns, median of "
        f"{data['speed_runs']} rounds. {threads_line(data)}\n\n"
    )
    for t in data["targets"]:
        figure = f"; chosen {t['chosen']}: {t['test_ppl_vs_fp32']:+.2%} on test" if t["chosen"] else "; none qualifies"
        text += f"- {t['method']}: {t['target']}: **{'met' if t['met'] else 'not met'}** (rule: {t['rule']}{figure})\n"
    return text + f"\n`{data['command']}`\n"


if __name__ == "__main__":
    main()
