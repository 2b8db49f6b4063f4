"""export/ imports quant, torch, onnx, numpy; never compress, prune, distill, and of runtime only the
torch-free description of the machine that agreement figures must name (DESIGN.md §2)."""

import ast
from pathlib import Path

FORBIDDEN = {"compress", "runtime", "prune", "distill"}
ALLOWED = {"runtime.machine"}


def test_export_imports_only_allowed_packages():
    root = Path(__file__).resolve().parents[2] / "export"
    bad = []
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            bad += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN and n not in ALLOWED]
    assert not bad
