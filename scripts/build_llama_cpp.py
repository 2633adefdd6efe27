"""Build llama.cpp's own tools from the llama.cpp that the pinned llama-cpp-python source archive vendors, into
the cache (``$HFCOMPRESS_CACHE/llama.cpp``, else ``~/.cache/hfcompress/llama.cpp``):

    python scripts/build_llama_cpp.py          # make setup-llama-tools

- ``convert_hf_to_gguf.py`` with its ``conversion/`` and ``gguf-py/`` (the converter llama.cpp users run);
- ``bin/llama-quantize``, ``bin/llama-imatrix``, ``bin/llama-perplexity``, ``bin/llama-bench`` (CMake targets), built without the
  AMX/AVX512 paths in which quantized GGUFs crashed on the Xeon CPUs this was written on
  (``$LLAMA_CPP_CMAKE_ARGS`` replaces those flags).

Idempotent: a finished build (``BUILT``, which names the archive's sha256 and the tools) is kept. About 7 minutes on 2 cores.
hfcompress finds the tools there, or in ``$HFCOMPRESS_LLAMA_CPP`` (any llama.cpp checkout with its tools built).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from hfcompress.assets import cache_dir
from hfcompress.quantization.llama_cpp_tools import ARCHIVE_SHA256, BUILT, LLAMA_CPP_PYTHON, TOOLS

FLAGS = "-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_AVX512=OFF"
KEEP = ("convert_hf_to_gguf.py", "conversion", "gguf-py", "LICENSE")


def run(cmd: list[str], **kwargs) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)


def main() -> int:
    out = cache_dir() / "llama.cpp"
    marker = " ".join((ARCHIVE_SHA256, *TOOLS))
    if (out / BUILT).is_file() and (out / BUILT).read_text().strip() == marker:
        print(f"llama.cpp tools already built in {out}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary=:all:", "-d", str(tmp),
             f"llama-cpp-python=={LLAMA_CPP_PYTHON}"])  # fmt: skip
        (archive,) = tmp.glob("*.tar.gz")
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        if digest != ARCHIVE_SHA256:
            raise SystemExit(f"{archive.name} has sha256 {digest}, expected {ARCHIVE_SHA256}")
        prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
            tar.extractall(tmp / "src", members=members, filter="data")
        source = tmp / "src" / prefix
        build = tmp / "build"
        flags = os.environ.get("LLAMA_CPP_CMAKE_ARGS", FLAGS).split()
        run(["cmake", "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF",
             "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF", *flags])  # fmt: skip
        jobs = str(os.cpu_count() or 2)
        run(["cmake", "--build", str(build), "--config", "Release", "-j", jobs, "--target", *TOOLS])
        staging = Path(tempfile.mkdtemp(dir=out.parent if out.parent.exists() else None, prefix=".llama.cpp-"))
        for name in KEEP:
            src = source / name
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, staging / name)
        (staging / "bin").mkdir()
        for tool in TOOLS:
            shutil.copy2(build / "bin" / tool, staging / "bin" / tool)
        (staging / BUILT).write_text(marker + "\n")
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)
    print(f"llama.cpp tools in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
