"""Exact resume: a run interrupted by SIGINT, SIGTERM and SIGKILL at arbitrary moments and resumed
each time ends with the same progress rows (every non-timing column) and the same final weights
as an uninterrupted run with the same seed.  Real `m3fmarl train` processes, real RLlib."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from m3fmarl.evaluate import load_policy
from m3fmarl.train import PROGRESS_FIELDS, checkpoints

from .conftest import progress_rows

pytestmark = pytest.mark.slow

ITERATIONS = 9
SETTINGS = {  # Potential, N = 4: 10 copies × 100 steps = 10 whole episodes per iteration
    "train_batch_size": 1000, "minibatch_size": 250, "num_epochs": 2, "num_envs_per_env_runner": 10, "lr": 1e-3,
}
TIMING = {"time_this_iter_s", "time_total_s", "env_steps_per_s", "sample_time_s", "learn_time_s"}
COMPARED = [f for f in PROGRESS_FIELDS if f not in TIMING]


def _command(out: Path, config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "m3fmarl", "train", "--algo", "m3fppo", "--problem", "potential",
            "--num-minors", "4", "--seed", "5", "--iterations", str(ITERATIONS), "--config", str(config),
            "--out", str(out), "--checkpoint-every", "3", *extra]


def _rows(run: Path) -> list[list[str]]:
    return [[r[k] for k in COMPARED] for r in progress_rows(run)]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_policy(checkpoints(run)[-1][1]).module.state_dict()


def _interrupt(cmd: list[str], out: Path, sig: int, after_rows: int, delay: float, log: Path) -> None:
    """Start ``cmd``, wait until progress.csv has ``after_rows`` rows, wait ``delay`` s (inside
    the next iteration), send ``sig``."""
    with open(log, "a") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    progress = out / "progress.csv"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            if progress.exists() and len(progress.read_text().splitlines()) - 1 >= after_rows:
                break
            time.sleep(0.02)
        time.sleep(delay)
        assert proc.poll() is None, f"the run ended before it was interrupted:\n{log.read_text()[-3000:]}"
        os.killpg(proc.pid, sig)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in SETTINGS.items()))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    straight = tmp_path / "straight"
    done = subprocess.run(_command(straight, config), capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout + done.stderr

    run, log = tmp_path / "interrupted", tmp_path / "interrupted.log"
    _interrupt(_command(run, config), run, signal.SIGINT, after_rows=2, delay=0.05, log=log)
    assert "interrupted: saved" in log.read_text()
    # SIGINT in iteration 3 saves iteration 2 (not due for a checkpoint): never a half-trained state
    assert [i for i, _ in checkpoints(run)] == [2]
    _interrupt(_command(run, config, "--resume"), run, signal.SIGTERM, after_rows=4, delay=0.1, log=log)
    assert "terminated: saved" in log.read_text()
    _interrupt(_command(run, config, "--resume"), run, signal.SIGKILL, after_rows=7, delay=0.05, log=log)
    resumed = subprocess.run(_command(run, config, "--resume"), capture_output=True, text=True, timeout=600, env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed" in resumed.stdout

    assert _rows(run) == _rows(straight)
    assert [int(r["iteration"]) for r in progress_rows(run)] == list(range(1, ITERATIONS + 1))
    a, b = _weights(straight), _weights(run)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # time_total_s continues across invocations instead of restarting
    totals = [float(r["time_total_s"]) for r in progress_rows(run)]
    assert all(np.diff(totals) > 0)
    record = json.loads((run / "run.json").read_text())
    assert [inv["resume"] for inv in record["invocations"]] == [False, True, True, True]
    assert all("resumed_from_iteration" in inv for inv in record["invocations"][1:])


def _children(pid: int) -> list[int]:
    """The processes started by ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile
        if ppid == pid:
            found.append(int(stat.parent.name))
    return found


def test_sigterm_to_every_process_of_the_job_still_saves_the_last_iteration(tmp_path: Path) -> None:
    """Slurm's time limit, ``scancel`` and ``kill -- -PGID`` signal Ray's own processes too.  In
    the worst order (the raylet first, the driver 3 s later) the driver must still save: before
    the fix the raylet exited and took the driver with it, and no checkpoint was written."""
    config = tmp_path / "settings.yaml"
    config.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in SETTINGS.items()))
    run, log = tmp_path / "run", tmp_path / "run.log"
    cmd = _command(run, config)
    cmd[cmd.index("--iterations") + 1] = "500"
    cmd[cmd.index("--checkpoint-every") + 1] = "400"
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not (
                (run / "progress.csv").exists() and len(progress_rows(run)) >= 3):
            time.sleep(0.05)
        raylet = [pid for pid in _children(proc.pid) if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet"]
        assert len(raylet) == 1
        os.kill(raylet[0], signal.SIGTERM)  # the GCS, alive, then tells the driver that its node died
        time.sleep(3.0)
        assert proc.poll() is None, f"the driver died with Ray's processes:\n{log.read_text()[-3000:]}"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text()
    assert "terminated: saved" in text, text[-3000:]
    assert proc.returncode == 128 + signal.SIGTERM  # 143: ended by SIGTERM, as Slurm and shells read it
    (saved, _), = checkpoints(run)
    assert saved >= 3 and len(progress_rows(run)) - 1 <= saved <= len(progress_rows(run))


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in SETTINGS.items()))
    run = tmp_path / "run"
    cmd = _command(run, config)
    cmd[cmd.index("--iterations") + 1] = "6"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    (newest_it, newest), = checkpoints(run)[-1:]
    assert newest_it == 6
    for state_file in newest.rglob("*.pkl"):
        state_file.write_bytes(state_file.read_bytes()[:10])  # as if the disk filled up mid-write
    cmd[cmd.index("--iterations") + 1] = "7"
    again = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "warning: checkpoint iter_000006 cannot be restored" in again.stdout
    assert "resumed" in again.stdout and "from iteration 3" in again.stdout
    assert [int(r["iteration"]) for r in progress_rows(run)] == list(range(1, 8))


def test_a_run_on_two_cpus_is_reproducible_and_records_them(tmp_path: Path) -> None:
    """`--cpus 2` (learner and OT threads): two runs with one seed give the same rows; run.json
    records the CPUs of the invocation."""
    config = tmp_path / "settings.yaml"
    config.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in SETTINGS.items()))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = []
    for name in ("a", "b"):
        cmd = [*_command(tmp_path / name, config, "--cpus", "2")]
        cmd[cmd.index("--iterations") + 1] = "4"
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        runs.append(tmp_path / name)
    assert _rows(runs[0]) == _rows(runs[1]) and len(_rows(runs[0])) == 4
    record = json.loads((runs[0] / "run.json").read_text())
    assert [inv["cpus"] for inv in record["invocations"]] == [2]
