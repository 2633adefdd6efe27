"""Causal LM rows from chat (messages), prompt/completion and text data, with a real BPE tokenizer and a chat
template: which tokens are labels, packing vs padding, datasets.map, and one-line errors on bad input."""

import json

import datasets
import pytest
from conftest import make_bpe_tokenizer

from hfcompress import HfCompressError
from hfcompress.data.lm_examples import lm_examples, load_lm_data

CHAT = [
    {"messages": [{"role": "user", "content": "Continue this passage: Emma was rich."},
                  {"role": "assistant", "content": "She lived at Hartfield."}]},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who?"},
                  {"role": "assistant", "content": "Anne."}, {"role": "user", "content": "And?"},
                  {"role": "assistant", "content": "Wentworth."}]},
]  # fmt: skip


@pytest.fixture
def tokenizer(tmp_path):
    return make_bpe_tokenizer(tmp_path / "tok")


def label_text(tokenizer, row):
    return tokenizer.decode([t for t in row["labels"] if t != -100])


def test_chat_rows_count_only_the_assistant_turns(tokenizer):
    rows = lm_examples(datasets.Dataset.from_list(CHAT), tokenizer, 128)
    assert label_text(tokenizer, rows[0]) == "She lived at Hartfield.<|im_end|>\n"
    assert label_text(tokenizer, rows[1]) == "Anne.<|im_end|>\nWentworth.<|im_end|>\n"
    full = tokenizer.apply_chat_template(CHAT[1]["messages"], tokenize=False)
    assert tokenizer.decode(rows[1]["input_ids"]) == full
    assert rows[1]["attention_mask"] == [1] * len(rows[1]["input_ids"])
    everything = lm_examples(datasets.Dataset.from_list(CHAT), tokenizer, 128, completion_only_loss=False)
    assert everything[1]["labels"] == everything[1]["input_ids"]


def test_prompt_completion_rows_with_bos(tmp_path):
    tokenizer = make_bpe_tokenizer(tmp_path / "bos", bos=True, pad=False)
    data = datasets.Dataset.from_list([{"prompt": "Summarise: Emma was rich.", "completion": " Rich Emma."}])
    (row,) = lm_examples(data, tokenizer, 64)
    assert row["input_ids"][0] == tokenizer.bos_token_id
    assert label_text(tokenizer, row) == " Rich Emma.<|im_end|>"
    prompt_length = len(tokenizer("Summarise: Emma was rich.")["input_ids"])
    assert row["labels"][:prompt_length] == [-100] * prompt_length


def test_conversational_prompt_completion_is_a_chat(tokenizer):
    pair = {"prompt": CHAT[0]["messages"][:1], "completion": CHAT[0]["messages"][1:]}
    ours = lm_examples(datasets.Dataset.from_list([pair]), tokenizer, 128)[0]
    chat = lm_examples(datasets.Dataset.from_list(CHAT[:1]), tokenizer, 128)[0]
    assert ours == chat


def test_packing_concatenates_rows_into_blocks_keeping_their_labels(tokenizer):
    data = datasets.Dataset.from_list(CHAT * 4)
    single = lm_examples(data, tokenizer, 128)
    packed = lm_examples(data, tokenizer, 16, packing=True)  # blocks shorter than a prompt: windows
    stream_ids = [t for row in single["input_ids"] for t in row]
    stream_labels = [t for row in single["labels"] for t in row]
    assert len(packed) == len(stream_ids) // 16
    assert all(len(r) == 16 for r in packed["input_ids"])
    assert [t for r in packed["input_ids"] for t in r] == stream_ids[: len(packed) * 16]
    assert [t for r in packed["labels"] for t in r] == stream_labels[: len(packed) * 16]


def test_long_rows_are_cut_and_max_tokens_keeps_the_first_rows(tokenizer):
    data = datasets.Dataset.from_list(CHAT)
    full = lm_examples(data, tokenizer, 512)
    cut = lm_examples(data, tokenizer, 48)  # rows of 60 and 72 tokens whose prompts are 38 and 36
    assert [len(r) for r in cut["input_ids"]] == [48, 48]
    assert cut[1]["labels"] == full[1]["labels"][:48] and cut[1]["input_ids"] == full[1]["input_ids"][:48]
    first = len(full[0]["input_ids"])
    assert len(lm_examples(data, tokenizer, 512, max_tokens=first)) == 1


def test_text_rows_are_blocks_through_datasets_map_with_workers(tokenizer):
    data = datasets.Dataset.from_list([{"text": "Emma was rich. " * 20}, {"text": "Anne was not. " * 20}])
    one = lm_examples(data, tokenizer, 16)
    two = lm_examples(data, tokenizer, 16, num_proc=2)
    assert one["input_ids"] == two["input_ids"] and one["labels"] == one["input_ids"]
    ids = [t for text in data["text"] for t in tokenizer(text, add_special_tokens=False)["input_ids"] + [2]]
    assert [t for r in one["input_ids"] for t in r] == ids[: len(one) * 16]


def write_split_files(folder, rows_by_split):
    folder.mkdir()
    for split, rows in rows_by_split.items():
        (folder / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder


def test_bad_input_is_one_line_naming_the_data_and_the_row(tmp_path, tokenizer):
    def fails(rows, match, tok=tokenizer, **kwargs):
        with pytest.raises(HfCompressError, match=match) as info:
            lm_examples(datasets.Dataset.from_list(rows), tok, 128, where="chat.jsonl (train)", **kwargs)
        assert "\n" not in str(info.value)

    fails([{"body": "x"}], "chat.jsonl \\(train\\) has none of the columns.*'text'.*'messages'.*it has body")
    fails([{"prompt": "x"}], "no 'completion' column for data_format 'prompt_completion'", data_format="prompt_completion")
    no_answer = [CHAT[0], {"messages": [{"role": "user", "content": "Hello?"}]}]
    fails(no_answer, "chat.jsonl \\(train\\) row 1: the conversation has no assistant turn")
    plain = make_bpe_tokenizer(tmp_path / "plain", chat_template=False)
    fails(CHAT, "holds chat messages but the tokenizer has no chat template", tok=plain)
    long_prompt = [{"prompt": "Emma was rich and clever. " * 10, "completion": "Yes."}]
    fails(long_prompt, "row 0: the prompt is 140 tokens, at least the context of 128 tokens")
    with pytest.raises(HfCompressError, match="is empty"):
        lm_examples(datasets.Dataset.from_dict({"messages": []}), tokenizer, 32)


def test_load_lm_data_reads_a_chat_folder_and_refuses_an_empty_split(tmp_path):
    folder = write_split_files(tmp_path / "chat", {"train": CHAT, "validation": CHAT[:1], "test": CHAT[1:]})
    raw, fmt = load_lm_data(str(folder))
    assert fmt == "messages" and {s: len(d) for s, d in raw.items()} == {"train": 2, "validation": 1, "test": 1}
    (folder / "test.jsonl").write_text("")
    with pytest.raises(HfCompressError, match="test.jsonl is empty"):
        load_lm_data(str(folder))
