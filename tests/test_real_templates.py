"""Every claimed family's real tokenizer and chat template (llama.cpp's test vocabularies and templates, the
``llama_cpp_vocab`` asset) through the LM data path: a single turn, a system prompt and two turns each. The
labelled characters, read back from the token offsets, must be exactly each assistant turn's content and its
end-of-turn marker: nothing of the system or user text, nothing of the generation prompt."""

import pytest
from conftest import llama_cpp_models_dir, real_chat_tokenizer

from hfcompress import HfCompressError
from hfcompress.asset_builders import VOCAB_FIXES, vocab_test_cases
from hfcompress.data.lm_examples import IGNORE, chat_example, prompt_completion_example

# The distills' and Granite's own chat tokens, added to the base vocabulary as their tokenizers add them.
_DEEPSEEK = ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>")
_GRANITE = ("<|start_of_role|>", "<|end_of_role|>", "<|end_of_text|>")
_MISTRAL = ("[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]")

# template -> (vocabulary, end-of-turn marker mid-conversation, marker after the last turn, extra special tokens)
# The Gemma 2 template runs on Llama 2's SentencePiece vocabulary with Gemma's two turn tokens added: llama.cpp
# ships only Gemma 4's vocabulary, which transformers 4.57 can't read (docs/causal_lm.md).
TEMPLATES = {
    "meta-llama-Llama-3.1-8B-Instruct": ("llama-bpe", "<|eot_id|>", "<|eot_id|>", ()),
    "meta-llama-Llama-3.2-3B-Instruct": ("llama-bpe", "<|eot_id|>", "<|eot_id|>", ()),
    "meta-llama-Llama-3.3-70B-Instruct": ("llama-bpe", "<|eot_id|>", "<|eot_id|>", ()),
    "HuggingFaceTB-SmolLM3-3B": ("llama-bpe", "<|im_end|>\n", "<|im_end|>\n", ()),
    "deepseek-ai-DeepSeek-R1-Distill-Llama-8B": ("llama-bpe", "<｜end▁of▁sentence｜>", "<｜end▁of▁sentence｜>", _DEEPSEEK),
    "Qwen-Qwen2.5-7B-Instruct": ("qwen2", "<|im_end|>\n", "<|im_end|>\n", ()),
    "Qwen-Qwen3-0.6B": ("qwen2", "<|im_end|>\n", "<|im_end|>\n", ()),
    "Qwen-QwQ-32B": ("qwen2", "<|im_end|>\n", "<|im_end|>\n", ()),
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B": ("qwen2", "<｜end▁of▁sentence｜>", "<｜end▁of▁sentence｜>", _DEEPSEEK),
    "google-gemma-2-2b-it": ("llama-spm", "<end_of_turn>\n", "<end_of_turn>\n", ("<start_of_turn>", "<end_of_turn>")),
    "microsoft-Phi-3.5-mini-instruct": ("phi-3", "<|end|>\n", "<|end|>\n<|endoftext|>", ()),
    "mistralai-Mistral-Nemo-Instruct-2407": ("llama-spm", "</s>", "</s>", _MISTRAL),
    "Mistral-Small-3.2-24B-Instruct-2506": ("llama-spm", "</s>", "</s>", _MISTRAL),
    "ibm-granite-granite-3.3-2B-Instruct": ("starcoder", "<|end_of_text|>\n", "<|end_of_text|>\n", _GRANITE),
}

SYSTEM = {"role": "system", "content": "You are a helpful assistant who writes like Jane Austen."}
ASK = {"role": "user", "content": "Who is Mr Darcy?"}
ANSWER = {"role": "assistant", "content": "A proud gentleman of Derbyshire."}
ASK2 = {"role": "user", "content": "And Elizabeth?"}
ANSWER2 = {"role": "assistant", "content": "His match in wit, at last."}
CONVERSATIONS = {
    "single": [ASK, ANSWER],
    "system": [SYSTEM, ASK, ANSWER],
    "two_turns": [SYSTEM, ASK, ANSWER, ASK2, ANSWER2],
}
# what the template refuses, with the words of its own error
REFUSED = {("google-gemma-2-2b-it", "system"): "System role not supported",
           ("google-gemma-2-2b-it", "two_turns"): "System role not supported"}  # fmt: skip


