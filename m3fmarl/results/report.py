"""``m3fmarl report``: the paper's Table 2 and figures regenerated from sweep directories.

``m3fmarl report SWEEP_DIR [SWEEP_DIR ...] [--out DIR]`` reads each sweep directory that
``m3fmarl sweep`` wrote (the ledger ``sweep.json`` names the budget and the experiments, each with
its trials; a trial shared by several experiments is one run directory), and writes into
``--out`` (default ``results/report/``)::

    report.md                  what was found (experiment, budget, trials finished / missing),
                               with every table and picture below embedded
    table2-<budget>.md/.csv    Table 2: rows = problems, columns = IPPO, MAPPO, M3FA2C, M3FPPO,
                               "ours mean ± ci95 (paper mean ± ci95)"; the CSV has separate columns
    <fig>-<budget>.png         fig5, fig6, fig7, fig9, fig10, fig12, fig13 (and the MF-PPO and
                               HMF experiments mfppo-n / hmf-n, drawn as fig12, and
                               mfppo-transfer / hmf-transfer, drawn as fig9): 1 × P panels, one
                               per problem present in the data, in the paper's order
    claims.json                the paper's "Reader must see" claims checked on these runs, each
                               with a verdict and its numbers (:mod:`m3fmarl.results.claims`;
                               also the last section of report.md)

What each picture shows follows spec/experiments.md §2 (curves: return against env steps, mean
± 1 std (ddof 0) over the seeds, truncated to the shortest trial).  The paper's Table 2 numbers
ship with the package (``paper_table2.csv``).  Only finished trials (``evaluation.json`` for the
ledger's training length and evaluation) enter tables and evaluation lines; curves of unfinished
trials are not drawn either.  Missing trials are listed in report.md and on stderr.  Nothing in a
sweep directory is written.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import sys
import textwrap
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from m3fmarl import registry
from m3fmarl.experiments import Cell
from m3fmarl.problems import PAPER_NAMES, PROBLEMS
from m3fmarl.sweep import LEDGER, evaluated_cells, read_evaluation
from m3fmarl.util import as_float

PAPER_TABLE2 = Path(__file__).with_name("paper_table2.csv")
"""Table 2 of the paper (mean ± 95 % CI at N = 20), the ``table2`` rows of spec/paper_results.csv."""

PROBLEM_ORDER = tuple(PROBLEMS)
"""The paper's order of the problems (panels (a)–(e))."""
PROBLEM_LABELS = PAPER_NAMES
"""Our problem names → the paper's (and paper_table2.csv's) short names."""
ALGO_LABELS = {a.name: a.label for a in registry.ALGORITHMS.values()}
"""Algorithm name → label in tables and plots (from :mod:`m3fmarl.registry`)."""
TABLE2_ALGOS = registry.names()
"""Candidate Table 2 columns: every registered algorithm, in registry order (the paper's column
order, then the extra baselines); see :func:`table2_algos`."""
M3F_ALGOS = registry.names("m3fc")
REFERENCE = registry.mf_reference()
"""The algorithm whose policies give the MF line and Figs. 5, 6, 9 (the paper's M3FPPO)."""
TABLE2_N = 20
FIGURE_KINDS = {"fig5": "fig5", "fig6": "fig6", "fig7": "fig7", "fig9": "fig9", "fig10": "fig10",
                "fig12": "fig12", "fig13": "fig13", "mfppo-n": "fig12", "mfppo-transfer": "fig9",
                "hmf-n": "fig12", "hmf-transfer": "fig9"}
"""Experiment id → the paper figure it is drawn like (the MF-PPO and HMF experiments, spec §4.1,
§4.2, reuse the curves-per-N figure of IPPO/MAPPO and the transfer figure of M3FPPO)."""
FIGURES = tuple(FIGURE_KINDS)
BUDGET_NOTES = {
    "smoke": "smoke budget: not comparable with the paper (a check that the code runs: small N, a few iterations "
             "of small batches, a few evaluation episodes)",
    "reduced": "reduced budget: not comparable with the paper (the paper's hyperparameters, far fewer iterations "
               "and seeds; a reduced curve is the start of the paper's curve)",
}


CI_RULES = {
    "reference": "2·std(ddof 0)/√n, as the authors' code computes it",
    "paper": "1.96·s(ddof 1)/√n",
}
"""The 95 % CI half-width rule per variant (spec §2.0)."""


def ci95(result: dict[str, Any], variant: str) -> float:
    """95 % CI half-width of an evaluation cell by the variant's rule (:data:`CI_RULES`): the
    reference (authors' code) uses 2·std/√n with the population std (ddof 0), the paper variant
    1.96·s/√n with the sample std (ddof 1).  The cell stores the sample std and n."""
    n = int(result.get("episodes") or 0)
    s = float(result.get("std", math.nan))
    if n < 2 or not math.isfinite(s):
        return float(result.get("ci95", math.nan))
    if variant == "reference":
        return 2.0 * s * math.sqrt((n - 1) / n) / math.sqrt(n)
    return 1.96 * s / math.sqrt(n)


