"""Measurements for causal language models: perplexity, bits per byte, generation and prompt speed.

Perplexity follows the Transformers docs' strided sliding window: windows of ``max_length`` tokens that
advance by ``stride``; in each window only the tokens not scored by an earlier window are targets (the rest
is context, label -100), and the token count leaves out the one position per window that the shift drops.
Bits per byte divide the same total negative log-likelihood by ln 2 and by the UTF-8 bytes of the text
those tokens cover, so models with different tokenizers compare.

Speeds are medians of ``runs`` timed calls after one untimed warm-up, in ``torch.inference_mode``: greedy
generation tokens/s at batch 1 (``max_new_tokens`` forced, so every model produces as many) and prompt
processing tokens/s at batch 8 (one forward over the prompt, as a prefill). Works with PyTorch models and
Optimum's ``ORTModelForCausalLM`` (the loss is computed here from the logits, not by the model).
"""

from __future__ import annotations

import math
import statistics
import time

import torch


def _device(model) -> torch.device:
    if hasattr(model, "eval"):
        model.eval()
    return getattr(model, "device", None) or torch.device("cpu")


def next_token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    """(summed NLL in nats, number of targets) of position i predicting label i + 1; -100 labels don't count."""
    targets = labels[:, 1:].to(logits.device)
    nll = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum"
    )
    return float(nll), int((targets != -100).sum())


def encode_text(tokenizer, text: str, max_tokens: int | None = None) -> tuple[torch.Tensor, list[int]]:
    """(token ids ``(1, T)``: the tokenizer's BOS where it starts text with one (``bos_prefix``), then the text's
    tokens, ``max_tokens`` in all; the UTF-8 bytes each token accounts for: the text from the end of the token
    before it to its own end, 0 for the BOS. The first text token's bytes count only after a BOS, since
    otherwise no window predicts it)."""
    from ..data.lm_examples import bos_prefix

    prefix = bos_prefix(tokenizer)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = prefix + encoded["input_ids"], [(0, 0)] * len(prefix) + encoded["offset_mapping"]
    if max_tokens is not None:
        ids, offsets = ids[:max_tokens], offsets[:max_tokens]
    if len(ids) < 2:
        raise ValueError("perplexity needs a text of at least two tokens")
    ends = [end for _, end in offsets]
    token_bytes = [0] + [len(text[a:b].encode("utf-8")) for a, b in zip(ends[:-1], ends[1:])]
    return torch.tensor([ids]), token_bytes


def strided_windows(length: int, max_length: int, stride: int):
    """The windows strided perplexity scores, as ``(begin, end, previous_end)``: ``max_length`` tokens starting
    every ``stride``, up to the one that reaches ``length``; tokens before ``previous_end`` were scored by an
    earlier window and are context only."""
    previous_end = 0
    for begin in range(0, length, stride):
        end = min(begin + max_length, length)
        yield begin, end, previous_end
        previous_end = end
        if end == length:
            return


@torch.inference_mode()
def strided_perplexity(
    model, tokenizer, text: str, max_length: int = 512, stride: int = 256, max_tokens: int | None = None
) -> dict[str, float]:
    """Perplexity, bits per byte, mean NLL (nats/token) and the token and byte counts over ``text``.

    Bits per byte divide the NLL by the bytes of exactly the tokens scored: with ``stride == max_length`` the
    first token of each window is context only (nothing predicts it), and its bytes are left out too.
    """
    if not 0 < stride <= max_length:
        raise ValueError(f"stride must be in (0, max_length={max_length}], got {stride}")
    device = _device(model)
    ids, token_bytes = encode_text(tokenizer, text, max_tokens)
    length = ids.shape[1]
    nll_sum, n_tokens, n_bytes = 0.0, 0, 0
    for begin, end, previous_end in strided_windows(length, max_length, stride):
        target_length = end - previous_end  # tokens not scored before (the first window: all of them)
        window = ids[:, begin:end].to(device)
        targets = window.clone()
        targets[:, :-target_length] = -100
        logits = model(input_ids=window, attention_mask=torch.ones_like(window)).logits
        scored = (targets[0, 1:] != -100).nonzero().flatten().tolist()  # i predicts i + 1: one target fewer
        nll, count = next_token_nll(logits, targets)
        nll_sum += nll
        n_tokens += count
        n_bytes += sum(token_bytes[begin + 1 + j] for j in scored)
    mean_nll = nll_sum / n_tokens
    return {
        "perplexity": math.exp(mean_nll),
        "bits_per_byte": nll_sum / math.log(2) / n_bytes,
        "nll_per_token": mean_nll,
        "tokens": n_tokens,
        "bytes": n_bytes,
    }


