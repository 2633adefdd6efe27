"""Generate the benchmark tables in docs/benchmarks.md from the committed JSON under scripts/results/.

    python scripts/render_benchmarks.py           # rewrite every generated block in docs/benchmarks.md
    python scripts/render_benchmarks.py --check   # exit 1 if a committed block differs from its JSON

docs/benchmarks.md holds prose and blocks ``<!-- generated: NAME -->`` ... ``<!-- end generated -->``; each
block is rendered from its results file by the benchmark script that wrote it (the same function writes the
script's own markdown), so tables (and the figures in the sentences they write) are never copied by hand and
never rendered twice. This script only collects them. tests/test_docs.py runs the check.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "scripts" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)

# block -> (the script that renders it, its function, the results files it reads, relative to scripts/results/)
BLOCKS = {
    "demo-threads": ("demo_threads", "render", "demo_threads/demo_timing.json", "demo_threads/old_report.json",
                     "demo_threads/new_report.json"),
    "distill-logits": ("bench_distill", "render", "distill_benchmark.json"),
    "distill-hidden": ("bench_distill", "render", "hidden/distill_benchmark.json"),
    "prune-1epoch": ("bench_prune", "render", "pruning/prune_benchmark.json"),
    "prune-hidden": ("bench_prune", "render", "pruning_hidden/prune_benchmark.json"),
    "prune-hidden-seeds": ("bench_prune", "render", "pruning_hidden_seeds/prune_benchmark.json"),
    "prune-spread": ("bench_prune", "render", "pruning_spread/prune_benchmark.json"),
    "prune-selection": ("bench_prune", "render", "pruning_selection/prune_benchmark.json"),
    "prune-selection-seeds": ("bench_prune", "render_seeds", "pruning_selection/prune_benchmark.json",
                              "pruning_selection_seeds/prune_benchmark.json"),
    "quantize": ("bench_quantize", "render", "quantization/quantize_benchmark.json"),
    "quantize-torchao": ("bench_quantize", "render", "quantization_torchao/quantize_benchmark.json"),
    "quantize-repeat": ("bench_quantize", "render", "quantization_repeat/quantize_benchmark.json"),
    "qat": ("bench_qat", "render", "qat/qat_benchmark.json"),
    "compress": ("bench_compress", "render", "compress/compress_benchmark.json"),
    "compress-previous-rule": ("bench_compress", "render", "compress/previous_rule/compress_benchmark.json"),
    "compress-llm": ("bench_compress_llm", "docs_block", "compress_llm/compress_llm_benchmark.json"),
    "distill-pair": ("bench_distill_pair", "render", "distill_pair/distill_pair_benchmark.json"),
    "llm-memory": ("bench_llm", "render", "llm/memory.json"),
    "llm-recover": ("bench_llm_recover", "render_recover", "llm/recover.json"),
    "llm-quantize": ("bench_llm_recover", "render_quantize", "llm/quantize.json"),
    "llm-onpolicy": ("bench_llm_recover", "render_onpolicy", "llm/onpolicy.json"),
    "llm-chat": ("bench_llm_chat", "render", "llm_chat/chat.json"),
    "llm-formats": ("bench_llm_formats", "render", "llm_formats/smollm2-135m-instruct.json"),
    "llm-formats-student": ("bench_llm_formats", "render", "llm_formats/student.json"),
    "llm-onnx": ("bench_llm_onnx", "render", "llm_onnx/student.json"),
    "llm-onnx-layers": ("bench_llm_onnx", "render", "llm_onnx/student-layers.json"),
    "llm-compressed-student": ("bench_llm_compressed", "render", "llm_compressed/student.json"),
    "llm-compressed": ("bench_llm_compressed", "render", "llm_compressed/smollm2-135m-instruct.json"),
    "llm-llama-cpp-student": ("bench_llm_llama_cpp", "render", "llm_llama_cpp/student.json"),
    "llm-llama-cpp": ("bench_llm_llama_cpp", "render", "llm_llama_cpp/smollm2-135m-instruct.json"),
    "gguf-llama-cpp": ("bench_gguf", "render", "gguf/smollm2-135m-instruct.json"),
    "gguf-llama-cpp-embedding": ("bench_gguf", "render", "gguf/smollm2-135m-instruct-embedding.json"),
    "gguf-llama-cpp-student": ("bench_gguf", "render", "gguf/student.json"),
    "qad": ("bench_qad", "render", "qad/smollm2-135m-instruct.json"),
    "qad-fp32-avx2": ("bench_qad", "render", "qad/smollm2-135m-instruct-fp32-avx2.json"),
    "qad-student": ("bench_qad", "render", "qad/llm-demo-student.json"),
    "qad-student-lsq": ("bench_qad", "render", "qad/llm-demo-student-lsq.json"),
    "qad-lsq": ("bench_qad", "render", "qad/smollm2-135m-instruct-lsq.json"),
    "qad-g32": ("bench_qad", "render", "qad/smollm2-135m-instruct-g32.json"),
    "qad-steps256": ("bench_qad", "render", "qad/smollm2-135m-instruct-steps256.json"),
    "qad-steps256-seeds12": ("bench_qad", "render", "qad/smollm2-135m-instruct-steps256-seeds12.json"),
    "qad-g32-steps256": ("bench_qad", "render", "qad/smollm2-135m-instruct-g32-steps256.json"),
    "qad-awq": ("bench_qad", "render", "qad/smollm2-135m-instruct-awq.json"),
    "qad-g32-lr1e-4": ("bench_qad", "render", "qad/smollm2-135m-instruct-g32-lr1e-4-fp32.json"),
    "qad-g32-lr3e-4": ("bench_qad", "render", "qad/smollm2-135m-instruct-g32-lr3e-4-fp32.json"),
    "qad-g32-lr1e-4-seeds12": ("bench_qad", "render", "qad/smollm2-135m-instruct-g32-lr1e-4-fp32-seeds12.json"),
    "qad-g32-lr1e-4-lsq": ("bench_qad", "render", "qad/smollm2-135m-instruct-g32-lr1e-4-lsq.json"),
    "qad-g32-lr1e-4-generated": ("bench_qad", "render", "qad/smollm2-135m-instruct-g32-lr1e-4-generated.json"),
    "qad-g32-lr1e-4-segments": ("bench_qad_segments", "render", "qad/smollm2-135m-instruct-g32-lr1e-4-segments.json"),
    "qad-g32-lr1e-4-steps256": ("bench_qad", "render", "qad/smollm2-135m-instruct-g32-lr1e-4-steps256.json"),
    "qad-g32-lr1e-4-steps256-seed1": ("bench_qad", "render", "qad/smollm2-135m-instruct-g32-lr1e-4-steps256-seed1.json"),
    "kd-step": ("bench_kd_step", "render", "kd_step/smollm2-20-layers-b2.json"),
    "kd-step-8x512": ("bench_kd_step", "render", "kd_step/smollm2-20-layers.json"),
}


def render_block(name: str) -> str:
    """One block, rendered by its benchmark script from its JSON files."""
    module, function, *files = BLOCKS[name]
    if str(Path(__file__).resolve().parent) not in sys.path:  # the scripts import each other by bare name
        sys.path.insert(0, str(Path(__file__).resolve().parent))
    return getattr(importlib.import_module(module), function)(*[json.loads((RESULTS / f).read_text()) for f in files])


def render(text: str) -> str:
    def replace(match):
        name = match["name"]
        if name not in BLOCKS:
            raise SystemExit(
                f"docs/benchmarks.md names an unknown block {name!r}; known: {', '.join(BLOCKS)}"
            )
        return match.group(1) + render_block(name) + match.group(4)

    return BLOCK.sub(replace, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="fail if a committed block differs from its JSON"
    )
    opts = parser.parse_args()
    text = DOC.read_text()
    rendered = render(text)
    if opts.check:
        if rendered != text:
            stale = [
                m["name"]
                for m, n in zip(BLOCK.finditer(text), BLOCK.finditer(rendered))
                if m["body"] != n["body"]
            ]
            print(
                f"docs/benchmarks.md is out of date with scripts/results for: {', '.join(stale)}",
                file=sys.stderr,
            )
            return 1
        return 0
    DOC.write_text(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
