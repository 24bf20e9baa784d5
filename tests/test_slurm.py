"""slurm/sweep.sh (Ray cluster inside the job) and slurm/array.sh (one trial per array task)
under a real Slurm: slurm/testbed.py (slurmctld + slurmd on this machine, brought up here).

The module brings the testbed up itself (or uses a Slurm that already answers on the default
configuration, e.g. one CI started) and skips only when the testbed reports that it cannot run
on this machine (exit 3: not root, no apt, Slurm's ports taken); any other failure of `up` fails
the tests."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from m3fmarl.experiments import load_experiment
from tests.conftest import REPO, progress_rows

TESTBED = REPO / "slurm" / "testbed.py"
TESTBED_CONF = Path(os.environ.get("M3FMARL_SLURM_DIR", "/tmp/m3fmarl-slurm")) / "slurm.conf"
STATE = Path("/tmp/m3fmarl-slurm-tests.json")
RUN_DIR_ENTRIES = {"run.json", "config.yaml", "progress.csv", "tb", "checkpoints", "evaluation.json"}

EXPERIMENT = """\
id: slurmtest
problems: [beach-bar, potential]
grid:
  - algorithms: [m3fppo]
    num_minors: [5]
    seeds: [0, 1]
    iterations: 2
evaluation: {episodes: 5}
budgets:
  smoke:
    settings:
      m3fppo: {train_batch_size: 2000, minibatch_size: 500, num_envs_per_env_runner: 20}