@torch.inference_mode()
def chunked_perplexity(model, tokenizer, text: str, context: int, chunks: int | None = None) -> dict[str, float]:
    """Perplexity as ``llama-perplexity`` scores it, computed with a transformers model: the text's tokens (with
    the tokenizer's special tokens, as llama.cpp adds its BOS) cut into chunks of ``context``; each chunk's first
    token is the BOS when the tokenizer adds one; each chunk's second half is scored. The same figure a GGUF of
    the model gives in llama.cpp, up to the file's rounding."""
    device = _device(model)
    ids = tokenizer(text, return_tensors="pt")["input_ids"][0]
    bos = ids[0].item() if tokenizer.bos_token_id is not None and ids[0].item() == tokenizer.bos_token_id else None
    count = len(ids) // context if chunks is None else min(chunks, len(ids) // context)
    if len(ids) < 2 * context:
        raise ValueError(f"llama-perplexity needs at least {2 * context} tokens for a context of {context}, got {len(ids)}")
    first, nll_sum, n_tokens = context // 2, 0.0, 0
    for i in range(count):
        chunk = ids[i * context : (i + 1) * context].clone()
        if bos is not None:
            chunk[0] = bos
        chunk = chunk[None].to(device)
        logits = model(input_ids=chunk, attention_mask=torch.ones_like(chunk)).logits.float()
        log_probs = torch.log_softmax(logits[0, first : context - 1], dim=-1)
        nll_sum -= log_probs.gather(-1, chunk[0, first + 1 :, None]).sum().item()
        n_tokens += context - 1 - first
    return {"perplexity": math.exp(nll_sum / n_tokens), "tokens": n_tokens, "chunks": count}


