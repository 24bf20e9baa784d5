"""Batched sampling for IPPO/MAPPO: all minors of all copies as one batch, GAE per agent.

RLlib's generic multi-agent path keeps one Python episode object per agent and calls the
connectors per agent and step (0.3–0.6 ms per agent-step here).  This sampler instead steps
``B`` copies of :class:`m3fmarl.multiagent.core.MultiAgentCore` together and runs each policy
once per step on the stacked observations of every agent it controls (the major policy on
``(B, D)``, the shared minor policy on ``(B·N, D)``).  Rollouts are kept as ``(T, B, agents, …)``
arrays; GAE runs backwards over T with numpy on ``(B, agents)`` slices, so each agent's
advantages use only its own trajectory (per-agent GAE, spec §1.1 item 3) and no Python loop
touches single agents.  The result is one flat batch per policy (rows ordered copy, agent,
time: each agent's trajectory piece is contiguous, as in RLlib's concatenated agent chunks).

See docs/marl-sampling.md for the design and its measurements.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from m3fmarl.advantages import gae
from m3fmarl.multiagent.core import MAJOR_ID, MultiAgentCore
from m3fmarl.problems.core import put_copies
from m3fmarl.sampling import (
    ACTION_DIST_INPUTS,
    ACTION_LOGP,
    ACTIONS,
    ADVANTAGES,
    OBS,
    VALUE_CHUNK_ROWS,
    VALUE_TARGETS,
    VF_PREDS,
    SamplerState,
    actor_inputs,
    distinct_keys,
)

POPULATION_INDEX = "population_index"
"""Population-aware policies (MF-PPO) only: per row, the index of its (step, copy) in the
population table ``SampleStats.populations``."""

CRITIC_OBS = "critic_obs"
"""MAPPO only: per row, the global state then the other agents' actions (spec §1.7)."""

BOOTSTRAPS = ("next_obs", "last_step")
"""How a MAPPO critic bootstraps a cut trajectory: from the value of the next observation (paper,
standard GAE) or from the value of the last stored step (the reference's quirk, spec §1.7)."""


@dataclass
class PolicyGroup:
    """Agents one policy controls: a contiguous range on the agent axis."""

    module_id: str
    slice: slice

    @property
    def agents(self) -> NDArray[np.int64]:
        return np.arange(self.slice.start, self.slice.stop)


@dataclass
class SampleStats:
    env_steps: int = 0
    agent_steps: int = 0
    episode_returns: list[float] = field(default_factory=list)
    populations: NDArray[np.float32] | None = None
    """With population-aware policies: ``(T·B, N, own_dim)`` the minors' own states of every
    sampled (step, copy), row ``t·B + b``."""


