"""`m3fmarl report` on real sweep directories: a small table2-shaped sweep trained once per module
(M3FPPO on two problems × 2 seeds, M3FA2C and IPPO on one, a MAPPO trial left unfinished), figure
sweeps assembled from its trial directories, one fig9 transfer trial, and one sweep directory
holding several experiments that share trials; the table equals the trials' evaluation.json
numbers with the CI of the variant's rule, the pictures are valid PNGs with one panel per problem,
the MF line comes from the Table 2 trials, bad input exits 2 with one line, and nothing in a sweep
directory changes."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from m3fmarl.experiments import load_experiment, merge_sweeps
from m3fmarl.results.report import (
    CI_RULES,
    PAPER_TABLE2,
    Curve,
    SweepResult,
    TrialResult,
    best_trial,
    build_report,
    ci95,
    iqm_over_seeds,
    load_sweep,
    marl_scaled,
    mean_curve,
    mf_level,
    read_paper_table2,
    seeds_markdown,
    table2_caption,
)
from m3fmarl.sweep import check_ledger, run_trial
from tests.conftest import SHARED, progress_rows

M3FCLI = [sys.executable, "-m", "m3fmarl"]
SETTINGS = """\
    settings:
      m3fppo: {train_batch_size: 2000, minibatch_size: 500, num_envs_per_env_runner: 20}
      m3fa2c: {train_batch_size: 2000, num_envs_per_env_runner: 20}
      ippo: {train_batch_size: 2000, minibatch_size: 500, num_envs_per_env_runner: 20}
      mappo: {train_batch_size: 2000, minibatch_size: 500, num_envs_per_env_runner: 20}
      mfppo: {train_batch_size: 2000, minibatch_size: 500, num_envs_per_env_runner: 20}
      hmf: {train_batch_size: 2000, num_envs_per_env_runner: 20, learning_starts: 500}
"""
M3FPPO_BLOCK = """\
  - algorithms: [m3fppo]
    num_minors: [5]
    seeds: [0, 1]
    iterations: 2
"""
TABLE2 = f"""\
id: table2
problems: [potential, beach-bar]
grid:
{M3FPPO_BLOCK}  - algorithms: [m3fa2c, ippo, mappo]
    problems: [potential]
    num_minors: [3]
    seeds: [0]
    iterations: 1
evaluation: {{num_minors: [20], episodes: 3}}
budgets:
  smoke:
{SETTINGS}"""
FIG5 = f"""\
id: fig5
problems: [potential, beach-bar]
grid:
{M3FPPO_BLOCK}evaluation: {{num_minors: [20], episodes: 3}}
budgets:
  smoke:
{SETTINGS}"""
FIG7 = f"""\
id: fig7
problems: [potential]
grid:
  - algorithms: [ippo]
    num_minors: [3]
    seeds: [0]
    iterations: 1
{M3FPPO_BLOCK}evaluation: {{num_minors: [20], episodes: 3}}
budgets:
  smoke:
{SETTINGS}"""
FIG10 = f"""\
id: fig10
problems: [potential]
grid:
{M3FPPO_BLOCK}  - algorithms: [m3fa2c]
    num_minors: [3]
    seeds: [0]
    iterations: 1
evaluation: {{num_minors: [20], episodes: 3}}
budgets:
  smoke:
{SETTINGS}"""
FIG12 = FIG7.replace("id: fig7", "id: fig12")
FIG9 = f"""\
id: fig9
problems: [potential]
grid:
  - algorithms: [m3fppo]
    num_minors: [5]
    seeds: [0]
    iterations: 1
evaluation: {{num_minors: [2, 4, 30], executions: [centralized, decentralized], episodes: 3}}
budgets:
  smoke:
{SETTINGS}"""


def _per_n_and_transfer(algo: str) -> tuple[str, str]:
    """The ``<algo>-n`` (evaluated at its training N) and ``<algo>-transfer`` (at N = 2, 4, 30)
    experiments of a one-trial Potential grid."""
    block = f"""\
  - algorithms: [{algo}]
    num_minors: [3]
    seeds: [0]
    iterations: 1
"""
    return tuple(f"""\
