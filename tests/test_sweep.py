"""Experiment definitions and `m3fmarl sweep` on a real local Ray Tune: validation before any
trial, a smoke sweep killed with SIGKILL mid-way and resumed, a failing trial retried and reported."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from m3fmarl.config import ConfigError
from m3fmarl.experiments import BUDGETS, experiment_files, load_experiment
from tests.conftest import REPO, progress_rows

ALL_ALGOS = ("m3fppo", "m3fa2c", "ippo", "mappo")
M3FCLI = [sys.executable, "-m", "m3fmarl"]

SMOKE_SETTINGS = "m3fppo: {train_batch_size: 2000, minibatch_size: 500, num_envs_per_env_runner: 20}"


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"}


# ----------------------------------------------------------------------------------------------
# the shipped definitions
# ----------------------------------------------------------------------------------------------


def test_every_paper_id_has_a_definition():
    ids = {p.stem for p in experiment_files()}
    assert ids == {"table2", "fig5", "fig6", "fig7", "fig9", "fig10", "fig12", "fig13"}
    for path in experiment_files():
        assert load_experiment(path, "smoke", algorithms=ALL_ALGOS).id == path.stem


@pytest.mark.parametrize("path", experiment_files(), ids=lambda p: p.stem)
def test_budgets_shrink_only_what_the_spec_allows(path):
    """smoke: ≤ 2 iterations, small batches; reduced: same hyperparameters as paper, shorter;
    paper: the configs/algorithms defaults (spec §3.2)."""
    from m3fmarl.config import ALGORITHM_SETTINGS, load_algorithm

    sweeps = {b: load_experiment(path, b, algorithms=ALL_ALGOS) for b in BUDGETS}
    paper, reduced, smoke = sweeps["paper"], sweeps["reduced"], sweeps["smoke"]
    for trial in paper.trials:
        if trial.algo in ALGORITHM_SETTINGS:
            assert trial.settings == load_algorithm(trial.algo)
    for trial in reduced.trials:
        if trial.algo in ALGORITHM_SETTINGS:
            assert trial.settings == load_algorithm(trial.algo), trial.name
    assert len(reduced.trials) <= len(paper.trials)
    assert sum(t.iterations for t in reduced.trials) < sum(t.iterations for t in paper.trials) / 10
    assert all(t.iterations <= 2 for t in smoke.trials)
    assert all(t.settings is None or t.settings.train_batch_size <= 2000 for t in smoke.trials)
    assert all(t.evaluation.episodes is not None and t.evaluation.episodes <= 5 for t in smoke.trials)


def test_paper_grids_match_the_spec():
    def load(name):
        return load_experiment(REPO / "experiments" / f"{name}.yaml", "paper", algorithms=ALL_ALGOS)

    fig5 = load("fig5")
    assert len(fig5.trials) == 14  # 5 problems × 3 trials, 2 for Foraging
    assert {t.num_minors for t in fig5.trials} == {300}
    assert {(t.problem, t.iterations) for t in fig5.trials if t.problem == "foraging"} == {("foraging", 13000)}
    assert len(load("fig6").trials) == 15
    fig9 = load("fig9")
    assert fig9.trials[0].evaluation.num_minors == (2, 4, 6, 8, 10, 20, 30, 40, 50, 500)
    assert fig9.trials[0].evaluation.executions == ("centralized", "decentralized")
    fig12 = load("fig12")
    assert sum(t.algo == "ippo" for t in fig12.trials) == 45  # 5 problems × 3 N × 3 trials
    mf = [t for t in fig12.trials if t.algo == "m3fppo"]
    assert len(mf) == 5 and all(t.evaluation.num_minors == (20,) for t in mf)
    table2 = load("table2")
    assert {t.evaluation.num_minors for t in table2.trials} == {(20,)}
    assert {t.algo for t in table2.trials} == set(ALL_ALGOS)


def test_algorithms_come_from_the_trainer():
    from m3fmarl.train import ALGORITHM_BUILDERS

    if "ippo" in ALGORITHM_BUILDERS:
        assert any(t.algo == "ippo" for t in load_experiment(REPO / "experiments" / "fig12.yaml", "smoke").trials)
    else:
        with pytest.raises(ConfigError, match=r"fig12\.yaml:\d+: unknown algorithm 'ippo'; valid: m3fppo"):
            load_experiment(REPO / "experiments" / "fig12.yaml", "smoke")


# ----------------------------------------------------------------------------------------------
# validation: one line naming file and line, before any trial
# ----------------------------------------------------------------------------------------------

GOOD = """\
id: t
problems: [potential, beach-bar]
grid:
  - algorithms: [m3fppo]
    num_minors: [5]
    seeds: [0, 1]
    iterations: 2
