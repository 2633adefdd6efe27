"""Text for causal LMs: local .txt/.jsonl folders, token blocks, perplexity windows, bad input."""

import json
import math

import pytest
import torch
from conftest import make_bpe_tokenizer, make_llama

from hfcompress import HfCompressError
from hfcompress.asset_builders import _paragraphs
from hfcompress.data.causal_lm import check_block_size, group_texts, load_lm_texts, split_text
from hfcompress.evaluation.lm import speed_prompts, strided_perplexity

TEXT = "the film was great and the story was fun " * 30


def txt_folder(tmp_path):
    folder = tmp_path / "novels"
    folder.mkdir()
    for split in ("train", "validation", "test"):
        (folder / f"{split}.txt").write_text(TEXT + split)
    return folder


def test_a_txt_folder_is_one_document_per_file_and_cut_into_blocks(tmp_path):
    raw = load_lm_texts(str(txt_folder(tmp_path)))
    assert {s: len(d) for s, d in raw.items()} == {"train": 1, "validation": 1, "test": 1}
    tokenizer = make_bpe_tokenizer(tmp_path / 'bpe')
    blocks = group_texts(raw["train"], tokenizer, 16)
    n_tokens = len(tokenizer(raw["train"]["text"][0], add_special_tokens=False)["input_ids"])
    assert len(blocks) == n_tokens // 16 and blocks[0]["labels"] == blocks[0]["input_ids"]
    assert len(group_texts(raw["train"], tokenizer, 16, max_tokens=40)) == 2
    assert split_text(raw, "test").endswith("test")


def test_jsonl_with_another_column_and_missing_column(tmp_path):
    folder = tmp_path / "jsonl"
    folder.mkdir()
    for split in ("train", "validation", "test"):
        (folder / f"{split}.jsonl").write_text("\n".join(json.dumps({"body": TEXT}) for _ in range(2)))
    assert load_lm_texts(str(folder), "body")["train"].column_names == ["text"]
    with pytest.raises(HfCompressError, match="has no text column 'text' in train; available columns: body"):
        load_lm_texts(str(folder))


def test_block_size_errors():
    with pytest.raises(HfCompressError, match="block_size must be > 0, got 0"):
        check_block_size(0, 512)
    with pytest.raises(HfCompressError, match="longer than the model's 256 positions"):
        check_block_size(512, 256)


def test_paragraphs_join_wrapped_lines():
    assert _paragraphs(["It is a truth", "universally acknowledged.", "", "", "Chapter 2"]) == (
        "It is a truth universally acknowledged.\n\nChapter 2"
    )


def test_strided_perplexity_scores_every_token_once(tmp_path):
    tokenizer = make_bpe_tokenizer(tmp_path / 'bpe')
    model = make_llama(vocab_size=len(tokenizer))
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"][:100]
    text = tokenizer.decode(ids)
    one_window = strided_perplexity(model, tokenizer, text, max_length=128, stride=128)
    strided = strided_perplexity(model, tokenizer, text, max_length=32, stride=16)
    assert one_window["tokens"] == strided["tokens"] == 99  # the first token is never predicted
    # one window over everything equals the model's own loss
    full = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        loss = model(full, labels=full).loss
    assert math.isclose(one_window["perplexity"], math.exp(float(loss)), rel_tol=1e-5)
    assert one_window["bits_per_byte"] == pytest.approx(float(loss) * 99 / math.log(2) / one_window["bytes"])
    assert speed_prompts(tokenizer, text, 2, 8).shape == (2, 8)


def test_continuation_pairs_split_a_paragraph_at_a_sentence():
    from hfcompress.asset_builders import continuation_pairs

    paragraph = ("Emma was rich. " * 5 + '"Indeed!" said she. ' + "Anne was not rich at all, and knew it. " * 4).strip()
    short = "Too short. Really."
    heading = "CHAPTER " + "ONE " * 50
    (pair,) = continuation_pairs("\n\n".join([paragraph, short, heading]), min_words=20)
    opening, rest = pair
    assert opening + " " + rest == paragraph
    assert opening.count(".") + opening.count("!") == 5  # the first half of ten sentences
    assert rest.startswith('"Indeed!" said she.')
