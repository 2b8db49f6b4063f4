"""compress.save / compress.load: a quantized or pruned model comes back bit for bit."""

import pytest
import torch
from torch import nn

import compress
from compress.models import MnistCNN


@pytest.fixture
def model():
    return MnistCNN(width=8).eval()


@pytest.fixture
def batch(mnist_loaders):
    x, _ = next(iter(mnist_loaders[1]))
    return x[:64]


def test_quantized_model_round_trips_and_exports_the_same_file(model, mnist_loaders, batch, tmp_path):
    qmodel = compress.quantize(model, mnist_loaders[0], method="kl", max_batches=2, progress=False)
    compress.save(qmodel, tmp_path / "q.pt")
    loaded = compress.load(tmp_path / "q.pt")
    assert not loaded.training
    assert torch.equal(loaded(batch), qmodel(batch))
    a = compress.export_onnx(qmodel, tmp_path / "a.onnx", (batch[:1],))
    b = compress.export_onnx(loaded, tmp_path / "b.onnx", (batch[:1],))
    assert a.read_bytes() == b.read_bytes()


def test_pruned_then_quantized_model_round_trips(model, mnist_loaders, batch, tmp_path):
    pruned = compress.prune(model, amount=0.5, structured=True, example_inputs=(batch[:1],), protect=["fc"])
    qmodel = compress.quantize(pruned, mnist_loaders[0], max_batches=2, progress=False)
    compress.save(qmodel, tmp_path / "pq.pt")
    loaded = compress.load(tmp_path / "pq.pt")
    assert loaded.conv2.weight.shape == qmodel.conv2.weight.shape != model.conv2.weight.shape
    assert torch.equal(loaded(batch), qmodel(batch))


def test_masked_float_model_keeps_its_masks(model, batch, tmp_path):
    sparse = compress.prune(model, amount=0.9)
    compress.save(sparse, tmp_path / "sparse.pt")
    loaded = compress.load(tmp_path / "sparse.pt")
    assert torch.equal(loaded.conv2.weight_mask, sparse.conv2.weight_mask)
    assert (loaded.conv2.weight == 0).float().mean() > 0.5
    assert torch.equal(loaded(batch), sparse(batch))


def test_qat_model_comes_back_in_train_mode_and_trains_identically(model, mnist_loaders, batch, tmp_path):
    qat = compress.prepare_qat(model, (batch,), calib_loader=mnist_loaders[0], max_batches=1, progress=False)
    qat(batch)  # one training-mode step moves BN statistics and observer ranges
    compress.save(qat, tmp_path / "qat.pt")
    loaded = compress.load(tmp_path / "qat.pt")
    assert loaded.training
    torch.testing.assert_close(loaded(batch), qat(batch), rtol=0, atol=0)  # the next step agrees too
    assert torch.equal(loaded.eval()(batch), qat.eval()(batch))


def test_file_holds_plain_data_only(model, mnist_loaders, tmp_path):
    qmodel = compress.quantize(model, mnist_loaders[0], max_batches=1, progress=False)
    path = compress.save(qmodel, tmp_path / "q.pt")
    data = torch.load(path, weights_only=True)
    assert data["architecture"] == {"factory": "compress.models:MnistCNN", "kwargs": {}}
    assert data["quantized"]["function"] == "quantize" and data["quantized"]["options"]["method"] == "minmax"


def test_unimportable_architecture_is_refused_at_save(batch, tmp_path):
    class Local(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(784, 10)

        def forward(self, x):
            return self.fc(x.flatten(1))

    with pytest.raises(compress.ModelFileError, match="pass architecture="):
        compress.save(Local(), tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()


def test_pickled_objects_are_refused_at_load(tmp_path):
    torch.save({"format": "compress.save/1", "payload": nn.ReLU()}, tmp_path / "evil.pt")
    with pytest.raises(compress.ModelFileError, match="evil.pt: not a model file compress.load can read safely"):
        compress.load(tmp_path / "evil.pt")
    with pytest.raises(compress.ModelFileError, match="no such file"):
        compress.load(tmp_path / "missing.pt")
