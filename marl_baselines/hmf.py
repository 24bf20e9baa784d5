"""HMF, hierarchical mean-field Q-learning (Yu, AAAI 2023; spec/experiments.md §4.2; docs/hmf.md):
its building blocks — grouping of the minors, the attention that weighs a group's members, the
two-level TD targets, the networks (Q_LOC, attention, Q_GMF) and their losses with target
networks — and the algorithm built from them (``--algo hmf``): RLlib modules and learner, the
batched ε-greedy sampler with per-episode grouping, RLlib's replay buffer, the training loop.

The algorithm on the major-minor problems (spec §4.2 mapping):

* Policies ``major`` (absent in 2G) and ``minor`` (shared by all minors), each an
  :class:`HMFTorchRLModule` with Q_LOC, the group attention, Q_GMF and their target copies.
  The minors form ``num_groups`` groups, fixed for an episode (grouped at its start, in every
  copy, by :func:`ipc_groups` on their own states or by :func:`bin_groups`); the major is a group
  of its own (λ = 1).  The top level sums Q_GMF over all these groups.
* Actions: each agent picks ε-greedily on its own Q_LOC (evaluation: greedy).  Beach bar's 5
  moves natively; the continuous problems through :meth:`Problem.agent_action_grid` (a
  deviation from the paper's continuous actions, stated with the results).
* Off-policy loop (:class:`HMF`): B copies step ``rollout_steps`` times, the B·rollout_steps joint
  transitions go into RLlib's ``ReplayBuffer`` (per transition the two global states, the joint
  action, the team reward and the groups), then ``training_intensity``·(that many)/
  ``minibatch_size`` gradient steps on uniformly replayed minibatches, each followed by a soft
  target update.  Episodes end only at the horizon (a time limit): targets bootstrap there.

Notation (paper Eqs. 11–14, 17): agent k of group i has x_k = (o_k, one-hot a_k) (the paper;
x_k = o_k with ``gmf_actions`` off, our default: :class:`HMFNetworks` says why); the group's
mean field is μ(x^(i)) = Σ_{k∈i} λ_k x_k with attention weights λ (Σ_{k∈i} λ_k = 1); the group
value is Q_GRP^(i) = Σ_{k∈i} λ_k Q_LOC(x_k) + 2·Q_GMF(μ(x^(i))), the system value
Q_TOT = Σ_i Q_GMF(μ(x^(i))).  Targets (hats: target networks, primes: the next step):

    y^(i) = r^(i) + γ·(1 − done)·[Σ_{k∈i} λ'_k Q̂_LOC(x'_k) + 2·Q̂_GMF(μ'^(i))]
    y     = r     + γ·(1 − done)·Σ_i Q̂_GMF(μ'^(i))

The paper's rewards are sums over agents (r^(i) over the group, r over everyone).  Here every
agent receives the same team reward, so the sums would only scale the targets by group size and
N: ``reward_mode="team"`` (default) uses the team reward r in both, ``"sum"`` the literal sums
(spec §4.2).

Everything is batched over B env copies (or replay rows): members are ``(B, N, ·)`` arrays and a
group index ``(B, N)`` in [0, m) says which group each minor is in; an empty group has no mean
field and contributes nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.core import ALL_MODULES
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.rl_module.apis import TargetNetworkAPI
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    TIMERS,
)
from ray.rllib.utils.replay_buffers import ReplayBuffer
from torch import nn

from m3fmarl.algorithms.batched import BatchedTraining
from m3fmarl.algorithms.m3fppo import apply_overrides, split_settings
from m3fmarl.config import GROUPINGS, REWARD_MODES
from m3fmarl.multiagent.core import MAJOR_ID, MultiAgentCore
from m3fmarl.multiagent.envs import register_rllib_envs
from m3fmarl.problems import canonical_name
from m3fmarl.problems.core import VARIANTS, check_choice, check_num_minors, put_copies
from marl_baselines.ppo import MARL_KEY, multiagent_view
from marl_baselines.sampler import BatchedSampler, SampleStats


def check_grouping(grouping: str, num_groups: int, num_minors: int) -> None:
    """One-line ``ValueError`` for an unknown grouping or a number of groups outside [1, N]."""
    if grouping not in GROUPINGS:
        raise ValueError(f"unknown grouping {grouping!r}; valid: {', '.join(GROUPINGS)}")
    if isinstance(num_groups, bool) or not isinstance(num_groups, (int, np.integer)) or num_groups < 1:
        raise ValueError(f"num_groups must be an integer >= 1, got {num_groups!r}")
    if num_groups > num_minors:
        raise ValueError(f"num_groups ({num_groups}) must not exceed the number of minors N = {num_minors}")


# --- grouping ------------------------------------------------------------------------------------


def ipc_groups(x: NDArray[np.floating], num_groups: int, rng: np.random.Generator, iterations: int = 3,
               ) -> NDArray[np.int64]:
    """The paper's IPC grouping (its §"Dynamic Grouping"), for B copies at once.

    ``x`` ``(B, N, D)``: each minor's features (own observation and action).  A random minor is
    the first centre; each further centre is the minor farthest (squared Euclidean) from the
    centres chosen so far; every minor joins its nearest centre; then ``iterations`` rounds of
    "join the nearest group mean" (Eq. 17); a round that would empty a group is not taken.
    Returns ``(B, N)`` group indices in [0, m); a group is empty only when a copy has fewer than
    m distinct feature vectors.
    """
    x = np.asarray(x, dtype=np.float64)
    b, n, _ = x.shape
    check_grouping("ipc", num_groups, n)
    rows = np.arange(b)
    centres = [x[rows, rng.integers(0, n, size=b)]]  # (B, D) each
    nearest = ((x - centres[0][:, None]) ** 2).sum(-1)  # (B, N) distance to the closest centre
    for _ in range(1, num_groups):
        far = np.argmax(nearest, axis=1)
        centres.append(x[rows, far])
        nearest = np.minimum(nearest, ((x - centres[-1][:, None]) ** 2).sum(-1))
    means = np.stack(centres, axis=1)  # (B, m, D)
    groups = _nearest(x, means)
    for _ in range(iterations):
        counts = _counts(groups, num_groups)
        means = np.where(counts[..., None] > 0, _group_means(x, groups, num_groups, counts), means)
        new = _nearest(x, means)
        # a copy keeps its assignment if the update would empty one of its non-empty groups
        keep = ((_counts(new, num_groups) == 0) & (counts > 0)).any(axis=1)
        groups = np.where(keep[:, None], groups, new)
    return groups


def _nearest(x: NDArray, means: NDArray) -> NDArray[np.int64]:
    d = ((x[:, :, None, :] - means[:, None, :, :]) ** 2).sum(-1)  # (B, N, m)
    return np.argmin(d, axis=2).astype(np.int64)


def _counts(groups: NDArray[np.int64], num_groups: int) -> NDArray[np.int64]:
    b = groups.shape[0]
    flat = (np.arange(b)[:, None] * num_groups + groups).ravel()
    return np.bincount(flat, minlength=b * num_groups).reshape(b, num_groups)


def _group_means(x: NDArray, groups: NDArray[np.int64], num_groups: int, counts: NDArray[np.int64]) -> NDArray:
    b, _, d = x.shape
    flat = (np.arange(b)[:, None] * num_groups + groups).ravel()
    sums = np.zeros((b * num_groups, d))
    np.add.at(sums, flat, x.reshape(-1, d))
    return (sums / np.maximum(counts.reshape(-1, 1), 1)).reshape(b, num_groups, d)


def bin_groups(cells: NDArray[np.integer], num_cells: int, num_groups: int) -> NDArray[np.int64]:
    """Fixed spatial bins: minor in histogram cell c (of ``num_cells``, the problem's
    ``minor_cells``) joins group ⌊c·m / num_cells⌋ (contiguous ranges of cells)."""
    cells = np.asarray(cells)
    check_grouping("bins", num_groups, cells.shape[-1])
    if cells.size and (cells.min() < 0 or cells.max() >= num_cells):
        raise ValueError(f"cells must lie in [0, {num_cells})")
    return (cells.astype(np.int64) * num_groups) // int(num_cells)


# --- attention -------------------------------------------------------------------------------------


def segment_softmax(logits: torch.Tensor, groups: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Softmax of ``logits`` ``(B, N)`` within each (copy, group) of ``groups`` ``(B, N)``."""
    b, n = logits.shape
    flat = (torch.arange(b)[:, None] * num_groups + groups).reshape(-1)
    top = torch.full((b * num_groups,), -math.inf, dtype=logits.dtype)
    top = top.scatter_reduce(0, flat, logits.reshape(-1), reduce="amax", include_self=True)
    e = torch.exp(logits.reshape(-1) - top[flat])
    sums = torch.zeros(b * num_groups, dtype=logits.dtype).index_add(0, flat, e)
    return (e / sums[flat]).reshape(b, n)


