"""Two Gaussians (spec/environments.md §2, §7): splits, reward, dynamics, observation, variants."""

from __future__ import annotations

import dataclasses
import math

import matplotlib
import numpy as np
import ot
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m3fmarl.problems.two_gaussians import (
    TwoGaussians,
    TwoGaussiansState,
    TwoGaussiansSwitches,
    num_first_component,
)

matplotlib.use("Agg")

FAST = settings(derandomize=True, deadline=None, max_examples=8)

# Spec §2.2, copied from the text.
SPLIT_K100 = [
    100, 99, 98, 96, 93, 90, 86, 81, 76, 71, 65, 59, 53, 46, 40, 34, 28, 23, 18, 13, 9, 6, 3, 1, 0,
    0, 0, 1, 3, 6, 9, 13, 18, 23, 28, 34, 40, 46, 53, 59, 65, 71, 76, 81, 86, 90, 93, 96, 98, 99,
]  # fmt: skip
SPLIT_K300 = [
    300, 298, 295, 289, 281, 271, 259, 245, 230, 213, 196, 178, 159, 140, 121, 103, 86, 69, 54, 40,
    28, 18, 10, 4, 1, 0, 1, 4, 10, 18, 28, 40, 54, 69, 86, 103, 121, 140, 159, 178, 196, 213, 230,
    245, 259, 271, 281, 289, 295, 298,
]  # fmt: skip


def make_state(minors, particles, t=0) -> TwoGaussiansState:
    minors = np.asarray(minors, dtype=np.float64)
    particles = np.asarray(particles, dtype=np.float64)
    return TwoGaussiansState(t=np.full(minors.shape[0], t, dtype=np.int64), minors=minors, particles=particles)


# --- target particles ------------------------------------------------------------------------


@pytest.mark.parametrize("k, expected", [(100, SPLIT_K100), (300, SPLIT_K300)], ids=["K100", "K300"])
def test_split_sequence_matches_spec(k, expected):
    assert len(expected) == 50
    np.testing.assert_array_equal(num_first_component(np.arange(50), k), expected)
    # periodic in t with period 50 (an episode has t up to 100)
    np.testing.assert_array_equal(num_first_component(np.arange(50, 101), k), expected + expected[:1])


@pytest.mark.parametrize("variant, k", [("paper", 300), ("reference", 100)])
def test_particles_follow_the_deterministic_split(variant, k):
    """At time t the first n1(t) particles come from N((-1, 0), 0.05 I), the rest from (+1, 0).

    Residuals from the assigned component mean must have mean 0 and variance 0.05 (var, not
    std); a wrong split would put residuals of size ~2 into the pool.
    """
    problem = TwoGaussians(3, variant)
    times = np.repeat([3, 13, 25, 40], 100)
    particles = problem.sample_particles(times, np.random.default_rng(1))
    assert particles.shape == (times.size, k, 2)
    n1 = num_first_component(times, k)
    first = np.arange(k)[None, :] < n1[:, None]
    centre_x = np.where(first, -1.0, 1.0)
    residual = np.stack([particles[..., 0] - centre_x, particles[..., 1]], axis=-1)
    assert abs(residual.mean()) < 0.01
    assert residual.var() == pytest.approx(0.05, rel=0.03)


def test_reset_particles_all_from_the_first_component():
    problem = TwoGaussians(5, "reference")
    state = problem.reset(50, np.random.default_rng(2))
    np.testing.assert_array_equal(state.t, 0)
    assert state.particles.shape == (50, 100, 2)
    assert state.particles[..., 0].mean() == pytest.approx(-1.0, abs=0.02)


def test_step_draws_particles_for_the_new_time():
    """From t = 24 the step samples ν_25, and n1(25) = 0: every particle from (+1, 0)."""
    problem = TwoGaussians(4, "reference")
    rng = np.random.default_rng(3)
    state = problem.reset(30, rng)
    state = dataclasses.replace(state, t=np.full(30, 24))
    nxt, _ = problem.step(state, None, np.zeros((30, 4, 2)), rng)
    np.testing.assert_array_equal(nxt.t, 25)
    assert nxt.particles[..., 0].mean() == pytest.approx(1.0, abs=0.02)


