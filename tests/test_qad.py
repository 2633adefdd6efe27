"""Quantization-aware distillation: the grids equal the formats' own quantizers; a model trained through a grid
exports onto it exactly (the compressed-tensors checkpoint reloads, in transformers, with the logits of the
fake-quantized model; the GGUF Q4_0 tensors dequantize to its weights) for tiny Llama, Qwen2 and Gemma2 models;
training through the grid brings the quantized model closer to the teacher than rounding alone."""

import json
import os

import pytest
import torch
from conftest import make_decoder, shared_bpe_tokenizer
from safetensors import safe_open

from hfcompress import HfCompressError
from hfcompress.quantization import QuantizationConfig, load_quantized, quantize
from hfcompress.quantization.backends import (
    is_compressed_tensors_available,
    is_gguf_available,
    is_llmcompressor_available,
)
from hfcompress.quantization.grids import (
    Grid,
    dequantize_weight,
    fake_quantize,
    learned_fake_quantize,
    quantize_weight,
    stored_scale,
)
from hfcompress.quantization.qad import (
    attach_grid,
    detach_grid,
    export_trained,
    gptq_start,
    grid_linears,
    pack_int4,
    save_compressed_w4a16,
    train_through_grid,
    unpack_int4,
)

needs_gguf = pytest.mark.skipif(not is_gguf_available(), reason="needs gguf (pip install 'hfcompress[gguf]')")
pytestmark = pytest.mark.llmcompressor  # make test-llmc reloads the checkpoints with compressed-tensors
FAMILIES = ("llama", "qwen2", "gemma2")  # untied head; q/k/v biases; softcaps, head_dim apart from hidden / heads


def model_dir(tmp_path, family, seed=0, sharpen=1.0):
    """A tiny ``family`` model saved with a real BPE tokenizer; ``sharpen`` scales its linear weights, so that its
    next-token distributions are far from uniform and rounding them to 4 bits visibly changes them."""
    tokenizer = shared_bpe_tokenizer()
    model = make_decoder(family, vocab_size=len(tokenizer), hidden=64, intermediate=128, heads=4, kv_heads=2,
                         num_layers=2, seed=seed)  # fmt: skip
    with torch.no_grad():
        for module in grid_linears(model).values():
            module.weight.mul_(sharpen)
    folder = tmp_path / family
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def training_rows(count=8, length=32, seed=0):
    import datasets

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, len(shared_bpe_tokenizer()), (count, length), generator=generator).tolist()
    return datasets.Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * length] * count, "labels": ids})


def sample_ids():
    return torch.randint(5, len(shared_bpe_tokenizer()), (2, 24), generator=torch.Generator().manual_seed(1))


def kl_divergence(log_p, log_q) -> float:
    """Mean KL(p || q) per position from log-probabilities."""
    return torch.sum(log_p.exp() * (log_p - log_q), -1).mean().item()


@torch.no_grad()
def grid_logits(model, grid, ids, scales=None):
    attach_grid(model, grid, scales)
    try:
        return model(ids).logits
    finally:
        detach_grid(model)


# -- the grids --------------------------------------------------------------------------------------------------


