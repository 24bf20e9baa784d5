"""Batched sampling of the M3FC view for M3FPPO and M3FA2C.

One :class:`M3FCSampler` steps ``B`` copies of :class:`~m3fmarl.m3fc.env.M3FCCore` together:
per step one actor pass on the ``(B, D)`` observations, one sample of the upper-level action per
copy (centralised execution), the Box parts clipped to [−1, 1] on their way to the simulator
(RLlib's ``normalize_actions`` on Box(−1, 1); the unclipped sample is stored and scored, spec
§1.1 item 7).  After the rollout the critic runs once over all stored observations, GAE(γ, λ)
runs backwards over time on ``(B,)`` slices, and the result is one flat train batch whose rows
are ordered copy-major (each copy's trajectory contiguous, as RLlib concatenates episode chunks).

Episode ends are truncations at T (bootstrapped from V of the final observation, spec S11).
``fragment`` (M3FA2C: 20, the RLlib-1.8 A2C rollout fragment) additionally cuts every copy's
rollout every ``fragment`` steps: GAE stops there and bootstraps from V of the next observation,
exactly as RLlib 1.8 post-processed each fragment.

Episodes continue across :meth:`M3FCSampler.sample` calls (as the reference's one env did
across rollout fragments): a piece cut at the end of a call bootstraps from V of the next
observation, and the next call goes on from there.  With the defaults (120 copies × 200 steps =
24 000) every call holds whole episodes.  :meth:`M3FCSampler.get_state` /
:meth:`M3FCSampler.set_state` carry the copies' states, the env generator and the recent
returns through checkpoints, so a resumed run continues the very same episodes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import tree
from gymnasium import spaces

from m3fmarl.advantages import gae
from m3fmarl.m3fc.env import M3FCCore
from m3fmarl.problems.core import put_copies
from m3fmarl.sampling import (
    ACTION_DIST_INPUTS,
    ACTION_LOGP,
    ACTIONS,
    ADVANTAGES,
    OBS,
    VALUE_TARGETS,
    VF_PREDS,
    SamplerState,
    actor_inputs,
    values_in_chunks,
)

RECENT_EPISODES = 100
"""Finished training episodes the smoothed return is taken over (RLlib-1.8
``metrics_smoothing_episodes``)."""


@dataclass
class SampleStats:
    env_steps: int = 0
    episode_returns: list[float] = field(default_factory=list)


class M3FCSampler(SamplerState):
    """Steps ``num_envs`` copies of the M3FC view with one actor pass per step.

    Args:
        core: the M3FC view (problem, variant, switches; centralised execution).
        num_envs: copies B.
        gamma, lambda_: GAE parameters.
        fragment: cut (and bootstrap) every copy's rollout every ``fragment`` steps; None = only
            at episode ends and at the end of the rollout.
    """

    def __init__(self, core: M3FCCore, num_envs: int, *, gamma: float = 0.99, lambda_: float = 1.0,
                 fragment: int | None = None) -> None:
        if core.decentralized:
            raise ValueError("training samples with centralized execution (one upper-level action per step)")
        if fragment is not None and fragment < 1:
            raise ValueError(f"fragment must be >= 1 or None, got {fragment}")
        self.core = core
        self.problem = core.problem
        self.num_envs = int(num_envs)
        self.gamma, self.lambda_ = float(gamma), float(lambda_)
        self.fragment = fragment
        space = core.action_space
        self._parts = list(space.spaces) if isinstance(space, spaces.Tuple) else [space]
        self._tuple = isinstance(space, spaces.Tuple)
        self.recent_returns: deque[float] = deque(maxlen=RECENT_EPISODES)
        self.rng: np.random.Generator | None = None
        self.state: Any = None
        self.obs: np.ndarray | None = None
        self.episode_return = np.zeros(self.num_envs)

    def reset(self, seed: int) -> None:
        """Fresh episodes in every copy, from a new env generator seeded with ``seed``."""
        self.rng = np.random.default_rng(seed)
        self.state = self.problem.reset(self.num_envs, self.rng)
        self.obs = self.core.observe(self.state).astype(np.float32)
        self.episode_return = np.zeros(self.num_envs)

    # --- policy ------------------------------------------------------------------------------
    def act(self, module: Any, obs: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """One upper-level action per row of ``obs`` ``(B, D)``: the raw sampled parts (list,
        one array per action-space part), their log-probabilities ``(B,)`` and the
        distribution inputs ``(B, W)``.  Draws from torch's global generator."""
        with torch.no_grad():
            inputs = actor_inputs(module, torch.from_numpy(np.asarray(obs, dtype=np.float32)))
            dist = module.get_exploration_action_dist_cls().from_logits(inputs)
            sample = dist.sample()
            logp = dist.logp(sample)
        parts = [t.numpy() for t in tree.flatten(sample)]
        return parts, logp.numpy(), inputs.numpy()

    def to_env(self, parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """``(xi, major)`` for :meth:`M3FCCore.advance`: Box parts clipped to their bounds
        (RLlib's ``normalize_actions`` on Box(−1, 1)), a Discrete major as int64."""
        out = []
        for space, part in zip(self._parts, parts, strict=True):
            if isinstance(space, spaces.Box):
                out.append(np.clip(part, space.low, space.high).astype(np.float64))
            else:
                out.append(part.astype(np.int64))
        return out[0], (out[1] if self._tuple else None)

    # --- rollout -----------------------------------------------------------------------------
    def sample(self, module: Any, steps_per_env: int) -> tuple[dict[str, Any], SampleStats]:
        """``steps_per_env`` more steps of every copy (continuing their episodes); returns the
        train batch (obs, actions, action_logp, action_dist_inputs, advantages — not
        standardised —, value_targets, vf_preds) and the episode statistics."""
        if self.rng is None:
            raise RuntimeError("M3FCSampler: reset(seed) before sample()")
        core, problem, b, t_len = self.core, self.problem, self.num_envs, int(steps_per_env)
        rng, state, obs, episode_return = self.rng, self.state, self.obs, self.episode_return
        obs_buf = np.empty((t_len, b, obs.shape[1]), dtype=np.float32)
        act_bufs: list[np.ndarray] | None = None
        logp_buf = np.empty((t_len, b), dtype=np.float32)
        dist_buf: np.ndarray | None = None
        rew_buf = np.empty((t_len, b))
        end_buf = np.zeros((t_len, b), dtype=bool)
        final_obs: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # t -> (copies that ended, last obs)
        stats = SampleStats(env_steps=t_len * b)
        for t in range(t_len):
            parts, logp, inputs = self.act(module, obs)
            if act_bufs is None:
                act_bufs = [np.empty((t_len,) + p.shape, dtype=p.dtype) for p in parts]
                dist_buf = np.empty((t_len,) + inputs.shape, dtype=np.float32)
            obs_buf[t], logp_buf[t], dist_buf[t] = obs, logp, inputs
            for buf, p in zip(act_bufs, parts, strict=True):
                buf[t] = p
            xi, major = self.to_env(parts)
            state, reward = core.advance(state, xi, major, rng)
            rew_buf[t] = reward
            episode_return += reward
            obs = core.observe(state).astype(np.float32)
            ended = state.t >= problem.horizon
            if ended.any():
                idx = np.flatnonzero(ended)
                end_buf[t, idx] = True
                final_obs[t] = (idx, obs[idx])
                finished = episode_return[idx].tolist()
                self.recent_returns.extend(finished)
                stats.episode_returns.extend(finished)
                episode_return[idx] = 0.0
                state = put_copies(state, idx, problem.reset(len(idx), rng))
                obs = core.observe(state).astype(np.float32)
        self.state, self.obs, self.episode_return = state, obs, episode_return
        values = values_in_chunks(module, obs_buf.reshape(t_len * b, -1)).reshape(t_len, b)
        next_values = np.empty_like(values)
        next_values[:-1] = values[1:]
        next_values[-1] = values_in_chunks(module, obs)
        for t, (idx, last) in final_obs.items():
            next_values[t, idx] = values_in_chunks(module, last)
        ends = end_buf.copy()
        ends[-1] = True
        if self.fragment is not None:
            ends[self.fragment - 1::self.fragment] = True  # next_values there are V(next obs) already
        adv = gae(values, rew_buf, next_values, ends, self.gamma, self.lambda_)

        def rows(x: np.ndarray) -> np.ndarray:  # (T, B, ...) -> copy-major rows
            y = np.swapaxes(x, 0, 1)
            return np.ascontiguousarray(y.reshape((t_len * b,) + x.shape[2:]))

        assert act_bufs is not None and dist_buf is not None
        actions = [rows(a) for a in act_bufs]
        batch = {
            OBS: rows(obs_buf),
            ACTIONS: tuple(actions) if self._tuple else actions[0],
            ACTION_LOGP: rows(logp_buf),
            ACTION_DIST_INPUTS: rows(dist_buf),
            ADVANTAGES: rows(adv).astype(np.float32),
            VALUE_TARGETS: rows(adv + values).astype(np.float32),
            VF_PREDS: rows(values).astype(np.float32),
        }
        return batch, stats
