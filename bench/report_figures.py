"""Re-execute the notebooks, store them with clean outputs and write their figures to bench/report/.

    python bench/report_figures.py [notebooks/01_calibration_methods.ipynb ...]

Each notebook saves its figures as PNGs into ``$COMPRESS_REPORT_DIR`` (default
``bench/report``, relative to the notebooks' folder ``../bench/report``). Stored outputs
must be clean: no stderr (warnings, progress bars) and no machine paths, so a notebook
reads the same whoever ran it; :func:`problems` says what is not, and the tests apply it
to the stored notebooks and to a fresh execution.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
REPORT_DIR = ROOT / "bench" / "report"
REPORT_ENV = "COMPRESS_REPORT_DIR"
# An absolute path of this machine or a temporary folder in an output reveals where it ran.
MACHINE_PATH = re.compile(r"(/(home|root|tmp|work|Users|var/folders|private)/|[A-Z]:\\)")
CELL_TIMEOUT_S = 900


def execute(path: Path, report_dir: Path | None = None) -> nbformat.NotebookNode:
    """A fresh execution of ``path`` in its folder (outputs cleared first); figures go to ``report_dir``."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
    env = dict(os.environ)
    if report_dir is not None:
        env[REPORT_ENV] = str(report_dir)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute(env=env)  # passed on to the kernel's start
    return nb


def problems(nb: nbformat.NotebookNode) -> list[str]:
    """What makes the outputs unclean: errors, stderr (warnings, progress bars), machine paths."""
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for out in cell.outputs:
            kind = out.get("output_type")
            if kind == "error":
                found.append(f"cell {i}: error {out.get('ename')}")
            elif kind == "stream" and out.get("name") == "stderr":
                found.append(f"cell {i}: stderr: {out.get('text', '')[:200]!r}")
            texts = [out.get("text", "")] + [v for k, v in out.get("data", {}).items() if k.startswith("text/")]
            for text in texts:
                text = "".join(text) if isinstance(text, list) else str(text)
                if (m := MACHINE_PATH.search(text)) is not None:
                    found.append(f"cell {i}: machine path {text[max(0, m.start() - 40):m.end() + 40]!r}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, default=NOTEBOOKS)
    args = parser.parse_args(argv)
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    status = 0
    for path in args.notebooks:
        nb = execute(path.resolve(), REPORT_DIR)
        found = problems(nb)
        if found:
            print(f"{path}: not stored, outputs unclean:\n  " + "\n  ".join(found), file=sys.stderr)
            status = 1
            continue
        nbformat.write(nb, path)
        print(f"{path}: executed and stored")
    print("figures:", ", ".join(sorted(p.name for p in REPORT_DIR.glob("*.png"))))
    return status


if __name__ == "__main__":
    sys.exit(main())