# --- reward ----------------------------------------------------------------------------------


def test_reward_hand_case():
    """Spec §2.3: minors (0,0), (1,0); particles (1,0), (0,1) → W = 0.5, r = −0.5.

    The step returns the reward of the pre-step state, whatever the actions and the new
    particles are.
    """
    problem = TwoGaussians(2, "reference", num_target_samples=2)
    state = make_state([[[0.0, 0.0], [1.0, 0.0]]], [[[1.0, 0.0], [0.0, 1.0]]])
    np.testing.assert_allclose(problem.reward(state), [-0.5], atol=1e-12)
    _, reward = problem.step(state, None, np.array([[[1.0, 0.0], [-1.0, 1.0]]]), np.random.default_rng(0))
    np.testing.assert_allclose(reward, [-0.5], atol=1e-12)


def test_reward_is_minus_pot_cost_per_copy():
    problem = TwoGaussians(17, "paper")
    state = problem.reset(3, np.random.default_rng(4))
    expected = [
        -ot.emd2(np.full(17, 1 / 17), np.full(300, 1 / 300), ot.dist(state.minors[i], state.particles[i]))
        for i in range(3)
    ]
    np.testing.assert_allclose(problem.reward(state), expected, rtol=1e-9)


# --- dynamics --------------------------------------------------------------------------------


@pytest.mark.parametrize("variant, std", [("paper", 0.17320508075688773), ("reference", 0.03)])
def test_movement_noise_std(variant, std):
    """Zero action from the centre: x_{t+1} − x_t = η with std σ (T1); clipping is > 11 σ away."""
    problem = TwoGaussians(400, variant)
    rng = np.random.default_rng(5)
    state = problem.reset(10, rng)
    state = dataclasses.replace(state, minors=np.zeros_like(state.minors))
    nxt, _ = problem.step(state, None, np.zeros((10, 400, 2)), rng)
    step = nxt.minors - state.minors
    assert abs(step.mean()) < 4 * std / math.sqrt(step.size)
    assert step.std() == pytest.approx(std, rel=0.03)


def test_deterministic_move_is_projected_velocity():
    """noise_std = 0: x moves by 0.2 u / (max(1, ‖u‖) + 1e-10) (spec §2.2 steps 1, 3)."""
    problem = TwoGaussians(3, "reference", noise_std=0.0)
    rng = np.random.default_rng(6)
    state = problem.reset(1, rng)
    start = np.array([[[0.0, 0.0], [1.0, -1.0], [1.95, 0.0]]])
    state = dataclasses.replace(state, minors=start)
    u = np.array([[[1.0, 1.0], [0.3, -0.4], [1.0, 0.0]]])
    nxt, _ = problem.step(state, None, u, rng)
    expected = np.array(
        [
            [0.2 / math.sqrt(2), 0.2 / math.sqrt(2)],  # ‖u‖ = √2 > 1: unit direction
            [1.0 + 0.06, -1.0 - 0.08],  # ‖u‖ = 0.5: unchanged
            [2.0, 0.0],  # 1.95 + 0.2 clipped at the wall
        ]
    )
    np.testing.assert_allclose(nxt.minors[0], expected, atol=1e-9)


@FAST
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 30), variant=st.sampled_from(["paper", "reference"]))
def test_positions_stay_in_the_box(seed, n, variant):
    problem = TwoGaussians(n, variant)
    rng = np.random.default_rng(seed)
    state = problem.reset(3, rng)
    for step in range(15):
        outward = np.sign(state.minors)  # push towards the walls half of the time
        random = rng.uniform(-1, 1, size=state.minors.shape)
        u = outward if step % 2 else random
        state, reward = problem.step(state, None, u, rng)
        assert reward.shape == (3,) and np.all(reward <= 0)
        for pts in (state.minors, state.particles):
            assert np.all(pts >= -2.0) and np.all(pts <= 2.0)


