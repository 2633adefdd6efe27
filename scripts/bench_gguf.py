"""GGUF made and measured by llama.cpp's own tools (issue 30): llama.cpp's converter, then ``llama-quantize`` to
each type with and without an importance matrix computed by ``llama-imatrix`` from the training text (four Austen
novels); every file measured in ``llama-perplexity``: perplexity on validation (Persuasion) and test (Pride and
Prejudice), and on test the KL divergence from the F16 file's token distributions over the same tokens.

    python scripts/bench_gguf.py                                   # SmolLM2-135M-Instruct (make setup-llama-tools)
    python scripts/bench_gguf.py --model outputs/distill_llm/student --name student

Perplexity is llama-perplexity's own: chunks of ``--context`` tokens, a BOS first, each scored on its second half,
the first ``--chunks`` chunks of each text. Bits per weight: the file's bytes x 8 / the model's parameters. Rule
(validation split): among the types at most 4.6 bits per weight, the lowest validation perplexity; its test
perplexity against F16 is the target's (issue 30: within +8%); Q8_0 within +0.5% on test. Every row is kept.
Speeds: ``llama-bench``, prompt tokens/s over ``--context`` tokens and greedy generation tokens/s at batch 1
(``--generate_tokens``), medians of 3 repetitions, each file in turn, on ``--threads`` threads.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

from harness import ROOT, fmt, machine, percent, table, write_benchmark

from hfcompress.assets import resolve_model
from hfcompress.data.causal_lm import load_lm_texts, split_text
from hfcompress.quantization.llama_cpp_tools import (
    compute_imatrix,
    convert_to_gguf,
    kl_divergence,
    llama_bench,
    llama_perplexity,
    quantize_gguf,
)

TYPES = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_K_S", "Q4_0", "IQ4_NL", "IQ4_XS")
MAX_BPW, TARGET, Q8_TARGET = 4.6, 0.08, 0.005


def parameters(model_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    for file in model_dir.glob("*.safetensors"):
        with safe_open(file, "pt") as f:
            total += sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--name", default="smollm2-135m-instruct")
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--imatrix_chunks", type=int, default=64)
    parser.add_argument("--generate_tokens", type=int, default=64)
    parser.add_argument("--types", default=",".join(TYPES))
    parser.add_argument("--embedding_types", default="",
                        help="comma-separated types for the token embedding and output matrix, each tried with every "
                        "type ('' : llama-quantize's own choice only)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("HFC_THREADS", os.cpu_count() or 1)))
    parser.add_argument("--out", default=str(ROOT / "scripts/results/gguf"))
    opts = parser.parse_args()
    started = time.time()
    model_dir = Path(resolve_model(opts.model))
    raw = load_lm_texts("austen_novels")
    work = Path(tempfile.mkdtemp(prefix="bench-gguf-"))
    texts = {}
    for split in ("train", "validation", "test"):
        texts[split] = work / f"{split}.txt"
        texts[split].write_text(split_text(raw, split))
    count = parameters(model_dir)
    f16 = convert_to_gguf(model_dir, work / "model-F16.gguf", "f16")
    f32 = convert_to_gguf(model_dir, work / "model-F32.gguf", "f32")
    start = time.time()
    imatrix = compute_imatrix(f16, texts["train"], work / "imatrix.gguf", opts.context, opts.imatrix_chunks,
                              opts.threads)  # fmt: skip
    imatrix_s = time.time() - start
    base_logits = work / "f16-test.logits"
    rows = []

    def measure(variant: str, qtype: str, gguf: Path, with_imatrix: bool, fallbacks=(), seconds=None,
                embedding=None) -> None:  # fmt: skip
        row = {"variant": variant, "type": qtype, "imatrix": with_imatrix, "embedding_type": embedding,
               "size_mb": gguf.stat().st_size / 1e6,
               "bits_per_weight": gguf.stat().st_size * 8 / count, "quantize_s": seconds,
               "fallbacks": len(fallbacks), "fallback_types": sorted({f["used"] for f in fallbacks})}  # fmt: skip
        row["validation_perplexity"] = llama_perplexity(gguf, texts["validation"], opts.context, opts.threads,
                                                        opts.chunks)["perplexity"]  # fmt: skip
        if qtype == "F16":
            row["test_perplexity"] = llama_perplexity(gguf, texts["test"], opts.context, opts.threads, opts.chunks,
                                                      save_logits=base_logits)["perplexity"]  # fmt: skip
            row |= {"kl_divergence": 0.0, "same_top_p_percent": 100.0}
        else:
            kl = kl_divergence(gguf, base_logits, opts.threads)
            row |= {"test_perplexity": kl["perplexity"], "kl_divergence": kl["kl_divergence"],
                    "kl_divergence_error": kl["kl_divergence_error"], "same_top_p_percent": kl["same_top_p_percent"]}
        speed = llama_bench(gguf, opts.context, opts.generate_tokens, 3, opts.threads)
        row |= {k: speed[k] for k in ("prompt_tokens_per_s", "generate_tokens_per_s_b1", "prompt_spread",
                                      "generate_spread")}  # fmt: skip
        rows.append(row)
        print(row, flush=True)

    measure("F16", "F16", f16, False)
    embeddings = [e.strip().upper() for e in opts.embedding_types.split(",") if e.strip()] or [None]
    for qtype in [t.strip() for t in opts.types.split(",") if t.strip()]:
        for embedding in embeddings:
            for with_imatrix in (False, True):
                out = work / f"model-{qtype}-{embedding}{'-imatrix' if with_imatrix else ''}.gguf"
                start = time.time()
                fallbacks = quantize_gguf(f32, out, qtype, imatrix if with_imatrix else None, opts.threads,
                                          embedding)  # fmt: skip
                name = qtype + (f", embedding {embedding}" if embedding else "") + (" + imatrix" if with_imatrix else "")
                measure(name, qtype, out, with_imatrix, fallbacks, time.time() - start, embedding)
                out.unlink()
    base = rows[0]
    for row in rows:
        for split in ("validation", "test"):
            row[f"{split}_vs_f16"] = row[f"{split}_perplexity"] / base[f"{split}_perplexity"] - 1
        if "generate_tokens_per_s_b1" in base:
            row["generate_vs_f16"] = row["generate_tokens_per_s_b1"] / base["generate_tokens_per_s_b1"]
    eligible = [r for r in rows if r["bits_per_weight"] <= MAX_BPW]
    chosen = min(eligible, key=lambda r: r["validation_perplexity"]) if eligible else None
    q8 = next((r for r in rows if r["type"] == "Q8_0" and not r["imatrix"]), None)
    data = {
        "model": opts.model, "parameters": count, "context": opts.context, "chunks": opts.chunks,
        "imatrix_chunks": opts.imatrix_chunks, "imatrix_seconds": imatrix_s, "rows": rows,
        "generate_tokens": opts.generate_tokens,
        "rule": f"among the types at most {MAX_BPW} bits per weight, the lowest validation perplexity",
        "chosen": chosen and chosen["variant"],
        "target": {"text": f"a GGUF of at most {MAX_BPW} bits per weight within +{TARGET:.0%} test perplexity of F16",
                   "chosen_test_vs_f16": chosen and chosen["test_vs_f16"],
                   "met": bool(chosen and chosen["test_vs_f16"] <= TARGET)},
        "q8_target": {"text": f"Q8_0 within +{Q8_TARGET:.1%} test perplexity of F16",
                      "test_vs_f16": q8 and q8["test_vs_f16"], "met": bool(q8 and q8["test_vs_f16"] <= Q8_TARGET)},
        "minutes": (time.time() - started) / 60, "machine": machine() | {"llama_cpp_threads": opts.threads},
        "command": "python scripts/bench_gguf.py" + ("" if opts.name == "smollm2-135m-instruct" else
                                                     f" --model {opts.model} --name {opts.name}")
        + (f" --types {opts.types} --embedding_types {opts.embedding_types}" if opts.embedding_types else ""),
    }  # fmt: skip
    print(write_benchmark(Path(opts.out), opts.name, data, render))
    shutil.rmtree(work)


def render(data: dict) -> str:
    """Every type with and without the importance matrix; the rule's choice and the targets."""
    text = table(
        data["rows"],
        [("variant", "variant", str), ("bits_per_weight", "bits/weight", fmt), ("size_mb", "MB", fmt),
         ("validation_perplexity", "val ppl", fmt), ("test_perplexity", "test ppl", fmt),
         ("test_vs_f16", "test vs F16", percent), ("kl_divergence", "KLD vs F16 (test)", fmt),
         ("same_top_p_percent", "same top token %", fmt), ("prompt_tokens_per_s", "prompt tok/s", fmt),
         ("generate_tokens_per_s_b1", "generate tok/s b1", fmt), ("generate_vs_f16", "generate vs F16", fmt),
         ("fallbacks", "tensors fallen back", fmt),
         ("fallback_types", "to", lambda v: ", ".join(v) if v else "-")],
    )  # fmt: skip
    target, q8 = data["target"], data["q8_target"]
    chosen = data["chosen"] or "none"
    return (
        f"{text}\nModel: {data['model']} ({data['parameters']:,} parameters); llama-perplexity, chunks of "
        f"{data['context']} tokens, the first {data['chunks']} of each text; importance matrix from "
        f"{data['imatrix_chunks']} chunks of the training text ({data['imatrix_seconds']:.0f} s)"
        + (f"; llama-bench: {data['context']} prompt tokens and {data['generate_tokens']} generated, median of 3, "
           f"{data['machine']['llama_cpp_threads']} threads" if "generate_tokens" in data else "; no speeds measured")
        + ".\n\n"
        f"Rule (validation): {data['rule']}. Chosen: **{chosen}**"
        + (f", {target['chosen_test_vs_f16']:+.2%} test perplexity against F16" if data["chosen"] else "")
        + f". Target ({target['text']}): **{'met' if target['met'] else 'not met'}**. {q8['text']}: "
        + (f"{q8['test_vs_f16']:+.2%}, **{'met' if q8['met'] else 'not met'}**" if q8["test_vs_f16"] is not None
           else "not measured")
        + f".\n\n`{data['command']}`\n"
    )


if __name__ == "__main__":
    main()
