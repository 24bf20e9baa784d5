"""HMF's building blocks (marl_baselines/hmf.py, spec §4.2): grouping, attention, TD targets, and
the problems' discrete action grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from m3fmarl.problems import make_problem
from marl_baselines.hmf import (
    GroupAttention,
    bin_groups,
    group_targets,
    group_values,
    ipc_groups,
    top_target,
)

from .conftest import PROBLEM_NAMES


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 3), n=st.integers(1, 12), m=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_attention_weights_sum_to_one_per_group_and_ignore_member_order(b, n, m, seed):
    m = min(m, n)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, 5, generator=g, dtype=torch.float64)
    groups = torch.randint(0, m, (b, n), generator=g)
    torch.manual_seed(seed)
    att = GroupAttention(5, key_dim=8).double()
    with torch.no_grad():
        att.query.normal_()
        lam, mu, sizes = att(x, groups, m)
    assert (lam >= 0).all()
    for c in range(b):
        for i in range(m):
            members = groups[c] == i
            assert sizes[c, i] == members.sum()
            if members.any():
                torch.testing.assert_close(lam[c, members].sum(), torch.tensor(1.0, dtype=torch.float64))
                torch.testing.assert_close(mu[c, i], (lam[c, members, None] * x[c, members]).sum(0))
            else:
                assert torch.all(mu[c, i] == 0)
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    with torch.no_grad():
        lam_p, mu_p, sizes_p = att(x[:, perm], groups[:, perm], m)
    torch.testing.assert_close(lam_p, lam[:, perm])
    torch.testing.assert_close(mu_p, mu)
    assert torch.equal(sizes_p, sizes)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 30), m=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_ipc_puts_every_minor_in_exactly_one_group(n, m, seed):
    m = min(m, n)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3, n, 4))
    groups = ipc_groups(x, m, np.random.default_rng(seed))
    assert groups.shape == (3, n) and groups.dtype == np.int64
    assert groups.min() >= 0 and groups.max() < m
    # distinct points: no group is empty (the farthest-point centres are members)
    for c in range(3):
        assert len(np.unique(groups[c])) == m


def test_ipc_separates_clusters_and_is_reproducible():
    rng = np.random.default_rng(0)
    left = rng.normal(-3.0, 0.3, size=(1, 10, 2))
    right = rng.normal(3.0, 0.3, size=(1, 7, 2))
    x = np.concatenate([left, right], axis=1)
    groups = ipc_groups(x, 2, np.random.default_rng(5))
    assert len(set(groups[0, :10])) == 1 and len(set(groups[0, 10:])) == 1 and groups[0, 0] != groups[0, 10]
    assert np.array_equal(groups, ipc_groups(x, 2, np.random.default_rng(5)))


def test_bins_split_the_histogram_cells_into_contiguous_ranges():
    cells = np.array([[0, 24, 12, 5, 13]])
    assert bin_groups(cells, 25, 2).tolist() == [[0, 1, 0, 0, 1]]
    assert bin_groups(cells, 25, 1).tolist() == [[0, 0, 0, 0, 0]]
    problem = make_problem("beach-bar", 6, "paper")
    state = problem.reset(4, np.random.default_rng(0))
    g = bin_groups(problem.minor_cells(state), problem.num_cells, 4)
    assert g.shape == (4, 6) and g.min() >= 0 and g.max() < 4


@pytest.mark.parametrize(("call", "message"), [
    (lambda: ipc_groups(np.zeros((1, 3, 2)), 4, np.random.default_rng(0)),
     "num_groups (4) must not exceed the number of minors N = 3"),
    (lambda: ipc_groups(np.zeros((1, 3, 2)), 0, np.random.default_rng(0)), "num_groups must be an integer >= 1, got 0"),
    (lambda: bin_groups(np.zeros((1, 3), dtype=int), 25, 5), "num_groups (5) must not exceed"),
    (lambda: bin_groups(np.full((1, 3), 25), 25, 2), "cells must lie in [0, 25)"),
])
def test_bad_grouping_input_is_one_line(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert message in str(err.value) and "\n" not in str(err.value)


def test_td_targets_equal_the_papers_formulas_on_a_hand_computed_case():
    """One copy, N = 3 minors in m = 2 groups: minors 0, 2 in group 0, minor 1 in group 1."""
    groups = torch.tensor([[0, 1, 0]])
    sizes = torch.tensor([[2.0, 1.0]])
    lam_next = torch.tensor([[0.25, 1.0, 0.75]])
    q_loc_next = torch.tensor([[4.0, -2.0, 8.0]])
    q_gmf_next = torch.tensor([[1.0, 3.0]])
    r, gamma = torch.tensor([-1.5]), 0.9
    alive, ended = torch.tensor([False]), torch.tensor([True])
    # group 0: r + γ (0.25·4 + 0.75·8 + 2·1) = −1.5 + 0.9·9 = 6.6; group 1: −1.5 + 0.9·(−2 + 6) = 2.1
    y = group_targets(r, alive, gamma, lam_next, q_loc_next, q_gmf_next, groups, sizes)
    torch.testing.assert_close(y, torch.tensor([[6.6, 2.1]]))
    # literal sums: r^(i) = r · |group i| → −3 + 8.1, −1.5 + 3.6
    y_sum = group_targets(r, alive, gamma, lam_next, q_loc_next, q_gmf_next, groups, sizes, reward_mode="sum")
    torch.testing.assert_close(y_sum, torch.tensor([[5.1, 2.1]]))
    torch.testing.assert_close(group_targets(r, ended, gamma, lam_next, q_loc_next, q_gmf_next, groups, sizes),
                               torch.tensor([[-1.5, -1.5]]))
    # top level: r + γ (1 + 3) = 2.1; sums: 3·r + γ·4 = −0.9
    torch.testing.assert_close(top_target(r, alive, gamma, q_gmf_next, sizes), torch.tensor([2.1]))
    torch.testing.assert_close(top_target(r, alive, gamma, q_gmf_next, sizes, reward_mode="sum"), torch.tensor([-0.9]))
    torch.testing.assert_close(top_target(r, ended, gamma, q_gmf_next, sizes), torch.tensor([-1.5]))
    # an empty group has no target and no bootstrap
    empty = torch.tensor([[3.0, 0.0]])
    torch.testing.assert_close(group_targets(r, alive, gamma, lam_next, q_loc_next, q_gmf_next,
                                             torch.zeros_like(groups), empty)[0, 1], torch.tensor(0.0))
    torch.testing.assert_close(top_target(r, alive, gamma, q_gmf_next, empty), torch.tensor([-1.5 + 0.9]))
    torch.testing.assert_close(group_values(lam_next, q_loc_next, q_gmf_next, groups), torch.tensor([[9.0, 4.0]]))
    with pytest.raises(ValueError, match="unknown reward mode 'mean'; valid: team, sum"):
        top_target(r, alive, gamma, q_gmf_next, sizes, reward_mode="mean")


@pytest.mark.parametrize("problem", PROBLEM_NAMES)
def test_action_grids_discretise_each_agents_velocity(problem):
    p = make_problem(problem, 4, "paper")
    grid = p.agent_action_grid()
    if p.discrete:
        assert grid is None
        return
    d = p.minor_action_dim
    assert grid.shape == ((5, 1) if d == 1 else (9, 2))
    assert np.all(np.abs(grid) <= 1.0) and len(np.unique(grid, axis=0)) == len(grid)
    assert any(np.all(row == 0) for row in grid)  # standing still is an action


def _batch(b: int = 16, n: int = 6, d: int = 4, k: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"obs": torch.randn(b, n, d, generator=g), "next_obs": torch.randn(b, n, d, generator=g),
            "actions": torch.randint(0, k, (b, n), generator=g), "reward": torch.randn(b, generator=g),
            "done": torch.rand(b, generator=g) < 0.2, "groups": torch.randint(0, 2, (b, n), generator=g)}


def test_hmf_losses_train_every_network_and_fit_a_fixed_batch():
    import copy

    from marl_baselines.hmf import HMFNetworks, hmf_losses, soft_update

    torch.manual_seed(0)
    online = HMFNetworks(4, 3, hidden=32, key_dim=8)
    with torch.no_grad():
        online.attention.query.normal_()
    target = copy.deepcopy(online)
    batch = _batch()
    losses = hmf_losses(online, target, batch, 2, 0.9, alpha=0.1)
    assert set(losses) == {"group", "top", "regulariser", "total"} and losses["regulariser"] > 0
    losses["total"].backward()
    for name, p in online.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in target.parameters())
    opt = torch.optim.Adam(online.parameters(), lr=3e-3)
    first = hmf_losses(online, target, batch, 2, 0.9)["total"].item()
    for _ in range(200):  # targets fixed (no soft update): plain regression
        opt.zero_grad()
        hmf_losses(online, target, batch, 2, 0.9)["total"].backward()
        opt.step()
    assert hmf_losses(online, target, batch, 2, 0.9)["total"].item() < 0.1 * first
    before = [p.clone() for p in target.parameters()]
    soft_update(target, online, 0.01)
    for b0, t, o in zip(before, target.parameters(), online.parameters(), strict=True):
        torch.testing.assert_close(t, 0.99 * b0 + 0.01 * o)


# --- acting, sampling, replay rows ---------------------------------------------------------------


def _hmf_modules(problem: str, n: int, **overrides):
    import dataclasses

    from m3fmarl.config import load_algorithm
    from m3fmarl.multiagent import MultiAgentCore
    from marl_baselines.hmf import hmf_module_specs

    core = MultiAgentCore(problem, n, "reference")
    settings = dataclasses.replace(load_algorithm("hmf"), hidden=16, key_dim=4, **overrides)
    torch.manual_seed(0)
    return core, {mid: spec.build() for mid, spec in hmf_module_specs(core, settings).items()}


@pytest.mark.parametrize("problem", ["beach-bar", "formation", "potential"])
def test_epsilon_greedy_is_greedy_at_zero_uniform_at_one_and_its_logp_normalised(problem):
    from marl_baselines.hmf import EpsilonGreedy

    _, modules = _hmf_modules(problem, 3)
    module = modules["minor"]
    grid = module.get_exploration_action_dist_cls().grid
    k = 5 if grid is None else grid.shape[0]
    q = torch.randn(400, k, generator=torch.Generator().manual_seed(1))
    greedy = EpsilonGreedy(q, 0.0, grid).sample()
    assert torch.equal(EpsilonGreedy(q, 0.0, grid).indices(greedy), q.argmax(-1))
    torch.manual_seed(2)
    counts = np.bincount(EpsilonGreedy(q[:1].expand(20_000, k), 1.0, grid).indices(
        EpsilonGreedy(q[:1].expand(20_000, k), 1.0, grid).sample()).numpy(), minlength=k)
    np.testing.assert_allclose(counts / 20_000, 1.0 / k, atol=0.02)
    for eps in (0.0, 0.3, 1.0):
        dist = EpsilonGreedy(q[:3], eps, grid)
        every = torch.arange(k) if grid is None else grid
        probs = torch.stack([dist.logp(every[i].expand((3,) + every[i].shape)).exp() for i in range(k)], 1)
        torch.testing.assert_close(probs.sum(1), torch.ones(3))
    # a module loaded for evaluation acts greedily: ε only while the training loop sets it
    assert module.epsilon == 0.0 and module.get_inference_action_dist_cls().epsilon == 0.0


@pytest.mark.parametrize("grouping", ["ipc", "bins"])
@pytest.mark.parametrize("problem", PROBLEM_NAMES)
def test_sampler_groups_minors_per_episode_and_replay_rows_rebuild_its_observations(problem, grouping):
    from m3fmarl.multiagent.core import MAJOR_ID
    from marl_baselines.hmf import GROUPS, HMFSampler, policy_rows

    core, modules = _hmf_modules(problem, 6)
    sampler = HMFSampler(core, 3, seed=0, grouping=grouping, num_groups=2)
    for m in modules.values():
        m.epsilon = 0.5
    horizon = core.horizon
    episode_groups = sampler.minor_groups.copy()
    for t in range(horizon + 2):
        obs = sampler.obs.copy()
        rows, stats = sampler.collect(modules, 1)
        assert stats.env_steps == 3
        per = policy_rows(core, rows, list(modules))
        np.testing.assert_array_equal(per["minor"]["obs"], obs[:, core.minor_offset:])
        if core.has_major:
            np.testing.assert_array_equal(per[MAJOR_ID]["obs"], obs[:, :1])
            assert (per[MAJOR_ID][GROUPS] == 0).all()
        groups = rows[GROUPS]
        assert groups.shape == (3, 6) and groups.min() >= 0 and groups.max() < 2  # each minor in one group
        if t < horizon:
            np.testing.assert_array_equal(groups, episode_groups)  # fixed for the episode
            if t < horizon - 1:
                np.testing.assert_array_equal(per["minor"]["new_obs"], sampler.obs[:, core.minor_offset:])
    assert len(stats.episode_returns) == 0 and len(sampler.recent_returns) == 3


def test_bad_hmf_input_is_one_line_and_exits_2(tmp_path, capsys):
    from m3fmarl.cli import main

    assert main(["train", "--algo", "hmf", "--problem", "beach-bar", "--num-minors", "1", "--iterations", "1",
                 "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "num_groups (2) must not exceed" in err, err
    cfg = tmp_path / "hmf.yaml"
    cfg.write_text((Path(__file__).parents[1] / "configs/algorithms/hmf.yaml").read_text().replace(
        "grouping: ipc", "grouping: kmeans"))
    assert main(["train", "--algo", "hmf", "--problem", "beach-bar", "--num-minors", "5", "--iterations", "1",
                 "--config", str(cfg), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "grouping must be ipc or bins" in err, err
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").rglob("checkpoints/*"))


# --- training (slow: real RLlib) -----------------------------------------------------------------

TINY = dict(lr=1e-3, train_batch_size=320, num_envs_per_env_runner=10, rollout_steps=4, minibatch_size=32,
            learning_starts=100, hidden=32, key_dim=8)


@pytest.mark.slow
def test_learner_loss_is_the_two_level_formula_and_targets_follow_softly(ray_session):
    """One learner update on replayed rows: its losses equal :func:`group_loss` per policy plus
    :func:`top_loss` over all groups, computed here from the same networks; afterwards every
    target weight is (1 − τ)·before + τ·online."""
    import dataclasses

    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    from m3fmarl.config import load_algorithm
    from marl_baselines.hmf import group_loss, hmf_config, policy_rows, population_terms, top_loss

    settings = dataclasses.replace(load_algorithm("hmf"), **TINY, alpha=0.1, group_kl_coeff=0.2)
    algo = hmf_config("formation", 4, "reference", seed=0, settings=settings).build_algo()
    try:
        learner = algo.learner_group._learner
        modules = {mid: learner.module[mid].unwrapped() for mid in learner.module.keys()}
        rows, _ = algo._sampler.collect(modules, 8)
        per = policy_rows(algo._sampler.core, rows, list(modules))
        tensors = {mid: {k: torch.as_tensor(v) for k, v in cols.items()} for mid, cols in per.items()}
        with torch.no_grad():
            fwd = learner.module.forward_train(tensors)
            losses = learner.compute_losses(fwd_out=fwd, batch=tensors)
            terms = {mid: population_terms(m.nets, m._target_nets, tensors[mid]["obs"], tensors[mid]["actions"],
                                           tensors[mid]["new_obs"], tensors[mid]["groups"], m.num_groups)
                     for mid, m in modules.items()}
            r, done = tensors["minor"]["rewards"], tensors["minor"]["terminateds"]
            expected = sum(group_loss(terms[mid], r, done, 0.99, alpha=0.1, kl_coeff=0.2)["total"] for mid in terms)
            expected = expected + top_loss([terms["major"], terms["minor"]], r, done, 0.99)
        torch.testing.assert_close(sum(losses.values()), expected)
        assert set(losses) == {"major", "minor"}
        batch = MultiAgentBatch({mid: SampleBatch(cols) for mid, cols in per.items()}, env_steps=len(rows["rewards"]))
        online_before = {mid: {k: p.clone() for k, p in m.nets.named_parameters()} for mid, m in modules.items()}
        for _ in range(2):  # the query starts at 0 (λ uniform: the plain mean): keys learn from step 2
            before = {mid: [p.clone() for p in m._target_nets.parameters()] for mid, m in modules.items()}
            learner.update(batch=batch, timesteps={"num_env_steps_sampled_lifetime": 80}, num_epochs=1)
            for mid, m in modules.items():
                for b0, t, o in zip(before[mid], m._target_nets.parameters(), m.nets.parameters(), strict=True):
                    torch.testing.assert_close(t, 0.99 * b0 + 0.01 * o)
        for mid, m in modules.items():
            for k, p in m.nets.named_parameters():
                # every network learned; the major's attention has one member (λ = 1, no gradient)
                assert torch.equal(p, online_before[mid][k]) == (mid == "major" and k.startswith("attention")), k
    finally:
        algo.stop()


@pytest.mark.slow
def test_same_seed_same_run_and_resume_continues_it_exactly(tmp_path, ray_session):
    """The replay buffer, the ε step count, the groups of running episodes and the optimiser are
    in the checkpoint: a run cut after iteration 2 and resumed repeats iteration 3 exactly."""
    import dataclasses

    from m3fmarl.config import load_algorithm
    from m3fmarl.train import RunSpec

    from .conftest import check_same_seed_and_exact_resume

    rows = check_same_seed_and_exact_resume(RunSpec("hmf", "beach-bar", 4, "reference", seed=2, iterations=3),
                                            dataclasses.replace(load_algorithm("hmf"), **TINY), tmp_path)
    assert all(r["vf_loss"] not in ("", "nan") for r in rows)  # it learned in every iteration


@pytest.mark.slow
def test_hmf_learns_beach_bar(tmp_path, ray_session):
    """Greedy on Q_LOC after 12 iterations of 2 048 joint steps (Beach bar, N = 5, reference),
    beyond the CIs of ξ = 0 and of uniform actions (300 episodes each).  Measured with the
    defaults at 20 iterations: −440.8 ± 2.7 against ξ = 0 −681.9 ± 3.4 and uniform −693.2 ± 1.8
    (IPPO's and MF-PPO's learning tests reach ≈ −630 in 45 iterations); the paper's
    observation-action mean field (``gmf_actions: true``) −725.3 ± 7.9, worse than uniform
    (docs/hmf.md)."""
    import dataclasses

    from m3fmarl.config import load_algorithm
    from m3fmarl.train import RunSpec, train

    from .conftest import check_marl_beats_fixed_policies

    settings = dataclasses.replace(load_algorithm("hmf"), train_batch_size=2048, learning_starts=512,
                                   exploration_fraction=0.4)
    run = train(RunSpec("hmf", "beach-bar", 5, "reference", seed=0, iterations=12), tmp_path / "run",
                settings=settings, checkpoint_every=12, log=lambda line: None)
    check_marl_beats_fixed_policies("HMF", run, "beach-bar", 5)