def iqm_over_seeds(means: Sequence[float], seed: int = 0) -> tuple[float, float, float]:
    """Interquartile mean of per-seed results and its 95 % percentile-bootstrap CI over seeds
    (``scipy.stats.bootstrap``, 2 000 resamples) — the aggregate rliable recommends for few runs."""
    from scipy import stats

    x = np.asarray(means, dtype=float)

    def iqm(v: np.ndarray, axis: int = -1) -> np.ndarray:
        return stats.trim_mean(v, 0.25, axis=axis)

    res = stats.bootstrap((x,), iqm, n_resamples=2000, confidence_level=0.95, method="percentile",
                          random_state=np.random.default_rng(seed))
    return float(iqm(x)), float(res.confidence_interval.low), float(res.confidence_interval.high)


class ReportError(ValueError):
    """A bad report request (missing path, not a sweep directory, …): one line, exit 2."""


# ----------------------------------------------------------------------------------------------
# reading sweep directories
# ----------------------------------------------------------------------------------------------


@dataclass
class TrialResult:
    """One trial of a sweep's ledger and what its run directory holds."""

    name: str
    problem: str
    algo: str
    num_minors: int
    seed: int
    iterations: int
    train_batch_size: int
    run_dir: Path
    evaluation: list[dict[str, Any]] | None
    """The evaluation cells if the trial is finished, else None."""
    variant: str = "reference"

    @property
    def finished(self) -> bool:
        return self.evaluation is not None

    @property
    def env_steps(self) -> int:
        return self.iterations * self.train_batch_size

    def cell(self, num_minors: int, execution: str) -> dict[str, Any] | None:
        """The evaluation cell at ``num_minors`` with ``execution`` (IPPO/MAPPO: any execution
        asks for ``multi-agent``, the only one they have)."""
        if self.algo not in M3F_ALGOS:
            execution = "multi-agent"
        for r in self.evaluation or []:
            if r.get("num_minors") == num_minors and r.get("execution") == execution:
                return r
        return None

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(iteration, env steps, mean episode return) of the iterations in which episodes ended."""
        its, steps, rets = [], [], []
        try:
            with open(self.run_dir / "progress.csv", newline="") as fh:
                for row in csv.DictReader(fh):
                    ret = as_float(row.get("episode_return_mean"))
                    if math.isfinite(ret):
                        its.append(int(row["iteration"]))
                        steps.append(as_float(row.get("env_steps")))
                        rets.append(ret)
        except (OSError, KeyError, ValueError):
            pass
        return np.array(its, dtype=int), np.array(steps, dtype=float), np.array(rets, dtype=float)

    @property
    def final_return(self) -> float:
        """Mean episode return of the last iteration in which episodes ended (training,
        stochastic); −inf if there is none."""
        rets = self.curve()[2]
        return float(rets[-1]) if len(rets) else -math.inf


def best_trial(trials: Iterable[TrialResult]) -> TrialResult | None:
    """The best of several trials by the spec's rule (experiments.md §2.0 [judgement]): the
    highest training return at the final iteration — the reference's "best trial" reads the
    last logged return — not the evaluation it is then reported with, so the reported number
    is not the maximum of several noisy evaluations.  Ties go to the lower seed."""
    return max(trials, key=lambda t: (t.final_return, -t.seed), default=None)


BEST_RULE = "the trial with the highest training return at its final iteration"


@dataclass
class SweepResult:
    """A sweep directory: its ledger and the state of every trial."""

    path: Path
    experiment: str
    budget: str
    definition: str
    updated: str
    trials: list[TrialResult] = field(default_factory=list)

    @property
    def finished(self) -> list[TrialResult]:
        return [t for t in self.trials if t.finished]

    @property
    def missing(self) -> list[TrialResult]:
        return [t for t in self.trials if not t.finished]

    @property
    def label(self) -> str:
        return f"{self.experiment} ({self.budget} budget)"

    def problems(self, algos: Iterable[str] | None = None) -> list[str]:
        """Problems with a finished trial (of ``algos``), in the paper's order."""
        algos = tuple(algos) if algos is not None else None
        present = {t.problem for t in self.finished if algos is None or t.algo in algos}
        return [p for p in PROBLEM_ORDER if p in present] + sorted(present - set(PROBLEM_ORDER))


def _cells(raw: Any) -> list[Cell]:
    return [Cell(int(c["num_minors"]), str(c["execution"]), int(c["episodes"]), int(c["seed"])) for c in raw]