def group_sum(values: torch.Tensor, groups: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Σ over each group's members: ``values`` ``(B, N[, D])`` → ``(B, m[, D])``."""
    b, n = groups.shape
    flat = (torch.arange(b)[:, None] * num_groups + groups).reshape(-1)
    rest = values.shape[2:]
    out = torch.zeros((b * num_groups,) + rest, dtype=values.dtype)
    out = out.index_add(0, flat, values.reshape((b * n,) + rest))
    return out.reshape((b, num_groups) + rest)


class GroupAttention(nn.Module):
    """λ and the group mean fields μ: one scaled dot-product attention head with a learned query
    (the group's "supervisor"), keys W·x_k, weights softmax over each group's members.

    ``forward(x (B, N, D), groups (B, N), num_groups)`` → ``(λ (B, N), μ (B, m, D), sizes (B, m))``;
    λ ≥ 0 sums to 1 over each non-empty group; μ of an empty group is 0 (its size says so)."""

    def __init__(self, input_dim: int, key_dim: int = 64) -> None:
        super().__init__()
        self.key = nn.Linear(input_dim, key_dim)
        self.query = nn.Parameter(torch.zeros(key_dim))
        self.scale = 1.0 / math.sqrt(key_dim)

    def forward(self, x: torch.Tensor, groups: torch.Tensor, num_groups: int,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = (self.key(x) @ self.query) * self.scale  # (B, N)
        lam = segment_softmax(logits, groups, num_groups)
        mu = group_sum(lam[..., None] * x, groups, num_groups)
        sizes = group_sum(torch.ones_like(lam), groups, num_groups)
        return lam, mu, sizes


# --- values and TD targets ---------------------------------------------------------------------------


def group_values(lam: torch.Tensor, q_loc: torch.Tensor, q_gmf: torch.Tensor, groups: torch.Tensor,
                 ) -> torch.Tensor:
    """Q_GRP^(i) = Σ_{k∈i} λ_k Q_LOC(x_k) + 2·Q_GMF^(i)  (Eq. 11): ``(B, m)`` from λ, Q_LOC
    ``(B, N)`` and Q_GMF ``(B, m)``."""
    return group_sum(lam * q_loc, groups, q_gmf.shape[1]) + 2.0 * q_gmf


def _rewards(reward: torch.Tensor, sizes: torch.Tensor, reward_mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(group rewards (B, m), total reward (B,)) for the team reward ``reward`` (B,)."""
    if reward_mode not in REWARD_MODES:
        raise ValueError(f"unknown reward mode {reward_mode!r}; valid: {', '.join(REWARD_MODES)}")
    if reward_mode == "team":
        return reward[:, None].expand_as(sizes), reward
    return reward[:, None] * sizes, reward * sizes.sum(1)


def group_targets(reward: torch.Tensor, done: torch.Tensor, gamma: float, lam_next: torch.Tensor,
                  q_loc_next: torch.Tensor, q_gmf_next: torch.Tensor, groups: torch.Tensor, sizes: torch.Tensor,
                  reward_mode: str = "team") -> torch.Tensor:
    """y^(i) (Eq. 12's target), ``(B, m)``: from the team reward ``(B,)``, ``done`` ``(B,)``, the
    next step's λ' ``(B, N)``, Q̂_LOC(x') ``(B, N)`` and Q̂_GMF(μ') ``(B, m)``; ``sizes`` ``(B, m)``
    members per group (empty groups get 0)."""
    r_group, _ = _rewards(reward, sizes, reward_mode)
    boot = group_values(lam_next, q_loc_next, q_gmf_next, groups)
    y = r_group + gamma * (1.0 - done.to(reward.dtype))[:, None] * boot
    return torch.where(sizes > 0, y, torch.zeros_like(y))


def top_target(reward: torch.Tensor, done: torch.Tensor, gamma: float, q_gmf_next: torch.Tensor,
               sizes: torch.Tensor, reward_mode: str = "team") -> torch.Tensor:
    """y (Eq. 14's target), ``(B,)``: r + γ·(1 − done)·Σ_i Q̂_GMF(μ'^(i)) over the non-empty groups."""
    _, r_total = _rewards(reward, sizes, reward_mode)
    boot = torch.where(sizes > 0, q_gmf_next, torch.zeros_like(q_gmf_next)).sum(1)
    return r_total + gamma * (1.0 - done.to(reward.dtype)) * boot


# --- networks and the two-level loss -----------------------------------------------------------------


def _q_mlp(sizes: list[int], out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.Tanh()]
    layers.append(nn.Linear(sizes[-1], out))
    return nn.Sequential(*layers)


class HMFNetworks(nn.Module):
    """One population's HMF networks (spec §4.2): Q_LOC(o_k, ·) over the K actions (shared by
    its agents; acting is greedy or ε-greedy on it), the group attention over the members'
    features x_k and Q_GMF(μ) of a group's mean field μ = Σ λ_k x_k; 2 × ``hidden`` tanh layers.

    ``gmf_actions``: x_k = (o_k, one-hot a_k) as in the paper, or x_k = o_k (the default of our
    settings, ``HMFSettings.gmf_actions``).  With the actions in μ, the only term that sees a
    group's actions at the top level is its Q_GMF, so a fitted top level puts their whole effect
    Δ on the return into Q_GMF, and the group level Σ λ Q_LOC + 2·Q_GMF = Q then needs
    Σ λ Q_LOC to carry −Δ: the local Q-functions that choose the actions learn inverted action
    preferences (measured: docs/hmf.md).  Without actions in μ, Q_GMF is a group's state value and
    the actions' effect can only sit in Q_LOC, with its own sign."""

    def __init__(self, obs_dim: int, num_actions: int, hidden: int = 256, key_dim: int = 64,
                 gmf_actions: bool = True) -> None:
        super().__init__()
        self.num_actions = int(num_actions)
        self.gmf_actions = bool(gmf_actions)
        x_dim = obs_dim + (self.num_actions if self.gmf_actions else 0)
        self.q_loc = _q_mlp([obs_dim, hidden, hidden], self.num_actions)
        self.attention = GroupAttention(x_dim, key_dim)
        self.q_gmf = _q_mlp([x_dim, hidden, hidden], 1)

    def features(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """x_k: ``(B, N, D)``, ``(B, N)`` → ``(B, N, D + K)`` (o_k, one-hot a_k), or o_k."""
        if not self.gmf_actions:
            return obs
        return torch.cat([obs, nn.functional.one_hot(actions, self.num_actions).to(obs.dtype)], dim=-1)

    def evaluate(self, obs: torch.Tensor, actions: torch.Tensor | None, groups: torch.Tensor, num_groups: int,
                 ) -> dict[str, torch.Tensor]:
        """Q_LOC(o_k, a_k) ``(B, N)``, λ ``(B, N)``, μ ``(B, m, ·)``, group sizes and Q_GMF(μ)
        ``(B, m)`` for the taken ``actions`` (None: each agent's greedy action on this Q_LOC),
        and every action's Q_LOC ``(B, N, K)``."""
        q_all = self.q_loc(obs)
        if actions is None:
            actions = q_all.argmax(-1)
        x = self.features(obs, actions)
        lam, mu, sizes = self.attention(x, groups, num_groups)
        return {"q_all": q_all, "q_loc": q_all.gather(-1, actions[..., None]).squeeze(-1), "lam": lam, "mu": mu,
                "sizes": sizes, "q_gmf": self.q_gmf(mu).squeeze(-1), "x": x}


def population_terms(online: HMFNetworks, target: HMFNetworks, obs: torch.Tensor, actions: torch.Tensor,
                     next_obs: torch.Tensor, groups: torch.Tensor, num_groups: int) -> dict[str, Any]:
    """The forward passes of one population (the minors, or the major as its own group) on a
    batch of joint transitions: ``online.evaluate`` at (o, a) and, under ``no_grad``, the target
    networks at (o', a') with a' greedy on the target Q̂_LOC (Algorithm 1, line 9), the groups
    unchanged within an episode.  ``{..., "next": {...}}``."""
    now = online.evaluate(obs, actions, groups, num_groups)
    with torch.no_grad():
        now["next"] = target.evaluate(next_obs, None, groups, num_groups)
    now["groups"] = groups
    return now


def group_loss(terms: dict[str, Any], reward: torch.Tensor, done: torch.Tensor, gamma: float, *,
               reward_mode: str = "team", alpha: float = 0.0, kl_coeff: float = 0.0) -> dict[str, torch.Tensor]:
    """One population's bottom-level TD loss (Eq. 12, mean over its non-empty groups), the
    member-to-mean regulariser α·Σ_k ‖x_k − μ(x)‖² (mean over members) and the KL term
    β·KL(π_k ‖ π̄^(i)) pulling each member's Boltzmann policy π_k = softmax(Q_LOC(o_k, ·)) to its
    group's attention-weighted mean policy π̄^(i) = Σ_j λ_j π_j (held fixed), the paper's pull to
    the group's mean policy.  ``terms`` from :func:`population_terms`."""
    groups, nxt = terms["groups"], terms["next"]
    m = terms["q_gmf"].shape[1]
    y = group_targets(reward, done, gamma, nxt["lam"], nxt["q_loc"], nxt["q_gmf"], groups, nxt["sizes"], reward_mode)
    present = terms["sizes"] > 0
    q_group = group_values(terms["lam"], terms["q_loc"], terms["q_gmf"], groups)
    td = ((q_group - y) ** 2)[present].mean()
    out = {"td": td, "q_group": q_group[present].mean().detach()}
    total = td
    if alpha:
        mu_of_member = terms["mu"].gather(1, groups[..., None].expand(-1, -1, terms["mu"].shape[-1]))
        out["regulariser"] = alpha * ((terms["x"] - mu_of_member) ** 2).sum(-1).mean()
        total = total + out["regulariser"]
    if kl_coeff:
        log_pi = torch.log_softmax(terms["q_all"], dim=-1)
        with torch.no_grad():
            mean_pi = group_sum(terms["lam"][..., None] * log_pi.exp(), groups, m)
            log_mean = torch.log(mean_pi.gather(1, groups[..., None].expand(-1, -1, log_pi.shape[-1])).clamp_min(1e-12))
        out["kl"] = kl_coeff * (log_pi.exp() * (log_pi - log_mean)).sum(-1).mean()
        total = total + out["kl"]
    out["total"] = total
    return out


def top_loss(populations: list[dict[str, Any]], reward: torch.Tensor, done: torch.Tensor, gamma: float, *,
             reward_mode: str = "team") -> torch.Tensor:
    """The top-level TD loss (Eq. 14) over the groups of all ``populations`` (each from
    :func:`population_terms`): Q_TOT = Σ_i Q_GMF(μ^(i)) against r + γ·Σ_i Q̂_GMF(μ'^(i))."""
    sizes = torch.cat([t["sizes"] for t in populations], dim=1)
    q_gmf = torch.cat([t["q_gmf"] for t in populations], dim=1)
    next_sizes = torch.cat([t["next"]["sizes"] for t in populations], dim=1)
    next_gmf = torch.cat([t["next"]["q_gmf"] for t in populations], dim=1)
    y = top_target(reward, done, gamma, next_gmf, next_sizes, reward_mode)
    q_top = torch.where(sizes > 0, q_gmf, torch.zeros_like(q_gmf)).sum(1)
    return ((q_top - y) ** 2).mean()


def hmf_losses(online: HMFNetworks, target: HMFNetworks, batch: dict[str, torch.Tensor], num_groups: int,
               gamma: float, *, reward_mode: str = "team", alpha: float = 0.0) -> dict[str, torch.Tensor]:
    """The bottom-level (Eq. 12) and top-level (Eq. 14) TD losses of one population's batch of
    joint transitions and the optional regulariser (:func:`population_terms`,
    :func:`group_loss`, :func:`top_loss`).

    ``batch``: ``obs``/``next_obs`` ``(B, N, D)``, ``actions`` ``(B, N)`` long, ``reward``
    ``(B,)``, ``done`` ``(B,)`` bool, ``groups`` ``(B, N)``.  Returns ``group``, ``top``,
    ``regulariser`` and ``total`` (their sum)."""
    terms = population_terms(online, target, batch["obs"], batch["actions"], batch["next_obs"], batch["groups"],
                             num_groups)
    g = group_loss(terms, batch["reward"], batch["done"], gamma, reward_mode=reward_mode, alpha=alpha)
    top = top_loss([terms], batch["reward"], batch["done"], gamma, reward_mode=reward_mode)
    regulariser = g.get("regulariser", torch.zeros(()))
    return {"group": g["td"], "top": top, "regulariser": regulariser, "total": g["td"] + top + regulariser}


def soft_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """θ̂ ← τ·θ + (1 − τ)·θ̂ (Algorithm 1, lines 15–17), all parameters in one fused call."""
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(online.parameters()), tau)


# --- acting ----------------------------------------------------------------------------------------


def action_indices(actions: torch.Tensor, grid: torch.Tensor | None) -> torch.Tensor:
    """Index into the action set of actions ``(…[, d])``: the moves themselves (``grid`` None), or
    the nearest of the ``grid`` points ``(K, d)``."""
    if grid is None:
        return actions.long()
    return ((actions[..., None, :] - grid) ** 2).sum(-1).argmin(-1)


class EpsilonGreedy:
    """ε-greedy choice on Q-values ``(R, K)`` as an action distribution: ``sample()`` (an index,
    or ``grid[index]`` for the continuous problems) and ``logp(actions)``."""

    def __init__(self, q: torch.Tensor, epsilon: float, grid: torch.Tensor | None) -> None:
        self.q, self.epsilon, self.grid = q, float(epsilon), grid

    def indices(self, actions: torch.Tensor) -> torch.Tensor:
        return action_indices(actions, self.grid)

    def sample(self) -> torch.Tensor:
        index = self.q.argmax(-1)
        if self.epsilon > 0.0:
            explore = torch.rand(index.shape) < self.epsilon
            index = torch.where(explore, torch.randint(0, self.q.shape[-1], index.shape), index)
        return index if self.grid is None else self.grid[index]

    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        k = self.q.shape[-1]
        greedy = self.indices(actions) == self.q.argmax(-1)
        return torch.log(self.epsilon / k + (1.0 - self.epsilon) * greedy.to(self.q.dtype))


class EpsilonGreedyFactory:
    """What :meth:`HMFTorchRLModule.get_exploration_action_dist_cls` returns: ``from_logits(q)``
    with the module's current ε and action grid."""

    def __init__(self, epsilon: float, grid: torch.Tensor | None) -> None:
        self.epsilon, self.grid = epsilon, grid

    def from_logits(self, q: torch.Tensor) -> EpsilonGreedy:
        return EpsilonGreedy(q, self.epsilon, self.grid)


# --- RLlib module, learner ---------------------------------------------------------------------------

GROUPS = "groups"
"""Batch column: ``(R, k)`` group of each of the policy's agents in the row's episode."""
HMF_KEY = "m3f_hmf"
"""``learner_config_dict`` key (and algorithm-state key) of the HMF settings and bookkeeping."""


class HMFTorchRLModule(TorchRLModule, TargetNetworkAPI):
    """One HMF policy (the major's, or the minors' shared one): :class:`HMFNetworks` and, in the
    learner, their target copy.

    ``model_config``: ``hmf_hidden``, ``hmf_key_dim``, ``hmf_gmf_actions``, ``hmf_num_groups`` (1 for the major),
    ``hmf_action_grid`` (``K × d`` list for the continuous problems, None for Beach bar).  Acting:
    ``forward_exploration``/``forward_inference`` give Q_LOC(o, ·) as the distribution inputs;
    the distribution is ε-greedy with :attr:`epsilon` (0 unless the training loop sets it: a
    loaded module acts greedily).  ``forward_train`` takes rows of joint transitions
    (``obs``/``next_obs`` ``(R, k, D)``, ``actions`` ``(R, k)`` indices, ``groups``) and returns
    :func:`population_terms`."""

    ACTOR_PREFIXES = ("nets.q_loc.",)
    """State-dict keys of what acting needs (a policy export keeps only these)."""

    def setup(self) -> None:
        cfg = self.model_config
        grid = cfg.get("hmf_action_grid")
        self._grid = None if grid is None else torch.as_tensor(np.asarray(grid, dtype=np.float32))
        k = int(self.action_space.n) if self._grid is None else int(self._grid.shape[0])
        obs_dim = int(np.prod(self.observation_space.shape))
        self.num_groups = int(cfg.get("hmf_num_groups", 1))
        self.nets = HMFNetworks(obs_dim, k, hidden=int(cfg.get("hmf_hidden", 256)),
                                key_dim=int(cfg.get("hmf_key_dim", 64)),
                                gmf_actions=bool(cfg.get("hmf_gmf_actions", True)))
        self.epsilon = 0.0

    # target networks (RLlib's TargetNetworkAPI; the learner makes them, acting never needs them)
    def make_target_networks(self) -> None:
        self._target_nets = make_target_network(self.nets)

    def get_target_network_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.nets, self._target_nets)]

    def forward_target(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {"q_all": self._target_nets.q_loc(batch[Columns.OBS])}

    # acting
    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self.nets.q_loc(batch[Columns.OBS])}

    def get_exploration_action_dist_cls(self) -> EpsilonGreedyFactory:
        return EpsilonGreedyFactory(self.epsilon, self._grid)

    def get_inference_action_dist_cls(self) -> EpsilonGreedyFactory:
        return EpsilonGreedyFactory(0.0, self._grid)

    def get_train_action_dist_cls(self) -> EpsilonGreedyFactory:
        return EpsilonGreedyFactory(0.0, self._grid)

    def action_indices(self, actions: NDArray) -> NDArray[np.int64]:
        """Index into the action set of sampled actions ``(…[, d])`` (grid points or moves)."""
        return action_indices(torch.as_tensor(np.asarray(actions)), self._grid).numpy().astype(np.int64)

    # learning
    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return population_terms(self.nets, self._target_nets, batch[Columns.OBS], batch[Columns.ACTIONS].long(),
                                batch[Columns.NEXT_OBS], batch[GROUPS].long(), self.num_groups)


class HMFTorchLearner(TorchLearner):
    """The two-level HMF loss over all policies at once: each policy's bottom-level loss
    (:meth:`compute_loss_for_module`, with the optional regulariser and KL term), plus the
    top-level loss over every group of every policy; a soft target update after every gradient
    step (:meth:`apply_gradients`).  Settings: ``learner_config_dict[HMF_KEY]``."""

    def build(self) -> None:
        super().build()
        self.module.foreach_module(
            lambda mid, mod: mod.make_target_networks() if isinstance(mod, TargetNetworkAPI) else None)

    def _hmf(self) -> Mapping[str, Any]:
        return self.config.learner_config_dict[HMF_KEY]

    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict[str, Any],
                                fwd_out: dict[str, Any]) -> torch.Tensor:
        opts = self._hmf()
        out = group_loss(fwd_out, batch[Columns.REWARDS].float(), batch[Columns.TERMINATEDS], float(config.gamma),
                         reward_mode=opts["reward_mode"], alpha=float(opts["alpha"]),
                         kl_coeff=float(opts["group_kl_coeff"]))
        for key, value in out.items():
            if key != "total":
                self.metrics.log_value((module_id, f"hmf_{key}"), value.item(), window=1)
        # the progress column of value losses: for HMF the bottom-level TD loss
        self.metrics.log_value((module_id, "vf_loss"), out["td"].item(), window=1)
        return out["total"]

    def compute_losses(self, *, fwd_out: dict[str, Any], batch: dict[str, Any]) -> dict[str, Any]:
        losses = super().compute_losses(fwd_out=fwd_out, batch=batch)
        first = batch[next(iter(batch))]
        gamma = float(self.config.gamma)
        top = top_loss([fwd_out[mid] for mid in fwd_out], first[Columns.REWARDS].float(),
                       first[Columns.TERMINATEDS], gamma, reward_mode=self._hmf()["reward_mode"])
        self.metrics.log_value((ALL_MODULES, "hmf_top_td"), top.item(), window=1)
        last = list(losses)[-1]
        losses[last] = losses[last] + top
        return losses

    def apply_gradients(self, gradients_dict: Any) -> None:
        super().apply_gradients(gradients_dict)
        tau = float(self._hmf()["tau"])
        for mid in self.module.keys():
            for online, target in self.module[mid].unwrapped().get_target_network_pairs():
                soft_update(target, online, tau)


