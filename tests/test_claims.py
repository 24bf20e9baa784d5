"""The paper's claims checked on runs (m3fmarl.results.claims): the comparison and curve rules,
and each experiment's verdict following the numbers of synthetic sweeps — a claim holds, holds
partly or fails as the evaluations are moved, the paper's own Table 2 gives the problems where
M3FPPO is clearly better (2G, Beach, Foraging, as spec §2 says), a trial is never compared with
itself, and unfinished algorithms leave a claim not evaluable."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from m3fmarl.results.claims import (
    FAILS,
    HOLDS,
    OPEN,
    PARTLY,
    check_claims,
    claims_markdown,
    curve_shape,
    relation,
)
from m3fmarl.results.report import SweepResult, TrialResult, build_report

RNG_SEED = 0


def _rising(n: int = 40, start: float = -200.0, end: float = -100.0, noise: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(RNG_SEED)
    return np.linspace(start, end, n) + rng.normal(0.0, noise, n)


def _cell(n: int, mean: float, std: float = 10.0, episodes: int = 100, execution: str = "centralized") -> dict:
    return {"num_minors": n, "execution": execution, "mean": mean, "std": std, "episodes": episodes, "seed": 0}


def _trial(root: Path, problem: str, algo: str, n: int, cells: list[dict] | None, returns=None, seed: int = 0,
           name: str | None = None) -> TrialResult:
    """A trial directory with ``returns`` as its training curve and ``cells`` as its evaluation
    (None: unfinished)."""
    name = name or f"{problem}__{algo}__N{n}__s{seed}"
    run_dir = root / "trials" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    returns = _rising() if returns is None else np.asarray(returns, dtype=float)
    with open(run_dir / "progress.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["iteration", "env_steps", "episode_return_mean"])
        for i, r in enumerate(returns, start=1):
            w.writerow([i, i * 1000, r])
    return TrialResult(name, problem, algo, n, seed, len(returns), 1000, run_dir, cells)


def _sweep(root: Path, experiment: str, trials: list[TrialResult]) -> SweepResult:
    return SweepResult(root, experiment, "reduced", "", "", trials)


def _one(claims, experiment: str, index: int = 0):
    return [c for c in claims if c.experiment == experiment][index]


# --- the rules -------------------------------------------------------------------------------------


def test_relation_needs_the_cis_apart():
    assert relation((10.0, 1.0), (7.0, 1.0)) == "above"
    assert relation((7.0, 1.0), (10.0, 1.0)) == "below"
    assert relation((10.0, 2.0), (7.0, 2.0)) == "tie"
    assert relation((-50.0, 0.0), (-50.0, 0.0)) == "tie"


def test_curve_shape_reads_gain_drops_and_noise():
    rise = curve_shape(_rising())
    assert rise.learned and rise.monotone and not rise.unstable
    assert rise.gain == pytest.approx(90.0, abs=5.0) and rise.last_step > 0 and "still rising" in rise.text()
    # up, then lose most of it: unstable and not monotone
    collapse = curve_shape(np.concatenate([_rising(30), np.linspace(-100.0, -180.0, 10)]))
    assert collapse.learned and collapse.unstable and not collapse.monotone
    assert collapse.drop > 50
    # noise only: no gain beyond the noise, so neither learned, monotone nor unstable
    flat = curve_shape(np.random.default_rng(1).normal(-640.0, 2.0, 40))
    assert not flat.learned and not flat.monotone and not flat.unstable and "flat" in flat.text()
    # levelled off: rose, then a plateau
    plateau = curve_shape(np.concatenate([_rising(20), np.full(20, -100.0)]))
    assert plateau.monotone and "levelled off" in plateau.text()
    assert curve_shape([1.0, 2.0, 3.0]) is None  # fewer points than blocks


# --- Table 2 ---------------------------------------------------------------------------------------


def _table2(root: Path, m3fppo: dict[str, float], ippo: dict[str, float], m3fa2c: dict[str, float],
            mappo_finished: bool = True) -> SweepResult:
    trials = []
    for p, mean in m3fppo.items():
        trials.append(_trial(root, p, "m3fppo", 300, [_cell(20, mean)]))
        trials.append(_trial(root, p, "ippo", 20, [_cell(20, ippo[p], execution="multi-agent")]))
        trials.append(_trial(root, p, "mappo", 20, [_cell(20, ippo[p], execution="multi-agent")]
                             if mappo_finished else None))
        trials.append(_trial(root, p, "m3fa2c", 300, [_cell(20, m3fa2c[p])]))
    return _sweep(root, "table2", trials)


PROBLEMS4 = ("two-gaussians", "beach-bar", "foraging", "potential")


def test_table2_claims_follow_the_numbers(tmp_path):
    # CI of a cell: 2·10·√(99/100)/10 ≈ 2.0
    ours = dict.fromkeys(PROBLEMS4, 0.0)
    better = _table2(tmp_path / "a", ours, dict.fromkeys(PROBLEMS4, -10.0), dict.fromkeys(PROBLEMS4, -10.0))
    claims = check_claims([better])
    first, second = _one(claims, "table2", 0), _one(claims, "table2", 1)
    assert (first.verdict, second.verdict) == (HOLDS, HOLDS)
    # the paper's own numbers: M3FPPO at least as good on 3 of 5, clearly on 2G, Beach, Foraging (spec §2)
    assert "the paper: 3 of 5, clearly on 2G, Beach, Foraging" in first.summary
    assert "on 4 of 4 problems" in first.summary
    # below the baselines on 2G and Foraging, a tie on Potential: 2 of 4, clearly only on Beach
    mixed = _table2(tmp_path / "b", ours, {"two-gaussians": 10.0, "beach-bar": -10.0, "foraging": 10.0,
                                           "potential": 1.0}, {**dict.fromkeys(PROBLEMS4, -10.0), "potential": 1.0})
    claims = check_claims([mixed])
    first, second = _one(claims, "table2", 0), _one(claims, "table2", 1)
    assert first.verdict == PARTLY and "on 2 of 4 problems" in first.summary and "clearly better on Beach;" in \
        first.summary
    assert second.verdict == PARTLY and "on 3 of 4 problems" in second.summary  # a tie is not "better"
    # one of four (clearly on Beach): "most" fails, whatever the clear problems say
    one = _table2(tmp_path / "d", ours, {**dict.fromkeys(PROBLEMS4, 10.0), "beach-bar": -10.0},
                  dict.fromkeys(PROBLEMS4, -10.0))
    first = _one(check_claims([one]), "table2")
    assert first.verdict == FAILS and "on 1 of 4 problems (Beach), clearly better on Beach;" in first.summary
    worse = _table2(tmp_path / "c", ours, dict.fromkeys(PROBLEMS4, 10.0), dict.fromkeys(PROBLEMS4, 10.0))
    assert [c.verdict for c in check_claims([worse]) if c.experiment == "table2"] == [FAILS, FAILS]


def test_unfinished_algorithms_are_named_and_nothing_finished_is_not_evaluable(tmp_path):
    ours = dict.fromkeys(PROBLEMS4, 0.0)
    sweep = _table2(tmp_path / "a", ours, dict.fromkeys(PROBLEMS4, -10.0), dict.fromkeys(PROBLEMS4, -10.0),
                    mappo_finished=False)
    first = _one(check_claims([sweep]), "table2")
    assert first.verdict == HOLDS and any("MAPPO" in c for c in first.caveats)
    empty = _sweep(tmp_path / "b", "fig10", [_trial(tmp_path / "b", "potential", "m3fppo", 300, None)])
    (claim,) = check_claims([empty])
    assert claim.verdict == OPEN and claim.summary == "no finished trials to judge it on yet"


# --- figures ---------------------------------------------------------------------------------------


def test_fig5_monotone_and_one_seed_caveat(tmp_path):
    good = _sweep(tmp_path, "fig5", [_trial(tmp_path, p, "m3fppo", 300, [_cell(300, 0.0)]) for p in PROBLEMS4])
    (claim,) = check_claims([good])
    assert claim.verdict == HOLDS and "on 4 of 4 problems" in claim.summary
    assert claim.caveats and "one seed" in claim.caveats[0]
    collapse = np.concatenate([_rising(30), np.linspace(-100.0, -180.0, 10)])
    two_seeds = [_trial(tmp_path / "b", "potential", "m3fppo", 300, [_cell(300, 0.0)], returns=collapse, seed=s)
                 for s in (0, 1)]
    (claim,) = check_claims([_sweep(tmp_path / "b", "fig5", two_seeds)])
    assert claim.verdict == FAILS and not claim.caveats and "spread of the last block over 2 seeds" in \
        claim.evidence[0]


def test_fig9_convergence_to_the_mf_level(tmp_path):
    def trial(root: Path, means: dict[int, float]) -> TrialResult:
        cells = [_cell(n, m, execution=e) for n, m in means.items() for e in ("centralized", "decentralized")]
        return _trial(root, "beach-bar", "m3fppo", 300, cells)

    converging = {2: -550.0, 10: -430.0, 50: -401.0, 500: -400.0}
    (claim,) = check_claims([_sweep(tmp_path / "a", "fig9", [trial(tmp_path / "a", converging)])])
    assert claim.verdict == HOLDS and "DE at or above CE at 4 of 4" in claim.summary
    stuck = {2: -550.0, 10: -500.0, 50: -480.0, 500: -400.0}
    (claim,) = check_claims([_sweep(tmp_path / "b", "fig9", [trial(tmp_path / "b", stuck)])])
    assert claim.verdict == FAILS and "does not converge" in claim.evidence[0]


def test_fig7_marl_against_the_mf_line_of_table2(tmp_path):
    m3fppo = {p: 0.0 for p in PROBLEMS4}
    table2 = _table2(tmp_path / "t", m3fppo, dict.fromkeys(PROBLEMS4, -10.0), dict.fromkeys(PROBLEMS4, -10.0))

    def fig7(root: Path, means: dict[str, float], returns=None) -> SweepResult:
        return _sweep(root, "fig7", [_trial(root, p, "ippo", 20, [_cell(20, m, execution="multi-agent")],
                                            returns=returns) for p, m in means.items()])

    below = fig7(tmp_path / "a", {"two-gaussians": -10.0, "beach-bar": -10.0, "foraging": 1.0, "potential": 10.0})
    (claim,) = [c for c in check_claims([table2, below]) if c.experiment == "fig7"]
    assert claim.verdict == HOLDS and "on 3 of 4 problems" in claim.summary and "unstable curves: none" in claim.summary
    collapse = np.concatenate([_rising(30), np.linspace(-100.0, -180.0, 10)])
    above = fig7(tmp_path / "b", dict.fromkeys(PROBLEMS4, 10.0), returns=collapse)
    (claim,) = [c for c in check_claims([table2, above]) if c.experiment == "fig7"]
    assert claim.verdict == FAILS and "IPPO Beach N=20" in claim.summary  # unstable curves are named


def test_fig6_compares_with_the_transferred_policy_never_with_itself(tmp_path):
    root = tmp_path
    # the reduced budget trains 2G/Formation at N = 20: fig9's policy is then one of fig6's trials
    fig9_trial = _trial(root, "potential", "m3fppo", 20, [_cell(n, -50.0) for n in (5, 20, 500)])
    fig9 = _sweep(root, "fig9", [fig9_trial])
    small = _trial(root, "potential", "m3fppo", 5, [_cell(5, -49.0)])
    fig6 = _sweep(root, "fig6", [small, fig9_trial])
    claim = _one(check_claims([fig9, fig6]), "fig6")
    assert claim.verdict == HOLDS and "in 1 of 1 trials" in claim.summary
    assert any("itself the transfer figure's policy" in e for e in claim.evidence)
    worse = _trial(root, "potential", "m3fppo", 5, [_cell(5, -90.0)], name="worse")
    claim = _one(check_claims([fig9, _sweep(root, "fig6", [worse])]), "fig6")
    assert claim.verdict == FAILS and "→ trained at N below" in claim.evidence[0]


def test_fig10_a2c_below_ppo(tmp_path):
    trials = [_trial(tmp_path, p, a, 300, [_cell(300, m)]) for p in PROBLEMS4
              for a, m in (("m3fppo", 0.0), ("m3fa2c", -10.0 if p != "potential" else 0.0))]
    (claim,) = check_claims([_sweep(tmp_path, "fig10", trials)])
    assert claim.verdict == HOLDS and "on 3 of 4 problems" in claim.summary
    # "typically" = more than half: 2 of 4 is not
    half = [_trial(tmp_path / "b", p, a, 300, [_cell(300, m)]) for p in PROBLEMS4
            for a, m in (("m3fppo", 0.0), ("m3fa2c", -10.0 if p in PROBLEMS4[:2] else 0.0))]
    (claim,) = check_claims([_sweep(tmp_path / "b", "fig10", half)])
    assert claim.verdict == PARTLY and "on 2 of 4 problems" in claim.summary


def test_report_writes_the_claims_section_and_json(tmp_path):
    """build_report on a real sweep directory: report.md ends with the claims, claims.json holds them."""
    import shutil

    from m3fmarl.experiments import load_experiment, merge_sweeps
    from m3fmarl.sweep import check_ledger

    src = tmp_path / "fig10.yaml"
    src.write_text("id: fig10\nproblems: [potential]\ngrid:\n  - algorithms: [m3fppo, m3fa2c]\n    num_minors: [5]\n"
                   "    seeds: [0]\n    iterations: 40\nevaluation: {num_minors: null, episodes: 3}\n")
    exp = load_experiment(src, "paper")
    sweep_dir = tmp_path / "sweep"
    check_ledger(sweep_dir, merge_sweeps([exp]), resume=True, create=True)
    for t, mean in zip(exp.trials, (0.0, -30.0), strict=True):
        made = _trial(tmp_path / "made", t.problem, t.algo, t.num_minors, None)
        shutil.copytree(made.run_dir, sweep_dir / "trials" / t.name)
        (sweep_dir / "trials" / t.name / "evaluation.json").write_text(json.dumps(
            {"trial": t.name, "iterations": t.iterations, "results": [_cell(5, mean, episodes=3)]}))
    rep = build_report([sweep_dir], tmp_path / "report")
    text = rep.markdown.read_text()
    assert "## The paper's claims on these runs" in text
    (claim,) = json.loads((tmp_path / "report" / "claims.json").read_text())
    assert claim["experiment"] == "fig10" and claim["verdict"] in (HOLDS, PARTLY, FAILS)
    assert claims_markdown([]) == ""
