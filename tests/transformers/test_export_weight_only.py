"""Weight-only export: real 4-bit data in the file, and a GPT-2-style causal LM through int4
GPTQ whose exported logits (our runtime, ONNX Runtime) match the simulation."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import compress
import runtime


def test_int4_file_is_about_eight_times_smaller_than_fp32(tmp_path):
    model = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512)).eval()
    x = torch.randn(2, 512)
    int8 = compress.export_weight_only(compress.quantize_weight_only(model, bits=8), tmp_path / "w8.onnx", (x,))
    int4 = compress.export_weight_only(compress.quantize_weight_only(model, bits=4, symmetric=True),
                                       tmp_path / "w4.onnx", (x,))
    weights = 2 * 512 * 512 * 4
    size4, size8 = int4.stat().st_size, int8.stat().st_size
    # 4 bits a weight plus one fp32 scale per 128: 1/8 + 1/32 of fp32
    assert size4 < weights / 6 and size4 < 0.6 * size8
    q = compress.quantize_weight_only(model, bits=4, symmetric=True)
    out = runtime.InferenceSession(str(int4), threads=1).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(out, q(x).numpy(), rtol=1e-4, atol=1e-5)


def test_module_absent_from_the_forward_is_named(tmp_path):
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(32, 32), nn.Linear(32, 32)

        def forward(self, x):
            return self.used(x)

    q = compress.quantize_weight_only(Unused())
    with pytest.warns(UserWarning, match="unused"):
        compress.export_weight_only(q, tmp_path / "m.onnx", (torch.randn(1, 32),))


class CausalLM(nn.Module):
    """logits of a HF GPT-2 (Conv1D layers) for input_ids, as the exported graph computes them."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids):
        return self.lm(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False).logits


@pytest.mark.slow
def test_gpt2_int4_gptq_logits_match_the_simulation(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=128, n_head=4, vocab_size=512, n_positions=64,
                                     bos_token_id=0, eos_token_id=0)
    model = CausalLM(transformers.GPT2LMHeadModel(config)).eval()
    calib = [torch.randint(0, 512, (4, 32)) for _ in range(4)]
    q = compress.quantize_weight_only(model, calib, method="gptq", bits=4, group_size=32)
    conv1d = [n for n, m in model.named_modules() if type(m).__name__ == "Conv1D"]
    assert conv1d and all(type(q.get_submodule(n)).__name__ == "WeightOnlyLinear" for n in conv1d)
    ids = torch.randint(0, 512, (2, 24))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = compress.export_weight_only(q, tmp_path / "gpt2.onnx", (ids,), input_names=["input_ids"],
                                           output_names=["logits"],
                                           dynamic_axes={"input_ids": {0: "b", 1: "t"}, "logits": {0: "b", 1: "t"}})
    with torch.no_grad():
        sim, ref = q(ids).numpy(), model(ids).numpy()
    test_ids = ids.numpy()
    ours = runtime.InferenceSession(str(path), threads=1).run(None, {"input_ids": test_ids})[0]
    assert np.abs(ours - sim).max() < 1e-3 * np.abs(sim).max()
    assert (ours.argmax(-1) == sim.argmax(-1)).mean() > 0.99
    assert np.abs(sim - ref).max() > 10 * np.abs(ours - sim).max()  # the check can tell int4 from fp32
    ort = pytest.importorskip("onnxruntime")
    theirs = ort.InferenceSession(str(path)).run(None, {"input_ids": test_ids})[0]
    assert np.abs(theirs - sim).max() < 1e-3 * np.abs(sim).max()


def test_awq_input_scaling_is_exported_once(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 16)).eval()
    calib = [torch.randn(64, 64) for _ in range(2)]
    for x in calib:
        x[:, :4] *= 30.0  # outlier input channels: AWQ scales them up in the weights
    q = compress.quantize_weight_only(model, calib, method="awq", group_size=32)
    assert q[0].in_scale is not None
    x = calib[0][:5]
    path = compress.export_weight_only(q, tmp_path / "awq.onnx", (x,))
    out = runtime.InferenceSession(str(path), threads=1).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(out, q(x).numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("bits", "symmetric"), [(4, False), (4, True), (8, False)])
def test_blocked_dequantize_linear_form_runs_like_matmulnbits(tmp_path, bits, symmetric):
    """Opset-21 DequantizeLinear (INT4/UINT4 initializers, block_size = group) + MatMul: standard
    ONNX, the same numbers as the simulation in our runtime and in ONNX Runtime."""
    import onnx

    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(128, 96), nn.GELU(), nn.Linear(96, 64)).eval()
    q = compress.quantize_weight_only(model, [torch.randn(8, 128) for _ in range(2)], bits=bits, group_size=32,
                                      symmetric=symmetric)
    x = torch.randn(5, 128)
    path = compress.export_weight_only(q, tmp_path / "dq.onnx", (x,), format="dequantize_linear")
    m = onnx.load(str(path))
    assert next(o.version for o in m.opset_import if o.domain == "") == 21
    assert not any(n.op_type == "MatMulNBits" for n in m.graph.node)
    dq = [n for n in m.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dq) == 2 and all(a.i == 32 for n in dq for a in n.attribute if a.name == "block_size")
    wanted = {(4, False): onnx.TensorProto.UINT4, (4, True): onnx.TensorProto.INT4, (8, False): onnx.TensorProto.UINT8}
    codes = [t for t in m.graph.initializer if t.name.endswith("qweight")]
    assert {t.data_type for t in codes} == {wanted[(bits, symmetric)]}
    if bits == 4:  # two codes a byte in the file
        assert all(len(t.raw_data) == (np.prod(t.dims) + 1) // 2 for t in codes)
    with torch.no_grad():
        sim = q(x).numpy()
    ours = runtime.InferenceSession(str(path), threads=1).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(ours, sim, rtol=1e-5, atol=1e-5)
    ort = pytest.importorskip("onnxruntime")
    opts = ort.SessionOptions()  # ORT turns DQ+MatMul into MatMulNBits with int8 activations unless told not to
    opts.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    theirs = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})
    np.testing.assert_allclose(theirs[0], sim, rtol=1e-5, atol=1e-5)
    with pytest.raises(compress.CompressError, match="opset >= 21"):
        compress.export_weight_only(q, tmp_path / "dq17.onnx", (x,), format="dequantize_linear", opset=17)