id: {algo}-{kind}
problems: [potential]
grid:
{block}evaluation: {{num_minors: {ns}, episodes: 3}}
budgets:
  smoke:
{SETTINGS}""" for kind, ns in (("n", "null"), ("transfer", "[2, 4, 30]")))


MFPPO_N, MFPPO_TRANSFER = _per_n_and_transfer("mfppo")
HMF_N, HMF_TRANSFER = _per_n_and_transfer("hmf")


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"}


def _sweep(root: Path, name: str, text: str):
    path = root / f"{name}.yaml"
    path.write_text(text)
    return load_experiment(path, "smoke")


def _ledger(out: Path, *sweeps) -> None:
    """The ledger of a sweep directory holding ``sweeps`` (as `m3fmarl sweep` writes it)."""
    check_ledger(out, merge_sweeps(list(sweeps)), resume=True, create=True)


def _ref_ci(r: dict) -> float:
    """The reference rule from the stored sample std: 2 · std(ddof 0) / √n."""
    n = r["episodes"]
    return 2 * r["std"] * math.sqrt((n - 1) / n) / math.sqrt(n)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _evaluation(run_dir: Path) -> dict:
    return json.loads((run_dir / "evaluation.json").read_text())


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory, ray_session) -> dict[str, Path]:
    """Sweep directories: table2 (6 of 7 trials run), fig5/fig7/fig10/fig12 (their trials copied from the
    table2 run: same definition, same settings and evaluation), fig9 (one trial)."""
    root = tmp_path_factory.mktemp("report")
    out = {}
    table2 = _sweep(root, "table2", TABLE2)
    out["table2"] = root / "table2"
    _ledger(out["table2"], table2)
    for trial in table2.trials:
        if trial.algo != "mappo":  # left unfinished
            run_trial(trial, out["table2"])
    for name, text in (("fig9", FIG9), ("mfppo-n", MFPPO_N), ("mfppo-transfer", MFPPO_TRANSFER), ("hmf-n", HMF_N),
                       ("hmf-transfer", HMF_TRANSFER)):
        sweep = _sweep(root, name, text)
        out[name] = root / name
        _ledger(out[name], sweep)
        run_trial(sweep.trials[0], out[name])
    for name, text in (("fig5", FIG5), ("fig7", FIG7), ("fig10", FIG10), ("fig12", FIG12)):
        sweep = _sweep(root, name, text)
        out[name] = root / name
        _ledger(out[name], sweep)
        for trial in sweep.trials:
            shutil.copytree(out["table2"] / "trials" / trial.name, out[name] / "trials" / trial.name)
    return out


@pytest.fixture(scope="module")
def names(sweeps) -> dict[tuple[str, str, int], str]:
    """(problem, algorithm, seed) → trial directory name of the table2 sweep."""
    (table2,) = load_sweep(sweeps["table2"])
    return {(t.problem, t.algo, t.seed): t.name for t in table2.trials}


@pytest.fixture(scope="module")
def report(sweeps, tmp_path_factory):
    """`m3fmarl report` over every sweep directory, through the command line."""
    before = {k: _snapshot(v) for k, v in sweeps.items()}
    dest = tmp_path_factory.mktemp("out") / "report"
    dirs = [str(sweeps[k]) for k in ("table2", "fig5", "fig7", "fig9", "fig10", "fig12", "mfppo-n", "mfppo-transfer",
                                     "hmf-n", "hmf-transfer")]
    p = subprocess.run([*M3FCLI, "report", *dirs, "--out", str(dest)], capture_output=True, text=True, env=_env(),
                       timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    return {"out": dest, "proc": p, "before": before}


def _final_return(run_dir: Path) -> float:
    rets = [float(r["episode_return_mean"]) for r in progress_rows(run_dir)]
    return [r for r in rets if math.isfinite(r)][-1]


def _table_csv(out: Path) -> dict[tuple[str, str], dict[str, str]]:
    with open(out / "table2-smoke.csv", newline="") as fh:
        return {(r["problem"], r["algorithm"]): r for r in csv.DictReader(fh)}


@pytest.mark.slow  # uses the module's trained sweeps
def test_table2_cells_are_the_best_trials_n20_evaluation(sweeps, names, report):
    rows = _table_csv(report["out"])
    assert {p for p, _ in rows} == {"Potential", "Beach"}  # the problems of the sweep, none else
    paper = read_paper_table2()
    for problem, label in (("potential", "Potential"), ("beach-bar", "Beach")):
        dirs = [sweeps["table2"] / "trials" / names[problem, "m3fppo", s] for s in (0, 1)]
        evals = [_evaluation(d) for d in dirs]
        cells = [r for ev in evals for r in ev["results"] if r["num_minors"] == 20 and r["execution"] == "centralized"]
        assert len(cells) == 2
        # the best trial: highest training return at the final iteration (spec §2.0), not the best evaluation
        finals = [_final_return(d) for d in dirs]
        best = cells[finals.index(max(finals))]
        row = rows[(label, "M3FPPO")]
        # reference variant: CI = 2·std(ddof 0)/√n, below the stored 1.96·s/√n for n = 3
        assert (float(row["mean"]), int(row["episodes"])) == (best["mean"], 3)
        assert float(row["ci95"]) == pytest.approx(_ref_ci(best), rel=1e-12)
        assert best["ci95"] == pytest.approx(1.96 * best["std"] / math.sqrt(3))  # stored: the paper's rule
        assert float(row["ci95"]) < best["ci95"]
        assert row["trial"] == evals[cells.index(best)]["trial"]
        assert (row["train_num_minors"], row["iterations"], row["env_steps"], row["trials_compared"]) == (
            "5", "2", "4000", "2")
        assert (float(row["paper_mean"]), float(row["paper_ci95"])) == paper[(label, "M3FPPO")][:2]
        assert row["budget"] == "smoke"
    for algo, execution in (("m3fa2c", "centralized"), ("ippo", "multi-agent")):
        (cell,) = _evaluation(sweeps["table2"] / "trials" / names["potential", algo, 0])["results"]
        assert (cell["num_minors"], cell["execution"]) == (20, execution)
        row = rows[("Potential", algo.upper())]
        assert (float(row["mean"]), row["execution"]) == (cell["mean"], execution)
        assert float(row["ci95"]) == pytest.approx(_ref_ci(cell), rel=1e-12)
    assert rows[("Potential", "MAPPO")]["mean"] == "" and rows[("Potential", "MAPPO")]["trials_compared"] == "0"
    assert rows[("Potential", "MAPPO")]["paper_mean"] == "-26.7"
    assert rows[("Beach", "IPPO")]["mean"] == ""


@pytest.mark.slow  # uses the module's trained sweeps
def test_table2_markdown_labels_rule_budget_and_gaps(sweeps, names, report):
    text = (report["out"] / "table2-smoke.md").read_text()
    assert "smoke budget" in text and "highest training return at its final iteration" in text
    caption = text.split("\n\n")[0]
    assert f"mean return ± 95 % CI (reference variant: {CI_RULES['reference']})" in caption  # the CI rule
    assert "paper variant" not in caption
    assert "Over seeds" not in text  # 2 seeds: no IQM table
    assert "M3FPPO trained at N = 5, 2 iterations × 2000 env steps (4000 env steps per trial), 2 seeds" in text
    header, rule, *body = [ln for ln in text.splitlines() if ln.startswith("|")]
    assert header == "| problem | IPPO | MAPPO | M3FA2C | M3FPPO |"
    assert [ln.split(" | ")[0] for ln in body] == ["| Beach", "| Potential"]  # the paper's order
    potential = body[1].strip("| ").split(" | ")
    ippo = _evaluation(sweeps["table2"] / "trials" / names["potential", "ippo", 0])["results"][0]
    ci = _ref_ci(ippo)
    digits = 1 if abs(ippo["mean"]) >= 100 or ci >= 1 else 2
    assert potential[1] == f"{ippo['mean']:.{digits}f} ± {ci:.{digits}f} (paper -27.1 ± 1.4)"
    assert potential[2] == "unfinished (paper -26.7 ± 1.7)"
    assert body[0].strip("| ").split(" | ")[1] == "not run (paper -350.3 ± 3.4)"


@pytest.mark.slow  # uses the module's trained sweeps
def test_report_md_lists_findings_missing_trials_and_embeds_outputs(sweeps, names, report):
    out, proc = report["out"], report["proc"]
    unfinished = names["potential", "mappo", 0]
    md = (out / "report.md").read_text()
    experiments = ("table2", "fig5", "fig7", "fig9", "fig10", "fig12", "mfppo-n", "mfppo-transfer", "hmf-n",
                   "hmf-transfer")
    for exp in experiments:
        assert f"## {exp} — smoke budget" in md
    assert md.count("smoke budget: not comparable with the paper") == len(experiments)
    assert "trials finished: 6 of 7" in md and f"missing (not finished, left out below): `{unfinished}`" in md
    assert "trials finished: 4 of 4" in md  # fig5
    for png in ("fig5-smoke.png", "fig7-smoke.png", "fig9-smoke.png", "fig10-smoke.png", "fig12-smoke.png",
                "mfppo-n-smoke.png", "mfppo-transfer-smoke.png", "hmf-n-smoke.png", "hmf-transfer-smoke.png"):
        assert f"]({png})" in md
    assert "Transfer over N: the MF-PPO policy" in md and "Transfer over N: the HMF policy" in md and "(MA)" in md
    assert "HMF deviates: value-based: on the continuous problems every agent picks from a discrete velocity" in md
    assert "| problem | IPPO | MAPPO | M3FA2C | M3FPPO |" in md
    assert "[table2-smoke.csv](table2-smoke.csv)" in md
    # stderr names the unfinished trial; the command still succeeds
    assert f"{sweeps['table2']} (table2 (smoke budget)): 1 of 7 trials not finished" in proc.stderr
    assert f"  {unfinished}" in proc.stderr.splitlines()
    assert proc.stdout.startswith(f"wrote {out / 'report.md'}")


@pytest.mark.slow  # uses the module's trained sweeps
@pytest.mark.parametrize(("name", "panels"), [("fig5", 2), ("fig7", 1), ("fig9", 1), ("fig10", 1), ("fig12", 1),
                                              ("mfppo-n", 1), ("mfppo-transfer", 1), ("hmf-n", 1),
                                              ("hmf-transfer", 1)])
def test_pictures_are_pngs_with_one_panel_per_problem(report, name, panels):
    from PIL import Image

    path = report["out"] / f"{name}-smoke.png"
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG"
        # figure width 3.4 in per panel + 0.6 in, at 100 dpi
        assert img.size == (340 * panels + 60, 340)
        assert len(img.convert("RGB").getcolors(1 << 24)) > 20  # something is drawn


@pytest.mark.slow  # uses the module's trained sweeps
def test_sweep_directories_are_untouched(sweeps, report):
    for key, path in sweeps.items():
        assert _snapshot(path) == report["before"][key], key


@pytest.mark.slow  # uses the module's trained sweeps
def test_curves_and_mf_line_come_from_the_trials(sweeps, names):
    (fig5,) = load_sweep(sweeps["fig5"])
    trials = [t for t in fig5.finished if t.problem == "potential"]
    curve = mean_curve(trials)
    rows = [progress_rows(t.run_dir) for t in trials]
    returns = [[float(r["episode_return_mean"]) for r in rs] for rs in rows]
    assert curve.trials == 2 and list(curve.steps) == [2000.0, 4000.0]
    for i in range(2):
        pair = [returns[0][i], returns[1][i]]
        assert curve.mean[i] == pytest.approx(sum(pair) / 2)
        assert curve.max[i] == max(pair)
        assert curve.std[i] == pytest.approx(abs(pair[0] - pair[1]) / 2)  # population std of two
    (fig7,) = load_sweep(sweeps["fig7"])
    mean, ci, label = mf_level("potential", [fig7])
    dirs = [sweeps["fig7"] / "trials" / names["potential", "m3fppo", s] for s in (0, 1)]
    cells = [_evaluation(d)["results"][0] for d in dirs]
    finals = [_final_return(d) for d in dirs]
    best = cells[finals.index(max(finals))]
    assert mean == best["mean"] and ci == pytest.approx(_ref_ci(best), rel=1e-12)
    assert label == f"MF N=20 (M3FPPO N=5, s{finals.index(max(finals))})"
    assert mf_level("beach-bar", [fig7]) is None


@pytest.mark.slow  # uses the module's trained sweeps
def test_unknown_experiment_and_empty_sweep_are_reported_not_failed(sweeps, tmp_path):
    other = tmp_path / "custom"
    sweep = _sweep(tmp_path, "x", FIG9.replace("id: fig9", "id: mine"))
    _ledger(other, sweep)
    empty = tmp_path / "empty"
    _ledger(empty, _sweep(tmp_path, "fig6", FIG9.replace("id: fig9", "id: fig6")))
    stream = io.StringIO()
    rep = build_report([other, empty], tmp_path / "out", stream=stream)
    name = sweep.trials[0].name
    assert stream.getvalue().count(f"  {name}\n") == 2
    md = rep.markdown.read_text()
    assert "`mine` is not a paper table or figure" in md
    assert "No finished trial to draw yet." in md
    assert rep.missing == {str(other): [name], str(empty): [name]}
    assert rep.files == []


@pytest.mark.slow  # uses the module's trained sweeps
@pytest.mark.parametrize("case", ["missing", "file", "not-a-sweep", "bad-ledger", "out-inside"])
def test_bad_input_exits_2_with_one_line(sweeps, tmp_path, case):
    args = {
        "missing": [str(tmp_path / "nope")],
        "file": [str(sweeps["table2"] / "sweep.json")],
        "not-a-sweep": [str(sweeps["table2"] / "trials")],
        "bad-ledger": [str(tmp_path / "bad")],
        "out-inside": [str(sweeps["fig9"]), "--out", str(sweeps["fig9"] / "report")],
    }[case]
    needle = {"missing": "no such directory", "file": "not a directory", "not-a-sweep": "not a sweep directory",
              "bad-ledger": "not a sweep ledger", "out-inside": "inside the sweep directory"}[case]
    if case == "bad-ledger":
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "sweep.json").write_text(json.dumps({"experiment": "table2"}))
    before = _snapshot(sweeps["fig9"])
    p = subprocess.run([*M3FCLI, "report", *args, *([] if case == "out-inside" else ["--out", str(tmp_path / "o")])],
                       capture_output=True, text=True, env=_env(), timeout=120)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("m3fmarl: error: ") and needle in lines[0], p.stderr
    assert not (tmp_path / "o").exists()
    assert _snapshot(sweeps["fig9"]) == before


def test_paper_table2_ships_with_the_package_and_equals_the_spec():
    spec = SHARED / "spec" / "paper_results.csv"
    if not spec.is_file():
        pytest.skip(f"{spec} not found (the shared spec is not next to this checkout)")
    with open(spec, newline="") as fh:
        want = [(r["problem"], r["algorithm"], int(r["N"]), float(r["mean"]), float(r["ci95"]))
                for r in csv.DictReader(fh) if r["source"] == "table2"]
    with open(PAPER_TABLE2, newline="") as fh:
        have = [(r["problem"], r["algorithm"], int(r["N"]), float(r["mean"]), float(r["ci95"]))
                for r in csv.DictReader(fh)]
    assert have == want and len(have) == 20


# ----------------------------------------------------------------------------------------------
# several experiments in one sweep directory; the MF line; CI rules; MARL scaling; IQM
# ----------------------------------------------------------------------------------------------

FIG7_OWN = FIG7.replace("    seeds: [0, 1]\n", "    seeds: [2]\n")
"""fig7 with an M3FPPO trial of its own (seed 2, in no Table 2 grid)."""
FIG9_MORE = f"""\
id: fig9
problems: [potential]
grid:
{M3FPPO_BLOCK}evaluation: {{num_minors: [20, 30], executions: [centralized, decentralized], episodes: 3}}
budgets:
  smoke:
{SETTINGS}"""
"""Table 2's Potential M3FPPO trials, asked for more cells than Table 2 evaluated."""
FAKE_MEAN = 12345.0


