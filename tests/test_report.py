"""`m3fmarl report` on real sweep directories: a small table2-shaped sweep trained once per module
(M3FPPO on two problems × 2 seeds, M3FA2C and IPPO on one, a MAPPO trial left unfinished), figure
sweeps assembled from its trial directories, one fig9 transfer trial; the table equals the
trials' evaluation.json numbers, the pictures are valid PNGs with one panel per problem, bad
input exits 2 with one line, and nothing in a sweep directory changes."""

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

import pytest

from m3fmarl.experiments import load_experiment
from m3fmarl.results.report import (
    PAPER_TABLE2,
    build_report,
    load_sweep,
    mean_curve,
    mf_level,
    read_paper_table2,
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
UNFINISHED = "potential__mappo__N3__s0"


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"}


def _sweep(root: Path, name: str, text: str):
    path = root / f"{name}.yaml"
    path.write_text(text)
    return load_experiment(path, "smoke")


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
    check_ledger(out["table2"], table2, resume=True, create=True)
    for trial in table2.trials:
        if trial.name != UNFINISHED:
            run_trial(trial, out["table2"])
    fig9 = _sweep(root, "fig9", FIG9)
    out["fig9"] = root / "fig9"
    check_ledger(out["fig9"], fig9, resume=True, create=True)
    run_trial(fig9.trials[0], out["fig9"])
    for name, text in (("fig5", FIG5), ("fig7", FIG7), ("fig10", FIG10), ("fig12", FIG12)):
        sweep = _sweep(root, name, text)
        out[name] = root / name
        check_ledger(out[name], sweep, resume=True, create=True)
        for trial in sweep.trials:
            shutil.copytree(out["table2"] / "trials" / trial.name, out[name] / "trials" / trial.name)
    return out


@pytest.fixture(scope="module")
def report(sweeps, tmp_path_factory):
    """`m3fmarl report` over every sweep directory, through the command line."""
    before = {k: _snapshot(v) for k, v in sweeps.items()}
    dest = tmp_path_factory.mktemp("out") / "report"
    dirs = [str(sweeps[k]) for k in ("table2", "fig5", "fig7", "fig9", "fig10", "fig12")]
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


def test_table2_cells_are_the_best_trials_n20_evaluation(sweeps, report):
    rows = _table_csv(report["out"])
    assert {p for p, _ in rows} == {"Potential", "Beach"}  # the problems of the sweep, none else
    paper = read_paper_table2()
    for problem, label in (("potential", "Potential"), ("beach-bar", "Beach")):
        evals = [_evaluation(sweeps["table2"] / "trials" / f"{problem}__m3fppo__N5__s{s}") for s in (0, 1)]
        cells = [r for ev in evals for r in ev["results"] if r["num_minors"] == 20 and r["execution"] == "centralized"]
        assert len(cells) == 2
        # the best trial: highest training return at the final iteration (spec §2.0), not the best evaluation
        finals = [_final_return(sweeps["table2"] / "trials" / f"{problem}__m3fppo__N5__s{s}") for s in (0, 1)]
        best = cells[finals.index(max(finals))]
        row = rows[(label, "M3FPPO")]
        assert (float(row["mean"]), float(row["ci95"]), int(row["episodes"])) == (best["mean"], best["ci95"], 3)
        assert row["trial"] == evals[cells.index(best)]["trial"]
        assert (row["train_num_minors"], row["iterations"], row["env_steps"], row["trials_compared"]) == (
            "5", "2", "4000", "2")
        assert (float(row["paper_mean"]), float(row["paper_ci95"])) == paper[(label, "M3FPPO")][:2]
        assert row["budget"] == "smoke"
    for algo, execution in (("m3fa2c", "centralized"), ("ippo", "multi-agent")):
        (cell,) = _evaluation(sweeps["table2"] / "trials" / f"potential__{algo}__N3__s0")["results"]
        assert (cell["num_minors"], cell["execution"]) == (20, execution)
        row = rows[("Potential", algo.upper())]
        assert (float(row["mean"]), float(row["ci95"]), row["execution"]) == (cell["mean"], cell["ci95"], execution)
    assert rows[("Potential", "MAPPO")]["mean"] == "" and rows[("Potential", "MAPPO")]["trials_compared"] == "0"
    assert rows[("Potential", "MAPPO")]["paper_mean"] == "-26.7"
    assert rows[("Beach", "IPPO")]["mean"] == ""


def test_table2_markdown_labels_rule_budget_and_gaps(sweeps, report):
    text = (report["out"] / "table2-smoke.md").read_text()
    assert "smoke budget" in text and "highest training return at its final iteration" in text
    assert "M3FPPO trained at N = 5, 2 iterations × 2000 env steps (4000 env steps per trial), 2 seeds" in text
    header, rule, *body = [ln for ln in text.splitlines() if ln.startswith("|")]
    assert header == "| problem | IPPO | MAPPO | M3FA2C | M3FPPO |"
    assert [ln.split(" | ")[0] for ln in body] == ["| Beach", "| Potential"]  # the paper's order
    potential = body[1].strip("| ").split(" | ")
    ippo = _evaluation(sweeps["table2"] / "trials" / "potential__ippo__N3__s0")["results"][0]
    digits = 1 if abs(ippo["mean"]) >= 100 or ippo["ci95"] >= 1 else 2
    assert potential[1] == f"{ippo['mean']:.{digits}f} ± {ippo['ci95']:.{digits}f} (paper -27.1 ± 1.4)"
    assert potential[2] == "unfinished (paper -26.7 ± 1.7)"
    assert body[0].strip("| ").split(" | ")[1] == "not run (paper -350.3 ± 3.4)"


def test_report_md_lists_findings_missing_trials_and_embeds_outputs(sweeps, report):
    out, proc = report["out"], report["proc"]
    md = (out / "report.md").read_text()
    for exp in ("table2", "fig5", "fig7", "fig9", "fig10", "fig12"):
        assert f"## {exp} — smoke budget" in md
    assert md.count("smoke budget: not comparable with the paper") == 6
    assert "trials finished: 6 of 7" in md and f"missing (not finished, left out below): `{UNFINISHED}`" in md
    assert "trials finished: 4 of 4" in md  # fig5
    for png in ("fig5-smoke.png", "fig7-smoke.png", "fig9-smoke.png", "fig10-smoke.png", "fig12-smoke.png"):
        assert f"]({png})" in md
    assert "| problem | IPPO | MAPPO | M3FA2C | M3FPPO |" in md
    assert "[table2-smoke.csv](table2-smoke.csv)" in md
    # stderr names the unfinished trial; the command still succeeds
    assert f"{sweeps['table2']} (table2 (smoke budget)): 1 of 7 trials not finished" in proc.stderr
    assert f"  {UNFINISHED}" in proc.stderr.splitlines()
    assert proc.stdout.startswith(f"wrote {out / 'report.md'}")


@pytest.mark.parametrize(("name", "panels"), [("fig5", 2), ("fig7", 1), ("fig9", 1), ("fig10", 1), ("fig12", 1)])
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


def test_sweep_directories_are_untouched(sweeps, report):
    for key, path in sweeps.items():
        assert _snapshot(path) == report["before"][key], key


def test_curves_and_mf_line_come_from_the_trials(sweeps):
    fig5 = load_sweep(sweeps["fig5"])
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
    fig7 = load_sweep(sweeps["fig7"])
    mean, ci, label = mf_level("potential", [fig7])
    cells = [_evaluation(sweeps["fig7"] / "trials" / f"potential__m3fppo__N5__s{s}")["results"][0] for s in (0, 1)]
    finals = [_final_return(sweeps["fig7"] / "trials" / f"potential__m3fppo__N5__s{s}") for s in (0, 1)]
    best = cells[finals.index(max(finals))]
    assert (mean, ci) == (best["mean"], best["ci95"]) and label.startswith("MF N=20 (M3FPPO N=5")
    assert mf_level("beach-bar", [fig7]) is None


def test_unknown_experiment_and_empty_sweep_are_reported_not_failed(sweeps, tmp_path):
    other = tmp_path / "custom"
    sweep = _sweep(tmp_path, "x", FIG9.replace("id: fig9", "id: mine"))
    check_ledger(other, sweep, resume=True, create=True)
    empty = tmp_path / "empty"
    check_ledger(empty, _sweep(tmp_path, "fig6", FIG9.replace("id: fig9", "id: fig6")), resume=True, create=True)
    stream = io.StringIO()
    rep = build_report([other, empty], tmp_path / "out", stream=stream)
    assert stream.getvalue().count("  potential__m3fppo__N5__s0\n") == 2
    md = rep.markdown.read_text()
    assert "`mine` is not a paper table or figure" in md
    assert "No finished trial to draw yet." in md
    assert rep.missing == {str(other): ["potential__m3fppo__N5__s0"], str(empty): ["potential__m3fppo__N5__s0"]}
    assert rep.files == []


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
