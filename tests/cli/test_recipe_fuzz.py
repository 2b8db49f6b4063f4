"""1,200 mutated recipes (the shipped ones and a small one; lines deleted, duplicated, swapped,
re-indented, truncated; keys misspelt; values replaced by hostile YAML; random --set
overrides): each one is valid, or a RecipeError that names a line (or its --set argument),
or another CompressError; none hangs and none ends in a traceback."""

from __future__ import annotations

import random
import re
import signal
from collections import Counter
from pathlib import Path

import pytest

from compress.errors import CompressError, RecipeError
from compress.recipe import load_recipe
from tests.cli.recipe_text import GOOD

RECIPES = sorted(Path(__file__).parents[2].joinpath("recipes").glob("*.yaml"))
SMALL = GOOD.replace("{latency: false}", "{latency: false, threads: 2}")
VALUES = [
    "", "null", "~", "-1", "0", "1", "2", "1e400", "-1e400", ".nan", ".inf", "1000000", "9" * 40, "true", "[1, 2]",
    "{a: 1}", "&a [*a]", "*undefined", "'x'", "\"\\x00\"", "²", "١", "ｱ", "compress.models:Nope", ":x", "x:",
    "compress.models:", "../../etc/passwd", "/dev/zero", "/", "2001-01-01", "!!python/name:os.system",
    "!!binary 'aGk='", "!!int 'x'", "{", "]", "[", "kll", "qat", "ptq", "per", "0.5", "1.5", "99.999",
    "[3, 224, 224]", "[0]", "[65537]", "resnet18", "compress.sources:random_images", "mnist5k",
    "before_prune", "{source: *x}",
]
SET_KEYS = ["seed", "name", "stages.0", "stages.1.quantize.method", "stages.9.x", "model.kwargs", "model.kwargs.width",
            "data.batch_size", "data", "stages", "model.source", "stages.0.train.epochs", "x.y.z", "stages.a.b"]
CHARS = [":", "{", "}", "[", "]", "&", "*", "!", "%", "\t", "'", '"', "#", "-", "?", "|", ">", "@", "`", "\x00", "\\"]


def mutate(text: str, rng: random.Random) -> tuple[str, list[str]]:
    """1-3 mutations of a recipe's text, and sometimes a --set override."""
    lines = text.splitlines()
    for _ in range(rng.randint(1, 3)):
        if not lines:
            break
        i = rng.randrange(len(lines))
        kind = rng.randrange(9)
        if kind == 0:
            del lines[i]
        elif kind == 1:
            lines.insert(i, lines[i])
        elif kind == 2:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == 3:
            lines[i] = rng.choice(["  ", "\t", " "]) + lines[i] if rng.random() < 0.6 else lines[i].lstrip()
        elif kind == 4 and ":" in lines[i]:
            key, _, _ = lines[i].partition(":")
            lines[i] = f"{key}: {rng.choice(VALUES)}"
        elif kind == 5:
            m = re.search(r"[a-z_]{3,}", lines[i])
            if m:
                w = list(m.group())
                k = rng.randrange(len(w))
                op = rng.randrange(3)
                w = w[:k] + w[k + 1:] if op == 0 else w[:k] + [rng.choice("abcdeilmnoprstuy")] + w[k:] if op == 1 \
                    else w[:k] + [rng.choice("abcdeilmnoprstuy")] + w[k + 1:]
                lines[i] = lines[i][: m.start()] + "".join(w) + lines[i][m.end():]
        elif kind == 6:
            p = rng.randrange(len(lines[i]) + 1)
            lines[i] = lines[i][:p] + rng.choice(CHARS) + lines[i][p:]
        elif kind == 7:
            lines.append(rng.choice(["x: &r [*r]", "l0: &l0 [1, 1, 1, 1, 1, 1, 1, 1, 1]",
                                     "model: &m {source: *m}", "stages: &s [*s]", "<<: *nothing"]))
            if lines[-1].startswith("l0"):
                lines += [f"l{k}: &l{k} [{', '.join([f'*l{k - 1}'] * 9)}]" for k in range(1, 9)]
        else:
            joined = "\n".join(lines)
            lines = joined[: rng.randrange(len(joined) + 1)].splitlines()
    overrides = []
    if rng.random() < 0.25:
        overrides.append(f"{rng.choice(SET_KEYS)}={rng.choice(VALUES)}")
    return "\n".join(lines) + "\n", overrides


class Hang(Exception):
    pass


def classify(path: Path, overrides: list[str]) -> str:
    """'valid', 'recipe error' (with a line or a --set argument) or 'compress error'; anything
    else fails the test with the mutant attached."""
    try:
        load_recipe(path, overrides)
        return "valid"
    except RecipeError as exc:
        message = str(exc)
        located = re.match(rf"{re.escape(str(path))}:\d+(:\d+)?: ", message) or message.startswith("--set ")
        assert located, f"RecipeError without a line: {message!r}"
        return "recipe error"
    except CompressError:
        return "compress error"


@pytest.mark.parametrize("seed", [0])
def test_mutated_recipes_are_valid_or_named(tmp_path, seed):
    rng = random.Random(seed)
    sources = [p.read_text() for p in RECIPES] + [SMALL]
    outcomes: Counter = Counter()
    for p in RECIPES:  # warm up: imports (torchvision's model list) are not a hang
        load_recipe(p)
    old = signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(Hang()))
    try:
        for case in range(1200):
            text, overrides = mutate(rng.choice(sources), rng)
            path = tmp_path / "r.yaml"
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
            signal.alarm(10)
            try:
                outcomes[classify(path, overrides)] += 1
            except Hang:
                pytest.fail(f"case {case} hung: {overrides}\n{text}")
            except AssertionError:
                raise
            except Exception as exc:  # noqa: BLE001
                pytest.fail(f"case {case}: {type(exc).__name__}: {exc}\n--set {overrides}\n{text}")
            finally:
                signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, old)
    assert sum(outcomes.values()) == 1200
    assert outcomes["valid"] > 50 and outcomes["recipe error"] > 500, outcomes
