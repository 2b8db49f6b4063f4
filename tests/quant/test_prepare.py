"""Graph preparation: folding, fusion, quantizer placement, errors, loader forms."""

import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import compress
from compress.models import MnistCNN, sqnr_db
from quant import FakeQuantize, QuantConv2d, QuantLinear, quantizers


def _activation_quantizers(model):
    return [m for _, m in quantizers(model) if not m.spec.per_channel and "weight" not in m.name]


def test_mnist_cnn_graph_is_folded_fused_and_quantized():
    model = MnistCNN(width=8).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = [torch.randn(4, 1, 28, 28) for _ in range(3)]
    q = compress.quantize(model, data, progress=False)
    mods = dict(q.named_modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in mods.values())
    assert all(isinstance(mods[f"conv{i}"], QuantConv2d) for i in range(1, 5))
    assert all(mods[f"conv{i}"].act == "relu" for i in (1, 2, 4))
    assert mods["conv3"].act == "relu" and isinstance(mods["fc"], QuantLinear) and mods["fc"].act is None
    # input, conv1..conv4 outputs, the residual add and the logits: one quantizer each
    assert len(_activation_quantizers(q)) == 7
    assert not q.training
    # the input model is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(isinstance(m, FakeQuantize) for m in model.modules())


def test_simulation_is_close_to_float():
    torch.manual_seed(0)
    model = MnistCNN(width=8).eval()
    data = [torch.randn(8, 1, 28, 28) for _ in range(4)]
    q = compress.quantize(model, data, progress=False)
    x = torch.randn(16, 1, 28, 28)
    assert sqnr_db(model(x), q(x)) > 25


def test_zero_channels_are_finite():
    model = MnistCNN(width=8).eval()
    with torch.no_grad():
        model.conv2.weight[3].zero_()  # a pruned filter
    q = compress.quantize(model, [torch.randn(4, 1, 28, 28)], progress=False)
    assert torch.isfinite(q.conv2.weight_quant.scale).all() and (q.conv2.weight_quant.scale > 0).all()
    assert torch.isfinite(q(torch.randn(2, 1, 28, 28))).all()


