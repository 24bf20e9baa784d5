"""The M3FC upper-level MDP as a Gymnasium environment (spec/environments.md §1.2).

Description:
    One step of the upper-level MDP: observe the major state and the binned histogram of the
    minor states; act with the major action and ξ; ξ is decoded into one decision rule that every
    minor samples its own action from (centralised execution, CE), or each minor decodes its own
    independent sample of the upper-level action (decentralised execution, DE, evaluation only).
    Reward and horizon are those of the problem; episodes end by truncation after T steps.

Observation Space:
    ``Box(low, high, (obs_dim,), float64)``: histogram layers (C order, layers interleaved per
    cell), then the observable major state.  Layouts per problem (reference shapes):

    =============  =========  ===================================================  ==========
    problem        obs_dim    layout                                               ξ size
    =============  =========  ===================================================  ==========
    2G             98         (7,7,2) ×10: minors, target particles                196
    Formation      102        (7,7,2): minors, particles; then y (2), z (2)        196
    Beach bar      45         25-cell histogram; one-hots y¹, y², z¹, z²           125
    Foraging       100 (51)   (7,7,2,1) minors × encumbrance cell; then y (2)      392 (196)
    Potential      9          7-bin histogram; then y, z                           14
    =============  =========  ===================================================  ==========

    (Foraging: paper variant in brackets, 49 cells.)

Action Space:
    CE: 2G ``Box(−1, 1, (|ξ|,), float32)``; the others ``Tuple(Box(−1, 1, (|ξ|,)), major)``, with
    major ``Box(−1, 1, (d0,))`` or ``Discrete(5)`` (Beach).  DE: the same with a leading axis of
    N (one full upper-level sample per minor; the major action is taken from the first sample).
    ξ and a continuous major action are clipped to [−1, 1] before use (RLlib's action clip).

Arguments:
    problem: ``two-gaussians | formation | beach-bar | foraging | potential``.
    num_minors: N ≥ 1.
    variant: ``paper`` (default) or ``reference``.
    execution: ``centralized`` (default) or ``decentralized``.
    render_mode: ``None`` or ``rgb_array``.
    **switches: per-switch overrides of the variant preset (spec §7.1 names).

Vectorized environment:
    :class:`m3fmarl.m3fc.vector.M3FCVectorEnv` steps B copies in one numpy call; it is the
    ``vector_entry_point`` of the same Gymnasium ids.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from numpy.typing import NDArray

from m3fmarl._malloc import tune_malloc
from m3fmarl.m3fc.decode import decode_continuous, decode_discrete
from m3fmarl.problems import make_problem
from m3fmarl.problems.core import FloatArray, Problem, State, check_choice

EXECUTIONS: tuple[str, ...] = ("centralized", "decentralized")
RENDER_MODES: tuple[str, ...] = ("rgb_array",)


class M3FCCore:
    """Spaces, action checking/decoding and observation of the M3FC view of one problem.

    Shared by the single and the vector environment so the two cannot diverge.
    """

    def __init__(
        self, problem: str | Problem, num_minors: int = 20, variant: str = "paper",
        execution: str = "centralized", **switches: Any,
    ) -> None:
        check_choice("execution", execution, EXECUTIONS)
        tune_malloc()
        if isinstance(problem, Problem):
            if switches:
                raise ValueError("switch overrides need a problem name, not a Problem instance")
            self.problem = problem
        else:
            self.problem = make_problem(problem, num_minors, variant, **switches)
        self.execution = execution
        self.decentralized = execution == "decentralized"
        p = self.problem
        sw = p.switches
        self.ce_squash = sw.xi_squash
        self.squash = (
            p.reference_de_squash if self.decentralized and sw.de_decode == "reference_mismatch" else sw.xi_squash
        )
        low, high = p.m3fc_observation_bounds()
        self.observation_space = spaces.Box(low=low, high=high, dtype=np.float64)
        self.action_space = self._action_space()

    def _action_space(self) -> spaces.Space:
        p = self.problem
        lead = (p.num_minors,) if self.decentralized else ()
        xi = spaces.Box(-1.0, 1.0, shape=lead + (p.xi_size,), dtype=np.float32)
        if p.num_major_actions is not None:
            major: spaces.Space = (
                spaces.MultiDiscrete(np.full(p.num_minors, p.num_major_actions))
                if self.decentralized else spaces.Discrete(p.num_major_actions)
            )
        elif p.major_action_dim is not None:
            major = spaces.Box(-1.0, 1.0, shape=lead + (p.major_action_dim,), dtype=p.major_action_dtype)
        else:
            return xi
        return spaces.Tuple((xi, major))

    # --- actions -----------------------------------------------------------------------------
    def split_action(self, action: Any, num_envs: int | None) -> tuple[NDArray, NDArray | None]:
        """Check an action (single: ``num_envs=None``; batched: leading axis B) and return
        ``(xi, major)`` with a leading copy axis.  Raises ``ValueError`` on a wrong shape or NaN.
        """
        p = self.problem
        batch = () if num_envs is None else (num_envs,)
        if isinstance(self.action_space, spaces.Tuple):
            if not isinstance(action, (tuple, list)) or len(action) != 2:
                raise ValueError(
                    f"{p.name}: action must be a pair (xi, major_action) matching {self.action_space}, "
                    f"got {type(action).__name__}"
                )
            xi_raw, major_raw = action
        else:
            xi_raw, major_raw = action, None
        xi_space = self.action_space[0] if isinstance(self.action_space, spaces.Tuple) else self.action_space
        xi = np.asarray(xi_raw, dtype=np.float64)
        want = batch + xi_space.shape
        if xi.shape != want:
            raise ValueError(f"{p.name}: xi must have shape {want}, got {xi.shape}")
        if not np.all(np.isfinite(xi)):
            raise ValueError(f"{p.name}: xi contains NaN or inf")
        if num_envs is None:
            xi = xi[None]
        major = None
        if major_raw is not None:
            major = self._check_major(major_raw, batch)
            if num_envs is None:
                major = major[None]
            if self.decentralized:
                major = major[:, 0]  # spec S10: the first of the N samples
            if p.num_major_actions is None:
                major = np.clip(major, -1.0, 1.0)
        return xi, major

    def _check_major(self, raw: Any, batch: tuple[int, ...]) -> NDArray:
        p = self.problem
        space = self.action_space[1]
        if p.num_major_actions is not None:
            major = np.asarray(raw)
            want = batch + space.shape
            if major.shape != want or not np.issubdtype(major.dtype, np.integer):
                raise ValueError(f"{p.name}: major action must be integer(s) of shape {want}, got {raw!r}")
            if np.any((major < 0) | (major >= p.num_major_actions)):
                raise ValueError(f"{p.name}: major action must be in 0..{p.num_major_actions - 1}, got {raw!r}")
            return major.astype(np.int64)
        major = np.asarray(raw, dtype=np.float64)
        want = batch + space.shape
        if major.shape != want:
            raise ValueError(f"{p.name}: major action must have shape {want}, got {major.shape}")
        if not np.all(np.isfinite(major)):
            raise ValueError(f"{p.name}: major action contains NaN or inf")
        return major

    def minor_actions(self, state: State, xi: NDArray, rng: np.random.Generator) -> NDArray:
        """Decode ξ at every minor's pre-step cell and sample the minor actions."""
        p = self.problem
        cells = p.cells(state)
        if p.discrete:
            return decode_discrete(xi, cells, p.num_cells, int(p.num_minor_actions), rng)
        return decode_continuous(
            xi, cells, p.num_cells, int(p.minor_action_dim), rng,
            squash=self.squash, std_map=p.switches.std_map,
        )

    def advance(
        self, state: State, xi: NDArray, major: NDArray | None, rng: np.random.Generator
    ) -> tuple[State, FloatArray]:
        """One M3FC step of every copy: decode, then the problem step."""
        minor_u = self.minor_actions(state, xi, rng)
        return self.problem.step(state, major, minor_u, rng)

    def observe(self, state: State) -> FloatArray:
        return self.problem.m3fc_observation(state)

    # --- rendering ---------------------------------------------------------------------------
    def render_rgb(self, state: State, index: int, episode_return: float) -> NDArray[np.uint8]:
        """An RGB picture of copy ``index``: major, minors, targets; title with N, t, return."""
        from m3fmarl.render import figure_to_rgb, new_figure

        fig, ax = new_figure()
        self.problem.draw(ax, state, index)
        ax.set_title(
            f"{self.problem.name}  N={self.problem.num_minors}  t={int(state.t[index])}"
            f"/{self.problem.horizon}  return={episode_return:.1f}",
            fontsize=9,
        )
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=3, fontsize=7, frameon=False)
        fig.subplots_adjust(bottom=0.14)
        return figure_to_rgb(fig)


