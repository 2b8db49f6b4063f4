"""Dynamic int8 LSTM / GRU / RNN: the simulation is what the exported file computes in the bundled
runtime (bit for bit), ONNX Runtime runs the same file to float rounding, and the runtime's
DynamicQuantizeLSTM also runs the file ORT's own quantizer writes."""

import warnings

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import compress
import runtime
from export.weight_only import export_float_model
from quant.dynamic import DynamicLinear
from quant.dynamic_rnn import DynamicGRU, DynamicLSTM, DynamicRNN

ort = pytest.importorskip("onnxruntime")


class Seq(nn.Module):
    """The recurrence alone, all of its outputs returned."""

    def __init__(self, kind, layers, bidirectional, batch_first, bias, **kwargs):
        super().__init__()
        self.rnn = kind(6, 12, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first, bias=bias,
                        **kwargs)

    def forward(self, x):
        y, state = self.rnn(x)
        return (y, *state) if isinstance(state, tuple) else (y, state)


def _ort(path, feeds):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, feeds)


CASES = [(kind, layers, bi, bf, bias) for kind in (nn.LSTM, nn.GRU)
         for layers, bi, bf, bias in ((1, False, True, True), (2, True, True, True), (2, True, False, False))]


@pytest.mark.parametrize(("kind", "layers", "bidirectional", "batch_first", "bias"), CASES,
                         ids=lambda v: getattr(v, "__name__", str(v)))
