"""Foraging: minors carry cargo from random areas to a truck (spec/environments.md §5; paper R.1).

Description:
    N minors move in the square [-2, 2]² and carry cargo (encumbrance e ∈ [0, 1]).  Up to 5
    foraging areas appear at random places; minors closer than ρ = 0.5 to an area deplete it and
    share what is removed, in proportion to their closeness.  The major agent is a package truck
    confined to the strip [-2, 2] × [-2, -1]; a minor that comes close to the truck drops its whole
    cargo there.  The team is rewarded for what is foraged and what is deposited.  The areas are
    hidden from the M3FC observation.

State (batched over B copies):
    ``positions`` ``(B, N, 2)`` in [-2, 2]²; ``encumbrance`` ``(B, N)`` in [0, 1]; ``major``
    ``(B, 2)`` in [-2, 2] × [-2, -1]; the areas as 5 fixed slots in creation order,
    ``area_locations`` ``(B, 5, 2)``, ``area_sizes`` ``(B, 5)`` (remaining L > 0) and
    ``area_alive`` ``(B, 5)``.  The alive areas always occupy the first slots (survivors are
    compacted to the front, stably, after each step; new areas are appended behind them); dead
    slots hold zeros.  ``t`` ``(B,)``.

Actions:
    Every minor: Box(-1, 1, (2,)); the truck: Box(-1, 1, (2,)).  Both are projected onto the unit
    ball; minors move by 0.3 · proj(u), the truck by 0.1 · proj(u⁰), no noise, then positions
    are clipped into their boxes.

Observation Space (M3FC view, spec §5.4):

    =====================  ==============  ==============  =========
    slice                  content         shape           bounds
    =====================  ==============  ==============  =========
    ``[0, M)``             minors' MF      M = 98 or 49    [0, 1]
    ``[M, M + 2)``         truck (y1, y2)  2               [-2, 2]
    =====================  ==============  ==============  =========

    With ``enc_bins = 2`` (reference) the histogram has shape (7, 7, 2): x-bin a, y-bin b and
    encumbrance cell c (0 iff e ≤ 0.5), flat index 14a + 2b + c; with ``enc_bins = 1`` (paper)
    it is the 7 × 7 position histogram.  Entries are counts / N.

Reward (the outcome of the step's own transition, spec §5.2–5.3):
    r_t = scale · (R_forage + R_deposit), where R_forage is the encumbrance actually gained
    (after the clip at 1; the excess is wasted) and R_deposit the cargo dropped at the truck,
    both per capita.  One step, in order:

    1. move minors and truck;
    2. for each alive area m in creation order, with the **pre-step** positions:
       w_i = (ρ − d_i)^+ / ρ (reference) or (ρ − d_i)^+ (paper), ΔL = min(0.1, mean_i w_i),
       capped at the remaining L_m (then the area disappears); minor i gets the share
       ΔL · w_i / (Σ_j w_j + 1e-10) · N, its encumbrance saturating at 1;
    3. deposit: reference — post-move minor within ≤ 0.5 of the pre-step truck; paper — pre-step
       minor within < 0.5 of the pre-step truck.  The minor drops all its cargo (also what it
       gained in step 2);
    4. spawn min(Pois(0.2), 5 − #surviving) areas, location Unif([-2, 2]²), size
       Unif[0.5, 1.5]; they are foraged from the next step on.

Starting state:
    positions Unif([-2, 2]²); encumbrance 0 (reference) or Unif[0, 1] (paper, R6); the truck
    uniform on the strip (paper) or a uniform point of the square clipped into the strip
    (reference, R5: y2 = −1 with probability 3/4); no areas.

Episode end:
    exactly T = 200 steps, then truncation (no termination).

Variants (spec §7.1, presets §7.4):
    ``deplete_weight`` (R1), ``reward_scale`` (R2), ``reward_terms`` (R3), ``dropoff`` (R4),
    ``major_init`` (R5), ``minor_init_encumbrance`` (R6), ``enc_bins`` (R7),
    ``marl_area_histogram`` (R9, used by the multi-agent view).  The M3FC decoder never applies
    tanh in Foraging (``xi_squash = "none"`` in both presets).

Vectorized environment:
    all B copies step together.  Steps 1–3 (move, forage, deposit) and step 4 (area compaction
    and spawns) run as compiled loops over copies, minors and area slots (:func:`forage_deposit`,
    :func:`compact_and_spawn`, numba), bit for bit the former numpy formulation, random stream
    included (kept as the test oracle: tests/foraging_numpy_oracle.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
from numba import njit
from numpy.typing import NDArray

from m3fmarl.kernels import row_sum
from m3fmarl.problems.core import (
    FloatArray,
    IntArray,
    Problem,
    State,
    Switches,
    batched_histogram,
    grid_cells,
    with_major_slot,
)

LOW, HIGH = -2.0, 2.0
"""The square X of minor positions and area locations."""
MAJOR_LOW = np.array([-2.0, -2.0])
MAJOR_HIGH = np.array([2.0, -1.0])
"""The truck's strip [-2, 2] × [-2, -1]."""
NUM_BINS = 7
"""Position bins per coordinate (spec §1.2)."""
ENC_THRESHOLD = 0.5
"""Encumbrance cell 1 iff e > 0.5 (nearest of the centres 0 and 1, ties to 0)."""
MINOR_VMAX = 0.3
MAJOR_VMAX = 0.1
RANGE = 0.5
"""ρ: interaction range of an area."""
DEPLETE_CAP = 0.1
"""Maximum ΔL per area and step."""
SHARE_EPS = 1e-10
"""Added to Σ w in the shares, as the reference does."""
DEPOSIT_RADIUS = 0.5
MAX_AREAS = 5
SPAWN_RATE = 0.2
SIZE_LOW, SIZE_HIGH = 0.5, 1.5