@needs_gguf
def test_q4_0_is_the_gguf_quantizer_and_is_idempotent():
    import gguf

    weight = torch.randn(16, 128) * 0.05
    weight[3, 40] = 0.0  # a block whose magnitudes tie
    weight[3, 32:64] = 0.25 * torch.sign(torch.randn(32))
    kind = gguf.GGMLQuantizationType.Q4_0
    reference = gguf.quants.dequantize(gguf.quants.quantize(weight.numpy(), kind), kind)
    q, scale = quantize_weight(weight, Grid("q4_0"))
    on_grid = dequantize_weight(q, scale, Grid("q4_0"), torch.float32)
    assert torch.equal(on_grid, torch.from_numpy(reference))
    assert q.min() >= 0 and q.max() <= 15 and scale.dtype == torch.float16
    again = dequantize_weight(*quantize_weight(on_grid, Grid("q4_0")), Grid("q4_0"), torch.float32)
    assert torch.equal(again, on_grid)  # what lets llama-quantize reproduce a trained model


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int4_scales_are_absmax_over_7_5_in_the_stored_dtype_and_round_half_to_even(dtype):
    weight = torch.tensor([[7.5, 2.5, -1.5, 0.5, 3.0, -7.5, 0.0, 1.0]])
    q, scale = quantize_weight(weight, Grid("int4", 4, dtype))
    assert scale.dtype == dtype and scale.tolist() == [[1.0, 1.0]]
    # 7.5 rounds to 8 and clamps to 7; 2.5 -> 2, -1.5 -> -2, 0.5 -> 0 (half to even); -7.5 -> -8
    assert q.tolist() == [[7, 2, -2, 0, 3, -8, 0, 1]]
    zero = quantize_weight(torch.zeros(1, 4), Grid("int4", 4, dtype))[1]
    assert zero.item() == torch.finfo(dtype).eps  # compressed-tensors' guard against a zero scale


def test_the_rounding_passes_the_gradient_straight_through():
    weight = torch.randn(4, 32, requires_grad=True)
    upstream = torch.randn(4, 32)
    (fake_quantize(weight, Grid("int4", 32)) * upstream).sum().backward()
    assert torch.equal(weight.grad, upstream)


