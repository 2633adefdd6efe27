"""Structured pruning of a Llama-style causal LM: depth, KV groups, FFN neurons, hidden size; plain reload."""

import pytest
import torch
from conftest import make_bert, make_llama, make_lm_blocks, shared_bpe_tokenizer
from transformers import AutoModelForCausalLM

from hfcompress import HfCompressError
from hfcompress.data import DistillationDataCollator
from hfcompress.pruning import StructuredPruningConfig, block_influence
from hfcompress.pruning.importance import activation_importance
from hfcompress.pruning.iterative import structured_prune, structured_targets
from hfcompress.pruning.structured import prune_hidden_channels


def batches(n=2):
    data = make_lm_blocks(8, 16)
    collate = DistillationDataCollator(shared_bpe_tokenizer())
    return [collate([data[i] for i in range(k * 4, k * 4 + 4)]) for k in range(n)]


def reloads_the_same(model, tmp_path):
    model.save_pretrained(tmp_path / "pruned")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned").eval()
    ids = torch.randint(3, 128, (2, 12))
    torch.testing.assert_close(again(ids).logits, model.eval()(ids).logits)
    out = again.generate(ids[:1], max_new_tokens=5, min_new_tokens=5, do_sample=False, pad_token_id=4)
    assert out.shape == (1, 17)  # the KV cache works with the renumbered layers
    return again


def test_block_influence_reads_each_layers_own_input_and_output():
    model = make_llama()
    batch = batches(1)
    scores = block_influence(model, batch)
    inputs = {k: v for k, v in batch[0].items() if k != "labels"}
    hidden = model(**inputs, output_hidden_states=True).hidden_states
    for i in range(3):  # hidden_states[4] is the final norm's output, not layer 3's
        cos = torch.nn.functional.cosine_similarity(hidden[i], hidden[i + 1], dim=-1)
        assert abs(float((1 - cos).mean()) - float(scores[i])) < 1e-5
    assert scores.shape == (4,) and (scores > 0).all()


@pytest.mark.parametrize("selection", ["block_influence", "spread"])
def test_depth_pruning_reloads_with_plain_from_pretrained(tmp_path, selection):
    model = make_llama(num_layers=6)
    config = StructuredPruningConfig(prune_layers=2, layer_selection=selection, importance="activation")
    (target,) = structured_targets(model, config)
    pruned, removed = structured_prune(model, target, config, batches())
    assert pruned.config.num_hidden_layers == 4 and len(removed["layers"]) == 2
    if selection == "spread":
        assert removed["layers"] == [1, 5]  # keeps 0, 2, 3, 4 (select_layers: round(i * 6 / 4))
    reloads_the_same(pruned, tmp_path)


def test_width_pruning_by_activation_shrinks_every_dimension_and_reloads(tmp_path):
    model = make_llama(num_layers=2, hidden=32, heads=4, kv_heads=2, intermediate=64)
    config = StructuredPruningConfig(
        prune_heads_fraction=0.5, prune_ffn_fraction=0.25, prune_hidden_fraction=0.25, importance="activation"
    )
    (target,) = structured_targets(model, config)
    pruned, removed = structured_prune(model, target, config, batches())
    c = pruned.config
    assert (c.num_key_value_heads, c.num_attention_heads, c.head_dim) == (1, 2, 8)
    assert (c.intermediate_size, c.hidden_size) == (48, 24)
    assert removed["hidden_channels"] == 8
    assert pruned.model.embed_tokens.weight.shape == (320, 24)
    assert pruned.lm_head.weight is pruned.model.embed_tokens.weight  # still tied
    again = reloads_the_same(pruned, tmp_path)
    assert again.config.hidden_size == 24


def test_keeping_every_hidden_channel_changes_nothing():
    model = make_llama(num_layers=2)
    ids = torch.randint(3, 128, (2, 10))
    before = model(ids).logits
    prune_hidden_channels(model, torch.arange(32))
    torch.testing.assert_close(model(ids).logits, before)


def test_activation_scores_every_unit():
    heads, neurons, channels = activation_importance(make_llama(num_layers=2), batches())
    assert heads[0].shape == (2,) and neurons[1].shape == (64,) and channels.shape == (32,)
    assert (channels > 0).all() and (neurons[0] > 0).all()


def test_hidden_pruning_of_an_encoder_is_a_one_line_error():
    with pytest.raises(HfCompressError, match="hidden-size pruning is implemented for Llama-style"):
        structured_targets(make_bert(), StructuredPruningConfig(prune_hidden_fraction=0.25))
