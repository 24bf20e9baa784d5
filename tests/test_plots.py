"""Learning-curve plots from progress.csv."""

from __future__ import annotations

from pathlib import Path

from m3fmarl.results.plots import plot_learning_curves, read_curve
from m3fmarl.train import PROGRESS_FIELDS


def write_progress(run: Path, returns: list[float]) -> None:
    run.mkdir()
    lines = [",".join(PROGRESS_FIELDS)]
    for i, r in enumerate(returns, 1):
        row = {k: "0" for k in PROGRESS_FIELDS} | {"iteration": str(i), "env_steps": str(100 * i),
                                                      "episode_return_mean": str(r)}
        lines.append(",".join(row[k] for k in PROGRESS_FIELDS))
    (run / "progress.csv").write_text("\n".join(lines) + "\n")


def test_curve_skips_iterations_without_episodes(tmp_path: Path) -> None:
    write_progress(tmp_path / "a", [float("nan"), -5.0, float("nan"), -3.0])
    assert read_curve(tmp_path / "a") == ([200.0, 400.0], [-5.0, -3.0])


def test_plot_writes_a_png(tmp_path: Path) -> None:
    write_progress(tmp_path / "a", [-9.0, -7.0, -4.0])
    out = plot_learning_curves([tmp_path / "a"], tmp_path / "fig" / "curve.png", labels=["M3FPPO"],
                               baselines={"zero": -8.0}, title="t")
    assert out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 5000