@njit(cache=True, nogil=True)
def forage_deposit(
    pos: FloatArray, minor_u: FloatArray, depot: FloatArray, locations: FloatArray, sizes: FloatArray,
    alive: NDArray[np.bool_], enc: FloatArray, new_pos: FloatArray, r_forage: FloatArray,
    r_deposit: FloatArray, post_move: bool, normalized: bool,
) -> bool:
    """Steps 1–3 of spec §5.2 for every copy: move, forage, deposit.

    In place on ``sizes``, ``alive`` (areas used up) and ``enc``; writes ``new_pos`` and the two
    reward terms per copy.  Returns False (and leaves the outputs unusable) if a minor action is
    not finite.  Per copy and minor: p' = clip(p + 0.3 u / max(1, ‖u‖)); every alive area m
    (in slot = creation order) weighs the minors by w_i = ρ − ‖p_i − ℓ_m‖ inside its range (÷ ρ
    when normalized), takes ΔL = min(0.1, Σw/N) (all that is left if less), and hands out the
    shares ΔL·w_i/(Σw + 1e-10)·N; the load is capped at 1 once, after all areas (the same as
    capping area by area, shares being ≥ 0); minors within 0.5 of the pre-step truck position
    (of p' with ``post_move``, ≤ instead of <) drop their load there.  Sums are numpy's
    (:func:`m3fmarl.kernels.row_sum`), so the result equals the former numpy formulation bit
    for bit (tests/test_foraging.py holds it as the oracle).
    """
    b, n = enc.shape
    xs, ys, ux, uy, w, gain = np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    r2 = DEPOSIT_RADIUS * DEPOSIT_RADIUS
    for c in range(b):
        # De-interleave (x, y) so that the loops below run on contiguous rows (SIMD).
        for i in range(n):
            xs[i] = pos[c, i, 0]
            ys[i] = pos[c, i, 1]
            ux[i] = minor_u[c, i, 0]
            uy[i] = minor_u[c, i, 1]
        for i in range(n):
            if not (np.isfinite(ux[i]) and np.isfinite(uy[i])):
                return False
        for i in range(n):
            norm = max(np.sqrt(ux[i] * ux[i] + uy[i] * uy[i]), 1.0)
            ux[i] = min(max(ux[i] / norm * MINOR_VMAX + xs[i], LOW), HIGH)
            uy[i] = min(max(uy[i] / norm * MINOR_VMAX + ys[i], LOW), HIGH)
        for i in range(n):
            new_pos[c, i, 0] = ux[i]
            new_pos[c, i, 1] = uy[i]
            gain[i] = enc[c, i]
        foraged = False
        for m in range(locations.shape[1]):
            if not alive[c, m]:
                continue
            foraged = True
            qx, qy = locations[c, m, 0], locations[c, m, 1]
            # w_i = ρ − d_i inside the range, else 0: d² ≥ ρ² ⇔ d ≥ ρ exactly (ρ² = 0.25 is exact
            # and sqrt is correctly rounded), so clamping at 0 equals masking by d² < ρ².
            for i in range(n):
                dx = xs[i] - qx
                dy = ys[i] - qy
                v = RANGE - np.sqrt(dx * dx + dy * dy)
                w[i] = v if v > 0.0 else 0.0
            if normalized:
                for i in range(n):
                    w[i] = w[i] / RANGE
            sum_w = row_sum(w)
            delta = min(DEPLETE_CAP, sum_w / n)
            if sizes[c, m] <= delta:
                delta = sizes[c, m]
                alive[c, m] = False
            sizes[c, m] = sizes[c, m] - delta
            denom = sum_w + SHARE_EPS
            for i in range(n):
                enc[c, i] += w[i] * delta / denom * n  # + 0.0 outside the range
        if foraged:
            for i in range(n):
                e = min(enc[c, i], 1.0)
                enc[c, i] = e
                gain[i] = e - gain[i]
            r_forage[c] = row_sum(gain) / n
        else:
            r_forage[c] = 0.0
        mx, my = depot[c, 0], depot[c, 1]
        for i in range(n):
            ax = ux[i] if post_move else xs[i]
            ay = uy[i] if post_move else ys[i]
            dx = ax - mx
            dy = ay - my
            d2 = dx * dx + dy * dy
            near = d2 <= r2 if post_move else d2 < r2
            dropped = enc[c, i] if near else 0.0
            enc[c, i] -= dropped
            gain[i] = dropped
        r_deposit[c] = row_sum(gain) / n
    return True


