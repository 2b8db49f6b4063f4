"""Bad input fails before any weight changes, as PruningError naming the culprit."""

import pytest
import torch

import compress
from prune import PruneError
from tests.prune.models import FlattenNet, Untraceable

X = torch.randn(1, 1, 16, 16)


@pytest.mark.parametrize("amount", [-0.1, 1.0, 1.5, "half", None, True])
@pytest.mark.parametrize("structured", [False, True])
def test_amount_out_of_range(amount, structured):
    with pytest.raises(compress.PruningError, match="amount"):
        compress.prune(FlattenNet(), amount=amount, structured=structured, example_inputs=X)


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"importance": "l3"}, "importance 'l3'"),
        ({"importance": "bn_gamma"}, "importance 'bn_gamma'"),  # structured only
        ({"scope": "model"}, "scope 'model'"),
        ({"schedule": "cosine"}, "schedule 'cosine'"),
        ({"schedule": "agp", "steps": 0}, "steps"),
        ({"protect": ["classifier"]}, "'classifier'"),
        ({"fine_tune": 3}, "fine_tune"),
    ],
)
def test_bad_arguments_are_named(kwargs, names):
    model = FlattenNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(compress.PruningError, match=names):
        compress.prune(model, amount=0.5, inplace=True, **kwargs)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_untraceable_model_names_the_model():
    with pytest.raises(compress.PruningError, match="cannot trace model Untraceable") as info:
        compress.prune(Untraceable(), amount=0.5, structured=True, example_inputs=torch.randn(1, 3, 8, 8))
    assert isinstance(info.value, PruneError) and isinstance(info.value, compress.CompressError)
    # unstructured pruning needs no tracing
    compress.prune(Untraceable(), amount=0.5)


def test_structured_needs_example_inputs_and_inputs_that_run():
    with pytest.raises(compress.PruningError, match="example_inputs"):
        compress.prune(FlattenNet(), amount=0.5, structured=True)
    with pytest.raises(compress.PruningError, match="FlattenNet failed on example_inputs"):
        compress.prune(FlattenNet(), amount=0.5, structured=True, example_inputs=torch.randn(1, 3, 16, 16))


def test_structured_refuses_masked_models():
    masked = compress.prune(FlattenNet(), amount=0.5)
    with pytest.raises(compress.PruningError, match="make_permanent"):
        compress.prune(masked, amount=0.5, structured=True, example_inputs=X)


def test_unknown_group_in_per_group_amounts():
    from prune import prune_channels

    with pytest.raises(PruneError, match="no coupled group named nope"):
        prune_channels(FlattenNet(), {"nope": 0.5}, example_inputs=X)