class BatchedSampler(SamplerState):
    """Steps ``num_envs`` copies of a multi-agent problem with one forward pass per policy.

    Args:
        core: the batched multi-agent view.
        num_envs: copies B stepped together.
        seed: seeds the env RNG; action sampling uses torch's global generator, seeded by the
            algorithm (RLlib ``seed``).
        centralized_critic: build ``critic_obs`` (global state + other agents' actions) for a
            MAPPO critic.
        bootstrap: ``next_obs`` or ``last_step`` (MAPPO reference quirk); IPPO always uses
            ``next_obs``.
    """

    def __init__(self, core: MultiAgentCore, num_envs: int, seed: int = 0, *, centralized_critic: bool = False,
                 bootstrap: str = "next_obs", gamma: float = 0.99, lambda_: float = 1.0) -> None:
        if bootstrap not in BOOTSTRAPS:
            raise ValueError(f"bootstrap: invalid value {bootstrap!r}; valid: {', '.join(BOOTSTRAPS)}")
        self.core = core
        self.num_envs = int(num_envs)
        self.centralized_critic = centralized_critic
        self.bootstrap = bootstrap
        self.gamma, self.lambda_ = float(gamma), float(lambda_)
        n = core.num_agents
        groups = []
        if core.has_major:
            groups.append(PolicyGroup(MAJOR_ID, slice(0, 1)))
        groups.append(PolicyGroup("minor", slice(core.minor_offset, n)))
        self.groups = groups
        self.recent_returns: deque[float] = deque(maxlen=100)
        self.reset(seed)
        if core.discrete:
            self._action_width = int(core.num_actions)
        else:
            self._action_width = int(core.action_dim)
        self._others = ~np.eye(n, dtype=bool)

    def reset(self, seed: int) -> None:
        """Start fresh episodes in every copy from a new env RNG seeded with ``seed``."""
        self.rng = np.random.default_rng(seed)
        self.state, self.obs = self.core.reset(self.num_envs, self.rng)
        self.episode_return = np.zeros(self.num_envs)

    # --- policy ------------------------------------------------------------------------------
    def act(self, modules: dict[str, Any], obs: NDArray[np.float32], keys: NDArray[np.int64] | None = None,
             ) -> tuple[NDArray, NDArray, dict[str, NDArray]]:
        """Sample every agent's action. Returns actions ``(B, n[, d])``, log-probs ``(B, n)`` and
        the distribution inputs per policy ``{module_id: (B, k, width)}``.

        ``keys`` (``(B, n)``, :meth:`MultiAgentCore.own_keys` of the state ``obs`` belongs to):
        agents of a copy with equal keys have equal observations, so the policy is evaluated once
        per distinct (copy, key) and its output shared (Beach bar: ≤ 25 passes per copy instead
        of N); every agent still samples its own action."""
        b, n, _ = obs.shape
        if self.core.discrete:
            actions = np.empty((b, n), dtype=np.int64)
        else:
            actions = np.empty((b, n, self.core.action_dim), dtype=np.float32)
        logp = np.empty((b, n), dtype=np.float32)
        dist_inputs = {}
        with torch.no_grad():
            for g in self.groups:
                module = modules[g.module_id]
                inputs = self._actor_inputs(module, obs, g.slice, keys)
                dist = module.get_exploration_action_dist_cls().from_logits(inputs)
                a = dist.sample()
                lp = dist.logp(a)
                k = g.slice.stop - g.slice.start
                actions[:, g.slice] = a.numpy().reshape((b, k) + actions.shape[2:])
                logp[:, g.slice] = lp.numpy().reshape(b, k)
                dist_inputs[g.module_id] = inputs.numpy().reshape(b, k, -1)
        return actions, logp, dist_inputs

    def _actor_inputs(self, module: Any, obs: NDArray[np.float32], agents: slice,
                      keys: NDArray[np.int64] | None) -> torch.Tensor:
        """Action-distribution inputs ``(B·k, width)`` of the k agents ``agents`` of every copy."""
        if _population_aware(module):
            return module.joint_action_inputs(torch.from_numpy(np.ascontiguousarray(obs)), agents, keys,
                                              self.core.num_own_keys)
        rows = np.ascontiguousarray(obs[:, agents]).reshape(-1, obs.shape[-1])
        unique = _distinct_rows(keys[:, agents], self.core.num_own_keys) if keys is not None else None
        if unique is None:
            return actor_inputs(module, torch.from_numpy(rows))
        first, inverse = unique
        return actor_inputs(module, torch.from_numpy(rows[first]))[torch.from_numpy(inverse)]

    def _action_features(self, actions: NDArray) -> NDArray[np.float32]:
        """``(…, n, width)`` float action features: raw continuous samples or one-hots."""
        if self.core.discrete:
            return np.eye(self._action_width, dtype=np.float32)[actions]
        return actions.astype(np.float32, copy=False)

    def critic_obs(self, obs: NDArray[np.float32], actions: NDArray) -> NDArray[np.float32]:
        """``(B, n, G + (n-1)·width)``: per agent the global state, then the other agents' actions
        in agent order without its own (spec §1.7, ``opp_action_in_cc``)."""
        b, n, _ = obs.shape
        glob = self.core.global_state(obs)  # (B, G)
        feats = self._action_features(actions).reshape(b, n, -1)  # (B, n, w)
        others = np.broadcast_to(feats[:, None], (b, n, n, feats.shape[-1]))[:, self._others]  # (B, n(n-1), w)
        others = others.reshape(b, n, (n - 1) * feats.shape[-1])
        return np.concatenate([np.broadcast_to(glob[:, None], (b, n, glob.shape[1])), others], axis=2)

    def _values(self, modules: dict[str, Any], obs: NDArray, critic_obs: NDArray | None,
                keys: NDArray[np.int64] | None = None) -> NDArray[np.float64]:
        """V for every agent of stacked steps: ``obs (..., n, D)`` → ``(..., n)``, evaluated in
        chunks of about :data:`VALUE_CHUNK_ROWS` rows (one pass over a whole rollout's
        activations would not fit in cache: 2–3× slower at N = 300)."""
        lead = obs.shape[:-2]
        n = obs.shape[-2]
        flat_obs = obs.reshape((-1,) + obs.shape[-2:])  # (L, n, D)
        flat_c = None if critic_obs is None else critic_obs.reshape((-1,) + critic_obs.shape[-2:])
        # an obs-only critic gives equal values for equal observations (a MAPPO critic does not:
        # its input holds the other agents' actions)
        flat_k = None if keys is None or flat_c is not None else keys.reshape((-1, n))
        out = np.empty((flat_obs.shape[0], n), dtype=np.float64)
        with torch.no_grad():
            for g in self.groups:
                module = modules[g.module_id]
                sel = g.slice
                k = sel.stop - sel.start
                step = max(1, VALUE_CHUNK_ROWS // k)
                for i in range(0, flat_obs.shape[0], step):
                    if _population_aware(module):
                        whole = torch.from_numpy(np.ascontiguousarray(flat_obs[i:i + step]))
                        chunk_keys = None if flat_k is None else flat_k[i:i + step]
                        v = module.joint_values(whole, sel, chunk_keys, self.core.num_own_keys)
                        out[i:i + step, sel] = v.numpy().reshape(-1, k)
                        continue
                    o = flat_obs[i:i + step, sel]
                    rows = np.ascontiguousarray(o).reshape(-1, o.shape[-1])
                    unique = None if flat_k is None else _distinct_rows(flat_k[i:i + step, sel], self.core.num_own_keys)
                    if unique is not None:
                        first, inverse = unique
                        v = module.compute_values({OBS: torch.from_numpy(rows[first])}).numpy()[inverse]
                        out[i:i + step, sel] = v.reshape(-1, k)
                        continue
                    batch = {OBS: torch.from_numpy(rows)}
                    if flat_c is not None:
                        c = flat_c[i:i + step, sel]
                        batch[CRITIC_OBS] = torch.from_numpy(np.ascontiguousarray(c).reshape(-1, c.shape[-1]))
                    v = module.compute_values(batch)
                    out[i:i + step, sel] = v.numpy().reshape(-1, k)
        return out.reshape(lead + (n,))

    # --- rollout -----------------------------------------------------------------------------
    def sample(self, modules: dict[str, Any], steps_per_env: int) -> tuple[dict[str, dict[str, NDArray]], SampleStats]:
        """Collect ``steps_per_env`` joint steps from every copy; return one flat batch per
        policy (obs, actions, action_logp, action_dist_inputs, advantages, value_targets,
        vf_preds[, critic_obs]) and the episode statistics."""
        core, b, n, t_len = self.core, self.num_envs, self.core.num_agents, int(steps_per_env)
        obs_buf = np.empty((t_len, b, n, core.obs_dim), dtype=np.float32)
        act_shape = (t_len, b, n) if core.discrete else (t_len, b, n, core.action_dim)
        act_buf = np.empty(act_shape, dtype=np.int64 if core.discrete else np.float32)
        logp_buf = np.empty((t_len, b, n), dtype=np.float32)
        dist_buf = {g.module_id: [] for g in self.groups}
        rew_buf = np.empty((t_len, b))
        end_buf = np.zeros((t_len, b), dtype=bool)
        cobs_buf = None
        key_buf = None
        final_obs: dict[int, tuple[NDArray, NDArray]] = {}  # t -> (copies that ended, their last obs)
        stats = SampleStats()
        for t in range(t_len):
            obs = self.obs
            keys = core.own_keys(self.state)
            actions, logp, dists = self.act(modules, obs, keys)
            obs_buf[t], act_buf[t], logp_buf[t] = obs, actions, logp
            if keys is not None:
                if key_buf is None:
                    key_buf = np.empty((t_len,) + keys.shape, dtype=np.int64)
                key_buf[t] = keys
            for mid, d in dists.items():
                dist_buf[mid].append(d)
            if self.centralized_critic:
                c = self.critic_obs(obs, actions)
                if cobs_buf is None:
                    cobs_buf = np.empty((t_len,) + c.shape, dtype=np.float32)
                cobs_buf[t] = c
            self.state, reward = core.step(self.state, actions, self.rng)
            rew_buf[t] = reward
            self.episode_return += reward
            next_obs = core.observe(self.state)
            ended = self.state.t >= core.horizon
            if ended.any():
                idx = np.flatnonzero(ended)
                end_buf[t, idx] = True
                final_obs[t] = (idx, next_obs[idx])
                self.recent_returns.extend(self.episode_return[idx].tolist())
                stats.episode_returns.extend(self.episode_return[idx].tolist())
                self.episode_return[idx] = 0.0
                fresh, fresh_obs = core.reset(len(idx), self.rng)
                self.state = put_copies(self.state, idx, fresh)
                next_obs[idx] = fresh_obs
            self.obs = next_obs
        stats.env_steps = t_len * b
        stats.agent_steps = t_len * b * n
        values = self._values(modules, obs_buf, cobs_buf, key_buf)  # (T, B, n)
        next_values = np.empty_like(values)
        next_values[:-1] = values[1:]
        if self.centralized_critic and self.bootstrap == "last_step":
            next_values[-1] = values[-1]
            for t, (idx, _) in final_obs.items():
                next_values[t, idx] = values[t, idx]
        else:
            next_values[-1] = self._bootstrap_values(modules, self.obs)
            for t, (idx, last) in final_obs.items():
                next_values[t, idx] = self._bootstrap_values(modules, last)
        adv = gae(values, rew_buf[:, :, None], next_values, end_buf[:, :, None], self.gamma, self.lambda_)
        targets = adv + values
        population_index = None
        if any(_population_aware(modules[g.module_id]) for g in self.groups):
            stats.populations = np.ascontiguousarray(
                obs_buf[:, :, core.minor_offset:][..., core.layout.own]).reshape(t_len * b, core.num_minors, -1)
            population_index = np.broadcast_to(
                np.arange(t_len * b, dtype=np.int64).reshape(t_len, b, 1), (t_len, b, n))
        batches = {}
        for g in self.groups:
            sel = g.slice

            def rows(x: NDArray, sel: slice = sel) -> NDArray:
                # (T, B, k, ...) -> (B, k, T, ...) -> rows: each agent's trajectory contiguous.
                y = np.moveaxis(x[:, :, sel], 0, 2)
                return np.ascontiguousarray(y.reshape((-1,) + y.shape[3:]))

            dist = np.moveaxis(np.stack(dist_buf[g.module_id]), 0, 2)  # (B, k, T, width)
            batch = {
                OBS: rows(obs_buf),
                ACTIONS: rows(act_buf),
                ACTION_LOGP: rows(logp_buf),
                ACTION_DIST_INPUTS: np.ascontiguousarray(dist.reshape(-1, dist.shape[-1])),
                ADVANTAGES: rows(adv).astype(np.float32),
                VALUE_TARGETS: rows(targets).astype(np.float32),
                VF_PREDS: rows(values).astype(np.float32),
            }
            if cobs_buf is not None:
                batch[CRITIC_OBS] = rows(cobs_buf)
            if population_index is not None:
                batch[POPULATION_INDEX] = rows(population_index)
            batches[g.module_id] = batch
        return batches, stats

    def _bootstrap_values(self, modules: dict[str, Any], obs: NDArray[np.float32]) -> NDArray[np.float64]:
        """V of the observation a cut trajectory continues from, ``(k, n)`` for ``obs (k, n, D)``.
        A MAPPO critic also needs the others' actions there: sampled from the current policies."""
        if not self.centralized_critic:
            return self._values(modules, obs, None)
        actions, _, _ = self.act(modules, obs)
        return self._values(modules, obs, self.critic_obs(obs, actions))


def _population_aware(module: Any) -> bool:
    """Whether ``module`` acts and values from all agents of a copy at once (``joint_action_inputs``
    / ``joint_values``: MF-PPO's DeepSet modules) instead of from each agent's row."""
    return bool(getattr(module, "population_aware", False))


def _distinct_rows(keys: NDArray[np.int64], num_keys: int | None) -> tuple[NDArray, NDArray] | None:
    """For ``keys`` ``(R, k)`` (own-state ids of k agents in R copies/steps): the flat indices of
    one representative row per distinct (row, key) and the inverse map, or None when that would
    not save work (at most ``num_keys`` distinct values per row, so only for k > num_keys)."""
    if num_keys is None or keys.shape[1] <= num_keys:
        return None
    return distinct_keys(keys, num_keys)
