"""The GPU paths of the causal LM code: measurements keep inputs on the model's device and wait for CUDA;
distillation and sequence-level KD run with both models on the GPU. Skipped where no CUDA device is."""

import pytest
import torch
from conftest import BPE_CORPUS, make_bpe_tokenizer, make_decoder

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)"),
]


def test_speeds_and_perplexity_on_the_gpu_match_the_cpu(tmp_path):
    from hfcompress.evaluation.lm import interleaved_speeds, strided_perplexity

    tokenizer = make_bpe_tokenizer(tmp_path / "tok")
    model = make_decoder("llama")
    text = " ".join(BPE_CORPUS * 4)
    on_cpu = strided_perplexity(model, tokenizer, text, max_length=64, stride=32)
    on_gpu = strided_perplexity(model.cuda(), tokenizer, text, max_length=64, stride=32)
    assert on_gpu["perplexity"] == pytest.approx(on_cpu["perplexity"], rel=1e-3)
    (speed,) = interleaved_speeds([model], tokenizer, text, 32, generate_tokens=8, prompt_batch_size=2, runs=2)
    assert speed["generate_tokens_per_s_b1"] > 0 and speed["prompt_tokens_per_s"] > 0


def test_chunked_distillation_and_teacher_answers_on_the_gpu(tmp_path):
    import datasets

    from hfcompress import DistillationConfig, DistillationTrainer
    from hfcompress.distillation.sequence import generate_answers

    tokenizer = make_bpe_tokenizer(tmp_path / "tok")
    ids = [tokenizer(t)["input_ids"][:30] for t in BPE_CORPUS]
    rows = datasets.Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(r) for r in ids], "labels": ids})
    args = DistillationConfig(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=3,
                              report_to=[], save_strategy="no", lm_chunk_size=7)  # fmt: skip
    trainer = DistillationTrainer(model=make_decoder("gemma2", num_layers=2), teacher_model=make_decoder("gemma2"),
                                  args=args, train_dataset=rows, processing_class=tokenizer)  # fmt: skip
    trainer.train()
    assert next(trainer.model.parameters()).is_cuda and next(trainer.teacher.parameters()).is_cuda
    answers = generate_answers(trainer.teacher, tokenizer, BPE_CORPUS[:2], False, 4, 2)
    assert len(answers) == 2