"""
SHORT_NAMES = [f"{p}__m3fppo__N5__s{s}" for p in ("beach-bar", "potential") for s in (0, 1)]

pytestmark = pytest.mark.slow


def _testbed_answers(conf: str | None) -> bool:
    """The Slurm the users recorded (None: the default configuration) still answers."""
    if conf is None:
        return _default_slurm_answers()
    return subprocess.run([sys.executable, str(TESTBED), "status"], capture_output=True, text=True,
                          timeout=60).returncode == 0


def _default_slurm_answers() -> bool:
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    try:
        r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 and bool(r.stdout.strip())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _shared_state():
    """The users of the testbed among concurrent pytest workers (xdist), under a file lock:
    it is brought down only when the last user is done, and only if the tests started it.
    Users are process IDs, so a run that was killed (a session ending mid-suite) leaves no user
    behind that would keep the next run from bringing the testbed up."""
    with open(STATE.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            state = json.loads(STATE.read_text())
            state["users"] = [pid for pid in state["users"] if _alive(pid) and pid != os.getpid()]
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            state = {"users": [], "started": False, "conf": None}
        yield state
        STATE.write_text(json.dumps(state))


@pytest.fixture(scope="module")
def slurm():
    with _shared_state() as state:
        if not state["users"] or not _testbed_answers(state["conf"]):
            if _default_slurm_answers():
                state.update(started=False, conf=None)
            else:
                running = subprocess.run([sys.executable, str(TESTBED), "status"], capture_output=True, text=True,
                                         timeout=60).returncode == 0
                up = subprocess.run([sys.executable, str(TESTBED), "up"], capture_output=True, text=True, timeout=900)
                if up.returncode == 3:
                    pytest.skip(f"Slurm testbed cannot run here: {up.stderr.strip().splitlines()[-1]}")
                if up.returncode != 0:
                    pytest.fail(f"slurm/testbed.py up failed:\n{(up.stdout + up.stderr)[-3000:]}")
                # started by these tests: now, or by a user still running (then it is still ours)
                started = (state["started"] and bool(state["users"])) or not running
                state.update(started=started, conf=str(TESTBED_CONF))
        state["users"].append(os.getpid())
        conf = state["conf"]
    previous = os.environ.get("SLURM_CONF")
    if conf:
        os.environ["SLURM_CONF"] = conf  # sbatch/squeue/scontrol here and in the jobs (sbatch exports it)
    yield
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous
    with _shared_state() as state:
        if os.getpid() in state["users"]:
            state["users"].remove(os.getpid())
        if not state["users"] and state["started"]:
            subprocess.run([sys.executable, str(TESTBED), "down"], capture_output=True, text=True, timeout=120)


def test_a_killed_run_leaves_no_user_of_the_testbed_behind(tmp_path, monkeypatch):
    """The CI failure of 2026-11-30: a suite killed mid-run left ``users: 1`` in the shared state,
    so the next run never brought the testbed up and every sbatch failed to contact slurmctld."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    monkeypatch.setattr(sys.modules[__name__], "STATE", tmp_path / "state.json")
    (tmp_path / "state.json").write_text(json.dumps({"users": [dead.pid], "started": True, "conf": "x"}))
    with _shared_state() as state:
        assert state["users"] == []
        state["users"].append(os.getpid())
    (tmp_path / "state.json").write_text(json.dumps({"users": 1, "started": True, "conf": "x"}))  # old format
    with _shared_state() as state:
        assert state == {"users": [], "started": False, "conf": None}


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "SBATCH_", "RAY_")) or k == "SLURM_CONF"}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _wait_job(job: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip():
        if time.monotonic() > deadline:
            subprocess.run(["scancel", job])
            pytest.fail(f"Slurm job {job} still running after {timeout} s")
        time.sleep(0.5)


def _exit_codes(job: str) -> list[str]:
    info = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    return re.findall(r"\bExitCode=(\d+:\d+)", info)


def _write_experiment(path: Path, text: str = EXPERIMENT) -> list[str]:
    """Write the experiment to ``path``; the names of its smoke trials, in index order."""
    path.write_text(text)
    trials = load_experiment(path, "smoke").trials
    assert [t.short_name for t in trials] == SHORT_NAMES
    return [t.name for t in trials]


def _check_trials(out: Path, names: list[str]) -> None:
    assert sorted(p.name for p in (out / "trials").iterdir()) == sorted(names)
    for name in names:
        run_dir = out / "trials" / name
        assert {p.name for p in run_dir.iterdir()} == RUN_DIR_ENTRIES, name
        assert [r["iteration"] for r in progress_rows(run_dir)] == ["1", "2"]
        ev = json.loads((run_dir / "evaluation.json").read_text())
        assert ev["trial"] == name and ev["iterations"] == 2
        assert [(r["num_minors"], r["execution"], r["episodes"], r["seed"]) for r in ev["results"]] == [
            (5, "centralized", 5, 0)]


def test_sbatch_sweep_runs_every_trial_on_a_ray_cluster_in_the_job(slurm, tmp_path):
    """`sbatch slurm/sweep.sh EXP --budget smoke` with 2 tasks: a Ray head and a worker, 4
    trials packed on 2 CPUs, every run directory and evaluation written, Ray torn down."""
    exp = tmp_path / "slurmtest.yaml"
    names = _write_experiment(exp)
    out = tmp_path / "out"
    t0 = time.monotonic()
    sub = subprocess.run(["sbatch", "--parsable", "--ntasks=2", "--cpus-per-task=1",
                          f"--output={tmp_path}/sweep-%j.out", "slurm/sweep.sh", str(exp), "--budget", "smoke",
                          "--out", str(out)], cwd=REPO, capture_output=True, text=True, env=_env(tmp_path),
                         timeout=60)
    assert sub.returncode == 0, sub.stderr
    job = sub.stdout.strip().split(";")[0]
    _wait_job(job, 900)
    seconds = time.monotonic() - t0
    log = (tmp_path / f"sweep-{job}.out").read_text()
    assert _exit_codes(job)[:1] == ["0:0"], log[-4000:]
    assert "Ray cluster: 2 node(s), 2 CPUs" in log, log[-4000:]
    assert "all 4 trials finished" in log
    _check_trials(out, names)
    nodes = set()
    for name in names:
        nodes |= set(re.findall(r"ray node (\w+)", (out / "logs" / f"{name}.log").read_text()))
    assert len(nodes) == 2, nodes  # trials ran on the head and on the worker
    assert len((out / "summary.csv").read_text().splitlines()) == 1 + len(names)
    assert not Path(f"/tmp/ray-{job}").exists()  # torn down
    print(f"sbatch slurm/sweep.sh (4 smoke trials, 2 Ray nodes): {seconds:.0f} s submit to done")


def test_sbatch_sweep_rejects_a_bad_experiment_before_starting_ray(slurm, tmp_path):
    exp = tmp_path / "bad.yaml"
    exp.write_text(EXPERIMENT.replace("seeds: [0, 1]", "seeds: []"))
    sub = subprocess.run(["sbatch", "--parsable", f"--output={tmp_path}/bad-%j.out", "slurm/sweep.sh", str(exp),
                          "--budget", "smoke"],
                         cwd=REPO, capture_output=True, text=True, env=_env(tmp_path), timeout=60)
    job = sub.stdout.strip().split(";")[0]
    _wait_job(job, 120)
    log = (tmp_path / f"bad-{job}.out").read_text()
    assert _exit_codes(job)[:1] == ["2:0"], log
    assert "bad.yaml:6: seeds is empty" in log
    assert "Ray head on" not in log


def test_array_script_runs_one_trial_per_task_into_the_same_layout(slurm, tmp_path):
    """slurm/array.sh run directly submits itself as a 4-task array; each task writes one
    trial's run directory exactly as the Tune sweep does; resubmitting reruns nothing."""
    exp = tmp_path / "slurmtest.yaml"
    names = _write_experiment(exp)
    out = tmp_path / "out"
    env = {**_env(tmp_path), "SBATCH_OUTPUT": f"{tmp_path}/array-%A_%a.out"}
    cmd = ["slurm/array.sh", str(exp), "--budget", "smoke", "--out", str(out)]
    sub = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
    assert sub.returncode == 0, sub.stdout + sub.stderr
    job = re.search(r"Submitted batch job (\d+)", sub.stdout).group(1)
    assert f"3 {names[3]} 2 4000 1 todo slurmtest" in sub.stdout.splitlines()  # potential, seed 1
    _wait_job(job, 900)
    codes = _exit_codes(job)
    logs = "".join(p.read_text() for p in sorted(tmp_path.glob("array-*.out")))
    assert codes == ["0:0"] * 4, logs[-4000:]
    _check_trials(out, names)
    before = {n: (out / "trials" / n / "evaluation.json").stat().st_mtime_ns for n in names}

    listing = subprocess.run([str(REPO / ".venv/bin/m3fmarl"), "sweep", *cmd[1:], "--list"], capture_output=True,
                             text=True, env=env, timeout=120)
    assert listing.stdout.count(" finished") == 4

    again = subprocess.run(["sbatch", "--parsable", "--array=0-1", f"--output={tmp_path}/again-%A_%a.out", *cmd],
                           cwd=REPO, capture_output=True, text=True, env=_env(tmp_path), timeout=60)
    job2 = again.stdout.strip().split(";")[0]
    _wait_job(job2, 600)
    assert _exit_codes(job2) == ["0:0"] * 2
    assert "already finished; nothing to do" in (out / "logs" / f"{names[0]}.log").read_text()
    assert {n: (out / "trials" / n / "evaluation.json").stat().st_mtime_ns for n in names} == before


LONG_EXPERIMENT = """\
id: requeuetest
problems: [potential]
grid:
  - algorithms: [m3fppo]
    num_minors: [5]
    seeds: [3]
    iterations: {iterations}
evaluation: {{episodes: 5}}
budgets:
  smoke:
    settings:
      m3fppo: {{train_batch_size: 2000, minibatch_size: 500, num_envs_per_env_runner: 20}}
"""
TIMING = {"time_this_iter_s", "time_total_s", "env_steps_per_s", "sample_time_s", "learn_time_s"}


def _reference_sweep(exp: Path, out: Path, tmp_path: Path) -> subprocess.Popen:
    """The same sweep, uninterrupted, on this machine (no Slurm), started in the background."""
    return subprocess.Popen([str(REPO / ".venv/bin/m3fmarl"), "sweep", str(exp), "--budget", "smoke", "--out",
                             str(out), "--cpus", "1"], stdout=open(tmp_path / "reference.log", "w"),
                            stderr=subprocess.STDOUT, env=_env(tmp_path))


def _same_run(run: Path, ref: Path, iterations: int) -> None:
    """``run`` (interrupted and resumed) has every iteration once and the same numbers as ``ref``."""
    rows, ref_rows = progress_rows(run), progress_rows(ref)
    assert [int(r["iteration"]) for r in rows] == list(range(1, iterations + 1))
    assert [{k: v for k, v in r.items() if k not in TIMING} for r in rows] == \
        [{k: v for k, v in r.items() if k not in TIMING} for r in ref_rows]
    trained = re.findall(r" iter (\d+)/\d+ \|", (run.parent.parent / "logs" / f"{run.name}.log").read_text())
    assert sorted(map(int, trained)) == list(range(1, iterations + 1)), "an iteration was trained twice"
    ev, ref_ev = (json.loads((d / "evaluation.json").read_text())["results"] for d in (run, ref))
    assert ev == ref_ev


def _restarts(job: str) -> int:
    info = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    return int(re.search(r"\bRestarts=(\d+)", info).group(1))


TRAIN_WINDOW_S = 75.0
"""Seconds a run of the 3-minute test job trains before Slurm's warning (SIGUSR1 90 s before the
limit, so 90 s into the job, less ≈ 15 s of Ray start-up)."""


def _seconds_per_iteration(tmp_path: Path) -> float:
    """This machine's speed on the requeue test's trial, now: the median seconds per iteration of
    30 iterations of it in a local sweep (the first five, warm-up, left out)."""
    exp = tmp_path / "calibrate.yaml"
    exp.write_text(LONG_EXPERIMENT.format(iterations=30).replace("id: requeuetest", "id: calibrate"))
    run = subprocess.run([str(REPO / ".venv/bin/m3fmarl"), "sweep", str(exp), "--budget", "smoke", "--out",
                          str(tmp_path / "calibrate"), "--cpus", "1"], capture_output=True, text=True,
                         env=_env(tmp_path), timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    (progress,) = (tmp_path / "calibrate" / "trials").glob("*/progress.csv")
    seconds = sorted(float(r["time_this_iter_s"]) for r in progress_rows(progress.parent)[5:])
    return seconds[len(seconds) // 2]


def test_sbatch_sweep_outlives_its_time_limit_by_requeueing_itself(slurm, tmp_path):
    """A 3-minute job whose trial needs several: Slurm's warning (SIGUSR1 90 s before the limit)
    makes the trial save its last iteration and stop, the job requeues itself and resumes, ≥ 2
    times; the trial ends with every iteration trained once and the same progress rows and
    evaluation as an uninterrupted run.  The trial is sized on this machine's measured speed to
    2.5 training windows of a run (≈ 75 s each), so ≥ 2 requeues come whether the machine is fast
    or slow (a fixed 300 iterations took 160 s on 2026-11-25 and 62 s after the numba kernels)."""
    iterations = max(300, math.ceil(2.5 * TRAIN_WINDOW_S / _seconds_per_iteration(tmp_path)))
    exp = tmp_path / "requeuetest.yaml"
    exp.write_text(LONG_EXPERIMENT.format(iterations=iterations))
    out, ref = tmp_path / "out", tmp_path / "ref"
    sub = subprocess.run(["sbatch", "--parsable", "--ntasks=1", "--cpus-per-task=1", "--time=3",
                          "--signal=B:USR1@90", f"--output={tmp_path}/job-%j.out", "slurm/sweep.sh", str(exp),
                          "--budget", "smoke", "--out", str(out), "--checkpoint-every", "50"],
                         cwd=REPO, capture_output=True, text=True, env=_env(tmp_path), timeout=60)
    assert sub.returncode == 0, sub.stderr
    job = sub.stdout.strip().split(";")[0]
    reference = _reference_sweep(exp, ref, tmp_path)
    try:
        _wait_job(job, 1800)
    finally:
        assert reference.wait(timeout=900) == 0, (tmp_path / "reference.log").read_text()[-3000:]
    log = (tmp_path / f"job-{job}.out").read_text()
    restarts = _restarts(job)
    assert _exit_codes(job)[:1] == ["0:0"], log[-4000:]
    assert restarts >= 2, log[-6000:]
    assert log.count("hands over: requeued") == restarts and log.count("picks up (run ") == restarts
    assert "all 1 trials finished" in log
    name = load_experiment(exp, "smoke").trials[0].name
    _same_run(out / "trials" / name, ref / "trials" / name, iterations)
    assert not list(REPO.glob(".m3fmarl-stop-*"))
    print(f"sweep.sh across {restarts} requeues: same rows and evaluation as the uninterrupted run")


def test_sbatch_sweep_ignores_a_warning_that_comes_after_the_sweep_finished(slurm, tmp_path):
    """Slurm's warning can come while the finished sweep's Ray is being torn down: the job still
    ends with exit 0:0 and is not requeued, and no stop file is left (before the fix, the
    teardown restored the default action of SIGUSR1 and the job ended killed by signal 10)."""
    exp = tmp_path / "late.yaml"
    exp.write_text(LONG_EXPERIMENT.format(iterations=3).replace("id: requeuetest", "id: late"))
    # 20 minutes: the script's own warning (10 minutes before the limit) stays far away
    sub = subprocess.run(["sbatch", "--parsable", "--ntasks=1", "--cpus-per-task=1", "--time=20",
                          f"--output={tmp_path}/job-%j.out", "slurm/sweep.sh", str(exp), "--budget", "smoke", "--out",
                          str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, env=_env(tmp_path),
                         timeout=60)
    assert sub.returncode == 0, sub.stderr
    job = sub.stdout.strip().split(";")[0]
    log_path = tmp_path / f"job-{job}.out"
    deadline = time.monotonic() + 600
    while "[sweep.sh] stopping Ray" not in (log_path.read_text() if log_path.exists() else ""):
        assert time.monotonic() < deadline, "the job never reached its teardown"
        time.sleep(0.05)
    signalled = subprocess.run(["scancel", "--batch", "--signal=USR1", job], capture_output=True, text=True)
    _wait_job(job, 300)
    log = log_path.read_text()
    assert signalled.returncode == 0, signalled.stderr  # the job was still there to get it
    assert _exit_codes(job)[:1] == ["0:0"], log[-3000:]
    assert _restarts(job) == 0 and "hands over" not in log and "done (exit 0)" in log
    assert "all 1 trials finished" in log
    assert not list(REPO.glob(".m3fmarl-stop-*"))


def test_array_task_hands_over_on_the_warning_signal_and_continues_its_trial(slurm, tmp_path):
    """slurm/array.sh: SIGUSR1 to the batch shell (as Slurm sends before a time limit) mid-trial:
    the trial saves its last finished iteration, the task requeues itself and its next run
    finishes the trial from there, equal to an uninterrupted run."""
    iterations = 60
    exp = tmp_path / "requeuetest.yaml"
    exp.write_text(LONG_EXPERIMENT.format(iterations=iterations))
    out, ref = tmp_path / "out", tmp_path / "ref"
    name = load_experiment(exp, "smoke").trials[0].name
    sub = subprocess.run(["sbatch", "--parsable", "--array=0-0", f"--output={tmp_path}/task-%A_%a.out",
                          "slurm/array.sh", str(exp), "--budget", "smoke", "--out", str(out),
                          "--checkpoint-every", "50"],
                         cwd=REPO, capture_output=True, text=True, env=_env(tmp_path), timeout=60)
    assert sub.returncode == 0, sub.stderr
    job = sub.stdout.strip().split(";")[0]
    reference = _reference_sweep(exp, ref, tmp_path)
    progress = out / "trials" / name / "progress.csv"
    deadline = time.monotonic() + 600
    while not (progress.exists() and len(progress.read_text().splitlines()) > 15):
        assert time.monotonic() < deadline, "the trial did not reach iteration 15"
        time.sleep(0.2)
    subprocess.run(["scancel", "--batch", "--signal=USR1", f"{job}_0"], check=True)
    try:
        _wait_job(job, 900)
    finally:
        assert reference.wait(timeout=600) == 0, (tmp_path / "reference.log").read_text()[-3000:]
    log = (tmp_path / f"task-{job}_0.out").read_text()
    assert _exit_codes(job)[:1] == ["0:0"], log[-4000:]
    assert _restarts(f"{job}_0") == 1, log[-4000:]
    assert "hands over: requeued" in log and "picks up (run 2)" in log, log[-4000:]
    _same_run(out / "trials" / name, ref / "trials" / name, iterations)


def test_sbatch_sweep_survives_a_lost_worker_node(slurm, tmp_path):
    """Two Ray nodes (head + worker task), one trial on each; the worker's Slurm task is killed
    (SIGKILL) mid-trial: its trial is retried on the remaining node from its last checkpoint
    (every 5 iterations), so at most 5 iterations are trained again; the sweep finishes with
    every progress row once."""
    iterations = 60
    exp = tmp_path / "lostnode.yaml"
    exp.write_text(LONG_EXPERIMENT.format(iterations=iterations).replace("seeds: [3]", "seeds: [3, 4]"))
    out = tmp_path / "out"
    sub = subprocess.run(["sbatch", "--parsable", "--ntasks=2", "--cpus-per-task=1",
                          f"--output={tmp_path}/job-%j.out", "slurm/sweep.sh", str(exp), "--budget", "smoke",
                          "--out", str(out), "--checkpoint-every", "5"],
                         cwd=REPO, capture_output=True, text=True, env=_env(tmp_path), timeout=60)
    assert sub.returncode == 0, sub.stderr
    job = sub.stdout.strip().split(";")[0]
    names = [t.name for t in load_experiment(exp, "smoke").trials]
    deadline = time.monotonic() + 600
    while not all((out / "trials" / n / "progress.csv").exists()
                  and len((out / "trials" / n / "progress.csv").read_text().splitlines()) > 12 for n in names):
        assert time.monotonic() < deadline, (tmp_path / f"job-{job}.out").read_text()[-3000:]
        time.sleep(0.2)
    steps = subprocess.run(["squeue", "-h", "-s", "-j", job, "-o", "%i %j"], capture_output=True, text=True).stdout
    worker_step = next(line.split()[0] for line in steps.splitlines() if line.split()[1] == "ray-worker")
    subprocess.run(["scancel", "--signal=KILL", worker_step], check=True)
    _wait_job(job, 900)
    log = (tmp_path / f"job-{job}.out").read_text()
    assert _exit_codes(job)[:1] == ["0:0"], log[-4000:]
    assert "all 2 trials finished" in log and "restarted (retry 1)" in log, log[-4000:]
    restarted = 0
    for name in names:
        trial_log = (out / "logs" / f"{name}.log").read_text()
        rows = progress_rows(out / "trials" / name)
        assert [int(r["iteration"]) for r in rows] == list(range(1, iterations + 1)), name
        trained = list(map(int, re.findall(r" iter (\d+)/\d+ \|", trial_log)))
        resumed = [int(i) for i in re.findall(r"resumed \S+ from iteration (\d+)", trial_log)]
        if resumed:
            restarted += 1
            assert resumed[0] >= 10 and len(trained) - iterations <= 5, (name, resumed, len(trained))
            assert len(set(re.findall(r"ray node (\w+)", trial_log))) == 2  # restarted on the other node
        else:
            assert sorted(trained) == list(range(1, iterations + 1))
    assert restarted == 1
