"""The committed reduced-budget evidence (results/reduced/) is usable: every finished trial of
campaign.json has its small files, and every policy export loads and acts (2 short evaluations,
at N = 3, through the same loaders as `m3fmarl evaluate --checkpoint`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from .conftest import REPO

RESULTS = REPO / "results" / "reduced"
CAMPAIGN = json.loads((RESULTS / "campaign.json").read_text()) if (RESULTS / "campaign.json").is_file() else None
EXPORTS = sorted(p.parent for p in (RESULTS / "trials").glob("*/policy.json"))


@pytest.mark.skipif(CAMPAIGN is None, reason="no committed campaign")
def test_every_finished_trial_has_its_files():
    finished = [name for name, t in CAMPAIGN["trials"].items() if t["finished"]]
    assert finished, "campaign.json lists no finished trial"
    for name in finished:
        for f in ("run.json", "config.yaml", "progress.csv", "evaluation.json"):
            assert (RESULTS / "trials" / name / f).is_file(), f"{name}: {f} missing"
        if "policy" in CAMPAIGN["trials"][name]:
            assert (RESULTS / CAMPAIGN["trials"][name]["policy"] / "policy.pt").is_file()


@pytest.mark.parametrize("trial", EXPORTS, ids=lambda p: p.name)
def test_committed_policy_exports_load_and_act(trial: Path):
    from m3fmarl.export import read_meta

    meta = read_meta(trial)
    if meta["view"] == "multi-agent":
        from marl_baselines.evaluate import evaluate_marl, load_marl_policy

        results = evaluate_marl(load_marl_policy(trial), num_minors=3, episodes=2, num_envs=2)
    else:
        from m3fmarl.evaluate import evaluate, load_policy

        results = evaluate(load_policy(trial), num_minors=3, episodes=2)
    assert len(results) == 1 and math.isfinite(results[0].mean)
