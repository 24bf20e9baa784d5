"""The numpy formulation of Foraging's step that the compiled one replaced (the oracle).

Until 2026-11-30 ``Foraging.step`` moved, foraged and deposited with numpy array passes (dense
and sparse paths, bit-identical to each other).  ``forage_deposit`` (numba) must give exactly the
same results; tests/test_foraging.py compares the two.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from m3fmarl.problems.core import FloatArray
from m3fmarl.problems.foraging import (
    DEPLETE_CAP,
    DEPOSIT_RADIUS,
    HIGH,
    LOW,
    MAX_AREAS,
    MINOR_VMAX,
    RANGE,
    SHARE_EPS,
    SIZE_HIGH,
    SIZE_LOW,
    SPAWN_RATE,
    Foraging,
    ForagingState,
)

FAR = 1e6
"""Stand-in location of a dead slot in the distance tables: no minor is within range of it."""


class NumpyForaging(Foraging):
    """Foraging with the former numpy steps 1–4 (``dense_fraction``: 0 always dense, 1 always sparse)."""

    dense_fraction: ClassVar[float] = 0.1

    def __init__(self, num_minors: int, variant: str = "paper", **switches) -> None:
        super().__init__(num_minors, variant, **switches)
        self._scratch = None

    def move_forage_deposit(self, state: ForagingState, minor_u: FloatArray):
        pos = state.positions
        b, n, _ = pos.shape
        minor_u = np.asarray(minor_u, dtype=np.float64)
        # 1. Move: p' = clip(p + 0.3 proj(u)).  proj(u) = u / max(1, ‖u‖) changes only actions
        # with ‖u‖ > 1; when those are few (< 5 %) they are recomputed by mask (same operations
        # per element as the dense branch, so both give identical bits).
        u1, u2 = minor_u[..., 0], minor_u[..., 1]
        norm2 = u1 * u1
        norm2 += u2 * u2
        if not np.isfinite(norm2.sum()):
            raise ValueError("actions must be finite (got NaN or inf)")
        over = norm2 > 1.0
        num_over = np.count_nonzero(over)
        if num_over * 20 > over.size:
            norm = np.sqrt(norm2, out=norm2)
            np.maximum(norm, 1.0, out=norm)
            new_pos = np.empty_like(minor_u)
            np.divide(u1, norm, out=new_pos[..., 0])
            np.divide(u2, norm, out=new_pos[..., 1])
            new_pos *= MINOR_VMAX
        else:
            new_pos = minor_u * MINOR_VMAX
            if num_over:
                new_pos[over] = MINOR_VMAX * (minor_u[over] / np.sqrt(norm2[over])[:, None])
        new_pos += pos
        np.clip(new_pos, LOW, HIGH, out=new_pos)
        # 2. Forage with the pre-step positions.
        enc = state.encumbrance.copy()
        locations = state.area_locations.copy()
        sizes = state.area_sizes.copy()
        alive = state.area_alive.copy()
        r_forage = self._forage(pos, enc, locations, sizes, alive)

        # 3. Deposit at the pre-step truck position y_t (squared distances, no sqrt needed).
        post = self.switches.dropoff == "post_move"
        at = new_pos if post else pos
        dist2 = at[..., 0] - state.major[:, 0, None]
        dist2 *= dist2
        dy = at[..., 1] - state.major[:, 1, None]
        dy *= dy
        dist2 += dy
        r2 = DEPOSIT_RADIUS * DEPOSIT_RADIUS
        near = dist2 <= r2 if post else dist2 < r2
        deposited = enc * near
        enc -= deposited  # exactly 0 where deposited, unchanged elsewhere
        r_deposit = deposited.sum(axis=1) / n

        return new_pos, enc, sizes, alive, r_forage, r_deposit

    def compact_and_spawn(self, state: ForagingState, sizes, alive, rng: np.random.Generator):
        b = alive.shape[0]
        locations = state.area_locations.copy()

        # Keep the slots in creation order with the survivors in front (stable); dead slots 0.
        if (alive[:, 1:] & ~alive[:, :-1]).any():
            order = np.argsort(~alive, axis=1, kind="stable")
            copy = np.arange(b)[:, None]
            alive, sizes, locations = alive[copy, order], sizes[copy, order], locations[copy, order]
        if not np.array_equal(alive, state.area_alive):
            locations *= alive[..., None]
            sizes *= alive

        # 4. Spawn behind the survivors; new areas are foraged from the next step on.
        count = alive.sum(axis=1)
        num_new = np.minimum(rng.poisson(SPAWN_RATE, size=b), MAX_AREAS - count)
        total = int(num_new.sum())
        if total:
            slot = np.arange(MAX_AREAS)
            new = (slot >= count[:, None]) & (slot < (count + num_new)[:, None])
            locations[new] = rng.uniform(LOW, HIGH, size=(total, 2))
            sizes[new] = rng.uniform(SIZE_LOW, SIZE_HIGH, size=total)
            alive |= new
        return locations, sizes, alive

    def _buffers(
        self, b: int, k: int, n: int
    ) -> tuple[FloatArray, FloatArray, NDArray[np.bool_]]:
        """Two float and one bool ``(b, k, n)`` scratch arrays, reused across steps.

        Fresh temporaries of this size (0.8 MB at B = 64, N = 300) made glibc return and re-fault
        heap pages every step, which cost about as much as the arithmetic itself.  (So one
        ``Foraging`` instance must not step from two threads at once.)
        """
        size = b * k * n
        if self._scratch is None or self._scratch[0].size < size:
            cap = b * MAX_AREAS * n
            self._scratch = (np.empty(cap), np.empty(cap), np.empty(cap, dtype=bool))
        f1, f2, mask = self._scratch
        shape = (b, k, n)
        return f1[:size].reshape(shape), f2[:size].reshape(shape), mask[:size].reshape(shape)

    def _forage(
        self,
        pos: FloatArray,
        enc: FloatArray,
        locations: FloatArray,
        sizes: FloatArray,
        alive: NDArray[np.bool_],
    ) -> FloatArray:
        """Step 2 of spec §5.2, in place on ``enc``, ``sizes`` and ``alive``; returns R_forage.

        The distances and ΔL of an area depend only on the pre-step positions and its own L, so
        they are computed for all processed slots at once (slots after the last one alive in any
        copy are skipped); only the encumbrance update is sequential, the shares being added in
        creation order.  When few (minor, area) pairs are in range, the square roots, shares and
        updates are done on those pairs only.  The dense and sparse paths perform the same
        floating-point operations per element, so a copy's result is bit-for-bit independent of
        the other copies in the batch and of the path taken.
        """
        b, n, _ = pos.shape
        any_alive = alive.any(axis=0)
        if not any_alive.any():
            return np.zeros(b)
        k = MAX_AREAS - int(np.argmax(any_alive[::-1]))  # slots up to the last alive one
        q = np.where(alive[:, :k, None], locations[:, :k], FAR)  # dead slots: out of range
        d2, w, in_range = self._buffers(b, k, n)
        np.subtract(pos[:, None, :, 0], q[:, :, 0, None], out=d2)
        np.multiply(d2, d2, out=d2)
        np.subtract(pos[:, None, :, 1], q[:, :, 1, None], out=w)
        np.multiply(w, w, out=w)
        d2 += w
        # d < ρ ⇔ d² < ρ² up to rounding exactly where the weight ρ − d rounds to 0 anyway.
        np.less(d2, RANGE * RANGE, out=in_range)
        hits = np.flatnonzero(in_range)
        dense = hits.size > self.dense_fraction * in_range.size
        normalized = self.switches.deplete_weight == "normalized"
        if dense:
            np.sqrt(d2, out=w)
            np.subtract(RANGE, w, out=w)
            w *= in_range
            if normalized:
                w /= RANGE
        else:
            w_hit = RANGE - np.sqrt(d2.reshape(-1)[hits])
            if normalized:
                w_hit /= RANGE
            w.fill(0.0)
            w.reshape(-1)[hits] = w_hit
        sum_w = w.sum(axis=2)  # (B, k), same reduction in both paths
        remaining = sizes[:, :k]
        delta = np.minimum(DEPLETE_CAP, sum_w / n)
        gone = alive[:, :k] & (remaining <= delta)
        delta = np.where(gone, remaining, delta)
        sizes[:, :k] = remaining - delta
        alive[:, :k] &= ~gone
        # Shares f_i = ΔL · w_i / (Σ_j w_j + 1e-10) · N; the part above 1 is wasted.
        denom = sum_w + SHARE_EPS
        # Saturating area by area, min(1, min(1, e + f¹) + f²) …, equals min(1, (e + f¹) + f² …)
        # exactly (shares are ≥ 0 and rounding is monotone), so the shares are added in creation
        # order and clipped once.
        before = enc.copy()
        if dense:
            w *= delta[:, :, None]
            w /= denom[:, :, None]
            w *= n
            for m in range(k):
                enc += w[:, m]
        else:
            pair = hits // n  # flat (copy, slot)
            share = delta.reshape(-1)[pair] * w_hit
            share /= denom.reshape(-1)[pair]
            share *= n
            # hits are sorted by (copy, slot, minor): each minor receives its shares in slot order.
            np.add.at(enc.reshape(-1), (pair // k) * n + hits % n, share)
        np.minimum(enc, 1.0, out=enc)
        return (enc - before).sum(axis=1) / n
