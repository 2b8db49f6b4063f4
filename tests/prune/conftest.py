"""Make ``import prune`` mean the package, not this test folder.

pytest (prepend import mode) puts ``tests/`` on sys.path because it holds a conftest
and no ``__init__``; ``tests/prune`` then shadows the editable-installed ``prune`` as
a namespace package. Putting the repository root first lets the regular package win
(and makes ``tests.prune.models`` importable). The project-wide fix is
``pythonpath = ["."]`` in the pytest settings of pyproject.toml.
"""

import sys
from pathlib import Path

import torch

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


# The CI box has 2 shared cores; extra intra-op threads only add contention (the
# session-wide MNIST training fixture runs ~3x slower with them on a loaded machine).
torch.set_num_threads(1)
