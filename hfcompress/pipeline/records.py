"""What a pipeline run leaves behind so that the next run knows what it may skip.

``<output_dir>/pipeline.json`` names the run (model, data, task: its identity) and whether it finished.
``<output_dir>/<stage>/stage.json`` is written last by a finished stage: its resolved config, the fingerprint
of everything it depends on (its own resolved, type-converted config without the fields that change no
result, the data settings, the model (a local folder by the checksums of its files) and the previous stage's
fingerprint, so a change reruns that stage and every one after it), its figures and the library versions. A stage without that record did not finish;
its training checkpoints (``<output_dir>/<stage>/checkpoints``) let the next run resume it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import socket
from pathlib import Path

from ..errors import HfCompressError
from ..evaluation import write_text_atomic

logger = logging.getLogger(__name__)
PIPELINE_RECORD = "pipeline.json"
STAGE_RECORD = "stage.json"
STARTED_RECORD = "started.json"
LOCK = "pipeline.lock"  # {"pid", "host"} of the run using the folder; removed when it ends


def fingerprint(*parts) -> str:
    """sha256 of the JSON of ``parts`` (sorted keys): equal inputs give equal fingerprints."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def identity(config) -> dict:
    """What makes two runs the same pipeline: the model they start from, the data and the task."""
    return {
        "model_name_or_path": config.pipeline.model_name_or_path,
        "task_type": config.pipeline.task_type,
        "dataset_name": config.data.dataset_name,
    }


# Fields that change how a run logs, saves or reports, never what it computes: they don't rerun a stage.
NOT_RESULTS = {
    "output_dir", "logging_dir", "logging_steps", "logging_strategy", "logging_first_step", "report_to",
    "disable_tqdm", "run_name", "save_steps", "save_strategy", "save_total_limit", "push_to_hub", "hub_model_id",
    "hub_token", "hub_strategy", "hub_private_repo", "overwrite_output_dir", "log_level", "log_level_replica",
    "local_rank",  # differs between the processes of one launch
}  # fmt: skip
MODEL_FILES = (".safetensors", ".bin", ".json", ".model", ".txt", ".onnx")


def config_values(instance) -> dict:
    """A config's fields as the run uses them (after type conversion and defaults), as JSON-able values
    (TrainingArguments through ``to_dict``)."""
    return instance.to_dict() if hasattr(instance, "to_dict") else dataclasses.asdict(instance)


def resolved_values(instance) -> dict:
    """``config_values`` less ``NOT_RESULTS``: what a stage's fingerprint hashes."""
    return {k: v for k, v in config_values(instance).items() if k not in NOT_RESULTS and not k.startswith("_")}