# --- sampling ----------------------------------------------------------------------------------------

TRANSITION_COLUMNS = ("global_state", "next_global_state", Columns.ACTIONS, Columns.REWARDS, Columns.TERMINATEDS,
                      GROUPS)
"""What the replay buffer keeps per joint transition (observations are rebuilt from the global
states: ``MultiAgentCore.observations_from_global``)."""


class HMFSampler(BatchedSampler):
    """Steps B copies with every agent acting ε-greedily on its policy's Q_LOC
    (``BatchedSampler.act``) and returns joint transitions; groups the minors of a copy at the
    start of each of its episodes (``grouping`` ``ipc`` on the minors' own observation entries, or
    ``bins`` on their histogram cells) with the env generator."""

    def __init__(self, core: MultiAgentCore, num_envs: int, seed: int = 0, *, grouping: str = "ipc",
                 num_groups: int = 2, ipc_iterations: int = 3) -> None:
        check_grouping(grouping, num_groups, core.num_minors)
        self.grouping, self.num_groups, self.ipc_iterations = grouping, int(num_groups), int(ipc_iterations)
        super().__init__(core, num_envs, seed)

    def reset(self, seed: int) -> None:
        super().reset(seed)
        self.minor_groups = self.assign_groups(self.state, self.obs)

    def assign_groups(self, state: Any, obs: NDArray[np.float32]) -> NDArray[np.int64]:
        """``(b, N)`` groups of the minors of the copies in ``state``/``obs`` at an episode start."""
        core = self.core
        if self.grouping == "bins":
            return bin_groups(core.problem.minor_cells(state), core.problem.num_cells, self.num_groups)
        own = obs[:, core.minor_offset:][..., core.layout.own]
        return ipc_groups(own, self.num_groups, self.rng, self.ipc_iterations)

    def collect(self, modules: dict[str, Any], steps_per_env: int) -> tuple[dict[str, NDArray], SampleStats]:
        """``steps_per_env`` joint steps of every copy: the transitions (rows ordered step, copy;
        :data:`TRANSITION_COLUMNS`) and the episode statistics."""
        core, b = self.core, self.num_envs
        index_of = modules["minor"].action_indices
        out: dict[str, list[NDArray]] = {c: [] for c in TRANSITION_COLUMNS}
        stats = SampleStats()
        for _ in range(int(steps_per_env)):
            actions, _, _ = self.act(modules, self.obs, core.own_keys(self.state))
            out["global_state"].append(core.global_state(self.obs))
            out[Columns.ACTIONS].append(index_of(actions))
            out[GROUPS].append(self.minor_groups.copy())
            self.state, reward = core.step(self.state, actions, self.rng)
            next_obs = core.observe(self.state)
            out["next_global_state"].append(core.global_state(next_obs))
            out[Columns.REWARDS].append(reward.astype(np.float32))
            out[Columns.TERMINATEDS].append(np.zeros(b, dtype=bool))  # time limits only: bootstrap
            self.episode_return += reward
            ended = self.state.t >= core.horizon
            if ended.any():
                idx = np.flatnonzero(ended)
                finished = self.episode_return[idx].tolist()
                self.recent_returns.extend(finished)
                stats.episode_returns.extend(finished)
                self.episode_return[idx] = 0.0
                fresh, fresh_obs = core.reset(len(idx), self.rng)
                self.state = put_copies(self.state, idx, fresh)
                next_obs[idx] = fresh_obs
                self.minor_groups[idx] = self.assign_groups(fresh, fresh_obs)
            self.obs = next_obs
        stats.env_steps = int(steps_per_env) * b
        stats.agent_steps = stats.env_steps * core.num_agents
        return {c: np.concatenate(v) for c, v in out.items()}, stats

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "minor_groups": self.minor_groups.copy()}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.minor_groups = np.array(state["minor_groups"], dtype=np.int64)