def load_sweep(path: str | Path) -> list[SweepResult]:
    """Read the ledger of the sweep directory ``path``: one :class:`SweepResult` per experiment
    in it, each with the state of its trials (a trial is finished for an experiment when its run
    directory holds every evaluation cell that experiment asks of it)."""
    path = Path(path)
    if not path.exists():
        raise ReportError(f"{path}: no such directory")
    if not path.is_dir():
        raise ReportError(f"{path}: not a directory (expected a sweep directory written by `m3fmarl sweep`)")
    ledger = path / LEDGER
    if not ledger.is_file():
        raise ReportError(f"{path}: not a sweep directory (no {LEDGER}; `m3fmarl sweep ... --out DIR` writes one)")
    try:
        data = json.loads(ledger.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(f"{ledger}: unreadable ({type(err).__name__}: {str(err).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("trials"), list) or not isinstance(
            data.get("experiments"), list) or not isinstance(data.get("budget"), str):
        raise ReportError(f"{ledger}: not a sweep ledger (expected budget, experiments and trials)")
    results: dict[str, TrialResult] = {}
    entries: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(data["trials"]):
        try:
            name = str(entry["name"])
            settings = entry.get("settings") or {}
            run_dir = path / "trials" / name
            have = evaluated_cells(read_evaluation(run_dir), int(entry["iterations"]))
            results[name] = TrialResult(
                name=name, problem=str(entry["problem"]), algo=str(entry["algo"]),
                num_minors=int(entry["num_minors"]), seed=int(entry["seed"]), iterations=int(entry["iterations"]),
                train_batch_size=int(settings.get("train_batch_size") or 0), run_dir=run_dir,
                evaluation=list(have.values()) or None, variant=str(entry.get("variant", "reference")))
            entries[name] = entry
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ReportError(f"{ledger}: trial entry {i} is not a ledger trial (name, problem, algo, num_minors, "
                              "seed, iterations)") from None
    sweeps = []
    for exp in data["experiments"]:
        try:
            sweep = SweepResult(path, str(exp["experiment"]), data["budget"], str(exp.get("path", "")),
                                str(data.get("updated", "")))
            for name in exp["trials"]:
                t = results[name]
                want = _cells(exp.get("cells", {}).get(name, []))
                have = {Cell(int(r["num_minors"]), str(r["execution"]), int(r["episodes"]), int(r["seed"]))
                        for r in t.evaluation or []}
                finished = t.evaluation is not None and all(c in have for c in want)
                if finished and want:  # this experiment's cells only, not those others ask of a shared trial
                    cells = zip(t.evaluation, _cells(t.evaluation), strict=True)
                    t = dataclasses.replace(t, evaluation=[r for r, c in cells if c in want])
                sweep.trials.append(t if finished else dataclasses.replace(t, evaluation=None))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ReportError(f"{ledger}: experiment entry {exp!r:.60} is not a ledger experiment (experiment, "
                              "trials, cells)") from None
        sweeps.append(sweep)
    return sweeps


# ----------------------------------------------------------------------------------------------
# Table 2
# ----------------------------------------------------------------------------------------------


class PaperValue(NamedTuple):
    mean: float
    ci95: float
    text: str
    """"mean ± ci95" as the paper prints it."""


def read_paper_table2(path: Path = PAPER_TABLE2) -> dict[tuple[str, str], PaperValue]:
    """(paper problem label, paper algorithm label) → the paper's mean ± 95 % CI at N = 20."""
    with open(path, newline="") as fh:
        return {(r["problem"], r["algorithm"]): PaperValue(float(r["mean"]), float(r["ci95"]),
                                                           f"{r['mean']} ± {r['ci95']}") for r in csv.DictReader(fh)}


@dataclass(frozen=True)
class Table2Cell:
    problem: str
    algo: str
    trial: TrialResult | None
    """The best finished trial with an N = 20 cell (:func:`best_trial`), None if there is none."""
    result: dict[str, Any] | None
    compared: int
    """Finished trials of (problem, algo) with an N = 20 cell."""
    paper: PaperValue | None


def table2_algos(sweep: SweepResult, paper: dict[tuple[str, str], PaperValue]) -> list[str]:
    """The columns of ``sweep``'s Table 2: the algorithms with ``paper`` values always (a gap says
    "not run"), the extra baselines (no paper value, e.g. MF-PPO) only when the sweep trains them."""
    in_paper = {label for _, label in paper}
    return [a for a in TABLE2_ALGOS if ALGO_LABELS[a] in in_paper or any(t.algo == a for t in sweep.trials)]


def table2_cells(sweep: SweepResult) -> list[Table2Cell]:
    """Per (problem, algorithm) of the sweep: the best trial's N = 20 evaluation (CE for the M3F
    methods, multi-agent for IPPO/MAPPO/MF-PPO), next to the paper's number."""
    paper = read_paper_table2()
    problems = [p for p in PROBLEM_ORDER if any(t.problem == p for t in sweep.trials)]
    algos = table2_algos(sweep, paper)
    cells = []
    for problem in problems:
        for algo in algos:
            candidates = [(t, t.cell(TABLE2_N, "centralized")) for t in sweep.finished
                          if t.problem == problem and t.algo == algo]
            with_cell = {t.name: r for t, r in candidates if r is not None}
            chosen = best_trial(t for t, _ in candidates if t.name in with_cell)
            best = (chosen, with_cell[chosen.name]) if chosen is not None else (None, None)
            cells.append(Table2Cell(problem, algo, best[0], best[1], len(with_cell),
                                    paper.get((PROBLEM_LABELS.get(problem, problem), ALGO_LABELS[algo]))))
    return cells


def plus_minus(mean: float, ci: float) -> str:
    """``mean ± ci`` with one decimal (two for small values), as tables print returns."""
    digits = 1 if abs(mean) >= 100 or ci >= 1 else 2
    return f"{mean:.{digits}f} ± {ci:.{digits}f}"


def _paper_pm(paper: PaperValue | None) -> str:
    return f"paper {paper.text}" if paper else "paper: –"


def _steps(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.3g}M"
    return f"{x / 1e3:.3g}k" if x >= 1e3 else f"{x:.0f}"


def _ranges(values: Iterable[int]) -> str:
    vals = sorted(set(values))
    return "/".join(str(v) for v in vals) if vals else "–"


def deviations(sweep: SweepResult) -> list[str]:
    """"<label> deviates: …" for each algorithm of the registry that ``sweep`` trains and whose
    entry states a deviation from the problems as the paper poses them."""
    return [f"{a.label} deviates: {a.deviation}" for a in registry.ALGORITHMS.values()
            if a.deviation and any(t.algo == a.name for t in sweep.trials)]


def table2_caption(sweep: SweepResult) -> str:
    """Which rule picked the cells, and how long the compared trials trained."""
    training: dict[str, list[str]] = {}
    for algo in TABLE2_ALGOS:
        trials = [t for t in sweep.trials if t.algo == algo]
        if not trials:
            continue
        seeds = len({t.seed for t in trials})
        text = (f"trained at N = {_ranges(t.num_minors for t in trials)}, {_ranges(t.iterations for t in trials)} "
                f"iterations × {_ranges(t.train_batch_size for t in trials)} env steps "
                f"({_ranges(t.env_steps for t in trials)} env steps per trial), {seeds} seed{'s' * (seeds > 1)}")
        training.setdefault(text, []).append(ALGO_LABELS[algo])
    parts = [f"{', '.join(algos)} {text}" for text, algos in training.items()]
    variants = sorted({t.variant for t in sweep.trials})
    rule = "; ".join(f"{v} variant: {CI_RULES.get(v, '?')}" for v in variants)
    return (f"Table 2 ({sweep.budget} budget): mean return ± 95 % CI ({rule}) at N = {TABLE2_N} of the best "
            f"trial per problem and algorithm ({BEST_RULE}, among the finished trials evaluated at N = {TABLE2_N}; "
            f"centralized execution for {'/'.join(ALGO_LABELS[a] for a in M3F_ALGOS)}, every agent on its own "
            f"observation for {'/'.join(ALGO_LABELS[a] for a in registry.names('multi-agent'))}), "
            f"paper value in parentheses. " + "; ".join(parts) + "." + "".join(f" {d}." for d in deviations(sweep)))


def seeds_markdown(sweep: SweepResult) -> str:
    """With ≥ 3 finished seeds of a (problem, algorithm): the interquartile mean of their N = 20
    evaluations with a bootstrap 95 % CI over seeds, next to the mean ± std over seeds."""
    lines = []
    for problem in PROBLEM_ORDER:
        for algo in TABLE2_ALGOS:
            vals = [r["mean"] for t in sweep.finished if t.problem == problem and t.algo == algo
                    for r in [t.cell(TABLE2_N, "centralized")] if r is not None]
            if len(vals) >= 3:
                iqm, lo, hi = iqm_over_seeds(vals)
                lines.append(f"| {PROBLEM_LABELS.get(problem, problem)} | {ALGO_LABELS[algo]} | {len(vals)} | "
                             f"{iqm:.1f} [{lo:.1f}, {hi:.1f}] | {np.mean(vals):.1f} ± {np.std(vals):.1f} |")
    if not lines:
        return ""
    return ("Over seeds (cells with ≥ 3 finished seeds): interquartile mean of the per-seed N = 20 evaluations with "
            "a 95 % percentile-bootstrap CI over seeds (rliable's recommendation for few runs), and mean ± std "
            "over seeds.\n\n"
            "| problem | algorithm | seeds | IQM [95 % bootstrap CI] | mean ± std |\n|---|---|---|---|---|\n"
            + "\n".join(lines) + "\n")


def table2_markdown(sweep: SweepResult, cells: Sequence[Table2Cell]) -> str:
    algos = list(dict.fromkeys(c.algo for c in cells))
    lines = [f"| problem | {' | '.join(ALGO_LABELS[a] for a in algos)} |", "|---" * (len(algos) + 1) + "|"]
    for problem in dict.fromkeys(c.problem for c in cells):
        row = []
        for algo in algos:
            c = next(c for c in cells if c.problem == problem and c.algo == algo)
            ours = plus_minus(c.result["mean"], ci95(c.result, c.trial.variant)) if c.result else "not run"
            if c.result is None and any(t.problem == problem and t.algo == algo for t in sweep.trials):
                ours = "unfinished" if not any(t.problem == problem and t.algo == algo for t in sweep.finished) \
                    else f"no N = {TABLE2_N} evaluation"
            row.append(f"{ours} ({_paper_pm(c.paper)})")
        lines.append(f"| {PROBLEM_LABELS.get(problem, problem)} | {' | '.join(row)} |")
    seeds = seeds_markdown(sweep)
    return f"{table2_caption(sweep)}\n\n" + "\n".join(lines) + "\n" + (f"\n{seeds}" if seeds else "")


TABLE2_COLUMNS = ("problem", "algorithm", "mean", "ci95", "episodes", "paper_mean", "paper_ci95", "trial", "seed",
                  "train_num_minors", "iterations", "env_steps", "eval_num_minors", "execution", "trials_compared",
                  "budget")


def table2_rows(sweep: SweepResult, cells: Sequence[Table2Cell]) -> list[dict[str, Any]]:
    rows = []
    for c in cells:
        t, r = c.trial, c.result or {}
        rows.append({"problem": PROBLEM_LABELS.get(c.problem, c.problem), "algorithm": ALGO_LABELS[c.algo],
                     "mean": r.get("mean", ""), "ci95": ci95(r, t.variant) if t and r else "",
                     "episodes": r.get("episodes", ""),
                     "paper_mean": c.paper.mean if c.paper else "", "paper_ci95": c.paper.ci95 if c.paper else "",
                     "trial": t.name if t else "", "seed": t.seed if t else "",
                     "train_num_minors": t.num_minors if t else "", "iterations": t.iterations if t else "",
                     "env_steps": t.env_steps if t else "", "eval_num_minors": r.get("num_minors", ""),
                     "execution": r.get("execution", ""), "trials_compared": c.compared, "budget": sweep.budget})
    return rows


# ----------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------


@dataclass
class Curve:
    """Mean, population std and maximum over trials of the return, per iteration."""

    steps: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    max: np.ndarray
    trials: int


MARL_SCALINGS = ("team", "reference")
"""How Figs. 7/12/13 draw IPPO/MAPPO curves: ``team`` = team return against joint env steps (the
default); ``reference`` = the authors' plotting (spec §2.0): RLlib 1.8 logged the sum over all
agents' returns, and both axes were divided by N + 1 — so x = env steps / (N + 1) and
y = (agents / (N + 1)) × team return (= the team return, except 2G: N/(N + 1) × team return),
which lets the curves be laid over the paper's."""


def marl_scaled(curve: Curve | None, trials: Sequence[TrialResult], scaling: str) -> Curve | None:
    """``curve`` of IPPO/MAPPO ``trials`` (all at one N) under :data:`MARL_SCALINGS` ``scaling``."""
    if curve is None or scaling == "team" or not trials:
        return curve
    from m3fmarl.problems import make_problem

    n = trials[0].num_minors
    agents = n + (1 if make_problem(trials[0].problem, 1).has_major else 0)
    f = agents / (n + 1)
    return Curve(curve.steps / (n + 1), curve.mean * f, curve.std * f, curve.max * f, curve.trials)


def mean_curve(trials: Sequence[TrialResult]) -> Curve | None:
    """The trials' curves on their common iterations, truncated to the shortest trial (spec §2.0);
    None if no iteration is common to all of them."""
    curves = [t.curve() for t in trials]
    curves = [c for c in curves if len(c[0])]
    if not curves:
        return None
    last = min(int(c[0][-1]) for c in curves)
    common = set(range(1, last + 1))
    for its, _, _ in curves:
        common &= set(its.tolist())
    if not common:
        return None
    keep = np.array(sorted(common))
    steps = np.stack([s[np.searchsorted(i, keep)] for i, s, _ in curves])
    rets = np.stack([r[np.searchsorted(i, keep)] for i, _, r in curves])
    return Curve(steps.mean(axis=0), rets.mean(axis=0), rets.std(axis=0), rets.max(axis=0), len(curves))


def _new_figure(panels: int) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.4 * panels + 0.6, 3.4), dpi=100)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, panels, i + 1) for i in range(panels)]
    return fig, axes


