"""The run report: JSON and markdown always, the plot when matplotlib is there."""

import json
import sys
from pathlib import Path

import pytest

from compress.evaluation import Evaluation
from compress.recipe import load_recipe
from compress.report import PLOT_SKIPPED, write_report, zoomed_limits
from compress.stages import RunState

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "mnist5k_ptq_kl.yaml"


def _state(out: Path) -> RunState:
    evaluation = Evaluation(
        accuracy={"fp32 (torch)": 98.1, "int8 (simulation)": 97.9, "int8 (compress runtime)": 97.9},
        latency_ms={"fp32 (torch)": 0.9, "int8 (compress runtime)": 0.3},
        samples=1000,
    )
    return RunState(recipe=load_recipe(RECIPE), out=out, progress=False, train_loader=[], test_loader=[],
                    example=None, model=None, info={"evaluation": evaluation.to_dict(), "timings": []})


def test_report_writes_the_plot_and_links_it(tmp_path):
    pytest.importorskip("matplotlib")
    names = write_report(_state(tmp_path))
    assert names == ["report.json", "report.md", "report.png"]
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "report.json").read_text())["plot"] == "report.png"
    assert "![accuracy and latency](report.png)" in (tmp_path / "report.md").read_text()


def test_without_matplotlib_json_and_markdown_say_the_plot_was_skipped(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    with pytest.warns(UserWarning, match="matplotlib is not installed"):
        names = write_report(_state(tmp_path))
    assert names == ["report.json", "report.md"]
    assert not (tmp_path / "report.png").exists()
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["plot"] == PLOT_SKIPPED
    assert data["evaluation"]["accuracy"]["int8 (compress runtime)"] == 97.9
    md = (tmp_path / "report.md").read_text()
    assert "| int8 (compress runtime) | 97.90 |" in md and PLOT_SKIPPED in md


def test_accuracy_axis_zooms_to_the_measured_range():
    lo, hi = zoomed_limits([98.1, 97.9, 97.95])
    assert 97.0 < lo < 97.9 and 98.1 < hi < 99.0
    lo, hi = zoomed_limits([60.0, 98.0])  # a wide spread keeps a proportional margin
    assert lo == pytest.approx(50.5) and hi == pytest.approx(107.5)