def test_fixed_int4_scales_replace_absmax_and_must_fit_the_grid():
    weight = torch.tensor([[3.0, -1.0, 0.4, 9.0]])
    grid = Grid("int4", 4, torch.float32)
    q, scale = quantize_weight(weight, grid, scale=torch.tensor([[0.5]]))
    assert scale.tolist() == [[0.5]] and q.tolist() == [[6, -2, 1, 7]]  # 0.8 -> 1; 18 clamps to 7
    with pytest.raises(HfCompressError, match=r"fixed scales need the int4 grid and shape \(1, 1\) in torch.float32"):
        quantize_weight(weight, grid, scale=torch.tensor([[0.5, 0.5]]))
    with pytest.raises(HfCompressError, match="fixed scales need the int4 grid"):
        quantize_weight(torch.zeros(1, 32), Grid("q4_0"), scale=torch.ones(1, 1, dtype=torch.float16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_learned_scales_read_back_as_the_export_does(dtype):
    """Forward: exactly the integers and scales the checkpoint will hold (scale and product rounded to the dtype)."""
    grid = Grid("int4", 8, dtype)
    weight = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    scale = weight.reshape(4, 2, 8).abs().amax(-1) / 6.3  # fp32, between the dtype's values
    got = learned_fake_quantize(weight, scale.requires_grad_(), grid)
    assert torch.equal(got, dequantize_weight(*quantize_weight(weight, grid, stored_scale(scale, grid)), grid, torch.float32))
    floor = torch.tensor(max(1e-8, torch.finfo(dtype).tiny * torch.finfo(dtype).eps), dtype=dtype)  # fp16: subnormal
    assert stored_scale(-scale.detach(), grid).unique().tolist() == [floor.item()] and floor.item() > 0
    assert torch.equal(stored_scale(scale.to(dtype).float(), grid), scale.to(dtype))  # a stored scale stays put


def test_learned_scales_take_lsq_gradients():
    """To a weight: 1 where it rounds inside -8..7, 0 where it clamps. To a scale: sum of q - w / s inside, the
    clamped q outside (LSQ), computed here by hand."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(4, 16, generator=generator).requires_grad_()
    scale = (weight.detach().reshape(4, 2, 8).abs().amax(-1) / 9).requires_grad_()  # the largest ones clamp
    upstream = torch.randn(4, 16, generator=generator)
    (learned_fake_quantize(weight, scale, Grid("int4", 8, torch.float32)) * upstream).sum().backward()
    x = weight.detach().reshape(4, 2, 8) / scale.detach()[..., None]
    q = torch.round(x).clamp(-8, 7)
    inside = torch.round(x) == q
    assert 0 < inside.float().mean() < 1
    up = upstream.reshape(4, 2, 8)
    assert torch.allclose(scale.grad, (torch.where(inside, q - x, q) * up).sum(-1), atol=1e-5)
    assert torch.allclose(weight.grad, torch.where(inside, up, 0.0).reshape(4, 16), atol=1e-6)
    with pytest.raises(HfCompressError, match="learned scales are for the int4 grid"):
        learned_fake_quantize(torch.zeros(1, 32), torch.ones(1, 1), Grid("q4_0"))


def test_int4_packing_is_compressed_tensors_layout():
    q = torch.tensor([[-8, -7, 0, 1, 2, 3, 6, 7] * 2], dtype=torch.int8)
    packed = pack_int4(q)
    # offset by 8, first value in the lowest nibble: 0,1,8,9,10,11,14,15 -> 0xFEBA9810 as a signed int32
    assert packed.dtype == torch.int32 and packed.shape == (1, 2)
    assert packed[0, 0].item() == 0xFEBA9810 - 2**32
    assert torch.equal(unpack_int4(packed, 16), q)


# -- exact export -----------------------------------------------------------------------------------------------


def trained(tmp_path, family, method, steps=3, sharpen=1.0, start=None, **settings):
    config = QuantizationConfig(**{"method": method, "qad_steps": steps, "qad_batch_size": 4, "qad_learning_rate": 3e-4,
                                   "group_size": 32, **settings})  # fmt: skip
    from hfcompress.quantization.qad import method_grid

    grid = method_grid(method, config.group_size, config.compute_dtype)
    folder = model_dir(tmp_path, family, sharpen=sharpen)
    model, facts, scales = train_through_grid(folder, grid, training_rows(), config, tmp_path / "work", start)
    return folder, config, grid, model, facts, scales


def dequantized_checkpoint(folder) -> dict:
    """The weights a pack-quantized checkpoint stands for, read by hand: q * scale per group."""
    state = {}
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        for key in f.keys():
            if key.endswith("weight_packed"):
                base = key.removesuffix("_packed")
                rows, columns = f.get_tensor(base + "_shape").tolist()
                q, scale = unpack_int4(f.get_tensor(key), columns), f.get_tensor(base + "_scale")
                assert q.min() >= -8 and q.max() <= 7
                state[base] = (q.reshape(rows, -1, 32).to(scale.dtype) * scale[..., None]).reshape(rows, columns)
            elif not key.endswith(("_scale", "_shape")):
                state[key] = f.get_tensor(key)
    return state


@pytest.mark.parametrize("family", FAMILIES)
def test_the_compressed_tensors_export_holds_the_trained_grid_and_reloads_with_its_logits(family, tmp_path):
    folder, config, grid, model, facts, _ = trained(tmp_path, family, "qad-w4a16")
    out = tmp_path / "out"
    out.mkdir()
    export_trained(model, folder, out, config)
    state = dequantized_checkpoint(out)
    linears = grid_linears(model)
    assert facts["modules"] == len(linears) == 14
    for name, module in linears.items():
        expected = dequantize_weight(*quantize_weight(module.weight, grid), grid, torch.float32)
        assert torch.equal(state[f"{name}.weight"].float(), expected), name
    written = json.loads((out / "config.json").read_text())["quantization_config"]
    assert written["format"] == "pack-quantized" and written["config_groups"]["group_0"]["weights"]["group_size"] == 32
    assert written["ignore"] == ["lm_head"]
    ids = sample_ids()
    expected_logits = grid_logits(model, grid, ids)
    if is_compressed_tensors_available():  # transformers' own reader (make test-llmc)
        from transformers import AutoModelForCausalLM

        reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    else:  # the same weights, loaded by hand
        reloaded = make_decoder(family, vocab_size=model.config.vocab_size, hidden=64, intermediate=128, heads=4,
                                kv_heads=2, num_layers=2)  # fmt: skip
        missing = reloaded.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
        assert set(missing.missing_keys) <= {"lm_head.weight"} and not missing.unexpected_keys
    with torch.no_grad():
        got = reloaded(ids).logits
    assert torch.allclose(got, expected_logits, atol=1e-5, rtol=1e-5)


def test_bf16_scales_are_stored_in_bf16_and_the_rest_of_the_checkpoint_too(tmp_path):
    folder, config, grid, model, *_ = trained(tmp_path, "llama", "qad-w4a16", steps=1, compute_dtype="bfloat16")
    out = tmp_path / "out"
    out.mkdir()
    export_trained(model, folder, out, config)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.get_tensor("model.layers.0.mlp.up_proj.weight_scale").dtype == torch.bfloat16
        assert f.get_tensor("model.embed_tokens.weight").dtype == torch.bfloat16
    state = dequantized_checkpoint(out)
    up = model.model.layers[0].mlp.up_proj.weight
    assert torch.equal(state["model.layers.0.mlp.up_proj.weight"].float(),
                       dequantize_weight(*quantize_weight(up, grid), grid, torch.float32))  # fmt: skip


@needs_gguf
def test_the_gguf_q4_0_export_holds_the_trained_weights_exactly(tmp_path):
    import gguf

    from hfcompress.quantization.gguf_export import permute_rotary

    folder, config, grid, model, *_ = trained(tmp_path, "llama", "qad-gguf-q4_0", gguf_writer="hfcompress")
    expected = {name: dequantize_weight(*quantize_weight(m.weight, grid), grid, torch.float32)
                for name, m in grid_linears(model).items()}  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    export_trained(model, folder, out, config)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
    tensors = {t.name: t for t in gguf.GGUFReader(out / "model-Q4_0.gguf").tensors}
    for name, weight in expected.items():
        tensor = tensors[names.get_name(f"{name}.weight", try_suffixes=(".weight",))]
        assert tensor.tensor_type == gguf.GGMLQuantizationType.Q4_0, name
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        heads = {"q_proj": 4, "k_proj": 2}.get(name.rsplit(".", 1)[-1])
        target = permute_rotary(weight.numpy(), heads) if heads else weight.numpy()
        assert (values == target).all(), name


def test_training_through_the_grid_brings_the_quantized_model_closer_to_the_teacher(tmp_path):
    """KL(teacher || quantized) on the training rows: after QAD below what rounding the teacher's weights gives."""
    from hfcompress.modeling import load_causal_lm

    folder, config, grid, model, facts, _ = trained(tmp_path, "llama", "qad-w4a16", steps=30, sharpen=8.0)
    teacher = load_causal_lm(str(folder))
    ids = torch.tensor(training_rows()["input_ids"])

    def divergence(student):
        with torch.no_grad():
            target = torch.log_softmax(teacher(ids).logits, -1)
            own = torch.log_softmax(grid_logits(student, grid, ids), -1)
        return torch.sum(target.exp() * (target - own), -1).mean().item()

    rounded = load_causal_lm(str(folder))
    assert divergence(model) < 0.5 * divergence(rounded)  # measured: 0.24x
    assert facts["kd_loss_last"] < facts["kd_loss_first"]


def start_checkpoint(tmp_path, family):
    """A symmetric int4 checkpoint of the tiny model on other scales than rounding's (absmax / 5, so no weight
    clamps), as GPTQ's are: what a GPTQ start reads."""
    from hfcompress.modeling import load_causal_lm

    folder = model_dir(tmp_path, family)
    model = load_causal_lm(str(folder))
    grid = Grid("int4", 32, torch.float32)
    scales = {name: m.weight.detach().reshape(m.out_features, -1, 32).abs().amax(-1) / 5
              for name, m in grid_linears(model).items()}  # fmt: skip
    out = tmp_path / "start"
    save_compressed_w4a16(model, out, grid, scales)
    return out, scales


def exported(tmp_path, model, folder, config, scales):
    out = tmp_path / "out"
    out.mkdir()
    export_trained(model, folder, out, config, scales)
    return out


def assert_reloads_with_the_grid_logits(family, model, grid, out, scales):
    """The checkpoint in ``out``, dequantized by hand into a fresh tiny model, gives the logits of ``model`` on
    ``grid`` and ``scales``."""
    ids = sample_ids()
    reloaded = make_decoder(family, vocab_size=model.config.vocab_size, hidden=64, intermediate=128, heads=4,
                            kv_heads=2, num_layers=2)  # fmt: skip
    reloaded.load_state_dict({k: v.float() for k, v in dequantized_checkpoint(out).items()}, strict=False)
    with torch.no_grad():
        assert torch.allclose(reloaded.eval()(ids).logits, grid_logits(model, grid, ids, scales), atol=1e-5)


def test_a_gptq_start_trains_on_its_fixed_scales_and_exports_onto_them(tmp_path):
    """Step 0 is the start checkpoint exactly; training moves the integers, never the scales; the export holds them."""
    from hfcompress.modeling import load_causal_lm

    start, scales = start_checkpoint(tmp_path / "a", "llama")
    folder = model_dir(tmp_path, "llama")
    student = load_causal_lm(str(folder))
    grid = Grid("int4", 32, torch.float32)
    assert {k: v.tolist() for k, v in gptq_start(student, start, grid).items()} == {k: v.tolist() for k, v in scales.items()}
    by_hand = dequantized_checkpoint(start)
    for name, module in grid_linears(student).items():
        assert torch.equal(module.weight, by_hand[f"{name}.weight"]), name
        # on fixed scales the start is its own rounding; on absmax / 7.5 it would move
        assert torch.equal(fake_quantize(module.weight, grid, scales[name]), module.weight)
    _, config, grid, model, facts, kept = trained(tmp_path, "llama", "qad-w4a16", steps=3, start=start, qad_learning_rate=1e-2)
    assert facts["start"] == "gptq" and kept is not None
    out = exported(tmp_path, model, folder, config, kept)
    moved = 0
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        for name, module in grid_linears(model).items():
            assert torch.equal(f.get_tensor(f"{name}.weight_scale"), scales[name]), name
            q = unpack_int4(f.get_tensor(f"{name}.weight_packed"), module.in_features)
            assert torch.equal(q, quantize_weight(module.weight, grid, scales[name])[0]), name
            moved += int((q != quantize_weight(by_hand[f"{name}.weight"], grid, scales[name])[0]).sum())
    assert moved > 0  # training changed integers
    assert_reloads_with_the_grid_logits("llama", model, grid, out, kept)


@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])
def test_learned_scales_train_and_the_export_writes_them(tmp_path, compute_dtype):
    """qad_learn_scales: the scales move off absmax / 7.5; the checkpoint holds the trained scales byte for byte and
    the integers rounded on them, and reloads with the fake-quantized model's logits."""
    folder, config, grid, model, facts, kept = trained(tmp_path, "qwen2", "qad-w4a16", steps=4, qad_learning_rate=1e-3,
                                                       qad_learn_scales=True, compute_dtype=compute_dtype)  # fmt: skip
    assert facts["scales"] == "learned" and set(kept) == set(grid_linears(model))
    assert not any(hasattr(m, "qad_scale") for m in grid_linears(model).values())  # detached after training
    out = exported(tmp_path, model, folder, config, kept)
    moved = 0
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        for name, module in grid_linears(model).items():
            stored = f.get_tensor(f"{name}.weight_scale")
            assert stored.dtype == getattr(torch, compute_dtype) and torch.equal(stored, kept[name]), name
            q = unpack_int4(f.get_tensor(f"{name}.weight_packed"), module.in_features)
            assert torch.equal(q, quantize_weight(module.weight, grid, kept[name])[0]), name
            moved += int((stored != quantize_weight(module.weight, grid)[1]).sum())  # not the trained weights' absmax
    assert moved > 0.9 * sum(m.weight.numel() // 32 for m in grid_linears(model).values())
    assert facts["scale_change_mean"] == pytest.approx(
        float(torch.cat([(kept[k].float() / first.float() - 1).abs().flatten()
                         for k, first in start_scales(folder, grid).items()]).mean()), rel=1e-5)  # fmt: skip
    if compute_dtype != "float32":
        return  # the rest of a bf16 checkpoint (biases, norms, embeddings) is bf16 too: its logits aren't fp32's
    assert_reloads_with_the_grid_logits("qwen2", model, grid, out, kept)


def start_scales(folder, grid) -> dict:
    """Round to nearest's scales (absmax / 7.5) of the untrained model: where learned scales start."""
    from hfcompress.modeling import load_causal_lm

    return {name: quantize_weight(m.weight, grid)[1] for name, m in grid_linears(load_causal_lm(str(folder))).items()}


@pytest.mark.skipif(not is_llmcompressor_available(), reason="needs llmcompressor (make setup-llmc)")
def test_quantize_starts_qad_from_gptq_on_the_same_rows(tmp_path):
    """qad_start='gptq': quantize() runs GPTQ on the training rows first; the export keeps GPTQ's scales."""
    folder = model_dir(tmp_path, "llama")
    rows = training_rows()
    gptq = quantize(folder, tmp_path / "gptq", method="gptq-w4a16", group_size=32, calibration_dataset=rows,
                    max_length=32, calibration_samples=8)  # fmt: skip
    out = quantize(folder, tmp_path / "qad", method="qad-w4a16", group_size=32, calibration_dataset=rows,
                   qad_steps=2, qad_batch_size=4, max_length=32, calibration_samples=8, qad_start="gptq")  # fmt: skip
    record = json.loads((out / "hfcompress_quantization.json").read_text())
    assert record["qad"]["start"] == "gptq" and record["qad"]["start_minutes"] >= 0
    with safe_open(str(gptq / "model.safetensors"), "pt") as a, safe_open(str(out / "model.safetensors"), "pt") as b:
        scales = [k for k in a.keys() if k.endswith("weight_scale")]
        assert len(scales) == 14
        for key in scales:
            assert torch.equal(a.get_tensor(key), b.get_tensor(key)), key


# -- quantize() -------------------------------------------------------------------------------------------------


def test_quantize_runs_qad_and_records_what_it_trained(tmp_path):
    folder = model_dir(tmp_path, "qwen2")
    rows = training_rows()
    out = quantize(folder, tmp_path / "qad", method="qad-w4a16", group_size=32, calibration_dataset=rows,
                   qad_steps=2, qad_batch_size=4, max_length=32)  # fmt: skip
    record = json.loads((out / "hfcompress_quantization.json").read_text())
    assert record["method"] == "qad-w4a16"
    assert record["qad"]["steps"] == 2 and record["qad"]["rows"] == 8 and record["qad"]["tokens_seen"] == 2 * 4 * 32
    assert record["qad"]["grid"] == {"kind": "int4", "group_size": 32, "scale_dtype": "torch.float32"}
    assert (out / "tokenizer.json").is_file()
    if is_compressed_tensors_available():  # load_quantized reads what the checkpoint's integers and scales say
        by_hand = make_decoder("qwen2", vocab_size=len(shared_bpe_tokenizer()), hidden=64, intermediate=128, heads=4,
                               kv_heads=2, num_layers=2)  # fmt: skip
        by_hand.load_state_dict({k: v.float() for k, v in dequantized_checkpoint(out).items()}, strict=False)
        ids = sample_ids()
        with torch.no_grad():
            assert torch.allclose(load_quantized(out).eval()(ids).logits, by_hand.eval()(ids).logits, atol=1e-5)


def test_what_qad_cant_take_is_refused_before_any_work(tmp_path):
    folder = model_dir(tmp_path, "llama")
    rows = training_rows()
    with pytest.raises(HfCompressError, match=r"groups of 48 input columns; hidden_size 64, intermediate_size 128 "
                                              r"doesn't divide by it; group sizes that divide every layer: 64, 32, 16"):
        quantize(folder, tmp_path / "a", method="qad-w4a16", group_size=48, calibration_dataset=rows)
    with pytest.raises(HfCompressError, match="can't take gguf_imatrix"):
        quantize(folder, tmp_path / "b", method="qad-gguf-q4_0", gguf_imatrix=True, calibration_dataset=rows)
    with pytest.raises(HfCompressError, match="qad_start='gptq' is for qad-w4a16"):
        quantize(folder, tmp_path / "b", method="qad-gguf-q4_0", qad_start="gptq", calibration_dataset=rows)
    with pytest.raises(HfCompressError, match="qad_learn_scales is for qad-w4a16"):
        quantize(folder, tmp_path / "b", method="qad-gguf-q4_0", qad_learn_scales=True, calibration_dataset=rows)
    with pytest.raises(HfCompressError, match="qad_start"):
        QuantizationConfig(method="qad-w4a16", qad_start="awq")
    with pytest.raises(HfCompressError, match="qad_steps must be >= 1, got 0"):
        QuantizationConfig(method="qad-w4a16", qad_steps=0)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@needs_gguf
def test_the_pipeline_runs_qad_next_to_round_to_nearest_on_the_training_text(tmp_path):
    """A quantize stage with gguf-q4_0 and qad-gguf-q4_0 on the run's own training rows; evaluate measures both
    (here in transformers, from the GGUF files)."""
    import gguf
    import yaml
    from conftest import held_out_text

    from hfcompress.pipeline import run_pipeline

    folder = model_dir(tmp_path, "llama", sharpen=4.0)
    (tmp_path / "text").mkdir()
    for split, count, seed in (("train", 30, 0), ("validation", 10, 1), ("test", 10, 2)):
        (tmp_path / "text" / f"{split}.txt").write_text(held_out_text(count, seed))
    stages = [
        {"quantize": {"methods": "gguf-q4_0,qad-gguf-q4_0", "sources": "teacher", "gguf_writer": "hfcompress",
                      "calibration_samples": 6, "qad_steps": 3, "qad_batch_size": 2, "qad_learning_rate": 3e-4}},
        {"evaluate": {"objective": "size", "min_kept": 0.01, "latency_rounds": 1, "generate_tokens": 4,
                      "prompt_batch_size": 2, "memory": False, "plots": False, "gguf_engine": "transformers"}},
    ]  # fmt: skip
    config = {"output_dir": str(tmp_path / "out"), "model_name_or_path": str(folder), "task_type": "causal_lm",
              "data": {"dataset_name": str(tmp_path / "text"), "block_size": 32, "eval_stride": 32,
                       "max_eval_tokens": 128},
              "training": {"per_device_train_batch_size": 2, "report_to": "none", "disable_tqdm": True},
              "stages": stages}  # fmt: skip
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(config))
    report = run_pipeline(tmp_path / "pipeline.yaml")
    rows = {r["model"]: r for r in report["results"]}
    assert list(rows) == ["teacher", "teacher gguf-q4_0", "teacher qad-gguf-q4_0"]
    out = tmp_path / "out" / "quantize"
    record = json.loads((out / "qad-gguf-q4_0" / "hfcompress_quantization.json").read_text())
    assert record["qad"]["steps"] == 3 and record["qad"]["rows"] == 6 and record["writer"] == "hfcompress"
    tensors = gguf.GGUFReader(out / "qad-gguf-q4_0" / "model-Q4_0.gguf").tensors
    assert {t.tensor_type.name for t in tensors if t.name.endswith(("_proj.weight", "attn_q.weight", "ffn_up.weight"))} <= {"Q4_0"}
    assert sum(t.tensor_type.name == "Q4_0" for t in tensors) == 14  # every linear of the 2 layers
    assert rows["teacher qad-gguf-q4_0"]["size_mb"] == pytest.approx(rows["teacher gguf-q4_0"]["size_mb"], rel=1e-3)


