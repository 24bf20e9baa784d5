"""Batched episode rollouts of the M3FC view with fixed (non-learned) policies.

Used by the golden statistical tests, the demo and the benchmarks.  Episodes are played
``num_envs`` at a time in one :class:`~m3fmarl.m3fc.vector.M3FCVectorEnv`; every episode lasts
exactly T steps, so a batch of copies starts and ends together.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from m3fmarl.m3fc.vector import M3FCVectorEnv

Policy = Callable[[np.ndarray, spaces.Space, np.random.Generator], Any]
"""(batched observation, batched action space, rng) → batched action."""


def zero_policy(obs: np.ndarray, action_space: spaces.Space, rng: np.random.Generator) -> Any:
    """P0 of golden/README.md: ξ = 0 and the major action 0 (Beach: 0 = stay) at every step."""
    del obs, rng
    if isinstance(action_space, spaces.Tuple):
        return tuple(_zeros(s) for s in action_space.spaces)
    return _zeros(action_space)


def _zeros(space: spaces.Space) -> np.ndarray:
    return np.zeros(space.shape, dtype=space.dtype)


def uniform_policy(obs: np.ndarray, action_space: spaces.Space, rng: np.random.Generator) -> Any:
    """Every action component uniform on its space (drawn from ``rng``)."""
    del obs
    if isinstance(action_space, spaces.Tuple):
        return tuple(_uniform(s, rng) for s in action_space.spaces)
    return _uniform(action_space, rng)


def _uniform(space: spaces.Space, rng: np.random.Generator) -> np.ndarray:
    if isinstance(space, spaces.Box):
        return rng.uniform(space.low, space.high).astype(space.dtype)
    if isinstance(space, spaces.MultiDiscrete):
        return rng.integers(0, space.nvec)
    if isinstance(space, spaces.Discrete):
        return np.int64(space.start + rng.integers(space.n))
    raise TypeError(f"unsupported space {space}")


POLICIES: dict[str, Policy] = {"zero": zero_policy, "uniform": uniform_policy}


@dataclass(frozen=True)
class ReturnStats:
    """Episode-return statistics: sample std (ddof 1) and the 95% half-width 1.96·s/√n."""

    episodes: int
    mean: float
    std: float

    @property
    def ci95(self) -> float:
        return 1.96 * self.std / math.sqrt(self.episodes) if self.episodes > 1 else float("inf")

    @classmethod
    def of(cls, returns: np.ndarray) -> ReturnStats:
        r = np.asarray(returns, dtype=np.float64)
        return cls(len(r), float(r.mean()), float(r.std(ddof=1)) if len(r) > 1 else 0.0)


def play(
    env: M3FCVectorEnv, act: Callable[[np.ndarray], Any], episodes: int, seed: int | None = None,
    on_step: Callable[[int, Any, np.ndarray | None], None] | None = None,
) -> np.ndarray:
    """The batched episode loop: play ``episodes`` full episodes in ``env``, ``env.num_envs`` at
    a time, with ``act(obs) -> actions``; return their undiscounted returns.

    The first batch resets ``env`` with ``seed``, later ones continue its generator.  Every
    episode lasts exactly T steps: an episode ending elsewhere raises ``RuntimeError``.
    ``on_step(t, state, rewards)``, if given, sees the state at t = 0 (rewards None) and after
    every step t = 1..T (the rewards of that step), for every batch.  Shared by the fixed-policy
    rollouts, the evaluation of trained policies (:func:`m3fmarl.evaluate.evaluate`) and the
    qualitative figures (:mod:`m3fmarl.results.frames`).
    """
    horizon = env.problem.horizon
    out: list[np.ndarray] = []
    done = 0
    first = True
    while done < episodes:
        obs, _ = env.reset(seed=seed if first else None)
        first = False
        if on_step is not None:
            on_step(0, env.state, None)
        total = np.zeros(env.num_envs)
        truncated = np.zeros(env.num_envs, dtype=bool)
        for t in range(horizon):
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += reward
            if terminated.any() or truncated.any() != (t == horizon - 1):
                raise RuntimeError(f"{env.problem.name}: episode ended off the horizon T = {horizon} at step {t + 1}")
            if on_step is not None:
                on_step(t + 1, env.state, reward)
        if not truncated.all():
            raise RuntimeError(f"{env.problem.name}: not every copy was truncated at T = {horizon}")
        out.append(total)
        done += env.num_envs
    return np.concatenate(out)[:episodes]


def episode_returns(
    problem: str, num_minors: int, episodes: int, *, variant: str = "paper", policy: str | Policy = "zero",
    seed: int = 0, num_envs: int = 64, execution: str = "centralized", **switches: Any,
) -> np.ndarray:
    """Undiscounted returns of ``episodes`` full episodes (T steps each) of a fixed policy,
    ``num_envs`` at a time."""
    pol = POLICIES[policy] if isinstance(policy, str) else policy
    rng = np.random.default_rng(seed)
    env = M3FCVectorEnv(problem, num_envs=min(num_envs, episodes), num_minors=num_minors,
                        variant=variant, execution=execution, **switches)
    return play(env, lambda obs: pol(obs, env.action_space, rng), episodes, seed)
