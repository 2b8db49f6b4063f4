"""``compress run`` failures that only show when running: each is one line on stderr naming the
file, key (with its line) or stage, exit status 1, never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from compress.cli import main

RANDOM_DATA = "compress.sources:random_images\n  kwargs: {shape: [3, 8, 8], n: 8, classes: 4, batch_size: 4}"
RECIPE = """\
name: failing
model:
  source: MODEL
  kwargs: KWARGS
data:
  source: DATA
stages:
  - train: {epochs: 1}
  - quantize: {max_batches: 1}
"""


class Exploding(nn.Module):
    """A model whose forward fails: the train stage must report it under its own name."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom inside forward")


def failing_loaders(**_kwargs):
    raise OSError("the data share is not mounted")


def write(tmp_path: Path, model: str = "compress.models:MnistCNN", kwargs: str = "{}", data: str | None = None) -> Path:
    text = RECIPE.replace("MODEL", model).replace("KWARGS", kwargs).replace("DATA", data or RANDOM_DATA)
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def run(capsys, *argv: str) -> str:
    assert main(["run", *argv, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_out_under_a_file_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    err = run(capsys, str(write(tmp_path)), "--out", str(tmp_path / "file" / "out"))
    assert f"output folder {tmp_path / 'file' / 'out'}: not a writable folder" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_is_refused(tmp_path, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        assert "not a writable folder" in run(capsys, str(write(tmp_path)), "--out", str(out))
    finally:
        out.chmod(0o700)


def test_torchvision_factory_refusing_kwargs_names_the_key(tmp_path, capsys):
    path = write(tmp_path, model="resnet18", kwargs="{num_clases: 4}")
    err = run(capsys, str(path), "--out", str(tmp_path / "out"))
    assert f"{path}:4: model.kwargs: the model factory refused the kwargs" in err and "num_clases" in err


def test_a_failing_data_factory_names_the_data_source(tmp_path, capsys):
    path = write(tmp_path, data=f"{__name__}:failing_loaders")
    err = run(capsys, str(path), "--out", str(tmp_path / "out"))
    assert f"{path}:6: data.source:" in err and "OSError: the data share is not mounted" in err


def test_an_empty_image_folder_names_the_folder(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    path = write(tmp_path, data="images")
    err = run(capsys, str(path), "--out", str(tmp_path / "out"))
    assert f"{path}:6: data.source: {tmp_path / 'images'}: not a usable ImageFolder" in err


def test_a_stage_failing_names_the_stage(tmp_path, capsys):
    path = write(tmp_path, model=f"{__name__}:Exploding")
    err = run(capsys, str(path), "--out", str(tmp_path / "out"))
    assert f"{path}:9: stages[0].train: failed: RuntimeError: boom inside forward" in err


@pytest.mark.parametrize("content", [b"not a checkpoint", b"", None])
def test_a_corrupt_checkpoint_names_the_file(tmp_path, capsys, content):
    out = tmp_path / "out"
    out.mkdir()
    if content is None:
        torch.save({"format": 1}, out / "checkpoint.pt")
    else:
        (out / "checkpoint.pt").write_bytes(content)
    err = run(capsys, str(write(tmp_path)), "--out", str(out), "--resume")
    assert f"{out / 'checkpoint.pt'}:" in err and "run without --resume" in err
