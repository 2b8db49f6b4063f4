"""The small valid recipe the recipe tests mutate (one text, so they all start from the same thing)."""

from pathlib import Path

GOOD = """\
name: tiny
model:
  source: compress.models:MnistCNN
  kwargs: {width: 4}
data:
  source: mnist5k
stages:
  - train: {epochs: 1}
  - quantize: {method: kl}
  - export
  - evaluate: {latency: false}
  - report
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path
