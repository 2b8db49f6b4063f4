"""``compress run`` end to end on a tiny recipe; an interrupted run resumed gives the same result."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from compress import stages
from compress.cli import main
from compress.sources import build_model

TINY = """\
name: tiny
seed: 0
model:
  source: compress.models:MnistCNN
  kwargs: {width: 8}
data:
  source: mnist5k
  batch_size: 32
  test_size: 500
stages:
  - train: {epochs: 1, lr: 0.01}
  - quantize: {mode: MODE, method: kl, max_batches: 2}
  - export
  - evaluate: {repeats: 2}
  - report
"""
QAT = "{mode: qat, method: minmax, max_batches: 2, epochs: 1, freeze_bn_after: 10}"

pytestmark = pytest.mark.slow


def recipe(tmp_path: Path, mode: str) -> Path:
    path = tmp_path / f"tiny_{mode}.yaml"
    ptq = "{mode: MODE, method: kl, max_batches: 2}"
    path.write_text(TINY.replace(ptq, QAT) if mode == "qat" else TINY.replace("MODE", mode))
    return path


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full")
    out = tmp / "out"
    assert main(["run", str(recipe(tmp, "ptq")), "--out", str(out), "--quiet"]) == 0
    return tmp, out


def test_run_writes_report_and_models(full_run):
    _, out = full_run
    names = {p.name for p in out.iterdir()}
    assert {"report.json", "report.md", "report.png", "model_int8.onnx", "model_fp32.onnx", "checkpoint.pt",
            "model.pt"} <= names
    assert not leftovers(out)
    report = json.loads((out / "report.json").read_text())
    ev = report["evaluation"]
    assert ev["samples"] == 500
    assert set(ev["accuracy"]) >= {"fp32 (torch)", "int8 simulation (torch)", "int8 (compress runtime)"}
    assert ev["accuracy"]["fp32 (torch)"] > 70  # one epoch of a width-8 CNN
    # the simulation, our runtime and ORT run the same int8 arithmetic
    assert abs(ev["accuracy"]["int8 (compress runtime)"] - ev["accuracy"]["int8 simulation (torch)"]) <= 1.0
    assert set(ev["latency_ms"]) >= {"fp32 (torch)", "int8 (compress runtime)"}
    assert ev["sizes_bytes"]["int8 ONNX"] < ev["sizes_bytes"]["fp32 ONNX"]
    assert [t["stage"] for t in report["timings"]] == ["train", "quantize", "export", "evaluate"]
    assert "int8 (compress runtime)" in (out / "report.md").read_text()


def test_saved_model_is_a_model_source(full_run):
    _, out = full_run
    model = build_model({"source": str(out / "model.pt"), "kwargs": {}, "weights": None}, Path("."))
    saved = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("mode", ["ptq", "qat"])
def test_interrupt_then_resume_gives_same_result(tmp_path, monkeypatch, full_run, mode):
    path = recipe(tmp_path, mode)
    out = tmp_path / "out"

    def interrupted(*_args):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setitem(stages.STAGES, "export", interrupted)
        assert main(["run", str(path), "--out", str(out), "--quiet"]) == 130
    assert torch.load(out / "checkpoint.pt", weights_only=True)["done"] == 2
    assert not leftovers(out) and not (out / "model_int8.onnx").exists()
    assert main(["run", str(path), "--out", str(out), "--quiet", "--resume"]) == 0
    resumed = json.loads((out / "report.json").read_text())["evaluation"]

    fresh = tmp_path / "fresh"
    assert main(["run", str(path), "--out", str(fresh), "--quiet"]) == 0
    assert (out / "model_int8.onnx").read_bytes() == (fresh / "model_int8.onnx").read_bytes()
    assert resumed["accuracy"] == json.loads((fresh / "report.json").read_text())["evaluation"]["accuracy"]
    if mode == "ptq":  # the fixture ran the same recipe in another folder
        assert (out / "model_int8.onnx").read_bytes() == (full_run[1] / "model_int8.onnx").read_bytes()


def test_resume_refuses_another_recipe(full_run, capsys):
    tmp, out = full_run
    assert main(["run", str(tmp / "tiny_ptq.yaml"), "--out", str(out), "--resume", "--quiet", "--set", "seed=1"]) == 1
    assert "different recipe" in capsys.readouterr().err


def test_resume_after_last_stage_does_nothing_new(full_run):
    tmp, out = full_run
    before = (out / "model_int8.onnx").stat().st_mtime_ns
    assert main(["run", str(tmp / "tiny_ptq.yaml"), "--out", str(out), "--resume", "--quiet"]) == 0
    assert (out / "model_int8.onnx").stat().st_mtime_ns == before


DDP = """\
name: ddp
model: {source: "compress.models:MnistCNN", kwargs: {width: 8}}
data: {source: mnist5k, batch_size: 32, test_size: 500}
stages:
  - train: {epochs: 1, lr: 0.01}
  - prune: {amount: 0.25, structured: true, protect: [fc]}
  - distill: {epochs: 1}
  - quantize: {mode: qat, method: minmax, max_batches: 2, epochs: 1}
  - export
  - evaluate: {repeats: 2}
  - report
"""


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_every_training_stage_runs_under_torchrun(tmp_path):
    """Two gloo ranks: train, distill and QAT wrap DDP over sharded data; only rank 0 writes files."""
    path = tmp_path / "ddp.yaml"
    path.write_text(DDP)
    out = tmp_path / "out"
    cmd = ["torchrun", "--standalone", "--nproc_per_node=2", "-m", "compress.cli", "run", str(path),
           "--out", str(out), "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("[1/7] train") == 1  # rank 1 logs nothing
    report = json.loads((out / "report.json").read_text())
    assert [t["stage"] for t in report["timings"]] == ["train", "prune", "distill", "quantize", "export", "evaluate"]
    assert report["evaluation"]["accuracy"]["int8 (compress runtime)"] > 50
    assert not leftovers(out)