evaluation: {episodes: 5}
budgets:
  smoke:
    iterations: 1
"""

BAD = [
    # (replace old → new in GOOD, expected line, message part)
    ("problems: [potential, beach-bar]", "problems: [potential, beech]", 2,
     "unknown problem 'beech'; valid: two-gaussians"),
    ("    seeds: [0, 1]", "    seedz: [0, 1]", 6, "unknown key 'seedz' in grid[0]; valid: algorithms"),
    ("id: t\n", "id: t\nrepeat: 3\n", 2, "unknown key 'repeat' in the experiment; valid: id"),
    ("    iterations: 1", "    iterations: 1\n    itertions: 2", 12, "unknown key 'itertions' in budgets.smoke"),
    ("  smoke:", "  quick:", 10, "unknown key 'quick' in budgets; valid: smoke, reduced"),
    ("evaluation: {episodes: 5}", "evaluation: {episods: 5}", 8, "unknown key 'episods' in evaluation"),
    ("    seeds: [0, 1]", "    seeds: []", 6, "seeds is empty"),
    ("grid:\n  - algorithms: [m3fppo]\n    num_minors: [5]\n    seeds: [0, 1]\n    iterations: 2\n", "grid: []\n",
     3, "grid is empty"),
    ("[m3fppo]", "[m3fppo, ppo]", 4, "unknown algorithm 'ppo'; valid: m3fppo, m3fa2c"),
    ("num_minors: [5]", "num_minors: [5, 0]", 5, "num_minors entry must be an integer >= 1, got 0"),
    ("    iterations: 2\n", "    iterations: 2\n    settings: {m3fppo: {lr_: 0.1}}\n", 8,
     "unknown m3fppo setting 'lr_'; valid: gamma"),
    ("    iterations: 2\n", "    iterations: 2\n  - algorithms: [m3fppo]\n    num_minors: [5]\n    seeds: [1]\n"
     "    iterations: 3\n", 8, "trial potential__m3fppo__N5__s1 is defined twice (also at t.yaml:4)"),
    ("    iterations: 2\n", "    iterations: 2\n    settings: {m3fppo: {minibatch_size: 7}}\n", 4,
     "minibatch_size (7) must divide train_batch_size"),
]


def test_good_definition_expands_the_grid(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(GOOD)
    sweep = load_experiment(path, "paper")
    assert [t.name for t in sweep.trials] == ["potential__m3fppo__N5__s0", "potential__m3fppo__N5__s1",
                                              "beach-bar__m3fppo__N5__s0", "beach-bar__m3fppo__N5__s1"]
    assert {t.iterations for t in sweep.trials} == {2}
    assert {t.iterations for t in load_experiment(path, "smoke").trials} == {1}
    assert load_experiment(path, "reduced").trials == sweep.trials  # no reduced overrides


@pytest.mark.parametrize(("old", "new", "line", "message"), BAD, ids=[b[3].split(";")[0][:40] for b in BAD])
def test_invalid_definition_names_the_line(tmp_path, old, new, line, message):
    assert old in GOOD
    path = tmp_path / "t.yaml"
    path.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_experiment(path, "smoke")
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"t.yaml:{line}: "), text
    assert message in text, text


def test_invalid_definition_fails_before_any_trial(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(GOOD.replace("[potential, beach-bar]", "[potential, beech]"))
    out = tmp_path / "out"
    p = subprocess.run([*M3FCLI, "sweep", str(path), "--out", str(out)], capture_output=True, text=True,
                       env=_env(), timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "m3fmarl: error: t.yaml:2: unknown problem 'beech'; valid: two-gaussians, formation, beach-bar, "
        "foraging, potential"]
    assert not out.exists()
    p = subprocess.run([*M3FCLI, "sweep", str(tmp_path / "missing.yaml"), "--budget", "smoke"],
                       capture_output=True, text=True, env=_env(), timeout=120)
    assert p.returncode == 2 and "experiment file not found" in p.stderr


# ----------------------------------------------------------------------------------------------
# real runs
# ----------------------------------------------------------------------------------------------


def _snapshot(run_dir: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(run_dir)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def _starts(out: Path, name: str) -> int:
    return sum(line.split(" ", 2)[1] == "start" for line in (out / "logs" / f"{name}.log").read_text().splitlines())


@pytest.mark.slow
def test_smoke_sweep_killed_and_resumed(tmp_path):
    """2 problems × 2 seeds on local Ray Tune; SIGKILL of the whole `m3fmarl sweep` process group
    once two trials are finished and two have a checkpoint; --resume keeps the finished ones
    byte-for-byte, continues the others from their checkpoints, and completes the sweep."""
    exp = tmp_path / "kill.yaml"
    exp.write_text(f"""\
