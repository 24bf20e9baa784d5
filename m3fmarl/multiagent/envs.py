"""The multi-agent view as a PettingZoo ``ParallelEnv`` and as an RLlib ``MultiAgentEnv``.

Both are the ``B = 1`` case of :class:`m3fmarl.multiagent.core.MultiAgentCore` (no second copy of
the dynamics).  Agents: ``major`` (not in 2G) and ``minor_0 … minor_{N-1}``; every agent gets the
team reward; episodes end by truncation after T steps (spec S11).

Constructors:

* ``m3fmarl.parallel_env(problem, num_minors=N, variant="paper", render_mode=None, **switches)``;
* RLlib: ``register_rllib_envs()`` registers ``m3fmarl-<problem>`` with Ray Tune's registry
  (env_config keys ``num_minors``, ``variant`` and switch overrides).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from numpy.typing import NDArray

from m3fmarl.multiagent.core import MultiAgentCore
from m3fmarl.problems import PROBLEMS
from m3fmarl.problems.core import State, check_choice

RENDER_MODES = ("rgb_array",)


def _agent_actions(core: MultiAgentCore, actions: dict[str, Any]) -> NDArray:
    """The ``(1, n_agents, …)`` action array from a dict keyed by agent id (by id, not dict order)."""
    missing = [a for a in core.agent_ids if a not in actions]
    if missing:
        raise ValueError(f"missing actions for {len(missing)} agent(s), e.g. {missing[0]!r}")
    unknown = sorted(set(actions) - set(core.agent_ids))
    if unknown:
        raise ValueError(f"unknown agent id {unknown[0]!r}; agents: major/minor_0..minor_{core.num_minors - 1}")
    if core.discrete:
        return np.array([[int(np.asarray(actions[a]).reshape(())) for a in core.agent_ids]], dtype=np.int64)
    return np.stack([np.asarray(actions[a], dtype=np.float64).reshape(core.action_dim) for a in core.agent_ids])[None]


def _render(core: MultiAgentCore, state: State, episode_return: float) -> NDArray[np.uint8]:
    from m3fmarl.render import figure_to_rgb, new_figure

    fig, ax = new_figure()
    core.problem.draw(ax, state, 0)
    ax.set_title(f"{core.name} (multi-agent)  N={core.num_minors}  t={int(state.t[0])}/{core.horizon}  "
                 f"return={episode_return:.1f}", fontsize=9)
    return figure_to_rgb(fig)


_PARALLEL_DOC = """PettingZoo parallel env of one problem's multi-agent view (see the module docstring).

The class is built on first use of :func:`parallel_env`, so ``import m3fmarl`` needs no
pettingzoo."""


def _parallel_env_class() -> type:
    from pettingzoo import ParallelEnv

    class _Env(ParallelEnv):
        __doc__ = _PARALLEL_DOC
        metadata = {"name": "m3fmarl_parallel_v0", "render_modes": list(RENDER_MODES), "is_parallelizable": True}

        def __init__(self, problem: str, num_minors: int = 20, variant: str = "paper",
                     render_mode: str | None = None, **switches: Any) -> None:
            if render_mode is not None:
                check_choice("render_mode", render_mode, RENDER_MODES)
            self.core = MultiAgentCore(problem, num_minors, variant, **switches)
            self.render_mode = render_mode
            self.possible_agents = list(self.core.agent_ids)
            self.agents: list[str] = []
            self._obs_space = self.core.observation_space()
            # one action space per agent, so that each agent's .sample() has its own seeded stream
            self._act_spaces = {a: self.core.action_space() for a in self.possible_agents}
            self._rng = np.random.default_rng()
            self.state: State | None = None
            self.episode_return = 0.0

        def observation_space(self, agent: str) -> Any:
            return self._obs_space

        def action_space(self, agent: str) -> Any:
            return self._act_spaces[agent]

        def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
            if seed is not None:
                self._rng = np.random.default_rng(seed)
                for i, agent in enumerate(self.possible_agents):
                    self._act_spaces[agent].seed(seed + i)
            self.state, obs = self.core.reset(1, self._rng)
            self.agents = list(self.possible_agents)
            self.episode_return = 0.0
            return {a: obs[0, i] for i, a in enumerate(self.agents)}, {a: {} for a in self.agents}

        def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
            if self.state is None or not self.agents:
                raise RuntimeError("call reset() before step() (the episode is over)")
            self.state, reward = self.core.step(self.state, _agent_actions(self.core, actions), self._rng)
            r = float(reward[0])
            self.episode_return += r
            obs = self.core.observe(self.state)[0]
            done = int(self.state.t[0]) >= self.core.horizon
            agents = self.agents
            out = ({a: obs[i] for i, a in enumerate(agents)}, {a: r for a in agents},
                   {a: False for a in agents}, {a: done for a in agents}, {a: {} for a in agents})
            if done:
                self.agents = []
            return out

        def render(self) -> NDArray[np.uint8] | None:
            if self.render_mode is None or self.state is None:
                return None
            return _render(self.core, self.state, self.episode_return)

        def close(self) -> None:
            pass

    _Env.__name__ = _Env.__qualname__ = "M3FParallelEnv"
    return _Env


@functools.cache
def _cached_parallel_class() -> type:
    return _parallel_env_class()


def parallel_env(problem: str, num_minors: int = 20, variant: str = "paper", render_mode: str | None = None,
                 **switches: Any) -> Any:
    """The PettingZoo ``ParallelEnv`` of ``problem``'s multi-agent view with N = ``num_minors``."""
    return _cached_parallel_class()(problem, num_minors, variant, render_mode, **switches)


