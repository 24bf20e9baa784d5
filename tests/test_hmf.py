"""HMF's building blocks (marl_baselines/hmf.py, spec §4.2): grouping, attention, TD targets, and
the problems' discrete action grids."""

from __future__ import annotations

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
