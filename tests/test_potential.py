"""Potential (spec §6): hand-computed force and reward cases, torus wrap, switches."""

from __future__ import annotations

import numpy as np
import pytest

from m3fmarl.problems.potential import Potential, PotentialState


def state(minors: list, major: float, target: float) -> PotentialState:
    return PotentialState(
        t=np.zeros(1, dtype=np.int64), minors=np.array([minors], dtype=np.float64),
        major=np.array([major]), target=np.array([target]),
    )


def step(p: Potential, s: PotentialState, u: list) -> PotentialState:
    nxt, _ = p.step(s, np.zeros((1, 1)), np.array(u, dtype=np.float64).reshape(1, -1, 1), np.random.default_rng(0))
    return nxt


def test_reward_absolute_vs_toroidal() -> None:
    """y = 0.5, z = −1.9: |y − z| = 2.4 (reference); the torus of length 4 gives 1.6 (paper)."""
    s = state([0.0], 0.5, -1.9)
    assert Potential(1, "reference").reward(s)[0] == pytest.approx(-2.4)
    assert Potential(1, "paper").reward(s)[0] == pytest.approx(-1.6)


def test_force_single_minor() -> None:
    """N=1, x = 0, y = 0.5, u = 0: d = 0.5, push = (1 − 0.5)·(+1) = 0.5; y' = 0.5 + c·0.5.

    Reference c = 0.1 → 0.55; paper c = 0.05 → 0.525.
    """
    s = state([0.0], 0.5, 0.0)
    assert step(Potential(1, "reference"), s, [0.0]).major[0] == pytest.approx(0.55)
    assert step(Potential(1, "paper"), s, [0.0]).major[0] == pytest.approx(0.525)


def test_force_uses_pre_step_positions_and_minor_wraps() -> None:
    """N=1, x = −1.9, y = 1.8, u = 1: x' = −1.7 (reference speed 0.2); g = y − x = 3.7 → −0.3 on
    the torus, d = 0.3, push = 0.7·(−1) → y' = 1.8 − 0.1·0.7 = 1.73."""
    nxt = step(Potential(1, "reference"), state([-1.9], 1.8, 0.0), [1.0])
    assert nxt.minors[0, 0] == pytest.approx(-1.7)
    assert nxt.major[0] == pytest.approx(1.73)


def test_force_through_the_seam() -> None:
    """N=2, x = (1.9, 0.0), y = −1.95, u = (1, 0): x' = (2.1 → −1.9, 0.0); the first minor is
    0.15 away through the seam (g = +0.15), the second is out of range:
    y' = −1.95 + 0.1·(0.85/2) = −1.9075."""
    nxt = step(Potential(2, "reference"), state([1.9, 0.0], -1.95, 0.0), [1.0, 0.0])
    np.testing.assert_allclose(nxt.minors[0], [-1.9, 0.0])
    assert nxt.major[0] == pytest.approx(-1.9075)


def test_minor_speed_switch() -> None:
    s = state([0.0], 1.9, 0.0)
    assert step(Potential(1, "reference"), s, [1.0]).minors[0, 0] == pytest.approx(0.2)
    assert step(Potential(1, "paper"), s, [1.0]).minors[0, 0] == pytest.approx(0.3)


def test_target_ou_statistics() -> None:
    """z' = clip(N(0.99 z, var 0.005)): from z = 1, mean 0.99 and std √0.005 = 0.0707."""
    p = Potential(1, "reference")
    b = 100_000
    s = PotentialState(t=np.zeros(b, dtype=np.int64), minors=np.zeros((b, 1)), major=np.zeros(b), target=np.ones(b))
    nxt, _ = p.step(s, np.zeros((b, 1)), np.zeros((b, 1, 1)), np.random.default_rng(0))
    assert nxt.target.mean() == pytest.approx(0.99, abs=0.001)
    assert nxt.target.std() == pytest.approx(np.sqrt(0.005), rel=0.01)


def test_positions_stay_on_the_torus() -> None:
    p = Potential(50, "paper")
    rng = np.random.default_rng(1)
    s = p.reset(8, rng)
    for _ in range(100):
        s, _ = p.step(s, np.zeros((8, 1)), rng.uniform(-1, 1, (8, 50, 1)), rng)
        assert np.all((s.minors >= -2) & (s.minors < 2)) and np.all((s.major >= -2) & (s.major < 2))
        assert np.all(np.abs(s.target) <= 2)