def model_fingerprint(name_or_path: str) -> str:
    """A local model folder (or offline asset) by the sha256 of each of its files; a Hub id as written."""
    from ..assets import resolve_model

    folder = Path(resolve_model(name_or_path))
    if not folder.is_dir():
        return name_or_path
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in MODEL_FILES):
        digest.update(path.name.encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def library_versions() -> dict[str, str]:
    """Versions of the libraries a result depends on, recorded beside each stage (not hashed: an upgrade
    alone does not rerun a finished pipeline)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("hfcompress", "torch", "transformers", "datasets", "accelerate", "peft", "optimum", "onnxruntime"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    return versions


def stage_fingerprints(config) -> dict[str, str]:
    """Each stage's fingerprint, chained: stage k's covers stages 1..k (their resolved configs), the data
    settings, the model's content and the seed."""
    base = fingerprint(identity(config), resolved_values(config.data),
                       model_fingerprint(config.pipeline.model_name_or_path), config.pipeline.seed)  # fmt: skip
    result, previous = {}, base
    for stage in config.stages:
        resolved = {cls.__name__: resolved_values(instance) for cls, instance in stage.configs.items()}
        previous = result[stage.name] = fingerprint(previous, stage.name, resolved)
    return result


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        raise HfCompressError(f"{path} is not valid JSON: was it written by another tool?") from None


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


class RunState:
    """The records of one output folder, checked against the run about to start (before anything is written)."""

    def __init__(self, config):
        self.config = config
        self.out = Path(config.pipeline.output_dir)
        self.identity = identity(config)
        self.fingerprints = stage_fingerprints(config)

    # -- checks -------------------------------------------------------------------------------------------
    def check(self) -> list[str]:
        """Refuse a folder that holds another pipeline, files of another tool, or an interrupted run whose
        finished stages had another config. Returns the stages that will be skipped."""
        record = read_json(self.out / PIPELINE_RECORD)
        self.check_lock()
        if self.config.pipeline.overwrite_output:
            if record is None and self.out.exists() and any(self.out.iterdir()):
                names = ", ".join(sorted(p.name for p in self.out.iterdir())[:3])
                raise HfCompressError(
                    f"--overwrite_output deletes only a folder a pipeline wrote (one with {PIPELINE_RECORD}); "
                    f"{self.out} holds {names} and no {PIPELINE_RECORD}: choose a new output_dir"
                )
            return []
        if record is None:
            if self.out.exists() and any(self.out.iterdir()):
                names = ", ".join(sorted(p.name for p in self.out.iterdir())[:3])
                raise HfCompressError(
                    f"{self.out} is not empty ({names}) and holds no {PIPELINE_RECORD}: it was not written by a "
                    "pipeline; choose a new output_dir"
                )
            return []
        if record.get("identity") != self.identity:
            raise HfCompressError(
                f"{self.out} holds another pipeline ({_describe(record.get('identity'))}, not "
                f"{_describe(self.identity)}); choose another output_dir or pass --overwrite_output true"
            )
        skipped = []
        for name, wanted in self.fingerprints.items():
            stage = read_json(self.out / name / STAGE_RECORD)
            if stage is not None and stage.get("identity") != self.identity:
                raise HfCompressError(
                    f"{self.out / name / STAGE_RECORD} belongs to another pipeline "
                    f"({_describe(stage.get('identity'))}); choose another output_dir"
                )
            done = stage is not None and stage.get("fingerprint") == wanted
            if stage is not None and not done and record.get("status") == "running":
                raise HfCompressError(
                    f"the run in {self.out} was interrupted in stage {record.get('current')!r}, and stage "
                    f"{name!r} finished there with another config; rerun with the config it started with "
                    f"(recorded in {self.out / name / STAGE_RECORD}) or pass --overwrite_output true"
                )
            if not done:
                break
            skipped.append(name)
        return skipped

    def check_lock(self) -> None:
        """Refuse a folder another live run is using; a lock left by a dead process is taken over."""
        lock = read_json(self.out / LOCK)
        if lock is None:
            return
        if _alive(lock.get("pid"), lock.get("host")):
            raise HfCompressError(
                f"another run (pid {lock.get('pid')} on {lock.get('host')}) is using {self.out}; wait for it to end "
                f"or stop it (if it is gone, delete {self.out / LOCK})"
            )
        logger.warning("%s was left by pid %s, which is no longer running: taken over", self.out / LOCK,
                       lock.get("pid"))  # fmt: skip

    # -- writing ------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Take the folder (the lock file), emptied first with ``overwrite_output``, and mark the run started."""
        if self.config.pipeline.overwrite_output and self.out.exists():
            shutil.rmtree(self.out)
        write_json(self.out / LOCK, {"pid": os.getpid(), "host": socket.gethostname()})
        self.mark("running", current=None)

    def release(self) -> None:
        """Remove this process's lock (a crash leaves it, and the next run takes it over)."""
        lock = read_json(self.out / LOCK)
        if lock and lock.get("pid") == os.getpid() and lock.get("host") == socket.gethostname():
            (self.out / LOCK).unlink()

    def mark(self, status: str, current: str | None) -> None:
        write_json(
            self.out / PIPELINE_RECORD,
            {
                "identity": self.identity,
                "status": status,
                "current": current,
                "stages": list(self.fingerprints),
                "config": self.config.path,
                "versions": library_versions(),
            },
        )

    def done(self, name: str) -> dict | None:
        record = read_json(self.out / name / STAGE_RECORD)
        return record if record and record.get("fingerprint") == self.fingerprints[name] else None

    def begin_stage(self, name: str) -> Path:
        """The stage's folder, emptied unless it holds checkpoints of this same stage config (then resumed)."""
        folder = self.out / name
        started = read_json(folder / STARTED_RECORD)
        if started is None or started.get("fingerprint") != self.fingerprints[name]:
            if folder.exists():
                shutil.rmtree(folder)
            write_json(folder / STARTED_RECORD, {"fingerprint": self.fingerprints[name]})
        (folder / STAGE_RECORD).unlink(missing_ok=True)
        self.mark("running", current=name)
        return folder

    def finish_stage(self, name: str, stage_config: dict, figures: dict, artifact: str | None) -> dict:
        record = {
            "identity": self.identity,
            "stage": name,
            "fingerprint": self.fingerprints[name],
            "config": stage_config,
            "figures": figures,
            "artifact": artifact,
            "versions": library_versions(),
        }
        write_json(self.out / name / STAGE_RECORD, record)
        return record


def _alive(pid, host) -> bool:
    """True unless ``pid`` on this host is gone (a lock from another host counts as alive: it can't be checked)."""
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True
    return True


def last_checkpoint(folder: Path) -> str | None:
    """The newest complete Trainer checkpoint in ``folder`` (``trainer_state.json`` is written last)."""
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    if not done:
        return None
    return str(max(done, key=lambda p: int(p.name.split("-")[-1])))


def _describe(ident: dict | None) -> str:
    if not ident:
        return "unknown"
    return f"{ident.get('model_name_or_path')} on {ident.get('dataset_name')}, {ident.get('task_type')}"
