"""Causal LM training and evaluation rows from the three shapes users' data come in.

- **text** (a text column): documents, each followed by EOS, concatenated and cut into ``block_size`` blocks
  (the ``run_clm`` convention); every token is a label.
- **messages** (a column of ``[{"role": ..., "content": ...}, ...]``): rendered with the tokenizer's chat
  template. The assistant turns are found by rendering each turn's prefix (with the generation prompt) and
  the conversation up to the end of that turn: the characters in between are the assistant's, and so are
  the tokens that start there (their end-of-turn marker included, so the model learns to stop).
- **prompt/completion** (two columns of strings, or of message lists, which are then a conversation): the
  prompt tokens (with the tokenizer's BOS, if it adds one) are context, the completion and EOS the labels.

By default only assistant/completion tokens count in the LM and KD terms (``completion_only_loss``); set it
False to count every token. Rows are one example each, padded by the collator, or with ``packing``
concatenated and cut into ``block_size`` blocks. Tokenization runs through ``datasets.map`` (batched,
``num_proc`` workers, cached by ``datasets`` when the data come from files), so a large corpus never sits in
one Python list. Bad input is a one-line ``HfCompressError`` naming the data, the split, the row and what is
allowed.
"""

from __future__ import annotations

import logging

import datasets

from ..errors import HfCompressError, check_choice

logger = logging.getLogger(__name__)

IGNORE = -100
LM_FORMATS = ("auto", "text", "messages", "prompt_completion")


def bos_prefix(tokenizer) -> list[int]:
    """``[BOS]`` when the tokenizer starts plain text with its BOS token (Llama, Mistral, Gemma, Phi-3), else
    ``[]`` (Qwen, SmolLM2): documents in training blocks and texts scored for perplexity start with it, as the
    model saw text in pre-training and as lm-evaluation-harness scores it (Gemma is poor without its BOS)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    ids = tokenizer("a")["input_ids"]
    return [bos] if ids and ids[0] == bos else []


def detect_format(
    columns: list[str], data_format: str, text_column: str, messages_column: str, prompt_column: str,
    completion_column: str, where: str,
) -> str:  # fmt: skip
    """The data's format: ``data_format`` checked against the columns, or (``auto``) read off them."""
    check_choice("data_format", data_format, LM_FORMATS)
    needs = {
        "text": [text_column],
        "messages": [messages_column],
        "prompt_completion": [prompt_column, completion_column],
    }
    if data_format == "auto":
        found = [fmt for fmt, cols in needs.items() if all(c in columns for c in cols)]
        if not found:
            raise HfCompressError(
                f"{where} has none of the columns a causal LM reads: {text_column!r} (plain text), "
                f"{messages_column!r} (chat) or {prompt_column!r} + {completion_column!r}; it has "
                f"{', '.join(columns)}"
            )
        return "messages" if "messages" in found else found[0]
    missing = [c for c in needs[data_format] if c not in columns]
    if missing:
        raise HfCompressError(
            f"{where} has no {', '.join(map(repr, missing))} column for data_format {data_format!r}; it has "
            f"{', '.join(columns)}"
        )
    return data_format


def _render(tokenizer, messages: list[dict], where: str, generation_prompt: bool = False) -> str:
    """The chat template's text for ``messages``; a template that refuses them (Gemma's "System role not
    supported", Mistral's alternation check) is a one-line error naming the template and the roles."""
    if not messages:
        return ""
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except TemplateError as err:
        roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
        raise HfCompressError(
            f"{where}: the chat template of {tokenizer.name_or_path or 'the tokenizer'!r} refuses a conversation "
            f"with roles {roles}: {err}"
        ) from None


# Two stand-ins for an assistant turn's content that differ in their first and in their last character, so
# that for any real content at least one of them differs from it at each end (see ``assistant_spans``).
_SENTINELS = ("\u2402hfcA\u2403", "\u2404hfcB\u2405")


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _common_suffix(a: str, b: str) -> int:
    return _common_prefix(a[::-1], b[::-1])


