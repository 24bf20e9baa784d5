"""The multi-agent view of the five problems, batched over copies (spec/environments.md §1.3,
§2.5, §3.5, §4.5, §5.5, §6.5).

Every agent observes (own state, observable major state, the histogram layers the M3FC policy
sees) and sends its own action; every agent receives the shared team reward.  Agents are
``major`` (absent in 2G) followed by ``minor_0 … minor_{N-1}``; arrays carry the agents on axis
1 in exactly that order, so one call encodes all agents of all ``B`` copies:

* observations ``(B, n_agents, obs_dim)`` float32,
* actions ``(B, n_agents, d)`` float in [-1, 1] (clipped here, RLlib's ``normalize_actions``
  clip) or ``(B, n_agents)`` ints for Beach bar; the major acts in the minor action space.

The dynamics and the per-agent observations are the problem's own (:mod:`m3fmarl.problems`:
``agent_observations``, ``agent_observation_bounds``, ``agent_layout``, ``agent_own_keys``);
this module only assembles them and routes actions.  The PettingZoo and RLlib environments
(:mod:`m3fmarl.multiagent.envs`) are the ``B = 1`` case; the IPPO/MAPPO sampler
(:mod:`marl_baselines.sampler`) steps ``B`` copies at once.

For a centralised critic (MAPPO) :meth:`MultiAgentCore.global_state` returns, per copy, the
part of the observation that all agents share once plus every agent's own-state slot in agent
order.  This carries exactly the information of the reference's stacked observations of all
agents (a linear layer on the stacked vector equals one on this vector with the shared weights
summed), without storing the shared histogram ``n_agents`` times per sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from m3fmarl.problems import make_problem
from m3fmarl.problems.core import FloatArray, Problem, State

MAJOR_ID = "major"


def minor_id(i: int) -> str:
    return f"minor_{i}"


def policy_of(agent_id: str) -> str:
    """Policy of an agent: ``major`` or ``minor`` (2G: every agent ``minor``; spec §1.6)."""
    return MAJOR_ID if agent_id == MAJOR_ID else "minor"


@dataclass(frozen=True)
class Layout:
    """Where the parts of one agent's flat observation sit.

    ``own``: indices holding the agent's own state once (zeros or a fixed value for the major);
    ``shared``: indices that are equal for all agents of a copy (major state, histograms).
    Together they cover every distinct piece of information (2G repeats ``own`` in all 49 cells;
    only the first copy is listed).
    """

    own: NDArray[np.int64]
    shared: NDArray[np.int64]


class MultiAgentCore:
    """Batched multi-agent view of one problem: encode observations, route actions, step.

    Args:
        problem: problem name (``beach-bar``, …) or a :class:`~m3fmarl.problems.core.Problem`.
        num_minors: N (ignored when ``problem`` is a Problem instance).
        variant: ``paper`` or ``reference``; ``**switches`` override single switches.
    """

    def __init__(self, problem: str | Problem, num_minors: int = 20, variant: str = "paper", **switches: Any) -> None:
        if not isinstance(problem, Problem):
            problem = make_problem(problem, num_minors, variant, **switches)
        self.problem = problem
        p = self.problem
        self.name = p.name
        self.num_minors = p.num_minors
        self.horizon = p.horizon
        self.has_major = p.has_major
        self.agent_ids: list[str] = ([MAJOR_ID] if self.has_major else []) + [minor_id(i) for i in range(p.num_minors)]
        self.num_agents = len(self.agent_ids)
        self.minor_offset = 1 if self.has_major else 0
        self.discrete = p.discrete
        self.action_dim = None if self.discrete else int(p.minor_action_dim)
        self.num_actions = int(p.num_minor_actions) if self.discrete else None
        self.obs_low, self.obs_high = p.agent_observation_bounds()
        self.obs_dim = int(self.obs_low.shape[0])
        own, shared = p.agent_layout()
        self.layout = Layout(own=np.asarray(own), shared=np.asarray(shared))
        self._source: NDArray[np.int64] | None = None  # observations_from_global's map, built on first use

    # --- spaces ------------------------------------------------------------------------------
    def observation_space(self) -> Any:
        from gymnasium import spaces

        return spaces.Box(self.obs_low.astype(np.float32), self.obs_high.astype(np.float32), dtype=np.float32)

    def action_space(self) -> Any:
        from gymnasium import spaces

        if self.discrete:
            return spaces.Discrete(self.num_actions)
        return spaces.Box(-1.0, 1.0, (self.action_dim,), dtype=np.float32)

    # --- dynamics ----------------------------------------------------------------------------
    def reset(self, num_envs: int, rng: np.random.Generator) -> tuple[State, NDArray[np.float32]]:
        state = self.problem.reset(num_envs, rng)
        return state, self.observe(state)

    def observe(self, state: State) -> NDArray[np.float32]:
        """``(B, n_agents, obs_dim)`` float32 observations, agents in :attr:`agent_ids` order."""
        return self.problem.agent_observations(state)

    def step(self, state: State, actions: NDArray, rng: np.random.Generator) -> tuple[State, FloatArray]:
        """Apply every agent's action; returns the next state and the team reward ``(B,)``.

        ``actions``: ``(B, n_agents, d)`` floats (clipped to [-1, 1] here) or ``(B, n_agents)``
        ints in ``[0, 5)`` for Beach bar.
        """
        b = state.num_envs
        if self.discrete:
            a = np.asarray(actions)
            if a.shape != (b, self.num_agents):
                raise ValueError(f"actions: expected shape {(b, self.num_agents)}, got {a.shape}")
            if not np.issubdtype(a.dtype, np.integer):
                if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
                    raise ValueError("actions: Beach bar actions must be integers in 0..4")
                a = a.astype(np.int64)
            if a.size and (a.min() < 0 or a.max() >= self.num_actions):
                raise ValueError(f"actions: must be in 0..{self.num_actions - 1}")
            major = a[:, 0] if self.has_major else None
            minors = a[:, self.minor_offset:]
        else:
            a = np.asarray(actions, dtype=np.float64)
            if a.shape != (b, self.num_agents, self.action_dim):
                raise ValueError(f"actions: expected shape {(b, self.num_agents, self.action_dim)}, got {a.shape}")
            if not np.all(np.isfinite(a)):
                raise ValueError("actions: contains NaN or inf")
            a = np.clip(a, -1.0, 1.0)
            major = a[:, 0] if self.has_major else None
            minors = a[:, self.minor_offset:]
        return self.problem.step(state, major, minors, rng)

    @property
    def num_own_keys(self) -> int | None:
        """How many distinct own states an agent can have (Beach bar: 25 cells), else None."""
        return self.problem.num_own_keys

    def own_keys(self, state: State) -> NDArray[np.int64] | None:
        """``(B, n_agents)`` id of each agent's own state, for problems whose own state is one of
        :attr:`num_own_keys` values (Beach bar); agents of one copy with the same key have the
        same observation.  None for continuous own states."""
        return self.problem.agent_own_keys(state)

    def global_state(self, obs: NDArray[np.float32]) -> NDArray[np.float32]:
        """``(B, G)``: the shared part of the observation once, then every agent's own slot."""
        b = obs.shape[0]
        shared = obs[:, 0, self.layout.shared]
        own = obs[:, :, self.layout.own].reshape(b, -1)
        return np.concatenate([shared, own], axis=1)

    @property
    def global_state_dim(self) -> int:
        return int(self.layout.shared.size + self.num_agents * self.layout.own.size)

    def observations_from_global(self, g: NDArray[np.float32]) -> NDArray[np.float32]:
        """Inverse of :meth:`global_state`: every agent's observation ``(B, n_agents, obs_dim)``
        from ``(B, G)``.  What a replay buffer stores instead of the observations (HMF):
        ``global_state_dim`` numbers per step instead of ``n_agents · obs_dim``."""
        source = self._observation_source()
        b = g.shape[0]
        s = self.layout.shared.size
        per_agent = np.empty((b, self.num_agents, s + self.layout.own.size), dtype=np.float32)
        per_agent[:, :, :s] = g[:, None, :s]
        per_agent[:, :, s:] = g[:, s:].reshape(b, self.num_agents, -1)
        return per_agent[:, :, source]

    def _observation_source(self) -> NDArray[np.int64]:
        """Per observation entry, its index in [shared, own] of one agent.  Entries outside the
        layout repeat an own entry (2G writes the own position into every cell); which one is
        found once on a reset sample and checked to rebuild that sample exactly."""
        if self._source is not None:
            return self._source
        s = self.layout.shared.size
        source = np.full(self.obs_dim, -1, dtype=np.int64)
        source[self.layout.shared] = np.arange(s)
        source[self.layout.own] = s + np.arange(self.layout.own.size)
        _, obs = self.reset(4, np.random.default_rng(0))
        for j in np.flatnonzero(source < 0):
            same = [i for i, o in enumerate(self.layout.own) if np.array_equal(obs[..., j], obs[..., o])]
            if len(same) != 1:
                raise RuntimeError(f"{self.name}: observation entry {j} is neither shared nor one own entry")
            source[j] = s + same[0]
        self._source = source
        if not np.array_equal(self.observations_from_global(self.global_state(obs)), obs):
            self._source = None
            raise RuntimeError(f"{self.name}: observations cannot be rebuilt from the global state")
        return source
