"""Every decoder family the LM features claim, on a tiny random config each, with a real BPE tokenizer:
chunked KD equals unchunked (softcapping and logit scaling included), the top-k cache equals the live teacher,
on-policy batches train, depth/width/hidden pruning reloads with plain from_pretrained, perplexity runs."""

import math

import datasets
import pytest
import torch
from conftest import BPE_CORPUS, FAMILY_CONFIGS, make_bpe_tokenizer, make_decoder
from transformers import AutoModelForCausalLM

from hfcompress import DistillationConfig, DistillationTrainer, HfCompressError
from hfcompress.data import EXAMPLE_INDEX, DistillationDataCollator
from hfcompress.distillation import causal
from hfcompress.evaluation.lm import strided_perplexity
from hfcompress.modeling import FAMILIES, hidden_norms
from hfcompress.pruning import StructuredPruningConfig
from hfcompress.pruning.iterative import structured_prune, structured_targets

FAMILY_NAMES = sorted(FAMILY_CONFIGS)


def test_every_family_in_the_table_has_a_tiny_config_here():
    types = {config.get("model_type", name) for name, config in FAMILY_CONFIGS.items()}
    assert types <= set(FAMILIES)
    assert set(FAMILIES) - types == {"gemma"}  # Gemma 1 is Gemma2's shape without the softcap


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return make_bpe_tokenizer(tmp_path_factory.mktemp("bpe"))


@pytest.fixture(scope="module")
def rows(tokenizer):
    """Training rows of different lengths (so batches are padded), labels = input ids."""
    encoded = [tokenizer(text)["input_ids"][: 12 + (i * 5) % 29] for i, text in enumerate(BPE_CORPUS * 2)]
    return datasets.Dataset.from_dict(
        {"input_ids": encoded, "attention_mask": [[1] * len(r) for r in encoded], "labels": encoded}
    )


def make_trainer(tmp_path, family, tokenizer, rows, student=None, **kwargs):
    defaults = dict(
        output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2,
        report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0, alpha=0.5, temperature=2.0,
    )  # fmt: skip
    return DistillationTrainer(
        model=student if student is not None else make_decoder(family, num_layers=2, seed=1),
        teacher_model=make_decoder(family, num_layers=4, seed=0),
        args=DistillationConfig(**{**defaults, **kwargs}),
        train_dataset=rows,
        processing_class=tokenizer,
    )


def loss_and_grads(trainer, batch):
    trainer.model.train()
    trainer.model.zero_grad(set_to_none=True)
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_chunked_kd_equals_the_models_own_logits(tmp_path, family, tokenizer, rows):
    batch = DistillationDataCollator(tokenizer)([rows[i] for i in range(4)])
    assert (batch["attention_mask"] == 0).any()  # padded
    results = [
        loss_and_grads(make_trainer(tmp_path / str(chunk), family, tokenizer, rows, lm_chunk_size=chunk), batch)
        for chunk in (0, 7)
    ]
    (full_loss, full_grads), (chunk_loss, chunk_grads) = results
    assert abs(float(full_loss) - float(chunk_loss)) < 1e-5
    assert full_grads.keys() == chunk_grads.keys()
    for name, grad in full_grads.items():
        assert (grad - chunk_grads[name]).abs().max() < 1e-5, name