id: killtest
problems: [beach-bar, potential]
grid:
  - algorithms: [m3fppo]
    num_minors: [5]
    seeds: [0, 1]
    iterations: {{default: 16, beach-bar: 2}}
evaluation: {{episodes: 5}}
budgets:
  smoke:
    settings:
      {SMOKE_SETTINGS}
""")
    out = tmp_path / "sweep"
    cmd = [*M3FCLI, "sweep", str(exp), "--budget", "smoke", "--out", str(out), "--checkpoint-every", "2",
           "--cpus", "2", "--report-every", "2"]
    fast = ["beach-bar__m3fppo__N5__s0", "beach-bar__m3fppo__N5__s1"]
    slow = ["potential__m3fppo__N5__s0", "potential__m3fppo__N5__s1"]
    log1 = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cmd, stdout=log1, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
    deadline = time.monotonic() + 480
    try:
        while True:
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-3000:]
            done = [n for n in fast if (out / "trials" / n / "evaluation.json").exists()]
            started = [n for n in slow if list((out / "trials" / n / "checkpoints").glob("iter_*/m3fmarl.json"))]
            if len(done) == 2 and len(started) == 2:
                break
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log1.close()
    assert proc.returncode == -signal.SIGKILL
    unfinished = [n for n in slow if not (out / "trials" / n / "evaluation.json").exists()]
    assert unfinished == slow, "a trial finished before the kill; the test would not test resume"
    before = {n: _snapshot(out / "trials" / n) for n in fast}
    assert "trial" in (tmp_path / "first.log").read_text()  # the live table's header

    again = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=120)
    assert again.returncode == 2 and "pass --resume" in again.stderr

    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=_env(), timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "4 trials" in resumed.stdout and "2 finished (kept), 2 to run" in resumed.stdout
    for n in fast:  # finished trials: untouched and not started again
        assert _snapshot(out / "trials" / n) == before[n]
        assert _starts(out, n) == 1
    for n in unfinished:  # resumed from a checkpoint, not from scratch
        assert "resumed" in (out / "logs" / f"{n}.log").read_text()  # "… from iteration k"
        assert _starts(out, n) == 2
    for n in fast + slow:
        rows = progress_rows(out / "trials" / n)
        assert [int(r["iteration"]) for r in rows] == list(range(1, (2 if n in fast else 16) + 1))
        ev = json.loads((out / "trials" / n / "evaluation.json").read_text())
        assert ev["request"]["episodes"] == 5 and len(ev["results"]) == 1
        assert (out / "trials" / n / "run.json").is_file() and (out / "trials" / n / "config.yaml").is_file()
    summary = (out / "summary.csv").read_text().splitlines()
    assert len(summary) == 5
    assert "all 4 trials finished" in resumed.stdout


@pytest.mark.slow
def test_failing_trial_is_retried_reported_and_resumable(tmp_path):
    """A trial whose run directory is unusable fails on every attempt: Tune retries it
    --max-failures times, the sweep exits 1 naming it, the other trial finishes; once the cause
    is removed, --resume runs only the failed trial."""
    exp = tmp_path / "fail.yaml"
    exp.write_text(f"""\
