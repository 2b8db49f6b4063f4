"""Recipe errors a user can act on: suggestions for mistyped keys and values, key lists that
fit the stage, YAML errors at the right line and column, --set mistakes named by their
argument, documented ranges, hostile YAML refused, factory kwargs checked, the CLI's
--version and --help."""

from __future__ import annotations

from pathlib import Path

import pytest

from compress import RecipeError
from compress.cli import main
from compress.recipe import STAGE_SCHEMAS, TOP_SCHEMA, load_recipe
from tests.cli.recipe_text import GOOD

LAUGHS = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else '1'}]\n" for i in range(9))


def error_of(tmp_path: Path, text: str, overrides: list[str] | None = None) -> str:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    return str(info.value)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("kwargs: {width: 4}", "kwarg: {width: 4}", ":4: model.kwarg: unknown key; did you mean 'kwargs'?"),
        ("{method: kl}", "{method: kll}", ":9: stages[1].quantize.method: unknown value 'kll'; did you mean 'kl'?"),
        ("{method: kl}", "{methd: kl}", ":9: stages[1].quantize.methd: unknown key; did you mean 'method'?"),
        ("  - export\n", "  - exprt\n", ":10: stages[2].exprt: unknown stage; did you mean 'export'?"),
        ("{latency: false}", "{latncy: false}", "did you mean 'latency'?"),
        ("{width: 4}", "{widht: 4}", ":4: model.kwargs.widht: 'compress.models:MnistCNN' takes no argument 'widht'; "
                                     "did you mean 'width'?"),
        ("compress.models:MnistCNN", "compress.models:MnistCnn", "did you mean 'compress.models:MnistCNN'?"),
        ("compress.models:MnistCNN", "resnet81", ":3: model.source: 'resnet81' is neither"),
        ("compress.models:MnistCNN", "resnet81", "did you mean 'resnet18'?"),
    ],
)
def test_suggestions(tmp_path, old, new, expected):
    assert old in GOOD
    assert expected in error_of(tmp_path, GOOD.replace(old, new))


def test_ptq_key_list_does_not_offer_qat_keys(tmp_path):
    message = error_of(tmp_path, GOOD.replace("{method: kl}", "{method: kl, epoch: 2}"))
    listed = message.split("expected one of")[1]
    assert "'method'" in listed and "'epochs'" not in listed and "'learnable_scales'" not in listed
    qat = error_of(tmp_path, GOOD.replace("{method: kl}", "{mode: qat, method: kl, epoch: 2}"))
    assert "did you mean 'epochs'?" in qat and "'learnable_scales'" in qat.split("expected one of")[1]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("name: tiny", "name: [tiny", ":1:7: invalid YAML"),  # the unclosed bracket, not the line after
        ("name: tiny", "name: 'tiny\nseed: 1", ":1:7: invalid YAML"),
        ("  kwargs: {width: 4}", "  kwargs: {width: 4", ":4:11: invalid YAML"),
        ("name: tiny", "name: tiny\n\tseed: 1", ":2:1: invalid YAML"),
    ],
)
def test_yaml_errors_have_line_and_column(tmp_path, old, new, expected):
    assert expected in error_of(tmp_path, GOOD.replace(old, new))


def test_set_errors_name_the_set_argument(tmp_path):
    message = error_of(tmp_path, GOOD, ["stages.1.quantize.method=kll"])
    assert message.startswith("--set 'stages.1.quantize.method=kll': stages[1].quantize.method: unknown value")
    assert "did you mean 'kl'?" in message
    assert error_of(tmp_path, GOOD, ["data.batch_size=0"]).startswith("--set 'data.batch_size=0': data.batch_size")
    assert error_of(tmp_path, GOOD, ["model.kwargs={widht: 4}"]).startswith("--set 'model.kwargs={widht: 4}'")
    assert error_of(tmp_path, GOOD, ["seed=[1"]).startswith("--set 'seed=[1'")
    assert "expected key.path=value" in error_of(tmp_path, GOOD, ["seed"])
    assert error_of(tmp_path, GOOD, ["stages.9.train.epochs=1"]).startswith("--set 'stages.9.train.epochs=1': no list")
    # the file's own mistakes keep their lines while --set values are fine
    assert ":9: stages[1].quantize.method" in error_of(tmp_path, GOOD.replace("{method: kl}", "{method: kll}"),
                                                         ["seed=2"])


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("{latency: false}", "{latency: false, threads: 1000000}", "stages[3].evaluate.threads: must be in [1, 1024]"),
        ("{latency: false}", "{latency_batch: 1000000}", "latency_batch: must be in [1, 1024], got 1000000"),
        ("{epochs: 1}", "{epochs: 0}", ":8: stages[0].train.epochs: must be in [1, 10000]"),
        ("{epochs: 1}", "{lr: .nan}", "stages[0].train.lr: must be in (0, 10]"),
        ("{epochs: 1}", "{lr: -1}", "stages[0].train.lr: must be in (0, 10]"),
        ("name: tiny", "name: tiny\nseed: -1", ":2: seed: must be in [0, 2147483647]"),
        ("  source: mnist5k", "  source: mnist5k\n  batch_size: 100000000", "data.batch_size: must be in [1, 65536]"),
    ],
)
def test_numeric_keys_have_ranges(tmp_path, old, new, expected):
    assert expected in error_of(tmp_path, GOOD.replace(old, new))


def test_every_numeric_key_documents_a_range():
    schemas = [TOP_SCHEMA, *STAGE_SCHEMAS.values()]
    for schema in schemas:
        for key, field in schema.items():
            if (int in field.types or float in field.types) and field.choices is None:
                assert field.range is not None, key


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: &x [*x]\n", ":1: a[0]: recursive YAML alias"),
        ("model: &m {source: *m}\n", "recursive YAML alias"),
        (LAUGHS, "expands to more"),
        ("[" * 5000 + "]" * 5000, "invalid YAML"),
        ("- just\n- a list\n", ":1: <recipe>: must be a mapping"),
        ("name: !!python/object:os.system x\n", ":1: name: invalid value"),
        ("? [a, b]\n: 1\n", ":1: <recipe>: keys must be strings"),
        ("seed: !!timestamp 2001-99-99\n", ":1: seed: invalid value"),
    ],
)
def test_hostile_yaml_is_refused_with_a_line(tmp_path, text, expected):
    assert expected in error_of(tmp_path, text)


def test_kwargs_mismatch_for_a_data_factory_names_the_key(tmp_path):
    factory = "source: compress.sources:random_images\n  kwargs: {shape: [1, 8, 8], nn: 4}"
    text = GOOD.replace("source: mnist5k", factory)
    assert ":7: data.kwargs.nn: 'compress.sources:random_images' takes no argument 'nn'; did you mean 'n'?" in (
        error_of(tmp_path, text)
    )


@pytest.mark.parametrize("source", [":MnistCNN", "compress.models:", "compress..models:MnistCNN", "1x:y", "os:sep"])
def test_odd_import_paths_are_recipe_errors(tmp_path, source):
    assert ":3: model.source:" in error_of(tmp_path, GOOD.replace("compress.models:MnistCNN", f'"{source}"'))


def test_version_and_help_list_stages_and_keys(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("compress ")
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    assert all(f"  {stage}:" in text for stage in STAGE_SCHEMAS)
    assert "threads: int in [1, 1024], default 1" in text and "method: minmax | percentile | kl | mse" in text
