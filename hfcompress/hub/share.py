"""Shipping compressed variants: names, checks, export and push to the Hub.

``export_variant`` writes exactly the folder that ``push_variant`` uploads: the model's config, weights
(safetensors or ONNX only: pickled ``.bin`` files are refused), tokenizer files and a ``README.md`` model card
(``card.py``). The token comes from huggingface_hub's usual sources (``HF_TOKEN``, ``hf auth login``) and is
never written anywhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from ..errors import HfCompressError
from .card import build_model_card

WEIGHT_FILES = ("*.safetensors", "*.onnx", "*.gguf")
PICKLED = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
SHIPPED = (
    "config.json",
    "generation_config.json",
    "ort_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
    "adapter_config.json",
    "hfcompress_quantization.json",
)
def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def variant_name(base_model: str, task: str, *suffix: str) -> str:
    """``<base>-<task>-<suffix...>``, e.g. ``all-minilm-l6-v2-rotten-tomatoes-distilled-3L``; base and task
    are the last part of a Hub id or path (a data file without its extension); case is kept in the suffix."""
    task = Path(task.rstrip("/")).name
    if Path(task).suffix in (".csv", ".tsv", ".json", ".jsonl", ".parquet"):
        task = Path(task).stem
    parts = [_slug(Path(base_model.rstrip("/")).name), _slug(task)]
    parts += [re.sub(r"[^A-Za-z0-9.]+", "-", s).strip("-") for s in suffix if s]
    return "-".join(p for p in parts if p)


def check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise HfCompressError(f"invalid repo id {repo_id!r}: {str(err).splitlines()[0]}") from None
    if "/" not in repo_id:
        raise HfCompressError(f"invalid repo id {repo_id!r}: write it as '<user or org>/<name>'")


def check_model_folder(folder: str | os.PathLike) -> list[Path]:
    """The files to ship from a saved model folder; refuses folders that are not a model and pickled weights."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HfCompressError(f"{folder} is not a folder")
    weights = [p for pattern in WEIGHT_FILES for p in folder.glob(pattern)]
    described = (folder / "config.json").exists() or (folder / "adapter_config.json").exists()
    gguf = any(p.suffix == ".gguf" for p in weights)  # a GGUF file holds its own config and tokenizer
    if not (described or gguf) or not weights:
        pickled = [p.name for pattern in PICKLED for p in folder.glob(pattern)]
        hint = f" (it has pickled weights {pickled}: save with safetensors)" if pickled else ""
        raise HfCompressError(
            f"{folder} is not a saved model: it needs config.json (or adapter_config.json) and .safetensors or "
            f".onnx weights, or a .gguf file{hint}"
        )
    return sorted(set(weights) | {folder / name for name in SHIPPED if (folder / name).exists()})


EXPORT_OWNER = ".hfcompress-export.json"  # who wrote an export, so that the same run may replace it


def export_variant(folder: str | os.PathLike, out: str | os.PathLike, card, owner: str | None = None) -> Path:
    """Write exactly what ``push_variant`` uploads into ``out`` (a new folder), atomically.

    With ``owner`` (a pipeline's output folder) the export records it, and an existing export recorded with
    the same owner is replaced (a rerun of that pipeline); any other existing folder is refused.
    """
    files = check_model_folder(folder)
    out = Path(out)
    previous = None
    if out.exists():
        marker = out / EXPORT_OWNER
        written_by = json.loads(marker.read_text()).get("owner") if marker.exists() else None
        if owner is None or written_by != owner:
            raise HfCompressError(f"{out} already exists; export into a new folder")
        previous = out
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for path in files:
            shutil.copy2(path, staging / path.name)
        card.save(staging / "README.md")
        if owner is not None:
            (staging / EXPORT_OWNER).write_text(json.dumps({"owner": owner}))
        if previous is not None:  # swap: the earlier export is removed only once the new one is complete
            old = previous.with_name(f".{previous.name}.old-{os.getpid()}")
            os.replace(previous, old)
            os.replace(staging, out)
            shutil.rmtree(old)
        else:
            os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out