@njit(cache=True, nogil=True)
def compact_and_spawn(
    rng: np.random.Generator, alive_before: NDArray[np.bool_], alive: NDArray[np.bool_], sizes: FloatArray,
    locations: FloatArray,
) -> None:
    """Step 4 of spec §5.2, in place: per copy the surviving areas move to the front in creation
    order, the dead behind them (a stable partition); if any area of the batch died, dead slots
    are zeroed (× 0.0, as numpy's ``locations *= alive`` does, signed zeros included); then
    Poisson(0.2) new areas per copy (at most up to 5) fill the next free slots: locations ~
    U([−2, 2]²) for all new slots of the batch first, then their sizes ~ U[0.5, 1.5] — numpy's
    draw order, so the random stream is unchanged."""
    b, k = alive.shape
    order = np.empty(k, dtype=np.int64)
    tmp_sizes, tmp_locations, tmp_alive = np.empty(k), np.empty((k, 2)), np.empty(k, dtype=np.bool_)
    changed = False
    for c in range(b):
        j = 0
        for m in range(k):  # survivors first, then the dead, each in slot order (stable)
            if alive[c, m]:
                order[j] = m
                j += 1
        for m in range(k):
            if not alive[c, m]:
                order[j] = m
                j += 1
        for m in range(k):
            tmp_sizes[m] = sizes[c, order[m]]
            tmp_locations[m, 0] = locations[c, order[m], 0]
            tmp_locations[m, 1] = locations[c, order[m], 1]
            tmp_alive[m] = alive[c, order[m]]
        for m in range(k):
            sizes[c, m] = tmp_sizes[m]
            locations[c, m, 0] = tmp_locations[m, 0]
            locations[c, m, 1] = tmp_locations[m, 1]
            alive[c, m] = tmp_alive[m]
            changed = changed or alive[c, m] != alive_before[c, m]
    if changed:
        for c in range(b):
            for m in range(k):
                f = 1.0 if alive[c, m] else 0.0
                locations[c, m, 0] *= f
                locations[c, m, 1] *= f
                sizes[c, m] *= f
    count = np.empty(b, dtype=np.int64)
    num_new = np.empty(b, dtype=np.int64)
    for c in range(b):
        count[c] = 0
        for m in range(k):
            count[c] += alive[c, m]
        num_new[c] = min(rng.poisson(SPAWN_RATE), k - count[c])
    for c in range(b):
        for m in range(count[c], count[c] + num_new[c]):
            locations[c, m, 0] = rng.uniform(LOW, HIGH)
            locations[c, m, 1] = rng.uniform(LOW, HIGH)
    for c in range(b):
        for m in range(count[c], count[c] + num_new[c]):
            sizes[c, m] = rng.uniform(SIZE_LOW, SIZE_HIGH)
            alive[c, m] = True


