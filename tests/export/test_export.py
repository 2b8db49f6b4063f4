"""compress.export_onnx end to end: file contents, checker, ONNX Runtime agreement, errors."""

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

import compress
from export import export_float
from export.validate import compare, ort_session
from quant.spec import bias_scale
from tests.export.models import TransformerBlock
from tests.ort_agreement import assert_ort_agreement


@pytest.fixture(scope="module")
def mnist_q(trained_mnist_cnn, mnist_split):
    calib = [(mnist_split.x_train[i : i + 100], None) for i in range(0, 500, 100)]
    return compress.quantize(trained_mnist_cnn, calib, progress=False)


def _export(qmodel, path, x, **kw):
    compress.export_onnx(qmodel, path, x, **kw)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
def test_mnist_cnn_ort_agrees_with_simulation(mnist_q, mnist_split, tmp_path, fmt):
    model = _export(mnist_q, tmp_path / "m.onnx", mnist_split.x_test[:2], format=fmt)
    sess = ort_session(model.SerializeToString())
    for batch in (1, 7):  # the batch dimension is symbolic
        out = sess.run(None, {"x": mnist_split.x_test[:batch].numpy()})[0]
        assert out.shape == (batch, 10)
    agree = compare(mnist_q, sess, mnist_split.x_test)
    assert_ort_agreement(agree, codes=0.99, saturated_top1=0.95)  # Zen 3: 98.8 % top-1, 11 % codes


def test_qdq_file_holds_int8_weights_int32_bias_and_uint8_activations(mnist_q, mnist_split, tmp_path):
    model = _export(mnist_q, tmp_path / "m.onnx", mnist_split.x_test[:2])
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    ops = [n.op_type for n in model.graph.node]
    assert "BatchNormalization" not in ops  # folded
    assert model.opset_import[0].version >= 13
    conv1 = mnist_q.conv1
    w = inits["conv1.weight_q"]
    assert w.dtype == np.int8 and w.shape == tuple(conv1.weight.shape) and np.abs(w).max() <= 127
    assert inits["conv1.weight_scale"].shape == (conv1.weight.shape[0],)  # per output channel
    dq_w = next(n for n in model.graph.node if n.input and n.input[0] == "conv1.weight_q")
    assert next(a.i for a in dq_w.attribute if a.name == "axis") == 0
    b = inits["conv1.bias_q"]
    s_b = bias_scale(mnist_q.act_quant_0.scale, conv1.weight_quant.scale)
    assert b.dtype == np.int32
    np.testing.assert_array_equal(
        b, torch.round(conv1.effective_bias().detach() / s_b).numpy().astype(np.int32)
    )
    np.testing.assert_array_equal(inits["conv1.bias_scale"], s_b.numpy())
    act_zps = [
        v for k, v in inits.items() if k.endswith(".zero_point") and "weight" not in k and "bias" not in k
    ]
    assert act_zps and all(z.dtype == np.uint8 and z.shape == () for z in act_zps)


def test_int8_file_is_about_4x_smaller_than_fp32(trained_mnist_cnn, mnist_q, mnist_split, tmp_path):
    x = mnist_split.x_test[:2]
    export_float(trained_mnist_cnn, tmp_path / "f.onnx", x)
    compress.export_onnx(mnist_q, tmp_path / "q.onnx", x)
    ratio = (tmp_path / "f.onnx").stat().st_size / (tmp_path / "q.onnx").stat().st_size
    assert ratio > 3.5


def test_int8_activations_and_per_tensor_4bit_weights(trained_mnist_cnn, mnist_split, tmp_path):
    calib = [(mnist_split.x_train[:200], None)]
    q = compress.quantize(
        trained_mnist_cnn, calib, activation_dtype="int8", per_channel=False, weight_bits=4, progress=False
    )
    for fmt in ("qdq", "qoperator"):
        model = _export(q, tmp_path / f"{fmt}.onnx", mnist_split.x_test[:2], format=fmt)
        inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        w = inits["conv2.weight_q"]
        assert np.abs(w).max() <= 7 and inits["conv2.weight_scale"].shape == ()
        zps = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
        assert zps and all(z.dtype == np.int8 for z in zps)
        agree = compare(q, ort_session(model.SerializeToString()), mnist_split.x_test[:300])
        assert agree.top1_agreement >= 0.99 and agree.max_code_diff <= 1


def test_fixed_batch(mnist_q, mnist_split, tmp_path):
    model = _export(mnist_q, tmp_path / "m.onnx", mnist_split.x_test[:3], dynamic_batch=False)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [3, 1, 28, 28]


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
def test_transformer_block_exports_and_runs(tmp_path, fmt):
    torch.manual_seed(0)
    x = torch.randn(200, 8, 16)
    q = compress.quantize(TransformerBlock().eval(), [x[:64], x[64:128]], progress=False)
    model = _export(q, tmp_path / "t.onnx", x[:2], format=fmt)
    ops = {n.op_type for n in model.graph.node}
    assert {"LayerNormalization", "Softmax", "Erf"} <= ops
    assert ("MatMul" if fmt == "qdq" else "QLinearMatMul") in ops
    sess = ort_session(model.SerializeToString())
    assert sess.run(None, {"x": x[:7].numpy()})[0].shape == (7, 10)
    agree = compare(q, sess, x)
    assert_ort_agreement(agree, codes=0.0, saturated_top1=0.5)  # saturating bound: conservative, unmeasured


