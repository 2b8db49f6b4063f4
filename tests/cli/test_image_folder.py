"""A recipe over a user's ImageFolder (train/ and val/ class folders of image files)."""

import json

import numpy as np
import pytest
from PIL import Image

from compress.cli import main

RECIPE = """\
name: folder
seed: 0
model:
  source: resnet18
  kwargs: {num_classes: 3}
data:
  source: images
  image_size: 32
  batch_size: 8
stages:
  - train: {epochs: 1, lr: 0.003}
  - quantize: {mode: ptq, method: percentile, max_batches: 2}
  - export
  - evaluate: {repeats: 2}
  - report
"""


@pytest.mark.slow
def test_run_on_an_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 4)):
        for c in range(3):
            folder = tmp_path / "images" / split / f"class_{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = (rng.random((40, 40, 3)) * 80 + 60 * c).astype(np.uint8)  # class = brightness
                Image.fromarray(pixels).save(folder / f"{i}.png")
    path = tmp_path / "folder.yaml"
    path.write_text(RECIPE)
    assert main(["validate", str(path)]) == 0
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    ev = json.loads((tmp_path / "out" / "report.json").read_text())["evaluation"]
    assert ev["samples"] == 12  # the val/ folder: 3 classes × 4 images
    # the three int8 engines run the same file and pick the same classes
    assert ev["agreement"]["int8 (compress runtime)"] == ev["agreement"]["int8 (ONNX Runtime)"]
    assert ev["accuracy"]["int8 (compress runtime)"] == ev["accuracy"]["int8 simulation (torch)"]
    assert ev["sizes_bytes"]["int8 ONNX"] < ev["sizes_bytes"]["fp32 ONNX"] / 3
