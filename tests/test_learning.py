"""Learning tests: M3FPPO learns on a small problem within a CI budget; M3FA2C trains and learns its critic.

Both go through the real pipeline: ``m3fmarl.train.train`` into ``tmp_path`` (RLlib 2.60, run
directory, checkpoint), then ``load_policy`` + ``evaluate`` on the final checkpoint (CE,
stochastic actions), against the fixed policies of ``m3fmarl.rollout.episode_returns``.

Problem choice (measured on 2 cores, Potential, ``reference``, N = 10).  Potential is the cheapest
problem to learn on: T = 100, a 9-dim observation and a 15-dim action (7 bins × (mean, std) + an
inert major action), and a large gap between the baselines (≈ −100) and a trained policy (paper
Table 2: −31 at N = 20).  Beach bar (126-dim action) showed no trend at all in 240 k steps with
lr 1e-3 and Foraging (788-output head) is twice as slow per step and only edged past uniform in
60 k steps; 2G and Formation have slow (optimal-transport) simulators.

Settings.  The paper's settings (lr 5e-5, 24 000 steps × 8 epochs of 4 000) are made for 5 000
iterations.  Here: lr 3e-3, train batch 2 000 = 20 copies × 100 steps (20 whole episodes per
iteration), minibatch 500 reshuffled every epoch, 8 epochs (32 Adam steps per iteration), 80
iterations = 160 k env steps; everything else is the reference default (KL loss with β₀ 0.2 / target 0.03, clip 0.2,
RLlib-1.8 value clip 10, γ 0.99, λ 1).  Training takes ≈ 45–55 s; the whole module took 65 s
(`pytest tests/test_learning.py`, with another process busy on the 2 cores, load average ≈ 2).
With 0 env runners a run is deterministic given its seed, so the outcome does not depend on load.

Measured (train seed → evaluated final policy, 1 000 episodes, evaluation seed 1; zero-action
ξ = 0: −99.88 ± 3.46, uniform: −98.48 ± 3.36, 1 000 episodes each, seed 1):

    train seed 0 (the test): −73.58 ± 2.55   (margins over the CIs: 20.3 vs zero, 19.0 vs uniform)
    train seed 1:            −71.92 ± 2.54   (22.0, 20.7)
    train seed 2:            −71.46 ± 2.57   (22.4, 21.1)
    train seed 3:            −77.37 ± 2.43   (16.6, 15.3)
    train seed 4:            −71.35 ± 2.44   (22.6, 21.3)

With the reference's contiguous minibatches (``minibatching: reference``, the reference
variant's default; 5 whole episodes per minibatch) seed 0 reaches only
−84.07 ± 3.24 (margin 9 over the CIs), so the test reshuffles; with FastTanh (numpy tanh)
and shuffling seed 0 gives −70.95 ± 2.64.

The evaluated return after 20 / 40 / 60 iterations was −90…−98 / −79…−92 / −75…−80 over these
seeds, so the 80 iterations carry a margin of ≥ 15 over the CI bounds.

Beach bar (issue 11, docs/beach-bar-learning.md).  At the paper's settings M3FPPO is flat on
Beach bar for ≈ 400 iterations: its critic starts at V ≈ 0 and the Adam step bounds how fast the
output can travel to the discounted return scale (≈ −320 at γ 0.99), and until it arrives the
advantages are dominated by the critic's error.  The Beach test below therefore trains with
γ = 0.9 (value scale ≈ −32) and lr 1e-3: N = 20, 20 copies × 200 steps = 4 000 steps per
iteration, minibatch 1 000 reshuffled, 8 epochs, 120 iterations (480 k steps, ≈ 1–2 min).
Measured (300 evaluation episodes, seed 1): train seed 0 (the test) −590.4 ± 1.5, seeds 1 / 2
−562.4 ± 1.4 / −576.5 ± 1.6, against ξ = 0 −638.7 ± 2.9 and uniform −649.2 ± 1.3 (margin ≥ 44
beyond the CIs); the seed-0 run with γ = 0.99
(everything else equal) ends at −644.5 ± 1.3 — below ξ = 0, its critic still converging at
iteration 60–80 — which is the failure the issue reported.

M3FA2C: its *return* does not improve reliably within 1–2 minutes, so the test checks what
does: the A2C update learns its critic (value loss of the last fifth of the iterations < 0.5× the
first fifth; measured 0.35 / 0.28 / 0.39 for train seeds 0 / 1 / 2 at these settings, 300
iterations ≈ 20 s each; with the critic's gradient switched off, ``vf_loss_coeff=0``, seed 0
gives 0.76, as the returns drift), updates the actor's weights and leaves an evaluable checkpoint.  Tried for
the return on Potential N = 10 (train seeds 0–2, final vs iteration-1 policy, 1 000 evaluation
episodes): lr 1e-3 / 3e-3 / 1e-2, batches of 400 (20 copies × fragments of 20), 2 000 and 4 000,
up to 6 000 iterations (2.4 M steps), grad clip 40 and none, γ 0.9, entropy 0.01, advantage
standardisation.  The best runs gained 13–17 (lr 1e-2, seed 0), but other seeds of the same
settings stayed flat or got worse by up to 16 (the policy's spread grows, entropy 21 → 35), and
lr 1e-3 moved by less than the noise.  PPO with one epoch of one minibatch (the same single step
per batch, with clipping and standardised advantages) does not learn in 600 × 400 steps either:
what makes M3FPPO learn in this budget is its 32 Adam steps per batch.  One gradient step per
batch needs far more updates than a CI budget; docs/benchmarks.md ("M3FA2C learning") records
the long run at the paper's settings that shows the return over 10⁷–10⁸ steps.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from m3fmarl.config import A2CSettings, PPOSettings
from m3fmarl.evaluate import evaluate, load_policy
from m3fmarl.rollout import ReturnStats, episode_returns
from m3fmarl.train import RunSpec, checkpoints, train

from .conftest import progress_rows

pytestmark = pytest.mark.slow

PROBLEM, N, VARIANT = "potential", 10, "reference"
TRAIN_SEED = 0
EVAL_SEED = 1
EPISODES = 1_000  # CI half-width ≈ 2.5–3.5 on Potential at N = 10 (return std ≈ 40–55)
PPO_ITERATIONS = 80
PPO_FAST = PPOSettings(lr=3e-3, train_batch_size=2_000, minibatch_size=500, num_epochs=8,
                       num_envs_per_env_runner=20, minibatching="shuffled")
BEACH_N, BEACH_ITERATIONS, BEACH_EPISODES = 20, 120, 300
BEACH_FAST = PPOSettings(gamma=0.9, lr=1e-3, train_batch_size=4_000, minibatch_size=1_000, num_epochs=8,
                         num_envs_per_env_runner=20, minibatching="shuffled")
A2C_ITERATIONS = 300
A2C_FAST = A2CSettings(lr=1e-3, train_batch_size=400, rollout_fragment_length=20, num_envs_per_env_runner=20)
A2C_VF_RATIO = 0.5  # value loss, last fifth / first fifth (measured 0.28–0.39; 0.76 without critic gradient)


@pytest.fixture(scope="module", autouse=True)
def _ray(ray_session):
    yield


def test_m3fppo_beats_zero_and_uniform_policies(tmp_path: Path) -> None:
    spec = RunSpec("m3fppo", PROBLEM, N, VARIANT, seed=TRAIN_SEED, iterations=PPO_ITERATIONS)
    run = train(spec, tmp_path / "run", settings=PPO_FAST, checkpoint_every=PPO_ITERATIONS, log=lambda _: None)
    (last, path), = checkpoints(run)
    assert last == PPO_ITERATIONS

    policy = load_policy(path)
    assert (policy.problem, policy.variant, policy.num_minors) == (PROBLEM, VARIANT, N)
    (trained,) = evaluate(policy, episodes=EPISODES, execution="centralized", seed=EVAL_SEED)
    assert trained.episodes == EPISODES and math.isfinite(trained.mean)

    _beats_fixed_policies(PROBLEM, N, trained, EPISODES)


def _beats_fixed_policies(problem: str, n: int, trained: Any, episodes: int) -> None:
    baselines = {
        name: ReturnStats.of(episode_returns(problem, n, episodes, variant=VARIANT, policy=name, seed=EVAL_SEED))
        for name in ("zero", "uniform")
    }
    report = f"trained {trained.mean:.2f} ± {trained.ci95:.2f}; " + "; ".join(
        f"{name} {b.mean:.2f} ± {b.ci95:.2f}" for name, b in baselines.items())
    print(report)
    for name, b in baselines.items():
        assert trained.mean - trained.ci95 > b.mean + b.ci95, f"M3FPPO does not beat {name}: {report}"


def test_m3fppo_learns_beach_bar_once_its_critic_has_the_return_scale(tmp_path: Path) -> None:
    spec = RunSpec("m3fppo", "beach-bar", BEACH_N, VARIANT, seed=TRAIN_SEED, iterations=BEACH_ITERATIONS)
    run = train(spec, tmp_path / "run", settings=BEACH_FAST, checkpoint_every=BEACH_ITERATIONS, log=lambda _: None)
    (_, path), = checkpoints(run)
    (trained,) = evaluate(load_policy(path), episodes=BEACH_EPISODES, execution="centralized", seed=EVAL_SEED)
    _beats_fixed_policies("beach-bar", BEACH_N, trained, BEACH_EPISODES)


def test_m3fa2c_trains_and_learns_its_critic(tmp_path: Path) -> None:
    """M3FA2C trains, its critic learns, its weights change and it leaves an evaluable checkpoint
    (its return does not improve reliably within this budget: see the module docstring)."""
    spec = RunSpec("m3fa2c", PROBLEM, N, VARIANT, seed=TRAIN_SEED, iterations=A2C_ITERATIONS)
    every = A2C_ITERATIONS // 3
    run = train(spec, tmp_path / "run", settings=A2C_FAST, checkpoint_every=every, keep_checkpoints=3,
                log=lambda _: None)
    progress = progress_rows(run)
    assert [int(r["iteration"]) for r in progress] == list(range(1, A2C_ITERATIONS + 1))
    assert [float(r["env_steps"]) for r in progress] == [400.0 * i for i in range(1, A2C_ITERATIONS + 1)]
    for r in progress:
        assert math.isfinite(float(r["vf_loss"])) and math.isfinite(float(r["policy_loss"])), r
    fifth = A2C_ITERATIONS // 5
    vf = np.array([float(r["vf_loss"]) for r in progress])
    ratio = vf[-fifth:].mean() / vf[:fifth].mean()
    print(f"M3FA2C value loss: first fifth {vf[:fifth].mean():.0f}, last fifth {vf[-fifth:].mean():.0f}, "
          f"ratio {ratio:.2f}")
    assert ratio < A2C_VF_RATIO, f"M3FA2C's critic did not learn: value-loss ratio {ratio:.2f}"

    done = checkpoints(run)
    assert [i for i, _ in done] == [every, 2 * every, 3 * every]
    first, final = load_policy(done[0][1]), load_policy(done[-1][1])
    w_first = torch.cat([p.detach().flatten() for p in first.module.parameters()])
    w_final = torch.cat([p.detach().flatten() for p in final.module.parameters()])
    assert w_first.shape == w_final.shape and torch.isfinite(w_final).all()
    assert not torch.equal(w_first, w_final), "M3FA2C did not update its weights"

    (res,) = evaluate(final, episodes=100, seed=EVAL_SEED)
    assert res.episodes == 100 and np.isfinite(res.returns).all()
