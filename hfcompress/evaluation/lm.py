"""Measurements for causal language models: perplexity, bits per byte, generation and prompt speed.

Perplexity follows the Transformers docs' strided sliding window: windows of ``max_length`` tokens that
advance by ``stride``; in each window only the tokens not scored by an earlier window are targets (the rest
is context, label -100), and the token count leaves out the one position per window that the shift drops.
Bits per byte divide the same total negative log-likelihood by ln 2 and by the UTF-8 bytes of the text
those tokens cover, so models with different tokenizers compare.

Speeds are medians of ``runs`` timed calls after one untimed warm-up, in ``torch.inference_mode``: greedy
generation tokens/s at batch 1 (``max_new_tokens`` forced, so every model produces as many) and prompt
processing tokens/s at batch 8 (one forward over the prompt, as a prefill). Works with PyTorch models and
Optimum's ``ORTModelForCausalLM``.
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


def encode_text(tokenizer, text: str, max_tokens: int | None = None) -> tuple[torch.Tensor, int]:
    """(token ids ``(1, T)`` of the text's first ``max_tokens`` tokens, UTF-8 bytes those tokens cover after
    the first one, which no window predicts)."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    if max_tokens is not None:
        ids, offsets = ids[:max_tokens], offsets[:max_tokens]
    if len(ids) < 2:
        raise ValueError("perplexity needs a text of at least two tokens")
    covered = text[offsets[0][1] : offsets[-1][1]]
    return torch.tensor([ids]), len(covered.encode("utf-8"))


@torch.inference_mode()
def strided_perplexity(
    model, tokenizer, text: str, max_length: int = 512, stride: int = 256, max_tokens: int | None = None
) -> dict[str, float]:
    """Perplexity, bits per byte, mean NLL (nats/token) and the token and byte counts over ``text``."""
    if not 0 < stride <= max_length:
        raise ValueError(f"stride must be in (0, max_length={max_length}], got {stride}")
    device = _device(model)
    ids, n_bytes = encode_text(tokenizer, text, max_tokens)
    length = ids.shape[1]
    nll_sum, n_tokens, previous_end = 0.0, 0, 0
    for begin in range(0, length, stride):
        end = min(begin + max_length, length)
        target_length = end - previous_end  # tokens not scored before (the first window: all of them)
        window = ids[:, begin:end].to(device)
        targets = window.clone()
        targets[:, :-target_length] = -100
        loss = model(input_ids=window, labels=targets).loss
        counted = int((targets[:, 1:] != -100).sum())  # the model shifts labels: one target fewer
        nll_sum += float(loss) * counted
        n_tokens += counted
        previous_end = end
        if end == length:
            break
    mean_nll = nll_sum / n_tokens
    return {
        "perplexity": math.exp(mean_nll),
        "bits_per_byte": nll_sum / math.log(2) / n_bytes,
        "nll_per_token": mean_nll,
        "tokens": n_tokens,
        "bytes": n_bytes,
    }


def _median_seconds(call, runs: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.inference_mode()
def generation_tokens_per_second(
    model, prompt_ids: torch.Tensor, max_new_tokens: int = 64, runs: int = 3, pad_token_id: int | None = None
) -> float:
    """Greedy decoding speed at batch 1 with the KV cache: new tokens / median seconds of a generate call."""
    device = _device(model)
    prompt = prompt_ids[:1].to(device)

    def call():
        model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            min_new_tokens=max_new_tokens,
            pad_token_id=pad_token_id,
        )

    return max_new_tokens / _median_seconds(call, runs)


@torch.inference_mode()
def prompt_tokens_per_second(model, prompt_ids: torch.Tensor, runs: int = 3) -> float:
    """Prompt-processing (prefill) speed: tokens of a ``(batch, length)`` forward / median seconds."""
    device = _device(model)
    batch = prompt_ids.to(device)
    mask = torch.ones_like(batch)
    return batch.numel() / _median_seconds(lambda: model(input_ids=batch, attention_mask=mask), runs)


def speed_prompts(tokenizer, text: str, batch_size: int = 8, length: int = 256) -> torch.Tensor:
    """``(batch_size, length)`` consecutive token windows of a text, for the speed measurements."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    needed = batch_size * length
    if len(ids) < needed:
        raise ValueError(f"speed prompts need {needed} tokens of text, got {len(ids)}")
    return torch.tensor(ids[:needed]).view(batch_size, length)
