"""Generalised advantage estimation (GAE), one numpy implementation for every sampler: M3FPPO /
M3FA2C (:mod:`m3fmarl.m3fc.sampler`, time-major ``(T, B)`` arrays) and IPPO/MAPPO
(:mod:`marl_baselines.sampler`, time-major per-agent ``(T, B, agents)`` arrays)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def gae(
    values: NDArray, rewards: NDArray, next_values: NDArray, ends: NDArray, gamma: float, lambda_: float,
) -> NDArray:
    """GAE(γ, λ) per agent over a rollout with time as the first axis.

    Args:
        values: ``(T, …)`` V(s_t) of every agent.
        rewards: ``(T, …)`` r_t (broadcastable to ``values``; the team reward per copy).
        next_values: ``(T, …)`` the value that bootstraps step t: V(s_{t+1}) inside an episode,
            V(final observation) where the episode was truncated after step t, and for the last
            step the value of the observation the next rollout continues from.
        ends: ``(T, …)`` bool, the episode (or the rollout piece) ended after step t: the
            recursion stops there (bootstrapped from ``next_values``, never across episodes).
            A terminal step is a step whose ``next_values`` entry is 0; no step is terminal in
            these problems (spec S11), so every end of an episode bootstraps.

    Returns:
        Advantages, float64, the shape of ``values``.
    """
    values = np.asarray(values, dtype=np.float64)
    deltas = np.asarray(rewards, dtype=np.float64) + gamma * np.asarray(next_values, dtype=np.float64) - values
    carry = gamma * lambda_ * (1.0 - np.asarray(ends, dtype=np.float64))
    carry = np.broadcast_to(carry, values.shape)
    adv = np.empty_like(values)
    running = np.zeros(values.shape[1:])
    for t in range(values.shape[0] - 1, -1, -1):
        running = deltas[t] + carry[t] * running
        adv[t] = running
    return adv
