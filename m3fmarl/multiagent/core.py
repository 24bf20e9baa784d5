"""The multi-agent view of the five problems, batched over copies (spec/environments.md §1.3,
§2.5, §3.5, §4.5, §5.5, §6.5).

Every agent observes (own state, observable major state, the histogram layers the M3FC policy
sees) and sends its own action; every agent receives the shared team reward.  Agents are
``major`` (absent in 2G) followed by ``minor_0 … minor_{N-1}``; arrays carry the agents on axis
1 in exactly that order, so one call encodes all agents of all ``B`` copies:

* observations ``(B, n_agents, obs_dim)`` float32,
* actions ``(B, n_agents, d)`` float in [-1, 1] (clipped here, RLlib's ``normalize_actions``
  clip) or ``(B, n_agents)`` ints for Beach bar; the major acts in the minor action space.

The dynamics are the problem's own (:mod:`m3fmarl.problems`); this module only encodes
observations and routes actions.  The PettingZoo and RLlib environments
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
        self.problem = problem if isinstance(problem, Problem) else make_problem(problem, num_minors, variant, **switches)
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
        self._encoder = _ENCODERS[p.name](p)
        self.obs_low, self.obs_high = self._encoder.bounds()
        self.obs_dim = int(self.obs_low.shape[0])
        self.layout = self._encoder.layout()

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
        return self._encoder.observe(state)

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
        return self._encoder.num_own_keys

    def own_keys(self, state: State) -> NDArray[np.int64] | None:
        """``(B, n_agents)`` id of each agent's own state, for problems whose own state is one of
        :attr:`num_own_keys` values (Beach bar); agents of one copy with the same key have the
        same observation.  None for continuous own states."""
        return self._encoder.own_keys(state)

    def global_state(self, obs: NDArray[np.float32]) -> NDArray[np.float32]:
        """``(B, G)``: the shared part of the observation once, then every agent's own slot."""
        b = obs.shape[0]
        shared = obs[:, 0, self.layout.shared]
        own = obs[:, :, self.layout.own].reshape(b, -1)
        return np.concatenate([shared, own], axis=1)

    @property
    def global_state_dim(self) -> int:
        return int(self.layout.shared.size + self.num_agents * self.layout.own.size)


# ----------------------------------------------------------------------------------------------
# per-problem observation encoders
# ----------------------------------------------------------------------------------------------


class _Encoder:
    own_dim: int
    num_own_keys: int | None = None

    def own_keys(self, state: Any) -> NDArray[np.int64] | None:
        return None

    def __init__(self, problem: Any) -> None:
        self.p = problem
        self.n_agents = problem.num_minors + (1 if problem.has_major else 0)

    def own(self, state: Any) -> FloatArray:  # (B, n_agents, own_dim)
        raise NotImplementedError

    def shared(self, state: Any) -> FloatArray:  # (B, shared_dim)
        raise NotImplementedError

    def observe(self, state: Any) -> NDArray[np.float32]:
        own = self.own(state)
        shared = self.shared(state)
        b = shared.shape[0]
        out = np.empty((b, self.n_agents, own.shape[2] + shared.shape[1]), dtype=np.float32)
        out[:, :, : own.shape[2]] = own
        out[:, :, own.shape[2]:] = shared[:, None, :]
        return out

    def bounds(self) -> tuple[FloatArray, FloatArray]:
        raise NotImplementedError

    def layout(self) -> Layout:
        d = self.bounds()[0].shape[0]
        return Layout(own=np.arange(self.own_dim), shared=np.arange(self.own_dim, d))


def _with_major_slot(minor_own: FloatArray, major_own: FloatArray | None) -> FloatArray:
    """Stack the major's own-state slot (``(d,)``, same for all copies) before the minors'."""
    if major_own is None:
        return minor_own
    b, _, d = minor_own.shape
    head = np.broadcast_to(np.asarray(major_own, dtype=minor_own.dtype), (b, 1, d))
    return np.concatenate([head, minor_own], axis=1)


class _TwoGaussians(_Encoder):
    """§2.5: the (7, 7, 4) array [(x1+2)/4, (x2+2)/4, minors counts/N, particles counts/K] per
    cell, C order; histograms × ``marl_hist_scale`` (M3: reference 1, paper 10)."""

    own_dim = 2

    def observe(self, state: Any) -> NDArray[np.float32]:
        from m3fmarl.problems.two_gaussians import two_layer_histogram

        b, n, _ = state.minors.shape
        hist = two_layer_histogram(state.minors, state.particles).reshape(b, 49, 2) * self.p.switches.marl_hist_scale
        out = np.empty((b, n, 49, 4), dtype=np.float32)
        out[..., :2] = ((state.minors + 2.0) / 4.0)[:, :, None, :]
        out[..., 2:] = hist[:, None, :, :]
        return out.reshape(b, n, 196)

    def bounds(self) -> tuple[FloatArray, FloatArray]:
        high = np.tile([1.0, 1.0, self.p.switches.marl_hist_scale, self.p.switches.marl_hist_scale], 49)
        return np.zeros(196), high

    def layout(self) -> Layout:
        cells = np.arange(196).reshape(49, 4)
        return Layout(own=np.array([0, 1]), shared=cells[:, 2:].ravel())