def _draw_curve(ax: Any, curve: Curve | None, label: str, color: str, band: bool = True) -> None:
    if curve is None:
        return
    points = int(np.isfinite(curve.mean).sum())
    if points < 2:  # said on the panel, not left as a lone dot (smoke runs: 1–2 iterations)
        notes = getattr(ax, "m3fmarl_notes", [])
        notes.append(f"{label}: {points} logged point{'s' if points != 1 else ''} (a return is logged "
                     "once episodes finish; run too short for a curve)")
        ax.m3fmarl_notes = notes
    marker = "o" if len(curve.steps) < 20 else None
    ax.plot(curve.steps, curve.mean, color=color, lw=1.6, marker=marker, ms=3,
            label=f"{label} (mean of {curve.trials})" if curve.trials > 1 else label)
    if band and curve.trials > 1:
        ax.fill_between(curve.steps, curve.mean - curve.std, curve.mean + curve.std, color=color, alpha=0.2, lw=0)


def _mf_line(ax: Any, value: tuple[float, float, str] | None, color: str = "k", band: bool = False) -> None:
    if value is None:
        return
    mean, ci, label = value
    ax.axhline(mean, color=color, lw=2.2, ls="--", label=label)
    if band:
        ax.axhspan(mean - ci, mean + ci, color=color, alpha=0.12, lw=0)


