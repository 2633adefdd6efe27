"""Downstream tasks through lm-evaluation-harness (``lm-eval``), run on a model already in memory.

    scores = harness_scores(model, tokenizer, ["arc_easy", "hellaswag"])                 # online: any task by name
    folder = build_offline_tasks("outputs/tasks", {"austen": test_text, "hamlet": hamlet})  # offline: our own
    scores = harness_scores(model, tokenizer, offline_task_names(folder), include_path=folder)

Online, the harness downloads a task's data from the Hub; offline (no Hub) it can't, so ``build_offline_tasks``
writes task definitions of the project's own from held-out text: harness task YAMLs that read local JSON lines.
Two tasks per text:

- ``<name>_final_word``: LAMBADA-style. A paragraph without its last word; the model must give that word
  (``acc``: the word is the greedy continuation; ``perplexity`` of the word).
- ``<name>_cloze``: four-way multiple choice. A paragraph without its last sentence; the choices are that
  sentence and the last sentences of three other paragraphs of the same text (``acc``, and ``acc_norm``, which
  divides each choice's log-likelihood by its length in bytes).

Scores come back as the harness reports them, each with its standard error: ``{task: {"acc": 0.41,
"acc_stderr": 0.03, ...}}``. ``lm-eval`` is an optional extra (``pip install 'hfcompress[lm-eval]'``).
"""

from __future__ import annotations

import functools
import json
import random
import re
from pathlib import Path

from ..errors import HfCompressError

TASK_KINDS = ("final_word", "cloze")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
_WORD_AT_END = re.compile(r"^(?P<context>.*\S)\s+(?P<word>[A-Za-z]+)(?P<tail>[^A-Za-z\s]*)$", re.DOTALL)


def is_lm_eval_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("lm_eval") is not None


def paragraphs(text: str, min_words: int = 30, max_words: int = 200) -> list[str]:
    """The blank-line-separated paragraphs of ``text`` with ``min_words`` to ``max_words`` words, whitespace
    collapsed to single spaces."""
    found = (" ".join(p.split()) for p in re.split(r"\n\s*\n", text))
    return [p for p in found if min_words <= len(p.split()) <= max_words]


def final_word_examples(text: str, examples: int, seed: int = 0) -> list[dict]:
    """Paragraphs ending in a word (trailing punctuation dropped): ``{"context", "target"}``, target with its
    leading space, as LAMBADA's."""
    rows = []
    for paragraph in paragraphs(text):
        match = _WORD_AT_END.match(paragraph)
        if match and len(match["word"]) > 1:
            rows.append({"context": match["context"], "target": " " + match["word"]})
    return _sample(rows, examples, seed)


def cloze_examples(text: str, examples: int, seed: int = 0, choices: int = 4) -> list[dict]:
    """Paragraphs of three or more sentences: ``{"context", "choices", "label"}``, the true last sentence among
    ``choices - 1`` last sentences of other paragraphs, in a seeded order."""
    split = [_SENTENCE_END.split(p) for p in paragraphs(text)]
    split = [s for s in split if len(s) >= 3]
    endings = sorted({s[-1] for s in split})  # distinct: no choice appears twice
    if len(endings) < choices:
        raise HfCompressError(f"a cloze task needs at least {choices} paragraphs of 3+ sentences; found {len(split)}")
    rng = random.Random(seed)
    rows = []
    for sentences in split:
        others = rng.sample([e for e in endings if e != sentences[-1]], choices - 1)
        options = [sentences[-1], *others]
        rng.shuffle(options)
        rows.append({"context": " ".join(sentences[:-1]), "choices": options, "label": options.index(sentences[-1])})
    return _sample(rows, examples, seed)


def _sample(rows: list[dict], examples: int, seed: int) -> list[dict]:
    if len(rows) > examples:
        rows = random.Random(seed).sample(rows, examples)
    return rows


TEMPLATES = {
    "final_word": {
        "output_type": "loglikelihood",
        "doc_to_text": "{{context}}",
        "doc_to_target": "{{target}}",
        "target_delimiter": "",
        "metric_list": [
            {"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
        ],
    },
    "cloze": {
        "output_type": "multiple_choice",
        "doc_to_text": "{{context}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{label}}",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
    },
}


def build_offline_tasks(folder, texts: dict[str, str], examples: int = 200, seed: int = 0) -> Path:
    """Write ``<name>_final_word`` and ``<name>_cloze`` for every ``name -> text``: one JSON-lines file and one
    harness YAML each, in ``folder``; returns ``folder`` (the harness's ``include_path``)."""
    import yaml

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        if not re.fullmatch(r"[a-z0-9_]+", name):
            raise HfCompressError(f"task text names are lower-case letters, digits and _, got {name!r}")
        for kind, build in (("final_word", final_word_examples), ("cloze", cloze_examples)):
            rows = build(text, examples, seed)
            if not rows:
                raise HfCompressError(f"no {kind} example could be made from the text {name!r}")
            task = f"{name}_{kind}"
            data = folder / f"{task}.jsonl"
            data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            config = {"task": task, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
                      "test_split": "test", **TEMPLATES[kind], "metadata": {"version": 1.0}}  # fmt: skip
            (folder / f"{task}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def offline_task_names(folder) -> list[str]:
    """The tasks ``build_offline_tasks`` wrote into ``folder``."""
    return sorted(p.stem for p in Path(folder).glob("*.yaml"))


@functools.lru_cache(maxsize=4)
def task_manager(include_path: str | None, local: tuple = ()):
    """The harness's task index (with the task files ``local`` under ``include_path``): built once per path and
    files, since indexing every task the harness ships takes seconds."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path)


def harness_scores(model, tokenizer, tasks: list[str], include_path=None, limit: int | None = None,
                   batch_size: int = 8, bootstrap_iters: int = 1000) -> dict[str, dict[str, float]]:  # fmt: skip
    """Run harness ``tasks`` (names; local ones under ``include_path``) on ``model``, zero-shot; each task's
    metrics and their standard errors, as the harness computes them."""
    if not is_lm_eval_available():
        raise HfCompressError("downstream tasks need lm-evaluation-harness: pip install 'hfcompress[lm-eval]'")
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(model.device))
    local = tuple(sorted(str(p) for p in Path(include_path).glob("*.yaml"))) if include_path else ()
    manager = task_manager(str(include_path) if include_path else None, local)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise HfCompressError(f"unknown harness tasks {', '.join(unknown)}; offline, build local ones with "
                              "build_offline_tasks and pass include_path")  # fmt: skip
    results = simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, limit=limit,
                              bootstrap_iters=bootstrap_iters, log_samples=False)["results"]  # fmt: skip
    scores = {}
    for task in tasks:
        metrics = {}
        for key, value in results[task].items():
            metric, _, _filter = key.partition(",")
            if isinstance(value, (int, float)) and metric != "alias":
                metrics[metric] = float(value)
        scores[task] = metrics
    return scores
