"""IPPO and MAPPO through the real pipeline (RLlib 2.60, ``m3fmarl.train.train``, the CLI):
every problem trains, checkpoints, resumes and evaluates; the policies get their own epochs;
same seed ⇒ same first iterations; IPPO learns on Beach bar within the CI budget.

Learning test settings (measured on 2 cores with another process busy, ``reference``, N = 5):
IPPO on Beach bar, lr 3e-3, train batch 2 000 joint steps = 20 copies × 100 steps, minibatch 500,
8 epochs per policy (major 32, minor 160 Adam steps per iteration).  Beach bar is where the
multi-agent view is easiest: a minor sees its own cell and the bar's as one-hots, and "walk to the
bar" is one lookup.  Evaluated return (final checkpoint, 300 episodes) vs uniform-random agents
−691.5 ± 1.4 (500 episodes): after 40 iterations −642 (training metric), after 50 iterations
−584.4 ± 2.7 (evaluated), ≈ 2.5 s per iteration.  The test's 45 iterations: −628.0 ± 2.2
(shuffled minibatches), −623.2 ± 2.6 (the reference variant's contiguous minibatches, FastTanh).  Potential (the M3FPPO
learning problem) showed
no IPPO trend in 60 iterations: the major cannot act and 5 minors move it only collectively.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from m3fmarl import registry
from m3fmarl.cli import main
from m3fmarl.config import PPOSettings, settings_class
from m3fmarl.multiagent import MultiAgentCore
from m3fmarl.rollout import ReturnStats
from m3fmarl.train import RunSpec, checkpoints, train
from marl_baselines.evaluate import evaluate_marl, load_marl_policy, uniform_episode_returns

from .conftest import PROBLEM_NAMES, progress_rows

TINY = PPOSettings(lr=1e-3, train_batch_size=200, minibatch_size=100, num_epochs=2, num_envs_per_env_runner=10)


pytestmark = pytest.mark.slow  # every test here trains with RLlib (make test-fast skips them)


def tiny(algo: str) -> Any:
    """TINY in the settings class of ``algo`` (its fields that the class has; an off-policy
    learner starts learning after 100 transitions, so that the two tiny iterations learn)."""
    cls = settings_class(algo)
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in dataclasses.asdict(TINY).items() if k in fields}
    if "learning_starts" in fields:
        values["learning_starts"] = 100
    return cls(**values)


@pytest.mark.parametrize("algo", registry.names("multi-agent"))
@pytest.mark.parametrize("problem", PROBLEM_NAMES)
def test_trains_checkpoints_and_evaluates_every_problem(
    algo: str, problem: str, tmp_path: Path, ray_session: None, capsys: pytest.CaptureFixture,
) -> None:
    run = train(RunSpec(algo, problem, 3, "reference", seed=1, iterations=2), tmp_path / "run",
                settings=tiny(algo), checkpoint_every=1, log=lambda line: None)
    rows = progress_rows(run)
    assert [float(r["env_steps"]) for r in rows] == [200.0, 400.0]
    assert all(np.isfinite(float(r["vf_loss"])) for r in rows)
    assert main(["evaluate", "--checkpoint", str(run), "--episodes", "3", "--num-minors", "3", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["num_minors"] for r in out["results"]] == [3, 5]  # the actors transfer over N
    assert all(r["execution"] == "multi-agent" and r["episodes"] == 3 for r in out["results"])


def test_each_policy_gets_its_own_epochs(ray_session: None) -> None:
    """Hazard H2: the minor policy (N× the rows) must not be cut short, nor the major cycled N×."""
    from marl_baselines.ppo import ippo_config

    n, batch, epochs = 4, 200, 3
    algo = ippo_config("formation", n, seed=0, num_envs_per_env_runner=10, train_batch_size=batch,
                       minibatch_size=100, num_epochs=epochs).build_algo()
    try:
        result = algo.train()
    finally:
        algo.stop()
    learners = result["learners"]
    assert learners["major"]["num_module_steps_trained"] == epochs * batch
    assert learners["minor"]["num_module_steps_trained"] == epochs * batch * n


def test_same_seed_same_first_iterations(ray_session: None) -> None:
    from marl_baselines.ppo import mappo_config

    def first_two() -> list[tuple]:
        algo = mappo_config("potential", 3, seed=5, num_envs_per_env_runner=10, train_batch_size=200,
                           minibatch_size=100, num_epochs=2).build_algo()
        try:
            out = []
            for _ in range(2):
                r = algo.train()
                out.append((r["env_runners"].get("episode_return_mean"), r["learners"]["minor"]["vf_loss"],
                            r["learners"]["major"]["policy_loss"]))
            return out
        finally:
            algo.stop()

    assert first_two() == first_two()


def test_resume_continues_from_the_last_checkpoint(tmp_path: Path, ray_session: None) -> None:
    spec = RunSpec("ippo", "beach-bar", 3, "reference", seed=0, iterations=2)
    run = train(spec, tmp_path / "run", settings=TINY, checkpoint_every=1, log=lambda line: None)
    shutil.rmtree(checkpoints(run)[-1][1])  # as if killed before the second save completed
    lines: list[str] = []
    train(RunSpec("ippo", "beach-bar", 3, "reference", seed=0, iterations=3), run, settings=TINY, resume=True,
          checkpoint_every=1, log=lines.append)
    assert any("resumed" in line and "iteration 1" in line for line in lines)
    assert [float(r["env_steps"]) for r in progress_rows(run)] == [200.0, 400.0, 600.0]
    assert [i for i, _ in checkpoints(run)] == [1, 2, 3]


def test_bad_evaluate_input_exits_2(tmp_path: Path, ray_session: None, capsys: pytest.CaptureFixture) -> None:
    run = train(RunSpec("ippo", "potential", 2, "reference", seed=0, iterations=1), tmp_path / "run",
                settings=TINY, log=lambda line: None)
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run), "--execution", "decentralized"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "IPPO/MAPPO" in err[0]


def test_ippo_learns_beach_bar(tmp_path: Path, ray_session: None) -> None:
    settings = PPOSettings(lr=3e-3, train_batch_size=2000, minibatch_size=500, num_epochs=8,
                           num_envs_per_env_runner=20)
    run = train(RunSpec("ippo", "beach-bar", 5, "reference", seed=0, iterations=45), tmp_path / "run",
                settings=settings, checkpoint_every=45, log=lambda line: None)
    policy = load_marl_policy(checkpoints(run)[-1][1])
    trained = evaluate_marl(policy, episodes=300, seed=1)[0]
    uniform = ReturnStats.of(uniform_episode_returns(MultiAgentCore("beach-bar", 5, "reference"), 500, seed=1))
    print(f"IPPO beach-bar N=5: {trained.mean:.1f} ± {trained.ci95:.1f}; uniform {uniform.mean:.1f} ± "
          f"{uniform.ci95:.1f}")
    assert trained.mean - trained.ci95 > uniform.mean + uniform.ci95 + 20.0


def test_bench_marl_reports_sampling_rates(capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "marl", "--algo", "mappo", "--problem", "beach-bar", "--num-minors", "3", "20",
                 "--num-envs", "4", "--seconds", "0.2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["num_minors"] for r in rows] == [3, 20]
    assert all(r["joint_steps_per_s"] > 0 for r in rows)
    assert rows[0]["vs_authors_env"] is None and rows[1]["vs_authors_env"] > 0  # the authors' figure is for N=20


def test_cli_train_resume_evaluate_mappo(tmp_path: Path, ray_session: None, capsys: pytest.CaptureFixture) -> None:
    import yaml

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(dataclasses.asdict(TINY)))
    out = tmp_path / "run"
    base = ["train", "--algo", "mappo", "--problem", "formation", "--num-minors", "3", "--config", str(cfg),
            "--out", str(out), "--checkpoint-every", "1"]
    assert main([*base, "--iterations", "1"]) == 0
    assert main([*base, "--iterations", "1"]) == 2  # --out holds a run: refused without --resume
    assert main([*base, "--iterations", "2", "--resume"]) == 0
    assert [float(r["env_steps"]) for r in progress_rows(out)] == [200.0, 400.0]
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out), "--episodes", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)["results"]
    assert res[0]["execution"] == "multi-agent" and res[0]["num_minors"] == 3


def test_initial_weights_do_not_depend_on_the_hash_seed(tmp_path: Path) -> None:
    """Same seed ⇒ same modules in any process: the policies were once given to RLlib as a set,
    whose order follows Python's string hashing (PYTHONHASHSEED), and the modules were built —
    drawing their initial weights — in that order (IPPO on Potential gave −124.34 or −123.31 after
    two iterations depending on the hash seed)."""
    script = tmp_path / "weights.py"
    script.write_text(
        "import hashlib, ray\n"
        "from marl_baselines.ppo import ippo_config\n"
        "ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)\n"
        "algo = ippo_config('potential', 3, seed=4, train_batch_size=200, minibatch_size=100,"
        " num_envs_per_env_runner=10).build_algo()\n"
        "learner = algo.learner_group._learner\n"
        "h = hashlib.sha256()\n"
        "for mid in sorted(learner.module.keys()):\n"
        "    for k, v in sorted(learner.module[mid].state_dict().items()):\n"
        "        h.update(k.encode()); h.update(v.detach().numpy().tobytes())\n"
        "print('WEIGHTS', h.hexdigest())\n")
    digests = []
    for hash_seed in ("1", "5"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        digests.append(next(line for line in out.stdout.splitlines() if line.startswith("WEIGHTS")))
    assert digests[0] == digests[1]
