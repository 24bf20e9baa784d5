"""`m3fmarl train`: run directory contents, refusal to overwrite, resume after a real kill,
same seed ⇒ same first iterations.  Real RLlib, tiny batches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from m3fmarl.config import PPOSettings
from m3fmarl.train import RunError, RunSpec, checkpoints, train

from .conftest import progress_rows

pytestmark = pytest.mark.slow

TINY = PPOSettings(train_batch_size=400, minibatch_size=200, num_epochs=1, num_envs_per_env_runner=4)
TINY_YAML = "\n".join(f"{k}: {json.dumps(v)}" for k, v in vars(TINY).items()) + "\n"


@pytest.fixture(scope="module", autouse=True)
def _ray(ray_session):
    yield


def test_run_directory_records_everything(tmp_path: Path) -> None:
    run = train(RunSpec("m3fppo", "beach-bar", 5, "reference", seed=3, iterations=3), tmp_path / "run",
                settings=TINY, checkpoint_every=2, log=lambda _: None)
    record = json.loads((run / "run.json").read_text())
    assert record["spec"] == {"algo": "m3fppo", "problem": "beach-bar", "num_minors": 5, "variant": "reference",
                              "seed": 3, "iterations": 3}
    assert record["settings"]["train_batch_size"] == 400
    assert len(record["git"]["sha"] or "") == 40 and isinstance(record["git"]["dirty"], bool)
    assert record["versions"]["ray"] == "2.60.0" and record["versions"]["torch"].startswith("2.13.0")
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["train_batch_size"] == 400
    # resolved: the reference variant's KL pair and minibatching, not the YAML's per-variant nulls
    assert (config["kl_coeff"], config["kl_target"], config["minibatching"]) == (0.2, 0.03, "reference")
    assert record["settings"]["kl_coeff"] is None  # the run's identity keeps what was asked
    progress = progress_rows(run)
    assert [int(r["iteration"]) for r in progress] == [1, 2, 3]
    assert [float(r["env_steps"]) for r in progress] == [400.0, 800.0, 1200.0]
    assert any((run / "tb").glob("events.out.tfevents.*"))
    assert [i for i, _ in checkpoints(run)] == [2, 3]


def test_existing_run_is_never_overwritten(tmp_path: Path) -> None:
    spec = RunSpec("m3fppo", "potential", 4, iterations=1)
    run = train(spec, tmp_path / "run", settings=TINY, log=lambda _: None)
    before = (run / "progress.csv").read_bytes()
    with pytest.raises(RunError, match="already holds a run .*pass --resume"):
        train(spec, run, settings=TINY, log=lambda _: None)
    with pytest.raises(RunError, match="different settings"):
        train(RunSpec("m3fppo", "potential", 5, iterations=1), run, settings=TINY, resume=True, log=lambda _: None)
    assert (run / "progress.csv").read_bytes() == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="not an m3fmarl run directory"):
        train(spec, other, settings=TINY, log=lambda _: None)
    with pytest.raises(RunError, match="no run to resume"):
        train(spec, tmp_path / "empty", settings=TINY, resume=True, log=lambda _: None)


def test_same_seed_same_first_iterations(tmp_path: Path) -> None:
    spec = RunSpec("m3fppo", "beach-bar", 5, seed=7, iterations=2)
    a = progress_rows(train(spec, tmp_path / "a", settings=TINY, log=lambda _: None))
    b = progress_rows(train(spec, tmp_path / "b", settings=TINY, log=lambda _: None))
    c = progress_rows(train(RunSpec("m3fppo", "beach-bar", 5, seed=8, iterations=2), tmp_path / "c", settings=TINY,
                   log=lambda _: None))
    keys = ["episode_return_mean", "vf_loss", "policy_loss", "mean_kl"]
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]
    assert [[r[k] for k in keys] for r in a] != [[r[k] for k in keys] for r in c]


def test_resume_continues_a_killed_run(tmp_path: Path) -> None:
    """Kill `m3fmarl train` (SIGKILL) after its second checkpoint, then resume to the end."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_YAML)
    out = tmp_path / "run"
    base = [sys.executable, "-m", "m3fmarl", "train", "--algo", "m3fppo", "--problem", "beach-bar",
            "--num-minors", "5", "--config", str(cfg), "--out", str(out), "--checkpoint-every", "2"]
    log = tmp_path / "killed.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([*base, "--iterations", "200"], stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and len(checkpoints(out)) < 2 and proc.poll() is None:
            time.sleep(0.2)
        assert len(checkpoints(out)) >= 2, f"no checkpoint appeared:\n{log.read_text()[-3000:]}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended by itself before it was killed"
    last_ckpt = checkpoints(out)[-1][0]
    assert last_ckpt < 200
    done = subprocess.run([*base, "--iterations", str(last_ckpt + 3), "--resume"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"resumed {out} from iteration {last_ckpt}" in done.stdout
    progress = progress_rows(out)
    assert [int(r["iteration"]) for r in progress] == list(range(1, last_ckpt + 4))
    steps = [float(r["env_steps"]) for r in progress]
    assert steps == [400.0 * i for i in range(1, last_ckpt + 4)]
    assert checkpoints(out)[-1][0] == last_ckpt + 3


def test_cli_usage_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 0.1\n")
    for args, needle in (
        (["--algo", "sac", "--problem", "potential", "--num-minors", "3"], "invalid choice: 'sac'"),
        (["--algo", "m3fppo", "--problem", "chess", "--num-minors", "3"], "valid: two-gaussians"),
        (["--algo", "m3fppo", "--problem", "potential", "--num-minors", "3", "--config", str(bad)],
         "bad.yaml: unknown key 'learning_rate'; valid:"),
    ):
        out = subprocess.run([sys.executable, "-m", "m3fmarl", "train", *args, "--out", str(tmp_path / "x")],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and needle in out.stderr, out.stderr
    assert not (tmp_path / "x").exists()
