"""Sequence-level knowledge distillation (Kim & Rush 2016): the teacher answers the training prompts once,
greedily, and the student learns from those answers (token-level KD on top of them when ``alpha > 0``).

The answers replace each row's last assistant turn (chat data) or its completion (prompt/completion data);
the prompts are left as they are. They are generated once and cached in a JSON file named after a key of the
teacher's weights, the data and the generation settings, so a rerun with the same teacher reuses them and a
changed teacher or dataset never reads another's answers.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import datasets
import torch

from ..errors import HfCompressError
from ..modeling import stop_token_ids
from .cache import dataset_fingerprint, teacher_fingerprint

logger = logging.getLogger(__name__)


def _prompt_text(tokenizer, row: dict, fmt: str, columns: dict) -> str:
    """What the teacher continues: the conversation before the last assistant turn, with the generation
    prompt, or the prompt string."""
    if fmt == "messages" or (fmt == "prompt_completion" and isinstance(row[columns["prompt"]], list)):
        messages = row[columns["messages"]] if fmt == "messages" else row[columns["prompt"]]
        if fmt == "messages":
            last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
            messages = messages[:last] if last is not None else messages
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return row[columns["prompt"]]


def _with_answer(row: dict, answer: str, fmt: str, columns: dict) -> dict:
    if fmt == "messages":
        messages = list(row[columns["messages"]])
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
        return {columns["messages"]: messages[:last] + [{"role": "assistant", "content": answer}]}
    completion = row[columns["completion"]]
    if isinstance(completion, list):
        return {columns["completion"]: [{"role": "assistant", "content": answer}]}
    return {columns["completion"]: answer}


def answer_ids(new_tokens: list[int], stop_ids: list[int]) -> list[int]:
    """A generated row's answer: its tokens before the first stop id (what follows is padding, or, with a
    model that was not told its end-of-turn ids, invented turns)."""
    stops = set(stop_ids)
    return next((new_tokens[:i] for i, t in enumerate(new_tokens) if t in stops), new_tokens)


@torch.no_grad()
def generate_answers(teacher, tokenizer, prompts: list[str], chat: bool, max_new_tokens: int, batch_size: int):
    """Greedy answers to ``prompts`` (left-padded batches, on the teacher's device). Generation stops on every
    end-of-turn id of the teacher (``stop_token_ids``); each answer is its tokens before the first one, decoded
    without other special tokens and not stripped (a leading space is part of the first token)."""
    device = next(teacher.parameters()).device
    was_training = teacher.training
    teacher.eval()
    stops = stop_token_ids(teacher, tokenizer)
    answers = []
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(
            prompts[start : start + batch_size], add_special_tokens=not chat, padding=True,
            padding_side="left", return_tensors="pt",
        )  # fmt: skip
        batch = {k: batch[k].to(device) for k in ("input_ids", "attention_mask")}
        out = teacher.generate(
            **batch, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
            eos_token_id=stops or None,
        )  # fmt: skip
        rows = out[:, batch["input_ids"].shape[1] :].tolist()
        answers += tokenizer.batch_decode([answer_ids(row, stops) for row in rows], skip_special_tokens=True)
    teacher.train(was_training)
    return answers


def teacher_answers(
    teacher, tokenizer, dataset: datasets.Dataset, fmt: str, columns: dict, cache_dir: str | Path,
    max_new_tokens: int = 128, batch_size: int = 8,
) -> datasets.Dataset:  # fmt: skip
    """``dataset`` with the teacher's greedy answer in place of each row's last assistant turn or completion.

    ``columns`` maps 'messages', 'prompt' and 'completion' to the dataset's column names. The answers are
    cached in ``cache_dir/teacher_answers-<key>.json``; an empty answer is kept (it teaches the model to stop).
    """
    if fmt not in ("messages", "prompt_completion"):
        raise HfCompressError(
            f"sequence-level KD needs prompts to answer: chat (messages) or prompt/completion data, not {fmt!r}"
        )
    key = {
        "teacher": teacher_fingerprint(teacher), "dataset": dataset_fingerprint(dataset),
        "max_new_tokens": max_new_tokens, "format": fmt, "columns": columns,
    }  # fmt: skip
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"teacher_answers-{digest}.json"
    if path.exists():
        answers = json.loads(path.read_text())["answers"]
        logger.info("Reusing %d teacher answers from %s", len(answers), path)
    else:
        prompts = [_prompt_text(tokenizer, row, fmt, columns) for row in dataset]
        chat = fmt == "messages" or isinstance(dataset[0][columns["prompt"]], list)
        answers = generate_answers(teacher, tokenizer, prompts, chat, max_new_tokens, batch_size)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"key": key, "answers": answers}, ensure_ascii=False))
        temporary.replace(path)
    return dataset.map(lambda row, i: _with_answer(row, answers[i], fmt, columns), with_indices=True)