def _connection_errors() -> tuple:
    """Exceptions that mean the connection to the Hub failed (refused, reset, timed out, DNS), for the HTTP
    client huggingface_hub uses: requests in 0.x, httpx later. Other errors (a file that can't be read, a
    bug) are not dressed up as a lost connection."""
    import importlib

    errors: list = [ConnectionError, TimeoutError]  # builtins: refused, reset, aborted, socket time-outs
    try:
        import requests

        errors += [requests.exceptions.ConnectionError, requests.exceptions.Timeout]
    except ImportError:
        pass
    for name in ("httpx", "httpx2"):  # huggingface_hub 1.x uses httpx; 2.x ships it as httpx2
        try:
            errors.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _endpoint() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def check_token(token: str | None = None) -> str:
    """Ask the Hub who the token belongs to (``whoami``) before any work; returns the user name.

    No token, a refused token, offline mode and an unreachable Hub are one-line errors, so a run that would
    fail at push time fails before it trains."""
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import OfflineModeIsEnabled

    token = token or get_token()
    if not token:
        raise HfCompressError(
            "share_namespace is set but there is no Hugging Face token: set HF_TOKEN or run `hf auth login`"
        )
    endpoint = _endpoint()
    try:
        info = HfApi(endpoint=endpoint, token=token).whoami()
    except OfflineModeIsEnabled:
        raise HfCompressError(
            "share_namespace is set but HF_HUB_OFFLINE is on: pushing needs the Hub (share_export_dir works "
            "offline)"
        ) from None
    except _connection_errors() as err:
        raise HfCompressError(
            f"can't reach {endpoint} to check the Hugging Face token ({type(err).__name__}); nothing was run"
        ) from None
    except (
        Exception
    ) as err:  # an HTTP error: huggingface_hub 0.x raises requests' HTTPError here, later HfHubHTTPError
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status is None:
            raise
        reason = "refused the Hugging Face token" if status in (401, 403) else "answered with an error"
        raise HfCompressError(
            f"checking the token: {endpoint} {reason} (HTTP {status}); set a valid HF_TOKEN or run `hf auth login`"
        ) from None
    return info.get("name", "?") if isinstance(info, dict) else str(info)


def push_variant(
    folder: str | os.PathLike,
    repo_id: str,
    card,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str = "Upload compressed variant (hfcompress)",
) -> str:
    """Create ``repo_id`` if needed and upload the exported variant; returns the commit URL.

    The local folder is never modified. Errors (no token, refused token, dropped connection) are one line
    saying what happened; nothing is retried silently.
    """
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    check_repo_id(repo_id)
    check_model_folder(folder)
    token = token or get_token()
    if not token:
        raise HfCompressError(
            "no Hugging Face token: set HF_TOKEN or run `hf auth login`; nothing was uploaded"
        )
    endpoint = _endpoint()
    api = HfApi(endpoint=endpoint, token=token)
    with tempfile.TemporaryDirectory() as tmp:
        staged = export_variant(folder, Path(tmp) / "variant", card)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            info = api.upload_folder(
                repo_id=repo_id, folder_path=staged, revision=revision, commit_message=commit_message
            )
        except OfflineModeIsEnabled:
            raise HfCompressError(
                "HF_HUB_OFFLINE is set: pushing needs the Hub; export_variant works offline"
            ) from None
        except HfHubHTTPError as err:
            status = err.response.status_code if err.response is not None else "?"
            reason = "the token was refused" if status in (401, 403) else "the Hub answered with an error"
            raise HfCompressError(
                f"push of {folder} to {repo_id} failed: {reason} (HTTP {status}); the local folder is unchanged"
            ) from None
        except _connection_errors() as err:
            raise HfCompressError(
                f"push of {folder} to {repo_id} failed: connection to {endpoint} lost ({type(err).__name__}); "
                "the local folder is unchanged, run again to retry"
            ) from None
    return str(getattr(info, "commit_url", info))


# -- what recipes call -------------------------------------------------------------------------------------


def check_sharing(recipe) -> None:
    """Before any work: a push needs a valid namespace and a token the Hub accepts (``check_token``). Export
    folders are checked per variant later (``export_variant`` refuses an existing folder)."""
    if recipe.share_namespace:
        check_repo_id(f"{recipe.share_namespace}/variant")
        check_token()


def share_variant(recipe, folder, info, *suffix: str, owner: str | None = None) -> dict:
    """Export and/or push one compressed variant as the recipe's share_* fields ask; returns where it went.

    The repo name follows ``variant_name(base, dataset, *suffix)``; the card is built from ``info`` (figures
    from the run's own report). ``owner``: see ``export_variant`` (a pipeline may replace its own export).
    """
    if not (recipe.share_namespace or recipe.share_export_dir):
        return {}
    name = variant_name(info.base_model, info.dataset, *suffix)
    repo_id = f"{recipe.share_namespace or 'local'}/{name}"
    card = build_model_card(info, repo_id)
    shared = {"repo_id": repo_id}
    if recipe.share_export_dir:
        shared["export"] = str(export_variant(folder, Path(recipe.share_export_dir) / name, card, owner))
    if recipe.share_namespace:
        shared["commit_url"] = push_variant(
            folder, repo_id, card, private=recipe.share_private, revision=recipe.share_revision
        )
    return shared