def _fake_trial(src: Path, dest: Path, final_return: float) -> None:
    """A copy of the run directory ``src`` at ``dest`` whose last logged training return is
    ``final_return`` and whose N = 20 CE evaluation mean is :data:`FAKE_MEAN`."""
    shutil.copytree(src, dest)
    with open(dest / "progress.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        fields, rows = reader.fieldnames, list(reader)
    rows[-1]["episode_return_mean"] = repr(final_return)
    with open(dest / "progress.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    ev = _evaluation(dest)
    for r in ev["results"]:
        if (r["num_minors"], r["execution"]) == (20, "centralized"):
            r["mean"] = FAKE_MEAN
    (dest / "evaluation.json").write_text(json.dumps(ev))


def _table2_finals(sweeps, names) -> dict[int, float]:
    return {s: _final_return(sweeps["table2"] / "trials" / names["potential", "m3fppo", s]) for s in (0, 1)}


@pytest.fixture(scope="module")
def campaign(sweeps, names, tmp_path_factory) -> dict:
    """One sweep directory holding table2, fig5, fig7 (with an M3FPPO trial of its own whose final
    training return beats every Table 2 trial) and fig9 (asking Table 2's Potential M3FPPO trials
    for cells they lack): the shared trials are one run directory each, copied from the table2 run."""
    root = tmp_path_factory.mktemp("campaign")
    out = root / "sweep"
    exps = [_sweep(root, "table2", TABLE2), _sweep(root, "fig5", FIG5), _sweep(root, "fig7", FIG7_OWN),
            _sweep(root, "fig9", FIG9_MORE)]
    _ledger(out, *exps)
    for trial in exps[0].trials:
        if (sweeps["table2"] / "trials" / trial.name).exists():
            shutil.copytree(sweeps["table2"] / "trials" / trial.name, out / "trials" / trial.name)
    own = next(t.name for t in exps[2].trials if t.algo == "m3fppo")
    assert own not in {t.name for t in exps[0].trials}
    _fake_trial(sweeps["table2"] / "trials" / names["potential", "m3fppo", 0], out / "trials" / own,
                max(_table2_finals(sweeps, names).values()) + 100.0)
    assert len(list((out / "trials").iterdir())) == 7  # 6 of table2 (fig5's are among them) + fig7's own
    stream = io.StringIO()
    rep = build_report([out], root / "report", stream=stream)
    return {"out": out, "exps": exps, "own": own, "report": rep, "stderr": stream.getvalue()}


@pytest.mark.slow  # uses the module's trained sweeps
def test_multi_experiment_sweep_reports_one_section_per_experiment(campaign, names, report):
    out, rep = campaign["out"], campaign["report"]
    table2, fig5, fig7, fig9 = campaign["exps"]
    loaded = load_sweep(out)
    assert [s.experiment for s in loaded] == ["table2", "fig5", "fig7", "fig9"]
    assert [[t.name for t in s.trials] for s in loaded] == [[t.name for t in e.trials] for e in campaign["exps"]]
    # finished per experiment: fig9 asks the shared Potential trials for cells they lack
    assert [len(s.finished) for s in loaded] == [6, 4, 2, 0]
    md = rep.markdown.read_text()
    for exp in ("table2", "fig5", "fig7", "fig9"):
        assert md.count(f"## {exp} — smoke budget") == 1
    experiments, claims = md.split("\n## The paper's claims on these runs\n")
    assert "| table2 |" in claims and "| fig5 |" in claims  # judged after every experiment
    sections = experiments.split("\n## ")[1:]
    assert [sec.split(" — ")[0] for sec in sections] == ["table2", "fig5", "fig7", "fig9"]
    for sec, counts in zip(sections, ("6 of 7", "4 of 4", "2 of 2", "0 of 2"), strict=True):
        assert f"trials finished: {counts}" in sec
        assert f"sweep directory: `{out}`" in sec
    assert "![fig7](fig7-smoke.png)" in sections[2] and campaign["own"] in sections[2]
    assert "No finished trial to draw yet." in sections[3]
    assert sorted(p.name for p in rep.files) == ["claims.json", "fig5-smoke.png", "fig7-smoke.png", "table2-smoke.csv",
                                                 "table2-smoke.md"]
    # Table 2: the ledger's table2 trials only -- the same table as the table2 sweep on its own, although
    # fig7's own M3FPPO trial (same problem, N = 20 cell, highest final return) is in the same directory
    assert _table_csv(rep.out) == _table_csv(report["out"])
    assert campaign["own"] not in (rep.out / "table2-smoke.md").read_text()
    assert f"{FAKE_MEAN:.1f}" not in (rep.out / "table2-smoke.md").read_text()
    # the unfinished trials of every experiment of the directory
    fig9_names = [t.name for t in fig9.trials]
    assert fig9_names == [names["potential", "m3fppo", s] for s in (0, 1)]
    assert rep.missing == {str(out): [names["potential", "mappo", 0], *fig9_names]}
    assert f"{out} (table2 (smoke budget)): 1 of 7 trials not finished" in campaign["stderr"]
    assert f"{out} (fig9 (smoke budget)): 2 of 2 trials not finished" in campaign["stderr"]


@pytest.mark.slow  # uses the module's trained sweeps
def test_mf_line_is_the_best_table2_trial(sweeps, names, campaign, tmp_path):
    """Figs. 7/12/13's MF level: the best (highest final training return) of the Table 2 M3FPPO
    trials with an N = 20 CE cell whenever a table2 sweep is given, whatever the figure's own grid
    holds; without one, the best over every given sweep."""
    (table2,) = load_sweep(sweeps["table2"])
    finals = _table2_finals(sweeps, names)
    best_seed = max(finals, key=finals.get)
    best = best_trial(t for t in table2.finished if t.problem == "potential" and t.algo == "m3fppo")
    assert best.seed == best_seed and best.final_return == finals[best_seed]
    cell = best.cell(20, "centralized")
    want = (cell["mean"], _ref_ci(cell), f"MF N=20 (M3FPPO N=5, s{best_seed})")

    # a fig7 sweep whose own M3FPPO trial is worse than both Table 2 trials (but evaluates best)
    fig7 = _sweep(tmp_path, "fig7", FIG7_OWN)
    own = next(t for t in fig7.trials if t.algo == "m3fppo")
    _ledger(tmp_path / "fig7", fig7)
    _fake_trial(sweeps["table2"] / "trials" / names["potential", "m3fppo", 0], tmp_path / "fig7" / "trials" / own.name,
                min(finals.values()) - 100.0)
    (worse,) = load_sweep(tmp_path / "fig7")
    assert [t.name for t in worse.finished if t.algo == "m3fppo"] == [own.name]
    got = mf_level("potential", [worse, table2])  # the figure's own sweep first, as plot_figure passes them
    assert got[0] == want[0] and got[1] == pytest.approx(want[1], rel=1e-12) and got[2] == want[2]
    assert mf_level("potential", [worse])[0] == FAKE_MEAN  # alone, its own trial is the level

    # one directory, fig7's own trial better than every Table 2 trial: still the Table 2 trial
    loaded = {s.experiment: s for s in load_sweep(campaign["out"])}
    got = mf_level("potential", [loaded["fig7"], *loaded.values()])
    assert got[0] == want[0] and got[2] == want[2]
    # no table2 sweep given: the best over the given ones, here fig7's own
    assert mf_level("potential", [loaded["fig7"], loaded["fig5"]])[0:3:2] == (FAKE_MEAN, "MF N=20 (M3FPPO N=5, s2)")


def test_ci95_follows_the_variants_rule():
    rng = np.random.default_rng(3)
    x = rng.normal(-40.0, 7.0, size=12)
    n, s = len(x), float(np.std(x, ddof=1))
    cell = {"episodes": n, "std": s, "mean": float(x.mean()), "ci95": 1.96 * s / math.sqrt(n)}
    assert ci95(cell, "reference") == pytest.approx(2 * s * math.sqrt((n - 1) / n) / math.sqrt(n), rel=1e-12)
    assert ci95(cell, "reference") == pytest.approx(2 * np.std(x, ddof=0) / math.sqrt(n), rel=1e-12)
    assert ci95(cell, "paper") == pytest.approx(1.96 * s / math.sqrt(n), rel=1e-12)
    assert ci95(cell, "paper") == pytest.approx(1.96 * np.std(x, ddof=1) / math.sqrt(n), rel=1e-12)
    assert ci95({**cell, "episodes": 1}, "reference") == cell["ci95"]  # no spread to speak of: as stored


def _trial(seed: int, *, algo: str = "m3fppo", problem: str = "potential", num_minors: int = 5,
           variant: str = "reference", mean: float | None = None) -> TrialResult:
    evaluation = None if mean is None else [{"num_minors": 20, "execution": "centralized", "episodes": 3,
                                              "seed": 0, "mean": mean, "std": 1.0, "ci95": 1.0}]
    return TrialResult(name=f"{problem}__{algo}__N{num_minors}__s{seed}", problem=problem, algo=algo,
                       num_minors=num_minors, seed=seed, iterations=2, train_batch_size=2000,
                       run_dir=Path("/nonexistent"), evaluation=evaluation, variant=variant)


def test_table2_caption_names_the_ci_rule_of_the_trials_variant():
    def caption(*variants):
        trials = [_trial(i, variant=v, mean=-1.0) for i, v in enumerate(variants)]
        return table2_caption(SweepResult(Path("/nonexistent"), "table2", "smoke", "", "", trials))

    assert f"(paper variant: {CI_RULES['paper']})" in caption("paper")
    assert "reference variant" not in caption("paper")
    assert f"(reference variant: {CI_RULES['reference']})" in caption("reference")
    assert "1.96" in CI_RULES["paper"] and "ddof 0" in CI_RULES["reference"]
    both = caption("reference", "paper")
    assert CI_RULES["paper"] in both and CI_RULES["reference"] in both


def test_marl_scaling_reference_divides_steps_by_n_plus_1():
    curve = Curve(np.array([1000.0, 2000.0]), np.array([-30.0, -20.0]), np.array([2.0, 1.0]),
                  np.array([-28.0, -19.0]), 2)
    potential = [_trial(s, algo="ippo", num_minors=4) for s in (0, 1)]  # has a major: N + 1 agents
    assert marl_scaled(curve, potential, "team") is curve
    ref = marl_scaled(curve, potential, "reference")
    np.testing.assert_allclose(ref.steps, [200.0, 400.0])
    np.testing.assert_allclose(ref.mean, curve.mean)
    np.testing.assert_allclose(ref.std, curve.std)
    np.testing.assert_allclose(ref.max, curve.max)
    assert ref.trials == 2
    gauss = [_trial(0, algo="mappo", problem="two-gaussians", num_minors=4)]  # no major: N agents
    ref = marl_scaled(curve, gauss, "reference")
    np.testing.assert_allclose(ref.steps, [200.0, 400.0])
    np.testing.assert_allclose(ref.mean, curve.mean * 4 / 5)
    np.testing.assert_allclose(ref.std, curve.std * 4 / 5)
    np.testing.assert_allclose(ref.max, curve.max * 4 / 5)
    assert marl_scaled(None, gauss, "reference") is None


@pytest.mark.slow  # uses the module's trained sweeps
def test_marl_scaling_flag_reaches_the_fig7_curves(sweeps, tmp_path, monkeypatch):
    """`m3fmarl report --marl-scaling reference`: the IPPO curve of fig7 (N = 3) is drawn at env
    steps / 4; the M3FPPO MF line is unchanged; the caption says which scale."""
    from m3fmarl import cli
    from m3fmarl.results import report as report_mod

    drawn: dict[str, list] = {"team": [], "reference": []}
    now = {"mode": "team"}
    real = report_mod._draw_curve

    def spy(ax, curve, label, color, band=True):
        drawn[now["mode"]].append((label, curve))
        real(ax, curve, label, color, band)

    monkeypatch.setattr(report_mod, "_draw_curve", spy)
    for mode in ("team", "reference"):
        now["mode"] = mode
        assert cli.main(["report", str(sweeps["fig7"]), "--out", str(tmp_path / mode), "--marl-scaling", mode]) == 0
    (label, team), = drawn["team"]
    (_, ref), = drawn["reference"]
    assert label == "IPPO N=3"
    np.testing.assert_allclose(ref.steps, team.steps / 4)
    np.testing.assert_allclose(ref.mean, team.mean)  # Potential has a major player: N + 1 agents
    assert "team return against joint env steps" in (tmp_path / "team" / "report.md").read_text()
    assert "the authors' plotting scale" in (tmp_path / "reference" / "report.md").read_text()


def test_iqm_over_seeds_and_the_seeds_table():
    from scipy import stats

    x = [-41.0, -39.5, -60.0, -38.0, -12.0, -40.5, -44.0]
    iqm, lo, hi = iqm_over_seeds(x)
    assert iqm == pytest.approx(stats.trim_mean(x, 0.25), rel=1e-12)
    assert iqm != pytest.approx(float(np.mean(x)))  # the outliers are trimmed
    assert lo <= iqm <= hi and lo < hi
    assert min(x) <= lo and hi <= max(x)
    assert iqm_over_seeds(x) == (iqm, lo, hi)  # seeded bootstrap: reproducible

    means = [-41.0, -39.5, -60.0]
    sweep = SweepResult(Path("/nonexistent"), "table2", "smoke", "", "",
                        [_trial(s, mean=m) for s, m in enumerate(means)] + [_trial(9)])  # s9 unfinished
    text = seeds_markdown(sweep)
    i, l_, h = iqm_over_seeds(means)
    assert (f"| Potential | M3FPPO | 3 | {i:.1f} [{l_:.1f}, {h:.1f}] | {np.mean(means):.1f} ± {np.std(means):.1f} |"
            in text.splitlines())
    sweep.trials = sweep.trials[:2]
    assert seeds_markdown(sweep) == ""  # 2 seeds: no table


@pytest.mark.slow  # uses the module's trained sweeps
def test_an_experiment_sees_only_the_cells_it_asks_for(sweeps, tmp_path):
    """The fig9 trial shared with another experiment that asks it for N = 20: `run_trial` of the
    merged trial evaluates only that missing cell (no training), and each experiment of the
    directory sees only its own cells (fig9's transfer picture and trial list are those of fig9
    alone)."""
    fig9 = _sweep(tmp_path, "fig9", FIG9)
    other = _sweep(tmp_path, "mine", FIG9.replace("id: fig9", "id: mine").replace(
        "{num_minors: [2, 4, 30], executions: [centralized, decentralized], episodes: 3}",
        "{num_minors: [20], episodes: 3}"))
    campaign = merge_sweeps([fig9, other])
    (trial,) = campaign.trials
    out = tmp_path / "sweep"
    _ledger(out, fig9, other)
    run_dir = out / "trials" / trial.name
    shutil.copytree(sweeps["fig9"] / "trials" / trial.name, run_dir)
    trained = {k: v for k, v in _snapshot(run_dir).items() if k != "evaluation.json"}
    before = _evaluation(run_dir)["results"]
    run_trial(trial, out)
    assert {k: v for k, v in _snapshot(run_dir).items() if k != "evaluation.json"} == trained
    after = _evaluation(run_dir)["results"]
    assert after[:6] == before and [(r["num_minors"], r["execution"]) for r in after[6:]] == [(20, "centralized")]

    views = {s.experiment: s for s in load_sweep(out)}
    assert [(r["num_minors"], r["execution"]) for r in views["fig9"].trials[0].evaluation] == [
        (r["num_minors"], r["execution"]) for r in before]
    assert [(r["num_minors"], r["execution"]) for r in views["mine"].trials[0].evaluation] == [(20, "centralized")]
    rep = build_report([out], tmp_path / "report", stream=io.StringIO())
    fig9_section = rep.markdown.read_text().split("## fig9 — smoke budget")[1].split("\n## ")[0]
    assert "30 decentralized" in fig9_section and "20 centralized" not in fig9_section
