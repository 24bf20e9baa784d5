"""Permutation-invariant DeepSet networks for MF-PPO (spec/experiments.md §4.1).

MF-PPO's actor and critic see the minor population as a *set*: an agent's embedding of it is the
mean over the minors j of a shared network φ applied to (its own features, minor j's features,
the major's features), so the output does not depend on the minors' order and the same weights
run at any N.  Two forms of the embedding are implemented:

* ``pairwise`` — the paper's form, e_i = mean_j φ([own_i, x_j, x0]) for each row i: cost
  rows × N evaluations of φ per forward pass (O(N²) per joint step for the minors' policy);
* ``pooled`` — e = mean_j φ([x_j, x0]) once per population (one per env copy and step), shared by
  every row of that population and concatenated with the row's own features before the head:
  cost N evaluations of φ per population, linear in N.

Rows and populations are separate tensors: ``population`` is ``(G, N, d)`` and ``group`` ``(R,)``
says which population each of the R rows belongs to (rows of the minors of one copy at one step
share a population), so a batch stores each population once, not once per agent.

Networks (spec §4.1): φ, φ_c: two tanh layers of ``hidden`` units; the actor head h_a and the
critic head h_c: two tanh layers of ``hidden`` units and a linear output.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

FORMS = ("pairwise", "pooled")
Form = Literal["pairwise", "pooled"]


def _mlp(sizes: list[int], out: int | None = None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.Tanh()]
    if out is not None:
        layers.append(nn.Linear(sizes[-1], out))
    return nn.Sequential(*layers)


def _split_first_layer(layer: nn.Linear, sizes: tuple[int, ...]) -> list[torch.Tensor]:
    """The weight columns of ``layer`` for each part of its concatenated input (``sizes``)."""
    return list(torch.split(layer.weight, list(sizes), dim=1))


def _pool(h: torch.Tensor, frequencies: torch.Tensor | None) -> torch.Tensor:
    """Mean over the member axis 1 of ``h``, or the ``frequencies``-weighted sum."""
    return h.mean(dim=1) if frequencies is None else (h * frequencies[..., None]).sum(dim=1)


class SetEmbedding(nn.Module):
    """mean_j φ(·) over a population, in the ``pairwise`` or ``pooled`` form (module docstring).

    Args:
        own_dim: features of the row's own agent (used by ``pairwise`` inside φ).
        member_dim: features of one population member (a minor's state).
        context_dim: features shared by the population (the major's state).
        hidden: width of φ's two tanh layers (the embedding's size).
        form: ``pairwise`` or ``pooled``.

    φ's input is the concatenation [(own,) member, context]; its first layer is evaluated as the
    sum of the parts' products (the same function), so the context's part is computed once per
    population, not once per member.
    """

    def __init__(self, own_dim: int, member_dim: int, context_dim: int, hidden: int = 256,
                 form: Form = "pooled") -> None:
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"unknown DeepSet form {form!r}; valid: {', '.join(FORMS)}")
        self.form = form
        self.own_dim, self.member_dim, self.context_dim = own_dim, member_dim, context_dim
        width = member_dim + context_dim + (own_dim if form == "pairwise" else 0)
        self.phi = _mlp([width, hidden, hidden])
        self.size = hidden

    def embed(self, own: torch.Tensor, population: torch.Tensor, context: torch.Tensor,
              group: torch.Tensor, frequencies: torch.Tensor | None = None) -> torch.Tensor:
        """``pooled``: ``(G, hidden)``, one embedding per population; ``pairwise``: ``(R,
        hidden)``, one per row.  Arguments as :meth:`forward`; ``frequencies`` ``(G, M)`` (rows
        summing to 1) replace the plain mean over the M members by a weighted one — a population
        given as its distinct members with their frequencies has the same embedding."""
        first, rest = self.phi[0], self.phi[1:]
        parts = (self.own_dim,) if self.form == "pairwise" else ()
        weights = _split_first_layer(first, parts + (self.member_dim, self.context_dim))
        w_member, w_context = weights[-2], weights[-1]
        shared = context @ w_context.T + first.bias  # (G, hidden): once per population
        members = population @ w_member.T  # (G, N, hidden)
        if self.form == "pooled":
            return _pool(rest(members + shared[:, None, :]), frequencies)
        pre = members[group] + (own @ weights[0].T + shared[group])[:, None, :]  # (R, N, hidden)
        return _pool(rest(pre), None if frequencies is None else frequencies[group])

    def forward(self, own: torch.Tensor, population: torch.Tensor, context: torch.Tensor,
                group: torch.Tensor) -> torch.Tensor:
        """``own`` (R, own_dim), ``population`` (G, N, member_dim), ``context`` (G, context_dim),
        ``group`` (R,) long in [0, G) → (R, hidden)."""
        e = self.embed(own, population, context, group)
        return e[group] if self.form == "pooled" else e


class DeepSetActorCritic(nn.Module):
    """MF-PPO's actor and critic for one policy (the major's, or the one shared by the minors).

    actor:  h_a([own, context, e_a])  with e_a = SetEmbedding_a(own, population, context)
    critic: h_c([own, context, e_c])  with e_c = SetEmbedding_c(own, population, context)

    ``own`` are the row's own features (a minor's state; zeros for the major), ``context`` the
    major's state of the row's population, ``population`` the minors' states.  Mean pooling makes
    both outputs invariant to the order of the population and defined at any N.  The heads' first
    layer is evaluated part by part (the same function as on the concatenation), so the parts a
    population shares (context, and the pooled embedding) are multiplied once per population, not
    once per row: at N = 20 the minors' heads cost about half as much.
    """

    def __init__(self, own_dim: int, member_dim: int, context_dim: int, action_outputs: int, *,
                 hidden: int = 256, form: Form = "pooled") -> None:
        super().__init__()
        self.actor_set = SetEmbedding(own_dim, member_dim, context_dim, hidden, form)
        self.critic_set = SetEmbedding(own_dim, member_dim, context_dim, hidden, form)
        head_in = own_dim + context_dim + hidden
        self.actor_head = _mlp([head_in, hidden, hidden], action_outputs)
        self.critic_head = _mlp([head_in, hidden, hidden], 1)
        self._sizes = (own_dim, context_dim, hidden)

    def _head(self, head: nn.Sequential, embedding: SetEmbedding, own: torch.Tensor, population: torch.Tensor,
              context: torch.Tensor, group: torch.Tensor, frequencies: torch.Tensor | None = None) -> torch.Tensor:
        e = embedding.embed(own, population, context, group, frequencies)
        first = head[0]
        w_own, w_context, w_e = _split_first_layer(first, self._sizes)
        shared = context @ w_context.T + first.bias  # (G, hidden)
        if embedding.form == "pooled":
            pre = own @ w_own.T + (shared + e @ w_e.T)[group]
        else:
            pre = own @ w_own.T + shared[group] + e @ w_e.T
        return head[1:](pre)

    def action_inputs(self, own: torch.Tensor, population: torch.Tensor, context: torch.Tensor,
                      group: torch.Tensor, frequencies: torch.Tensor | None = None) -> torch.Tensor:
        """(R, action_outputs): the action distribution's inputs (means and log-stds, or logits);
        ``frequencies`` as in :meth:`SetEmbedding.embed`."""
        return self._head(self.actor_head, self.actor_set, own, population, context, group, frequencies)

    def value(self, own: torch.Tensor, population: torch.Tensor, context: torch.Tensor,
              group: torch.Tensor, frequencies: torch.Tensor | None = None) -> torch.Tensor:
        """(R,): V of each row."""
        return self._head(self.critic_head, self.critic_set, own, population, context, group,
                          frequencies).squeeze(-1)