class _Formation(_Encoder):
    """§3.5: own x (2, zeros for the major), (y1, y2, z1, z2), the 98-number histogram."""

    own_dim = 2

    def own(self, state: Any) -> FloatArray:
        return _with_major_slot(state.minors, np.zeros(2))

    def shared(self, state: Any) -> FloatArray:
        from m3fmarl.problems.two_gaussians import two_layer_histogram

        return np.concatenate([state.major, state.target, two_layer_histogram(state.minors, state.particles)], axis=1)

    def bounds(self) -> tuple[FloatArray, FloatArray]:
        return np.concatenate([np.full(6, -2.0), np.zeros(98)]), np.concatenate([np.full(6, 2.0), np.ones(98)])


class _BeachBar(_Encoder):
    """§4.5: own state as two 5-way one-hots (the major: one-hot of (0, 0)), one-hots of y and z
    (20), the 25-number histogram (joint, or the B4 row-union values under ``reference``)."""

    own_dim = 10
    num_own_keys = 26  # 25 cells; the major's fixed slot gets key 25

    def own_keys(self, state: Any) -> NDArray[np.int64]:
        b = state.minors.shape[0]
        return np.concatenate([np.full((b, 1), 25, dtype=np.int64), state.minors], axis=1)

    def own(self, state: Any) -> FloatArray:
        from m3fmarl.problems.beach_bar import CELL_XY, GRID, ONE_HOT

        b, n = state.minors.shape
        minor = ONE_HOT[CELL_XY[state.minors]].reshape(b, n, 2 * GRID)
        return _with_major_slot(minor, ONE_HOT[[0, 0]].ravel())

    def shared(self, state: Any) -> FloatArray:
        return np.concatenate([self.p.major_observation(state), self.p.histogram(state)], axis=1)

    def bounds(self) -> tuple[FloatArray, FloatArray]:
        return np.zeros(55), np.ones(55)


class _Foraging(_Encoder):
    """§5.5: own (p1, p2, e) (zeros for the major), truck (y1, y2), then per histogram cell the
    minors' mass and — if ``marl_area_histogram`` (R9, reference) — the alive areas' count / 5
    (areas sit in encumbrance cell 0)."""

    own_dim = 3

    def own(self, state: Any) -> FloatArray:
        minor = np.concatenate([state.positions, state.encumbrance[:, :, None]], axis=2)
        return _with_major_slot(minor, np.zeros(3))

    def _layers(self) -> int:
        return 2 if self.p.switches.marl_area_histogram else 1

    def shared(self, state: Any) -> FloatArray:
        mu = self.p.histogram(state)
        if not self.p.switches.marl_area_histogram:
            return np.concatenate([state.major, mu], axis=1)
        b = mu.shape[0]
        area = self.p.area_histogram(state)  # (B, 7, 7, 2): encumbrance cells 0 and 1
        if self.p.switches.enc_bins == 1:
            area = area[..., :1]
        hist = np.stack([mu, area.reshape(b, -1)], axis=-1).reshape(b, -1)
        return np.concatenate([state.major, hist], axis=1)

    def bounds(self) -> tuple[FloatArray, FloatArray]:
        m = self.p.num_cells * self._layers()
        low = np.concatenate([[-2.0, -2.0, 0.0], [-2.0, -2.0], np.zeros(m)])
        high = np.concatenate([[2.0, 2.0, 1.0], [2.0, -1.0], np.ones(m)])
        return low, high


class _Potential(_Encoder):
    """§6.5: own x (0 for the major), (y, z), the 7-bin histogram."""

    own_dim = 1

    def own(self, state: Any) -> FloatArray:
        return _with_major_slot(state.minors[:, :, None], np.zeros(1))

    def shared(self, state: Any) -> FloatArray:
        from m3fmarl.problems.potential import NUM_BINS
        from m3fmarl.problems.core import batched_histogram

        hist = batched_histogram(self.p.cells(state), NUM_BINS)
        return np.concatenate([state.major[:, None], state.target[:, None], hist], axis=1)

    def bounds(self) -> tuple[FloatArray, FloatArray]:
        return np.concatenate([np.full(3, -2.0), np.zeros(7)]), np.concatenate([np.full(3, 2.0), np.ones(7)])


_ENCODERS: dict[str, type[_Encoder]] = {
    "two-gaussians": _TwoGaussians,
    "formation": _Formation,
    "beach-bar": _BeachBar,
    "foraging": _Foraging,
    "potential": _Potential,
}