class M3FCEnv(gym.Env):
    __doc__ = __doc__
    metadata = {"render_modes": list(RENDER_MODES), "render_fps": 5}

    def __init__(
        self, problem: str = "beach-bar", num_minors: int = 20, variant: str = "paper",
        execution: str = "centralized", render_mode: str | None = None, **switches: Any,
    ) -> None:
        if render_mode is not None:
            check_choice("render_mode", render_mode, RENDER_MODES)
        self.core = M3FCCore(problem, num_minors, variant, execution, **switches)
        self.problem = self.core.problem
        self.observation_space = self.core.observation_space
        self.action_space = self.core.action_space
        self.render_mode = render_mode
        self.state: State | None = None
        self.episode_return = 0.0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[FloatArray, dict]:
        super().reset(seed=seed)
        self.state = self.problem.reset(1, self.np_random)
        self.episode_return = 0.0
        return self.core.observe(self.state)[0], {}

    def step(self, action: Any) -> tuple[FloatArray, SupportsFloat, bool, bool, dict]:
        if self.state is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        xi, major = self.core.split_action(action, None)
        self.state, reward = self.core.advance(self.state, xi, major, self.np_random)
        r = float(reward[0])
        self.episode_return += r
        truncated = bool(self.state.t[0] >= self.problem.horizon)
        return self.core.observe(self.state)[0], r, False, truncated, {}

    def render(self) -> NDArray[np.uint8] | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode; use render_mode='rgb_array'")
            return None
        if self.state is None:
            raise gym.error.ResetNeeded("call reset() before render()")
        return self.core.render_rgb(self.state, 0, self.episode_return)
