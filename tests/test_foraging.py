"""Foraging problem (spec/environments.md §5, §7.1 R1–R9, presets §7.4).

Expected numbers come from the spec's hand-computed cases or are worked out in each test's
docstring; statistical checks compare with the stated distributions (Poisson(0.2), Unif, 3/4).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from m3fmarl.problems.foraging import Foraging, ForagingState, ForagingSwitches

CI = settings(derandomize=True, deadline=None, max_examples=25)


def make_state(positions, encumbrance, major, areas=()) -> ForagingState:
    """One copy (B = 1) built by hand; ``areas`` = [((x, y), L), …] in creation order."""
    loc = np.zeros((1, 5, 2))
    size = np.zeros((1, 5))
    alive = np.zeros((1, 5), dtype=bool)
    for j, (q, L) in enumerate(areas):
        loc[0, j], size[0, j], alive[0, j] = q, L, True
    return ForagingState(
        t=np.zeros(1, dtype=np.int64),
        positions=np.array(positions, dtype=float).reshape(1, -1, 2),
        encumbrance=np.array(encumbrance, dtype=float).reshape(1, -1),
        major=np.array(major, dtype=float).reshape(1, 2),
        area_locations=loc,
        area_sizes=size,
        area_alive=alive,
    )


def zero_step(problem, state, rng=None, minor_u=None):
    b, n, _ = state.positions.shape
    u = np.zeros((b, n, 2)) if minor_u is None else np.asarray(minor_u, dtype=float)
    return problem.step(state, np.zeros((b, 2)), u, rng or np.random.default_rng(0))


def repeat_state(state: ForagingState, num_envs: int) -> ForagingState:
    """``num_envs`` identical copies of a one-copy state."""
    return ForagingState(
        **{
            f.name: np.repeat(getattr(state, f.name), num_envs, axis=0)
            for f in dataclasses.fields(ForagingState)
        }
    )


# ----------------------------------------------------------------------------------------------
# Interface, switches, presets
# ----------------------------------------------------------------------------------------------


def test_class_attributes():
    assert Foraging.name == "foraging"
    assert Foraging.env_id == "m3fmarl/Foraging-v0"
    assert Foraging.horizon == 200
    assert Foraging.minor_action_dim == 2 and Foraging.major_action_dim == 2
    assert Foraging.reference_de_squash == "none"
    assert Foraging(3).has_major and not Foraging(3).discrete


def test_presets_follow_spec_table():
    """Spec §7.4 rows for Foraging and the common M3FC switches (Foraging never uses tanh)."""
    expected = {
        "paper": dict(
            std_map="paper", xi_squash="none", de_decode="same_as_ce",
            deplete_weight="paper", reward_scale=1, reward_terms="foraged_plus_deposited",
            dropoff="pre_move", major_init="uniform_strip", minor_init_encumbrance="uniform",
            enc_bins=1, marl_area_histogram=False,
        ),
        "reference": dict(
            std_map="reference", xi_squash="none", de_decode="reference_mismatch",
            deplete_weight="normalized", reward_scale=100,
            reward_terms="foraged_plus_deposited", dropoff="post_move",
            major_init="clipped_square", minor_init_encumbrance="zero", enc_bins=2,
            marl_area_histogram=True,
        ),
    }  # fmt: skip
    for variant, values in expected.items():
        assert dataclasses.asdict(Foraging.PRESETS[variant]) == values
        assert dataclasses.asdict(Foraging(4, variant).switches) == values


def test_switches_are_frozen_and_validated():
    sw = ForagingSwitches()
    with pytest.raises(dataclasses.FrozenInstanceError):
        sw.dropoff = "post_move"  # type: ignore[misc]
    for bad in [
        dict(deplete_weight="half"),
        dict(reward_scale=10),
        dict(reward_terms="foraged_only"),
        dict(dropoff="never"),
        dict(major_init="origin"),
        dict(minor_init_encumbrance="one"),
        dict(enc_bins=3),
        dict(enc_bins=True),
        dict(marl_area_histogram=1),
        dict(no_such_switch=1),
    ]:
        with pytest.raises(ValueError):
            Foraging(5, "reference", **bad)
    with pytest.raises(ValueError):
        Foraging(5, "exact")
    with pytest.raises(ValueError):
        Foraging(0)
    p = Foraging(5, "paper", enc_bins=2, dropoff="post_move")
    assert p.switches.enc_bins == 2 and p.switches.deplete_weight == "paper"


def test_cell_shape_and_observation_sizes():
    ref, paper = Foraging(7, "reference"), Foraging(7, "paper")
    assert ref.cell_shape == (7, 7, 2) and ref.num_cells == 98
    assert paper.cell_shape == (7, 7) and paper.num_cells == 49
    assert ref.xi_shape == (7, 7, 2, 2, 2) and ref.xi_size == 392  # spec §5.4
    assert paper.xi_size == 196  # spec §7.4 note
    rng = np.random.default_rng(0)
    for p, dim in ((ref, 100), (paper, 51)):
        obs = p.m3fc_observation(p.reset(3, rng))
        assert obs.shape == (3, dim) and obs.dtype == np.float64
        low, high = p.m3fc_observation_bounds()
        assert low.shape == high.shape == (dim,)
        assert np.all(low[:-2] == 0) and np.all(high[:-2] == 1)
        assert np.all(low[-2:] == -2) and np.all(high[-2:] == 2)


def test_observation_layout_by_hand():
    """Reference flat index 14a + 2b + c; paper 7a + b; then (y1, y2).

    Minor 0 at (0, 0) → bins (3, 3), e = 0.5 → c = 0 (ties to 0): index 14·3 + 2·3 + 0 = 48.
    Minor 1 at (−1.9, 1.9) → bins (0, 6), e = 0.51 → c = 1: index 0 + 12 + 1 = 13.
    Minor 2 at (1.0, −0.5) → bins (5, 2) (cells [0.857, 1.429), [−0.857, −0.286)), e = 1 → c = 1:
    index 70 + 4 + 1 = 75.  Minor 3 at (1.0, −0.5) with e = 0 → index 74.
    """
    state = make_state(
        [[0, 0], [-1.9, 1.9], [1.0, -0.5], [1.0, -0.5]], [0.5, 0.51, 1.0, 0.0], [0.3, -1.7]
    )
    ref = Foraging(4, "reference")
    obs = ref.m3fc_observation(state)[0]
    expected = np.zeros(100)
    expected[[48, 13, 75, 74]] = 0.25
    expected[98:] = [0.3, -1.7]
    np.testing.assert_array_equal(obs, expected)
    np.testing.assert_array_equal(ref.minor_cells(state)[0], [48, 13, 75, 74])
    paper = Foraging(4, "paper")
    obs = paper.m3fc_observation(state)[0]
    expected = np.zeros(51)
    expected[24] = expected[6] = 0.25
    expected[37] = 0.5
    expected[49:] = [0.3, -1.7]
    np.testing.assert_array_equal(obs, expected)
    np.testing.assert_array_equal(paper.minor_cells(state)[0], [24, 6, 37, 37])


def test_area_histogram_by_hand():
    """Alive areas per (a, b) cell / 5, always in encumbrance cell 0 (spec §5.5)."""
    state = make_state(
        [[0, 0]],
        [0.9],
        [0, -1.5],
        areas=[((0.0, 0.0), 1.0), ((0.1, -0.1), 0.7), ((-1.9, 1.9), 1.2)],
    )
    hist = Foraging(1, "reference").area_histogram(state)
    assert hist.shape == (1, 7, 7, 2)
    expected = np.zeros((7, 7, 2))
    expected[3, 3, 0] = 2 / 5
    expected[0, 6, 0] = 1 / 5
    np.testing.assert_allclose(hist[0], expected)
    state.area_alive[0, 1] = False  # a dead slot does not count
    assert Foraging(1).area_histogram(state)[0, 3, 3, 0] == pytest.approx(1 / 5)


# ----------------------------------------------------------------------------------------------
# Hand-computed steps (spec §5.2)
# ----------------------------------------------------------------------------------------------


def case_saturation():
    return make_state([[0, 0], [0.25, 0]], [0.0, 0.95], [1.5, -1.5], areas=[((0, 0), 1.0)])


def test_spec_case_saturation_reference():
    """Spec §5.2 case 1: w = (1, 0.5), ΔL = min(0.1, 0.75) = 0.1, L → 0.9; shares
    0.1·w/(1.5 + 1e-10)·2 = 0.133333, 0.066667; B saturates (gain 0.05); r = 9.1666666662."""
    state = case_saturation()
    nxt, r = zero_step(Foraging(2, "reference"), state)
    assert r.shape == (1,)
    assert r[0] == pytest.approx(9.1666666662, abs=2e-10)
    np.testing.assert_allclose(nxt.encumbrance[0], [0.2 / (1.5 + 1e-10), 1.0], rtol=1e-12)
    assert nxt.area_sizes[0, 0] == pytest.approx(0.9, abs=1e-12) and nxt.area_alive[0, 0]
    np.testing.assert_array_equal(nxt.positions, state.positions)  # zero actions
    assert nxt.t[0] == 1 and state.t[0] == 0  # input state untouched
    assert state.encumbrance[0, 1] == 0.95 and state.area_sizes[0, 0] == 1.0


def test_spec_case_saturation_paper():
    """Paper weights (0.5, 0.25): mean 0.375 → the same ΔL = 0.1 and shares; scale 1:
    r = (0.1·0.5/(0.75 + 1e-10)·2 + 0.05)/2 = 0.0916666666578 (spec: 0.0916667)."""
    nxt, r = zero_step(Foraging(2, "paper"), case_saturation())
    assert r[0] == pytest.approx(0.0916667, abs=1e-7)
    assert r[0] == pytest.approx((0.1 * 0.5 / (0.75 + 1e-10) * 2 + 0.05) / 2, abs=1e-15)
    assert nxt.area_sizes[0, 0] == pytest.approx(0.9, abs=1e-12)


def case_single_forager():
    return make_state(
        [[0.45, 0]] + [[1.9, 1.9]] * 9, [0.0] * 10, [1.5, -1.5], areas=[((0, 0), 1.0)]
    )


def test_spec_case_single_forager():
    """Spec §5.2 case 2: reference w = 0.05/0.5 = 0.1, ΔL = 0.01, gain 0.1, r = 100·0.01 = 1.0;
    paper w = 0.05, ΔL = 0.005, gain 0.05, r = 0.005."""
    nxt, r = zero_step(Foraging(10, "reference"), case_single_forager())
    assert r[0] == pytest.approx(1.0, rel=1e-8)
    assert nxt.encumbrance[0, 0] == pytest.approx(0.1, rel=1e-8)
    assert np.all(nxt.encumbrance[0, 1:] == 0)
    assert nxt.area_sizes[0, 0] == pytest.approx(0.99, abs=1e-12)
    nxt, r = zero_step(Foraging(10, "paper"), case_single_forager())
    assert r[0] == pytest.approx(0.005, rel=1e-8)
    assert nxt.encumbrance[0, 0] == pytest.approx(0.05, rel=1e-8)
    assert nxt.area_sizes[0, 0] == pytest.approx(0.995, abs=1e-12)
    # R1 alone: the paper weight under the reference preset halves ΔL, r = 100 · 0.005.
    _, r = zero_step(Foraging(10, "reference", deplete_weight="paper"), case_single_forager())
    assert r[0] == pytest.approx(0.5, rel=1e-8)


def case_deposit():
    return make_state([[1.5, -0.8]], [0.5], [1.5, -1.5])


def test_spec_case_deposit():
    """Spec §5.2 case 3: moves to (1.5, −1.1), 0.4 from y_t → reference deposits 0.5, r = 50.
    Paper rule: pre-step distance 0.7 ≥ 0.5 → no deposit; next step the pre-step distance is
    0.4 < 0.5 → deposit 0.5 (scale 1)."""
    act = [[[0.0, -1.0]]]
    nxt, r = zero_step(Foraging(1, "reference"), case_deposit(), minor_u=act)
    assert r[0] == pytest.approx(50.0, rel=1e-12)
    assert nxt.encumbrance[0, 0] == 0.0
    np.testing.assert_allclose(nxt.positions[0, 0], [1.5, -1.1], atol=1e-15)
    paper = Foraging(1, "paper")
    nxt, r = zero_step(paper, case_deposit(), minor_u=act)
    assert r[0] == 0.0 and nxt.encumbrance[0, 0] == 0.5
    nxt, r = zero_step(paper, nxt, minor_u=np.zeros((1, 1, 2)))
    assert r[0] == pytest.approx(0.5) and nxt.encumbrance[0, 0] == 0.0
    # R4 alone.
    _, r = zero_step(Foraging(1, "reference", dropoff="pre_move"), case_deposit(), minor_u=act)
    assert r[0] == 0.0


def test_reward_terms_deposited_only():
    """R3: under deposited_only foraging earns nothing (case 1 → 0) but deposits still pay."""
    _, r = zero_step(Foraging(2, "reference", reward_terms="deposited_only"), case_saturation())
    assert r[0] == 0.0
    p = Foraging(1, "reference", reward_terms="deposited_only")
    _, r = zero_step(p, case_deposit(), minor_u=[[[0.0, -1.0]]])
    assert r[0] == pytest.approx(50.0)


def test_forage_and_deposit_in_one_step():
    """A minor on an area next to the truck forages and deposits in the same step (spec §5.2).

    Area (0, −1.2), L = 1; minor on it with e = 0.3; truck at (0, −1.5) (distance 0.3).
    Reference: w = 1, ΔL = min(0.1, 1) = 0.1, gain 0.1·1/(1 + 1e-10)·1 ≈ 0.1; then deposits
    0.4: r = 100·(0.1 + 0.4) = 50.  Paper (pre_move, same positions): w = 0.5 → ΔL = 0.1 too,
    r = 0.5.
    """
    state = make_state([[0, -1.2]], [0.3], [0, -1.5], areas=[((0, -1.2), 1.0)])
    nxt, r = zero_step(Foraging(1, "reference"), state)
    assert r[0] == pytest.approx(50.0, rel=1e-8) and nxt.encumbrance[0, 0] == 0.0
    nxt, r = zero_step(Foraging(1, "paper"), state)
    assert r[0] == pytest.approx(0.5, rel=1e-8) and nxt.encumbrance[0, 0] == 0.0


def test_boundaries_of_range_and_dropoff():
    """d = ρ exactly gives weight 0; at distance exactly 0.5 from the truck post_move deposits
    (≤) and pre_move does not (strict <).  All distances here are exact in binary."""
    state = make_state([[0.5, 0.0]], [0.0], [1.5, -1.5], areas=[((0, 0), 1.0)])
    nxt, r = zero_step(Foraging(1, "reference"), state)
    assert r[0] == 0.0 and nxt.area_sizes[0, 0] == 1.0
    state = make_state([[0.0, -1.0]], [0.25], [0.0, -1.5])  # zero action: p' = p
    nxt, r = zero_step(Foraging(1, "reference"), state)
    assert r[0] == pytest.approx(25.0) and nxt.encumbrance[0, 0] == 0.0
    nxt, r = zero_step(Foraging(1, "paper"), state)
    assert r[0] == 0.0 and nxt.encumbrance[0, 0] == 0.25


def test_movement_projection_and_clipping():
    """Minor u = (1, 1): proj = (1, 1)/√2, moves 0.3/√2 per axis; u = (0.6, 0) is not rescaled.
    Truck at (1.95, −1.05) with u⁰ = (1, 1): (1.95 + 0.0707, −1.05 + 0.0707) clipped to (2, −1).
    A minor at (−1.9, 1.9) moving (−1, 0) is clipped at −2."""
    state = make_state([[0, 0], [0, 0], [-1.9, 1.9]], [0, 0, 0], [1.95, -1.05])
    u = np.array([[[1.0, 1.0], [0.6, 0.0], [-1.0, 0.0]]])
    rng = np.random.default_rng(0)
    nxt, _ = Foraging(3, "reference").step(state, np.array([[1.0, 1.0]]), u, rng)
    c = 0.3 / math.sqrt(2)
    np.testing.assert_allclose(nxt.positions[0], [[c, c], [0.18, 0.0], [-2.0, 1.9]], atol=1e-15)
    np.testing.assert_array_equal(nxt.major[0], [2.0, -1.0])
    # Many actions with ‖u‖ > 1 take the dense projection branch: same result per minor.
    many = np.tile(u[:, :1], (1, 40, 1))
    state = make_state(np.zeros((40, 2)), np.zeros(40), [0, -1.5])
    nxt, _ = Foraging(40).step(state, np.zeros((1, 2)), many, np.random.default_rng(0))
    np.testing.assert_allclose(nxt.positions[0], np.full((40, 2), c), atol=1e-15)


def test_area_disappears_and_survivors_keep_creation_order():
    """Slot 0 (oldest, L = 0.05) is depleted by a minor on it: ΔL = min(0.1, 1) = 0.1 > L, so
    ΔL := 0.05, the minor gains 0.05 (reference r = 5) and the area disappears.  The survivors
    (slots 1, 2 → 0, 1) keep their order; spawns (if any) come after them."""
    state = make_state(
        [[-1.5, 1.5]],
        [0.0],
        [1.5, -1.5],
        areas=[((-1.5, 1.5), 0.05), ((1.0, 1.0), 0.7), ((-1.0, 0.0), 1.2)],
    )
    batch = repeat_state(state, 400)  # many copies so that some spawn new areas
    nxt, r = zero_step(Foraging(1, "reference"), batch, rng=np.random.default_rng(1))
    np.testing.assert_allclose(r, 5.0, rtol=1e-8)
    np.testing.assert_allclose(nxt.encumbrance[:, 0], 0.05, rtol=1e-8)
    assert np.all(nxt.area_alive[:, :2])
    np.testing.assert_array_equal(nxt.area_locations[:, 0], np.tile([1.0, 1.0], (400, 1)))
    np.testing.assert_array_equal(nxt.area_locations[:, 1], np.tile([-1.0, 0.0], (400, 1)))
    np.testing.assert_array_equal(nxt.area_sizes[:, :2], np.tile([0.7, 1.2], (400, 1)))
    spawned = nxt.area_alive[:, 2:].sum(axis=1)
    assert 0 < spawned.sum() and spawned.max() <= 3
    assert np.all(np.diff(nxt.area_alive.astype(int), axis=1) <= 0)  # alive slots are a prefix
    new_sizes = nxt.area_sizes[:, 2:][nxt.area_alive[:, 2:]]
    assert np.all((new_sizes >= 0.5) & (new_sizes < 1.5))
    assert np.all(nxt.area_sizes[~nxt.area_alive] == 0)
    assert np.all(nxt.area_locations[~nxt.area_alive] == 0)


def test_saturation_across_areas_in_creation_order():
    """Two overlapping areas, processed oldest first, share one minor that saturates.

    Minor at (0, 0), e = 0.85; area A (older) at (0, 0), L = 1; area B (newer) at (0.25, 0),
    L = 0.04.  Reference weights: A w = 1, B w = 0.5.  A: ΔL = 0.1, e → min(1, 0.95) = 0.95,
    gain 0.1.  B: ΔL = min(0.1, 0.5) = 0.1 > 0.04 → ΔL = 0.04, B disappears, share
    0.04·0.5/(0.5 + 1e-10) = 0.04, e → 0.99, gain 0.04.  r = 100·0.14 = 14.
    With e = 0.93 instead: A saturates the minor (e → min(1, 1.03) = 1, gain 0.07, 0.03 wasted)
    and B's whole share is wasted; r = 7, yet both areas are depleted in full (B disappears).
    """
    areas = [((0.0, 0.0), 1.0), ((0.25, 0.0), 0.04)]
    p = Foraging(1, "reference")
    nxt, r = zero_step(p, make_state([[0, 0]], [0.85], [1.5, -1.5], areas))
    assert r[0] == pytest.approx(14.0, rel=1e-8)
    assert nxt.encumbrance[0, 0] == pytest.approx(0.99, rel=1e-9)
    nxt, r = zero_step(p, make_state([[0, 0]], [0.93], [1.5, -1.5], areas))
    assert r[0] == pytest.approx(7.0, rel=1e-8)
    assert nxt.encumbrance[0, 0] == 1.0
    assert nxt.area_alive[0, 0] and nxt.area_sizes[0, 0] == pytest.approx(0.9)
    np.testing.assert_array_equal(nxt.area_locations[0, 0], [0.0, 0.0])
    alive_locations = nxt.area_locations[0][nxt.area_alive[0]]
    assert not np.any(np.all(alive_locations == [0.25, 0.0], axis=1))


def test_new_areas_are_foraged_from_the_next_step():
    """Minors on a 41 × 41 grid cover the square (every point is within 0.05·√2 of a minor), so
    an area spawned at step t is in range of minors; still r_t = 0 (no areas existed before the
    step, all e = 0), while the next step forages every copy that got one."""
    g = np.linspace(-2, 2, 41)
    grid = np.stack(np.meshgrid(g, g, indexing="ij"), axis=-1).reshape(-1, 2)
    n = grid.shape[0]
    p = Foraging(n, "reference")
    state = repeat_state(make_state(grid, np.zeros(n), [0, -2.0]), 200)
    nxt, r = zero_step(p, state, rng=np.random.default_rng(3))
    assert np.all(r == 0.0)
    has_area = nxt.area_alive.any(axis=1)
    assert 10 < has_area.sum() < 100
    nxt2, r2 = zero_step(p, nxt, rng=np.random.default_rng(4))
    assert np.all(r2[has_area] > 0) and np.all(r2[~has_area] == 0)


# ----------------------------------------------------------------------------------------------
# Invariants (hypothesis)
# ----------------------------------------------------------------------------------------------


@CI
@given(
    seed=st.integers(0, 2**32 - 1),
    num_minors=st.integers(1, 30),
    num_envs=st.integers(1, 4),
    variant=st.sampled_from(["paper", "reference"]),
    num_areas=st.integers(0, 5),
)
def test_state_stays_in_its_spaces(seed, num_minors, num_envs, variant, num_areas):
    p = Foraging(num_minors, variant)
    rng = np.random.default_rng(seed)
    state = p.reset(num_envs, rng)
    # Start with small areas around the minors so that foraging, depletion and compaction occur.
    state.area_alive[:, :num_areas] = True
    state.area_locations[:, :num_areas] = rng.uniform(-2, 2, (num_envs, num_areas, 2))
    state.area_sizes[:, :num_areas] = rng.uniform(0.01, 1.5, (num_envs, num_areas))
    scale = 100.0 if variant == "reference" else 1.0
    for _ in range(40):
        minor_u = rng.uniform(-1, 1, (num_envs, num_minors, 2))
        minor_u[rng.random((num_envs, num_minors)) < 0.2] = 1.0  # corners: ‖u‖ > 1
        nxt, r = p.step(state, rng.uniform(-1, 1, (num_envs, 2)), minor_u, rng)
        assert r.shape == (num_envs,) and np.all(np.isfinite(r))
        # Per capita, foraging adds ≤ 0.1 per area and depositing ≤ the carried cargo (≤ 1).
        assert np.all(r >= 0) and np.all(r <= scale * (5 * 0.1 + 1) + 1e-9)
        e = nxt.encumbrance
        assert np.all((e >= 0) & (e <= 1))
        assert np.all(np.abs(nxt.positions) <= 2)
        assert np.all(np.abs(nxt.major[:, 0]) <= 2)
        assert np.all((nxt.major[:, 1] >= -2) & (nxt.major[:, 1] <= -1))
        alive = nxt.area_alive
        assert alive.shape == (num_envs, 5)
        assert np.all(np.diff(alive.astype(int), axis=1) <= 0)  # prefix, at most 5
        assert np.all(nxt.area_sizes[alive] > 0) and np.all(nxt.area_sizes[alive] <= 1.5)
        assert np.all(np.abs(nxt.area_locations[alive]) <= 2)
        obs = p.m3fc_observation(nxt)
        m = 98 if variant == "reference" else 49
        assert obs.shape == (num_envs, m + 2)
        np.testing.assert_allclose(obs[:, :m].sum(axis=1), 1.0)
        low, high = p.m3fc_observation_bounds()
        assert np.all(obs >= low) and np.all(obs <= high)
        cells = p.minor_cells(nxt)
        assert cells.shape == (num_envs, num_minors) and np.all((cells >= 0) & (cells < m))
        ah = p.area_histogram(nxt)
        np.testing.assert_allclose(ah.sum(axis=(1, 2, 3)), alive.sum(axis=1) / 5)
        assert np.all(ah[..., 1] == 0)
        assert np.all(nxt.t == state.t + 1)
        state = nxt


@CI
@given(seed=st.integers(0, 2**32 - 1), variant=st.sampled_from(["paper", "reference"]))
def test_same_seed_same_trajectory(seed, variant):
    def rollout(s):
        p = Foraging(12, variant)
        rng = np.random.default_rng(s)
        state = p.reset(3, rng)
        states, rewards = [state], []
        for _ in range(60):
            u = np.clip(rng.normal(0, 0.5, (3, 12, 2)), -1, 1)
            state, r = p.step(state, rng.uniform(-1, 1, (3, 2)), u, rng)
            states.append(state)
            rewards.append(r)
        return states, np.array(rewards)

    (s1, r1), (s2, r2) = rollout(seed), rollout(seed)
    np.testing.assert_array_equal(r1, r2)
    for a, b in zip(s1, s2, strict=True):
        for f in dataclasses.fields(ForagingState):
            np.testing.assert_array_equal(getattr(a, f.name), getattr(b, f.name))
    s3, _ = rollout(seed + 1)
    assert not np.array_equal(s1[-1].positions, s3[-1].positions)


def random_state(p: Foraging, rng: np.random.Generator, b: int, cluster: bool) -> ForagingState:
    """A mid-episode state: 4 alive areas (clustered: most (minor, area) pairs in range)."""
    n = p.num_minors
    state = p.reset(b, rng)
    state.area_alive[:, :4] = True
    state.area_sizes[:, :4] = rng.uniform(0.01, 1.0, (b, 4))
    if cluster:
        state.area_locations[:, :4] = rng.uniform(-0.2, 0.2, (b, 4, 2))
        state.positions[:] = rng.uniform(-0.3, 0.3, (b, n, 2))
    else:
        state.area_locations[:, :4] = rng.uniform(-2, 2, (b, 4, 2))
    state.area_alive[:, 1] &= rng.random(b) < 0.5  # gaps: survivors are compacted
    state.area_sizes *= state.area_alive
    state.area_locations *= state.area_alive[..., None]
    state.encumbrance[:] = rng.uniform(0, 1, (b, n))
    return state


@CI
@given(seed=st.integers(0, 2**32 - 1), cluster=st.booleans())
def test_copies_do_not_depend_on_the_batch(seed, cluster):
    """Each copy's transition (apart from the random spawns) is bit-for-bit the same whether it is
    stepped alone or in a batch."""
    rng = np.random.default_rng(seed)
    p = Foraging(25, "reference")
    state = random_state(p, rng, 6, cluster)
    minor_u = rng.uniform(-1.5, 1.5, (6, 25, 2))
    major_u = rng.uniform(-1, 1, (6, 2))
    batch, rewards = p.step(state, major_u, minor_u, np.random.default_rng(0))
    for i in range(6):
        one, r = p.step(state.take(slice(i, i + 1)), major_u[i : i + 1], minor_u[i : i + 1], np.random.default_rng(0))
        for name in ("positions", "encumbrance", "major"):
            np.testing.assert_array_equal(getattr(one, name)[0], getattr(batch, name)[i])
        assert r[0] == rewards[i]


@CI
@given(
    seed=st.integers(0, 2**32 - 1), cluster=st.booleans(), variant=st.sampled_from(["paper", "reference"]),
    n=st.sampled_from([1, 7, 25, 300]), dense=st.sampled_from([0.0, 1.0]),
)
def test_compiled_step_equals_the_numpy_formulation(seed, cluster, variant, n, dense):
    """``forage_deposit`` (numba) gives bit-for-bit the states, rewards and random stream of the
    former numpy step, on both of its paths (dense: every pair in arrays; sparse: pairs in range)."""
    from tests.foraging_numpy_oracle import NumpyForaging

    rng = np.random.default_rng(seed)
    ours, oracle = Foraging(n, variant), NumpyForaging(n, variant)
    oracle.dense_fraction = dense
    state = random_state(ours, rng, 5, cluster)
    minor_u = rng.uniform(-1.5, 1.5, (5, n, 2))
    major_u = rng.uniform(-1.5, 1.5, (5, 2))
    r1, r2 = np.random.default_rng(seed), np.random.default_rng(seed)
    for _ in range(8):  # areas die, the survivors move to the front, new ones spawn
        a, ra = ours.step(state, major_u, minor_u, r1)
        b, rb = oracle.step(state, major_u, minor_u, r2)
        for f in dataclasses.fields(ForagingState):  # bytes: signed zeros included
            assert getattr(a, f.name).tobytes() == getattr(b, f.name).tobytes(), f.name
        assert ra.tobytes() == rb.tobytes()
        assert r1.bit_generator.state == r2.bit_generator.state
        state = a


def test_non_finite_actions_are_refused() -> None:
    p = Foraging(4, "reference")
    state = p.reset(2, np.random.default_rng(0))
    minor_u = np.zeros((2, 4, 2))
    minor_u[1, 2, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        p.step(state, np.zeros((2, 2)), minor_u, np.random.default_rng(0))
    with pytest.raises(ValueError, match="finite"):
        p.step(state, np.array([[0.0, np.inf], [0.0, 0.0]]), np.zeros((2, 4, 2)), np.random.default_rng(0))


# ----------------------------------------------------------------------------------------------
# Distributions: spawns, initial states
# ----------------------------------------------------------------------------------------------


def test_spawn_count_is_poisson_02():
    """From an empty state, new areas per step ~ min(Pois(0.2), 5): mean 0.2, P(0) = e^-0.2,
    P(1) = 0.2 e^-0.2.  40 000 copies: standard errors 0.0022 (mean), 0.0019 (P(0))."""
    n = 40_000
    p = Foraging(1, "reference")
    state = p.reset(n, np.random.default_rng(5))
    nxt, _ = zero_step(p, state, rng=np.random.default_rng(6))
    count = nxt.area_alive.sum(axis=1)
    assert abs(count.mean() - 0.2) < 4 * math.sqrt(0.2 / n)
    p0, p1 = math.exp(-0.2), 0.2 * math.exp(-0.2)
    assert abs(np.mean(count == 0) - p0) < 4 * math.sqrt(p0 * (1 - p0) / n)
    assert abs(np.mean(count == 1) - p1) < 4 * math.sqrt(p1 * (1 - p1) / n)
    loc = nxt.area_locations[nxt.area_alive]
    size = nxt.area_sizes[nxt.area_alive]
    assert stats.kstest(loc[:, 0], stats.uniform(-2, 4).cdf).pvalue > 1e-3
    assert stats.kstest(loc[:, 1], stats.uniform(-2, 4).cdf).pvalue > 1e-3
    assert stats.kstest(size, stats.uniform(0.5, 1.0).cdf).pvalue > 1e-3


def test_spawn_respects_the_cap_of_five():
    """With 4 surviving areas at most one is added: P(one new) = P(Pois(0.2) ≥ 1) = 1 − e^-0.2;
    with 5 none."""
    n = 20_000
    p = Foraging(1, "reference")
    far = [((-1.5, 1.5), 1.0), ((-1.0, 1.5), 1.0), ((-0.5, 1.5), 1.0), ((0.0, 1.5), 1.0)]
    state = repeat_state(make_state([[1.9, -1.9]], [0.0], [1.9, -1.9], far), n)
    nxt, _ = zero_step(p, state, rng=np.random.default_rng(7))
    new = nxt.area_alive.sum(axis=1) - 4
    assert set(np.unique(new)) <= {0, 1}
    q = 1 - math.exp(-0.2)
    assert abs(new.mean() - q) < 4 * math.sqrt(q * (1 - q) / n)
    five = far + [((0.5, 1.5), 1.0)]
    full = repeat_state(make_state([[1.9, -1.9]], [0.0], [1.9, -1.9], five), 500)
    nxt, _ = zero_step(p, full, rng=np.random.default_rng(8))
    assert np.all(nxt.area_alive)


def test_major_init_r5():
    """clipped_square: y2 = clip(Unif[−2, 2], −2, −1) equals −1 w.p. 3/4 and y1 ~ Unif[−2, 2];
    uniform_strip: y2 ~ Unif[−2, −1] (never exactly −1 a.s.)."""
    n = 20_000
    rng = np.random.default_rng(9)
    y = Foraging(1, "reference").reset(n, rng).major
    frac = np.mean(y[:, 1] == -1.0)
    assert abs(frac - 0.75) < 4 * math.sqrt(0.75 * 0.25 / n)
    assert np.all((y[:, 1] >= -2) & (y[:, 1] <= -1))
    assert stats.kstest(y[:, 0], stats.uniform(-2, 4).cdf).pvalue > 1e-3
    assert stats.kstest(y[y[:, 1] < -1, 1], stats.uniform(-2, 1).cdf).pvalue > 1e-3
    y = Foraging(1, "paper").reset(n, rng).major
    assert not np.any(y[:, 1] == -1.0)
    assert stats.kstest(y[:, 1], stats.uniform(-2, 1).cdf).pvalue > 1e-3
    assert stats.kstest(y[:, 0], stats.uniform(-2, 4).cdf).pvalue > 1e-3


def test_minor_init_r6_and_empty_areas():
    rng = np.random.default_rng(10)
    ref = Foraging(50, "reference").reset(200, rng)
    assert np.all(ref.encumbrance == 0)
    assert not ref.area_alive.any() and np.all(ref.t == 0)
    assert stats.kstest(ref.positions.ravel(), stats.uniform(-2, 4).cdf).pvalue > 1e-3
    paper = Foraging(50, "paper").reset(200, rng)
    assert stats.kstest(paper.encumbrance.ravel(), stats.uniform(0, 1).cdf).pvalue > 1e-3


# ----------------------------------------------------------------------------------------------
# Bad input, rendering
# ----------------------------------------------------------------------------------------------


def test_bad_actions_raise():
    p = Foraging(3, "reference")
    state = p.reset(2, np.random.default_rng(0))
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        p.step(state, np.zeros((2, 2)), np.zeros((2, 4, 2)), rng)
    with pytest.raises(ValueError):
        p.step(state, np.zeros((2,)), np.zeros((2, 3, 2)), rng)
    u = np.zeros((2, 3, 2))
    u[1, 2, 0] = np.nan
    with pytest.raises(ValueError):
        p.step(state, np.zeros((2, 2)), u, rng)
    with pytest.raises(ValueError):
        p.step(state, np.array([[0.0, np.inf], [0.0, 0.0]]), np.zeros((2, 3, 2)), rng)


def test_draw_smoke():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = Foraging(10, "reference")
    state = make_state(
        np.random.default_rng(0).uniform(-2, 2, (10, 2)),
        np.linspace(0, 1, 10),
        [0.0, -1.5],
        areas=[((0, 0), 1.0), ((1, 1), 0.3)],
    )
    fig, ax = plt.subplots()
    p.draw(ax, state, 0)
    assert len(ax.patches) >= 3  # two area ranges and the deposit radius
    plt.close(fig)