def _finish_figure(fig: Any, axes: list[Any], problems: Sequence[str], title: str, out: Path,
                   xlabel: str = "env steps t", ylabel: str = "return J(π)") -> Path:
    for ax, problem in zip(axes, problems, strict=True):
        ax.set_title(PROBLEM_LABELS.get(problem, problem), fontsize=11)
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7, loc="best")
        else:
            ax.text(0.5, 0.5, "no finished\nepisodes logged", ha="center", va="center", transform=ax.transAxes,
                    fontsize=9, color="0.4")
        notes = getattr(ax, "m3fmarl_notes", [])
        if notes:
            ax.text(0.02, 0.02, "\n".join(textwrap.fill(n, 48) for n in notes), ha="left", va="bottom",
                    transform=ax.transAxes, fontsize=6, color="0.35")
    axes[0].set_ylabel(ylabel)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def _group(trials: Iterable[TrialResult], **where: Any) -> list[TrialResult]:
    return [t for t in trials if all(getattr(t, k) == v for k, v in where.items())]


def mf_level(problem: str, sweeps: Sequence[SweepResult],
             num_minors: int = TABLE2_N) -> tuple[float, float, str] | None:
    """The M3FPPO "MF" level at ``num_minors`` (CE) for ``problem`` (Figs. 7, 12, 13): the best
    (:func:`best_trial`) of the finished M3FPPO trials with that evaluation cell — those of the
    ``table2`` experiment if any of the given sweeps is one (the paper's MF line is its Table 2
    policy), otherwise those of every given sweep — not whichever trials the figure's own grid
    holds."""
    def pool(candidates: Iterable[SweepResult]) -> list[TrialResult]:
        found: dict[Path, TrialResult] = {}
        for sweep in candidates:
            for t in _group(sweep.finished, problem=problem, algo=REFERENCE.name):
                if t.cell(num_minors, "centralized") is not None:
                    found.setdefault(t.run_dir.resolve(), t)
        return list(found.values())

    trials = pool(s for s in sweeps if s.experiment == "table2") or pool(sweeps)
    t = best_trial(trials)
    if t is None:
        return None
    r = t.cell(num_minors, "centralized")
    return r["mean"], ci95(r, t.variant), f"MF N={num_minors} (M3FPPO N={t.num_minors}, s{t.seed})"