def test_same_seed_same_trajectory_and_different_seed_differs():
    problem = TwoGaussians(12, "reference")

    def rollout(seed):
        rng = np.random.default_rng(seed)
        state = problem.reset(2, rng)
        rewards = []
        for _ in range(10):
            state, r = problem.step(state, None, rng.uniform(-1, 1, size=(2, 12, 2)), rng)
            rewards.append(r)
        return state, np.array(rewards)

    s1, r1 = rollout(7)
    s2, r2 = rollout(7)
    s3, r3 = rollout(8)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(s1.minors, s2.minors)
    np.testing.assert_array_equal(s1.particles, s2.particles)
    assert not np.array_equal(r1, r3)


@pytest.mark.parametrize("num_envs", [1, 4])
def test_batched_shapes(num_envs):
    problem = TwoGaussians(9, "paper")
    rng = np.random.default_rng(9)
    state = problem.reset(num_envs, rng)
    assert state.minors.shape == (num_envs, 9, 2)
    assert state.particles.shape == (num_envs, 300, 2)
    nxt, reward = problem.step(state, None, np.zeros((num_envs, 9, 2)), rng)
    assert reward.shape == (num_envs,)
    assert nxt.t.shape == (num_envs,)
    assert problem.minor_cells(nxt).shape == (num_envs, 9)
    assert problem.m3fc_observation(nxt).shape == (num_envs, 98)
    if num_envs > 1:  # independent copies
        assert not np.array_equal(nxt.minors[0], nxt.minors[1])


# --- observation -----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_observation_histograms_and_bounds(variant):
    problem = TwoGaussians(25, variant)
    rng = np.random.default_rng(10)
    state = problem.reset(4, rng)
    state, _ = problem.step(state, None, rng.uniform(-1, 1, (4, 25, 2)), rng)
    obs = problem.m3fc_observation(state)
    low, high = problem.m3fc_observation_bounds()
    assert obs.shape == (4, 98) and obs.dtype == np.float64
    np.testing.assert_array_equal(low, np.zeros(98))
    np.testing.assert_array_equal(high, np.full(98, 10.0))
    layers = obs.reshape(4, 49, 2).sum(axis=1)  # each layer sums to 1, times the stretch 10
    np.testing.assert_allclose(layers, 10.0, rtol=1e-12)
    assert np.all(obs >= low) and np.all(obs <= high)


def test_observation_layout_on_known_points():
    """Cell (a, b) layer l sits at 14a + 2b + l; centres -1.714…1.714 (spec §1.2, §2.4).

    Minors: 3 at cell (0, 6) and 1 at (3, 3); particles: 1 at (6, 0), 1 at (3, 3).
    """
    problem = TwoGaussians(4, "reference", num_target_samples=2)
    c = 12 / 7  # 1.714…, the outer centre
    state = make_state([[[-c, c], [-1.9, 1.9], [-1.5, 1.5], [0.1, -0.2]]], [[[c, -c], [0.0, 0.0]]])
    obs = problem.m3fc_observation(state)[0]
    expected = np.zeros(98)
    expected[14 * 0 + 2 * 6 + 0] = 10 * 3 / 4
    expected[14 * 3 + 2 * 3 + 0] = 10 * 1 / 4
    expected[14 * 6 + 2 * 0 + 1] = 10 * 1 / 2
    expected[14 * 3 + 2 * 3 + 1] = 10 * 1 / 2
    np.testing.assert_allclose(obs, expected, atol=1e-12)
    np.testing.assert_array_equal(problem.minor_cells(state), [[6, 6, 6, 24]])


