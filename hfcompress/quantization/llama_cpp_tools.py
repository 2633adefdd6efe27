"""llama.cpp's own tools, run as separate processes: its converter (``convert_hf_to_gguf.py``, the one llama.cpp
users run), its quantizer (``llama-quantize``: K-quants, IQ types, the importance matrix), ``llama-imatrix``,
``llama-perplexity`` and ``llama-bench``.

They are found in ``$HFCOMPRESS_LLAMA_CPP`` (a llama.cpp checkout with its tools built: ``build/bin/`` or
``bin/``), else in the cache (``$HFCOMPRESS_CACHE/llama.cpp``), where ``make setup-llama-tools`` builds them
from the llama.cpp that the pinned llama-cpp-python source archive vendors. A missing tool is a one-line error
that says how to install it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from ..errors import HfCompressError

LLAMA_CPP_PYTHON = "0.3.36"  # the llama-cpp-python source archive whose vendored llama.cpp is built
ARCHIVE_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
TOOLS = ("llama-quantize", "llama-imatrix", "llama-perplexity", "llama-bench")
BUILT = "BUILT"  # the build's marker in the cache folder: the archive's sha256 and the tools built
INSTALL = "run `make setup-llama-tools`, or set HFCOMPRESS_LLAMA_CPP to a llama.cpp checkout with its tools built"
# llama-quantize's line for a tensor whose row length doesn't divide by the type's block
FALLBACK = re.compile(
    r"warning: (?P<tensor>\S+)\s+- ncols\s+(?P<ncols>\d+) not divisible by\s+(?P<block>\d+) \(required for type\s+"
    r"(?P<wanted>\S+)\)\s+(?:\(WARNING: must use F16 due to unusual shape\) )?-> falling back to\s+(?P<used>\S+)"
)
PERPLEXITY = re.compile(r"Final estimate: PPL = (?P<ppl>[\d.]+) \+/- (?P<error>[\d.]+)")
# its running estimate after each chunk ("[3]23.4512,"); the last one is the final figure, which it prints
# without the line above when the log-probabilities' variance rounds to <= 0 (a near-uniform model)
RUNNING = re.compile(r"\[\d+\](?P<ppl>\d+\.\d+),")
KL_FIGURES = {  # llama-perplexity --kl-divergence: its summary lines
    "perplexity": re.compile(r"Mean PPL\(Q\)\s+: +(?P<value>[\d.]+) ± +(?P<error>[\d.]+)"),
    "base_perplexity": re.compile(r"Mean PPL\(base\)\s+: +(?P<value>[\d.]+) ± +(?P<error>[\d.]+)"),
    "kl_divergence": re.compile(r"Mean +KLD: +(?P<value>-?[\d.]+) ± +(?P<error>[\d.]+)"),
    "same_top_p_percent": re.compile(r"Same top p: +(?P<value>[\d.]+) ± +(?P<error>[\d.]+) %"),
}


def llama_cpp_home() -> Path:
    """Where llama.cpp's tools are looked for: ``$HFCOMPRESS_LLAMA_CPP``, else the cache's ``llama.cpp``."""
    if os.environ.get("HFCOMPRESS_LLAMA_CPP"):
        return Path(os.environ["HFCOMPRESS_LLAMA_CPP"]).expanduser()
    from ..assets import cache_dir

    return cache_dir() / "llama.cpp"


def find_tool(name: str) -> Path:
    """The path of one of llama.cpp's programs (``llama-quantize``, ...) or of its converter script."""
    home = llama_cpp_home()
    places = [home / name] if name.endswith(".py") else [home / "bin" / name, home / "build" / "bin" / name]
    for place in places:
        if place.is_file():
            return place
    raise HfCompressError(f"llama.cpp's {name} is not in {home}: {INSTALL}")


def tools_available() -> bool:
    """llama.cpp's programs and converter are installed, with the sentencepiece package the converter imports."""
    import importlib.util

    try:
        for name in (*TOOLS, "convert_hf_to_gguf.py"):
            find_tool(name)
    except HfCompressError:
        return False
    return importlib.util.find_spec("sentencepiece") is not None


def _run(cmd: list, what: str, env: dict | None = None) -> str:
    """Run a tool; its output (stdout and stderr) on success, a one-line error with its last message otherwise."""
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        lines = [line for line in output.strip().splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line.lower() or "exception" in line.lower()]
        last = (errors or lines or ["no output"])[-1].strip()
        raise HfCompressError(f"{what} failed (exit {result.returncode}): {last}")
    return output


def convert_to_gguf(model_dir: str | os.PathLike, out_file: str | os.PathLike, outtype: str = "f16") -> Path:
    """``model_dir`` (a saved transformers causal LM with its tokenizer) as one GGUF file of ``outtype`` (f32,
    f16, bf16 or q8_0), written by llama.cpp's converter: its architecture table, its tokenizer and
    pre-tokenizer detection, the chat template, rope scaling (Llama 3's ``rope_freqs``) and special ids."""
    import importlib.util

    converter = find_tool("convert_hf_to_gguf.py")
    if importlib.util.find_spec("sentencepiece") is None:
        raise HfCompressError(
            "llama.cpp's converter imports sentencepiece, which is not installed: pip install sentencepiece "
            "(make setup-llama-tools installs it)"
        )
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # its own gguf-py, not the installed one
    _run([sys.executable, converter, model_dir, "--outfile", out_file, "--outtype", outtype],
         f"llama.cpp's converter on {model_dir}", env)  # fmt: skip
    return Path(out_file)


