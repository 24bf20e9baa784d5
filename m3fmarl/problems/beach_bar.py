"""Beach bar on a 5 × 5 torus (spec/environments.md §4; paper appendix R.1).

Description:
    N minors walk on a discrete 5 × 5 torus; the major agent is a beach bar that moves on the same
    torus and tries to stay near its own randomly walking target z.  The team wants the minors
    close to the bar, the bar close to its target, and the minors spread out (a crowding cost).

State (batched over B copies):
    minors ``(B, N)`` cell indices 5·x¹ + x² (coordinates in {0..4}); bar y ``(B, 2)``; target
    z ``(B, 2)``; t ``(B,)``.  Minors are kept as cell indices so that a move is one table
    lookup and every per-minor sum (reward, histograms) reduces to one ``bincount``.

Actions:
    Discrete(5) for every minor and for the bar; index → move 0 stay, 1 (−1, 0), 2 (+1, 0),
    3 (0, −1), 4 (0, +1) (reference order, spec S7, used in both variants).

Reward (pre-step quantities, toroidal L1 distance d):
    r_t = −c_bar · d(z_t, y_t) − c_dist · mean_i d(x_t^i, y_t) − c_crowd · Σ_s µ_t^N(s)².

Starting state:
    minors and bar uniform on the 25 cells; target per ``target_init``.

Episode end:
    exactly T = 200 steps, then truncation.

Variants (spec §7.1):
    ``reward_coeffs`` (B1), ``target_walk`` (B2), ``target_init`` (B3), ``histogram`` (B4).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

from m3fmarl.problems.core import (
    FloatArray,
    IntArray,
    Problem,
    State,
    Switches,
    batched_histogram,
    with_major_slot,
)

GRID = 5
MOVES = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.int64)
"""Move table of the action indices (spec S7)."""
ONE_HOT = np.eye(GRID)
NUM_CELLS = GRID * GRID
CELL_XY = np.stack(np.divmod(np.arange(NUM_CELLS), GRID), axis=1)  # (25, 2) cell -> (x1, x2)
NEXT_CELL = (((CELL_XY[:, None, :] + MOVES[None]) % GRID) * [GRID, 1]).sum(-1)  # (25, 5)
"""NEXT_CELL[c, a]: the cell reached from cell c with action a on the torus."""
_DIFF = np.abs(CELL_XY[:, None, :] - CELL_XY[None, :, :])
CELL_DIST = np.minimum(_DIFF, GRID - _DIFF).sum(-1).astype(np.float64)  # (25, 25) torus L1
ROW_UNION = ((CELL_XY[:, :1] == np.arange(GRID)) | (CELL_XY[:, 1:] == np.arange(GRID))).astype(np.float64)
"""ROW_UNION[c, r] = 1 if cell c has x¹ = r or x² = r: the rows a minor touches under bug B4."""


@dataclasses.dataclass
class BeachState(State):
    minors: IntArray  # (B, N) cell index 5*x1 + x2 of each minor
    bar: IntArray  # (B, 2) major position y
    target: IntArray  # (B, 2) major target z


@dataclasses.dataclass(frozen=True)
class BeachSwitches(Switches):
    reward_coeffs: tuple[float, float, float] = (0.5, 2.5, 6.25)
    """B1: (c_bar, c_dist, c_crowd); paper (0.5, 2.5, 6.25), reference (0.3, 1.0, 1.5)."""
    target_walk: str = "four_directions"
    """B2: w.p. 0.2 move one of 4 directions (paper) / draw one of 5 actions incl. stay (ref)."""
    target_init: str = "origin"
    """B3: z_0 = (0, 0) (paper) / z_0 = y_0 followed by one target-walk step (reference)."""
    histogram: str = "joint"
    """B4: the joint histogram (paper) / the reference's row-union histogram bug."""

    CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = {
        **Switches.CHOICES,
        "target_walk": ("four_directions", "five_actions"),
        "target_init": ("origin", "major_then_step"),
        "histogram": ("joint", "row_union_bug"),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.reward_coeffs) != 3:
            raise ValueError(f"reward_coeffs: need 3 numbers, got {self.reward_coeffs!r}")


def torus_l1(p: IntArray, q: IntArray) -> IntArray:
    """Toroidal L1 distance on the 5 × 5 torus over the last axis (values 0..4)."""
    diff = np.abs(p - q)
    return np.minimum(diff, GRID - diff).sum(axis=-1)