def test_bf16_autocast_trains_as_fp32_does_within_a_stated_tolerance(tmp_path, monkeypatch):
    """QAD under bf16 autocast against fp32 from the same start: the first step's KD loss (the rounded model
    against the teacher, both forwards under autocast) within 5%, and after 30 steps the quantized model as close
    to the teacher (KL within 10% of fp32's, both well below rounding's). Measured: the same first loss to the 4
    decimals the trainer logs; after 30 steps +1.3% (0.000559 against 0.000552; rounding alone 0.00234)."""
    from hfcompress.modeling import load_causal_lm

    monkeypatch.setattr("hfcompress.runtime.fast_bf16_cpu", lambda: True)  # the speed check is not the point here
    results = {}
    for bf16 in (False, True):
        folder, config, grid, model, facts, _ = trained(tmp_path / str(bf16), "llama", "qad-w4a16", steps=30,
                                                     sharpen=8.0, qad_bf16=bf16)  # fmt: skip
        teacher = load_causal_lm(str(folder))
        ids = torch.tensor(training_rows()["input_ids"])
        with torch.no_grad():
            target = torch.log_softmax(teacher(ids).logits, -1)
            own = torch.log_softmax(grid_logits(model, grid, ids), -1)
            rounded = torch.log_softmax(grid_logits(load_causal_lm(str(folder)), grid, ids), -1)
        results[bf16] = (facts["kd_loss_first"], kl_divergence(target, own), kl_divergence(target, rounded))
        assert facts["bf16"] is bf16
    (first32, after32, rounded), (first16, after16, _) = results[False], results[True]
    # transformers 4.57 leaves ACCELERATE_MIXED_PRECISION=bf16 behind, which put every later Trainer under autocast
    assert os.environ.get("ACCELERATE_MIXED_PRECISION") in (None, "no")
    assert first16 == pytest.approx(first32, rel=0.05)
    assert after16 == pytest.approx(after32, rel=0.1) and after16 < 0.5 * rounded