@torch.inference_mode()
def rows_nll(model, rows, tokenizer, batch_size: int = 8) -> tuple[list[float], list[int]]:
    """Per row of tokenized ``rows`` (``lm_examples``): the summed next-token NLL (nats) of its label tokens and
    how many there are; what a paired bootstrap over rows resamples."""
    from ..data import DistillationDataCollator

    device = _device(model)
    collate = DistillationDataCollator(tokenizer)
    nll, tokens = [], []
    for start in range(0, len(rows), batch_size):
        batch = collate([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        logits = model(input_ids=ids, attention_mask=mask).logits
        for k in range(ids.shape[0]):
            row_nll, count = next_token_nll(logits[k : k + 1], batch["labels"][k : k + 1])
            nll.append(row_nll)
            tokens.append(count)
    return nll, tokens


def rows_perplexity(model, rows, tokenizer, batch_size: int = 8) -> dict[str, float]:
    """Perplexity over the label tokens of tokenized rows (``lm_examples``): for chat and prompt/completion
    data, the completion perplexity (only assistant/completion tokens are labels)."""
    nll, tokens = rows_nll(model, rows, tokenizer, batch_size)
    return perplexity_of((nll, tokens)) | {"nll_per_token": sum(nll) / max(sum(tokens), 1), "tokens": sum(tokens)}


def perplexity_of(prediction) -> dict[str, float]:
    """``{"perplexity": ...}`` of ``(per-row NLL sums, per-row token counts)``: exp of the total NLL over the total
    tokens (a ``compute_metrics`` for ``paired_bootstrap`` over rows)."""
    nll, tokens = prediction
    total = float(sum(tokens))
    if total == 0:
        raise ValueError("no label tokens to score: every label is -100")
    return {"perplexity": math.exp(float(sum(nll)) / total)}


def speed_prompts(tokenizer, text, batch_size: int = 8, length: int = 256) -> torch.Tensor:
    """``(batch_size, length)`` consecutive token windows of a text (or of a list of token ids), for the speed
    measurements."""
    ids = text if isinstance(text, list) else tokenizer(text, add_special_tokens=False)["input_ids"]
    needed = batch_size * length
    if len(ids) < needed:
        raise ValueError(f"speed prompts need {needed} tokens of text, got {len(ids)}")
    return torch.tensor(ids[:needed]).view(batch_size, length)


def _synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _seconds(call, device="cpu") -> float:
    """Wall time of ``call``; CUDA work is waited for before the clock starts and stops."""
    _synchronize(device)
    start = time.perf_counter()
    call()
    _synchronize(device)
    return time.perf_counter() - start


def compare_language_models(
    entries,
    tokenizer,
    texts: dict[str, str],
    window: int,
    stride: int,
    max_tokens: int | None,
    generate_tokens: int = 32,
    prompt_batch_size: int = 8,
    runs: int = 3,
    rows: dict | None = None,
) -> list[dict]:
    """One row per ``(name, model, folder)``: parameters, size on disk, ``<text>_perplexity`` and
    ``<text>_bits_per_byte`` for each named text (strided windows), ``<split>_perplexity`` for each named set of
    tokenized ``rows`` (completion perplexity of chat or prompt/completion data), and speeds measured with the
    models taking turns (one warm-up each, then ``runs`` rounds; medians), so noise on a shared machine hits
    them alike. Speed prompts come from the test text, else from the rows' tokens."""
    from ..errors import HfCompressError
    from ..modeling import count_parameters
    from .measure import size_on_disk

    engines = {name: (str(model.dtype), str(_device(model))) for name, model, _ in entries}
    if len(set(engines.values())) > 1:
        raise HfCompressError(
            f"models compared in different dtypes or on different devices ({engines}): put them in one dtype on "
            "one device, or the comparison measures the precision, not the compression"
        )
    rows = rows or {}
    results = []
    for name, model, folder in entries:
        row = {"model": name, "parameters": count_parameters(model), "size_mb": size_on_disk(folder) / 1e6,
               "dtype": engines[name][0].replace("torch.", "")}  # fmt: skip
        for split, text in texts.items():
            result = strided_perplexity(model, tokenizer, text, window, stride, max_tokens)
            row |= {f"{split}_{k}": result[k] for k in ("perplexity", "bits_per_byte", "tokens")}
        for split, examples in rows.items():
            result = rows_perplexity(model, examples, tokenizer)
            row |= {f"{split}_{k}": result[k] for k in ("perplexity", "tokens")}
        results.append(row)
    if texts:
        speed_source = texts.get("test") or next(iter(texts.values()))
    else:
        speed_source = [t for examples in rows.values() for r in examples["input_ids"] for t in r]
    speeds = interleaved_speeds([m for _, m, _ in entries], tokenizer, speed_source, window, generate_tokens,
                                prompt_batch_size, runs)  # fmt: skip
    for row, speed in zip(results, speeds):
        row |= speed
    return results


def generation_call(model, prompt: torch.Tensor, new_tokens: int, pad_token_id: int | None):
    """Greedy decoding of exactly ``new_tokens`` tokens with the KV cache."""
    return model.generate(
        input_ids=prompt,
        attention_mask=torch.ones_like(prompt),
        do_sample=False,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        pad_token_id=pad_token_id,
    )


def _speed_calls(model, prompts: torch.Tensor, generate_tokens: int, pad: int | None):
    """The two timed calls of one model (greedy decoding at batch 1 from a 32-token prompt; a prefill of the
    prompt batch), on the model's device, after one warm-up of each."""
    device = _device(model)
    on_device = prompts.to(device)  # inputs where the model is: CUDA models too
    generate = lambda: generation_call(model, on_device[:1, :32], generate_tokens, pad)  # noqa: E731
    prefill = lambda: model(input_ids=on_device, attention_mask=torch.ones_like(on_device))  # noqa: E731
    with torch.inference_mode():
        generate(), prefill()  # warm-up
    return generate, prefill, device


def _spread(rates: list[float]) -> float:
    """How far the rounds of one figure lie apart: (largest - smallest) / median."""
    return (max(rates) - min(rates)) / statistics.median(rates)


def _speed_row(gen_times, prefill_times, generate_tokens, prompt_tokens, prompt_batch_size, device) -> dict:
    generate_rates = [generate_tokens / t for t in gen_times]
    prompt_rates = [prompt_tokens / t for t in prefill_times]
    return {
        "generate_tokens_per_s_b1": generate_tokens / statistics.median(gen_times),
        "prompt_tokens_per_s": prompt_tokens / statistics.median(prefill_times),
        "generate_spread": _spread(generate_rates),
        "prompt_spread": _spread(prompt_rates),
        "generate_tokens_per_s_rounds": generate_rates,
        "prompt_batch_size": prompt_batch_size,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }


def interleaved_speeds(
    models,
    tokenizer,
    text: str,
    window: int,
    generate_tokens: int = 32,
    prompt_batch_size: int = 8,
    runs: int = 3,
    reload: bool = False,
) -> list[dict]:
    """Greedy tokens/s at batch 1 (a 32-token prompt) and prompt tokens/s at ``prompt_batch_size`` x ``window``,
    the models taking turns: one warm-up each, then ``runs`` rounds; medians, and each figure's spread over the
    rounds ((largest - smallest) / median). ``text`` may be token ids. With ``reload``, ``models`` are loaders
    (no-argument functions returning a model): each is loaded for its turn, warmed up and released, so one
    model is in memory at a time (an 8B teacher in fp32 is 32 GB) while the rounds still interleave."""
    import gc

    prompts = speed_prompts(tokenizer, text, prompt_batch_size, window)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    held = None if reload else [_speed_calls(m, prompts, generate_tokens, pad) for m in models]
    timings = [([], [], None) for _ in models]
    for _ in range(runs):
        for i, (gen_times, prefill_times, _) in enumerate(timings):
            if reload:
                model = models[i]()
                generate, prefill, device = _speed_calls(model, prompts, generate_tokens, pad)
            else:
                generate, prefill, device = held[i]
            with torch.inference_mode():
                gen_times.append(_seconds(generate, device))
                prefill_times.append(_seconds(prefill, device))
            timings[i] = (gen_times, prefill_times, device)
            if reload:
                del model, generate, prefill
                gc.collect()
    return [
        _speed_row(gen_times, prefill_times, generate_tokens, prompts.numel(), prompt_batch_size, device)
        for gen_times, prefill_times, device in timings
    ]
