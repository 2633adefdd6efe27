"""Two real CPU processes (gloo DDP) through accelerate: both ranks train, weights stay in sync, one save."""

import hashlib
import json
from pathlib import Path

import pytest
from conftest import launch_two_processes
from safetensors.torch import load_file

pytestmark = pytest.mark.ddp


def test_two_process_ddp(tmp_path):
    result = launch_two_processes([Path(__file__).parent / "ddp_worker.py", tmp_path])
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and ranks[0]["backend"] == "gloo"
    # Both ranks took part, on different halves of the data, for the same number of steps.
    seen0, seen1 = set(ranks[0]["seen"]), set(ranks[1]["seen"])
    assert seen0 and seen1 and not (seen0 & seen1)
    assert seen0 | seen1 == set(range(64))
    assert ranks[0]["steps"] == ranks[1]["steps"] == 4
    # Gradients were all-reduced: both ranks end with identical weights.
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    # Saved once, by the main process, and what was saved is what was trained.
    assert [r["should_save"] for r in ranks] == [True, False]
    state = load_file(str(tmp_path / "student" / "model.safetensors"))
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(state[name].numpy().tobytes())
    assert digest.hexdigest() == ranks[0]["weights_sha256"]
