"""GGUF variants of a causal LM run in llama.cpp itself (llama-cpp-python): perplexity from llama.cpp's logits on
validation and test, greedy tokens/s at batch 1 and prompt tokens/s, against the fp32 model in transformers.

    python scripts/bench_llm_llama_cpp.py                                   # SmolLM2-135M-Instruct
    python scripts/bench_llm_llama_cpp.py --model outputs/distill_llm/student --name student

Needs llama-cpp-python built from source (docs/quantization.md has the build flags for CPUs with AMX). Each GGUF
is written by ``quantize(method="gguf-...")``. Perplexity: the same token ids (the model's own tokenizer), windows
of 256 tokens, stride 128, over the first ``--eval_tokens`` tokens of Persuasion (validation) and Pride and
Prejudice (test), scored from llama.cpp's logits; Q4_1 and Q4_0 are also written by llama.cpp's own quantizer
from the F16 file (with its own choice of type for the embedding), to tell the writer from the type; whether llama.cpp's tokenizer (the one inside the file) gives
the same ids for that text is recorded too. Speeds: fp32 in transformers and every GGUF in llama.cpp take turns,
``--runs`` rounds after a warm-up, medians; generation is 32 new tokens after a 32-token prompt, the prompt pass
one window of 256 tokens, both at batch 1, on the physical cores' threads (or ``$HFCOMPRESS_NUM_THREADS``). Targets (issue 21): Q8_0 within 1% of fp32
test perplexity, the 4-bit type within 10%; nothing is chosen, every variant is reported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from harness import ROOT, fmt, machine, percent, table, threads_line, write_benchmark
from transformers import AutoModelForCausalLM, AutoTokenizer

from hfcompress.assets import resolve_model
from hfcompress.data.causal_lm import load_lm_texts, split_text
from hfcompress.evaluation.llama_cpp import (
    greedy_generate,
    load_llama_cpp,
    strided_perplexity_llama_cpp,
    window_logits,
)
from hfcompress.evaluation.lm import generation_call, strided_perplexity
from hfcompress.evaluation.measure import size_on_disk
from hfcompress.quantization import quantize
from hfcompress.runtime import configure_cpu_threads

METHODS = ("gguf-f16", "gguf-q8_0", "gguf-q5_0", "gguf-q4_1", "gguf-q4_0")
TARGETS = {"gguf-q8_0": 0.01, "gguf-q4_0": 0.10}
CROSS_CHECK = ("Q4_1", "Q4_0")  # also written by llama.cpp's own quantizer: is a 4-bit row our writer or the type?
WINDOW, STRIDE, PROMPT, NEW = 256, 128, 32, 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--name", default="smollm2-135m-instruct")
    parser.add_argument("--eval_tokens", type=int, default=4096)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "scripts/results/llm_llama_cpp"))
    opts = parser.parse_args()
    configure_cpu_threads()  # physical cores, or $HFCOMPRESS_NUM_THREADS
    threads = torch.get_num_threads()
    out = Path(opts.out)
    source = Path(resolve_model(opts.model))
    tokenizer = AutoTokenizer.from_pretrained(source)
    raw = load_lm_texts("austen_novels")
    texts = {split: split_text(raw, split) for split in ("validation", "test")}
    ids = {split: tokenizer(text, add_special_tokens=False)["input_ids"] for split, text in texts.items()}
    fp32 = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    rows = [{"variant": "fp32 (transformers)", "runtime": "transformers", "size_mb": size_on_disk(source) / 1e6}]
    for split, text in texts.items():
        result = strided_perplexity(fp32, tokenizer, text, WINDOW, STRIDE, opts.eval_tokens)
        rows[0] |= {f"{split}_perplexity": result["perplexity"], f"{split}_tokens": result["tokens"]}
    files = {}
    for method in METHODS:
        folder = quantize(source, out / "work" / opts.name / method, method=method, overwrite=True)
        (files[method],) = folder.glob("*.gguf")
    for qtype in CROSS_CHECK:  # the same types from llama.cpp's own quantizer, starting from our F16 file
        files[f"{qtype} (llama.cpp's quantizer)"] = llama_cpp_quantize(files["gguf-f16"], qtype, threads)
    llms = {}
    for name, file in files.items():
        llm = llms[name] = load_llama_cpp(file, context=WINDOW, threads=threads)
        row = {"variant": name, "runtime": "llama.cpp", "size_mb": file.stat().st_size / 1e6,
               "matrix_type": tensor_type(file, "blk.0.ffn_down.weight"),
               "embedding_type": tensor_type(file, "token_embd.weight")}  # fmt: skip
        for split in texts:
            result = strided_perplexity_llama_cpp(llm, ids[split][: opts.eval_tokens], WINDOW, STRIDE)
            row |= {f"{split}_perplexity": result["perplexity"], f"{split}_tokens": result["tokens"]}
        head = ids["test"][:512]
        row["tokenizer_agrees"] = llm.tokenize(tokenizer.decode(head).encode(), add_bos=False, special=False) == head
        rows.append(row)
        print(row, flush=True)

    prompt, window = ids["validation"][:PROMPT], ids["validation"][:WINDOW]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    calls = [(lambda: generation_call(fp32, torch.tensor([prompt]), NEW, pad),
              lambda: fp32(input_ids=torch.tensor([window])))]  # fmt: skip
    for llm in llms.values():
        calls.append((lambda m=llm: greedy_generate(m, prompt, NEW), lambda m=llm: window_logits(m, window)))
    times = [([], []) for _ in calls]
    with torch.inference_mode():
        for generate, prefill in calls:  # warm-up
            generate(), prefill()
        for _ in range(opts.runs):  # the variants take turns
            for (generate, prefill), (gen, pre) in zip(calls, times):
                gen.append(seconds(generate))
                pre.append(seconds(prefill))
    base = rows[0]
    for row, (gen, pre) in zip(rows, times):
        row["generate_tokens_per_s_b1"] = NEW / statistics.median(gen)
        row["prompt_tokens_per_s_b1"] = WINDOW / statistics.median(pre)
        for split in texts:
            row[f"{split}_ppl_vs_fp32"] = row[f"{split}_perplexity"] / base[f"{split}_perplexity"] - 1
        row["x_smaller"] = base["size_mb"] / row["size_mb"]
        row["generate_vs_fp32"] = row["generate_tokens_per_s_b1"] / base["generate_tokens_per_s_b1"]
    targets = [
        {"variant": method, "target": f"test perplexity in llama.cpp within {limit:.0%} of fp32",
         "test_ppl_vs_fp32": next(r for r in rows if r["variant"] == method)["test_ppl_vs_fp32"],
         "met": next(r for r in rows if r["variant"] == method)["test_ppl_vs_fp32"] <= limit}
        for method, limit in TARGETS.items()
    ]  # fmt: skip
    import llama_cpp

    result = {"benchmark": "llm_llama_cpp", "command": " ".join(["scripts/bench_llm_llama_cpp.py", *sys.argv[1:]]),
              "model": opts.model, "eval_tokens": opts.eval_tokens, "window": WINDOW, "stride": STRIDE,
              "runs": opts.runs, "threads": threads, "llama_cpp_python": llama_cpp.__version__,
              "machine": machine(), "rows": rows, "targets": targets}  # fmt: skip
    write_benchmark(out, opts.name, result, render)
    print(render(result))


def llama_cpp_quantize(f16_file: Path, qtype: str, threads: int) -> Path:
    """``f16_file`` requantized to ``qtype`` by llama.cpp's own ``llama_model_quantize`` (its default choices for
    the output and embedding tensors)."""
    import ctypes

    import llama_cpp

    out = f16_file.with_name(f"model-{qtype}-llama-cpp.gguf")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype}")
    params.nthread = threads
    if llama_cpp.llama_model_quantize(str(f16_file).encode(), str(out).encode(), ctypes.byref(params)) != 0:
        raise RuntimeError(f"llama.cpp could not quantize {f16_file} to {qtype}")
    return out


def tensor_type(file: Path, name: str) -> str:
    import gguf

    return next(t.tensor_type.name for t in gguf.GGUFReader(str(file)).tensors if t.name == name)


def seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def render(data: dict) -> str:
    """GGUF variants run in llama.cpp: perplexity from its logits, speeds against fp32 in transformers."""
    text = table(
        data["rows"],
        [("variant", "variant", fmt), ("runtime", "runs in", fmt), ("matrix_type", "matrices", fmt),
         ("embedding_type", "embedding", fmt), ("size_mb", "MB (10^6 bytes)", fmt),
         ("x_smaller", "x smaller", fmt), ("validation_perplexity", "val ppl", fmt),
         ("test_perplexity", "test ppl", fmt), ("validation_ppl_vs_fp32", "val vs fp32", percent),
         ("test_ppl_vs_fp32", "test vs fp32", percent), ("generate_tokens_per_s_b1", "gen tok/s b1", fmt),
         ("generate_vs_fp32", "gen x fp32", fmt), ("prompt_tokens_per_s_b1", "prompt tok/s b1", fmt),
         ("tokenizer_agrees", "same token ids", fmt)],
    )  # fmt: skip
    text += (
        f"\nModel: {data['model']}; llama-cpp-python {data['llama_cpp_python']}, {data['threads']} threads; "
        f"perplexity over the first {data['eval_tokens']:,} tokens of each text, windows of {data['window']}, "
        f"stride {data['stride']}; speeds: the variants taking turns, median of {data['runs']} rounds. "
        f"{threads_line(data)}\n\n"
    )
    for t in data["targets"]:
        text += f"- {t['variant']}: {t['target']}: **{'met' if t['met'] else 'not met'}** ({t['test_ppl_vs_fp32']:+.2%})\n"
    return text + f"\n`{data['command']}`\n"


if __name__ == "__main__":
    main()
