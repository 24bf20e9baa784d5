"""Building blocks of HMF, hierarchical mean-field Q-learning (Yu, AAAI 2023; spec/experiments.md
§4.2, issue 14): grouping of the minors, the attention that weighs a group's members, the
two-level TD targets, the networks (Q_LOC, attention, Q_GMF) and their losses with target
networks.  The algorithm (replay, ε-greedy acting, the major's own group, RLlib wiring, registry
entry) builds on these; until then nothing here is reachable from ``--algo``.

Notation (paper Eqs. 11–14, 17): agent k of group i has x_k = (o_k, one-hot a_k); the group's
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

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

GROUPINGS = ("ipc", "bins")
"""How the minors are grouped at each episode start: ``ipc`` (the paper's K-means-style grouping,
farthest-point centres then assignment to the nearest group mean) or ``bins`` (fixed spatial bins:
the problem's histogram cells split into m contiguous ranges)."""

REWARD_MODES = ("team", "sum")


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
    """The minors' HMF networks (spec §4.2): Q_LOC(o_k, ·) over the K actions (shared by all
    minors; acting is greedy or ε-greedy on it), the group attention over x_k = (o_k, one-hot
    a_k), and Q_GMF(μ) of a group's mean field; 2 × ``hidden`` tanh layers each."""

    def __init__(self, obs_dim: int, num_actions: int, hidden: int = 256, key_dim: int = 64) -> None:
        super().__init__()
        self.num_actions = int(num_actions)
        self.q_loc = _q_mlp([obs_dim, hidden, hidden], self.num_actions)
        self.attention = GroupAttention(obs_dim + self.num_actions, key_dim)
        self.q_gmf = _q_mlp([obs_dim + self.num_actions, hidden, hidden], 1)

    def features(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """x_k = (o_k, one-hot a_k): ``(B, N, D)``, ``(B, N)`` → ``(B, N, D + K)``."""
        return torch.cat([obs, nn.functional.one_hot(actions, self.num_actions).to(obs.dtype)], dim=-1)

    def evaluate(self, obs: torch.Tensor, actions: torch.Tensor, groups: torch.Tensor, num_groups: int,
                 ) -> dict[str, torch.Tensor]:
        """Q_LOC(x_k) ``(B, N)``, λ ``(B, N)``, μ ``(B, m, D + K)``, group sizes and Q_GMF(μ)
        ``(B, m)`` for the taken ``actions``, and every action's Q_LOC ``(B, N, K)``."""
        q_all = self.q_loc(obs)
        x = self.features(obs, actions)
        lam, mu, sizes = self.attention(x, groups, num_groups)
        return {"q_all": q_all, "q_loc": q_all.gather(-1, actions[..., None]).squeeze(-1), "lam": lam, "mu": mu,
                "sizes": sizes, "q_gmf": self.q_gmf(mu).squeeze(-1), "x": x}


def hmf_losses(online: HMFNetworks, target: HMFNetworks, batch: dict[str, torch.Tensor], num_groups: int,
               gamma: float, *, reward_mode: str = "team", alpha: float = 0.0) -> dict[str, torch.Tensor]:
    """The bottom-level (Eq. 12) and top-level (Eq. 14) TD losses of a batch of joint transitions
    and the optional member-to-mean regulariser α Σ_k ‖x_k − μ(x)‖² of the paper.

    ``batch``: ``obs``/``next_obs`` ``(B, N, D)``, ``actions`` ``(B, N)`` long, ``reward``
    ``(B,)``, ``done`` ``(B,)`` bool, ``groups`` ``(B, N)`` (an episode keeps its groups, so the
    next step uses the same).  The next actions are the online Q_LOC's greedy ones, scored by the
    target networks (double Q-learning).  Returns ``group``, ``top``, ``regulariser`` and
    ``total`` (their sum)."""
    groups = batch["groups"]
    now = online.evaluate(batch["obs"], batch["actions"], groups, num_groups)
    with torch.no_grad():
        next_actions = online.q_loc(batch["next_obs"]).argmax(-1)
        nxt = target.evaluate(batch["next_obs"], next_actions, groups, num_groups)
        y_group = group_targets(batch["reward"], batch["done"], gamma, nxt["lam"], nxt["q_loc"], nxt["q_gmf"],
                                groups, nxt["sizes"], reward_mode)
        y_top = top_target(batch["reward"], batch["done"], gamma, nxt["q_gmf"], nxt["sizes"], reward_mode)
    present = now["sizes"] > 0
    q_group = group_values(now["lam"], now["q_loc"], now["q_gmf"], groups)
    group_loss = ((q_group - y_group) ** 2)[present].mean()
    q_top = torch.where(present, now["q_gmf"], torch.zeros_like(now["q_gmf"])).sum(1)
    top_loss = ((q_top - y_top) ** 2).mean()
    mu_of_member = now["mu"].gather(1, groups[..., None].expand(-1, -1, now["mu"].shape[-1]))
    regulariser = alpha * ((now["x"] - mu_of_member) ** 2).sum(-1).mean() if alpha else torch.zeros(())
    return {"group": group_loss, "top": top_loss, "regulariser": regulariser,
            "total": group_loss + top_loss + regulariser}


def soft_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """θ̂ ← τ·θ + (1 − τ)·θ̂ (Algorithm 1, lines 15–17)."""
    with torch.no_grad():
        for t, o in zip(target.parameters(), online.parameters(), strict=True):
            t.mul_(1.0 - tau).add_(o, alpha=tau)