# ----------------------------------------------------------------------------------------------
# RLlib
# ----------------------------------------------------------------------------------------------


def _rllib_env_class() -> type:
    from ray.rllib.env.multi_agent_env import MultiAgentEnv

    class _Env(MultiAgentEnv):
        """RLlib ``MultiAgentEnv`` of one problem's multi-agent view (``env_config``: ``problem``,
        ``num_minors``, ``variant``, switch overrides)."""

        def __init__(self, config: dict | None = None) -> None:
            super().__init__()
            config = dict(config or {})
            problem = config.pop("problem")
            num_minors = config.pop("num_minors", 20)
            variant = config.pop("variant", "paper")
            self.core = MultiAgentCore(problem, num_minors, variant, **config)
            self.possible_agents = list(self.core.agent_ids)
            self.agents = list(self.possible_agents)
            obs_space, act_space = self.core.observation_space(), self.core.action_space()
            self.observation_spaces = {a: obs_space for a in self.possible_agents}
            self.action_spaces = {a: act_space for a in self.possible_agents}
            self._rng = np.random.default_rng()
            self.state: State | None = None

        def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
            if seed is not None:
                self._rng = np.random.default_rng(seed)
            self.state, obs = self.core.reset(1, self._rng)
            self.agents = list(self.possible_agents)
            return {a: obs[0, i] for i, a in enumerate(self.agents)}, {}

        def step(self, action_dict: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
            if self.state is None:
                raise RuntimeError("call reset() before step()")
            self.state, reward = self.core.step(self.state, _agent_actions(self.core, action_dict), self._rng)
            r = float(reward[0])
            obs = self.core.observe(self.state)[0]
            done = int(self.state.t[0]) >= self.core.horizon
            agents = self.possible_agents
            return ({a: obs[i] for i, a in enumerate(agents)}, {a: r for a in agents},
                    {"__all__": False}, {**{a: done for a in agents}, "__all__": done}, {})

    _Env.__name__ = _Env.__qualname__ = "M3FMultiAgentEnv"
    return _Env


@functools.cache
def rllib_env_class() -> type:
    """The RLlib ``MultiAgentEnv`` class (built on first use; imports ray)."""
    return _rllib_env_class()


def rllib_env_name(problem: str) -> str:
    from m3fmarl.problems import canonical_name

    return f"m3fmarl-{canonical_name(problem)}"


def register_rllib_envs() -> list[str]:
    """Register ``m3fmarl-<problem>`` for every problem with Ray Tune's env registry."""
    from ray.tune.registry import register_env

    cls = rllib_env_class()
    names = []
    for name in PROBLEMS:
        def creator(config: Any, _name: str = name) -> Any:
            return cls({**dict(config or {}), "problem": _name})

        register_env(f"m3fmarl-{name}", creator)
        names.append(f"m3fmarl-{name}")
    return names