def labelled_runs(tokenizer, example) -> list[str]:
    """The labelled characters of the rendered conversation, as runs of consecutive labelled tokens (read from
    the offsets of a fresh tokenization, not from the labelling code)."""
    text = tokenizer.apply_chat_template(example["messages"], tokenize=False)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    assert encoded["input_ids"] == example["input_ids"]
    runs, current, previous = [], None, False
    for label, (start, stop) in zip(example["labels"], encoded["offset_mapping"]):
        if label != IGNORE:
            current = (current[0], stop) if previous else (start, stop)
        elif previous:
            runs.append(text[current[0] : current[1]])
        previous = label != IGNORE
    if previous:
        runs.append(text[current[0] : current[1]])
    return runs


@pytest.mark.parametrize("vocab", sorted(VOCAB_FIXES))
def test_converted_tokenizers_give_llama_cpps_ids_for_its_test_strings(vocab):
    tokenizer = real_chat_tokenizer(vocab)
    cases = vocab_test_cases(llama_cpp_models_dir(), vocab)
    assert len(cases) >= 30
    wrong = [text for text, ids in cases if tokenizer(text, add_special_tokens=False)["input_ids"] != ids]
    assert wrong == []


@pytest.mark.parametrize("shape", sorted(CONVERSATIONS))
@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_real_templates_label_exactly_the_assistant_turns(template, shape):
    vocab, marker, last_marker, extra = TEMPLATES[template]
    tokenizer = real_chat_tokenizer(vocab, template, extra)
    messages = CONVERSATIONS[shape]
    if (template, shape) in REFUSED:
        with pytest.raises(HfCompressError, match=REFUSED[template, shape]) as err:
            chat_example(tokenizer, messages, True, "row 0")
        assert "\n" not in str(err.value) and template in str(err.value)
        return
    example = {"messages": messages, **chat_example(tokenizer, messages, True, "row 0")}
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    expected = [content + marker for content in answers[:-1]] + [answers[-1] + last_marker]
    assert labelled_runs(tokenizer, example) == expected
    # every token of the conversation counts when completion_only_loss is off, whatever the template
    everything = chat_example(tokenizer, messages, False, "row 0")
    assert everything["labels"] == everything["input_ids"] == example["input_ids"]


@pytest.mark.parametrize("template", ["Qwen-Qwen3-0.6B", "Qwen-QwQ-32B", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B"])
def test_reasoning_templates_label_what_they_render_of_each_turn(template):
    """Reasoning templates drop the think block of earlier turns (and R1's of every turn): the labels follow
    the rendering, so an earlier turn teaches its answer and the last one what the template keeps of it."""
    vocab, marker, _, extra = TEMPLATES[template]
    tokenizer = real_chat_tokenizer(vocab, template, extra)
    thinking = [ASK, {"role": "assistant", "content": "<think>\nHe is rich.\n</think>\n\nA proud gentleman."},
                ASK2, {"role": "assistant", "content": "<think>\nShe is clever.\n</think>\n\nHis match in wit."}]  # fmt: skip
    example = {"messages": thinking, **chat_example(tokenizer, thinking, True, "row 0")}
    text = tokenizer.apply_chat_template(thinking, tokenize=False)
    runs = labelled_runs(tokenizer, example)
    # R1's template keeps the newlines after </think> in what it renders of an earlier answer
    assert runs[0].lstrip("\n") == "A proud gentleman." + marker and runs[0] in text and "He is rich" not in text
    last = "\n\nHis match in wit." if "She is clever" not in text else "She is clever.\n</think>\n\nHis match in wit."
    assert runs[1].endswith(last + marker) and runs[1] in text and "And Elizabeth" not in runs[1]


@pytest.mark.parametrize("template", ["Qwen-Qwen2.5-7B-Instruct", "meta-llama-Llama-3.1-8B-Instruct",
                                      "microsoft-Phi-3.5-mini-instruct"])  # fmt: skip
def test_a_prompts_own_assistant_turns_are_context(template):
    vocab, marker, last_marker, extra = TEMPLATES[template]
    tokenizer = real_chat_tokenizer(vocab, template, extra)
    prompt, completion = [ASK, ANSWER, ASK2], [ANSWER2]
    example = {"messages": prompt + completion,
               **prompt_completion_example(tokenizer, prompt, completion, True, "row 0")}  # fmt: skip
    assert labelled_runs(tokenizer, example) == [ANSWER2["content"] + last_marker]
