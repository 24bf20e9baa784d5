"""MF-PPO's DeepSet actor-critic (marl_baselines/deepset.py): permutation invariance of the
population, equivariance over the minors' rows, any N with the same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from marl_baselines.deepset import FORMS, DeepSetActorCritic, SetEmbedding

OWN, MEMBER, CONTEXT, OUT = 3, 3, 2, 4


def _net(form: str, seed: int = 0) -> DeepSetActorCritic:
    torch.manual_seed(seed)
    return DeepSetActorCritic(OWN, MEMBER, CONTEXT, OUT, hidden=16, form=form).double()


def _minors(groups: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows = every minor of every population; a minor's own features are its member features."""
    g = torch.Generator().manual_seed(seed)
    population = torch.randn(groups, n, MEMBER, generator=g, dtype=torch.float64)
    context = torch.randn(groups, CONTEXT, generator=g, dtype=torch.float64)
    own = population.reshape(groups * n, MEMBER)
    group = torch.arange(groups).repeat_interleave(n)
    return own, population, context, group


@pytest.mark.parametrize("form", FORMS)
@given(n=st.integers(1, 12), seed=st.integers(0, 10_000))
def test_permuting_the_minors_permutes_actions_and_keeps_each_minors_value(form, n, seed):
    net = _net(form)
    own, pop, ctx, group = _minors(2, n, seed)
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    pop_p = pop[:, perm]
    own_p = pop_p.reshape(-1, MEMBER)
    with torch.no_grad():
        a, v = net.action_inputs(own, pop, ctx, group), net.value(own, pop, ctx, group)
        a_p, v_p = net.action_inputs(own_p, pop_p, ctx, group), net.value(own_p, pop_p, ctx, group)
    rows = (torch.arange(2)[:, None] * n + perm[None, :]).reshape(-1)  # row k of the permuted batch
    torch.testing.assert_close(a_p, a[rows])
    torch.testing.assert_close(v_p, v[rows])


@pytest.mark.parametrize("form", FORMS)
@given(n=st.integers(1, 12), seed=st.integers(0, 10_000))
def test_a_row_does_not_depend_on_the_order_of_its_population(form, n, seed):
    net = _net(form)
    _, pop, ctx, _ = _minors(1, n, seed)
    own = torch.randn(5, OWN, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    group = torch.zeros(5, dtype=torch.long)
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    with torch.no_grad():
        torch.testing.assert_close(net.action_inputs(own, pop[:, perm], ctx, group),
                                   net.action_inputs(own, pop, ctx, group))
        torch.testing.assert_close(net.value(own, pop[:, perm], ctx, group), net.value(own, pop, ctx, group))


@pytest.mark.parametrize("form", FORMS)
def test_the_same_weights_run_at_any_n(form):
    """Mean pooling: N = 5 and N = 50 with one set of weights; a population whose every member
    appears twice has the same embedding as the population itself."""
    net = _net(form)
    with torch.no_grad():
        for n in (5, 50):
            own, pop, ctx, group = _minors(3, n, n)
            a, v = net.action_inputs(own, pop, ctx, group), net.value(own, pop, ctx, group)
            assert a.shape == (3 * n, OUT) and v.shape == (3 * n,)
            assert torch.isfinite(a).all() and torch.isfinite(v).all()
        own, pop, ctx, group = _minors(1, 5, 0)
        doubled = torch.cat([pop, pop], dim=1)
        torch.testing.assert_close(net.value(own, doubled, ctx, group), net.value(own, pop, ctx, group))


def test_pairwise_and_pooled_are_different_functions_and_a_bad_form_is_refused():
    own, pop, ctx, group = _minors(1, 6, 3)
    torch.manual_seed(0)
    pooled = SetEmbedding(OWN, MEMBER, CONTEXT, 16, "pooled").double()
    pairwise = SetEmbedding(OWN, MEMBER, CONTEXT, 16, "pairwise").double()
    with torch.no_grad():
        e_pooled, e_pair = pooled(own, pop, ctx, group), pairwise(own, pop, ctx, group)
    assert torch.allclose(e_pooled, e_pooled[:1].expand_as(e_pooled))  # one embedding per population
    assert not torch.allclose(e_pair, e_pair[:1].expand_as(e_pair))  # depends on the row's own state
    with pytest.raises(ValueError, match="unknown DeepSet form 'sum'; valid: pairwise, pooled"):
        SetEmbedding(OWN, MEMBER, CONTEXT, 16, "sum")


def test_gradients_reach_phi_through_the_mean():
    net = _net("pooled")
    own, pop, ctx, group = _minors(2, 4, 1)
    net.value(own, pop, ctx, group).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.critic_set.parameters())
    assert all(p.grad is None for p in net.actor_set.parameters())


@pytest.mark.parametrize("form", FORMS)
def test_the_factorised_first_layers_equal_the_concatenated_network(form):
    """φ and the heads evaluate their first layer part by part (population-shared parts once per
    population); the result is the network on the concatenated inputs, written out here."""
    net = _net(form, seed=3)
    own, pop, ctx, group = _minors(3, 5, 7)
    own = own + 0.5  # rows' own features differ from the member features

    def embedding(phi, rows):
        members = torch.cat([pop, ctx[:, None, :].expand(-1, pop.shape[1], -1)], dim=-1)
        if form == "pooled":
            return phi(members).mean(dim=1)[group]
        pairs = torch.cat([own[:, None, :].expand(-1, pop.shape[1], -1), members[group]], dim=-1)
        return phi(pairs).mean(dim=1)

    with torch.no_grad():
        a = net.actor_head(torch.cat([own, ctx[group], embedding(net.actor_set.phi, own)], dim=-1))
        v = net.critic_head(torch.cat([own, ctx[group], embedding(net.critic_set.phi, own)], dim=-1)).squeeze(-1)
        torch.testing.assert_close(net.action_inputs(own, pop, ctx, group), a)
        torch.testing.assert_close(net.value(own, pop, ctx, group), v)