@dataclasses.dataclass
class ForagingState(State):
    positions: FloatArray  # (B, N, 2) minor positions p in [-2, 2]²
    encumbrance: FloatArray  # (B, N) carried cargo e in [0, 1]
    major: FloatArray  # (B, 2) truck position y in [-2, 2] × [-2, -1]
    area_locations: FloatArray  # (B, 5, 2) q_m in [-2, 2]², creation order; dead slots 0
    area_sizes: FloatArray  # (B, 5) remaining L_m > 0 of alive slots; dead slots 0
    area_alive: NDArray[np.bool_]  # (B, 5) alive slots, always a prefix (compacted)


@dataclasses.dataclass(frozen=True)
class ForagingSwitches(Switches):
    deplete_weight: str = "paper"
    """R1: w = (ρ − d)^+ (``paper``) or (ρ − d)^+ / ρ (``normalized``, reference)."""
    reward_scale: float = 1
    """R2: factor on the reward, 1 (paper) or 100 (reference)."""
    reward_terms: str = "foraged_plus_deposited"
    """R3: reward = foraged + deposited (both presets) or ``deposited_only``."""
    dropoff: str = "pre_move"
    """R4: deposit iff ‖x_t − y_t‖ < 0.5 (``pre_move``, paper) or ‖p_{t+1} − y_t‖ ≤ 0.5
    (``post_move``, reference)."""
    major_init: str = "uniform_strip"
    """R5: y_0 ~ Unif(strip) (``uniform_strip``) or clip(Unif([-2, 2]²)) (``clipped_square``)."""
    minor_init_encumbrance: str = "uniform"
    """R6: e_0 ~ Unif[0, 1] (``uniform``, paper, low confidence) or 0 (``zero``, reference)."""
    enc_bins: int = 1
    """R7: encumbrance cells in the M3FC histogram, 1 (paper, M = 49) or 2 (reference, 98)."""
    marl_area_histogram: bool = False
    """R9: multi-agent observation includes the area histogram (reference) or not (paper)."""

    CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = {
        **Switches.CHOICES,
        "deplete_weight": ("paper", "normalized"),
        "reward_scale": (1, 100),
        "reward_terms": ("foraged_plus_deposited", "deposited_only"),
        "dropoff": ("pre_move", "post_move"),
        "major_init": ("uniform_strip", "clipped_square"),
        "minor_init_encumbrance": ("uniform", "zero"),
        "enc_bins": (1, 2),
        "marl_area_histogram": (False, True),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        # `in` alone would accept True for 1 and 1 for True.
        for name in ("reward_scale", "enc_bins"):
            if isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name}: expected a number, got {getattr(self, name)!r}")
        if not isinstance(self.marl_area_histogram, (bool, np.bool_)):
            raise ValueError(
                f"marl_area_histogram: expected True or False, got {self.marl_area_histogram!r}"
            )