@pytest.mark.parametrize("family", ["gemma2", "granite"])
def test_output_head_applies_the_familys_logit_transform(family):
    model = make_decoder(family, num_layers=2)
    ids = torch.randint(5, 320, (2, 9))
    hidden = causal.final_hidden_states(model, {"input_ids": ids})
    raw = model.get_output_embeddings()(hidden)
    ours = causal.OutputHead(model)(hidden)
    torch.testing.assert_close(ours, model(ids).logits)
    assert (raw - ours).abs().max() > 1e-2  # the transform is not a no-op on these configs


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_top_k_cache_equals_the_live_teacher(tmp_path, family, tokenizer, rows):
    live = make_trainer(tmp_path / "live", family, tokenizer, rows)
    cached = make_trainer(
        tmp_path / "cache", family, tokenizer, rows, cache_teacher_logits=True, teacher_topk=len(tokenizer)
    )
    indices = [5, 0, 7, 2]  # out of order, different lengths
    batch = DistillationDataCollator(tokenizer)([{**rows[i], EXAMPLE_INDEX: i} for i in indices])
    live_loss, live_grads = loss_and_grads(live, {k: v for k, v in batch.items() if k != EXAMPLE_INDEX})
    cached_loss, cached_grads = loss_and_grads(cached, batch)
    assert abs(float(live_loss) - float(cached_loss)) < 1e-5
    for name, grad in live_grads.items():
        assert (grad - cached_grads[name]).abs().max() < 1e-5, name


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_on_policy_batches_train(tmp_path, family, tokenizer, rows):
    trainer = make_trainer(
        tmp_path, family, tokenizer, rows, lmbda=1.0, on_policy_prompt_tokens=12, on_policy_max_new_tokens=5
    )
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    assert any((a - b).abs().max() > 0 for a, b in zip(before, trainer.model.parameters()))


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_depth_width_and_hidden_pruning_reload_with_plain_from_pretrained(tmp_path, family, tokenizer, rows):
    model = make_decoder(family, num_layers=4)
    collate = DistillationDataCollator(tokenizer)
    batches = [collate([rows[i] for i in range(k, k + 4)]) for k in (0, 4)]
    config = StructuredPruningConfig(
        prune_layers=1, prune_heads_fraction=0.5, prune_ffn_fraction=0.25, prune_hidden_fraction=0.25,
        importance="activation",
    )  # fmt: skip
    longrope = family == "phi-3.5"  # its rope factors are sized from hidden_size / num_attention_heads
    if longrope:
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(HfCompressError, match="of this phi3 model, which this transformers can't load back"):
            structured_targets(model, config)
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
        config = StructuredPruningConfig(prune_layers=1, prune_ffn_fraction=0.25, importance="activation")
    (target,) = structured_targets(model, config)
    pruned, removed = structured_prune(model, target, config, batches)
    c = pruned.config
    kept = (3, 2, 4, 48, 32, 8) if longrope else (3, 1, 2, 48, 24, 8)
    assert (c.num_hidden_layers, c.num_key_value_heads, c.num_attention_heads) == kept[:3]
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads  # Phi-3 unpruned: not set
    assert (c.intermediate_size, c.hidden_size, head_dim) == kept[3:]
    assert len(removed["layers"]) == 1 and removed.get("hidden_channels", 0) == 32 - kept[4]
    assert all(norm.weight.shape == (kept[4],) for norm in hidden_norms(pruned))
    if getattr(c, "layer_types", None) is not None:  # the pattern follows the layers kept
        assert c.layer_types == [model.config.layer_types[i] for i in range(4) if i not in removed["layers"]]
    pruned.save_pretrained(tmp_path / "pruned")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned").eval()
    assert type(again) is type(pruned)
    ids = batches[0]["input_ids"]
    mask = batches[0]["attention_mask"]
    expected = pruned.eval()(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(again(input_ids=ids, attention_mask=mask).logits, expected)
    out = again.generate(ids[:1, :8], max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=4)
    assert out.shape == (1, 12)  # the KV cache works with the new shapes


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_perplexity_of_one_window_is_the_models_own_loss(family, tokenizer):
    model = make_decoder(family, num_layers=2)
    text = BPE_CORPUS[1]
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    result = strided_perplexity(model, tokenizer, text, max_length=128, stride=128)
    loss = model(input_ids=ids, labels=ids).loss
    assert result["tokens"] == ids.shape[1] - 1
    assert result["perplexity"] == pytest.approx(math.exp(float(loss)), rel=1e-5)


def test_a_family_outside_the_table_is_refused_before_any_work():
    from transformers import OlmoConfig, OlmoForCausalLM

    model = OlmoForCausalLM(OlmoConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, pad_token_id=0))  # fmt: skip
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(HfCompressError, match="not supported for model_type 'olmo'.*gemma2.*llama.*phi3"):
        structured_targets(model, StructuredPruningConfig(prune_layers=1))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_a_family_outside_the_table_that_rescales_logits_needs_the_models_own_logits(tmp_path, tokenizer, rows):
    from transformers import CohereConfig, CohereForCausalLM

    def cohere(layers, seed):
        torch.manual_seed(seed)
        return CohereForCausalLM(CohereConfig(vocab_size=320, hidden_size=32, intermediate_size=64,
                                              num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                              pad_token_id=4, bos_token_id=3, eos_token_id=2,
                                              logit_scale=0.25)).eval()  # fmt: skip

    batch = DistillationDataCollator(tokenizer)([rows[i] for i in range(4)])
    def trainer(chunk):
        return DistillationTrainer(
            model=cohere(2, 1), teacher_model=cohere(4, 0), processing_class=tokenizer, train_dataset=rows,
            args=DistillationConfig(output_dir=str(tmp_path / str(chunk)), lm_chunk_size=chunk, report_to=[],
                                    use_cpu=True, per_device_train_batch_size=4),
        )  # fmt: skip

    with pytest.raises(HfCompressError, match="'cohere' rescales its logits \\(logit_scale\\).*lm_chunk_size 0"):
        trainer(7)  # refused when the trainer is built, before any step
    plain = trainer(0)
    plain.model.train()
    assert torch.isfinite(plain.compute_loss(plain.model, batch))
