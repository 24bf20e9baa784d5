"""Formation on the box [−2, 2]² (spec/environments.md §3; paper appendix R.1).

Description:
    A major agent moves in [−2, 2]² and should follow its own target z, which performs a clipped
    Ornstein–Uhlenbeck walk around the origin.  The N minors should form a Gaussian formation
    N(y, 0.3 I) around the major's position y; the formation is seen through K = 300 particles
    ν_t sampled around y each step.  The team pays the exact OT cost between the minors and the
    particles plus the major's distance to its target.

State (batched over B copies):
    minors ``(B, N, 2)`` in [−2, 2]²; major y ``(B, 2)``; target z ``(B, 2)``; particles ν_t
    ``(B, K, 2)``; t ``(B,)``.

Actions:
    minors ``(B, N, 2)`` and major ``(B, 2)``, all in [−1, 1]²; both move by 0.2 · proj(u),
    proj(u) = u / max(1, ‖u‖), without noise.

Observation (M3FC view, spec §3.4):
    =======  =======  ========  =======================================================
    slice    shape    bounds    meaning
    =======  =======  ========  =======================================================
    0:98     (7,7,2)  [0, 1]    entry 14a + 2b + l: l = 0 minors (counts/N),
                                l = 1 particles (counts/K); no scale factor
    98:100   (2,)     [−2, 2]   major position y
    100:102  (2,)     [−2, 2]   major target z
    =======  =======  ========  =======================================================

Reward (pre-step quantities):
    r_t = −W(µ_t^N, ν̂_t) − ‖y_t − z_t‖₂ (W: exact squared-Euclidean OT cost, uniform weights).

Starting state:
    minors and y i.i.d. Unif([−2, 2]²); z_0 = clip(N(0, 0.02 I)); ν_0 = K i.i.d.
    clip(N(y_0, 0.3 I)).  (All numbers are variances.)

Dynamics (spec §3.2):
    x_{t+1} = clip(x_t + 0.2 proj(u)); y_{t+1} = clip(y_t + 0.2 proj(u⁰)); reward; t ← t + 1;
    z_{t+1} = clip(N(0.95 z_t, 0.02 I)); ν_{t+1} = K i.i.d. clip(N(y_{t+1}, 0.3 I)) (centred on
    the **new** major position).

Episode end:
    exactly T = 100 steps, then truncation.

Variants (spec §7.4):
    none of its own (paper and reference agree on all Formation constants); only the common M3FC
    decoder switches differ (G1 ``std_map``, G2 ``xi_squash``, M2 ``de_decode``).

Vectorized environment:
    every array carries the copy axis B; the only per-copy loop is the OT solve
    (:func:`m3fmarl.problems.ot.ot_cost_batch`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from m3fmarl.problems.core import (
    FloatArray,
    IntArray,
    Problem,
    State,
    Switches,
    unit_ball_projection,
    with_major_slot,
)
from m3fmarl.problems.ot import ot_cost_batch
from m3fmarl.problems.two_gaussians import (
    HIGH,
    LOW,
    NUM_BINS,
    V_MAX,
    check_actions,
    draw_points,
    position_cells,
    two_layer_histogram,
)

NUM_PARTICLES = 300
"""K, the formation samples per step (paper and reference)."""
TARGET_DECAY = 0.95
"""OU factor of the major target z."""
TARGET_VAR = 0.02
"""Variance (not std) of the target's per-step noise and of z_0, per coordinate."""
FORMATION_VAR = 0.3
"""Variance (not std) of the formation N(y, 0.3 I), per coordinate."""


@dataclasses.dataclass
class FormationState(State):
    minors: FloatArray  # (B, N, 2) positions in [-2, 2]^2
    major: FloatArray  # (B, 2) major position y
    target: FloatArray  # (B, 2) major target z
    particles: FloatArray  # (B, K, 2) formation samples nu_t around y_t


@dataclasses.dataclass(frozen=True)
class FormationSwitches(Switches):
    """Formation adds no switches: its constants agree in paper and reference (spec §3, §7)."""


