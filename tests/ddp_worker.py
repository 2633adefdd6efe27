"""Run by tests/test_ddp.py under ``accelerate launch --multi_gpu --num_processes 2`` (gloo on CPU).

Each rank distils the same tiny teacher into the same tiny student, records which examples it saw and a
checksum of its final weights, and saves the student (only the main process writes).
"""

import hashlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import datasets  # noqa: E402
from conftest import make_bert, make_text_dataset, make_tokenizer  # noqa: E402

from hfcompress import DistillationConfig, DistillationTrainer, create_student_from_teacher  # noqa: E402
from hfcompress.data import EXAMPLE_INDEX, tokenize_dataset  # noqa: E402


class RecordingTrainer(DistillationTrainer):
    seen: list[int] = []

    def compute_loss(self, model, inputs, *args, **kwargs):
        if model.training and EXAMPLE_INDEX in inputs:
            self.seen.extend(inputs[EXAMPLE_INDEX].tolist())
        return super().compute_loss(model, inputs, *args, **kwargs)


def main(workdir: Path) -> None:
    tok = make_tokenizer(workdir)
    teacher = make_bert(num_layers=4, hidden=32, tokenizer=tok, seed=1)
    student = create_student_from_teacher(teacher, 2)
    raw = datasets.DatasetDict(
        train=make_text_dataset(64), validation=make_text_dataset(8, 1), test=make_text_dataset(8, 2)
    )
    data = tokenize_dataset(raw, tok, 32)
    args = DistillationConfig(
        output_dir=str(workdir / "out"),
        num_train_epochs=1,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        cache_teacher_logits=True,
        hidden_mse_weight=0.0,
        ddp_find_unused_parameters=False,
        dataloader_drop_last=True,
    )
    trainer = RecordingTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=data["train"], processing_class=tok
    )
    trainer.train()
    trainer.save_model(str(workdir / "student"))
    digest = hashlib.sha256()
    for _name, tensor in sorted(student.state_dict().items()):
        digest.update(tensor.detach().cpu().numpy().tobytes())
    record = {
        "rank": trainer.args.process_index,
        "world_size": trainer.args.world_size,
        "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
        "seen": trainer.seen,
        "steps": trainer.state.global_step,
        "should_save": trainer.args.should_save,
        "weights_sha256": digest.hexdigest(),
    }
    (workdir / f"rank{record['rank']}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