def policy_rows(core: MultiAgentCore, rows: Mapping[str, NDArray],
                module_ids: list[str]) -> dict[str, dict[str, NDArray]]:
    """The learner's batch of replayed joint transitions ``rows``: per policy the observations
    and next observations of its agents ``(R, k, D)``, their action indices and groups (the
    major: its own group 0), and the team reward and termination of the row."""
    obs = core.observations_from_global(rows["global_state"])
    next_obs = core.observations_from_global(rows["next_global_state"])
    actions = np.asarray(rows[Columns.ACTIONS], dtype=np.int64)
    r = obs.shape[0]
    common = {Columns.REWARDS: np.asarray(rows[Columns.REWARDS], dtype=np.float32),
              Columns.TERMINATEDS: np.asarray(rows[Columns.TERMINATEDS], dtype=bool)}
    out = {}
    for mid in module_ids:
        agents = slice(0, 1) if mid == MAJOR_ID else slice(core.minor_offset, core.num_agents)
        groups = np.zeros((r, 1), dtype=np.int64) if mid == MAJOR_ID else np.asarray(rows[GROUPS], dtype=np.int64)
        out[mid] = {Columns.OBS: np.ascontiguousarray(obs[:, agents]),
                    Columns.NEXT_OBS: np.ascontiguousarray(next_obs[:, agents]),
                    Columns.ACTIONS: np.ascontiguousarray(actions[:, agents]), GROUPS: groups, **common}
    return out


