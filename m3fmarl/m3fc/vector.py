"""Batched M3FC environment: B copies stepped in one numpy call (a Gymnasium ``VectorEnv``).

Registered as the ``vector_entry_point`` of every ``m3fmarl/*-v0`` id, so that
``gymnasium.make_vec(id, num_envs=B, vectorization_mode="vector_entry_point", num_minors=N)``
(and RLlib's env runners) get it.  Same code path as :class:`m3fmarl.m3fc.env.M3FCEnv`: with
B = 1 and the same seed the two produce identical trajectories.

Autoreset follows Gymnasium's default ``NEXT_STEP`` mode: the step after a copy was truncated
resets that copy (its action is ignored, reward 0, both flags false) and returns the first
observation of its new episode.  Copies that do not reset step as usual.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from numpy.typing import NDArray

from m3fmarl.m3fc.env import RENDER_MODES, M3FCCore
from m3fmarl.problems.core import FloatArray, State, check_choice, put_copies


class M3FCVectorEnv(VectorEnv):
    metadata = {"render_modes": list(RENDER_MODES), "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self, problem: str = "beach-bar", num_envs: int = 1, num_minors: int = 20, variant: str = "paper",
        execution: str = "centralized", render_mode: str | None = None, **switches: Any,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        if render_mode is not None:
            check_choice("render_mode", render_mode, RENDER_MODES)
        self.core = M3FCCore(problem, num_minors, variant, execution, **switches)
        self.problem = self.core.problem
        self.num_envs = int(num_envs)
        self.render_mode = render_mode
        self.single_observation_space = self.core.observation_space
        self.single_action_space = self.core.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.state: State | None = None
        self._needs_reset = np.zeros(self.num_envs, dtype=bool)
        self.episode_returns = np.zeros(self.num_envs)

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None) -> tuple[FloatArray, dict]:
        if isinstance(seed, (list, tuple)):
            seed = seed[0] if seed else None  # one generator drives all copies
        super().reset(seed=seed)
        self.state = self.problem.reset(self.num_envs, self.np_random)
        self._needs_reset[:] = False
        self.episode_returns[:] = 0.0
        return self.core.observe(self.state), {}

    def step(self, actions: Any) -> tuple[FloatArray, FloatArray, NDArray, NDArray, dict]:
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        xi, major = self.core.split_action(actions, self.num_envs)
        rng = self.np_random
        rewards = np.zeros(self.num_envs)
        resetting = self._needs_reset
        if not resetting.any():
            self.state, rewards = self.core.advance(self.state, xi, major, rng)
        else:
            live = ~resetting
            if live.any():
                part, r = self.core.advance(
                    self.state.take(live), xi[live], None if major is None else major[live], rng
                )
                self.state = put_copies(self.state, live, part)
                rewards[live] = r
            self.state = put_copies(self.state, resetting, self.problem.reset(int(resetting.sum()), rng))
            self.episode_returns[resetting] = 0.0
        self.episode_returns += rewards
        truncated = (self.state.t >= self.problem.horizon) & ~resetting
        self._needs_reset = truncated.copy()
        terminated = np.zeros(self.num_envs, dtype=bool)
        return self.core.observe(self.state), rewards, terminated, truncated, {}

    def render(self) -> tuple[NDArray[np.uint8], ...] | None:
        if self.render_mode is None or self.state is None:
            return None
        return tuple(self.core.render_rgb(self.state, i, float(self.episode_returns[i])) for i in range(self.num_envs))