class Formation(Problem[FormationState]):
    __doc__ = __doc__
    name = "formation"
    env_id = "m3fmarl/Formation-v0"
    horizon = 100
    minor_action_dim = 2
    major_action_dim = 2
    reference_de_squash = "none"  # bug M2: the reference DE wrapper decodes without tanh
    PRESETS = {
        "paper": FormationSwitches(),
        "reference": FormationSwitches(
            std_map="reference", xi_squash="tanh", de_decode="reference_mismatch"
        ),
    }
    switches: FormationSwitches

    @property
    def cell_shape(self) -> tuple[int, ...]:
        return (NUM_BINS, NUM_BINS)

    # --- dynamics ----------------------------------------------------------------------------
    def reset(self, num_envs: int, rng: np.random.Generator) -> FormationState:
        minors = rng.uniform(LOW, HIGH, size=(num_envs, self.num_minors, 2))
        major = rng.uniform(LOW, HIGH, size=(num_envs, 2))
        target = np.clip(rng.standard_normal((num_envs, 2)) * math.sqrt(TARGET_VAR), LOW, HIGH)
        return FormationState(
            t=np.zeros(num_envs, dtype=np.int64),
            minors=minors,
            major=major,
            target=target,
            particles=self.sample_particles(major, rng),
        )

    def sample_particles(self, major: FloatArray, rng: np.random.Generator) -> FloatArray:
        """``(B, K, 2)`` i.i.d. clip(N(y, 0.3 I)) around each copy's major position ``(B, 2)``."""
        noise = rng.standard_normal((major.shape[0], NUM_PARTICLES, 2)) * math.sqrt(FORMATION_VAR)
        return np.clip(major[:, None, :] + noise, LOW, HIGH)

    def step(
        self,
        state: FormationState,
        major_u: FloatArray,
        minor_u: FloatArray,
        rng: np.random.Generator,
    ) -> tuple[FormationState, FloatArray]:
        b = state.num_envs
        u = check_actions(minor_u, (b, self.num_minors, 2), "minor_u")
        u0 = check_actions(major_u, (b, 2), "major_u")
        # Noise-free moves (the reference adds a zero-std normal draw; nothing to reproduce).
        minors = np.clip(state.minors + V_MAX * unit_ball_projection(u), LOW, HIGH)
        major = np.clip(state.major + V_MAX * unit_ball_projection(u0), LOW, HIGH)
        reward = self.reward(state)  # pre-step x_t, y_t, z_t, nu_t (spec §3.3)
        target_noise = rng.standard_normal((b, 2)) * math.sqrt(TARGET_VAR)
        target = np.clip(TARGET_DECAY * state.target + target_noise, LOW, HIGH)
        next_state = FormationState(
            t=state.t + 1,
            minors=minors,
            major=major,
            target=target,
            particles=self.sample_particles(major, rng),  # around the new y_{t+1}
        )
        return next_state, reward

    def reward(self, state: FormationState) -> FloatArray:
        """r_t = −W(µ_t^N, ν̂_t) − ‖y_t − z_t‖₂ (spec §3.3), ``(B,)``.

        K is taken from ``state.particles`` (300 in every state this class creates).
        """
        distance = np.linalg.norm(state.major - state.target, axis=-1)
        return -ot_cost_batch(state.minors, state.particles) - distance

    def minor_cells(self, state: FormationState) -> IntArray:
        return position_cells(state.minors)

    # --- observation -------------------------------------------------------------------------
    def m3fc_observation(self, state: FormationState) -> FloatArray:
        hist = two_layer_histogram(state.minors, state.particles)
        return np.concatenate([hist, state.major, state.target], axis=1)

    def m3fc_observation_bounds(self) -> tuple[FloatArray, FloatArray]:
        num_hist = 2 * NUM_BINS * NUM_BINS
        low = np.concatenate([np.zeros(num_hist), np.full(4, LOW)])
        high = np.concatenate([np.ones(num_hist), np.full(4, HIGH)])
        return low, high

    # --- multi-agent observation (spec §3.5) --------------------------------------------------
    agent_own_dim = 2

    def agent_own(self, state: FormationState) -> FloatArray:
        """Own position x (zeros for the major)."""
        return with_major_slot(state.minors, np.zeros(2))

    def agent_shared(self, state: FormationState) -> FloatArray:
        """(y¹, y², z¹, z²), then the two-layer histogram (minors, particles)."""
        return np.concatenate([state.major, state.target, two_layer_histogram(state.minors, state.particles)], axis=1)

    def agent_observation_bounds(self) -> tuple[FloatArray, FloatArray]:
        hist = 2 * NUM_BINS * NUM_BINS
        return (np.concatenate([np.full(6, LOW), np.zeros(hist)]),
                np.concatenate([np.full(6, HIGH), np.ones(hist)]))

    def agent_population(self) -> IntArray:
        """Layer 0 (minors) of the two-layer histogram after own x, y and z."""
        return 6 + 2 * np.arange(NUM_BINS * NUM_BINS)

    # --- rendering ---------------------------------------------------------------------------
    def draw(self, ax: Any, state: FormationState, index: int = 0) -> None:
        draw_points(ax, state.minors[index], state.particles[index])
        ax.scatter(*state.major[index], marker="s", s=160, c="tab:red", label="major y")
        ax.scatter(*state.target[index], marker="*", s=250, c="gold", edgecolors="k", label="target z")