def _with_content(messages: list[dict], i: int, content: str) -> list[dict]:
    return [*messages[:i], {**messages[i], "content": content}, *messages[i + 1 :]]


def assistant_spans(tokenizer, messages: list[dict], full: str, turns: list[int], where: str):
    """For each assistant turn ``i`` in ``turns``: (start, end, closing end) character offsets in ``full``, the
    rendered conversation. [start, end) is what the template made of the turn's content, wherever it put it
    and whatever it did to it (Qwen3 keeps only the answer of earlier turns, Gemma trims, Mistral moves the
    system message into the last user turn): the conversation is rendered again with the content replaced by
    each of two sentinels, and the characters that change are the content's. [end, closing end) is the turn's
    end-of-turn marker: what the template writes after the content when the turn is the conversation's last,
    as far as ``full`` agrees with it (``<|end|>`` of Phi-3's ``<|end|>\\n<|endoftext|>`` mid-conversation).
    The generation prompt (``<|im_start|>assistant\\n``) is context, not a label, as in TRL."""
    spans = []
    for i in turns:
        renders = [_render(tokenizer, _with_content(messages, i, s), where) for s in _SENTINELS]
        start = min(_common_prefix(full, r) for r in renders)
        end = len(full) - min(_common_suffix(full, r) for r in renders)
        last = _render(tokenizer, _with_content(messages[: i + 1], i, _SENTINELS[0]), where)
        at = last.rfind(_SENTINELS[0])
        if end < start or at < 0:
            raise HfCompressError(
                f"{where}: the chat template of {tokenizer.name_or_path or 'the tokenizer'!r} does not render "
                f"assistant turn {i} where its content goes, so its tokens can't be found; set "
                "completion_only_loss false to count every token"
            )
        closing = last[at + len(_SENTINELS[0]) :]
        spans.append((start, end, end + _common_prefix(closing, full[end:])))
    return spans


