"""Two Gaussians (2G) on the box [−2, 2]² (spec/environments.md §2; paper appendix R.1).

Description:
    N minors move in the box [−2, 2]² and should track a target density that oscillates with
    period 50 between two Gaussians, N((−1, 0), 0.05 I) and N((+1, 0), 0.05 I).  The target is
    only seen through K particles ν_t sampled from it each step; the reward is minus the exact
    squared-Euclidean OT cost between the minors' empirical measure and the particles.  There is
    no major agent (the paper's formal major state is the clock t mod 50).

State (batched over B copies):
    minors ``(B, N, 2)`` floats in [−2, 2]; particles ν_t ``(B, K, 2)`` in [−2, 2]; t ``(B,)``.

Actions:
    minors: ``(B, N, 2)`` in [−1, 1]² (decoded and clipped by the view); the dynamics move by
    0.2 · u / (max(1, ‖u‖) + 1e-10).  No major action (``major_u`` is ``None``).

Observation (M3FC view, spec §2.4; ``major_obs = "target_histogram"``):
    ======  =======  ===========  =================================================
    slice   shape    bounds       meaning
    ======  =======  ===========  =================================================
    0:98    (7,7,2)  [0, scale]   entry 14a + 2b + l: layer l = 0 minors (counts/N),
                                  l = 1 particles (counts/K), times ``obs_scale``
    ======  =======  ===========  =================================================
    ``clock``: 49 minor-histogram entries × scale, then a 50-way one-hot of t mod 50 (99);
    ``both``: the 98 entries above, then the clock one-hot (148).

Reward (pre-step quantities):
    r_t = −W(µ_t^N, ν̂_t), W = exact OT cost, squared-Euclidean ground cost, uniform weights.

Starting state:
    minors i.i.d. Unif([−2, 2]²); t = 0; ν_0 sampled for t = 0 (all K from the (−1, 0) component).

Dynamics (spec §2.2):
    x_{t+1} = clip(x_t + 0.2 v + η), η ~ N(0, σ² I) (σ = ``noise_std``); reward; t ← t + 1;
    ν_{t+1}: n₁ = ⌊K (1 + cos(2π (t mod 50)/50)) / 2⌋ particles from N((−1, 0), 0.05 I), the
    other K − n₁ from N((+1, 0), 0.05 I), each clipped to [−2, 2]² (a deterministic split).

Episode end:
    exactly T = 100 steps, then truncation.

Variants (spec §7.1, §7.4):
    ``noise_std`` (T1: paper √0.03 = 0.1732, reference 0.03), ``num_target_samples`` (T2: 300 /
    100), ``major_obs`` (T4: ``target_histogram`` in both presets, or ``clock`` / ``both``),
    ``obs_scale`` (S6: 10 in both), plus the common M3FC decoder switches (G1, G2, M2).

Vectorized environment:
    every array carries the copy axis B; the only per-copy loop is the OT solve
    (:func:`m3fmarl.problems.ot.ot_cost_batch`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import numpy as np

from m3fmarl.problems.core import (
    FloatArray,
    IntArray,
    Problem,
    State,
    Switches,
    batched_histogram,
    grid_cells,
    unit_ball_projection,
)
from m3fmarl.problems.ot import ot_cost_batch

LOW, HIGH = -2.0, 2.0
"""The state box X = [−2, 2]² (per coordinate)."""
NUM_BINS = 7
"""State bins per coordinate (spec §1.2)."""
V_MAX = 0.2
"""Maximal step length."""
PROJ_EPS = 1e-10
"""The reference's 1e-10 in v = u / (max(1, ‖u‖) + 1e-10) (spec §2.2 step 1)."""
PERIOD = 50
"""Period of the target mixture (and of the paper's clock)."""
COMPONENT_MEANS = np.array([[-1.0, 0.0], [1.0, 0.0]])
"""Means of the two target components."""
COMPONENT_VAR = 0.05
"""Variance (not std) of each target component, per coordinate."""
PAPER_NOISE_STD = math.sqrt(0.03)
"""Paper: movement noise variance σ² = 0.03, i.e. std 0.17320508075688773 (T1)."""
REFERENCE_NOISE_STD = 0.03
"""Reference: movement noise std 0.03 (T1)."""


@dataclasses.dataclass
class TwoGaussiansState(State):
    minors: FloatArray  # (B, N, 2) positions in [-2, 2]^2
    particles: FloatArray  # (B, K, 2) target particles nu_t in [-2, 2]^2