id: failtest
problems: [potential]
grid:
  - algorithms: [m3fppo]
    num_minors: [5]
    seeds: [0, 1]
    iterations: 2
    settings:
      {SMOKE_SETTINGS}
evaluation: {{episodes: 5}}
""")
    out = tmp_path / "sweep"
    bad = out / "trials" / "potential__m3fppo__N5__s1"
    bad.mkdir(parents=True)
    (bad / "notes.txt").write_text("not a run directory")
    cmd = [*M3FCLI, "sweep", str(exp), "--out", str(out), "--cpus", "2", "--max-failures", "1"]
    first = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=900)
    assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]
    assert "1 of 2 trials not finished" in first.stderr
    assert "potential__m3fppo__N5__s1: RunError" in first.stderr
    assert "restarted (retry 1) potential__m3fppo__N5__s1" in first.stdout
    assert _starts(out, "potential__m3fppo__N5__s1") == 2  # first attempt + 1 retry
    good = out / "trials" / "potential__m3fppo__N5__s0"
    assert (good / "evaluation.json").is_file()
    kept = _snapshot(good)

    (bad / "notes.txt").unlink()
    second = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=_env(), timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "1 finished (kept), 1 to run" in second.stdout
    assert _snapshot(good) == kept
    assert (bad / "evaluation.json").is_file()


def test_resume_refuses_other_settings_or_another_sweep(tmp_path):
    """The ledger keeps one sweep per directory; changed settings are named, a setting added to
    the code later (absent from the stored record) is fine at its default."""
    from m3fmarl.sweep import SweepError, check_ledger, settings_diff

    path = tmp_path / "t.yaml"
    path.write_text(GOOD)
    out = tmp_path / "out"
    sweep = load_experiment(path, "paper")
    check_ledger(out, sweep, resume=False, create=True)
    check_ledger(out, sweep, resume=True, create=True)
    with pytest.raises(SweepError, match="already holds this sweep; pass --resume"):
        check_ledger(out, sweep, resume=False, create=False)
    with pytest.raises(SweepError, match=r"holds the sweep t \(paper budget\), not t \(smoke\)"):
        check_ledger(out, load_experiment(path, "smoke"), resume=True, create=False)
    path.write_text(GOOD.replace("    iterations: 2\n", "    iterations: 2\n    settings: {m3fppo: {lr: 0.001}}\n"))
    with pytest.raises(SweepError, match=r"trial potential__m3fppo__N5__s0 was started with other settings .*"
                                         r"\(lr: 5e-05 -> 0.001\)"):
        check_ledger(out, load_experiment(path, "paper"), resume=True, create=False)
    with pytest.raises(SweepError, match="no sweep to resume"):
        check_ledger(tmp_path / "empty", sweep, resume=True, create=False)

    stored = json.loads((out / "sweep.json").read_text())["trials"][0]["settings"]
    defaults = {f.name: f.default for f in dataclasses.fields(sweep.trials[0].settings)}
    at_default = next(k for k in reversed(list(stored)) if stored[k] == defaults[k])
    older = {k: v for k, v in stored.items() if k != at_default}  # as if the field were added since
    assert settings_diff(older, sweep.trials[0].settings) == ""
    assert settings_diff({**stored, "retired": 1}, sweep.trials[0].settings) == "retired: 1 -> (no such setting)"


def test_unreachable_cluster_fails_fast(tmp_path):
    """`--address host:port` where nothing listens: one line, exit 2, within seconds (ray.init
    itself would keep retrying)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "t.yaml"
    path.write_text(GOOD)
    t0 = time.monotonic()
    p = subprocess.run([*M3FCLI, "sweep", str(path), "--out", str(tmp_path / "out"), "--address", f"127.0.0.1:{port}"],
                       capture_output=True, text=True, env=_env(), timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip() == (f"m3fmarl: error: --address 127.0.0.1:{port}: nothing answers there (Connection "
                                "refused); is the Ray head running?")
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "out" / "trials").exists()


