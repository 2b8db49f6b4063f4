"""report.json, report.md and report.png of a run, each written atomically.

The JSON is the machine-readable record (recipe, per-stage facts and times, the
evaluation, environment); the markdown and the plot are views of the same numbers,
so they can never disagree with it. matplotlib is optional: without it the JSON and the
markdown are still written, and both say the plot was skipped.
"""

from __future__ import annotations

import io
import json
import os
import platform
import warnings
from typing import TYPE_CHECKING, Any

import torch

from export.atomic import write_atomic

if TYPE_CHECKING:
    from compress.stages import RunState


def _environment() -> dict[str, Any]:
    return {"python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
            "processor": platform.processor(), "cpus": os.cpu_count()}


def report_dict(state: RunState) -> dict[str, Any]:
    recipe = state.recipe
    return {
        "recipe": {"name": recipe.name, "file": str(recipe.source), "fingerprint": recipe.fingerprint(),
                   "resolved": recipe.raw},
        "stages": {k: v for k, v in state.info.items() if k not in ("evaluation", "timings")},
        "timings": state.info.get("timings", []),
        "evaluation": state.info.get("evaluation"),
        "artifacts": state.artifacts,
        "environment": _environment(),
    }


PLOT_SKIPPED = "skipped: matplotlib is not installed (pip install matplotlib)"


def report_markdown(data: dict[str, Any]) -> str:
    from compress.evaluation import Evaluation

    lines = [f"# {data['recipe']['name']}", "", f"Recipe `{data['recipe']['file']}`.", "",
             "| stage | time (s) | facts |", "|---|---:|---|"]
    for t in data["timings"]:
        facts = data["stages"].get(f"{t['index']}:{t['stage']}", {})
        lines.append(f"| {t['index'] + 1}. {t['stage']} | {t['seconds']:.1f} | {_facts(facts)} |")
    if data["evaluation"]:
        lines += ["", "## Evaluation", "", Evaluation(**data["evaluation"]).to_markdown()]
    if data.get("plot") == "report.png":
        lines += ["", "![accuracy and latency](report.png)"]
    elif data.get("plot"):
        lines += ["", f"Plot {data['plot']}."]
    env = data["environment"]
    lines += ["", f"torch {env['torch']}, Python {env['python']}, {env['cpus']} CPUs ({env['machine']})."]
    return "\n".join(lines) + "\n"


def _facts(facts: dict[str, Any]) -> str:
    parts = []
    for key, value in facts.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in value.items())
        elif isinstance(value, float):
            value = f"{value:.2f}"
        parts.append(f"{key.replace('_', ' ')}: {value}")
    return "; ".join(parts)


def _pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed), or None without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def zoomed_limits(values: list[float], floor: float = 0.5) -> tuple[float, float]:
    """Axis limits around ``values`` with a margin, so differences of a tenth of a point
    show instead of vanishing on a 0-100 axis; at least ``floor`` wide on each side."""
    lo, hi = min(values), max(values)
    pad = max(floor, 0.25 * (hi - lo))
    return lo - pad, hi + pad


def report_plot(evaluation: dict[str, Any]) -> bytes | None:
    """Accuracy and latency per variant side by side, as PNG bytes; None without matplotlib.

    The accuracy axis is zoomed to the measured range (its limits are printed on it), the
    latency axis starts at zero because latencies are compared as ratios."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, key, label in ((axes[0], "accuracy", "top-1 (%), zoomed"), (axes[1], "latency_ms", "latency (ms)")):
        values = evaluation.get(key) or {}
        ax.barh(list(values), list(values.values()), color="tab:blue")
        ax.set_xlabel(label)
        ax.invert_yaxis()
        for i, v in enumerate(values.values()):
            ax.text(v, i, f" {v:.2f}", va="center")
        if not values:
            ax.text(0.5, 0.5, "not measured", ha="center", transform=ax.transAxes)
        elif key == "accuracy":
            ax.set_xlim(*zoomed_limits(list(values.values())))
    axes[1].set_title(f"batch {evaluation.get('latency_batch')}, {evaluation.get('threads')} thread(s)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def write_report(state: RunState, plot: bool = True) -> list[str]:
    """Write the report files into the run's folder; returns their names."""
    data = report_dict(state)
    wants_plot = plot and bool(data["evaluation"])
    png = report_plot(data["evaluation"]) if wants_plot else None
    if wants_plot:
        data["plot"] = "report.png" if png is not None else PLOT_SKIPPED
        if png is None:
            warnings.warn(f"report.png {PLOT_SKIPPED}; report.json and report.md are complete", stacklevel=2)
    write_atomic(state.out / "report.json", json.dumps(data, indent=2, default=str).encode())
    write_atomic(state.out / "report.md", report_markdown(data).encode())
    names = ["report.json", "report.md"]
    if png is not None:
        write_atomic(state.out / "report.png", png)
        names.append("report.png")
    return names