class BeachBar(Problem[BeachState]):
    __doc__ = __doc__
    name = "beach-bar"
    env_id = "m3fmarl/BeachBar-v0"
    horizon = 200
    num_minor_actions = 5
    num_major_actions = 5
    walk_prob = 0.2
    PRESETS = {
        "paper": BeachSwitches(),
        "reference": BeachSwitches(
            std_map="reference",
            de_decode="reference_mismatch",
            reward_coeffs=(0.3, 1.0, 1.5),
            target_walk="five_actions",
            target_init="major_then_step",
            histogram="row_union_bug",
        ),
    }
    switches: BeachSwitches

    @property
    def cell_shape(self) -> tuple[int, ...]:
        return (GRID, GRID)

    # --- dynamics ----------------------------------------------------------------------------
    def reset(self, num_envs: int, rng: np.random.Generator) -> BeachState:
        minors = rng.integers(0, NUM_CELLS, size=(num_envs, self.num_minors))
        bar = rng.integers(0, GRID, size=(num_envs, 2))
        if self.switches.target_init == "origin":
            target = np.zeros((num_envs, 2), dtype=np.int64)
        else:
            target = self._walk(bar.copy(), rng)
        return BeachState(t=np.zeros(num_envs, dtype=np.int64), minors=minors, bar=bar, target=target)

    def _walk(self, target: IntArray, rng: np.random.Generator) -> IntArray:
        """One target-walk step for every copy (B2)."""
        b = target.shape[0]
        moves = rng.random(b) < self.walk_prob
        if self.switches.target_walk == "four_directions":
            direction = rng.integers(1, 5, size=b)
        else:
            direction = rng.integers(0, 5, size=b)
        return (target + MOVES[direction] * moves[:, None]) % GRID

    def step(
        self, state: BeachState, major_u: IntArray | None, minor_u: IntArray, rng: np.random.Generator
    ) -> tuple[BeachState, FloatArray]:
        reward = self.reward(state)
        minors = NEXT_CELL[state.minors, minor_u]
        bar = (state.bar + MOVES[major_u]) % GRID
        target = self._walk(state.target, rng)
        return BeachState(t=state.t + 1, minors=minors, bar=bar, target=target), reward

    def reward(self, state: BeachState) -> FloatArray:
        """Shared reward r_t of spec §4.3 on the (pre-step) state."""
        c_bar, c_dist, c_crowd = self.switches.reward_coeffs
        mu = batched_histogram(state.minors, NUM_CELLS)
        crowd = np.einsum("bs,bs->b", mu, mu)
        # mean_i d(x_i, y) = Σ_cells µ(c) d(c, y): O(25) per copy instead of O(N).
        dist = np.einsum("bs,bs->b", mu, CELL_DIST[state.bar[:, 0] * GRID + state.bar[:, 1]])
        return -c_bar * torus_l1(state.target, state.bar) - c_dist * dist - c_crowd * crowd

    def minor_cells(self, state: BeachState) -> IntArray:
        return state.minors

    # --- observation -------------------------------------------------------------------------
    @staticmethod
    def make_state(minors_xy: IntArray, bar: IntArray, target: IntArray) -> BeachState:
        """A state from coordinates: minors ``(B, N, 2)``, bar and target ``(B, 2)``."""
        minors_xy = np.asarray(minors_xy, dtype=np.int64)
        return BeachState(
            t=np.zeros(minors_xy.shape[0], dtype=np.int64), minors=minors_xy[..., 0] * GRID + minors_xy[..., 1],
            bar=np.asarray(bar, dtype=np.int64), target=np.asarray(target, dtype=np.int64),
        )

    def histogram(self, state: BeachState) -> FloatArray:
        """``(B, 25)`` histogram layer of the observation (joint, or the B4 row-union bug)."""
        mu = batched_histogram(state.minors, NUM_CELLS)
        if self.switches.histogram == "joint":
            return mu
        # Each minor adds 1/N to the whole rows x1 and x2 (once if x1 == x2): spec §4.4.
        return np.repeat(mu @ ROW_UNION, GRID, axis=1)

    def major_observation(self, state: BeachState) -> FloatArray:
        """``(B, 20)``: one-hots of y^(1), y^(2), z^(1), z^(2)."""
        b = state.bar.shape[0]
        return ONE_HOT[np.concatenate([state.bar, state.target], axis=1)].reshape(b, 4 * GRID)

    def m3fc_observation(self, state: BeachState) -> FloatArray:
        return np.concatenate([self.histogram(state), self.major_observation(state)], axis=1)

    def m3fc_observation_bounds(self) -> tuple[FloatArray, FloatArray]:
        return np.zeros(45), np.ones(45)

    # --- multi-agent observation (spec §4.5) --------------------------------------------------
    agent_own_dim = 2 * GRID
    num_own_keys = NUM_CELLS + 1  # the 25 cells; the major's fixed slot gets key 25

    def agent_own_keys(self, state: BeachState) -> IntArray:
        b = state.minors.shape[0]
        return np.concatenate([np.full((b, 1), NUM_CELLS, dtype=np.int64), state.minors], axis=1)

    def agent_own(self, state: BeachState) -> FloatArray:
        """Own state as two 5-way one-hots (the major: the one-hot of (0, 0), not zeros)."""
        b, n = state.minors.shape
        minor = ONE_HOT[CELL_XY[state.minors]].reshape(b, n, 2 * GRID)
        return with_major_slot(minor, ONE_HOT[[0, 0]].ravel())

    def agent_shared(self, state: BeachState) -> FloatArray:
        """One-hots of y and z (20), then the 25-number histogram (joint, or the B4 row-union)."""
        return np.concatenate([self.major_observation(state), self.histogram(state)], axis=1)

    def agent_observation_bounds(self) -> tuple[FloatArray, FloatArray]:
        d = 2 * GRID + 4 * GRID + NUM_CELLS
        return np.zeros(d), np.ones(d)

    def agent_population(self) -> IntArray:
        """The 25-number histogram after own state and the bar's and target's one-hots."""
        return 2 * GRID + 4 * GRID + np.arange(NUM_CELLS)

    # --- rendering ---------------------------------------------------------------------------
    def draw(self, ax: Any, state: BeachState, index: int = 0) -> None:
        mu = batched_histogram(state.minors[index : index + 1], NUM_CELLS)[0]
        xs, ys = np.divmod(np.arange(GRID * GRID), GRID)
        ax.scatter(xs, ys, s=2000 * mu, c="tab:blue", alpha=0.6, label="minors (mass)")
        ax.scatter(*state.bar[index], marker="s", s=250, c="tab:red", label="bar (major)")
        ax.scatter(*state.target[index], marker="*", s=250, c="gold", edgecolors="k", label="target")
        ax.set_xlim(-0.5, GRID - 0.5)
        ax.set_ylim(-0.5, GRID - 0.5)
        ax.set_xticks(range(GRID))
        ax.set_yticks(range(GRID))
        ax.grid(True, alpha=0.3)
        ax.set_aspect("equal")

