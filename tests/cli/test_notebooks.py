"""The notebooks run from scratch (outputs cleared), write their figures, and are stored clean."""

import nbformat
import pytest

from bench.report_figures import NOTEBOOKS, execute, problems

pytestmark = pytest.mark.slow
# The figures each notebook must export (bench/report/<name>.png when run by bench/report_figures.py).
FIGURES = {
    "01_calibration_methods": {"calibration_methods_seeds", "calibration_per_layer_sqnr", "per_layer_sensitivity",
                               "calibration_size_sweep"},
    "02_pipeline_prune_distill_qat_runtime": {"tradeoff_accuracy_latency_size"},
}


def test_there_are_notebooks():
    assert {p.stem for p in NOTEBOOKS} == set(FIGURES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_executed_with_plots_and_clean_outputs(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "store the notebook executed (python bench/report_figures.py)"
    outputs = [o for c in code for o in c.outputs]
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {}) for o in outputs)
    assert problems(nb) == []


def test_problems_finds_stderr_and_machine_paths():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x")])
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stderr", text="UserWarning: careful"),
                           nbformat.v4.new_output("stream", name="stdout", text="wrote /tmp/abc/model.onnx")]
    found = problems(nb)
    assert len(found) == 2 and "stderr" in found[0] and "/tmp/abc" in found[1]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_executes_from_scratch_clean_and_exports_its_figures(path, tmp_path):
    nb = execute(path, report_dir=tmp_path)
    assert problems(nb) == []
    written = {p.stem for p in tmp_path.glob("*.png")}
    assert FIGURES[path.stem] <= written
    for name in FIGURES[path.stem]:
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
