"""Shared test settings: a derandomised hypothesis profile and small problem sizes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

settings.register_profile(
    "ci", derandomize=True, deadline=None, max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("ci")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
"""The project's shared folder beside a developer checkout (spec, tools); a user's clone has
none, and nothing in the suite needs it: only checks *against* the spec read it (skipped
without it); the Slurm tests bring up their own cluster (slurm/testbed.py)."""
PROBLEM_NAMES = ["two-gaussians", "formation", "beach-bar", "foraging", "potential"]


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray (2 CPUs, no dashboard) for one test module; shut down after it."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def progress_rows(run_dir: Path) -> list[dict[str, str]]:
    """The rows of a run directory's progress.csv."""
    import csv

    with open(run_dir / "progress.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def check_marl_beats_fixed_policies(label: str, run_dir: Path, problem: str, num_minors: int,
                                    episodes: int = 300) -> str:
    """The last checkpoint of a multi-agent run, evaluated (seed 1), beats ξ = 0 and uniform
    actions (reference variant, same episodes and seed) beyond both CIs; returns the report line."""
    from m3fmarl.rollout import ReturnStats, episode_returns
    from m3fmarl.train import checkpoints
    from marl_baselines.evaluate import evaluate_marl, load_marl_policy

    trained = evaluate_marl(load_marl_policy(checkpoints(run_dir)[-1][1]), episodes=episodes, seed=1)[0]
    report = f"{label} {problem} N={num_minors}: {trained.mean:.1f} ± {trained.ci95:.1f}"
    for name in ("zero", "uniform"):
        b = ReturnStats.of(episode_returns(problem, num_minors, episodes, variant="reference", policy=name, seed=1))
        report += f"; {name} {b.mean:.1f} ± {b.ci95:.1f}"
        assert trained.mean - trained.ci95 > b.mean + b.ci95, report
    print(report)
    return report


def check_same_seed_and_exact_resume(spec, settings, tmp_path: Path) -> list[dict[str, str]]:
    """Train ``spec`` twice: the same progress rows (timings aside); then cut the second run after
    its second-to-last iteration (its last checkpoint and progress row removed, as a kill before
    the save completes) and resume it: rows and the policies' weights equal the uninterrupted
    run's.  Needs ``checkpoint_every=1``-sized runs (≥ 2 iterations); returns the rows."""
    import shutil

    import torch

    from m3fmarl.train import PROGRESS_FIELDS, checkpoints, train
    from marl_baselines.evaluate import load_marl_policy

    timing = {"time_this_iter_s", "time_total_s", "env_steps_per_s", "sample_time_s", "learn_time_s"}

    def rows(run):
        return [[r[k] for k in PROGRESS_FIELDS if k not in timing] for r in progress_rows(run)]

    def weights(run):
        modules = load_marl_policy(checkpoints(run)[-1][1]).modules
        return {f"{mid}/{k}": v for mid, m in modules.items() for k, v in m.state_dict().items()}

    a = train(spec, tmp_path / "a", settings=settings, checkpoint_every=1, log=lambda line: None)
    b = train(spec, tmp_path / "b", settings=settings, checkpoint_every=1, log=lambda line: None)
    assert rows(a) == rows(b) and len(rows(a)) == spec.iterations
    shutil.rmtree(checkpoints(b)[-1][1])  # as if killed before the last save completed
    lines = (b / "progress.csv").read_text().splitlines(keepends=True)
    (b / "progress.csv").write_text("".join(lines[:spec.iterations]))
    train(spec, b, settings=settings, resume=True, checkpoint_every=1, log=lambda line: None)
    assert rows(b) == rows(a)
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    return progress_rows(a)


@pytest.fixture(autouse=True)
def _fast_tests_do_not_start_ray(request, monkeypatch):
    """A test not marked ``slow`` that starts Ray fails: ``make test-fast`` (``-m "not slow"``)
    must not train with RLlib."""
    if request.node.get_closest_marker("slow") is not None:
        return
    import ray

    def refuse(*args, **kwargs):  # noqa: ANN002, ANN003
        pytest.fail(f"{request.node.nodeid} starts Ray but is not marked slow")

    if not ray.is_initialized():
        monkeypatch.setattr(ray, "init", refuse)