def test_runtime_is_the_simulation_and_ort_agrees(tmp_path, kind, layers, bidirectional, batch_first, bias):
    torch.manual_seed(layers + 3 * bidirectional + 5 * batch_first)
    model = Seq(kind, layers, bidirectional, batch_first, bias).eval()
    q = compress.quantize_dynamic(model)
    assert isinstance(q.rnn, DynamicLSTM if kind is nn.LSTM else DynamicGRU) and isinstance(model.rnn, kind)
    x = (torch.randn(3, 9, 6) if batch_first else torch.randn(9, 3, 6)) * 2  # batch 3, 9 steps
    names = ["y", "h", "c"][: 3 if kind is nn.LSTM else 2]
    axes = {"input": {0 if batch_first else 1: "batch"}, **{n: {0 if (n == "y" and batch_first) else 1: "batch"}
                                                                for n in names}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = compress.export_dynamic(q, tmp_path / "rnn.onnx", (x,), output_names=names, dynamic_axes=axes)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ("DynamicQuantizeLSTM" in ops) == (kind is nn.LSTM) and not ops & {"LSTM", "GRU"}
    with torch.no_grad():
        sim = [t.numpy() for t in q(x)]
        ref = [t.numpy() for t in model(x)]
    err = max(float(np.abs(a - b).max()) for a, b in zip(sim, ref, strict=True))
    assert 1e-5 < err < 0.05  # quantized (not float), and close to fp32
    for batch in (x, torch.randn(5, 9, 6) if batch_first else torch.randn(9, 5, 6)):
        with torch.no_grad():
            sim = [t.numpy() for t in q(batch)]
        ours = runtime.InferenceSession(str(path), threads=1).run(None, {"input": batch.numpy()})
        for a, b in zip(ours, sim, strict=True):
            assert np.array_equal(a, b)  # same codes, same accumulators, same fp32 operations in order
        theirs = _ort(path, {"input": batch.numpy()})
        for a, b in zip(theirs, sim, strict=True):  # MLAS's approximate sigmoid/tanh only
            np.testing.assert_allclose(a, b, atol=2e-5)


def test_gru_file_fixes_the_sequence_length(tmp_path):
    torch.manual_seed(0)
    q = compress.quantize_dynamic(Seq(nn.GRU, 1, False, True, True).eval())
    x = torch.randn(2, 5, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(compress.ExportError, match=r"GRU node .*static sequence length"):
            compress.export_dynamic(q, tmp_path / "dyn_t.onnx", (x,), output_names=["y", "h"],
                                    dynamic_axes={"input": {0: "batch", 1: "time"}})
        path = compress.export_dynamic(q, tmp_path / "gru.onnx", (x,), output_names=["y", "h"])
    session = runtime.InferenceSession(str(path), threads=1)
    session.run(None, {"input": np.random.rand(3, 5, 6).astype(np.float32)})
    longer = {"input": np.random.rand(2, 7, 6).astype(np.float32)}
    with pytest.raises(runtime.InferenceError, match=r"declares \['batch', 5, 6\]"):
        session.run(None, longer)
    with pytest.raises(Exception):  # noqa: B017 - ORT's own error type
        _ort(path, longer)


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.gru = nn.LSTM(8, 16, batch_first=True), nn.GRU(16, 16, batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(self.gru(self.rnn(x)[0])[0])


def test_lstm_gru_and_linear_in_one_model_and_skip_keeps_float(tmp_path):
    torch.manual_seed(1)
    model = Tagger().eval()
    q = compress.quantize_dynamic(model)
    assert isinstance(q.rnn, DynamicLSTM) and isinstance(q.gru, DynamicGRU) and isinstance(q.head, DynamicLinear)
    x = torch.randn(4, 10, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = compress.export_dynamic(q, tmp_path / "tagger.onnx", (x,))
    with torch.no_grad():
        sim = q(x).numpy()
    assert np.array_equal(runtime.InferenceSession(str(path), threads=1).run(None, {"input": x.numpy()})[0], sim)
    np.testing.assert_allclose(_ort(path, {"input": x.numpy()})[0], sim, atol=2e-5)

    kept = compress.quantize_dynamic(model, skip=["gru"])
    assert isinstance(kept.gru, nn.GRU) and isinstance(kept.rnn, DynamicLSTM)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = compress.export_dynamic(kept, tmp_path / "kept.onnx", (x,))
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "GRU" in ops and "DynamicQuantizeLSTM" in ops
    with torch.no_grad():
        sim = kept(x).numpy()
    np.testing.assert_allclose(runtime.InferenceSession(str(path), threads=1).run(None, {"input": x.numpy()})[0],
                               sim, atol=1e-5)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_plain_rnn_unrolled(tmp_path, nonlinearity):
    torch.manual_seed(4)
    model = Seq(nn.RNN, 2, True, True, True, nonlinearity=nonlinearity).eval()
    q = compress.quantize_dynamic(model)
    assert isinstance(q.rnn, DynamicRNN) and q.rnn.nonlinearity == nonlinearity
    x = torch.randn(3, 8, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = compress.export_dynamic(q, tmp_path / "rnn.onnx", (x,), output_names=["y", "h"],
                                       dynamic_axes={"input": {0: "batch"}, "y": {0: "batch"}, "h": {1: "batch"}})
    assert not {n.op_type for n in onnx.load(str(path)).graph.node} & {"RNN"}
    with torch.no_grad():
        sim = [t.numpy() for t in q(x)]
        ref = [t.numpy() for t in model(x)]
    assert 1e-5 < max(float(np.abs(a - b).max()) for a, b in zip(sim, ref, strict=True)) < 0.05
    ours = runtime.InferenceSession(str(path), threads=1).run(None, {"input": x.numpy()})
    for a, b in zip(ours, sim, strict=True):
        assert np.array_equal(a, b)
    for a, b in zip(_ort(path, {"input": x.numpy()}), sim, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5)
    kept = compress.quantize_dynamic(nn.Sequential(nn.Linear(4, 8), nn.RNN(8, 8)), skip=["1"])
    assert isinstance(kept[1], nn.RNN) and isinstance(kept[0], DynamicLinear)


def test_runtime_runs_the_file_ort_quantizer_writes(tmp_path):
    """ORT's quantize_dynamic turns the float LSTM into its own DynamicQuantizeLSTM (its weight
    layout, per-tensor or per-channel scales); our op runs it to ORT's numbers up to float
    rounding of the gates."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    torch.manual_seed(2)
    model = Seq(nn.LSTM, 2, True, True, True).eval()
    x = torch.randn(4, 11, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fp = export_float_model(model, (x,), output_names=["y", "h", "c"])
    onnx.save(fp, tmp_path / "fp.onnx")
    for per_channel in (False, True):
        out = tmp_path / f"ort_{per_channel}.onnx"
        quantize_dynamic(tmp_path / "fp.onnx", out, weight_type=QuantType.QInt8, per_channel=per_channel)
        assert "DynamicQuantizeLSTM" in {n.op_type for n in onnx.load(str(out)).graph.node}
        ours = runtime.InferenceSession(str(out), threads=1).run(None, {"input": x.numpy()})
        for a, b in zip(ours, _ort(out, {"input": x.numpy()}), strict=True):
            np.testing.assert_allclose(a, b, atol=2e-5)


class TwiceWithState(nn.Module):
    """One LSTM applied twice (two nodes, one set of weights), the caller's initial state on the first call."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(6, 6, batch_first=True)

    def forward(self, x, h0, c0):
        y, state = self.rnn(x, (h0, c0))
        return self.rnn(y, state)[0]


def test_shared_module_and_initial_state(tmp_path):
    torch.manual_seed(5)
    q = compress.quantize_dynamic(TwiceWithState().eval())
    feeds = {"x": torch.randn(2, 7, 6), "h0": torch.randn(1, 2, 6), "c0": torch.randn(1, 2, 6)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = compress.export_dynamic(q, tmp_path / "twice.onnx", feeds,
                                       dynamic_axes={"x": {0: "b"}, "h0": {1: "b"}, "c0": {1: "b"}})
    assert [n.op_type for n in onnx.load(str(path)).graph.node].count("DynamicQuantizeLSTM") == 2
    with torch.no_grad():
        sim = q(**feeds).numpy()
    np_feeds = {k: v.numpy() for k, v in feeds.items()}
    assert np.array_equal(runtime.InferenceSession(str(path), threads=1).run(None, np_feeds)[0], sim)
    np.testing.assert_allclose(_ort(path, np_feeds)[0], sim, atol=2e-5)
