"""How much of bench_qad's test gap is the segment it scores: perplexity against fp32 over several segments of
``--eval_tokens`` tokens of the validation and test novels (Persuasion and Pride and Prejudice), for W4A16 or GGUF
checkpoints that ``bench_qad.py`` wrote. bench_qad scores the first segment only (offset 0).

    .venv-llmc/bin/python scripts/bench_qad_segments.py --name g32-lr1e-4 \
        qad-seed0=scripts/results/qad/work/<bench name>/qad-w4a16-seed0 ...

A segment starts at the first line break after ``fraction`` of the novel's characters (offset 0: the novel's start)
and is scored as bench_qad scores it: windows of 256, stride 128, the fp32 model over the same windows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from harness import ROOT, STRIDE, WINDOW, fmt, machine, percent, table, threads_line, write_benchmark
from transformers import AutoModelForCausalLM, AutoTokenizer

from hfcompress.assets import resolve_model
from hfcompress.data.causal_lm import load_lm_texts, split_text
from hfcompress.errors import HfCompressError
from hfcompress.evaluation.lm import strided_perplexity
from hfcompress.quantization.api import load_quantized
from hfcompress.runtime import configure_cpu_threads


def segment_start(text: str, fraction: float) -> int:
    """The first character of the segment at ``fraction`` of ``text``: 0, or the one after the next line break."""
    return 0 if fraction == 0 else text.index("\n", int(len(text) * fraction)) + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="label=folder, one per checkpoint")
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct", help="the fp32 reference")
    parser.add_argument("--name", required=True)
    parser.add_argument("--fractions", default="0,0.25,0.5,0.75")
    parser.add_argument("--eval_tokens", type=int, default=4096)
    parser.add_argument("--out", default=str(ROOT / "scripts/results/qad"))
    opts = parser.parse_args()
    checkpoints = dict(item.split("=", 1) for item in opts.checkpoints if "=" in item)
    if len(checkpoints) != len(opts.checkpoints) or not all(Path(p).is_dir() for p in checkpoints.values()):
        raise HfCompressError(f"checkpoints must be label=folder with existing folders, got {opts.checkpoints}")
    configure_cpu_threads()
    source = resolve_model(opts.model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    raw = load_lm_texts("austen_novels")
    texts = {split: split_text(raw, split) for split in ("validation", "test")}
    fractions = [float(f) for f in opts.fractions.split(",")]

    def scores(model) -> dict:
        return {f"{split}@{f}": strided_perplexity(model, tokenizer, text[segment_start(text, f) :], WINDOW, STRIDE,
                                                   opts.eval_tokens)["perplexity"]
                for split, text in texts.items() for f in fractions}  # fmt: skip

    reference = scores(AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval())
    rows = [{"checkpoint": "fp32", **{f"{k} ppl": v for k, v in reference.items()}}]
    for label, folder in checkpoints.items():
        measured = scores(load_quantized(folder).eval())
        row = {"checkpoint": label, "folder": folder}
        for key, value in measured.items():
            row[f"{key} ppl"], row[f"{key} vs fp32"] = value, value / reference[key] - 1
        for split in texts:
            row[f"{split} mean vs fp32"] = statistics.mean(row[f"{split}@{f} vs fp32"] for f in fractions)
        rows.append(row)
    result = {"benchmark": "qad_segments", "command": " ".join(["scripts/bench_qad_segments.py", *sys.argv[1:]]),
              "model": opts.model, "eval_tokens": opts.eval_tokens, "window": WINDOW, "stride": STRIDE,
              "fractions": fractions, "machine": machine(), "rows": rows}  # fmt: skip
    print(write_benchmark(Path(opts.out), opts.name, result, render))


def render(data: dict) -> str:
    """Per checkpoint, each segment's perplexity against fp32's and the mean over segments; fp32's perplexities."""
    fractions = data["fractions"]
    columns = [("checkpoint", "checkpoint", fmt)]
    for split, novel in (("validation", "Persuasion (val)"), ("test", "Pride and Prejudice (test)")):
        columns += [(f"{split}@{f} vs fp32", f"{novel} at {f:.0%}", percent) for f in fractions]
        columns.append((f"{split} mean vs fp32", f"{novel}, mean", percent))
    reference = data["rows"][0]
    fp32 = ", ".join(f"{key.split()[0].replace('@', ' at ')} {fmt(value)}" for key, value in reference.items()
                     if key.endswith(" ppl"))  # fmt: skip
    return (
        table(data["rows"][1:], columns)
        + f"\nPerplexity against fp32 over {data['eval_tokens']:,} tokens from each offset (a fraction of the "
        f"novel's characters, moved to the next line break), windows of {data['window']}, stride {data['stride']}; "
        f"bench_qad scores offset 0 only. fp32's perplexities: {fp32}. Model: {data['model']}. "
        f"{threads_line(data)}\n`{data['command']}`\n"
    )


if __name__ == "__main__":
    main()