def _bn_stats(model: nn.Module, shape) -> nn.Module:
    """Realistic per-channel BN statistics (random init leaves them all 0/1)."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(*shape))
    return model.eval()


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_torchvision_models_quantize(arch):
    torch.manual_seed(0)
    model = _bn_stats(getattr(torchvision.models, arch)(num_classes=10), (8, 3, 64, 64))
    data = [torch.randn(4, 3, 64, 64) for _ in range(2)]
    q = compress.quantize(model, data, method="percentile", progress=False)
    mods = dict(q.named_modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in mods.values())
    if arch == "mobilenet_v2":
        dw = [m for m in mods.values() if isinstance(m, QuantConv2d) and m.groups > 1]
        assert dw and all(m.act == "relu6" for m in dw)
    x = torch.randn(2, 3, 64, 64)
    assert sqnr_db(model(x), q(x)) > 10


class Block(nn.Module):
    """A pre-norm transformer block: Linear, LayerNorm, GELU, matmul, softmax, residual adds."""

    def __init__(self, d: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.h = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
        q = q.reshape(b, t, self.h, d // self.h).transpose(1, 2)
        k = k.reshape(b, t, self.h, d // self.h).transpose(1, 2)
        v = v.reshape(b, t, self.h, d // self.h).transpose(1, 2)
        att = F.softmax(torch.matmul(q, k.transpose(-2, -1)) / (d // self.h) ** 0.5, dim=-1)
        y = torch.matmul(att, v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


def test_transformer_block():
    torch.manual_seed(0)
    model = Block().eval()
    data = [torch.randn(2, 10, 32) for _ in range(4)]
    q = compress.quantize(model, data, method="kl", progress=False)
    names = {m.name for m in _activation_quantizers(q)}
    # q, k, v stay on the qkv output grid (chunk/reshape/transpose are exact); the float
    # softmax output gets its own quantizer before the second matmul
    assert {"qkv output", "matmul output", "matmul_1 input (softmax)", "matmul_1 output"} <= names
    assert "fc2 input (gelu)" in names and "proj input (transpose_3)" not in names
    x = torch.randn(2, 10, 32)
    assert sqnr_db(model(x), q(x)) > 15


class Untraceable(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            return x * 2
        return x


class WithUntraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.odd = Untraceable()
        self.fc = nn.Linear(4 * 26 * 26, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.odd(self.conv(x)), 1))


def test_untraceable_module_is_named_or_left_float():
    data = [torch.randn(2, 1, 28, 28)]
    with pytest.raises(compress.QuantizationError, match="'odd'"):
        compress.quantize(WithUntraceable(), data, progress=False)
    with pytest.warns(UserWarning, match="odd"):
        q = compress.quantize(WithUntraceable(), data, on_untraceable="float", progress=False)
    assert isinstance(q.conv, QuantConv2d) and isinstance(q.fc, QuantLinear)
    assert torch.isfinite(q(torch.randn(2, 1, 28, 28))).all()


def test_skip_keeps_a_layer_float():
    q = compress.quantize(MnistCNN(width=8).eval(), [torch.randn(2, 1, 28, 28)], skip=["fc"], progress=False)
    assert type(q.fc) is nn.Linear


@pytest.mark.parametrize(
    "loader",
    [
        [torch.randn(2, 1, 28, 28)],
        [(torch.randn(2, 1, 28, 28), torch.tensor([0, 1]))],
        [[torch.randn(2, 1, 28, 28), torch.tensor([0, 1])]],
        [{"x": torch.randn(2, 1, 28, 28), "label": torch.tensor([0, 1])}],
    ],
    ids=["tensor", "tuple", "list", "dict"],
)
def test_loader_forms(loader):
    q = compress.quantize(MnistCNN(width=8).eval(), loader, progress=False)
    assert q(torch.randn(1, 1, 28, 28)).shape == (1, 10)


def test_bad_inputs_raise_compress_errors_naming_the_cause():
    model = MnistCNN(width=8).eval()
    with pytest.raises(compress.CompressError, match="empty"):
        compress.quantize(model, [], progress=False)
    with pytest.raises(compress.CompressError, match="unknown calibration method 'foo'"):
        compress.quantize(model, [torch.randn(2, 1, 28, 28)], method="foo", progress=False)
    bad = [torch.randn(2, 1, 28, 28), torch.full((2, 1, 28, 28), float("nan"))]
    with pytest.raises(compress.CompressError, match="conv1 input"):
        compress.quantize(model, bad, progress=False)


class DeadRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(2 * 26 * 26, 3)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.fill_(-1.0)

    def forward(self, x):
        return self.fc(torch.flatten(F.relu(self.conv(x)), 1))


def test_zero_range_activation_is_an_error_or_a_warning():
    data = [torch.randn(2, 1, 28, 28)]
    with pytest.raises(compress.QuantizationError, match="conv output.*zero range"):
        compress.quantize(DeadRelu(), data, progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q = compress.quantize(DeadRelu(), data, on_zero_range="warn", progress=False)
    assert any("zero range" in str(w.message) for w in caught)
    assert torch.isfinite(q(data[0])).all()


def test_progress_bar_can_be_turned_off(capsys):
    compress.quantize(MnistCNN(width=8).eval(), [torch.randn(2, 1, 28, 28)], progress=False)
    assert "calibrate" not in capsys.readouterr().err


class RootControlFlow(nn.Module):
    """Data-dependent control flow in the model's own forward: no submodule to leave float."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 26 * 26, 10)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        if y.mean() > 10:
            y = y * 0.5
        return self.fc(torch.flatten(y, 1))


def test_untraceable_root_falls_back_to_eager_leaves():
    torch.manual_seed(0)
    model = RootControlFlow().eval()
    data = [torch.randn(4, 1, 28, 28) for _ in range(3)]
    with pytest.raises(compress.QuantizationError, match="RootControlFlow itself"):
        compress.quantize(model, data, progress=False)
    with pytest.warns(UserWarning, match="leaves only"):
        q = compress.quantize(model, data, on_untraceable="float", progress=False)
    from quant.eager import EagerQuantLeaf

    assert isinstance(q.conv, EagerQuantLeaf) and isinstance(q.fc, EagerQuantLeaf)
    x = torch.randn(8, 1, 28, 28)
    out = q(x)
    codes = out / q.fc.output_quant.scale  # the output lies on the int8 grid
    assert torch.allclose(codes, torch.round(codes), atol=1e-3)

    class Traceable(RootControlFlow):  # the same network without the branch (never taken here)
        def forward(self, x):
            return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))

    plain = Traceable().eval()
    plain.load_state_dict(model.state_dict())
    graph_q = compress.quantize(plain, data, progress=False)
    # leaf-only quantization costs about what the graph-mode int8 model costs
    assert abs(sqnr_db(model(x), out) - sqnr_db(plain(x), graph_q(x))) < 1.0
