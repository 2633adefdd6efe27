"""Quantization-aware training: the fake quantizers match ONNX Runtime's rounding, gradients pass straight
through, and a trained model's baked weights are exactly what ONNX Runtime's int8 quantizer stores."""

import numpy as np
import pytest
import torch
from conftest import make_bert, make_tokenizer
from test_pruning import plain_trainer
from test_trainer import tiny_data

from hfcompress import HfCompressError
from hfcompress.quantization import is_optimum_onnx_available, quantize
from hfcompress.quantization.qat import (
    QuantizationAwareCallback,
    attach_fake_quant,
    bake_fake_quant,
    fake_quant_activation,
    fake_quant_weight,
)

needs_onnx = pytest.mark.skipif(not is_optimum_onnx_available(), reason="needs the [onnx] extra")


@pytest.mark.parametrize("per_channel", [False, True])
def test_fake_quant_weight_grid_and_straight_through_gradient(per_channel):
    torch.manual_seed(0)
    w = (torch.randn(16, 32) * torch.linspace(0.1, 3, 16)[:, None]).requires_grad_()
    q = fake_quant_weight(w, per_channel)
    scale = (w.abs().amax(1, keepdim=True) if per_channel else w.abs().amax()) / 127
    steps = (q / scale).detach()
    assert torch.allclose(steps, steps.round(), atol=1e-3) and steps.abs().max() <= 127 + 1e-3
    assert 0 < (q - w).abs().max() <= scale.max() / 2 + 1e-6  # rounded, by at most half a step
    q.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # straight through


@needs_onnx
@pytest.mark.onnx
def test_fake_quant_activation_matches_onnx_runtime():
    import onnxruntime
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "scale", "zero"]),
            helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["y"]),
        ],
        "dql",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 7, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 7, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    torch.manual_seed(0)
    for x in (torch.randn(4, 7, 8) * 3 + 1, torch.rand(4, 7, 8) + 0.5, -torch.rand(4, 7, 8)):
        expected = session.run(None, {"x": x.numpy()})[0]
        ours = fake_quant_activation(x).numpy()
        assert np.abs(ours - expected).max() <= 1e-5 * max(1.0, float(np.abs(expected).max()))


def test_attach_and_bake_keep_the_state_dict(tmp_path):
    model = make_bert(num_layers=2, tokenizer=make_tokenizer(tmp_path), seed=2).eval()
    keys = list(model.state_dict())
    names = attach_fake_quant(model, per_channel=True, pattern=r"attention\.self")
    assert names and all("attention.self" in n for n in names) and list(model.state_dict()) == keys
    ids = torch.randint(5, 40, (2, 6))
    with torch.no_grad():
        fake = model(input_ids=ids).logits
        assert bake_fake_quant(model) == len(names)
        assert not any("forward" in m.__dict__ for m in model.modules())
        baked = model(input_ids=ids).logits  # rounded weights, inputs no longer rounded
    assert list(model.state_dict()) == keys and torch.allclose(fake, baked, atol=0.05)
    with pytest.raises(HfCompressError, match="matches no nn.Linear"):
        attach_fake_quant(model, pattern="nothing_like_this")


@needs_onnx
@pytest.mark.onnx
@pytest.mark.parametrize("per_channel", [False, True])
def test_trained_weights_are_what_onnx_runtime_stores(tmp_path, per_channel):
    import onnx
    from onnx import numpy_helper

    tok = make_tokenizer(tmp_path)
    model = make_bert(num_layers=2, tokenizer=tok, seed=1)
    keys = list(model.state_dict())
    callback = QuantizationAwareCallback(per_channel=per_channel)
    trainer = plain_trainer(tmp_path, model, tok, tiny_data(tok), callback, num_train_epochs=1)
    result = trainer.train()
    assert (
        np.isfinite(result.training_loss) and len(callback.modules) == 2 * 6 + 2
    )  # 6 per layer, pooler, head
    assert list(model.state_dict()) == keys and not any("forward" in m.__dict__ for m in model.modules())
    model.save_pretrained(tmp_path / "qat")
    tok.save_pretrained(tmp_path / "qat")
    out = quantize(tmp_path / "qat", tmp_path / "int8", method="onnx-int8-dynamic", per_channel=per_channel)

    graph = onnx.load(str(out / "model_quantized.onnx")).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    stored = [
        q.astype(np.float32) * inits[name.replace("_quantized", "_scale")]
        for name, q in inits.items()
        if name.endswith("_quantized") and q.dtype == np.int8
    ]
    weights = [m.weight.detach().numpy() for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(stored) == len(weights)
    for w in weights:  # each baked weight is stored by ONNX Runtime without further rounding
        errors = [np.abs(s - w.T).max() for s in stored if s.shape == w.T.shape]
        assert min(errors) <= 1e-6 * np.abs(w).max()