def test_bf16_autocast_is_refused_on_a_cpu_that_multiplies_bf16_slowly(tmp_path, monkeypatch):
    monkeypatch.setattr("hfcompress.runtime.fast_bf16_cpu", lambda: False)
    monkeypatch.setattr("hfcompress.runtime.accelerator_available", lambda: False)
    with pytest.raises(HfCompressError, match="qad_bf16: this CPU has neither avx512_bf16 nor AMX"):
        quantize(model_dir(tmp_path, "llama"), tmp_path / "out", method="qad-w4a16", group_size=32, qad_bf16=True,
                 calibration_dataset=training_rows())  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_the_pipeline_refuses_qad_under_several_processes(tmp_path, monkeypatch):
    """The quantize stage runs in the main process alone, where a Trainer would wait for the others forever."""
    import yaml

    from hfcompress.pipeline.config import load_pipeline_config

    monkeypatch.setenv("WORLD_SIZE", "2")
    config = {"output_dir": str(tmp_path / "out"), "model_name_or_path": "m", "task_type": "causal_lm",
              "data": {"dataset_name": "austen_novels"}, "stages": [{"quantize": {"methods": "gguf-q4_0,qad-gguf-q4_0"}}]}  # fmt: skip
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(HfCompressError, match="qad-gguf-q4_0 trains inside the quantize stage, which runs in the main"):
        load_pipeline_config(tmp_path / "p.yaml")
