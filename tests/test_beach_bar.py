"""Beach bar (spec §4): rewards on hand-computed states, the B1–B4 switches, observation layout."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from m3fmarl.problems.beach_bar import MOVES, BeachBar, BeachState, torus_l1  # noqa: F401


def state(minors: list, bar: list, target: list) -> BeachState:
    return BeachBar.make_state([minors], [bar], [target])


def test_reward_hand_case_two_minors_on_one_cell() -> None:
    """N=2, x = {(0,0),(0,0)}, y = (0,4), z = (3,4).

    d(x, y) = min(0,5) + min(4,1) = 1 for both minors, so the mean distance is 1; d(z, y) = 3 → 2
    through the torus; both minors share a cell so Σµ² = 1.  Reference coefficients (0.3, 1.0,
    1.5): r = −1 − 0.6 − 1.5 = −3.1.  Paper coefficients (0.5, 2.5, 6.25): −1 − 2.5 − 6.25 = −9.75.
    """
    s = state([[0, 0], [0, 0]], [0, 4], [3, 4])
    assert BeachBar(2, "reference").reward(s)[0] == pytest.approx(-3.1)
    assert BeachBar(2, "paper").reward(s)[0] == pytest.approx(-9.75)


def test_reward_hand_case_three_spread_minors() -> None:
    """N=3, x = {(0,0),(2,3),(4,4)}, y = z = (1,1): distances 2, 3, 4 (mean 3); Σµ² = 3·(1/3)² = 1/3.

    Reference: r = −1.0·3 − 0 − 1.5/3 = −3.5.
    """
    s = state([[0, 0], [2, 3], [4, 4]], [1, 1], [1, 1])
    assert BeachBar(3, "reference").reward(s)[0] == pytest.approx(-3.5)


def test_reward_is_computed_on_the_pre_step_state() -> None:
    p = BeachBar(2, "reference")
    s = state([[0, 0], [0, 0]], [0, 4], [3, 4])
    _, r = p.step(s, np.array([2]), np.array([[2, 4]]), np.random.default_rng(0))
    assert r[0] == pytest.approx(-3.1)


def test_moves_wrap_around_the_torus() -> None:
    p = BeachBar(2, "paper")
    s = state([[0, 0], [4, 4]], [4, 0], [0, 0])
    nxt, _ = p.step(s, np.array([2]), np.array([[1, 4]]), np.random.default_rng(0))
    np.testing.assert_array_equal(nxt.minors[0], [4 * 5 + 0, 4 * 5 + 0])  # (0,0)+(−1,0), (4,4)+(0,+1)
    np.testing.assert_array_equal(nxt.bar[0], [0, 0])  # (4,0)+(+1,0)


def test_row_union_histogram_bug_example() -> None:
    """Spec §4.4: minors at (3,1), (2,2), (0,4) → every entry of the reference layer is 1/3.

    Rows touched: minor 1 rows 3 and 1, minor 2 row 2 (once), minor 3 rows 0 and 4: each of the 5
    rows is hit by exactly one minor, so every entry is 1/3 and the layer sums to 25/3 = 8.333.
    """
    s = state([[3, 1], [2, 2], [0, 4]], [0, 0], [0, 0])
    h = BeachBar(3, "reference").histogram(s)[0]
    np.testing.assert_allclose(h, np.full(25, 1 / 3))
    joint = BeachBar(3, "paper").histogram(s)[0]
    expect = np.zeros(25)
    expect[[3 * 5 + 1, 2 * 5 + 2, 0 * 5 + 4]] = 1 / 3
    np.testing.assert_allclose(joint, expect)


@given(cells=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=30))
def test_row_union_histogram_matches_its_definition(cells: list) -> None:
    """H[r, s] = #{i : x1_i = r or x2_i = r} / N for every s (spec §4.4)."""
    s = state([list(c) for c in cells], [0, 0], [0, 0])
    h = BeachBar(len(cells), "reference").histogram(s)[0].reshape(5, 5)
    for r in range(5):
        expect = sum(1 for a, b in cells if a == r or b == r) / len(cells)
        np.testing.assert_allclose(h[r], expect)


def test_observation_layout_one_hots() -> None:
    s = state([[1, 2]], [3, 0], [4, 2])
    obs = BeachBar(1, "paper").m3fc_observation(s)[0]
    assert obs.shape == (45,)
    assert obs[5 * 1 + 2] == 1.0 and obs[:25].sum() == 1.0
    one_hots = obs[25:].reshape(4, 5)
    np.testing.assert_array_equal(one_hots.argmax(1), [3, 0, 4, 2])
    np.testing.assert_array_equal(one_hots.sum(1), 1.0)


@pytest.mark.parametrize(
    "variant, p_move, p_stay_draw",
    [("paper", 0.2, 0.0), ("reference", 0.16, 0.04)],
)
def test_target_walk_law(variant: str, p_move: float, p_stay_draw: float) -> None:
    """B2: the target moves w.p. 0.2 (paper, 0.05 per direction) or 0.16 (reference, 0.04 each)."""
    p = BeachBar(1, variant)
    b = 200_000
    start = np.full((b, 2), 2, dtype=np.int64)
    moved = p._walk(start, np.random.default_rng(0)) - start
    frac_moved = np.any(moved != 0, axis=1).mean()
    assert frac_moved == pytest.approx(p_move, abs=0.004)
    for k in range(1, 5):
        frac = np.all(moved == MOVES[k], axis=1).mean()
        assert frac == pytest.approx(p_move / 4, abs=0.003)


def test_target_init_switch() -> None:
    """B3: paper z_0 = (0,0); reference z_0 = y_0 then one walk step (stays on y_0 w.p. 0.84)."""
    rng = np.random.default_rng(0)
    paper = BeachBar(3, "paper").reset(5000, rng)
    assert np.all(paper.target == 0)
    ref = BeachBar(3, "reference").reset(20000, rng)
    dist = torus_l1(ref.target, ref.bar)
    assert set(np.unique(dist)) <= {0, 1}
    assert (dist == 0).mean() == pytest.approx(0.84, abs=0.01)


def test_reference_and_paper_presets() -> None:
    ref, pap = BeachBar(2, "reference").switches, BeachBar(2, "paper").switches
    assert ref.reward_coeffs == (0.3, 1.0, 1.5) and pap.reward_coeffs == (0.5, 2.5, 6.25)
    assert (ref.target_walk, ref.target_init, ref.histogram) == ("five_actions", "major_then_step", "row_union_bug")
    assert (pap.target_walk, pap.target_init, pap.histogram) == ("four_directions", "origin", "joint")
    # A single switch can be overridden on top of a preset.
    assert BeachBar(2, "reference", histogram="joint").switches.histogram == "joint"
