"""slurm/sweep.sh (Ray cluster inside the job) and slurm/array.sh (one trial per array task)
under a real Slurm: ../shared/tools/local-slurm (slurmctld + slurmd on this machine).

The module brings local-slurm up itself and skips only when local-slurm reports that it cannot
run on this machine (not root, apt unavailable, a foreign slurm.conf or Slurm already running);
any other failure of `up` fails the tests."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from m3fmarl.experiments import load_experiment
from tests.conftest import REPO, progress_rows

SHARED = Path(os.environ.get("M3FMARL_SHARED", REPO.parent / "shared"))
LOCAL_SLURM = SHARED / "tools" / "local-slurm"
STATE = Path("/tmp/m3fmarl-slurm-tests.json")
CANNOT_RUN = re.compile(r"must run as root|apt-get failed|not written by local-slurm|already in use")
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


def _slurm_env() -> dict[str, str]:
    """local-slurm's environment: without OMP_* (conftest sets OMP_NUM_THREADS=1, and GNU
    `nproc`, which sizes the Slurm node, honours it: the node would get 1 CPU)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}


@contextlib.contextmanager
def _shared_state():
    """The users of local-slurm among concurrent pytest workers (xdist), under a file lock:
    Slurm is brought down only when the last user is done, and only if the tests started it."""
    with open(STATE.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            state = json.loads(STATE.read_text())
        except (OSError, json.JSONDecodeError):
            state = {"users": 0, "started": False}
        yield state
        STATE.write_text(json.dumps(state))


@pytest.fixture(scope="module")
def slurm():
    if not LOCAL_SLURM.is_file():
        pytest.fail(f"{LOCAL_SLURM} not found (set M3FMARL_SHARED to the shared/ folder)")
    with _shared_state() as state:
        if state["users"] == 0:
            status = subprocess.run([str(LOCAL_SLURM), "status"], capture_output=True, text=True, timeout=60,
                                    env=_slurm_env())
            state["started"] = not (status.returncode == 0 and "not running" not in status.stdout)
        up = subprocess.run([str(LOCAL_SLURM), "up"], capture_output=True, text=True, timeout=600, env=_slurm_env())
        if up.returncode == 0:
            state["users"] += 1
    if up.returncode != 0:
        text = up.stdout + up.stderr
        if CANNOT_RUN.search(text):
            pytest.skip(f"local-slurm cannot run here: {text.strip().splitlines()[-1]}")
        pytest.fail(f"local-slurm up failed:\n{text[-3000:]}")
    yield
    with _shared_state() as state:
        state["users"] -= 1
        if state["users"] == 0 and state["started"]:
            subprocess.run([str(LOCAL_SLURM), "down"], capture_output=True, text=True, timeout=120, env=_slurm_env())


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "RAY_"))}
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
    sub = subprocess.run(["sbatch", "--parsable", f"--output={tmp_path}/bad-%j.out", "slurm/sweep.sh", str(exp)],
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