def epsilon_at(opts: Mapping[str, Any], env_steps: int, planned_env_steps: int) -> float:
    """ε after ``env_steps`` joint env steps: linear from ``epsilon_initial`` to ``epsilon_final``
    over ``exploration_fraction`` of ``planned_env_steps``, then constant."""
    span = max(1.0, float(opts["exploration_fraction"]) * planned_env_steps)
    frac = min(1.0, env_steps / span)
    return float(opts["epsilon_initial"] + frac * (opts["epsilon_final"] - opts["epsilon_initial"]))


# --- algorithm -------------------------------------------------------------------------------------


class HMFConfig(AlgorithmConfig):
    """RLlib's base ``AlgorithmConfig`` with HMF's default module and learner; the HMF settings
    travel in ``learner_config_dict[HMF_KEY]`` (:func:`hmf_config` builds it)."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or HMF)

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        return RLModuleSpec(module_class=HMFTorchRLModule)

    def get_default_learner_class(self) -> type:
        return HMFTorchLearner


class HMF(BatchedTraining, Algorithm):
    """HMF on RLlib: the base ``Algorithm`` (learner group, checkpoints, metrics) with this
    ``training_step`` (module docstring); per-iteration seeds and exact resume from
    :class:`~m3fmarl.algorithms.batched.BatchedTraining`, the replay buffer and the ε schedule's
    step count in the algorithm state."""

    @classmethod
    def get_default_config(cls) -> HMFConfig:
        return HMFConfig(cls)

    def setup(self, config: Any) -> None:
        super().setup(config)
        opts = self._opts()
        self._replay = ReplayBuffer(capacity=int(opts["replay_capacity"]), storage_unit="timesteps")
        self._env_steps_lifetime = 0
        self._owed_updates = 0.0

    def _opts(self) -> Mapping[str, Any]:
        return self.config.learner_config_dict[HMF_KEY]

    def _planned_env_steps(self) -> int:
        """Joint env steps of the whole run: the iterations asked for (``m3fmarl.train``'s run plan;
        a run's default length for an HMF built without one) × ``train_batch_size``."""
        from m3fmarl.train import DEFAULT_ITERATIONS, RUN_PLAN_KEY

        plan = self.config.learner_config_dict.get(RUN_PLAN_KEY) or {}
        return int(plan.get("iterations", DEFAULT_ITERATIONS)) * int(self.config.train_batch_size_per_learner)

    def _make_sampler(self) -> HMFSampler:
        marl = self.config.learner_config_dict[MARL_KEY]
        opts = self._opts()
        core = MultiAgentCore(marl["problem"], marl["num_minors"], marl["variant"], **marl.get("switches", {}))
        return HMFSampler(core, int(marl["num_envs"]), seed=int(self.config.seed or 0), grouping=opts["grouping"],
                          num_groups=int(opts["num_groups"]), ipc_iterations=int(opts["ipc_iterations"]))

    def _sample_and_update(self) -> None:
        opts = self._opts()
        learner = self.local_learner()
        modules = {mid: learner.module[mid].unwrapped() for mid in learner.module.keys()}
        sampler: HMFSampler = self._sampler
        steps = int(opts["rollout_steps"])
        phases = self.config.train_batch_size_per_learner // (sampler.num_envs * steps)
        minibatch = int(opts["minibatch_size"])
        planned = self._planned_env_steps()
        returns: list[float] = []
        trained = 0
        sample_s = learn_s = 0.0
        try:
            for _ in range(phases):
                eps = epsilon_at(opts, self._env_steps_lifetime, planned)
                for m in modules.values():
                    m.epsilon = eps
                t0 = time.perf_counter()
                rows, stats = sampler.collect(modules, steps)
                self._replay.add(SampleBatch(rows))
                sample_s += time.perf_counter() - t0
                returns.extend(stats.episode_returns)
                self._env_steps_lifetime += stats.env_steps
                if len(self._replay) < max(int(opts["learning_starts"]), minibatch):
                    continue
                self._owed_updates += stats.env_steps * float(opts["training_intensity"]) / minibatch
                updates = int(self._owed_updates)
                self._owed_updates -= updates
                if updates:
                    t0 = time.perf_counter()
                    self._update(learner, updates, minibatch)
                    learn_s += time.perf_counter() - t0
                    trained += updates
        finally:
            for m in modules.values():
                m.epsilon = 0.0
        env_steps = phases * steps * sampler.num_envs
        self.log_sampling(env_steps, len(returns),
                          {g.module_id: env_steps * len(g.agents) for g in sampler.groups})
        # seconds this iteration spent sampling (and storing) and learning, in RLlib's timer keys
        self.metrics.log_value((TIMERS, ENV_RUNNER_SAMPLING_TIMER), sample_s, window=1)
        self.metrics.log_value((TIMERS, LEARNER_UPDATE_TIMER), learn_s, window=1)
        self.metrics.log_value("hmf_epsilon", epsilon_at(opts, self._env_steps_lifetime, planned), window=1)
        self.metrics.log_value("hmf_gradient_steps", trained, reduce="sum")
        self.metrics.log_value("hmf_replay_size", len(self._replay), window=1)

    def _update(self, learner: Any, updates: int, minibatch: int) -> None:
        """``updates`` gradient steps, each on ``minibatch`` uniformly replayed joint transitions."""
        rows = self._replay.sample(updates * minibatch)
        per_policy = policy_rows(self._sampler.core, rows, list(learner.module.keys()))
        batch = MultiAgentBatch({mid: SampleBatch(cols) for mid, cols in per_policy.items()},
                                env_steps=updates * minibatch)
        lifetime = self.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0)
        results = learner.update(batch=batch, timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: lifetime}, num_epochs=1,
                                 minibatch_size=minibatch, shuffle_batch_per_epoch=False)
        self.metrics.aggregate([results], key=LEARNER_RESULTS)

    def get_state(self, components: Any = None, *, not_components: Any = None, **kwargs: Any) -> dict:
        state = super().get_state(components, not_components=not_components, **kwargs)
        if self._check_component(HMF_KEY, components, not_components):
            state[HMF_KEY] = {"replay": self._replay.get_state(), "env_steps": int(self._env_steps_lifetime),
                              "owed_updates": float(self._owed_updates)}
        return state

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        own = state.get(HMF_KEY)
        if own is not None:
            self._replay.set_state(own["replay"])
            self._env_steps_lifetime = int(own["env_steps"])
            self._owed_updates = float(own["owed_updates"])


