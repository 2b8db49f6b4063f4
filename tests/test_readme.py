"""The README's code runs as pasted.

Every ```python block is executed on its own, in a fresh namespace and an empty working
folder (so each one must bring its own imports, model and data, as a reader pasting it
would); tracebacks point at README.md's own line numbers. Of the bash blocks, the
commands that take seconds (`compress --version`, `compress validate ...`) run too; the
installs and the full recipe runs are what CI and tests/cli already do.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
CHEAP_COMMANDS = ("compress --version", "compress validate ")

pytestmark = pytest.mark.slow


def blocks(language: str) -> list[tuple[int, str]]:
    """(first line number, code) of every fenced block in ``language``."""
    text = README.read_text()
    return [(text.count("\n", 0, m.start(2)) + 1, m.group(2)) for m in FENCE.finditer(text) if m.group(1) == language]


def cheap_commands() -> list[str]:
    lines = [line.split("#")[0].strip() for _, code in blocks("bash") for line in code.splitlines()]
    return [line for line in lines if line.startswith(CHEAP_COMMANDS)]


def test_the_readme_has_the_blocks_this_file_runs():
    assert len(blocks("python")) >= 6
    assert any(c.startswith("compress validate") for c in cheap_commands())


@pytest.mark.parametrize(("line", "code"), [pytest.param(n, c, id=f"README.md:{n}") for n, c in blocks("python")])
def test_python_block_runs_as_pasted(line, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = "\n" * (line - 1) + code  # so a traceback names README.md's line
    exec(compile(source, str(README), "exec"), {"__name__": "__readme__"})


@pytest.mark.parametrize("command", cheap_commands())
def test_cheap_bash_command_runs(command):
    argv = shlex.split(command)
    argv[0] = str(Path(sys.executable).with_name(argv[0]))  # the installed console script of this venv
    done = subprocess.run(argv, cwd=README.parent, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip()
