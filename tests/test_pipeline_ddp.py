"""The compress pipeline as two CPU processes (gloo DDP through accelerate): both train every training stage,
the main one alone writes the records and measures, and a run whose rank 1 was SIGKILLed resumes to the weights
of an uninterrupted run."""

import json
from pathlib import Path

import pytest
import yaml
from conftest import launch_two_processes, make_bert, make_text_dataset, make_tokenizer
from safetensors.torch import load_file

pytestmark = pytest.mark.ddp
WORKER = Path(__file__).parent / "pipeline_worker.py"


def write_config(root: Path, name: str) -> Path:
    config = {
        "output_dir": str(root / name),
        "model_name_or_path": str(root / "teacher"),
        "data": {"dataset_name": str(root / "reviews.csv"), "max_train_samples": 64, "max_eval_samples": 16},
        "training": {"per_device_train_batch_size": 8, "report_to": "none", "disable_tqdm": True,
                     "save_strategy": "steps", "save_steps": 2, "logging_steps": 50},  # fmt: skip
        "stages": [
            {"distill": {"num_train_epochs": 2, "student_layers": "2", "learning_rate": 1e-3}},
            {"evaluate": {"latency_runs": 1, "latency_batch_sizes": "2", "memory": False, "plots": False}},
        ],
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def failure(result) -> str:
    """The lines that say why a launch failed (the first errors of each rank), then the tail."""
    lines = [line for line in result.stderr.splitlines() if "Error" in line or "error:" in line or "what()" in line]
    return "\n".join(lines[:30]) + "\n...\n" + result.stderr[-1500:]


def ranks(folder: Path) -> list[dict]:
    return [json.loads((folder / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_two_processes_train_together_write_once_and_resume_after_a_sigkill(tmp_path):
    tok = make_tokenizer(tmp_path)
    teacher = make_bert(num_layers=4, tokenizer=tok)
    teacher.config.id2label, teacher.config.label2id = {0: "0", 1: "1"}, {"0": 0, "1": 1}
    teacher.save_pretrained(tmp_path / "teacher")
    tok.save_pretrained(tmp_path / "teacher")
    make_text_dataset(120).to_csv(tmp_path / "reviews.csv", index=False)

    whole = launch_two_processes([WORKER, write_config(tmp_path, "whole"), tmp_path / "seen_whole"])
    assert whole.returncode == 0, failure(whole)
    rank0, rank1 = ranks(tmp_path / "seen_whole")
    assert rank0["world_size"] == rank1["world_size"] == 2
    # both ranks trained the distill stage and ended with the same weights (gradients all-reduced) ...
    assert rank0["weights"]["distill"] == rank1["weights"]["distill"]
    # ... in 64 / (8 x 2) = 4 steps an epoch: the data was split between them, not trained twice
    record = json.loads((tmp_path / "whole" / "distill" / "stage.json").read_text())
    assert record["figures"]["global_step"] == 8
    assert not (tmp_path / "whole" / "distill" / "checkpoints").exists()  # deleted once finished, by rank 0
    # the main process alone wrote the records; rank 1 wrote nothing
    assert rank1["writes"] == []
    assert rank0["writes"].count("stage.json") == 2 and rank0["writes"][0] == "pipeline.lock"
    assert json.loads((tmp_path / "whole" / "report.json").read_text())["chosen"] == rank0["chosen"]
    assert rank0["chosen"] == rank1["chosen"]
    saved = load_file(str(tmp_path / "whole" / "distill" / "model" / "model.safetensors"))
    assert len(saved) > 0 and not (tmp_path / "whole" / "pipeline.lock").exists()

    killed_config = write_config(tmp_path, "killed")
    killed = launch_two_processes([WORKER, killed_config, tmp_path / "seen_killed", 5])
    assert killed.returncode != 0
    distill = tmp_path / "killed" / "distill"
    assert not (distill / "stage.json").exists() and (distill / "checkpoints" / "checkpoint-4").is_dir()
    assert json.loads((tmp_path / "killed" / "pipeline.json").read_text())["status"] == "running"

    resumed = launch_two_processes([WORKER, killed_config, tmp_path / "seen_resumed"])
    assert resumed.returncode == 0, failure(resumed)
    rank0, rank1 = ranks(tmp_path / "seen_resumed")
    assert json.loads((distill / "stage.json").read_text())["figures"]["resumed_from"].endswith("checkpoint-4")
    assert rank0["weights"]["distill"] == rank1["weights"]["distill"]
    # the resumed run ends with exactly the weights of the uninterrupted one
    assert load_file(str(distill / "model" / "model.safetensors")).keys() == saved.keys()
    resumed_weights = load_file(str(distill / "model" / "model.safetensors"))
    assert all((resumed_weights[k] == saved[k]).all() for k in saved)


def test_two_processes_run_the_causal_lm_pipeline(tmp_path):
    """task_type causal_lm as two processes: the search's speeds measured by the main process, its choice the
    same on both, the distill stage trained together (same weights, the blocks split between the ranks), the
    records and the report written once."""
    from conftest import held_out_text, make_bpe_tokenizer, make_llama

    tokenizer = make_bpe_tokenizer(tmp_path / "teacher")
    make_llama(num_layers=4, vocab_size=len(tokenizer)).save_pretrained(tmp_path / "teacher")
    (tmp_path / "text").mkdir()
    for split, count, seed in (("train", 40, 0), ("validation", 12, 1), ("test", 12, 2)):
        (tmp_path / "text" / f"{split}.txt").write_text(held_out_text(count, seed))
    config = {
        "output_dir": str(tmp_path / "lm"), "model_name_or_path": str(tmp_path / "teacher"), "task_type": "causal_lm",
        "data": {"dataset_name": str(tmp_path / "text"), "block_size": 32, "eval_stride": 32,
                 "ood_dataset_name": None, "max_train_tokens": 1024, "max_eval_tokens": 256},
        "training": {"per_device_train_batch_size": 4, "report_to": "none", "disable_tqdm": True,
                     "save_strategy": "steps", "save_steps": 2, "logging_steps": 50},
        "stages": [
            {"search": {"depths": "2,3", "proxy_steps": 2, "latency_rounds": 1, "generate_tokens": 4,
                        "calibration_batches": 2}},
            {"distill": {"num_train_epochs": 1, "learning_rate": 1e-3}},
            {"evaluate": {"latency_rounds": 1, "generate_tokens": 4, "prompt_batch_size": 2, "memory": False,
                          "plots": False}},
        ],
    }  # fmt: skip
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(config))
    result = launch_two_processes([WORKER, path, tmp_path / "seen"])
    assert result.returncode == 0, failure(result)
    rank0, rank1 = ranks(tmp_path / "seen")
    assert rank0["world_size"] == 2 and rank0["weights"]["distill"] == rank1["weights"]["distill"]
    assert rank1["writes"] == [] and rank0["writes"].count("stage.json") == 3
    report = json.loads((tmp_path / "lm" / "report.json").read_text())
    assert report["task_type"] == "causal_lm" and rank0["chosen"] == rank1["chosen"] == report["chosen"]
    record = json.loads((tmp_path / "lm" / "distill" / "stage.json").read_text())
    assert record["figures"]["global_step"] == 1024 // 32 // (4 * 2)  # 32 blocks, 4 per rank per step