# --- config ------------------------------------------------------------------------------------------


def hmf_module_specs(core: MultiAgentCore, settings: Any) -> dict[str, RLModuleSpec]:
    """``major`` (its own group) if the problem has one, and ``minor`` (``num_groups`` groups)."""
    grid = core.problem.agent_action_grid()
    specs = {}
    for mid in ([MAJOR_ID] if core.has_major else []) + ["minor"]:
        cfg = {"hmf_hidden": int(settings.hidden), "hmf_key_dim": int(settings.key_dim),
               "hmf_gmf_actions": bool(settings.gmf_actions),
               "hmf_num_groups": 1 if mid == MAJOR_ID else int(settings.num_groups),
               "hmf_action_grid": None if grid is None else grid.tolist()}
        specs[mid] = RLModuleSpec(module_class=HMFTorchRLModule, model_config=cfg,
                                  observation_space=core.observation_space(), action_space=core.action_space())
    return specs


def hmf_config(problem: str, num_minors: int, variant: str = "reference", *, seed: int = 0, settings: Any = None,
               env_config: dict[str, Any] | None = None, **overrides: Any) -> HMFConfig:
    """The RLlib config of an HMF run (spec §4.2; registry builder).

    ``settings``: :class:`m3fmarl.config.HMFSettings` (default ``configs/algorithms/hmf.yaml``);
    ``**overrides`` that name one of its fields replace it, other names are AlgorithmConfig
    attributes (as for every builder: ``split_settings``, ``apply_overrides``); ``env_config``:
    switch overrides of the problem.  A grouping the problem cannot have (``num_groups`` > N) is a
    one-line ``ValueError``."""
    import dataclasses

    from m3fmarl.config import HMFSettings, load_algorithm

    check_choice("variant", variant, VARIANTS)
    problem = canonical_name(problem)
    num_minors = check_num_minors(num_minors)
    s, rest = split_settings(settings if settings is not None else load_algorithm("hmf"), HMFSettings, overrides)
    check_grouping(s.grouping, s.num_groups, num_minors)
    switches = dict(env_config or {})
    core = MultiAgentCore(problem, num_minors, variant, **switches)
    register_rllib_envs()
    specs = hmf_module_specs(core, s)
    # in the config proper: γ, lr, clip, batch; the copies B under MARL_KEY; the rest under HMF_KEY
    hmf_opts = {k: v for k, v in dataclasses.asdict(s).items()
                if k not in ("gamma", "lr", "grad_clip", "train_batch_size", "num_envs_per_env_runner")}
    config = (
        multiagent_view(HMFConfig(), problem, num_minors, variant, switches, specs, seed)
        .learners(num_learners=0, learner_class=HMFTorchLearner, learner_config_dict={
            MARL_KEY: {"algo": "hmf", "problem": problem, "num_minors": num_minors, "variant": variant,
                       "switches": switches, "num_envs": int(s.num_envs_per_env_runner)},
            HMF_KEY: hmf_opts,
        })
        .training(gamma=s.gamma, lr=s.lr, train_batch_size_per_learner=s.train_batch_size, grad_clip=s.grad_clip,
                  grad_clip_by="global_norm")
    )
    return apply_overrides(config, rest)
