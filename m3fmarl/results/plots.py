"""Learning curves from run directories (``progress.csv``), drawn off-screen with matplotlib."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path


def read_curve(run_dir: str | Path) -> tuple[list[float], list[float]]:
    """(env steps, mean episode return) of the iterations in which episodes ended."""
    steps, returns = [], []
    with open(Path(run_dir) / "progress.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            ret = float(row["episode_return_mean"])
            if math.isfinite(ret):
                steps.append(float(row["env_steps"]))
                returns.append(ret)
    return steps, returns


def plot_learning_curves(run_dirs: Sequence[str | Path], out: str | Path, *, labels: Sequence[str] | None = None,
                         baselines: dict[str, float] | None = None, title: str = "",
                         colors: Sequence[str] | None = None) -> Path:
    """Training return against env steps for each run (``colors``: one per run, e.g. the
    algorithms' registry colours), with optional horizontal baselines in black and greys."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, run in enumerate(run_dirs):
        steps, returns = read_curve(run)
        ax.plot(steps, returns, marker="o", ms=3, label=labels[i] if labels else Path(run).name,
                color=colors[i] if colors else None)
    for j, (name, value) in enumerate((baselines or {}).items()):
        ax.axhline(value, ls=("--", ":", "-.")[j % 3], lw=1.2, color=("k", "0.45", "0.65")[j % 3], label=name)
    ax.set_xlabel("env steps")
    ax.set_ylabel("mean episode return (training, stochastic)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
