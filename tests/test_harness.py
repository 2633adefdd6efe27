"""Downstream tasks through lm-evaluation-harness, offline: the project's own task definitions (a LAMBADA-style
final-word task and a four-way cloze) built from held-out text, run by the harness on a tiny random Llama with a
real byte-level BPE tokenizer; the harness's accuracies equal the ones computed here from the model's own
log-likelihoods, and its standard errors the binomial formula's."""

import json
import math

import pytest
import torch
from conftest import SENTENCES, held_out_text, make_llama, shared_bpe_tokenizer

from hfcompress import HfCompressError
from hfcompress.evaluation.harness import (
    build_offline_tasks,
    cloze_examples,
    final_word_examples,
    harness_scores,
    is_lm_eval_available,
    offline_task_names,
)


def test_final_word_and_cloze_examples_from_paragraphs():
    text = held_out_text()
    words = final_word_examples(text, examples=100)
    assert len(words) == 12
    for row in words:
        paragraph = next(p for p in (" ".join(q.split()) for q in text.split("\n\n")) if p.startswith(row["context"]))
        assert paragraph.rstrip(".?!") == row["context"] + row["target"]  # the last word, punctuation dropped
    cloze = cloze_examples(text, examples=5, seed=1)
    assert len(cloze) == 5
    for row in cloze:
        assert len(row["choices"]) == 4 and len(set(row["choices"])) == 4
        paragraph = next(" ".join(p.split()) for p in text.split("\n\n") if " ".join(p.split()).startswith(row["context"]))
        assert paragraph == row["context"] + " " + row["choices"][row["label"]]
    assert cloze == cloze_examples(text, examples=5, seed=1)  # seeded
    with pytest.raises(HfCompressError, match="needs at least 4 paragraphs of 3\\+ sentences; found 1"):
        cloze_examples(SENTENCES[0] + " " + SENTENCES[1] + " " + SENTENCES[2], 5)


def loglikelihood(model, tokenizer, context: str, continuation: str) -> tuple[float, bool]:
    """log p(continuation | context) and whether it is the greedy continuation, computed here: the continuation's
    tokens are those the whole string has past the context's (as the harness splits them)."""
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([whole])).logits[0].log_softmax(-1)
    targets = whole[len(context_ids):]
    rows = logits[len(context_ids) - 1 : len(whole) - 1]
    total = float(rows[torch.arange(len(targets)), torch.tensor(targets)].sum())
    return total, bool((rows.argmax(-1) == torch.tensor(targets)).all())


@pytest.mark.skipif(not is_lm_eval_available(), reason="needs lm-eval (pip install 'hfcompress[lm-eval]')")
def test_the_harness_runs_the_offline_tasks_and_scores_as_computed_by_hand(tmp_path):
    model, tokenizer = make_llama(hidden=64, intermediate=128), shared_bpe_tokenizer()
    folder = build_offline_tasks(tmp_path / "tasks", {"austen": held_out_text()}, examples=12)
    assert offline_task_names(folder) == ["austen_cloze", "austen_final_word"]
    scores = harness_scores(model, tokenizer, offline_task_names(folder), include_path=folder, batch_size=4)

    words = [json.loads(line) for line in (folder / "austen_final_word.jsonl").read_text().splitlines()]
    greedy = [loglikelihood(model, tokenizer, r["context"], r["target"])[1] for r in words]
    assert scores["austen_final_word"]["acc"] == pytest.approx(sum(greedy) / len(greedy))
    nll = [-loglikelihood(model, tokenizer, r["context"], r["target"])[0] for r in words]
    assert scores["austen_final_word"]["perplexity"] == pytest.approx(math.exp(sum(nll) / len(nll)), rel=1e-4)

    cloze = [json.loads(line) for line in (folder / "austen_cloze.jsonl").read_text().splitlines()]
    right = []
    for row in cloze:
        scored = [loglikelihood(model, tokenizer, row["context"], " " + choice)[0] for choice in row["choices"]]
        right.append(max(range(4), key=scored.__getitem__) == row["label"])
    accuracy = sum(right) / len(right)
    assert scores["austen_cloze"]["acc"] == pytest.approx(accuracy)
    # the harness's standard error of a mean of 0/1 scores: the sample standard deviation / sqrt(n)
    n = len(right)
    assert scores["austen_cloze"]["acc_stderr"] == pytest.approx(math.sqrt(accuracy * (1 - accuracy) / (n - 1)))


@pytest.mark.skipif(not is_lm_eval_available(), reason="needs lm-eval")
def test_an_unknown_task_offline_is_a_one_line_error(tmp_path):
    with pytest.raises(HfCompressError, match="unknown harness tasks no_such_task; offline, build local ones"):
        harness_scores(make_llama(), shared_bpe_tokenizer(), ["no_such_task"])


def test_without_lm_eval_the_error_says_how_to_install(monkeypatch):
    from hfcompress.evaluation import harness

    monkeypatch.setattr(harness, "is_lm_eval_available", lambda: False)
    with pytest.raises(HfCompressError, match=r"pip install 'hfcompress\[lm-eval\]'"):
        harness.harness_scores(None, None, ["austen_cloze"])
