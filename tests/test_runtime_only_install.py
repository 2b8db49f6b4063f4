"""The base install (``pip install .``) is the runtime alone, and it works without torch.

A fresh venv gets the package from a copy of the source tree, the way a user's
``pip install .`` gets it (pip builds the C extension with setuptools from the package
index). Then, inside that venv: torch is absent, ``import compress`` says how to get the
toolkit, an int8 ONNX file runs and equals ONNX's reference evaluator, and every runtime
test file that needs only numpy, onnx and the runtime passes.

Which test files those are is read from their imports (and those of the local helper
modules they import, at any depth of the file): a file that imports torch, onnxruntime
or another package of the toolkit anywhere is left out, so a new torch-free runtime test
joins this run without anyone listing it.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_TESTS = ROOT / "tests" / "runtime"
SOURCES = ["setup.py", "pyproject.toml", "README.md", "compress", "quant", "prune", "distill", "export", "runtime"]
# What a runtime-only venv holds besides the standard library: the base install and the [test] extra.
ALLOWED = {"numpy", "onnx", "runtime", "pytest", "hypothesis"}

pytestmark = pytest.mark.slow


def imported_roots(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports, anywhere in the file."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def needs_only_the_runtime(path: Path, seen: frozenset[Path] = frozenset()) -> bool:
    """True when ``path`` and the local modules it imports use only ALLOWED and the stdlib."""
    for root in imported_roots(path):
        local = path.parent / f"{root}.py"
        if local.exists():
            if local not in seen and not needs_only_the_runtime(local, seen | {path}):
                return False
        elif root not in ALLOWED and root not in sys.stdlib_module_names:
            return False
    return True


def runtime_only_tests() -> list[Path]:
    return sorted(p for p in RUNTIME_TESTS.glob("test_*.py") if needs_only_the_runtime(p))


def test_the_selection_reads_imports_at_any_depth(tmp_path):
    (tmp_path / "helper.py").write_text("import numpy\n\ndef f():\n    import torch\n")
    (tmp_path / "test_a.py").write_text("import onnx\nfrom runtime import InferenceSession\n")
    (tmp_path / "test_b.py").write_text("import numpy\nfrom helper import f\n")
    assert needs_only_the_runtime(tmp_path / "test_a.py")
    assert not needs_only_the_runtime(tmp_path / "test_b.py")
    assert RUNTIME_TESTS / "test_kernels.py" in runtime_only_tests()


CHECK_SCRIPT = r'''
import importlib.util, sys
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
import runtime

assert importlib.util.find_spec("torch") is None, "torch is installed"
try:
    import compress  # noqa: F401
except ModuleNotFoundError as exc:
    assert "compress[full]" in str(exc) and "import runtime" in str(exc), str(exc)
else:
    raise AssertionError("import compress worked without torch")

# QDQ: uint8 activations, per-channel int8 weights, int32 bias at s_x*s_w -> Conv -> Relu -> Q.
rng = np.random.default_rng(0)
sx, sw = np.float32(0.02), rng.uniform(0.001, 0.01, 8).astype(np.float32)
inits = [numpy_helper.from_array(a, n) for a, n in [
    (sx, "sx"), (np.uint8(128), "zx"), (rng.integers(-127, 128, (8, 3, 3, 3), dtype=np.int8), "w"),
    (sw, "sw"), (np.zeros(8, np.int8), "zw"), (rng.integers(-2000, 2000, 8, dtype=np.int32), "b"),
    (sx * sw, "sb"), (np.float32(0.05), "sy"), (np.uint8(0), "zy"),
]]
nodes = [
    helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
    helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
    helper.make_node("DequantizeLinear", ["w", "sw", "zw"], ["wd"], axis=0),
    helper.make_node("DequantizeLinear", ["b", "sb"], ["bd"], axis=0),
    helper.make_node("Conv", ["xd", "wd", "bd"], ["c"], pads=[1, 1, 1, 1]),
    helper.make_node("Relu", ["c"], ["r"]),
    helper.make_node("QuantizeLinear", ["r", "sy", "zy"], ["y"]),
]
graph = helper.make_graph(nodes, "qdq_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 9, 9])],
                          [helper.make_tensor_value_info("y", TensorProto.UINT8, [2, 8, 9, 9])], inits)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
onnx.checker.check_model(model, full_check=True)
x = rng.uniform(-2, 2, (2, 3, 9, 9)).astype(np.float32)
ours = runtime.InferenceSession(model.SerializeToString(), threads=1).run(None, {"x": x})[0]
ref = ReferenceEvaluator(model).run(None, {"x": x})[0]
diff = np.abs(ours.astype(int) - ref.astype(int))
assert ours.dtype == np.uint8 and ours.shape == (2, 8, 9, 9), (ours.dtype, ours.shape)
assert diff.max() <= 1 and (diff == 0).mean() > 0.99, (diff.max(), (diff == 0).mean())
print("runtime-only OK", runtime.available_paths(), f"exact {(diff == 0).mean():.4f}")
'''


def _run(cmd: list[str], cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_base_install_runs_the_runtime_without_torch(tmp_path):
    src = tmp_path / "src"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.so", "build"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    pip = _run([py, "-m", "pip", "install", "-q", f"{src}[test]"], tmp_path, 600)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]

    check = _run([py, "-c", CHECK_SCRIPT], tmp_path, 120)
    assert check.returncode == 0, check.stdout + check.stderr[-3000:]
    assert "runtime-only OK" in check.stdout

    tests = tmp_path / "runtime_tests"  # no conftest, no pyproject: only the installed package is on the path
    tests.mkdir()
    for path in runtime_only_tests():
        shutil.copy2(path, tests / path.name)
    for local in RUNTIME_TESTS.glob("*.py"):
        if not local.name.startswith(("test_", "conftest")) and needs_only_the_runtime(local):
            shutil.copy2(local, tests / local.name)
    run = _run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "."], tests, 600)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
    assert " passed" in run.stdout.splitlines()[-1], run.stdout[-2000:]
