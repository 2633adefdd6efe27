"""GGUF variants of a causal LM against its own fp32: perplexity on validation and test, size on disk.

    python scripts/bench_llm_formats.py                                   # SmolLM2-135M-Instruct (offline asset)
    python scripts/bench_llm_formats.py --model outputs/distill_llm/student --name student

Each variant is written by ``quantize(method="gguf-...")`` and read back by transformers (``gguf_file=``), which
dequantizes it to fp32: the perplexity is that of the GGUF's weights, and speed through transformers would be
that of fp32, so no speed is reported here (llama.cpp's own speed needs llama.cpp, which is not built here).
The 4-bit type keeps the token embedding (the tied output matrix) at Q8_0, as llama.cpp's own files do; one
more row puts it in Q4_0 too, the ablation that shows what that costs. Perplexity: windows of 256 tokens, stride 128, over the first ``--eval_tokens`` tokens of Persuasion
(validation) and Pride and Prejudice (test). Targets (issue 21): Q8_0 within 1% of fp32 perplexity, the
4-bit type within 10%, both on test; nothing is chosen here, every variant is reported.
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
from hfcompress.evaluation.measure import size_on_disk
from hfcompress.quantization import load_quantized, quantize
from hfcompress.quantization.gguf_export import export_gguf
from hfcompress.runtime import configure_cpu_threads

METHODS = ("gguf-f16", "gguf-q8_0", "gguf-q5_0", "gguf-q4_1", "gguf-q4_0")
TARGETS = {"gguf-q8_0": 0.01, "gguf-q4_1": 0.10, "gguf-q4_0": 0.10}
# the offline SmolLM2 asset was dequantized from a Q4_1 GGUF: its weights sit on a Q4_1 grid already
GRID_NOTE = {"HuggingFaceTB/SmolLM2-135M-Instruct": "the asset's weights were dequantized from a Q4_1 GGUF, so "
             "Q4_1 reproduces them exactly and its row says nothing about Q4_1 on other weights; judge the "
             "4-bit types on a model trained after loading (the student rows)"}  # test perplexity at most this much above fp32's
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--name", default="smollm2-135m-instruct")
    parser.add_argument("--eval_tokens", type=int, default=4096)
    parser.add_argument("--out", default=str(ROOT / "scripts/results/llm_formats"))
    opts = parser.parse_args()
    configure_cpu_threads()
    out = Path(opts.out)
    source = Path(resolve_model(opts.model))
    tokenizer = AutoTokenizer.from_pretrained(source)
    raw = load_lm_texts("austen_novels")
    texts = {"validation": split_text(raw, "validation"), "test": split_text(raw, "test")}
    fp32 = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    rows = [{"variant": "fp32", "size_mb": size_on_disk(source) / 1e6, "write_s": None,
             **perplexities(fp32, tokenizer, texts, opts.eval_tokens)}]  # fmt: skip
    del fp32
    for method in METHODS:
        start = time.perf_counter()
        folder = quantize(source, out / "work" / opts.name / method, method=method, overwrite=True)
        written = time.perf_counter() - start
        model = load_quantized(folder).eval()
        rows.append({"variant": method, "size_mb": size_on_disk(folder) / 1e6, "write_s": written,
                     **perplexities(model, tokenizer, texts, opts.eval_tokens)})  # fmt: skip
        del model
    # the ablation behind the 4-bit row: the token embedding (also the tied output matrix) in Q4_0 as well,
    # instead of Q8_0 as llama.cpp's own files keep it
    folder = out / "work" / opts.name / "gguf-q4_0-embedding-q4_0"
    start = time.perf_counter()
    file = export_gguf(source, folder / "model.gguf", "Q4_0", embedding_type="Q4_0")
    written = time.perf_counter() - start
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file.name, dtype=torch.float32).eval()
    rows.append({"variant": "gguf-q4_0, embedding Q4_0 too", "size_mb": size_on_disk(folder) / 1e6,
                 "write_s": written, **perplexities(model, tokenizer, texts, opts.eval_tokens)})  # fmt: skip
    del model
    base = rows[0]
    for row in rows:
        for split in ("validation", "test"):
            row[f"{split}_ppl_vs_fp32"] = row[f"{split}_perplexity"] / base[f"{split}_perplexity"] - 1
        row["x_smaller"] = base["size_mb"] / row["size_mb"]
    targets = [
        {"variant": method, "target": f"test perplexity within {limit:.0%} of fp32",
         "test_ppl_vs_fp32": next(r for r in rows if r["variant"] == method)["test_ppl_vs_fp32"],
         "met": next(r for r in rows if r["variant"] == method)["test_ppl_vs_fp32"] <= limit}
        for method, limit in TARGETS.items()
    ]  # fmt: skip
    result = {"benchmark": "llm_formats", "command": " ".join(["scripts/bench_llm_formats.py", *sys.argv[1:]]),
              "model": opts.model, "eval_tokens": opts.eval_tokens, "window": WINDOW, "stride": STRIDE,
              "machine": machine(), "rows": rows, "targets": targets,
              "caveat": GRID_NOTE.get(opts.model)}  # fmt: skip
    write_benchmark(out, opts.name, result, render)
    print(render(result))


def render(data: dict) -> str:
    """GGUF variants against their own fp32: perplexities, sizes, the targets."""
    text = table(
        data["rows"],
        [("variant", "variant", fmt), ("size_mb", "MB (10^6 bytes)", fmt), ("x_smaller", "x smaller", fmt),
         ("validation_perplexity", "val ppl", fmt), ("test_perplexity", "test ppl", fmt),
         ("validation_ppl_vs_fp32", "val vs fp32", percent), ("test_ppl_vs_fp32", "test vs fp32", percent),
         ("write_s", "write s", fmt)],
    )  # fmt: skip
    text += (
        f"\nModel: {data['model']}; perplexity over the first {data['eval_tokens']:,} tokens of each text, windows "
        f"of {data['window']}, stride {data['stride']}. {threads_line(data)}\n\n"
    )
    for t in data["targets"]:
        text += f"- {t['variant']}: {t['target']}: **{'met' if t['met'] else 'not met'}** ({t['test_ppl_vs_fp32']:+.2%})\n"
    if data.get("caveat"):
        text += f"\nCaveat: {data['caveat']}.\n"
    return text + f"\n`{data['command']}`\n"


if __name__ == "__main__":
    main()
