"""The coupled-channel groups found by tracing: residual, depthwise, concat, flatten, grouped."""

import pytest
import torch
from torchvision.models import mobilenet_v2, resnet18

from prune import dependency_groups
from prune.structured import analyse_channels
from tests.prune.models import ConcatNet, FlattenNet, GroupedNet, UnknownOpNet

X224 = torch.randn(1, 3, 64, 64)


def by_name(groups):
    return {g.name: g for g in groups}


def test_resnet18_residual_chains_form_one_group_per_stage():
    groups = by_name(dependency_groups(resnet18(), X224))
    # the stem conv feeds layer1's identity shortcuts, so it is coupled to every block's last conv
    assert groups["conv1"].layers == ("conv1", "layer1.0.conv2", "layer1.1.conv2")
    assert groups["layer2.0.conv2"].layers == ("layer2.0.conv2", "layer2.0.downsample.0", "layer2.1.conv2")
    assert len(groups["layer4.0.conv2"].components) == 512
    # the inner conv of each block is free on its own
    assert groups["layer3.1.conv1"].layers == ("layer3.1.conv1",)
    # the classifier's outputs are graph outputs: never prunable
    assert groups["fc"].prunable == ()


def test_mobilenet_v2_depthwise_follows_its_expansion_and_residuals_couple_projections():
    groups = by_name(dependency_groups(mobilenet_v2(), X224))
    assert groups["features.2.conv.0.0"].layers == ("features.2.conv.0.0", "features.2.conv.1.0")
    assert groups["features.4.conv.2"].layers == (
        "features.4.conv.2",
        "features.5.conv.2",
        "features.6.conv.2",
    )
    # one component per depthwise channel: the expansion row and the depthwise row go together
    assert len(groups["features.2.conv.0.0"].components) == 96


def test_concat_offsets_and_batchnorm_after_concat():
    graph, groups = analyse_channels(ConcatNet(), torch.randn(1, 3, 8, 8))
    g = by_name(groups)
    assert {"b1", "b2", "b3", "stem.0"} <= set(g)  # concat keeps branches independent
    bn_in = graph.layers["bn_cat"].in_elems
    for offset, branch in ((0, "b1"), (6, "b2"), (16, "b3")):
        out = graph.layers[branch].out_elems
        assert [graph.root(e) for e in bn_in[offset : offset + len(out)]] == [graph.root(e) for e in out]
    dense_in = [graph.root(e) for e in graph.layers["dense.0"].in_elems]
    assert dense_in[:8] == [graph.root(e) for e in graph.layers["stem.0"].out_elems]
    assert dense_in[8:] == [graph.root(e) for e in bn_in]


def test_linear_after_flatten_expands_each_channel_over_its_spatial_positions():
    graph, _ = analyse_channels(FlattenNet(), torch.randn(1, 1, 16, 16))
    fc_in = [graph.root(e) for e in graph.layers["fc1"].in_elems]
    conv_out = [graph.root(e) for e in graph.layers["features.2.0"].out_elems]
    assert len(fc_in) == 16 * 16
    assert fc_in == [c for c in conv_out for _ in range(16)]


def test_grouped_conv_couples_whole_groups():
    graph, groups = analyse_channels(GroupedNet(), torch.randn(1, 3, 8, 8))
    g = by_name(groups)
    assert g["pw1.0"].layers == ("pw1.0", "grouped.0")
    assert len(g["pw1.0"].components) == 4  # one per group: 2 inputs + 3 outputs each
    out = [graph.root(e) for e in graph.layers["grouped.0"].out_elems]
    assert out == [out[0]] * 3 + [out[3]] * 3 + [out[6]] * 3 + [out[9]] * 3


def test_unknown_ops_block_their_channels():
    groups = by_name(dependency_groups(UnknownOpNet(), torch.randn(1, 3, 8, 8)))
    assert groups["b.0"].prunable == ()  # feeds the channel shuffle
    assert len(groups["a.0"].prunable) == 8  # upstream of it is still free


def test_protected_layer_blocks_both_its_inputs_and_outputs():
    groups = by_name(dependency_groups(FlattenNet(), torch.randn(1, 1, 16, 16), protect=["fc1"]))
    assert groups["fc1"].prunable == ()
    assert groups["features.2.0"].prunable == ()
    assert len(groups["features.0.0"].prunable) == 8


@pytest.mark.parametrize("bad", ["nope", "features.9"])
def test_protect_names_must_exist(bad):
    from prune import PruneError

    with pytest.raises(PruneError, match=bad):
        dependency_groups(FlattenNet(), torch.randn(1, 1, 16, 16), protect=[bad])
