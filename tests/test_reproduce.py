"""`m3fmarl reproduce` end to end on a tiny campaign (two experiment files sharing a trial): the
sweep, the report with the baseline comparison and Figs. 8/11, the committed files (small files,
policy exports that `m3fmarl evaluate` loads), campaign.md/json, and a rerun that resumes
without retraining.  Real Ray Tune, real training (2 iterations of 1 000 steps)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TABLE2 = """\
id: table2
problems: [potential]
grid:
  - algorithms: [m3fppo]
    num_minors: [5]
    seeds: [0]
    iterations: 2
evaluation: {num_minors: [20], episodes: 5}
budgets:
  smoke:
    settings:
      m3fppo: {train_batch_size: 1000, minibatch_size: 500, num_envs_per_env_runner: 10}
"""
FIG9 = TABLE2.replace("id: table2", "id: fig9").replace(
    "evaluation: {num_minors: [20], episodes: 5}",
    "evaluation: {num_minors: [4, 5, 20], executions: [centralized, decentralized], episodes: 5}")


def _run(args: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run([sys.executable, "-m", "m3fmarl", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def test_reproduce_a_tiny_campaign_and_resume_it(tmp_path: Path) -> None:
    (tmp_path / "table2.yaml").write_text(TABLE2)
    (tmp_path / "fig9.yaml").write_text(FIG9)
    out = tmp_path / "results"
    args = ["reproduce", "--budget", "smoke", "--out", str(out), "--cpus", "1", "--experiments",
            str(tmp_path / "table2.yaml"), str(tmp_path / "fig9.yaml")]
    first = _run(args)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "1 trials (2 named by the experiments" in first.stdout  # the shared trial is trained once
    (trial,) = [p.name for p in (out / "trials").iterdir()]
    committed = out / "trials" / trial
    assert {p.name for p in committed.iterdir()} == {"run.json", "config.yaml", "progress.csv", "evaluation.json",
                                                      "policy.pt", "policy.json"}
    cells = json.loads((committed / "evaluation.json").read_text())["results"]
    assert sorted((c["num_minors"], c["execution"]) for c in cells) == [
        (4, "centralized"), (4, "decentralized"), (5, "centralized"), (5, "decentralized"), (20, "centralized"),
        (20, "decentralized")]
    report = (out / "report.md").read_text()
    assert "## table2" in report and "## fig9" in report and "M3F policies against fixed policies" in report
    assert "Figs. 8 and 11" in report and (out / "fig11.png").is_file()  # Potential is in fig11
    # header, the Table 2 cell (N = 20), the trial at its training N = 5 (fig9 evaluated it there)
    base = (out / "baselines.csv").read_text().splitlines()
    assert len(base) == 3 and base[1].startswith("table2,potential,") and base[2].startswith("trial,potential,")
    assert ",5,5," in base[2] and trial in base[2]  # N = 5, 5 episodes
    record = json.loads((out / "campaign.json").read_text())
    assert record["distinct_trials"] == 1 and record["trials_named_by_experiments"] == 2
    assert record["trials"][trial]["used_by"] == ["table2", "fig9"] and record["cpu_hours_total"] > 0
    assert "m3fmarl reproduce --budget smoke" in (out / "campaign.md").read_text()
    # the committed policy re-evaluates the committed cell exactly
    (n20,) = [c for c in cells if c["num_minors"] == 20 and c["execution"] == "centralized"]
    ev = _run(["evaluate", "--checkpoint", str(committed), "--num-minors", "20", "--episodes", "5", "--seed", "0",
               "--json"])
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["results"][0]["mean"] == pytest.approx(n20["mean"])
    # rerun: nothing retrained, the report rewritten
    progress = (out / "sweep" / "trials" / trial / "progress.csv").read_bytes()
    again = _run(args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 finished (kept), 0 to run" in again.stdout
    assert (out / "sweep" / "trials" / trial / "progress.csv").read_bytes() == progress
