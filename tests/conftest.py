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