class Foraging(Problem[ForagingState]):
    __doc__ = __doc__
    name = "foraging"
    env_id = "m3fmarl/Foraging-v0"
    horizon = 200
    minor_action_dim = 2
    major_action_dim = 2
    reference_de_squash = "none"
    PRESETS = {
        "paper": ForagingSwitches(),
        "reference": ForagingSwitches(
            std_map="reference",
            de_decode="reference_mismatch",
            xi_squash="none",
            deplete_weight="normalized",
            reward_scale=100,
            reward_terms="foraged_plus_deposited",
            dropoff="post_move",
            major_init="clipped_square",
            minor_init_encumbrance="zero",
            enc_bins=2,
            marl_area_histogram=True,
        ),
    }
    switches: ForagingSwitches

    @property
    def cell_shape(self) -> tuple[int, ...]:
        if self.switches.enc_bins == 2:
            return (NUM_BINS, NUM_BINS, 2)
        return (NUM_BINS, NUM_BINS)

    # --- dynamics ----------------------------------------------------------------------------
    def reset(self, num_envs: int, rng: np.random.Generator) -> ForagingState:
        n = self.num_minors
        positions = rng.uniform(LOW, HIGH, size=(num_envs, n, 2))
        if self.switches.minor_init_encumbrance == "uniform":
            encumbrance = rng.uniform(0.0, 1.0, size=(num_envs, n))
        else:
            encumbrance = np.zeros((num_envs, n))
        if self.switches.major_init == "uniform_strip":
            major = rng.uniform(MAJOR_LOW, MAJOR_HIGH, size=(num_envs, 2))
        else:
            major = np.clip(rng.uniform(LOW, HIGH, size=(num_envs, 2)), MAJOR_LOW, MAJOR_HIGH)
        return ForagingState(
            t=np.zeros(num_envs, dtype=np.int64),
            positions=positions,
            encumbrance=encumbrance,
            major=major,
            area_locations=np.zeros((num_envs, MAX_AREAS, 2)),
            area_sizes=np.zeros((num_envs, MAX_AREAS)),
            area_alive=np.zeros((num_envs, MAX_AREAS), dtype=bool),
        )

    def step(
        self,
        state: ForagingState,
        major_u: FloatArray | None,
        minor_u: FloatArray,
        rng: np.random.Generator,
    ) -> tuple[ForagingState, FloatArray]:
        pos = state.positions
        b, n, _ = pos.shape
        minor_u = np.asarray(minor_u, dtype=np.float64)
        major_u = np.asarray(major_u, dtype=np.float64)
        if minor_u.shape != pos.shape:
            raise ValueError(f"minor_u: expected shape {pos.shape}, got {minor_u.shape}")
        if major_u.shape != (b, 2):
            raise ValueError(f"major_u: expected shape {(b, 2)}, got {major_u.shape}")

        if not np.isfinite(major_u).all():
            raise ValueError("actions must be finite (got NaN or inf)")

        # The truck moves here; its pre-step position is the depot of step 3.
        u0_norm = np.sqrt(np.einsum("bi,bi->b", major_u, major_u))
        major = state.major + MAJOR_VMAX * (major_u / np.maximum(u0_norm, 1.0)[:, None])
        np.clip(major, MAJOR_LOW, MAJOR_HIGH, out=major)
        new_pos, enc, sizes, alive, r_forage, r_deposit = self.move_forage_deposit(state, minor_u)
        locations, sizes, alive = self.compact_and_spawn(state, sizes, alive, rng)

        if self.switches.reward_terms == "deposited_only":
            reward = r_deposit
        else:
            reward = r_forage + r_deposit
        if self.switches.reward_scale != 1:
            reward *= self.switches.reward_scale
        next_state = ForagingState(
            t=state.t + 1,
            positions=new_pos,
            encumbrance=enc,
            major=major,
            area_locations=locations,
            area_sizes=sizes,
            area_alive=alive,
        )
        return next_state, reward

    def move_forage_deposit(
        self, state: ForagingState, minor_u: FloatArray
    ) -> tuple[FloatArray, FloatArray, FloatArray, NDArray[np.bool_], FloatArray, FloatArray]:
        """Steps 1–3 of spec §5.2 (:func:`forage_deposit`, one compiled pass per copy): the new
        positions, encumbrances, area sizes and alive flags (before compaction), R_forage, R_deposit."""
        b = state.encumbrance.shape[0]
        enc = state.encumbrance.copy()
        sizes = state.area_sizes.copy()
        alive = state.area_alive.copy()
        new_pos = np.empty_like(state.positions)
        r_forage, r_deposit = np.empty(b), np.empty(b)
        finite = forage_deposit(
            np.ascontiguousarray(state.positions), np.ascontiguousarray(minor_u), np.ascontiguousarray(state.major),
            np.ascontiguousarray(state.area_locations), sizes, alive, enc, new_pos, r_forage, r_deposit,
            self.switches.dropoff == "post_move", self.switches.deplete_weight == "normalized",
        )
        if not finite:
            raise ValueError("actions must be finite (got NaN or inf)")
        return new_pos, enc, sizes, alive, r_forage, r_deposit

    def compact_and_spawn(
        self, state: ForagingState, sizes: FloatArray, alive: NDArray[np.bool_], rng: np.random.Generator
    ) -> tuple[FloatArray, FloatArray, NDArray[np.bool_]]:
        """Step 4 of spec §5.2 (:func:`compact_and_spawn`): the areas' locations, sizes and alive
        flags after the survivors move to the front and new areas spawn behind them."""
        locations = state.area_locations.copy()
        compact_and_spawn(rng, state.area_alive, alive, sizes, locations)
        return locations, sizes, alive

    # --- observation -------------------------------------------------------------------------
    def minor_cells(self, state: ForagingState) -> IntArray:
        layer = state.encumbrance > ENC_THRESHOLD if self.switches.enc_bins == 2 else None
        return grid_cells(state.positions, LOW, HIGH, NUM_BINS, layer)

    def histogram(self, state: ForagingState) -> FloatArray:
        """``(B, M)`` minors' histogram over ``cell_shape`` (counts / N), C order."""
        return batched_histogram(self.cells(state), self.num_cells)

    def major_observation(self, state: ForagingState) -> FloatArray:
        """``(B, 2)``: the truck position (y1, y2)."""
        return state.major

    def m3fc_observation(self, state: ForagingState) -> FloatArray:
        return np.concatenate([self.histogram(state), state.major], axis=1)

    def m3fc_observation_bounds(self) -> tuple[FloatArray, FloatArray]:
        m = self.num_cells
        low = np.concatenate([np.zeros(m), np.full(2, LOW)])
        high = np.concatenate([np.ones(m), np.full(2, HIGH)])
        return low, high

    def area_histogram(self, state: ForagingState) -> FloatArray:
        """``(B, 7, 7, 2)`` alive area locations per cell / 5, all in encumbrance cell 0 (§5.5)."""
        b = state.area_alive.shape[0]
        cells = grid_cells(state.area_locations, LOW, HIGH, NUM_BINS)
        cells = np.where(state.area_alive, cells, NUM_BINS * NUM_BINS)  # dead → spare cell
        counts = batched_histogram(cells, NUM_BINS * NUM_BINS + 1, 1.0 / MAX_AREAS)
        out = np.zeros((b, NUM_BINS, NUM_BINS, 2))
        out[..., 0] = counts[:, :-1].reshape(b, NUM_BINS, NUM_BINS)
        return out

    # --- multi-agent observation (spec §5.5) --------------------------------------------------
    agent_own_dim = 3

    def agent_own(self, state: ForagingState) -> FloatArray:
        """Own (p¹, p², e) (zeros for the major)."""
        minor = np.concatenate([state.positions, state.encumbrance[:, :, None]], axis=2)
        return with_major_slot(minor, np.zeros(3))

    def _agent_layers(self) -> int:
        return 2 if self.switches.marl_area_histogram else 1

    def agent_shared(self, state: ForagingState) -> FloatArray:
        """Truck (y¹, y²), then per histogram cell the minors' mass and — if
        ``marl_area_histogram`` (R9, reference) — the alive areas' count / 5 (areas sit in
        encumbrance cell 0)."""
        mu = self.histogram(state)
        if not self.switches.marl_area_histogram:
            return np.concatenate([state.major, mu], axis=1)
        b = mu.shape[0]
        area = self.area_histogram(state)  # (B, 7, 7, 2): encumbrance cells 0 and 1
        if self.switches.enc_bins == 1:
            area = area[..., :1]
        hist = np.stack([mu, area.reshape(b, -1)], axis=-1).reshape(b, -1)
        return np.concatenate([state.major, hist], axis=1)

    def agent_observation_bounds(self) -> tuple[FloatArray, FloatArray]:
        m = self.num_cells * self._agent_layers()
        low = np.concatenate([[LOW, LOW, 0.0], [LOW, LOW], np.zeros(m)])
        high = np.concatenate([[HIGH, HIGH, 1.0], [HIGH, LOW + 1.0], np.ones(m)])
        return low, high

    def agent_population(self) -> IntArray:
        """The minors' mass per histogram cell (every ``layers``-th entry after own and truck)."""
        return self.agent_own_dim + 2 + np.arange(self.num_cells) * self._agent_layers()

    # --- rendering ---------------------------------------------------------------------------
    def draw(self, ax: Any, state: ForagingState, index: int = 0) -> None:
        from matplotlib.patches import Circle

        ax.axhspan(MAJOR_LOW[1], MAJOR_HIGH[1], color="0.9", zorder=0, label="truck strip")
        alive = state.area_alive[index]
        for q in state.area_locations[index][alive]:
            ax.add_patch(Circle(q, RANGE, fill=False, ls="--", color="tab:purple", alpha=0.5))
        ax.scatter(
            *state.area_locations[index][alive].T,
            s=300 * state.area_sizes[index][alive],
            c="tab:purple",
            alpha=0.5,
            label="areas (size L)",
        )
        ax.scatter(
            *state.positions[index].T,
            c=state.encumbrance[index],
            cmap="RdYlGn_r",
            vmin=0.0,
            vmax=1.0,
            s=15,
            label="minors",
        )
        ax.scatter(*state.major[index], marker="s", s=200, c="tab:blue", label="truck (major)")
        ax.add_patch(
            Circle(state.major[index], DEPOSIT_RADIUS, fill=False, color="tab:blue", ls=":")
        )
        ax.set_xlim(LOW - 0.1, HIGH + 0.1)
        ax.set_ylim(LOW - 0.1, HIGH + 0.1)
        ax.set_aspect("equal")
