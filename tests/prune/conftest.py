"""Make ``import prune`` mean the package, not this test folder.

pytest (prepend import mode) puts ``tests/`` on sys.path because it holds a conftest
and no ``__init__``; ``tests/prune`` then shadows the editable-installed ``prune`` as
a namespace package. Putting the repository root first lets the regular package win
(and makes ``tests.prune.models`` importable). The project-wide fix is
``pythonpath = ["."]`` in the pytest settings of pyproject.toml.
"""

import sys
from pathlib import Path

import pytest
import torch

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


@pytest.fixture(autouse=True)
def _one_thread():
    """The CI box has 2 shared cores; extra intra-op threads only add contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
