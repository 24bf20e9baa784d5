"""Experiment definitions and `m3fmarl sweep` on a real local Ray Tune: validation before any
trial, trial identity and deduplication across experiments (a shared trial trained once and
evaluated on the union of the cells its experiments ask for; an experiment added to a finished
sweep directory gets only its missing cells), a smoke sweep killed with SIGKILL mid-way and
resumed, a failing trial retried and reported."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from m3fmarl.config import ConfigError
from m3fmarl.experiments import BUDGETS, Cell, experiment_files, load_experiment, merge_sweeps
from tests.conftest import REPO, progress_rows

ALL_ALGOS = ("m3fppo", "m3fa2c", "ippo", "mappo", "mfppo", "hmf")
M3FCLI = [sys.executable, "-m", "m3fmarl"]

SMOKE_SETTINGS = "m3fppo: {train_batch_size: 2000, minibatch_size: 500, num_envs_per_env_runner: 20}"


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0"}


def _names(path: Path, budget: str = "paper") -> dict[tuple[str, int], str]:
    """(problem, seed) → trial directory name, as the experiment at ``path`` defines it."""
    return {(t.problem, t.seed): t.name for t in load_experiment(path, budget).trials}


def _cells(ev: dict) -> list[Cell]:
    """The cells of an ``evaluation.json``, in file order."""
    return [Cell(r["num_minors"], r["execution"], r["episodes"], r["seed"]) for r in ev["results"]]


# ----------------------------------------------------------------------------------------------
# the shipped definitions
# ----------------------------------------------------------------------------------------------


def test_every_paper_id_has_a_definition():
    ids = {p.stem for p in experiment_files()}
    assert ids == {"table2", "fig5", "fig6", "fig7", "fig9", "fig10", "fig12", "fig13",
                   "mfppo-n", "mfppo-transfer", "hmf-n", "hmf-transfer"}
    for path in experiment_files():
        assert load_experiment(path, "smoke", algorithms=ALL_ALGOS).id == path.stem


@pytest.mark.parametrize("path", experiment_files(), ids=lambda p: p.stem)
def test_budgets_shrink_only_what_the_spec_allows(path):
    """smoke: ≤ 2 iterations, small batches; reduced: same hyperparameters as paper, shorter;
    paper: the configs/algorithms defaults (spec §3.2)."""
    from m3fmarl import registry
    from m3fmarl.config import load_algorithm

    sweeps = {b: load_experiment(path, b, algorithms=ALL_ALGOS) for b in BUDGETS}
    paper, reduced, smoke = sweeps["paper"], sweeps["reduced"], sweeps["smoke"]
    for trial in paper.trials:
        if trial.algo in registry.ALGORITHMS:
            assert trial.settings == load_algorithm(trial.algo)
    for trial in reduced.trials:
        if trial.algo in registry.ALGORITHMS:
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
    for algo in ("mfppo", "hmf"):
        assert sum(t.algo == algo for t in load(f"{algo}-n").trials) == 45  # as IPPO in fig12
        transfer = load(f"{algo}-transfer")
        assert {t.num_minors for t in transfer.trials} == {20} and len(transfer.trials) == 15
        assert transfer.trials[0].evaluation.num_minors == fig9.trials[0].evaluation.num_minors
    table2 = load("table2")
    assert {t.evaluation.num_minors for t in table2.trials} == {(20,)}
    assert {t.algo for t in table2.trials} == set(ALL_ALGOS)


def test_algorithms_come_from_the_registry():
    from m3fmarl import registry

    assert any(t.algo == "ippo" for t in load_experiment(REPO / "experiments" / "fig12.yaml", "smoke").trials)
    with pytest.raises(ConfigError, match=r"fig12\.yaml:\d+: unknown algorithm 'ippo'( in settings)?; valid: m3fppo$"):
        load_experiment(REPO / "experiments" / "fig12.yaml", "smoke", algorithms=("m3fppo",))
    assert tuple(registry.ALGORITHMS) == registry.names() == ("ippo", "mappo", "m3fa2c", "m3fppo", "mfppo", "hmf")


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
    ("[m3fppo]", "[m3fppo, ppo]", 4, "unknown algorithm 'ppo'; valid: ippo, mappo, m3fa2c, m3fppo, mfppo"),
    ("num_minors: [5]", "num_minors: [5, 0]", 5, "num_minors entry must be an integer >= 1, got 0"),
    ("    iterations: 2\n", "    iterations: 2\n    settings: {m3fppo: {lr_: 0.1}}\n", 8,
     "unknown m3fppo setting 'lr_'; valid: gamma"),
    ("    iterations: 2\n", "    iterations: 2\n  - algorithms: [m3fppo]\n    num_minors: [5]\n    seeds: [1]\n"
     "    iterations: 2\n", 8, "is defined twice (also at t.yaml:4)"),
    ("    iterations: 2\n", "    iterations: 2\n    settings: {m3fppo: {minibatch_size: 7}}\n", 4,
     "minibatch_size (7) must divide train_batch_size"),
]


def test_good_definition_expands_the_grid(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(GOOD)
    sweep = load_experiment(path, "paper")
    assert [t.short_name for t in sweep.trials] == ["potential__m3fppo__N5__s0", "potential__m3fppo__N5__s1",
                                                    "beach-bar__m3fppo__N5__s0", "beach-bar__m3fppo__N5__s1"]
    digests = set()
    for t in sweep.trials:
        m = re.fullmatch(rf"{t.short_name}__2it__([0-9a-f]{{6}})", t.name)
        assert m, t.name
        digests.add(m.group(1))
    assert len(digests) == 1  # one variant, one set of settings
    assert {t.iterations for t in sweep.trials} == {2}
    assert {t.iterations for t in load_experiment(path, "smoke").trials} == {1}
    assert load_experiment(path, "reduced").trials == sweep.trials  # no reduced overrides
    assert [t.cells for t in sweep.trials] == [(Cell(5, "centralized", 5, 0),)] * 4  # training N, CE


def test_trial_name_is_the_training_identity(tmp_path):
    """Iteration cap, variant and settings that differ from the defaults are in the name; a
    setting written out at its default value, the CPUs and the evaluation are not."""
    def names(text: str, name: str) -> list[str]:
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        return [t.name for t in load_experiment(path, "paper").trials]

    base = names(GOOD, "base")
    assert len(set(base)) == 4
    same = [
        GOOD.replace("    iterations: 2\n", "    iterations: 2\n    settings: {m3fppo: {lr: 5.0e-5}}\n"),  # the default
        GOOD.replace("    iterations: 2\n", "    iterations: 2\n    cpus: 2\n"),
        GOOD.replace("evaluation: {episodes: 5}", "evaluation: {num_minors: [20], executions: [decentralized]}"),
        GOOD.replace("id: t\n", "id: other\ndescription: the same runs\n"),
    ]
    for i, text in enumerate(same):
        assert names(text, f"same{i}") == base, text
    other = [
        GOOD.replace("    iterations: 2\n", "    iterations: 3\n"),
        GOOD.replace("    iterations: 2\n", "    iterations: 2\n    settings: {m3fppo: {lr: 0.001}}\n"),
        GOOD.replace("id: t\n", "id: t\nvariant: paper\n"),
    ]
    for i, text in enumerate(other):
        changed = names(text, f"other{i}")
        assert [n.rsplit("__", 2)[0] for n in changed] == [n.rsplit("__", 2)[0] for n in base]  # short names
        assert not set(changed) & set(base), text


def test_duplicate_trial_names_both_places(tmp_path):
    """A trial defined twice (same problem, algorithm, N, seed, iterations and settings) is refused
    with its full name and both lines."""
    path = tmp_path / "t.yaml"
    path.write_text(GOOD)
    dup = next(t.name for t in load_experiment(path, "smoke").trials if t.short_name == "potential__m3fppo__N5__s1")
    path.write_text(GOOD.replace("    iterations: 2\n", "    iterations: 2\n  - algorithms: [m3fppo]\n"
                                 "    num_minors: [5]\n    seeds: [1]\n    iterations: 3\n"))
    with pytest.raises(ConfigError) as info:
        load_experiment(path, "smoke")  # smoke: every block 1 iteration, so both blocks name one trial
    assert str(info.value) == f"t.yaml:8: trial {dup} is defined twice (also at t.yaml:4)"
    assert len(load_experiment(path, "paper").trials) == 6  # 2 and 3 iterations: other trials


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
    p = subprocess.run([*M3FCLI, "sweep", str(path), "--budget", "smoke", "--out", str(out)],
                       capture_output=True, text=True,
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
    names = _names(exp, "smoke")
    fast = [names["beach-bar", 0], names["beach-bar", 1]]
    slow = [names["potential", 0], names["potential", 1]]
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
        assert (ev["trial"], ev["iterations"]) == (n, 2 if n in fast else 16)
        assert _cells(ev) == [Cell(5, "centralized", 5, 0)]
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
    names = _names(exp)
    bad = out / "trials" / names["potential", 1]
    bad.mkdir(parents=True)
    (bad / "notes.txt").write_text("not a run directory")
    cmd = [*M3FCLI, "sweep", str(exp), "--budget", "paper", "--out", str(out), "--cpus", "2", "--max-failures", "1"]
    first = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=900)
    assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]
    assert "1 of 2 trials not finished" in first.stderr
    assert f"{bad.name}: RunError" in first.stderr
    assert f"restarted (retry 1) {bad.name}" in first.stdout
    assert _starts(out, bad.name) == 2  # first attempt + 1 retry
    good = out / "trials" / names["potential", 0]
    assert (good / "evaluation.json").is_file()
    kept = _snapshot(good)

    (bad / "notes.txt").unlink()
    second = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=_env(), timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "1 finished (kept), 1 to run" in second.stdout
    assert _snapshot(good) == kept
    assert (bad / "evaluation.json").is_file()


def test_ledger_refuses_another_budget_or_a_restart_and_grows_by_experiment(tmp_path):
    """One budget per directory; without --resume an existing sweep is refused; an experiment
    added later is appended to the ledger (its trials deduplicated against the recorded ones)."""
    from m3fmarl.sweep import SweepError, check_ledger

    path = tmp_path / "t.yaml"
    path.write_text(GOOD)
    out = tmp_path / "out"
    sweep = load_experiment(path, "paper")
    campaign = merge_sweeps([sweep])
    check_ledger(out, campaign, resume=False, create=True)
    check_ledger(out, campaign, resume=True, create=True)
    with pytest.raises(SweepError, match=r"already holds a sweep \(t\); pass --resume"):
        check_ledger(out, campaign, resume=False, create=False)
    with pytest.raises(SweepError, match=r"holds a sweep with the paper budget, not smoke; choose another --out"):
        check_ledger(out, merge_sweeps([load_experiment(path, "smoke")]), resume=True, create=False)
    with pytest.raises(SweepError, match="no sweep to resume"):
        check_ledger(tmp_path / "empty", campaign, resume=True, create=False)

    # another experiment: one trial shared with t (potential s0), one of its own (N=7)
    other = tmp_path / "u.yaml"
    other.write_text(GOOD.replace("id: t", "id: u").replace("[potential, beach-bar]", "[potential]")
                     .replace("seeds: [0, 1]", "seeds: [0]").replace("num_minors: [5]", "num_minors: [5, 7]")
                     .replace("evaluation: {episodes: 5}", "evaluation: {num_minors: [20], episodes: 5}"))
    u = load_experiment(other, "paper")
    check_ledger(out, merge_sweeps([u]), resume=True, create=True)
    ledger = json.loads((out / "sweep.json").read_text())
    assert ledger["budget"] == "paper"
    assert [e["experiment"] for e in ledger["experiments"]] == ["t", "u"]
    assert ledger["experiments"][0]["trials"] == [t.name for t in sweep.trials]
    assert ledger["experiments"][1]["trials"] == [t.name for t in u.trials]
    shared = sweep.trials[0].name
    assert u.trials[0].name == shared
    trials = {t["name"]: t for t in ledger["trials"]}
    assert list(trials) == [t.name for t in sweep.trials] + [u.trials[1].name]
    assert trials[shared]["used_by"] == ["t", "u"]
    assert [Cell(**c) for c in trials[shared]["cells"]] == [Cell(5, "centralized", 5, 0), Cell(20, "centralized", 5, 0)]
    assert ledger["experiments"][0]["cells"][shared] == [Cell(5, "centralized", 5, 0)._asdict()]
    assert trials[u.trials[1].name]["used_by"] == ["u"]
    # the same experiment again: recorded once
    check_ledger(out, merge_sweeps([u]), resume=True, create=True)
    assert json.loads((out / "sweep.json").read_text())["trials"] == ledger["trials"]
    assert [e["experiment"] for e in json.loads((out / "sweep.json").read_text())["experiments"]] == ["t", "u"]
    # u redefined without the shared trial: the ledger no longer says u uses it nor asks u's cells of it
    other.write_text(other.read_text().replace("num_minors: [5, 7]", "num_minors: [7]"))
    check_ledger(out, merge_sweeps([load_experiment(other, "paper")]), resume=True, create=True)
    trials = {t["name"]: t for t in json.loads((out / "sweep.json").read_text())["trials"]}
    assert list(trials) == [t.name for t in sweep.trials] + [u.trials[1].name]
    assert trials[shared]["used_by"] == ["t"]
    assert [Cell(**c) for c in trials[shared]["cells"]] == [Cell(5, "centralized", 5, 0)]
    assert trials[u.trials[1].name]["used_by"] == ["u"]

    # a ledger of the single-experiment format is refused, not misread
    old = tmp_path / "old"
    old.mkdir()
    (old / "sweep.json").write_text(json.dumps({"experiment": "t", "budget": "paper", "trials": []}))
    with pytest.raises(SweepError, match="not a sweep ledger of this m3fmarl version"):
        check_ledger(old, campaign, resume=True, create=False)


def test_changed_settings_are_another_trial_and_a_run_with_other_settings_is_refused(tmp_path):
    """Changed settings give other trial names (a new run directory, never a continued one); a run
    directory that holds other settings under a trial's name is refused before training; a
    setting added to the code later (absent from the stored record) is fine at its default."""
    from m3fmarl.sweep import SweepError, run_trial, settings_diff, trial_dir

    path = tmp_path / "t.yaml"
    path.write_text(GOOD)
    sweep = load_experiment(path, "paper")
    path.write_text(GOOD.replace("    iterations: 2\n", "    iterations: 2\n    settings: {m3fppo: {lr: 0.001}}\n"))
    changed = load_experiment(path, "paper")
    assert [t.short_name for t in changed.trials] == [t.short_name for t in sweep.trials]
    assert not {t.name for t in changed.trials} & {t.name for t in sweep.trials}

    out = tmp_path / "out"
    trial = sweep.trials[0]
    run_dir = trial_dir(out, trial)
    run_dir.mkdir(parents=True)
    stored = dataclasses.asdict(trial.settings)
    (run_dir / "run.json").write_text(json.dumps({"settings": {**stored, "lr": 0.001}}))
    with pytest.raises(SweepError, match=r"holds a run with other settings \(lr: 0.001 -> 5e-05\)"):
        run_trial(trial, out)
    assert sorted(p.name for p in run_dir.iterdir()) == ["run.json"]  # nothing trained
    assert "failed: SweepError" in (out / "logs" / f"{trial.name}.log").read_text()

    defaults = {f.name: f.default for f in dataclasses.fields(trial.settings)}
    at_default = next(k for k in reversed(list(stored)) if stored[k] == defaults[k])
    older = {k: v for k, v in stored.items() if k != at_default}  # as if the field were added since
    assert settings_diff(older, trial.settings) == ""
    assert settings_diff({**stored, "retired": 1}, trial.settings) == "retired: 1 -> (no such setting)"


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
    p = subprocess.run([*M3FCLI, "sweep", str(path), "--budget", "paper", "--out", str(tmp_path / "out"),
                        "--address", f"127.0.0.1:{port}"],
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
    from m3fmarl import registry

    if "mappo" not in registry.ALGORITHMS:
        pytest.skip("MAPPO is not in m3fmarl.registry")
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
    names = _names(exp)
    base = [*M3FCLI, "sweep", str(exp), "--budget", "paper", "--out", str(out)]
    listing = subprocess.run([*base, "--list"], capture_output=True, text=True, env=_env(), timeout=120)
    header = ("# marl (paper budget): 2 distinct trials (2 named by the experiments); index name iterations "
              "env_steps cpus status used_by")
    assert listing.stdout.splitlines()[:-1] == [header, f"0 {names['potential', 0]} 1 2000 1 todo marl",
                                                f"1 {names['potential', 1]} 1 2000 1 todo marl"]
    assert listing.stdout.splitlines()[-1].startswith("# trials: 0 done, 0 started, 2 not started | 0.0 CPU-h")
    for index, name in [(1, names["potential", 1])]:
        p = subprocess.run([*base, "--trial-index", str(index)], capture_output=True, text=True, env=_env(),
                           timeout=300)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        run_dir = out / "trials" / name
        assert {"run.json", "config.yaml", "progress.csv", "checkpoints", "evaluation.json"} <= {
            q.name for q in run_dir.iterdir()}
        ev = json.loads((run_dir / "evaluation.json").read_text())
        assert _cells(ev) == [Cell(3, "multi-agent", 4, 0), Cell(5, "multi-agent", 4, 0)]
    assert sorted(p.name for p in (out / "trials").iterdir()) == [names["potential", 1]]  # only trial 1 ran
    again = subprocess.run([*base, "--list"], capture_output=True, text=True, env=_env(), timeout=120)
    assert again.stdout.splitlines()[:-1] == [header, f"0 {names['potential', 0]} 1 2000 1 todo marl",
                                              f"1 {names['potential', 1]} 1 2000 1 finished marl"]
    assert again.stdout.splitlines()[-1].startswith("# trials: 1 done, 0 started, 1 not started | ")



def test_list_and_reproduce_status_tell_started_trials_from_the_run_directories(tmp_path):
    """`m3fmarl reproduce --status` (the same listing as `sweep --list`) reads where a campaign stands
    from its files alone, without Ray: a trial with 3 of 4 iterations in its progress.csv is
    ``started:3``, the others ``todo``; the last line has the CPU-hours and an ETA from the
    started trial's own rate (10 s per iteration; the others, of its problem or algorithm, at
    the same rate: 1 + 4 + 4 + 4 iterations left), spread over this machine's CPUs."""
    exp = tmp_path / "t.yaml"
    exp.write_text(GOOD.replace("    iterations: 2\n", "    iterations: 4\n"))
    names = _names(exp)
    out = tmp_path / "results"
    started = out / "sweep" / "trials" / names["potential", 0]
    started.mkdir(parents=True)
    (started / "progress.csv").write_text("iteration,env_steps,time_total_s\n1,24000,10.0\n2,48000,20.0\n"
                                          "3,72000,30.0\n")
    p = subprocess.run([*M3FCLI, "reproduce", "--budget", "paper", "--out", str(out), "--experiments", str(exp),
                        "--status"], capture_output=True, text=True, env=_env(), timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    status = {line.split()[1]: line.split()[5] for line in lines if line[:1].isdigit()}
    assert status == {name: "started:3" if key == ("potential", 0) else "todo" for key, name in names.items()}
    slots = os.cpu_count() or 1
    eta = int(130 / slots)
    assert lines[-1] == (f"# trials: 0 done, 1 started, 3 not started | 0.0 CPU-h of training so far | "
                         f"ETA {eta // 60}m{eta % 60:02d}s (at {slots} trial(s) at a time)")
    assert not (out / "sweep" / "sweep.json").exists()  # nothing was run or written

@pytest.mark.slow
def test_trial_larger_than_any_node_is_refused(tmp_path):
    """A block asking more CPUs per trial than the largest Ray node has would stay pending for
    ever in Tune: refused with one line, exit 2."""
    path = tmp_path / "t.yaml"
    path.write_text(GOOD.replace("    iterations: 2\n", "    iterations: 2\n    cpus: 3\n"))
    p = subprocess.run([*M3FCLI, "sweep", str(path), "--budget", "paper", "--out", str(tmp_path / "out"),
                        "--cpus", "2"],
                       capture_output=True, text=True, env=_env(), timeout=300)
    assert p.returncode == 2
    first = _names(path)["potential", 0]
    assert p.stderr.strip().splitlines()[-1] == (f"m3fmarl: error: {first} needs 3 CPUs, but the largest Ray node "
                                                 "has 2")
    assert not (tmp_path / "out" / "trials").exists()


# ----------------------------------------------------------------------------------------------
# campaigns: several experiments in one sweep directory, shared trials trained once
# ----------------------------------------------------------------------------------------------

# a and b both name potential/m3fppo/N5/s0 (1 iteration, smoke settings): the shared trial.
# a's own trial: seed 1; b's own: seed 0 with another learning rate (same short name, other digest).
EXP_A = f"""\
id: expa
problems: [potential]
grid:
  - algorithms: [m3fppo]
    num_minors: [5]
    seeds: [0, 1]
    iterations: 1
evaluation: {{num_minors: [3], episodes: 2}}
budgets:
  smoke:
    settings:
      {SMOKE_SETTINGS}
"""
EXP_B = f"""\
id: expb
problems: [potential]
grid:
  - algorithms: [m3fppo]
    num_minors: [5]
    seeds: [0]
    iterations: 1
  - algorithms: [m3fppo]
    num_minors: [5]
    seeds: [0]
    iterations: 1
    settings: {{m3fppo: {{lr: 0.0001}}}}
evaluation: {{num_minors: [3, 5], executions: [centralized, decentralized], episodes: 2}}
budgets:
  smoke:
    settings:
      {SMOKE_SETTINGS}
"""
# added later to a finished sweep directory: the shared trial once more, with one new cell (N=7)
EXP_C = EXP_A.replace("id: expa", "id: expc").replace("seeds: [0, 1]", "seeds: [0]").replace(
    "num_minors: [3]", "num_minors: [3, 7]")
CE, DE = "centralized", "decentralized"


def _campaign_files(root: Path) -> dict[str, Path]:
    files = {}
    for key, text in (("a", EXP_A), ("b", EXP_B), ("c", EXP_C)):
        files[key] = root / f"{key}.yaml"
        files[key].write_text(text)
    return files


def test_merge_sweeps_dedups_trials_and_unions_cells(tmp_path):
    files = _campaign_files(tmp_path)
    a, b = load_experiment(files["a"], "smoke"), load_experiment(files["b"], "smoke")
    shared = a.trials[0]
    assert b.trials[0].name == shared.name and b.trials[1].short_name == shared.short_name
    assert b.trials[1].name != shared.name  # other lr: another trial
    campaign = merge_sweeps([a, b])
    assert campaign.budget == "smoke" and campaign.label == "expa+expb"
    assert [t.name for t in campaign.trials] == [shared.name, a.trials[1].name, b.trials[1].name]
    assert campaign.used_by == {shared.name: ("expa", "expb"), a.trials[1].name: ("expa",),
                                b.trials[1].name: ("expb",)}
    union = (Cell(3, CE, 2, 0), Cell(5, CE, 2, 0), Cell(3, DE, 2, 0), Cell(5, DE, 2, 0))
    assert campaign.trials[0].cells == union  # a's (3, CE) once, then b's others
    assert campaign.trials[1].cells == (Cell(3, CE, 2, 0),)
    assert campaign.trials[2].cells == union
    # the experiments keep their own trials and cells
    assert campaign.experiments == (a, b) and a.trials[0].cells == (Cell(3, CE, 2, 0),)
    d = campaign.to_dict()
    assert [e["experiment"] for e in d["experiments"]] == ["expa", "expb"]
    assert d["experiments"][0]["cells"][shared.name] == [Cell(3, CE, 2, 0)._asdict()]
    assert d["trials"][0]["used_by"] == ["expa", "expb"] and len(d["trials"][0]["cells"]) == 4
    # order of the files: the union is the same set, the trials the same
    rev = merge_sweeps([b, a])
    assert {t.name: set(t.cells) for t in rev.trials} == {t.name: set(t.cells) for t in campaign.trials}
    # CPUs: the largest any experiment asks for
    files["b"].write_text(EXP_B.replace("    iterations: 1\n", "    iterations: 1\n    cpus: 2\n", 1))
    assert merge_sweeps([a, load_experiment(files["b"], "smoke")]).trials[0].cpus == 2

    with pytest.raises(ConfigError, match="must share a budget, got paper, smoke"):
        merge_sweeps([a, load_experiment(files["b"], "paper")])
    (tmp_path / "a2.yaml").write_text(EXP_A.replace("seeds: [0, 1]", "seeds: [4]"))
    with pytest.raises(ConfigError, match=r"experiment id 'expa' given twice \(.*a\.yaml, .*a2\.yaml\)"):
        merge_sweeps([a, load_experiment(tmp_path / "a2.yaml", "smoke")])
    with pytest.raises(ConfigError, match="no experiment given"):
        merge_sweeps([])


@pytest.fixture(scope="module")
def campaign_dir(tmp_path_factory) -> dict:
    """`m3fmarl sweep a.yaml b.yaml --budget smoke` on local Ray Tune (3 distinct trials of 4 named)."""
    root = tmp_path_factory.mktemp("campaign")
    files = _campaign_files(root)
    out = root / "sweep"
    p = subprocess.run([*M3FCLI, "sweep", str(files["a"]), str(files["b"]), "--budget", "smoke", "--out", str(out),
                        "--cpus", "2", "--report-every", "60"], capture_output=True, text=True, env=_env(), timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    a, b = load_experiment(files["a"], "smoke"), load_experiment(files["b"], "smoke")
    return {"out": out, "files": files, "proc": p, "a": a, "b": b, "shared": a.trials[0].name,
            "own_a": a.trials[1].name, "own_b": b.trials[1].name}


def _iter_lines(out: Path, name: str) -> int:
    return sum(line.split(" ", 2)[1] == "iter" for line in (out / "logs" / f"{name}.log").read_text().splitlines())


@pytest.mark.slow
def test_campaign_trains_a_shared_trial_once_and_evaluates_the_union(campaign_dir):
    c = campaign_dir
    out, shared = c["out"], c["shared"]
    assert "sweep expa+expb (smoke budget): 3 trials (4 named by the experiments, shared ones trained once)" in \
        c["proc"].stdout
    assert "all 3 trials finished" in c["proc"].stdout
    assert sorted(p.name for p in (out / "trials").iterdir()) == sorted([shared, c["own_a"], c["own_b"]])
    run_dir = out / "trials" / shared
    assert [r["iteration"] for r in progress_rows(run_dir)] == ["1"]  # one set of iterations
    assert len(json.loads((run_dir / "run.json").read_text())["invocations"]) == 1
    assert _starts(out, shared) == 1 and _iter_lines(out, shared) == 1
    union = {Cell(3, CE, 2, 0), Cell(5, CE, 2, 0), Cell(3, DE, 2, 0), Cell(5, DE, 2, 0)}
    cells = _cells(json.loads((run_dir / "evaluation.json").read_text()))
    assert len(cells) == 4 and set(cells) == union  # the distinct cells, each once
    assert _cells(json.loads((out / "trials" / c["own_a"] / "evaluation.json").read_text())) == [Cell(3, CE, 2, 0)]
    assert set(_cells(json.loads((out / "trials" / c["own_b"] / "evaluation.json").read_text()))) == union

    ledger = json.loads((out / "sweep.json").read_text())
    assert [(e["experiment"], e["trials"]) for e in ledger["experiments"]] == [
        ("expa", [shared, c["own_a"]]), ("expb", [shared, c["own_b"]])]
    assert ledger["experiments"][0]["cells"][shared] == [Cell(3, CE, 2, 0)._asdict()]
    assert {t["name"]: t["used_by"] for t in ledger["trials"]} == {
        shared: ["expa", "expb"], c["own_a"]: ["expa"], c["own_b"]: ["expb"]}
    with open(out / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 + 1 + 4  # one row per trial and cell
    assert {r["used_by"] for r in rows if r["trial"] == shared} == {"expa expb"}
    assert {r["used_by"] for r in rows if r["trial"] == c["own_b"]} == {"expb"}

    listing = subprocess.run([*M3FCLI, "sweep", str(c["files"]["a"]), str(c["files"]["b"]), "--budget", "smoke",
                              "--out", str(out), "--list"], capture_output=True, text=True, env=_env(), timeout=120)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines()[:-1] == [
        "# expa+expb (smoke budget): 3 distinct trials (4 named by the experiments); index name iterations env_steps "
        "cpus status used_by",
        f"0 {shared} 1 2000 1 finished expa,expb",
        f"1 {c['own_a']} 1 2000 1 finished expa",
        f"2 {c['own_b']} 1 2000 1 finished expb"]
    assert listing.stdout.splitlines()[-1].startswith("# trials: 3 done, 0 started, 0 not started | ")
    # --trial-index counts the distinct trials (3), not the 4 the experiments name
    beyond = subprocess.run([*M3FCLI, "sweep", str(c["files"]["a"]), str(c["files"]["b"]), "--budget", "smoke",
                             "--out", str(out), "--trial-index", "3"], capture_output=True, text=True, env=_env(),
                            timeout=120)
    assert beyond.returncode == 2
    assert beyond.stderr.strip() == ("m3fmarl: error: --trial-index 3 out of range; expa+expb (smoke) has trials "
                                     "0..2")


@pytest.mark.slow
def test_experiment_added_to_a_finished_sweep_gets_only_its_missing_cells(campaign_dir, tmp_path):
    """`m3fmarl sweep c.yaml --out DIR --resume` on the finished a+b directory: c's trial is the
    shared one, already trained: it is not retrained (checkpoints, progress, run.json untouched),
    only c's new cell is evaluated, the cells already there are kept as they were."""
    c = campaign_dir
    out = tmp_path / "sweep"
    shutil.copytree(c["out"], out)  # copy2: contents and mtimes
    shared = c["shared"]
    run_dir = out / "trials" / shared
    trained = {k: v for k, v in _snapshot(run_dir).items() if k != "evaluation.json"}
    assert any(k.startswith("checkpoints/") for k in trained) and "progress.csv" in trained
    others = {n: _snapshot(out / "trials" / n) for n in (c["own_a"], c["own_b"])}
    before = json.loads((run_dir / "evaluation.json").read_text())["results"]

    cmd = [*M3FCLI, "sweep", str(c["files"]["c"]), "--budget", "smoke", "--out", str(out), "--cpus", "2",
           "--report-every", "60"]
    refused = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=120)
    assert refused.returncode == 2 and "already holds a sweep (expa, expb); pass --resume" in refused.stderr
    p = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=_env(), timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "sweep expc (smoke budget): 1 trials" in p.stdout and "0 finished (kept), 1 to run" in p.stdout

    assert {k: v for k, v in _snapshot(run_dir).items() if k != "evaluation.json"} == trained  # not retrained
    assert len(json.loads((run_dir / "run.json").read_text())["invocations"]) == 1
    assert _starts(out, shared) == 2 and _iter_lines(out, shared) == 1  # started again, trained once
    after = json.loads((run_dir / "evaluation.json").read_text())["results"]
    assert after[:4] == before  # the cells there: kept as they were
    assert _cells({"results": after[4:]}) == [Cell(7, CE, 2, 0)]  # only the missing cell evaluated
    for n, snap in others.items():
        assert _snapshot(out / "trials" / n) == snap

    ledger = json.loads((out / "sweep.json").read_text())
    assert [e["experiment"] for e in ledger["experiments"]] == ["expa", "expb", "expc"]
    entry = next(t for t in ledger["trials"] if t["name"] == shared)
    assert entry["used_by"] == ["expa", "expb", "expc"] and len(entry["cells"]) == 5
    listing = subprocess.run([*M3FCLI, "sweep", *(str(c["files"][k]) for k in "abc"), "--budget", "smoke",
                              "--out", str(out), "--list"], capture_output=True, text=True, env=_env(), timeout=120)
    assert listing.stdout.splitlines()[1:-1] == [f"0 {shared} 1 2000 1 finished expa,expb,expc",
                                                 f"1 {c['own_a']} 1 2000 1 finished expa",
                                                 f"2 {c['own_b']} 1 2000 1 finished expb"]
    assert listing.stdout.splitlines()[-1].startswith("# trials: 3 done, 0 started, 0 not started | ")


@pytest.mark.slow
def test_two_sweeps_sharing_a_trial_train_it_once(tmp_path):
    """Two `m3fmarl sweep` processes on one campaign directory whose experiments name the same
    trial, the second started while the first trains it: the second waits on the trial's lock,
    then finds it trained and only adds its own evaluation cell; both exit 0, the ledger holds
    both experiments."""
    body = """\
problems: [potential]
grid:
  - algorithms: [m3fppo]
    num_minors: [5]
    seeds: [0]
    iterations: 60
budgets:
  smoke:
    settings:
      m3fppo: {train_batch_size: 1000, minibatch_size: 500, num_envs_per_env_runner: 10}
"""
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("id: locka\n" + body + "evaluation: {num_minors: [5], episodes: 5}\n")
    b.write_text("id: lockb\n" + body + "evaluation: {num_minors: [5, 8], episodes: 5}\n")
    (name,) = [t.name for t in load_experiment(a, "smoke").trials]
    out = tmp_path / "sweep"
    common = ["--budget", "smoke", "--out", str(out), "--cpus", "1", "--report-every", "5"]
    logs = [open(tmp_path / f"{x}.log", "w") for x in ("a", "b")]
    first = subprocess.Popen([*M3FCLI, "sweep", str(a), *common], stdout=logs[0], stderr=subprocess.STDOUT,
                             env=_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not (out / "trials" / name / "progress.csv").exists():  # the first one trains it now
            assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "a.log").read_text()[-2000:]
            time.sleep(0.05)
        second = subprocess.Popen([*M3FCLI, "sweep", str(b), *common, "--resume"], stdout=logs[1],
                                  stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
        assert first.wait(timeout=600) == 0, (tmp_path / "a.log").read_text()[-3000:]
        assert second.wait(timeout=600) == 0, (tmp_path / "b.log").read_text()[-3000:]
    finally:
        for p in (first, locals().get("second")):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        for fh in logs:
            fh.close()
    run = out / "trials" / name
    record = json.loads((run / "run.json").read_text())
    assert len(record["invocations"]) == 1  # trained once
    assert [int(r["iteration"]) for r in progress_rows(run)] == list(range(1, 61))
    cells = json.loads((run / "evaluation.json").read_text())["results"]
    assert sorted(c["num_minors"] for c in cells) == [5, 8]
    log = (out / "logs" / f"{name}.log").read_text()
    assert log.count("waiting for trial") == 1 and _starts(out, name) == 2
    ledger = json.loads((out / "sweep.json").read_text())
    assert sorted(e["experiment"] for e in ledger["experiments"]) == ["locka", "lockb"]


def test_cpus_per_problem_and_per_budget(tmp_path):
    """`cpus` maps problems to cores (the OT-bound problems get more in the paper budget) and a
    budget override replaces it; the trial names do not depend on it."""
    path = tmp_path / "t.yaml"
    path.write_text(GOOD.replace("    iterations: 2\n", "    iterations: 2\n    cpus: {default: 1, beach-bar: 3}\n")
                    .replace("  smoke:\n", "  reduced:\n    cpus: 2\n  smoke:\n"))
    paper = load_experiment(path, "paper").trials
    assert {(t.problem, t.cpus) for t in paper} == {("potential", 1), ("beach-bar", 3)}
    assert {t.cpus for t in load_experiment(path, "reduced").trials} == {2}
    plain = tmp_path / "plain.yaml"
    plain.write_text(GOOD)
    assert [t.name for t in load_experiment(plain, "paper").trials] == [t.name for t in paper]
    path.write_text(GOOD.replace("    iterations: 2\n", "    iterations: 2\n    cpus: {beech: 2}\n"))
    with pytest.raises(ConfigError, match=r"t.yaml:\d+: unknown problem 'beech' in cpus"):
        load_experiment(path, "paper")



def test_the_budget_must_be_named(tmp_path):
    """No default budget: a forgotten --budget is a usage error, not weeks of CPU."""
    path = tmp_path / "t.yaml"
    path.write_text(GOOD)
    p = subprocess.run([*M3FCLI, "sweep", str(path), "--list"], capture_output=True, text=True, env=_env(), timeout=60)
    assert p.returncode == 2
    assert "the following arguments are required: --budget" in p.stderr



def test_a_training_run_directory_is_not_a_sweep_directory(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(GOOD)
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    p = subprocess.run([*M3FCLI, "sweep", str(path), "--budget", "smoke", "--out", str(run)], capture_output=True,
                       text=True, env=_env(), timeout=60)
    assert p.returncode == 2
    assert p.stderr.strip() == (f"m3fmarl: error: --out {run} is a training run directory (it holds run.json), "
                                "not a sweep directory; choose another --out")
    assert sorted(x.name for x in run.iterdir()) == ["run.json"]


@pytest.mark.slow
def test_sigusr2_stops_a_local_sweep_in_order_and_resume_finishes_it(tmp_path):
    """`kill -USR2 <m3fmarl sweep>`: the running trial saves its last finished iteration and the
    sweep exits 3 ("stopped on request"); `--resume` continues from that iteration, trains every
    remaining iteration once, and finishes."""
    exp = tmp_path / "long.yaml"
    exp.write_text(GOOD.replace("problems: [potential, beach-bar]", "problems: [potential]")
                   .replace("    seeds: [0, 1]\n", "    seeds: [0]\n")
                   .replace("    iterations: 2\n", "    iterations: 40\n")
                   .replace("budgets:\n  smoke:\n    iterations: 1\n", "budgets:\n  smoke:\n    settings:\n"
                            "      m3fppo: {train_batch_size: 1000, minibatch_size: 500,"
                            " num_envs_per_env_runner: 10}\n"))
    out = tmp_path / "out"
    (name,) = [t.name for t in load_experiment(exp, "smoke").trials]
    cmd = [*M3FCLI, "sweep", str(exp), "--budget", "smoke", "--out", str(out), "--cpus", "1",
           "--checkpoint-every", "100"]
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
    progress = out / "trials" / name / "progress.csv"
    deadline = time.monotonic() + 300
    try:
        while not (progress.exists() and len(progress.read_text().splitlines()) > 4):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGUSR2)
        assert proc.wait(timeout=300) == 3, (tmp_path / "first.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = (tmp_path / "first.log").read_text()
    assert "stop requested (SIGUSR2)" in text and "stopped on request with 1 of 1 trials unfinished" in text
    stopped_at = len(progress_rows(out / "trials" / name))
    assert 4 <= stopped_at < 40
    assert not list((out / ".locks").glob("stop-*"))  # the sweep's own stop file is gone
    again = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=_env(), timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert [int(r["iteration"]) for r in progress_rows(out / "trials" / name)] == list(range(1, 41))
    trained = re.findall(r" iter (\d+)/40 \|", (out / "logs" / f"{name}.log").read_text())
    assert sorted(map(int, trained)) == list(range(1, 41))  # nothing trained twice: resumed at the stop
