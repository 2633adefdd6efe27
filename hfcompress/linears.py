"""Selecting ``nn.Linear`` modules by name, shared by pruning and quantization-aware training."""

from __future__ import annotations

import re

from torch import nn

from .errors import HfCompressError


def matching_linears(model: nn.Module, pattern: str) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` modules whose name matches the regular expression ``pattern`` (``re.search``); a
    pattern that matches none is an error that shows what the Linear layers are called."""
    regex = re.compile(pattern)
    found = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and regex.search(name)}
    if not found:
        examples = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)][:4]
        raise HfCompressError(
            f"target_modules {pattern!r} matches no nn.Linear; Linear layers are named like {examples}"
        )
    return found