@pytest.mark.slow
def test_trial_index_runs_a_mappo_trial(tmp_path):
    """Array mode (`--trial-index`, no Ray Tune) on a multi-agent baseline: the trial writes the
    `m3fmarl train` run directory plus a multi-agent evaluation over two N."""
    from m3fmarl.train import ALGORITHM_BUILDERS

    if "mappo" not in ALGORITHM_BUILDERS:
        pytest.skip("MAPPO is not in m3fmarl.train.ALGORITHM_BUILDERS")
    exp = tmp_path / "marl.yaml"
    exp.write_text("""\
id: marl
problems: [potential]
grid:
  - algorithms: [mappo]
    num_minors: [3]
    seeds: [0, 1]
    iterations: 1
    settings:
      mappo: {train_batch_size: 2000, minibatch_size: 500, num_envs_per_env_runner: 20}
evaluation: {num_minors: [3, 5], episodes: 4}
""")
    out = tmp_path / "out"
    base = [*M3FCLI, "sweep", str(exp), "--out", str(out)]
    listing = subprocess.run([*base, "--list"], capture_output=True, text=True, env=_env(), timeout=120)
    assert listing.stdout.splitlines()[1:] == ["0 potential__mappo__N3__s0 1 2000 1 todo",
                                               "1 potential__mappo__N3__s1 1 2000 1 todo"]
    for index, name in [(1, "potential__mappo__N3__s1")]:
        p = subprocess.run([*base, "--trial-index", str(index)], capture_output=True, text=True, env=_env(),
                           timeout=300)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        run_dir = out / "trials" / name
        assert {"run.json", "config.yaml", "progress.csv", "checkpoints", "evaluation.json"} <= {
            q.name for q in run_dir.iterdir()}
        ev = json.loads((run_dir / "evaluation.json").read_text())
        assert [(r["num_minors"], r["execution"], r["episodes"]) for r in ev["results"]] == [
            (3, "multi-agent", 4), (5, "multi-agent", 4)]
    again = subprocess.run([*base, "--list"], capture_output=True, text=True, env=_env(), timeout=120)
    assert again.stdout.splitlines()[1:] == ["0 potential__mappo__N3__s0 1 2000 1 todo",
                                             "1 potential__mappo__N3__s1 1 2000 1 finished"]


@pytest.mark.slow
def test_trial_larger_than_any_node_is_refused(tmp_path):
    """A block asking more CPUs per trial than the largest Ray node has would stay pending for
    ever in Tune: refused with one line, exit 2."""
    path = tmp_path / "t.yaml"
    path.write_text(GOOD.replace("    iterations: 2\n", "    iterations: 2\n    cpus: 3\n"))
    p = subprocess.run([*M3FCLI, "sweep", str(path), "--out", str(tmp_path / "out"), "--cpus", "2"],
                       capture_output=True, text=True, env=_env(), timeout=300)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1] == ("m3fmarl: error: potential__m3fppo__N5__s0 needs 3 CPUs, but the "
                                                 "largest Ray node has 2")
    assert not (tmp_path / "out" / "trials").exists()