def test_minor_cells_tie_goes_to_the_lower_cell():
    problem = TwoGaussians(2, "paper")
    w = 4 / 7
    boundary = -2 + w  # between cells 0 and 1
    state = make_state([[[boundary, 0.0], [0.0, boundary + w]]], np.zeros((1, 1, 2)))
    np.testing.assert_array_equal(problem.minor_cells(state), [[0 * 7 + 3, 3 * 7 + 1]])


@pytest.mark.parametrize("option, dim", [("clock", 99), ("both", 148)])
def test_clock_observation_options(option, dim):
    problem = TwoGaussians(6, "paper", major_obs=option)
    rng = np.random.default_rng(11)
    state = problem.reset(3, rng)
    state = dataclasses.replace(state, t=np.array([0, 49, 73]))
    obs = problem.m3fc_observation(state)
    low, high = problem.m3fc_observation_bounds()
    assert obs.shape == (3, dim) and low.shape == high.shape == (dim,)
    clock = obs[:, -50:]
    np.testing.assert_array_equal(clock.argmax(axis=1), [0, 49, 23])
    np.testing.assert_array_equal(clock.sum(axis=1), 1.0)
    np.testing.assert_array_equal(high[-50:], 1.0)
    np.testing.assert_array_equal(high[:-50], 10.0)
    hist = obs[:, :-50]
    if option == "clock":  # the minors' layer only
        np.testing.assert_allclose(hist.sum(axis=1), 10.0)
    else:
        np.testing.assert_allclose(hist.reshape(3, 49, 2).sum(axis=1), 10.0)
    assert np.all(obs >= low) and np.all(obs <= high)


# --- variants and interface ------------------------------------------------------------------


def test_presets_follow_spec_7_4():
    paper = TwoGaussians.PRESETS["paper"]
    ref = TwoGaussians.PRESETS["reference"]
    assert paper.noise_std == pytest.approx(0.17320508075688773, rel=1e-15)
    assert ref.noise_std == 0.03
    assert (paper.num_target_samples, ref.num_target_samples) == (300, 100)
    assert paper.major_obs == ref.major_obs == "target_histogram"
    assert paper.obs_scale == ref.obs_scale == 10
    assert (paper.std_map, paper.xi_squash, paper.de_decode) == ("paper", "none", "same_as_ce")
    assert (ref.std_map, ref.xi_squash, ref.de_decode) == ("reference", "tanh", "reference_mismatch")
    assert TwoGaussians(3, "reference").num_particles == 100


def test_class_interface():
    problem = TwoGaussians(5)
    assert problem.name == "two-gaussians" and problem.env_id == "m3fmarl/TwoGaussians-v0"
    assert problem.horizon == 100 and problem.minor_action_dim == 2
    assert not problem.has_major and problem.major_action_dim is None
    assert problem.cell_shape == (7, 7) and problem.xi_shape == (7, 7, 2, 2) and problem.xi_size == 196
    assert problem.reference_de_squash == "none"


def test_bad_input_raises():
    problem = TwoGaussians(3)
    rng = np.random.default_rng(0)
    state = problem.reset(2, rng)
    with pytest.raises(ValueError):
        problem.step(state, None, np.zeros((2, 4, 2)), rng)
    with pytest.raises(ValueError):
        problem.step(state, None, np.full((2, 3, 2), np.nan), rng)
    with pytest.raises(ValueError):
        problem.step(state, np.zeros((2, 2)), np.zeros((2, 3, 2)), rng)
    with pytest.raises(ValueError):
        TwoGaussians(3, major_obs="histogram")
    with pytest.raises(ValueError):
        TwoGaussiansSwitches(noise_std=-0.1)
    with pytest.raises(ValueError):
        TwoGaussians(3, num_particles=100)  # not a switch name


def test_draw_smoke():
    import matplotlib.pyplot as plt

    problem = TwoGaussians(10)
    state = problem.reset(2, np.random.default_rng(0))
    fig, ax = plt.subplots()
    problem.draw(ax, state, index=1)
    assert len(ax.collections) >= 2
    plt.close(fig)
