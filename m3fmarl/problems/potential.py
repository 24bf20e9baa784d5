"""Potential: minors push the major around a 1-D torus (spec/environments.md §6; paper R.1).

Description:
    N minors move freely on the one-dimensional torus [−2, 2).  The major agent cannot move by
    itself: every minor within distance 1 repels it with a force that grows as the minor gets
    closer.  The team must steer the major, through the minors, to a slowly drifting target z.

State (batched over B copies):
    minors x ``(B, N)`` in [−2, 2); major y ``(B,)`` in [−2, 2); target z ``(B,)`` in [−2, 2];
    t ``(B,)``.

Actions:
    minors: u ∈ [−1, 1] (Box(−1, 1, (1,))), moved by v_max · proj(u).  Major: Box(−1, 1, (1,)) kept
    for interface uniformity; it has no effect (major speed 0 in both variants, spec P4).

Reward (pre-step):
    r_t = −|y_t − z_t| (reference, unwrapped) or −toroidal distance (paper), spec §6.3, P2.

Starting state:
    x_0^i ~ Unif[−2, 2), y_0 ~ Unif[−2, 2), z_0 = clip(N(0, 0.005)) (variance 0.005).

Episode end:
    exactly T = 100 steps, then truncation.

Variants (spec §7.1):
    ``force_coeff`` (P1: 0.05 paper, 0.1 reference), ``reward_distance`` (P2), ``minor_vmax``
    (P3: 0.3 paper, 0.2 reference).  The M3FC decoder applies tanh to ξ under ``reference`` in
    both CE and DE (no M2 mismatch here).
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
    nearest_bin,
    with_major_slot,
    wrap,
)

LO, HI, LENGTH = -2.0, 2.0, 4.0
NUM_BINS = 7


@dataclasses.dataclass
class PotentialState(State):
    minors: FloatArray  # (B, N) minor positions on the torus [-2, 2)
    major: FloatArray  # (B,) major position y on the torus
    target: FloatArray  # (B,) target z in [-2, 2] (clipped, not wrapped)


@dataclasses.dataclass(frozen=True)
class PotentialSwitches(Switches):
    force_coeff: float = 0.05
    """P1: repulsion coefficient; paper 1/20, reference v_max/2 = 0.1."""
    reward_distance: str = "toroidal"
    """P2: ``toroidal`` −min(|y−z|, 4−|y−z|) (paper) or ``absolute`` −|y−z| (reference)."""
    minor_vmax: float = 0.3
    """P3: minor speed; paper "as in Foraging" 0.3, reference 0.2."""

    CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = {
        **Switches.CHOICES,
        "reward_distance": ("toroidal", "absolute"),
    }


class Potential(Problem[PotentialState]):
    __doc__ = __doc__
    name = "potential"
    env_id = "m3fmarl/Potential-v0"
    horizon = 100
    minor_action_dim = 1
    major_action_dim = 1
    major_action_dtype = np.float64  # the reference's major Box is float64 (golden spaces)
    reference_de_squash = "tanh"
    interaction_range = 1.0
    target_ou = 0.99
    target_var = 0.005
    PRESETS = {
        "paper": PotentialSwitches(),
        "reference": PotentialSwitches(
            std_map="reference",
            xi_squash="tanh",
            de_decode="reference_mismatch",
            force_coeff=0.1,
            reward_distance="absolute",
            minor_vmax=0.2,
        ),
    }
    switches: PotentialSwitches

    @property
    def cell_shape(self) -> tuple[int, ...]:
        return (NUM_BINS,)

    def reset(self, num_envs: int, rng: np.random.Generator) -> PotentialState:
        minors = rng.uniform(LO, HI, size=(num_envs, self.num_minors))
        major = rng.uniform(LO, HI, size=num_envs)
        target = np.clip(rng.normal(0.0, np.sqrt(self.target_var), size=num_envs), LO, HI)
        return PotentialState(t=np.zeros(num_envs, dtype=np.int64), minors=minors, major=major, target=target)

    def step(
        self, state: PotentialState, major_u: FloatArray | None, minor_u: FloatArray, rng: np.random.Generator
    ) -> tuple[PotentialState, FloatArray]:
        sw = self.switches
        x, y = state.minors, state.major
        # Displacement minor -> major through the nearest periodic image (S13); ties keep shift 0.
        g = y[:, None] - x
        g = np.where(g > 2.0, g - LENGTH, np.where(g < -2.0, g + LENGTH, g))
        # (1 - d)^+ · g/(d + 1e-10) with range 1; g/(d + 1e-10) = sign(g) up to a 1e-10 relative
        # term (and 0 at d = 0, like the reference's +1e-10).
        push = np.maximum(self.interaction_range - np.abs(g), 0.0) * np.sign(g)
        # proj in 1-D is a clip to [-1, 1]; the minor action arrives as (B, N, 1).
        u = np.clip(minor_u.reshape(x.shape), -1.0, 1.0)
        minors = wrap(x + sw.minor_vmax * u, LO, HI)
        major = wrap(y + sw.force_coeff * push.mean(axis=1), LO, HI)
        reward = self.reward(state)
        z_mean = self.target_ou * state.target
        target = np.clip(z_mean + rng.normal(0.0, np.sqrt(self.target_var), size=z_mean.shape), LO, HI)
        return PotentialState(t=state.t + 1, minors=minors, major=major, target=target), reward

    def reward(self, state: PotentialState) -> FloatArray:
        dist = np.abs(state.major - state.target)
        if self.switches.reward_distance == "toroidal":
            dist = np.minimum(dist, LENGTH - dist)
        return -dist

    def minor_cells(self, state: PotentialState) -> IntArray:
        return nearest_bin(state.minors, LO, HI, NUM_BINS)

    def m3fc_observation(self, state: PotentialState) -> FloatArray:
        hist = batched_histogram(self.cells(state), NUM_BINS)
        return np.concatenate([hist, state.major[:, None], state.target[:, None]], axis=1)

    def m3fc_observation_bounds(self) -> tuple[FloatArray, FloatArray]:
        low = np.concatenate([np.zeros(NUM_BINS), np.full(2, LO)])
        high = np.concatenate([np.ones(NUM_BINS), np.full(2, HI)])
        return low, high

    # --- multi-agent observation (spec §6.5) --------------------------------------------------
    agent_own_dim = 1

    def agent_own(self, state: PotentialState) -> FloatArray:
        """Own position x (0 for the major)."""
        return with_major_slot(state.minors[:, :, None], np.zeros(1))

    def agent_shared(self, state: PotentialState) -> FloatArray:
        """(y, z), then the 7-bin histogram."""
        hist = batched_histogram(self.cells(state), NUM_BINS)
        return np.concatenate([state.major[:, None], state.target[:, None], hist], axis=1)

    def agent_population(self) -> IntArray:
        """The 7-bin histogram after own x, y and z."""
        return 3 + np.arange(NUM_BINS)

    def agent_observation_bounds(self) -> tuple[FloatArray, FloatArray]:
        return np.concatenate([np.full(3, LO), np.zeros(NUM_BINS)]), np.concatenate([np.full(3, HI), np.ones(NUM_BINS)])

    def draw(self, ax: Any, state: PotentialState, index: int = 0) -> None:
        x = state.minors[index]
        ax.axhline(0.0, color="0.7", lw=1)
        ax.scatter(x, np.zeros_like(x), s=25, c="tab:blue", alpha=0.6, label="minors")
        y, z = state.major[index], state.target[index]
        ax.axvspan(y - self.interaction_range, y + self.interaction_range, color="tab:red", alpha=0.08)
        ax.scatter([y], [0.0], marker="s", s=200, c="tab:red", label="major")
        ax.scatter([z], [0.0], marker="*", s=250, c="gold", edgecolors="k", label="target")
        ax.set_xlim(LO, HI)
        ax.set_ylim(-1, 1)
        ax.set_yticks([])
