"""Structured pruning: importance scores, shrinking heads/neurons/layers of BERT and Llama, reload, errors."""

import pytest
import torch
from conftest import make_bert
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
)

from hfcompress import (
    HfCompressError,
    StructuredPruningConfig,
    count_parameters,
    structured_prune,
    structured_targets,
)
from hfcompress.pruning import (
    gradient_importance,
    magnitude_importance,
    prune_attention_heads,
    prune_ffn_neurons,
    structure,
)
from hfcompress.pruning.structured import attention_output, bert_head_pruning_supported, ffn_output

needs_pruned_heads = pytest.mark.skipif(
    not bert_head_pruning_supported(make_bert(num_layers=1)),
    reason="this transformers no longer honours config.pruned_heads (5.x): BERT head pruning is refused",
)


def make_llama(kv_heads=2, seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


def batches(n=2, vocab=100, labels="class", seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(5, vocab, (4, 12), generator=g)
        mask = torch.ones_like(ids)
        mask[0, 8:] = 0
        label = torch.randint(0, 2, (4,), generator=g) if labels == "class" else ids
        out.append({"input_ids": ids, "attention_mask": mask, "labels": label})
    return out


def layers_of(model):
    return model.base_model.encoder.layer if hasattr(model.base_model, "encoder") else model.model.layers


def test_gradient_head_score_is_the_gate_gradient():
    """Michel et al.'s |dL/d gate_h|, computed with an explicit gate, equals our score from W_o * dL/dW_o."""
    model = make_bert(num_layers=2, hidden=32, heads=4, vocab_size=100).eval()
    batch = batches(1)[0]
    heads, _ = gradient_importance(model, [batch])
    gates = [torch.ones(4, requires_grad=True) for _ in range(2)]
    hooks = [
        attention_output(layer).register_forward_pre_hook(
            lambda m, args, g=g: (args[0] * g.repeat_interleave(8),)
        )
        for layer, g in zip(layers_of(model), gates)
    ]
    model(**batch).loss.backward()
    for h in hooks:
        h.remove()
    for i, g in enumerate(gates):
        torch.testing.assert_close(heads[i], g.grad.abs(), rtol=1e-4, atol=1e-6)


def zero_units(model, head, neuron):
    """Silence one head and one FFN neuron in every layer: removing them must change nothing."""
    with torch.no_grad():
        for layer in layers_of(model):
            o = attention_output(layer)
            size = o.in_features // 4
            o.weight[:, head * size : (head + 1) * size] = 0
            ffn_output(layer).weight[:, neuron] = 0


@needs_pruned_heads
def test_bert_heads_and_neurons_shrink_exactly_and_reload(tmp_path):
    model = make_bert(num_layers=2, hidden=32, heads=4, vocab_size=100).eval()
    zero_units(model, head=2, neuron=5)
    before = model(**batches(1)[0]).logits
    heads, neurons = magnitude_importance(model)
    assert all(int(s.argmin()) == 2 for s in heads.values()) and all(
        int(s.argmin()) == 5 for s in neurons.values()
    )
    prune_attention_heads(model, {0: [2], 1: [2]})
    prune_ffn_neurons(model, {i: torch.tensor([n for n in range(64) if n != 5]) for i in range(2)})
    torch.testing.assert_close(model(**batches(1)[0]).logits, before, rtol=1e-4, atol=1e-5)
    assert structure(model) == {
        "num_layers": 2,
        "attention_units": [3, 3],
        "intermediate_size": 63,
        "hidden_size": 32,
    }
    model.save_pretrained(tmp_path / "m")
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m").eval()
    torch.testing.assert_close(loaded(**batches(1)[0]).logits, before, rtol=1e-4, atol=1e-5)
    assert count_parameters(loaded) == count_parameters(model)


def test_llama_groups_and_neurons_shrink_exactly_and_reload(tmp_path):
    model = make_llama(kv_heads=2)
    with torch.no_grad():  # silence KV group 1 (query heads 2, 3) and neuron 7 in every layer
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[:, 16:] = 0
            layer.mlp.down_proj.weight[:, 7] = 0
    batch = {"input_ids": batches(1, labels="lm")[0]["input_ids"]}
    before = model(**batch).logits
    heads, neurons = magnitude_importance(model)
    assert all(len(s) == 2 and int(s.argmin()) == 1 for s in heads.values())
    prune_attention_heads(model, {i: [1] for i in range(3)})
    prune_ffn_neurons(model, {i: torch.tensor([n for n in range(64) if n != 7]) for i in range(3)})
    torch.testing.assert_close(model(**batch).logits, before, rtol=1e-4, atol=1e-5)
    assert (model.config.num_attention_heads, model.config.num_key_value_heads, model.config.head_dim) == (
        2,
        1,
        8,
    )
    model.save_pretrained(tmp_path / "llama")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "llama").eval()
    torch.testing.assert_close(loaded(**batch).logits, before, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_iterative_plan_and_prune_all_dimensions(tmp_path, family):
    if family == "bert" and not bert_head_pruning_supported(make_bert(num_layers=1)):
        config = StructuredPruningConfig(prune_ffn_fraction=0.5, prune_layers=2, num_iterations=2)
    else:
        config = StructuredPruningConfig(
            prune_heads_fraction=0.5, prune_ffn_fraction=0.5, prune_layers=2, num_iterations=2
        )
    model = make_bert(num_layers=4, hidden=32, heads=4, vocab_size=100) if family == "bert" else make_llama(4)
    data = batches(2, labels="class" if family == "bert" else "lm")
    targets = structured_targets(model, config)
    assert len(targets) == 2
    start = count_parameters(model)
    for target in targets:
        model, removed = structured_prune(model, target, config, data)
        assert structure(model)["num_layers"] == target["num_layers"]
        assert structure(model)["intermediate_size"] == target["intermediate_size"]
        if config.prune_heads_fraction:
            assert set(structure(model)["attention_units"]) == {target["attention_units"]}
    assert count_parameters(model) < start
    model.save_pretrained(tmp_path / "m")
    auto = AutoModelForSequenceClassification if family == "bert" else AutoModelForCausalLM
    loaded = auto.from_pretrained(tmp_path / "m").eval()
    inputs = {k: v for k, v in data[0].items() if k != "labels"}
    torch.testing.assert_close(loaded(**inputs).logits, model.eval()(**inputs).logits, rtol=1e-4, atol=1e-5)


def test_targets_are_spread_over_iterations():
    model = make_bert(num_layers=6, hidden=32, heads=4, vocab_size=100)
    config = StructuredPruningConfig(prune_ffn_fraction=0.5, prune_layers=2, num_iterations=2)
    targets = structured_targets(model, config)
    assert [t["intermediate_size"] for t in targets] == [48, 32]
    assert [t["num_layers"] for t in targets] == [5, 4]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(prune_heads_fraction=0.9), "would remove all 4"),
        (dict(prune_ffn_fraction=0.999), "would remove all 64 FFN neurons"),
        (dict(prune_layers=4), "would remove all 4 layers"),
        (dict(), "nothing to do"),
    ],
)
def test_removing_everything_is_refused(kwargs, message):
    model = make_bert(num_layers=4, hidden=32, heads=4, vocab_size=100)
    with pytest.raises(HfCompressError, match=message):
        structured_targets(model, StructuredPruningConfig(**kwargs))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(prune_heads_fraction=1.0),
        dict(prune_ffn_fraction=-0.1),
        dict(prune_layers=-1),
        dict(importance="random"),
        dict(num_iterations=0),
    ],
)
def test_bad_structured_config(kwargs):
    with pytest.raises(HfCompressError):
        StructuredPruningConfig(**kwargs)


