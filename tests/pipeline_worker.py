"""Run by tests/test_pipeline_ddp.py under ``accelerate launch --multi_gpu --num_processes 2`` (gloo on CPU):
``python pipeline_worker.py CONFIG REPORT_DIR [KILL_AT_STEP]``.

Each process runs the same ``run_pipeline`` call. It records, in ``REPORT_DIR/rank<N>.json``: the world size,
every pipeline record it wrote (``records.write_json`` is wrapped), and a checksum of the weights each training
stage ended with. With KILL_AT_STEP, rank 1 kills itself with SIGKILL at that step of the distill stage.
"""

import hashlib
import json
import os
import signal
import sys
from pathlib import Path

from transformers import TrainerCallback

import hfcompress.pipeline.records as records
from hfcompress.pipeline import run_pipeline

config, report_dir = sys.argv[1], Path(sys.argv[2])
kill_at = int(sys.argv[3]) if len(sys.argv) > 3 else None
rank = int(os.environ["RANK"])
seen = {"world_size": int(os.environ["WORLD_SIZE"]), "writes": [], "weights": {}}
write_json = records.write_json


def recording_write(path, data):
    seen["writes"].append(Path(path).name)
    write_json(path, data)


records.write_json = recording_write


def weights_sha256(model) -> str:
    digest = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        digest.update(state[name].detach().cpu().numpy().tobytes())
    return digest.hexdigest()


class Watch(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if kill_at and rank == 1 and "distill" in args.output_dir and state.global_step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        seen["weights"][Path(args.output_dir).parent.name] = weights_sha256(model)


report = run_pipeline(config, callbacks=[Watch()])
seen["chosen"] = report["chosen"]
report_dir.mkdir(parents=True, exist_ok=True)
(report_dir / f"rank{rank}.json").write_text(json.dumps(seen))