COLORS = {a.name: a.color for a in registry.ALGORITHMS.values()}


def plot_figure(sweep: SweepResult, others: Sequence[SweepResult], out: Path,
                marl_scaling: str = "team") -> tuple[Path, int, str] | None:
    """The picture of ``sweep``'s experiment → (path, panels, caption); None if its trials have
    nothing to draw."""
    fid = sweep.experiment
    kind = FIGURE_KINDS.get(fid)
    fin = sweep.finished
    mf_sweeps = [sweep, *[s for s in others if s is not sweep]]
    ref = REFERENCE.name
    # the curves of figs 7/12/13 are the multi-agent algorithms of the figure's own grid; fig10's
    # the M3FC ones
    marl = [a for a in registry.names("multi-agent") if any(t.algo == a for t in sweep.trials)]
    m3f = [a for a in M3F_ALGOS if any(t.algo == a for t in sweep.trials)]
    # the transfer figure shows one algorithm: M3FPPO (fig9), else the sweep's first one
    transfer_algo = ref if any(t.algo == ref for t in sweep.trials) else next(
        (a for a in registry.names() if any(t.algo == a for t in sweep.trials)), ref)
    if kind in ("fig7", "fig12", "fig13"):
        problems = sweep.problems(marl) or sweep.problems()
    elif kind == "fig10":
        problems = sweep.problems(m3f)
    elif kind == "fig9":
        problems = sweep.problems([transfer_algo])
    else:
        problems = sweep.problems([ref])
    if kind is None or not problems:
        return None
    if marl_scaling not in MARL_SCALINGS:
        raise ReportError(f"unknown MARL scaling {marl_scaling!r}; valid: {', '.join(MARL_SCALINGS)}")
    fig, axes = _new_figure(len(problems))
    xlabel = "env steps t"
    ylabel = "return J(π)"
    scaling_text = ("team return against joint env steps" if marl_scaling == "team" else
                    "the authors' plotting scale: summed agent return and env steps both divided by N + 1")
    if kind in ("fig7", "fig12", "fig13") and marl_scaling == "reference":
        xlabel = "env steps / (N + 1)"
    if kind == "fig5":
        caption = (f"{REFERENCE.label} training curves: mean over seeds ± 1 std (shaded), maximum over seeds "
                   "(dotted), truncated to the shortest trial")
        for ax, p in zip(axes, problems, strict=True):
            curve = mean_curve(_group(fin, problem=p, algo=ref))
            _draw_curve(ax, curve, REFERENCE.label, REFERENCE.color)
            if curve is not None and curve.trials > 1:
                ax.plot(curve.steps, curve.max, color=REFERENCE.color, lw=1.0, ls=":",
                        marker="." if len(curve.steps) < 20 else None, label="max over seeds")
    elif kind == "fig6":
        caption = f"{REFERENCE.label} trained directly at N: one line per training N (mean ± 1 std if several seeds)"
        for ax, p in zip(axes, problems, strict=True):
            trials = _group(fin, problem=p, algo=ref)
            for j, n in enumerate(sorted({t.num_minors for t in trials})):
                _draw_curve(ax, mean_curve(_group(trials, num_minors=n)), f"N={n}", f"C{j}")
    elif kind == "fig10":
        caption = f"{' vs '.join(ALGO_LABELS[a] for a in m3f)} training curves (mean ± 1 std if several seeds)"
        for ax, p in zip(axes, problems, strict=True):
            for algo in m3f:
                _draw_curve(ax, mean_curve(_group(fin, problem=p, algo=algo)), ALGO_LABELS[algo], COLORS[algo])
    elif kind == "fig7":
        caption = (f"{' and '.join(ALGO_LABELS[a] for a in marl)} training curves (mean ± 1 std over seeds; "
                   f"{scaling_text}); dashed: {REFERENCE.label} evaluated at N = {TABLE2_N}, CE (MF; the best "
                   f"Table 2 {REFERENCE.label} trial)")
        for ax, p in zip(axes, problems, strict=True):
            for algo in marl:
                trials = _group(fin, problem=p, algo=algo)
                for n in sorted({t.num_minors for t in trials}):
                    group = _group(trials, num_minors=n)
                    _draw_curve(ax, marl_scaled(mean_curve(group), group, marl_scaling), f"{ALGO_LABELS[algo]} N={n}",
                                COLORS[algo])
            _mf_line(ax, mf_level(p, mf_sweeps))
    elif kind in ("fig12", "fig13"):
        caption = (f"{' and '.join(ALGO_LABELS[a] for a in marl)} trained at each N: one line per N, mean ± 1 std "
                   f"over seeds ({scaling_text}); dashed: {REFERENCE.label} evaluated at N = {TABLE2_N}, CE (MF; the "
                   f"best Table 2 {REFERENCE.label} trial)")
        for ax, p in zip(axes, problems, strict=True):
            trials = [t for t in fin if t.problem == p and t.algo in marl]
            for j, n in enumerate(sorted({t.num_minors for t in trials})):
                group = _group(trials, num_minors=n)
                _draw_curve(ax, marl_scaled(mean_curve(group), group, marl_scaling), f"N={n}", f"C{j}")
            _mf_line(ax, mf_level(p, mf_sweeps))
    elif kind == "fig9":
        xlabel, ylabel = "number of minor agents N", "return J_N(π)"
        algo = registry.get(transfer_algo)
        if algo.multiagent:
            how = "every agent acting on its own observation (MA)"
        else:
            how = "centralized (CE) and decentralized (DE) execution"
        caption = (f"Transfer over N: the {algo.label} policy of the best trial ({BEST_RULE}) run at each N with "
                   f"{how}, shaded 95 % CI; MF = the largest evaluated N")
        for ax, p in zip(axes, problems, strict=True):
            _draw_transfer(ax, _group(fin, problem=p, algo=transfer_algo))
            ax.xaxis.get_major_locator().set_params(integer=True)
    title = f"{fid} — {sweep.budget} budget" + ("\nnot comparable with the paper" if sweep.budget != "paper" else "")
    path = _finish_figure(fig, axes, problems, title, out, xlabel, ylabel)
    caption += "".join(f". {d}" for d in deviations(sweep))
    return path, len(problems), caption


