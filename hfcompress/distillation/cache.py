"""Cache of the teacher's logits on the training set, keyed to the teacher and the dataset.

The teacher is frozen, so its logits for a training example never change: computing them once turns every
later epoch into student-only work. The cache file (safetensors) records fingerprints of the teacher's
weights and config and of the dataset; a file made for another teacher or dataset is refused with an error
rather than silently used or overwritten. A folder given as the path holds one file per key instead
(``keyed_cache_path``): what a pipeline uses, so that a rerun with a changed teacher never meets a stale file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from ..errors import HfCompressError

# Config keys that change when a model is saved and reloaded, but not what it computes.
_VOLATILE_CONFIG_KEYS = {
    "_name_or_path",
    "architectures",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "_attn_implementation",
    "_attn_implementation_autoset",
    "_commit_hash",
}


def teacher_fingerprint(teacher: torch.nn.Module) -> str:
    """sha256 over what determines the teacher's logits: its config and every parameter and buffer, in the
    dtype it runs in (about 0.2 s for 25M parameters). Paths and library versions don't count."""
    digest = hashlib.sha256()
    config = getattr(teacher, "config", None)
    if config is not None:
        stable = {k: v for k, v in config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS}
        digest.update(json.dumps(stable, sort_keys=True, default=str).encode())
    for name, tensor in sorted(teacher.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def vocabulary_fingerprint(tokenizer) -> str:
    """sha256 of a tokenizer's token -> id map: a cache made with another tokenizer is refused by name."""
    vocabulary = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    return hashlib.sha256(vocabulary.encode()).hexdigest()[:16]


def dataset_fingerprint(dataset) -> str:
    """The ``datasets`` fingerprint (stable across runs for the same data and transforms)."""
    fingerprint = getattr(dataset, "_fingerprint", None)
    if fingerprint is None:
        raise HfCompressError(
            "cache_teacher_logits needs a datasets.Dataset as train_dataset (it has a fingerprint)"
        )
    return f"{fingerprint}-{len(dataset)}"


@torch.no_grad()
def teacher_logits_in_order(teacher_forward, dataset, collator, batch_size: int):
    """The teacher's logits batch by batch, with the batch they came from, over ``dataset`` in order (consume it
    to the end).

    The random state is left as found (a DataLoader draws a seed), so a run with a cache trains exactly as
    one with the live teacher.
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collator)
        for batch in loader:
            yield batch, teacher_forward(batch, need_internals=False).logits


def compute_teacher_logits(teacher_forward, dataset, collator, batch_size: int) -> torch.Tensor:
    """Teacher logits for every example of ``dataset`` in order, as a float32 CPU tensor ``(N, ...)``."""
    batches = teacher_logits_in_order(teacher_forward, dataset, collator, batch_size)
    return torch.cat([logits.float().cpu() for _, logits in batches])


def keyed_cache_path(path: str | os.PathLike, key: dict[str, str], stem: str) -> Path:
    """``path`` itself for a file; for a folder (an existing one, or a path ending in '/') the file of this key
    inside it, ``<stem>-<digest>.safetensors``: one file per teacher, dataset and setting, so a changed teacher
    or dataset gets its own cache and never meets a stale one."""
    text = str(path)
    if not (text.endswith(("/", os.sep)) or Path(text).is_dir()):
        return Path(text)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(text) / f"{stem}-{digest}.safetensors"


def load_or_build_teacher_cache(path: str | os.PathLike, key: dict[str, str], build) -> torch.Tensor:
    """Load cached logits whose metadata equals ``key``; build and save them if the file doesn't exist.

    ``build`` is a zero-argument callable returning the logits tensor. A file whose key differs is stale:
    we raise instead of using it (wrong targets) or overwriting it (it may be someone's result).
    """
    return load_or_build_tensors(path, key, lambda: {"logits": build()})["logits"]


def load_or_build_tensors(path: str | os.PathLike, key: dict[str, str], build) -> dict[str, torch.Tensor]:
    """``load_or_build_teacher_cache`` for several named tensors (``build`` returns a dict of them)."""
    path = Path(path)
    if path.exists():
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            found = json.loads((f.metadata() or {}).get("hfcompress_key", "{}"))
        if found != key:
            diff = sorted(k for k in set(key) | set(found) if key.get(k) != found.get(k))
            raise HfCompressError(
                f"stale teacher cache {path}: it was made for a different {' and '.join(diff) or 'run'}; "
                "delete it or set teacher_cache_path to a new file"
            )
        return load_file(str(path))
    tensors = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    save_file(
        {name: tensor.contiguous() for name, tensor in tensors.items()},
        str(tmp),
        metadata={"hfcompress_key": json.dumps(key, sort_keys=True)},
    )
    os.replace(tmp, path)  # atomic: an interrupted run leaves no half-written cache
    return tensors