@dataclasses.dataclass(frozen=True)
class TwoGaussiansSwitches(Switches):
    noise_std: float = PAPER_NOISE_STD
    """T1: std of the per-coordinate movement noise; paper √0.03 ≈ 0.1732, reference 0.03."""
    num_target_samples: int = 300
    """T2: K, the number of target particles; paper 300, reference 100."""
    major_obs: str = "target_histogram"
    """T4: what follows the minors' layer in the M3FC observation: the particle histogram
    (both presets), a one-hot ``clock`` of t mod 50 instead, or ``both``."""
    obs_scale: float = 10.0
    """S6: factor on the M3FC histogram layers (10 in both presets)."""
    marl_hist_scale: float = 10.0
    """M3: factor on the histogram layers of the multi-agent observation; paper 10 ("the same
    observations as in M3FMARL"), reference 1."""

    CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = {
        **Switches.CHOICES,
        "major_obs": ("target_histogram", "clock", "both"),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.noise_std) and self.noise_std >= 0):
            raise ValueError(f"noise_std: need a finite number >= 0, got {self.noise_std!r}")
        k = self.num_target_samples
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"num_target_samples: need an integer >= 1, got {k!r}")
        for name in ("obs_scale", "marl_hist_scale"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: need a finite number > 0, got {value!r}")


# ----------------------------------------------------------------------------------------------
# Helpers shared with Formation (same 7 × 7 grid over [−2, 2]², same two-layer histogram)
# ----------------------------------------------------------------------------------------------


def position_cells(points: FloatArray) -> IntArray:
    """``(B, n)`` flat cell 7a + b of each point of ``points`` ``(B, n, 2)`` (nearest centre)."""
    return grid_cells(points, LOW, HIGH, NUM_BINS)


def two_layer_histogram(minors: FloatArray, particles: FloatArray) -> FloatArray:
    """``(B, 98)``: the (7, 7, 2) array [minors counts/N, particles counts/K], C-order flat.

    Entry 14a + 2b + l holds layer l of cell (a, b) (layers interleaved per cell, spec §1.2).
    """
    cells = NUM_BINS * NUM_BINS
    mu = batched_histogram(position_cells(minors), cells)
    nu = batched_histogram(position_cells(particles), cells)
    return np.stack([mu, nu], axis=-1).reshape(minors.shape[0], 2 * cells)


def check_actions(u: Any, shape: tuple[int, ...], who: str) -> FloatArray:
    """``u`` as float64 of exactly ``shape`` and finite, else ``ValueError``."""
    u = np.asarray(u, dtype=np.float64)
    if u.shape != shape:
        raise ValueError(f"{who}: expected shape {shape}, got {u.shape}")
    if not np.isfinite(u).all():
        raise ValueError(f"{who}: contains NaN or inf")
    return u


def draw_points(ax: Any, minors: FloatArray, particles: FloatArray) -> None:
    """Scatter one copy's particles and minors on ``ax`` and fix the [−2, 2]² frame."""
    ax.scatter(particles[:, 0], particles[:, 1], s=6, c="tab:orange", alpha=0.4, label="targets ν")
    ax.scatter(minors[:, 0], minors[:, 1], s=14, c="tab:blue", alpha=0.8, label="minors")
    ax.set_xlim(LOW, HIGH)
    ax.set_ylim(LOW, HIGH)
    ax.set_aspect("equal")
    ax.grid(True, alpha=0.3)


# ----------------------------------------------------------------------------------------------


def num_first_component(t: Any, num_particles: int) -> IntArray:
    """n₁(t) = ⌊K (1 + cos(2π (t mod 50)/50)) / 2⌋: particles drawn from the (−1, 0) component."""
    phase = 2.0 * np.pi * (np.asarray(t, dtype=np.int64) % PERIOD) / PERIOD
    return np.floor(num_particles * (1.0 + np.cos(phase)) / 2.0).astype(np.int64)


class TwoGaussians(Problem[TwoGaussiansState]):
    __doc__ = __doc__
    name = "two-gaussians"
    env_id = "m3fmarl/TwoGaussians-v0"
    horizon = 100
    minor_action_dim = 2
    reference_de_squash = "none"  # bug M2: the reference DE wrapper decodes without tanh
    PRESETS = {
        "paper": TwoGaussiansSwitches(),
        "reference": TwoGaussiansSwitches(
            std_map="reference",
            xi_squash="tanh",
            de_decode="reference_mismatch",
            noise_std=REFERENCE_NOISE_STD,
            num_target_samples=100,
            marl_hist_scale=1.0,
        ),
    }
    switches: TwoGaussiansSwitches

    @property
    def cell_shape(self) -> tuple[int, ...]:
        return (NUM_BINS, NUM_BINS)

    @property
    def num_particles(self) -> int:
        """K, the number of target particles (switch T2)."""
        return int(self.switches.num_target_samples)

    # --- dynamics ----------------------------------------------------------------------------
    def reset(self, num_envs: int, rng: np.random.Generator) -> TwoGaussiansState:
        minors = rng.uniform(LOW, HIGH, size=(num_envs, self.num_minors, 2))
        t = np.zeros(num_envs, dtype=np.int64)
        return TwoGaussiansState(t=t, minors=minors, particles=self.sample_particles(t, rng))

    def sample_particles(self, t: IntArray, rng: np.random.Generator) -> FloatArray:
        """``(B, K, 2)`` particles ν_t for the per-copy times ``t`` ``(B,)`` (spec §2.2)."""
        k = self.num_particles
        n1 = num_first_component(t, k)  # (B,)
        second = np.arange(k)[None, :] >= n1[:, None]  # (B, K): first n1 from component 0
        means = COMPONENT_MEANS[second.astype(np.int64)]  # (B, K, 2)
        noise = rng.standard_normal((t.shape[0], k, 2)) * math.sqrt(COMPONENT_VAR)
        return np.clip(means + noise, LOW, HIGH)

    def step(
        self,
        state: TwoGaussiansState,
        major_u: Any,
        minor_u: FloatArray,
        rng: np.random.Generator,
    ) -> tuple[TwoGaussiansState, FloatArray]:
        b = state.num_envs
        if major_u is not None:
            raise ValueError("two-gaussians has no major agent: major_u must be None")
        u = check_actions(minor_u, (b, self.num_minors, 2), "minor_u")
        v = unit_ball_projection(u, PROJ_EPS)
        noise = rng.standard_normal(u.shape) * self.switches.noise_std
        minors = np.clip(state.minors + V_MAX * v + noise, LOW, HIGH)
        reward = self.reward(state)  # pre-step x_t and nu_t (spec §2.2 step 4)
        t = state.t + 1
        return TwoGaussiansState(t=t, minors=minors, particles=self.sample_particles(t, rng)), reward

    def reward(self, state: TwoGaussiansState) -> FloatArray:
        """r_t = −W(µ_t^N, ν̂_t) (spec §2.3), ``(B,)``."""
        return -ot_cost_batch(state.minors, state.particles)

    def minor_cells(self, state: TwoGaussiansState) -> IntArray:
        return position_cells(state.minors)

    # --- observation -------------------------------------------------------------------------
    def clock(self, state: TwoGaussiansState) -> FloatArray:
        """``(B, 50)`` one-hot of t mod 50 (the paper's major state)."""
        return np.eye(PERIOD)[state.t % PERIOD]

    def m3fc_observation(self, state: TwoGaussiansState) -> FloatArray:
        scale = self.switches.obs_scale
        option = self.switches.major_obs
        if option == "clock":
            mu = batched_histogram(self.minor_cells(state), NUM_BINS * NUM_BINS)
            return np.concatenate([mu * scale, self.clock(state)], axis=1)
        hist = two_layer_histogram(state.minors, state.particles) * scale
        if option == "both":
            return np.concatenate([hist, self.clock(state)], axis=1)
        return hist

    def m3fc_observation_bounds(self) -> tuple[FloatArray, FloatArray]:
        scale = self.switches.obs_scale
        option = self.switches.major_obs
        num_hist = NUM_BINS * NUM_BINS * (1 if option == "clock" else 2)
        num_clock = 0 if option == "target_histogram" else PERIOD
        low = np.zeros(num_hist + num_clock)
        high = np.concatenate([np.full(num_hist, scale), np.ones(num_clock)])
        return low, high

    # --- multi-agent observation (spec §2.5) --------------------------------------------------
    agent_own_dim = 2

    def agent_observations(self, state: TwoGaussiansState) -> np.ndarray:
        """The (7, 7, 4) array [(x¹+2)/4, (x²+2)/4, minors counts/N, particles counts/K] per cell, C
        order: every agent's own position is repeated in every cell; histograms ×
        ``marl_hist_scale`` (M3: reference 1, paper 10)."""
        b, n, _ = state.minors.shape
        cells = NUM_BINS * NUM_BINS
        hist = two_layer_histogram(state.minors, state.particles).reshape(b, cells, 2) * self.switches.marl_hist_scale
        out = np.empty((b, n, cells, 4), dtype=np.float32)
        out[..., :2] = ((state.minors - LOW) / (HIGH - LOW))[:, :, None, :]
        out[..., 2:] = hist[:, None, :, :]
        return out.reshape(b, n, cells * 4)

    def agent_observation_bounds(self) -> tuple[FloatArray, FloatArray]:
        scale = self.switches.marl_hist_scale
        return np.zeros(NUM_BINS * NUM_BINS * 4), np.tile([1.0, 1.0, scale, scale], NUM_BINS * NUM_BINS)

    def agent_layout(self) -> tuple[IntArray, IntArray]:
        cells = np.arange(NUM_BINS * NUM_BINS * 4).reshape(-1, 4)
        return np.array([0, 1]), cells[:, 2:].ravel()

    def agent_population(self) -> IntArray:
        """Layer 2 of every cell (minors counts/N)."""
        return np.arange(NUM_BINS * NUM_BINS * 4).reshape(-1, 4)[:, 2]

    # --- rendering ---------------------------------------------------------------------------
    def draw(self, ax: Any, state: TwoGaussiansState, index: int = 0) -> None:
        draw_points(ax, state.minors[index], state.particles[index])
        ax.scatter(*COMPONENT_MEANS.T, marker="+", s=120, c="k", label="component means")
