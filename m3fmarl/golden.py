"""Compare our M3FC returns with the golden statistics measured on the authors' code.

The golden data live in ``../shared/golden`` (``reference_returns.csv``; protocol in its
README): policy P0 (ξ = 0, major action 0) under ``variant="reference"``, undiscounted returns
over T steps.  Agreement test: ``|m_ours − m_ref| ≤ z · sqrt(s_ours²/n_ours + s_ref²/n_ref)``.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from m3fmarl.problems import PAPER_NAMES
from m3fmarl.rollout import ReturnStats, episode_returns

GOLDEN_NAMES = {paper: ours for ours, paper in PAPER_NAMES.items()}
"""Problem names in the golden CSV (the paper's short names) → ours."""


@dataclass(frozen=True)
class GoldenRow:
    problem: str  # golden name (2G, Formation, …)
    num_minors: int
    episodes: int
    mean: float
    std: float

    @property
    def name(self) -> str:
        return GOLDEN_NAMES[self.problem]


@dataclass(frozen=True)
class Comparison:
    row: GoldenRow
    ours: ReturnStats

    @property
    def z(self) -> float:
        se = math.sqrt(self.ours.std**2 / self.ours.episodes + self.row.std**2 / self.row.episodes)
        return (self.ours.mean - self.row.mean) / se


GOLDEN_DIR = Path(__file__).with_name("golden_data")
"""The golden data measured on the authors' code, shipped with the package (README.md there)."""


def default_golden_csv() -> Path:
    """``golden_data/reference_returns.csv`` of the package."""
    return GOLDEN_DIR / "reference_returns.csv"


def load_golden(path: Path | None = None) -> list[GoldenRow]:
    path = default_golden_csv() if path is None else Path(path)
    if not path.exists():
        raise ValueError(f"golden file not found: {path}")
    with open(path) as fh:
        return [GoldenRow(r["problem"], int(r["N"]), int(r["episodes"]), float(r["mean"]), float(r["std"]))
                for r in csv.DictReader(fh)]


def compare(row: GoldenRow, episodes: int | None = None, seed: int = 20261125, num_envs: int = 200) -> Comparison:
    """Run P0 for ``max(episodes, row.episodes)`` episodes under ``reference`` and compare."""
    n = max(episodes or 0, row.episodes)
    returns = episode_returns(row.name, row.num_minors, n, variant="reference", policy="zero",
                              seed=seed, num_envs=num_envs)
    return Comparison(row, ReturnStats.of(returns))
