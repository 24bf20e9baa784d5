"""The ``m3fmarl`` command: demo, bench, rollout, usage errors (exit 2, one line)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import PROBLEM_NAMES


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "m3fmarl", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["rollout", "--problem", "chess"], "valid: two-gaussians, formation, beach-bar, foraging, potential"),
        (["rollout", "--problem", "potential", "--num-minors", "0"], "expected an integer >= 1"),
        (["rollout", "--problem", "potential", "--variant", "exact"], "choose from 'paper', 'reference'"),
        (["bench", "envs", "--problem", "beach"], None),  # an alias works: not an error
        (["fly"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: list[str], needle: str | None) -> None:
    if needle is None:
        out = run(*args, "--num-minors", "2", "--seconds", "0.01", "--json")
        assert out.returncode == 0, out.stderr
        assert {r["problem"] for r in json.loads(out.stdout)["rows"]} == {"beach-bar"}
        return
    out = run(*args)
    assert out.returncode == 2
    assert needle in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(("m3fmarl", "usage"))
    assert len([line for line in out.stderr.splitlines() if "error" in line]) == 1


def test_bench_envs_authors_src_errors(tmp_path: Path) -> None:
    """--authors-src: a directory without the authors' package, or no old ``gym`` beside ours, is a
    usage error (exit 2, one line) before anything is timed."""
    out = run("bench", "envs", "--authors-src", str(tmp_path), "--problem", "foraging")
    assert out.returncode == 2 and "no marllib/envs/m3fc_envs below it" in out.stderr
    assert out.stdout == ""
    (tmp_path / "marllib" / "envs" / "m3fc_envs").mkdir(parents=True)
    out = run("bench", "envs", "--authors-src", str(tmp_path), "--problem", "foraging")
    if importlib.util.find_spec("gym") is None:
        assert out.returncode == 2 and "needs the old 'gym' package" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_bench_envs_json_smoke() -> None:
    out = run("bench", "envs", "--problem", "potential", "--problem", "two-gaussians", "--num-minors", "3",
              "--num-envs", "4", "--seconds", "0.01", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    kinds = {(r["problem"], r["kind"]) for r in data["rows"]}
    assert kinds == {("potential", "single"), ("potential", "vector"), ("two-gaussians", "single"),
                     ("two-gaussians", "vector"), ("two-gaussians", "ot-pot"), ("two-gaussians", "ot-ours")}
    assert all(r["steps_per_s"] > 0 for r in data["rows"])
    assert data["machine"]["cores"] >= 1


def test_rollout_reports_mean_and_ci() -> None:
    out = run("rollout", "--problem", "beach-bar", "--num-minors", "5", "--episodes", "10", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["episodes"] == 10 and res["ci95"] > 0 and res["mean"] < 0


def test_demo_prints_every_problem_and_writes_a_picture(tmp_path: Path) -> None:
    out = run("demo", "--episodes", "2", "--num-minors", "4", "--out", str(tmp_path), "--train-iterations", "0")
    assert out.returncode == 0, out.stderr
    for name in PROBLEM_NAMES:
        assert name in out.stdout
    png = tmp_path / "demo_episode.png"
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_demo_trains_evaluates_and_plots(tmp_path: Path) -> None:
    out = run("demo", "--episodes", "2", "--num-minors", "4", "--out", str(tmp_path), "--train-iterations", "2",
              "--eval-episodes", "20")
    assert out.returncode == 0, out.stderr
    assert "iter 2/2" in out.stdout and "M3FPPO (trained, stochastic)" in out.stdout
    assert "zero decision rule" in out.stdout and "uniform-random actions" in out.stdout
    curve = tmp_path / "learning_curve.png"
    assert curve.exists() and curve.read_bytes()[:4] == b"\x89PNG"
    assert len(list((tmp_path / "runs").iterdir())) == 1


def test_envs_lists_every_id() -> None:
    out = run("envs")
    assert out.returncode == 0, out.stderr
    for env_id in ("m3fmarl/TwoGaussians-v0", "m3fmarl/Formation-v0", "m3fmarl/BeachBar-v0",
                   "m3fmarl/Foraging-v0", "m3fmarl/Potential-v0"):
        assert env_id in out.stdout


@pytest.mark.slow
def test_bench_train_smoke() -> None:
    out = run("bench", "train", "--problem", "potential", "--num-minors", "5", "--iterations", "1", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout[out.stdout.index("{"):])
    assert res["train_batch_size"] == 24000 and res["seconds_per_iteration"] > 0
    assert res["sampling_s"] > 0 and res["learner_s"] > 0