def test_qat_model_exports(trained_mnist_cnn, mnist_loaders, mnist_split, tmp_path):
    x = mnist_split.x_train[:64]
    qat = compress.prepare_qat(trained_mnist_cnn, x, progress=False)
    opt = torch.optim.SGD(qat.parameters(), lr=1e-3)
    for i, (xb, yb) in enumerate(mnist_loaders[0]):
        loss = F.cross_entropy(qat(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i == 3:
            break
    qat.eval()
    model = _export(qat, tmp_path / "qat.onnx", x[:2])
    assert "BatchNormalization" not in {n.op_type for n in model.graph.node}
    agree = compare(qat, ort_session(model.SerializeToString()), mnist_split.x_test[:300])
    assert_ort_agreement(agree, codes=0.0, top1=0.99, saturated_top1=0.9)


class _ShuffleResize(nn.Module):
    """PixelShuffle and F.interpolate: no integer kernel, so float ops between Q/DQ in the file."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.fc = nn.Linear(4 * 28 * 28, 10)

    def forward(self, x):
        y = self.shuffle(self.conv(x))  # 4 → 1 channel at 56×56
        y = F.interpolate(y, size=(28, 28), mode="bilinear")
        return self.fc(torch.cat([y] * 4, 1).flatten(1))


def test_float_ops_export_between_qdq_and_agree(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(64, 1, 28, 28)
    q = compress.quantize(_ShuffleResize().eval(), [x[:32], x[32:]], progress=False)
    model = _export(q, tmp_path / "m.onnx", x[:2])
    ops = {n.op_type for n in model.graph.node}
    assert {"DepthToSpace", "Resize", "QuantizeLinear"} <= ops
    agree = compare(q, ort_session(model.SerializeToString()), x)
    assert agree.codes_identical >= 0.999 and agree.max_code_diff <= 1


@torch.library.custom_op("compress_test::mystery", mutates_args=())
def _mystery(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


@_mystery.register_fake
def _(x):
    return torch.empty_like(x)


class _Mystery(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)

    def forward(self, x):
        return torch.ops.compress_test.mystery(self.conv(x))


def test_an_op_without_onnx_translation_is_named_and_nothing_is_written(tmp_path):
    x = torch.randn(8, 1, 28, 28)
    q = compress.quantize(_Mystery().eval(), [x], progress=False)  # captured: an opaque custom op
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous file")
    with pytest.raises(compress.ExportError, match="mystery"):
        compress.export_onnx(q, path, x[:2])
    assert path.read_bytes() == b"previous file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_bad_arguments_raise_export_error(mnist_q, tmp_path):
    x = torch.randn(2, 1, 28, 28)
    with pytest.raises(compress.ExportError, match="format"):
        compress.export_onnx(mnist_q, tmp_path / "m.onnx", x, format="tflite")
    with pytest.raises(compress.ExportError, match="opset"):
        compress.export_onnx(mnist_q, tmp_path / "m.onnx", x, opset=11)
    with pytest.raises(compress.ExportError, match="GraphModule"):
        compress.export_onnx(nn.Linear(2, 2), tmp_path / "m.onnx", torch.randn(1, 2))
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_torchvision_models_agree_with_simulation(arch, mnist_split, tmp_path):
    """Random weights (no downloads), BN statistics from MNIST images resized to 32×32 RGB."""
    import torchvision

    def rgb(x):
        return F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)

    train, test = rgb(mnist_split.x_train[:1280]), rgb(mnist_split.x_test)
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(num_classes=10).train()
    with torch.no_grad():
        for i in range(0, 1280, 64):
            model(train[i : i + 64])
    q = compress.quantize(
        model.eval(), [(train[i : i + 64], None) for i in range(0, 512, 64)], progress=False
    )
    model_proto = _export(q, tmp_path / f"{arch}.onnx", test[:2])
    agree = compare(q, ort_session(model_proto.SerializeToString()), test)
    assert_ort_agreement(agree, codes=0.0, saturated_top1=0.3)  # Zen 3 resnet18 64×64: 56.5 %


def test_both_formats_share_one_torch_onnx_pass_until_the_model_changes(tmp_path, monkeypatch):
    """QDQ then QOperator of one model: one torch.onnx export; an in-place weight update rebuilds."""
    import export.api

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    x = torch.randn(4, 3, 12, 12)
    q = compress.quantize(model, [x], progress=False)
    builds = []
    real = export.api.build_qdq
    monkeypatch.setattr(export.api, "build_qdq", lambda *a: builds.append(1) or real(*a))
    qdq = _export(q, tmp_path / "a.onnx", x[:2])
    qop = _export(q, tmp_path / "b.onnx", x[:2], format="qoperator")
    assert len(builds) == 1 and any(n.op_type == "QLinearConv" for n in qop.graph.node)
    with torch.no_grad():
        q.get_submodule("0").weight.mul_(-1.0)  # in place: same storage, new version
    again = _export(q, tmp_path / "c.onnx", x[:2])
    assert len(builds) == 2
    w = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer if t.data_type == onnx.TensorProto.INT8}
    w2 = {t.name: numpy_helper.to_array(t) for t in again.graph.initializer if t.data_type == onnx.TensorProto.INT8}
    assert any(not np.array_equal(w[k], w2[k]) for k in w if k in w2)
    _export(q, tmp_path / "d.onnx", x[2:])  # other values, same shapes and state: cached
    assert len(builds) == 2
    _export(q, tmp_path / "e.onnx", x[:3])  # another example shape: built again
    assert len(builds) == 3