def _draw_transfer(ax: Any, trials: Sequence[TrialResult]) -> None:
    cells = [r for t in trials for r in t.evaluation or []]
    if not cells:
        return
    mf_n = max(r["num_minors"] for r in cells)

    best = best_trial(t for t in trials if t.evaluation)
    ns = sorted({r["num_minors"] for r in best.evaluation or [] if r["num_minors"] != mf_n})
    # M3F policies: CE and DE lines (the algorithm's registry colour, execution by line style and
    # marker); multi-agent policies have one execution (MA)
    if best.algo in M3F_ALGOS:
        lines = (("centralized", "CE", "-", "o"), ("decentralized", "DE", "--", "s"))
    else:
        lines = (("multi-agent", "MA", "-", "o"),)
    for execution, short, ls, mk in lines:
        pts = [(n, best.cell(n, execution)) for n in ns]
        pts = [(n, r) for n, r in pts if r is not None]
        if not pts:
            continue
        x = np.array([n for n, _ in pts], dtype=float)
        m = np.array([r["mean"] for _, r in pts])
        ci = np.array([ci95(r, best.variant) for _, r in pts])
        color = COLORS.get(best.algo, REFERENCE.color)
        ax.plot(x, m, color=color, ls=ls, marker=mk, ms=3, label=f"{short} (s{best.seed})")
        ax.fill_between(x, m - ci, m + ci, color=color, alpha=0.2 if execution == "centralized" else 0.1, lw=0)
    top = best.cell(mf_n, lines[0][0])
    if top is not None:
        _mf_line(ax, (top["mean"], ci95(top, best.variant), f"MF ({lines[0][1]}, N={mf_n})"), band=True)


# ----------------------------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------------------------


@dataclass
class Report:
    out: Path
    markdown: Path
    files: list[Path]
    missing: dict[str, list[str]]
    """Sweep directory → names of its trials unfinished for one of its experiments or more (each once)."""


def _check_out(out: Path, sweeps: Sequence[SweepResult]) -> None:
    target = out.resolve()
    for s in sweeps:
        root = s.path.resolve()
        if target == root or root in target.parents:
            raise ReportError(f"--out {out} is inside the sweep directory {s.path}; a report never writes into a "
                              "sweep directory, choose another --out")


def _stem(sweep: SweepResult, taken: set[str]) -> str:
    stem = f"{sweep.experiment}-{sweep.budget}"
    k = 2
    base = stem
    while stem in taken:
        stem = f"{base}-{k}"
        k += 1
    taken.add(stem)
    return stem


