"""Physical channel removal: exact when the removed channels are silent, smaller, plain modules."""

import copy

import pytest
import torch
from torch import fx, nn
from torchvision.models import mobilenet_v2, resnet18

import compress
from compress.pruning import count_macs, count_params
from tests.prune.helpers import silence_channels
from tests.prune.models import ConcatNet, FlattenNet, GroupedNet

CASES = [
    (resnet18, (2, 3, 64, 64)),
    (mobilenet_v2, (2, 3, 64, 64)),
    (ConcatNet, (2, 3, 16, 16)),
    (FlattenNet, (2, 1, 16, 16)),
    (GroupedNet, (2, 3, 8, 8)),
]


def randomise_batchnorm(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics, so a wrongly kept or dropped channel shows in the output."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize(("factory", "shape"), CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_removing_silent_channels_is_exact_and_shrinks(factory, shape):
    model = randomise_batchnorm(factory())
    x = torch.randn(*shape)
    assert silence_channels(model, x, 0.4) > 0
    expected = model(x)
    pruned = compress.prune(model, amount=0.4, structured=True, scope="layer", example_inputs=x)
    torch.testing.assert_close(pruned(x), expected, atol=1e-5, rtol=1e-5)
    assert count_params(pruned) < 0.7 * count_params(model)
    assert count_macs(pruned, x) < 0.7 * count_macs(model, x)


def test_pruning_live_channels_changes_the_output():
    """Control for the exactness test: without silencing, the same cut is visible."""
    model = randomise_batchnorm(resnet18())
    x = torch.randn(2, 3, 64, 64)
    pruned = compress.prune(model, amount=0.4, structured=True, scope="layer", example_inputs=x)
    assert (pruned(x) - model(x)).abs().max() > 1e-3


@pytest.mark.parametrize("importance", ["l1", "l2", "bn_gamma"])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_importances_and_scopes_produce_runnable_smaller_models(importance, scope):
    model = mobilenet_v2().eval()
    x = torch.randn(1, 3, 32, 32)
    pruned = compress.prune(
        model, amount=0.3, structured=True, importance=importance, scope=scope, example_inputs=x
    )
    assert pruned(x).shape == (1, 1000)
    assert count_params(pruned) < count_params(model)


def test_taylor_importance_uses_gradients():
    model = FlattenNet()
    x = torch.randn(8, 1, 16, 16)
    nn.functional.cross_entropy(model(x), torch.randint(0, 10, (8,))).backward()
    pruned = compress.prune(model, amount=0.5, structured=True, importance="taylor", example_inputs=x)
    assert count_params(pruned) < count_params(model)


def test_global_scope_never_empties_a_layer():
    model = FlattenNet()
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        model.features[0][0].weight.mul_(1e-6)  # the whole first layer scores lowest
    pruned = compress.prune(model, amount=0.9, structured=True, scope="global", example_inputs=x)
    assert pruned.features[0][0].out_channels >= 1
    assert pruned(x).shape == (1, 10)


def test_protected_layers_are_untouched():
    model = resnet18().eval()
    x = torch.randn(1, 3, 64, 64)
    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("fc.", "layer4.1."))}
    pruned = compress.prune(
        model, amount=0.5, structured=True, example_inputs=x, protect=["fc", model.layer4[1]]
    )
    after = pruned.state_dict()
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=0)
    assert count_params(pruned) < count_params(model)


def test_result_is_a_plain_traceable_module_and_the_original_is_untouched():
    model = resnet18().eval()
    x = torch.randn(1, 3, 64, 64)
    reference = copy.deepcopy(model)
    pruned = compress.prune(model, amount=0.5, structured=True, example_inputs=x)
    assert type(pruned) is type(model)
    assert {type(m) for m in pruned.modules()} == {type(m) for m in model.modules()}
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in pruned.modules())
    gm = fx.symbolic_trace(pruned)
    torch.testing.assert_close(gm(x), pruned(x))
    torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
    conv = pruned.layer1[0].conv1
    assert conv.weight.shape == (conv.out_channels, conv.in_channels, 3, 3)
    bn = pruned.layer1[0].bn1
    assert bn.running_mean.shape == (bn.num_features,) == (conv.out_channels,)


def test_gradual_structured_schedule_fine_tunes_between_steps():
    model = FlattenNet()
    x = torch.randn(4, 1, 16, 16)
    widths = []

    def fine_tune(m, step):
        opt = torch.optim.SGD(m.parameters(), lr=0.01)
        nn.functional.cross_entropy(m(x), torch.tensor([0, 1, 2, 3])).backward()
        opt.step()
        widths.append(m.fc1.out_features)

    pruned = compress.prune(
        model, amount=0.5, structured=True, scope="layer", schedule="agp", steps=3,
        example_inputs=x, fine_tune=fine_tune,
    )  # fmt: skip
    assert widths[0] > widths[1] > widths[2] == pruned.fc1.out_features == 16


def test_recalibrated_batchnorm_matches_the_batch_statistics():
    from compress.pruning import recalibrate_batchnorm

    model = FlattenNet().eval()
    x = torch.randn(32, 1, 16, 16)
    pruned = compress.prune(model, amount=0.5, structured=True, example_inputs=x[:1])
    bn = pruned.features[0][1]
    momentum = bn.momentum
    recalibrate_batchnorm(pruned, [(x[:16], None), (x[16:], None)])
    pre_bn = pruned.features[0][0](x)
    torch.testing.assert_close(bn.running_mean, pre_bn.mean((0, 2, 3)), atol=1e-5, rtol=1e-4)
    assert not pruned.training and bn.momentum == momentum