def test_bad_head_lists_are_refused():
    model = make_llama(kv_heads=2)
    with pytest.raises(HfCompressError, match="every attention head of layer 0"):
        prune_attention_heads(model, {0: [0, 1], 1: [0], 2: [0]})
    with pytest.raises(HfCompressError, match="same number of KV"):
        prune_attention_heads(model, {0: [0], 1: [0]})
    with pytest.raises(HfCompressError, match="same in every layer"):
        prune_ffn_neurons(model, {0: torch.arange(10), 1: torch.arange(20), 2: torch.arange(20)})


@pytest.mark.skipif(
    bert_head_pruning_supported(make_bert(num_layers=1)),
    reason="this transformers honours config.pruned_heads",
)
def test_bert_heads_refused_where_not_expressible():
    model = make_bert(num_layers=2, hidden=32, heads=4, vocab_size=100)
    with pytest.raises(HfCompressError, match="no longer honours config.pruned_heads"):
        structured_targets(model, StructuredPruningConfig(prune_heads_fraction=0.5))


def test_gradient_importance_of_a_frozen_model_is_refused():
    model = make_bert(num_layers=2, hidden=32, heads=4, vocab_size=100).requires_grad_(False)
    with pytest.raises(HfCompressError, match=r"layers \[0, 1\] are frozen"):
        gradient_importance(model, batches(1))


def test_spread_layer_selection_keeps_every_other_layer():
    model = make_bert(num_layers=6, hidden=32, heads=4, vocab_size=100)
    config = StructuredPruningConfig(prune_layers=3, layer_selection="spread")
    (target,) = structured_targets(model, config)
    pruned, removed = structured_prune(model, target, config, batches(1))
    assert removed["layers"] == [1, 3, 5] and pruned.config.num_hidden_layers == 3
    with pytest.raises(HfCompressError, match="layer_selection must be one of"):
        StructuredPruningConfig(prune_layers=1, layer_selection="random")