def build_report(sweep_dirs: Sequence[str | Path], out: str | Path, *, stream: Any = None,
                 marl_scaling: str = "team") -> Report:
    """Read ``sweep_dirs`` and write report.md, tables and pictures into ``out``
    (``marl_scaling``: :data:`MARL_SCALINGS`)."""
    stream = stream or sys.stderr
    sweeps = [s for p in sweep_dirs for s in load_sweep(p)]
    out = Path(out)
    _check_out(out, sweeps)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReportError(f"--out {out}: cannot create the report directory ({err.strerror})") from None
    files: list[Path] = []
    missing: dict[str, list[str]] = {}
    taken: set[str] = set()
    md = ["# Results report", "",
          f"Written by `m3fmarl report` on {time.strftime('%Y-%m-%d %H:%M %Z')} from {len(sweeps)} sweep "
          f"director{'y' if len(sweeps) == 1 else 'ies'}. Returns are undiscounted episode returns of the shared "
          "reward; ± is the 95 % CI of the evaluation (spec/experiments.md §2.0). Curves: return during training "
          "(stochastic actions) against env steps.", ""]
    for sweep in sweeps:
        stem = _stem(sweep, taken)
        md += [f"## {sweep.experiment} — {sweep.budget} budget", ""]
        if sweep.budget in BUDGET_NOTES:
            md += [f"> **{BUDGET_NOTES[sweep.budget]}**", ""]
        md += [f"- sweep directory: `{sweep.path}`" + (f" (definition `{sweep.definition}`)" if sweep.definition
                                                        else ""),
               f"- trials finished: {len(sweep.finished)} of {len(sweep.trials)}"]
        if sweep.missing:
            names = [t.name for t in sweep.missing]
            known = missing.setdefault(str(sweep.path), [])  # a directory may hold several experiments
            known += [n for n in names if n not in known]
            md.append(f"- missing (not finished, left out below): {', '.join(f'`{n}`' for n in names)}")
            print(f"m3fmarl report: {sweep.path} ({sweep.label}): {len(names)} of {len(sweep.trials)} trials not "
                  f"finished, reported without them:", file=stream)
            for n in names:
                print(f"  {n}", file=stream)
        md.append("")
        if sweep.experiment == "table2":
            cells = table2_cells(sweep)
            text = table2_markdown(sweep, cells)
            md_path, csv_path = out / f"{stem}.md", out / f"{stem}.csv"
            md_path.write_text(text)
            with open(csv_path, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=list(TABLE2_COLUMNS))
                w.writeheader()
                w.writerows(table2_rows(sweep, cells))
            files += [md_path, csv_path]
            md += [text, f"Also as [{md_path.name}]({md_path.name}) and [{csv_path.name}]({csv_path.name}).", ""]
        elif sweep.experiment in FIGURES:
            drawn = plot_figure(sweep, sweeps, out / f"{stem}.png", marl_scaling)
            if drawn is None:
                md += ["No finished trial to draw yet.", ""]
            else:
                path, panels, caption = drawn
                files.append(path)
                md += [f"![{sweep.experiment}]({path.name})", "",
                       f"*{sweep.experiment}: {caption}; {panels} panel(s), one per problem with finished trials.*",
                       ""]
        else:
            md += [f"`{sweep.experiment}` is not a paper table or figure this command knows "
                   f"(table2, {', '.join(FIGURES)}); only the trial list above is reported.", ""]
        if sweep.finished:
            md += ["| trial | iterations | env steps | evaluation (N, execution: mean ± ci95) |", "|---|---|---|---|"]
            for t in sweep.finished:
                cells_text = "; ".join(
                    f"{r['num_minors']} {r['execution']}: {plus_minus(r['mean'], ci95(r, t.variant))}"
                    for r in t.evaluation or [])
                md.append(f"| {t.name} | {t.iterations} | {_steps(t.env_steps)} | {cells_text} |")
            md.append("")
    from m3fmarl.results.claims import OPEN, check_claims, claims_markdown

    claims = check_claims(sweeps)
    if any(c.verdict != OPEN for c in claims):  # nothing finished to judge: no section
        md.append(claims_markdown(claims))
        claims_json = out / "claims.json"
        claims_json.write_text(json.dumps([c.to_dict() for c in claims], indent=1))
        files.append(claims_json)
    report_md = out / "report.md"
    report_md.write_text("\n".join(md))
    return Report(out, report_md, files, missing)


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace) -> int:
    rep = build_report(args.sweep_dirs, args.out, marl_scaling=args.marl_scaling)
    print(f"wrote {rep.markdown}" + (f" and {', '.join(p.name for p in rep.files)}" if rep.files else ""))
    return 0


def add_parser(sub: Any) -> None:
    """The ``report`` subcommand."""
    p = sub.add_parser("report", help="Table 2 and the paper's figures from sweep directories (report.md, PNG, CSV)")
    p.add_argument("sweep_dirs", nargs="+", metavar="SWEEP_DIR", help="directories written by `m3fmarl sweep`")
    p.add_argument("--out", default="results/report", help="report directory (default results/report)")
    p.add_argument("--marl-scaling", choices=MARL_SCALINGS, default="team",
                   help="IPPO/MAPPO curves of figs 7/12/13: team return vs joint env steps (default), or the "
                        "authors' plotting scale (both axes / (N + 1)) to lay them over the paper's")
    p.set_defaults(func=cmd_report)