def quantize_gguf(source: str | os.PathLike, out_file: str | os.PathLike, qtype: str,
                  imatrix: str | os.PathLike | None = None, threads: int | None = None,
                  embedding_type: str | None = None) -> list[dict]:  # fmt: skip
    """``llama-quantize`` of an F16/F32 GGUF to ``qtype`` (Q4_K_M, IQ4_XS, ...), with an importance matrix when
    given, and ``embedding_type`` for the token embedding and the output matrix (None: llama-quantize's choice,
    6 to 8 bits); returns the tensors that fell back to another type because their rows don't divide by the
    type's block ({tensor, ncols, wanted, used})."""
    cmd = [find_tool("llama-quantize")]
    if imatrix is not None:
        cmd += ["--imatrix", imatrix]
    if embedding_type is not None:
        cmd += ["--token-embedding-type", embedding_type, "--output-tensor-type", embedding_type]
    cmd += [source, out_file, qtype, threads or os.cpu_count() or 1]
    output = _run(cmd, f"llama-quantize {qtype}")
    return [{"tensor": m["tensor"], "ncols": int(m["ncols"]), "wanted": m["wanted"], "used": m["used"]}
            for m in FALLBACK.finditer(output)]  # fmt: skip


def compute_imatrix(gguf: str | os.PathLike, text_file: str | os.PathLike, out_file: str | os.PathLike,
                    context: int = 512, chunks: int | None = None, threads: int | None = None) -> Path:  # fmt: skip
    """llama.cpp's importance matrix of ``gguf`` over ``text_file`` (the user's calibration text)."""
    cmd = [find_tool("llama-imatrix"), "-m", gguf, "-f", text_file, "-o", out_file, "-c", context,
           "-t", threads or os.cpu_count() or 1]  # fmt: skip
    if chunks is not None:
        cmd += ["--chunks", chunks]
    _run(cmd, "llama-imatrix")
    return Path(out_file)


def llama_perplexity(gguf: str | os.PathLike, text_file: str | os.PathLike, context: int,
                     threads: int | None = None, chunks: int | None = None,
                     save_logits: str | os.PathLike | None = None) -> dict:  # fmt: skip
    """``llama-perplexity``: chunks of ``context`` tokens (BOS first when the model adds one), each scored on its
    second half; returns {perplexity, error}. ``save_logits``: also write the file ``kl_divergence`` compares
    another GGUF's logits with."""
    cmd = [find_tool("llama-perplexity"), "-m", gguf, "-f", text_file, "-c", context, "-b", context,
           "-t", threads or os.cpu_count() or 1]  # fmt: skip
    if chunks is not None:
        cmd += ["--chunks", chunks]
    if save_logits is not None:
        cmd += ["--kl-divergence-base", save_logits]
    output = _run(cmd, "llama-perplexity")
    found = PERPLEXITY.search(output)
    if found:
        return {"perplexity": float(found["ppl"]), "error": float(found["error"])}
    running = RUNNING.findall(output)
    if not running:
        raise HfCompressError(f"llama-perplexity printed no perplexity for {gguf}")
    return {"perplexity": float(running[-1]), "error": None}


def kl_divergence(gguf: str | os.PathLike, base_logits: str | os.PathLike, threads: int | None = None) -> dict:
    """``llama-perplexity --kl-divergence`` of ``gguf`` against the logits another GGUF saved (``save_logits``)
    over the same tokens: {perplexity, base_perplexity, kl_divergence, same_top_p_percent}, each with its
    ``<name>_error``."""
    cmd = [find_tool("llama-perplexity"), "-m", gguf, "--kl-divergence-base", base_logits, "--kl-divergence",
           "-t", threads or os.cpu_count() or 1]  # fmt: skip
    output = _run(cmd, "llama-perplexity --kl-divergence")
    figures = {}
    for name, pattern in KL_FIGURES.items():
        found = pattern.search(output)
        if not found:
            raise HfCompressError(f"llama-perplexity --kl-divergence printed no {name} for {gguf}")
        figures |= {name: float(found["value"]), f"{name}_error": float(found["error"])}
    return figures


def llama_bench(gguf: str | os.PathLike, prompt_tokens: int, generate_tokens: int, repetitions: int = 3,
                threads: int | None = None) -> dict:  # fmt: skip
    """``llama-bench``: prompt processing of ``prompt_tokens`` tokens and generation of ``generate_tokens``
    tokens at batch 1, each ``repetitions`` times. Returns the medians ``prompt_tokens_per_s`` and
    ``generate_tokens_per_s_b1``, their spreads over the repetitions ((largest - smallest) / median) and the
    repetitions' figures."""
    import json
    import statistics

    cmd = [find_tool("llama-bench"), "-m", gguf, "-p", prompt_tokens, "-n", generate_tokens, "-r", repetitions,
           "-t", threads or os.cpu_count() or 1, "-o", "json"]  # fmt: skip
    output = _run(cmd, "llama-bench")
    try:
        tests = json.loads(output[output.index("[") : output.rindex("]") + 1])
    except ValueError as err:
        raise HfCompressError(f"llama-bench printed no JSON results for {gguf}") from err
    figures = {}
    for name, kind in (("prompt", "n_prompt"), ("generate", "n_gen")):
        samples = next((t["samples_ts"] for t in tests if t.get(kind)), None)
        if not samples:
            raise HfCompressError(f"llama-bench printed no {name} test for {gguf}")
        median = statistics.median(samples)
        key = "prompt_tokens_per_s" if name == "prompt" else "generate_tokens_per_s_b1"
        figures |= {key: median, f"{name}_spread": (max(samples) - min(samples)) / median,
                    f"{name}_tokens_per_s_rounds": list(samples)}  # fmt: skip
    return figures
