"""Optional backends, imported lazily: the core installs and imports without them."""

from __future__ import annotations

import importlib.util

from ..errors import HfCompressError
from .config import METHODS


def is_bitsandbytes_available() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def is_optimum_onnx_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "optimum")) and (
        importlib.util.find_spec("optimum.onnxruntime") is not None
    )


def is_torchao_available() -> bool:
    return importlib.util.find_spec("torchao") is not None


def is_gguf_available() -> bool:
    return importlib.util.find_spec("gguf") is not None


def is_llmcompressor_available() -> bool:
    return importlib.util.find_spec("llmcompressor") is not None


def is_compressed_tensors_available() -> bool:
    """What reloading a GPTQ/AWQ/W8A8 checkpoint needs (llmcompressor brings it)."""
    return importlib.util.find_spec("compressed_tensors") is not None


AVAILABLE = {
    "llmcompressor": is_llmcompressor_available,
    "gguf": is_gguf_available,
    "bitsandbytes": is_bitsandbytes_available,
    "optimum-onnx": is_optimum_onnx_available,
    "torchao": is_torchao_available,
    "qad": lambda: True,  # torch alone; qad-gguf-q4_0 also needs gguf (require_backend)
}


def transformers_major() -> int:
    import transformers

    return int(transformers.__version__.split(".")[0])


def require_backend(method: str) -> None:
    """Raise a one-line error naming the extra to install when ``method``'s backend is missing."""
    backend, extra = METHODS[method]
    if backend == "qad" and extra == "gguf":
        backend = "gguf"
    if not AVAILABLE[backend]():
        raise HfCompressError(
            f"method {method!r} needs {backend}, which is not installed: pip install 'hfcompress[{extra}]'"
        )
    if backend == "torchao" and transformers_major() < 5:
        import transformers

        raise HfCompressError(
            f"method {method!r} needs transformers>=5 (found {transformers.__version__}): 4.x can't save or "
            "reload torchao int8 weights as safetensors; use onnx-int8-dynamic or bnb-int8 with this version"
        )


def method_available(method: str) -> bool:
    """Whether ``require_backend(method)`` passes in this environment."""
    try:
        require_backend(method)
    except HfCompressError:
        return False
    return True
