"""prune/ may import only torch (DESIGN.md §2): checked on the source, not by convention."""

import ast
import sys
from pathlib import Path

import prune

ALLOWED = {"torch", "prune", "__future__"} | set(sys.stdlib_module_names)


def test_prune_imports_only_torch_and_the_standard_library():
    for path in Path(prune.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert roots <= ALLOWED, f"{path.name} imports {roots - ALLOWED}"
