"""Recipe validation: every problem is a RecipeError naming the key path and its YAML line."""

from pathlib import Path

import pytest

from compress import RecipeError
from compress.cli import main
from compress.recipe import load_recipe
from tests.cli.recipe_text import GOOD, write


def error_of(tmp_path: Path, text: str, overrides: list[str] | None = None) -> str:
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, text), overrides)
    return str(info.value)


def test_good_recipe_fills_defaults(tmp_path):
    r = load_recipe(write(tmp_path, GOOD))
    assert [s.name for s in r.stages] == ["train", "quantize", "export", "evaluate", "report"]
    assert r.stages[1].options["method"] == "kl" and r.stages[1].options["max_batches"] == 16
    assert r.data["batch_size"] == 64


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("kwargs: {width: 4}", "kwarg: {width: 4}", ":4: model.kwarg: unknown key"),
        ("- train: {epochs: 1}", "- train: {epochs: one}", ":8: stages[0].train.epochs: must be int, got str"),
        ("- train: {epochs: 1}", "- train: {epochs: true}", ":8: stages[0].train.epochs: must be int"),
        ("{method: kl}", "{method: kll}", ":9: stages[1].quantize.method: unknown value 'kll'"),
        ("{method: kl}", "{method: kl, epochs: 2}", ":9: stages[1].quantize.epochs: only applies to mode: qat"),
        ("  - export\n", "  - exprt\n", ":10: stages[2].exprt: unknown stage"),
        ("source: mnist5k", "source: no/such/folder", ":6: data.source: 'no/such/folder' is not one of"),
        ("compress.models:MnistCNN", "compress.models:NoSuch", ":3: model.source: module 'compress.models' has no"),
        ("compress.models:MnistCNN", "weights.pt", ":3: model.source: model file not found"),
        ("  kwargs: {width: 4}\n", "  kwargs: {width: 4}\n  weights: w.pt\n", ":5: model.weights: file not found"),
        ("  - quantize: {method: kl}\n", "", ":9: stages[1].export: export needs a quantize stage before it"),
        ("  - evaluate: {latency: false}\n", "", ":11: stages[3].report: report needs an evaluate stage"),
        ("- train: {epochs: 1}", "- prune: {amount: 1.5}", ":8: stages[0].prune.amount: must be in [0, 1)"),
        ("- train: {epochs: 1}", "- distill: {epochs: 1}", ":8: stages[0].distill.teacher: 'before_prune' needs"),
        ("data:\n  source: mnist5k\n", "", ":1: <recipe>: missing required key 'data'"),
        ("name: tiny", "name: [tiny", ":1:7: invalid YAML"),
    ],
)
def test_errors_name_key_path_and_line(tmp_path, old, new, expected):
    assert old in GOOD
    message = error_of(tmp_path, GOOD.replace(old, new))
    assert expected in message
    assert message.startswith(str(tmp_path / "r.yaml"))


def test_duplicate_key(tmp_path):
    assert ":4: model.source: duplicate key" in error_of(tmp_path, GOOD.replace("  kwargs:", "  source: x\n  kwargs:"))


def test_set_overrides_are_validated_too(tmp_path):
    r = load_recipe(write(tmp_path, GOOD), ["stages.1.quantize.method=percentile", "data.batch_size=32", "seed=3"])
    assert r.stages[1].options["method"] == "percentile" and r.data["batch_size"] == 32 and r.seed == 3
    message = error_of(tmp_path, GOOD, ["stages.1.quantize.method=nope"])
    assert "stages[1].quantize.method: unknown value 'nope'" in message
    assert "no list item 9" in error_of(tmp_path, GOOD, ["stages.9.train.epochs=1"])
    assert "expected key.path=value" in error_of(tmp_path, GOOD, ["seed"])


def test_fingerprint_follows_overrides(tmp_path):
    path = write(tmp_path, GOOD)
    assert load_recipe(path).fingerprint() == load_recipe(path).fingerprint()
    assert load_recipe(path).fingerprint() != load_recipe(path, ["seed=1"]).fingerprint()


def test_validate_command(tmp_path, capsys):
    assert main(["validate", str(write(tmp_path, GOOD))]) == 0
    assert "valid (5 stages" in capsys.readouterr().out
    bad = write(tmp_path, GOOD.replace("{method: kl}", "{method: kll}"))
    assert main(["validate", str(bad)]) == 1
    assert ":9: stages[1].quantize.method" in capsys.readouterr().err


@pytest.mark.parametrize("recipe", sorted(Path(__file__).parents[2].joinpath("recipes").glob("*.yaml")))
def test_shipped_recipes_validate(recipe):
    assert load_recipe(recipe).stages
