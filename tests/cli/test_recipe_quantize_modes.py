"""Recipe keys of the transformer methods (quantize modes dynamic / weight_only, SmoothQuant, float
residual adds, accuracy control): validated with key path and line, and run end to end."""

import json
from pathlib import Path

import onnx
import pytest

from compress import RecipeError
from compress.cli import main
from compress.recipe import load_recipe
from tests.cli.recipe_text import GOOD, write

RECIPES = Path(__file__).parents[2] / "recipes"


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, text))
    return str(info.value)


@pytest.mark.parametrize(
    ("quantize", "expected"),
    [
        ("{mode: dynamic, bits: 4}", ":9: stages[1].quantize.bits: only applies to mode: weight_only"),
        ("{mode: ptq, granularity: per_token}", ":9: stages[1].quantize.granularity: only applies to mode: dynamic"),
        ("{mode: weight_only, smoothquant: 0.5}", ":9: stages[1].quantize.smoothquant: only applies to mode: ptq, "
                                                  "dynamic"),
        ("{mode: dynamic, max_drop: 1}", ":9: stages[1].quantize.max_drop: only applies to mode: ptq"),
        ("{mode: weight_only, bits: 3}", ":9: stages[1].quantize.bits: unknown value 3"),
        ("{mode: weight_only, group_size: 100}", ":9: stages[1].quantize.group_size: unknown value 100"),
        ("{mode: weight_only, algorithm: gptqq}", ":9: stages[1].quantize.algorithm: unknown value 'gptqq'; did you "
                                                  "mean 'gptq'?"),
        ("{mode: ptq, smoothquant: 1.5}", ":9: stages[1].quantize.smoothquant: must be in [0, 1], got 1.5"),
        ("{mode: dynamic, granularity: per_row}", ":9: stages[1].quantize.granularity: unknown value 'per_row'"),
        ("{mode: dynamc}", ":9: stages[1].quantize.mode: unknown value 'dynamc'; did you mean 'dynamic'?"),
    ],
)
def test_mode_keys_are_validated_with_their_line(tmp_path, quantize, expected):
    message = error_of(tmp_path, GOOD.replace("{method: kl}", quantize))
    assert expected in message and message.startswith(str(tmp_path / "r.yaml")), message


def test_operator_forms_refuse_qoperator(tmp_path):
    text = GOOD.replace("{method: kl}", "{mode: weight_only}")
    text = text.replace("  - export\n", "  - export: {format: qoperator}\n")
    assert ":10: stages[2].export.format: quantize mode 'weight_only' exports its own operator form" in error_of(
        tmp_path, text)


def test_new_recipes_validate_with_their_defaults():
    by_name = {p.stem: load_recipe(p) for p in RECIPES.glob("*.yaml")}
    wo = by_name["mnist5k_weight_only_int4_gptq"].stages[1].options
    assert (wo["mode"], wo["bits"], wo["group_size"], wo["algorithm"], wo["symmetric"]) == ("weight_only", 4, 128,
                                                                                           "gptq", False)
    dyn = by_name["mnist5k_dynamic_per_token"].stages[1].options
    assert (dyn["mode"], dyn["granularity"], dyn["smoothquant"]) == ("dynamic", "per_token", 0.7)
    assert by_name["mnist5k_ptq_accuracy_control"].stages[1].options["max_drop"] == 0.5


@pytest.mark.slow
@pytest.mark.parametrize(("recipe", "extra", "op", "scheme"), [
    ("mnist5k_weight_only_int4_gptq", ["stages.1.quantize.group_size=32"], "MatMulNBits", "int4 weight-only g32 gptq"),
    ("mnist5k_dynamic_per_token", [], "MatMulInteger", "int8 dynamic"),
    ("mnist5k_ptq_accuracy_control", [], "QuantizeLinear", "w4a8"),  # 4-bit weights, 8-bit activations
])
def test_recipe_runs_on_a_tiny_model(tmp_path, recipe, extra, op, scheme):
    sets = ["model.kwargs.width=8", "stages.0.train.epochs=1", "data.test_size=300", "stages.3.evaluate.repeats=2",
            *extra]
    out = tmp_path / "out"
    args = ["run", str(RECIPES / f"{recipe}.yaml"), "--out", str(out), "--quiet"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    ops = {n.op_type for n in onnx.load(str(out / "model_int8.onnx")).graph.node}
    assert op in ops, ops
    report = json.loads((out / "report.json").read_text())
    quant = report["stages"]["1:quantize"]
    evaluation = json.dumps(report["evaluation"])
    assert quant["test_accuracy"] > 0 and "compress runtime" in evaluation
    # the report names what the file is: a 4-bit weight-only model is never labelled int8
    assert report["evaluation"]["scheme"] == scheme
    assert f"{scheme} (compress runtime)" in report["evaluation"]["accuracy"]
    if recipe == "mnist5k_ptq_accuracy_control":
        assert isinstance(quant["kept_float"], list)  # the layers kept float to meet the bound