def text_example(tokenizer, text: str) -> dict:
    """One document's tokens, after BOS where the tokenizer starts text with one (``bos_prefix``) and followed
    by EOS; every token is a label."""
    ids = bos_prefix(tokenizer) + tokenizer(text, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        ids = ids + [tokenizer.eos_token_id]
    return {"input_ids": ids, "labels": list(ids)}


def chat_example(tokenizer, messages: list[dict], completion_only: bool, where: str, first_label: int = 0) -> dict:
    """``input_ids`` and ``labels`` of one conversation; labels are -100 outside the assistant turns at index
    ``first_label`` or later (a prompt's own assistant turns are context). A content token counts when it
    starts in the turn's content, an end-of-turn token when it lies wholly in the marker."""
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    turns = [i for i, role in enumerate(roles) if role == "assistant" and i >= first_label]
    if not turns:
        raise HfCompressError(
            f"{where}: the conversation has no assistant turn to learn from (roles {roles}); every row needs one"
        )
    full = _render(tokenizer, messages, where)
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = encoded["input_ids"]
    if not completion_only:
        return {"input_ids": ids, "labels": list(ids)}
    spans = assistant_spans(tokenizer, messages, full, turns, where)
    labels = [
        token if any(a <= start < b or (b <= start and stop <= c) for a, b, c in spans) else IGNORE
        for token, (start, stop) in zip(ids, encoded["offset_mapping"])
    ]
    return {"input_ids": ids, "labels": labels}


def prompt_completion_example(tokenizer, prompt, completion, completion_only: bool, where: str) -> dict:
    """``input_ids`` and ``labels`` of one prompt/completion pair (strings, or message lists: a chat)."""
    if isinstance(prompt, list) and isinstance(completion, list):
        return chat_example(tokenizer, prompt + completion, completion_only, where, first_label=len(prompt))
    if not isinstance(prompt, str) or not isinstance(completion, str):
        raise HfCompressError(
            f"{where}: prompt and completion must both be strings or both lists of messages, got "
            f"{type(prompt).__name__} and {type(completion).__name__}"
        )
    prompt_ids = tokenizer(prompt)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        completion_ids = completion_ids + [tokenizer.eos_token_id]
    labels = ([IGNORE] * len(prompt_ids) if completion_only else list(prompt_ids)) + completion_ids
    return {"input_ids": prompt_ids + completion_ids, "labels": labels}


def _fit(example: dict, block_size: int, where: str) -> tuple[dict, bool]:
    """The example cut to ``block_size`` tokens (True when cut); a prompt that leaves no room is an error."""
    ids, labels = example["input_ids"], example["labels"]
    if len(ids) <= block_size:
        return example, False
    first_label = next((i for i, label in enumerate(labels) if label != IGNORE), len(labels))
    if first_label >= block_size:
        raise HfCompressError(
            f"{where}: the prompt is {first_label} tokens, at least the context of {block_size} tokens "
            "(block_size), so no completion token would remain; shorten the prompt or raise block_size"
        )
    return {"input_ids": ids[:block_size], "labels": labels[:block_size]}, True


def _pack(batch: dict, block_size: int) -> dict:
    """Concatenate a batch of rows and cut it into ``block_size`` blocks; the remainder is dropped."""
    ids = [t for row in batch["input_ids"] for t in row]
    labels = [t for row in batch["labels"] for t in row]
    count = len(ids) // block_size
    blocks = [slice(i * block_size, (i + 1) * block_size) for i in range(count)]
    return {
        "input_ids": [ids[s] for s in blocks],
        "attention_mask": [[1] * block_size for _ in blocks],
        "labels": [labels[s] for s in blocks],
    }


def lm_examples(
    dataset: datasets.Dataset,
    tokenizer,
    block_size: int,
    *,
    data_format: str = "auto",
    packing: bool = False,
    completion_only_loss: bool = True,
    text_column: str = "text",
    messages_column: str = "messages",
    prompt_column: str = "prompt",
    completion_column: str = "completion",
    max_tokens: int | None = None,
    num_proc: int | None = None,
    where: str = "the dataset",
) -> datasets.Dataset:
    """Rows of ``input_ids``, ``attention_mask`` and ``labels`` for a causal LM (see the module docstring).

    Text is always packed into blocks; chat and prompt/completion rows are packed only with ``packing``, else
    cut to ``block_size`` (a cut is logged; a prompt that fills the context is an error). ``max_tokens`` keeps
    the first rows (blocks) whose tokens fit in it.
    """
    if len(dataset) == 0:
        raise HfCompressError(f"{where} is empty; a causal LM needs at least one row")
    fmt = detect_format(dataset.column_names, data_format, text_column, messages_column, prompt_column,
                        completion_column, where)  # fmt: skip
    if fmt == "messages" and not getattr(tokenizer, "chat_template", None):
        raise HfCompressError(
            f"{where} holds chat messages but the tokenizer has no chat template; use an instruct/chat "
            "tokenizer, set tokenizer.chat_template, or give prompt/completion columns of plain text"
        )

    def tokenize(batch: dict, indices: list[int]) -> dict:
        out = {"input_ids": [], "labels": [], "cut": []}
        for k, row in enumerate(indices):
            at = f"{where} row {row}"
            if fmt == "text":
                example = text_example(tokenizer, batch[text_column][k])
            elif fmt == "messages":
                example = chat_example(tokenizer, batch[messages_column][k], completion_only_loss, at)
            else:
                example = prompt_completion_example(tokenizer, batch[prompt_column][k], batch[completion_column][k],
                                                    completion_only_loss, at)  # fmt: skip
            cut = False
            if fmt != "text" and not packing:  # text and packed rows are windows over a stream: nothing to cut
                example, cut = _fit(example, block_size, at)
            out["input_ids"].append(example["input_ids"])
            out["labels"].append(example["labels"])
            out["cut"].append(cut)
        return out

    try:
        rows = dataset.map(
            tokenize, batched=True, with_indices=True, num_proc=num_proc, remove_columns=dataset.column_names,
            desc="Tokenizing",
        )  # fmt: skip
    except Exception as err:  # a worker's HfCompressError may arrive wrapped
        cause = err
        while cause is not None and not isinstance(cause, HfCompressError):
            cause = cause.__cause__ or cause.__context__
        raise (cause or err) from None
    cut = sum(rows["cut"])
    if cut:
        logger.warning("%s: %d of %d rows were longer than block_size %d and were cut", where, cut, len(rows),
                       block_size)  # fmt: skip
    rows = rows.remove_columns("cut")
    if fmt == "text" or packing:
        # one process: workers would each drop their own remainder, so blocks would depend on num_proc
        rows = rows.map(_pack, batched=True, batch_size=1000, fn_kwargs={"block_size": block_size}, desc="Packing")
    else:
        rows = rows.map(lambda row: {"attention_mask": [1] * len(row["input_ids"])})
    if max_tokens is not None:
        lengths = [len(ids) for ids in rows["input_ids"]]
        total, keep = 0, 0
        while keep < len(lengths) and total + lengths[keep] <= max_tokens:
            total += lengths[keep]
            keep += 1
        rows = rows.select(range(keep))
    if len(rows) == 0:
        raise HfCompressError(
            f"{where} gives no row of training tokens: fewer tokens than one block of {block_size}, or max_tokens "
            "too small"
        )
    return rows


def load_lm_data(
    name_or_path: str,
    data_format: str = "auto",
    text_column: str = "text",
    messages_column: str = "messages",
    prompt_column: str = "prompt",
    completion_column: str = "completion",
) -> tuple[datasets.DatasetDict, str]:
    """(the dataset's splits, its format): a Hub id, a local file or folder (JSONL/CSV/parquet/txt), or an
    offline asset. Every split must hold rows and the columns of one format (read off the train split)."""
    from .loading import load_raw

    raw, _ = load_raw(name_or_path)
    for split, dataset in raw.items():
        if len(dataset) == 0:
            raise HfCompressError(f"the {split} split of {name_or_path!r} is empty; give it at least one row")
    first = "train" if "train" in raw else next(iter(raw))
    fmt = detect_format(raw[first].column_names, data_format, text_column, messages_column, prompt_column,
                        completion_column, f"{name_or_path!r} ({first})")  # fmt: skip
    for split, dataset in raw.items():
        detect_format(dataset.column_names, fmt, text_column, messages_column, prompt_column, completion_column,
                      f"{name_or_path!r} ({split})")  # fmt: skip
    return raw, fmt


def lm_columns(data_args) -> dict[str, str]:
    """The column names an ``LMDataArguments`` gives, by role."""
    return {
        "text": data_args.text_column, "messages": data_args.messages_column,
        "prompt": data_args.prompt_column, "completion": data_args.completion_column,
    }  # fmt: skip


def first_training_rows(raw: datasets.DatasetDict, data_args) -> datasets.Dataset:
    """The training split's first ``max_train_samples`` rows (all when unset), before tokenization."""
    train = raw["train"]
    limit = data_args.max_train_samples
    return train if limit is None else train.select(range(min(limit, len(train))))


def lm_split_rows(raw: datasets.DatasetDict, fmt: str, tokenizer, data_args, splits=("train", "validation")):
    """``lm_examples`` of each split with an ``LMDataArguments``' settings: the first ``max_train_samples``
    training rows and ``max_train_tokens`` training tokens; ``max_eval_tokens`` for the other splits."""
    columns = lm_columns(data_args)
    out = {}
    for split in splits:
        if split not in raw:
            raise HfCompressError(f"{data_args.dataset_name!r} has no {split!r} split; it has {', '.join(raw)}")
        data = first_training_rows(raw, data_args) if split == "train" else raw[split]
        out[split] = lm_examples(
            data, tokenizer, data_args.block_size, data_format=fmt, packing=data_args.packing,
            completion_only_loss=data_args.completion_only_loss, text_column=columns["text"],
            messages_column=columns["messages"], prompt_column=columns["prompt"],
            completion_column=columns["completion"],
            max_tokens=data_args.max_train_tokens if split == "train" else data_args.max_eval_tokens,
            num_proc=data_args.num_proc, where=f"{data_args.dataset_name!r} ({split})",
        )  # fmt: skip
    return out
