"""Sensitivity analysis: one layer or group at a time, the model itself left alone."""

import torch

import compress
from tests.prune.models import FlattenNet

X = torch.randn(16, 1, 16, 16)


def agreement(reference):
    target = reference(X).argmax(1)
    return lambda model: 100.0 * float((model(X).argmax(1) == target).float().mean())


def test_unstructured_sensitivity_report():
    model = FlattenNet().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = compress.sensitivity_analysis(model, agreement(model), amounts=(0.0, 0.5, 0.99))
    assert report.baseline == 100.0
    assert set(report.results) == {"features.0.0", "features.2.0", "fc1", "fc2"}
    assert all(r[0.0] == 100.0 for r in report.results.values())
    assert min(r[0.99] for r in report.results.values()) < 100.0
    d = report.as_dict()
    assert d["layers"]["fc1"][0.5] == report.results["fc1"][0.5] and d["structured"] is False
    md = report.to_markdown()
    assert "| fc1 |" in md and "99% weights" in md
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_structured_sensitivity_per_coupled_group():
    model = FlattenNet().eval()
    report = compress.sensitivity_analysis(
        model, agreement(model), amounts=(0.25, 0.75), structured=True, example_inputs=X[:1]
    )
    # fc2's outputs are the graph output, so it is not a prunable group
    assert set(report.results) == {"features.0.0", "features.2.0", "fc1"}
    assert "75% channels" in report.to_markdown()
