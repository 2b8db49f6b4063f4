"""Magnitude masks: exact sparsity, masks survive fine-tuning, permanence, the report."""

import pytest
import torch
from torch import fx, nn

import compress
from compress.pruning import make_permanent, sparsity_report
from prune import sparsity_schedule
from tests.prune.models import FlattenNet


def weights(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}


def test_global_sparsity_is_exact_and_ranks_across_layers():
    model = FlattenNet()
    with torch.no_grad():
        model.features[2][0].weight.mul_(1e-3)  # tiny weights: global ranking prunes this layer first
    pruned = compress.prune(model, amount=0.5, scope="global")
    report = sparsity_report(pruned)
    total = report.total
    assert total.zeros == round(0.5 * total.params)
    assert report.layers["features.2.0"].sparsity == 1.0
    assert report.layers["fc1"].sparsity < 0.5


def test_layer_scope_prunes_every_layer_to_the_amount():
    pruned = compress.prune(FlattenNet(), amount=0.7, scope="layer")
    for name, layer in sparsity_report(pruned).layers.items():
        assert layer.zeros == round(0.7 * layer.params), name


def test_masks_keep_pruned_weights_at_zero_through_training():
    model = compress.prune(FlattenNet(), amount=0.8)
    zero_before = {n: m.weight == 0 for n, m in weights(model).items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        loss = nn.functional.cross_entropy(model(torch.randn(8, 1, 16, 16)), torch.randint(0, 10, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model(torch.randn(1, 1, 16, 16))  # the pre-hook refreshes .weight
    for name, m in weights(model).items():
        assert bool((m.weight[zero_before[name]] == 0).all()), name


def test_make_permanent_leaves_plain_traceable_weights():
    model = compress.prune(FlattenNet(), amount=0.6, permanent=True)
    for name, m in weights(model).items():
        assert not hasattr(m, "weight_mask") and not hasattr(m, "weight_orig"), name
        assert isinstance(m.weight, nn.Parameter)
        assert not m._forward_pre_hooks
    assert "weight_orig" not in "".join(model.state_dict())
    fx.symbolic_trace(model)
    assert sparsity_report(model).total.sparsity == pytest.approx(0.6, abs=1e-3)
    masked = compress.prune(FlattenNet(), amount=0.6)
    assert make_permanent(masked) is masked and not any(hasattr(m, "weight_mask") for m in masked.modules())


def test_protected_layers_keep_every_weight():
    model = FlattenNet()
    pruned = compress.prune(model, amount=0.9, protect=["fc2"])
    torch.testing.assert_close(pruned.fc2.weight, model.fc2.weight, rtol=0, atol=0)
    assert "fc2" not in sparsity_report(pruned).layers or sparsity_report(pruned).layers["fc2"].zeros == 0


def test_report_as_dict_and_markdown():
    report = sparsity_report(compress.prune(FlattenNet(), amount=0.5))
    d = report.as_dict()
    assert set(d) == {"features.0.0", "features.2.0", "fc1", "fc2", "total"}
    assert d["total"] == pytest.approx(0.5, abs=1e-3)
    md = report.to_markdown()
    assert md.startswith("| layer |") and "| fc1 |" in md and "**total**" in md


def test_schedules_reach_the_final_sparsity():
    agp = sparsity_schedule(0.9, 4, "agp")
    assert agp[-1] == pytest.approx(0.9) and agp == sorted(agp)
    assert agp[0] > 0.9 / 4  # cubic: the biggest cut comes first
    it = sparsity_schedule(0.9, 3, "iterative")
    kept = [1 - s for s in it]
    assert kept[1] / kept[0] == pytest.approx(kept[2] / kept[1]) and it[-1] == pytest.approx(0.9)
    assert sparsity_schedule(0.5, 7, "oneshot") == [0.5]


def test_gradual_pruning_calls_fine_tune_after_every_step_and_is_monotonic():
    seen = []

    def fine_tune(model, step):
        seen.append((step, sparsity_report(model).total.sparsity))

    pruned = compress.prune(FlattenNet(), amount=0.9, schedule="agp", steps=4, fine_tune=fine_tune)
    assert [s for s, _ in seen] == [0, 1, 2, 3]
    sparsities = [sp for _, sp in seen]
    assert sparsities == sorted(sparsities)
    assert sparsity_report(pruned).total.sparsity == pytest.approx(0.9, abs=1e-3)


def test_taylor_importance_needs_and_uses_gradients():
    model = FlattenNet()
    with pytest.raises(compress.PruningError, match="taylor.*features.0.0"):
        compress.prune(model, amount=0.5, importance="taylor")
    nn.functional.cross_entropy(model(torch.randn(4, 1, 16, 16)), torch.tensor([1, 2, 3, 4])).backward()
    pruned = compress.prune(model, amount=0.5, importance="taylor")
    assert sparsity_report(pruned).total.sparsity == pytest.approx(0.5, abs=1e-3)
