"""Policy exports (m3fmarl.export): actor weights + metadata, loaded without unpickling code, and
evaluating exactly as the checkpoint they came from — for an M3FPPO, an IPPO and an HMF policy, through
the API and through `m3fmarl evaluate --checkpoint EXPORT`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from m3fmarl.config import HMFSettings, PPOSettings
from m3fmarl.evaluate import evaluate, load_policy
from m3fmarl.export import POLICY_FILE, POLICY_META, export_policy, load_modules
from m3fmarl.train import RunSpec, checkpoints, train
from marl_baselines.evaluate import evaluate_marl, is_marl_checkpoint, load_marl_policy

pytestmark = pytest.mark.slow

TINY = PPOSettings(train_batch_size=1000, minibatch_size=500, num_epochs=1, num_envs_per_env_runner=5, lr=1e-3)


@pytest.fixture(scope="module")
def runs(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    m3f = train(RunSpec("m3fppo", "beach-bar", 5, "reference", seed=2, iterations=2), root / "m3f",
                settings=TINY, log=lambda _: None)
    marl = train(RunSpec("ippo", "potential", 3, "reference", seed=2, iterations=1), root / "marl",
                 settings=PPOSettings(train_batch_size=1000, minibatch_size=500, num_epochs=1,
                                      num_envs_per_env_runner=10), log=lambda _: None)
    hmf = train(RunSpec("hmf", "formation", 3, "reference", seed=2, iterations=1), root / "hmf",
                settings=HMFSettings(train_batch_size=640, num_envs_per_env_runner=10, learning_starts=100, hidden=32),
                log=lambda _: None)
    return {"m3f": checkpoints(m3f)[-1][1], "marl": checkpoints(marl)[-1][1], "hmf": checkpoints(hmf)[-1][1],
            "root": root}


def test_m3fc_export_evaluates_as_the_checkpoint(runs) -> None:
    dest = export_policy(runs["m3f"], runs["root"] / "m3f-export")
    tensors = torch.load(dest / POLICY_FILE, weights_only=True)  # no code runs on load
    assert tensors and all(k.startswith("default_policy/") for k in tensors)
    assert not any("critic" in k or k.startswith("default_policy/vf.") for k in tensors)  # actor only
    meta = json.loads((dest / POLICY_META).read_text())
    assert (meta["view"], meta["problem"], meta["num_minors"], meta["variant"]) == ("m3fc", "beach-bar", 5, "reference")
    exported, original = load_policy(dest), load_policy(runs["m3f"])
    a = evaluate(exported, num_minors=[5, 8], episodes=6, seed=3)
    b = evaluate(original, num_minors=[5, 8], episodes=6, seed=3)
    assert [(r.num_minors, r.mean, r.std) for r in a] == [(r.num_minors, r.mean, r.std) for r in b]
    de = evaluate(exported, num_minors=[4], episodes=4, execution="decentralized", seed=1)
    assert de[0].execution == "decentralized" and de[0].episodes == 4
    # the CLI takes the export where it takes a checkpoint
    out = subprocess.run([sys.executable, "-m", "m3fmarl", "evaluate", "--checkpoint", str(dest), "--num-minors", "5",
                          "--episodes", "6", "--seed", "3", "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["results"][0]["mean"] == pytest.approx(a[0].mean)


def test_marl_export_evaluates_as_the_checkpoint(runs) -> None:
    dest = export_policy(runs["marl"], runs["root"] / "marl-export")
    assert is_marl_checkpoint(dest)
    exported, original = load_marl_policy(dest), load_marl_policy(runs["marl"])
    assert set(exported.modules) == {"major", "minor"} and exported.algo == "ippo"
    a = evaluate_marl(exported, num_minors=[3, 6], episodes=5, seed=4)
    b = evaluate_marl(original, num_minors=[3, 6], episodes=5, seed=4)
    assert [(r.num_minors, r.mean) for r in a] == [(r.num_minors, r.mean) for r in b]
    with pytest.raises(ValueError, match="not an M3FC policy"):
        load_policy(dest)


def test_hmf_export_keeps_q_loc_and_acts_as_the_checkpoint(runs) -> None:
    """HMF acts greedily on Q_LOC alone: the export keeps those weights (not the attention, Q_GMF
    or target networks) and evaluates exactly as the checkpoint, here at N = 3 and 7."""
    dest = export_policy(runs["hmf"], runs["root"] / "hmf-export")
    tensors = torch.load(dest / POLICY_FILE, weights_only=True)
    assert tensors and all(k.split("/", 1)[1].startswith("nets.q_loc.") for k in tensors)
    exported, original = load_marl_policy(dest), load_marl_policy(runs["hmf"])
    assert set(exported.modules) == {"major", "minor"} and exported.algo == "hmf"
    a = evaluate_marl(exported, num_minors=[3, 7], episodes=5, seed=4)
    b = evaluate_marl(original, num_minors=[3, 7], episodes=5, seed=4)
    assert [(r.num_minors, r.mean) for r in a] == [(r.num_minors, r.mean) for r in b]


def test_broken_exports_are_refused(runs, tmp_path: Path) -> None:
    dest = export_policy(runs["m3f"], tmp_path / "e")
    meta = json.loads((dest / POLICY_META).read_text())
    meta["modules"]["default_policy"]["class"] = "os:system"
    (dest / POLICY_META).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="not one of"):
        load_modules(dest)
    dest = export_policy(runs["m3f"], tmp_path / "f")
    (dest / POLICY_FILE).write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match="cannot read policy.pt"):
        load_policy(dest)


def test_export_command_copies_a_run_compactly_and_refuses_to_overwrite(runs, tmp_path: Path) -> None:
    run_dir = runs["m3f"].parent.parent  # <run>/checkpoints/iter_*
    dest = tmp_path / "committed"

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "m3fmarl", *args], capture_output=True, text=True, timeout=300)

    out = cli("export", str(run_dir), "--out", str(dest))
    assert out.returncode == 0, out.stderr
    assert "(iteration 2)" in out.stdout
    assert {p.name for p in dest.iterdir()} == {"run.json", "config.yaml", "progress.csv", POLICY_FILE, POLICY_META}
    assert (dest / "progress.csv").read_bytes() == (run_dir / "progress.csv").read_bytes()
    a = evaluate(load_policy(dest), num_minors=[5], episodes=4, seed=1)
    b = evaluate(load_policy(runs["m3f"]), num_minors=[5], episodes=4, seed=1)
    assert (a[0].mean, a[0].std) == (b[0].mean, b[0].std)
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    for args, words in (((str(run_dir), "--out", str(dest)), "not an empty directory"),
                        ((str(tmp_path), "--out", str(tmp_path / "x")), "not a run directory"),
                        ((str(run_dir), "--out", str(run_dir / "copy")), "inside the run directory")):
        bad = cli("export", *args)
        assert bad.returncode == 2 and words in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before  # nothing overwritten
    assert not (run_dir / "copy").exists()
