"""Formation (spec/environments.md §3, §7): reward, target walk, formation particles, observation."""

from __future__ import annotations

import dataclasses
import math

import matplotlib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m3fmarl.problems.core import Switches
from m3fmarl.problems.formation import Formation, FormationState, FormationSwitches

matplotlib.use("Agg")


def make_state(minors, major, target, particles, t=0) -> FormationState:
    minors = np.asarray(minors, dtype=np.float64)
    return FormationState(
        t=np.full(minors.shape[0], t, dtype=np.int64),
        minors=minors,
        major=np.asarray(major, dtype=np.float64),
        target=np.asarray(target, dtype=np.float64),
        particles=np.asarray(particles, dtype=np.float64),
    )


def hand_state() -> FormationState:
    return make_state(
        minors=[[[0.0, 0.0], [1.0, 0.0]]],
        major=[[0.0, 0.0]],
        target=[[0.3, 0.4]],
        particles=[[[1.0, 0.0], [0.0, 1.0]]],
    )


def test_reward_hand_case():
    """Spec §3.3: the 2G case (W = 0.5) plus y = (0, 0), z = (0.3, 0.4): ‖y − z‖ = 0.5, r = −1.0.

    The step returns this pre-step reward whatever the actions are.
    """
    problem = Formation(2, "reference")
    np.testing.assert_allclose(problem.reward(hand_state()), [-1.0], atol=1e-12)
    _, reward = problem.step(
        hand_state(), np.array([[1.0, 1.0]]), np.array([[[0.0, 1.0], [-1.0, 0.0]]]), np.random.default_rng(0)
    )
    np.testing.assert_allclose(reward, [-1.0], atol=1e-12)


def test_target_ou_update_statistics():
    """z_{t+1} = clip(N(0.95 z_t, 0.02 I)): mean 0.95 z, variance 0.02 (var, not std)."""
    problem = Formation(1, "paper")
    b = 6000
    rng = np.random.default_rng(1)
    state = problem.reset(b, rng)
    z = np.array([0.5, -0.5])
    state = dataclasses.replace(state, target=np.tile(z, (b, 1)))
    nxt, _ = problem.step(state, np.zeros((b, 2)), np.zeros((b, 1, 2)), rng)
    se = math.sqrt(0.02 / b)
    np.testing.assert_allclose(nxt.target.mean(axis=0), 0.95 * z, atol=4 * se)
    assert nxt.target.var(axis=0) == pytest.approx([0.02, 0.02], rel=0.06)
    assert abs(np.corrcoef(nxt.target.T)[0, 1]) < 0.05  # independent coordinates


def test_target_is_clipped_to_the_box():
    """From z = (2, −2): 0.95·2 + N(0, 0.02) > 2 w.p. P(Z > 0.1/√0.02) ≈ 0.24; those land on 2."""
    problem = Formation(1, "paper")
    b = 2000
    rng = np.random.default_rng(2)
    state = problem.reset(b, rng)
    state = dataclasses.replace(state, target=np.tile([2.0, -2.0], (b, 1)))
    nxt, _ = problem.step(state, np.zeros((b, 2)), np.zeros((b, 1, 2)), rng)
    assert np.all(np.abs(nxt.target) <= 2.0)
    p_clip = 0.5 * math.erfc(0.1 / math.sqrt(0.02) / math.sqrt(2))
    se = math.sqrt(p_clip * (1 - p_clip) / b)
    assert np.mean(nxt.target[:, 0] == 2.0) == pytest.approx(p_clip, abs=4 * se)
    assert np.mean(nxt.target[:, 1] == -2.0) == pytest.approx(p_clip, abs=4 * se)


def test_particles_centred_on_the_new_major_position():
    """ν_{t+1} ~ clip(N(y_{t+1}, 0.3 I)) around the major **after** its move (spec §3.2 step 4)."""
    problem = Formation(3, "reference")
    b = 40
    rng = np.random.default_rng(3)
    state = problem.reset(b, rng)
    state = dataclasses.replace(state, major=np.zeros((b, 2)))
    u0 = np.tile([1.0, 0.0], (b, 1))  # y_{t+1} = (0.2, 0)
    nxt, _ = problem.step(state, u0, np.zeros((b, 3, 2)), rng)
    np.testing.assert_allclose(nxt.major, np.tile([0.2, 0.0], (b, 1)), atol=1e-12)
    assert nxt.particles.shape == (b, 300, 2)
    offsets = nxt.particles - nxt.major[:, None, :]
    se = math.sqrt(0.3 / offsets[..., 0].size)
    np.testing.assert_allclose(offsets.mean(axis=(0, 1)), 0.0, atol=4 * se)  # old y is 0.2 away
    assert offsets.reshape(-1, 2).var(axis=0) == pytest.approx([0.3, 0.3], rel=0.04)


def test_reset_distribution():
    """y_0 ~ Unif([−2, 2]²), z_0 = clip(N(0, 0.02 I)), ν_0 ~ clip(N(y_0, 0.3 I)), t = 0."""
    problem = Formation(8, "paper")
    b = 3000
    state = problem.reset(b, np.random.default_rng(4))
    np.testing.assert_array_equal(state.t, 0)
    assert state.minors.shape == (b, 8, 2) and state.particles.shape == (b, 300, 2)
    assert state.target.var(axis=0) == pytest.approx([0.02, 0.02], rel=0.08)
    assert np.abs(state.target.mean(axis=0)).max() < 4 * math.sqrt(0.02 / b)
    assert state.major.var(axis=0) == pytest.approx([16 / 12, 16 / 12], rel=0.08)  # Unif[-2, 2]
    near_centre = np.all(np.abs(state.major) < 0.3, axis=1)  # clipping negligible there
    offsets = (state.particles - state.major[:, None, :])[near_centre]
    assert offsets.reshape(-1, 2).var(axis=0) == pytest.approx([0.3, 0.3], rel=0.05)


def test_noise_free_moves_with_projection_and_clipping():
    """x, y move by exactly 0.2 proj(u) and are clipped to [−2, 2]² (spec §3.2 steps 1, 2)."""
    problem = Formation(3, "paper")
    rng = np.random.default_rng(5)
    state = problem.reset(1, rng)
    state = dataclasses.replace(
        state, minors=np.array([[[0.0, 0.0], [1.0, -1.0], [-1.9, 0.5]]]), major=np.array([[1.9, 1.9]])
    )
    u = np.array([[[1.0, 1.0], [0.3, -0.4], [-1.0, 0.0]]])
    nxt, _ = problem.step(state, np.array([[1.0, -1.0]]), u, rng)
    r = 0.2 / math.sqrt(2)
    np.testing.assert_allclose(nxt.minors[0], [[r, r], [1.06, -1.08], [-2.0, 0.5]], atol=1e-12)
    np.testing.assert_allclose(nxt.major[0], [2.0, 1.9 - r], atol=1e-12)


@settings(derandomize=True, deadline=None, max_examples=6)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 25))
def test_states_stay_in_the_box(seed, n):
    problem = Formation(n, "reference")
    rng = np.random.default_rng(seed)
    state = problem.reset(2, rng)
    for step in range(12):
        u = np.sign(state.minors) if step % 2 else rng.uniform(-1, 1, state.minors.shape)
        state, reward = problem.step(state, rng.uniform(-1, 1, (2, 2)), u, rng)
        assert reward.shape == (2,) and np.all(reward <= 0)
        for arr in (state.minors, state.major, state.target, state.particles):
            assert np.all(np.abs(arr) <= 2.0)


def test_observation_layout_and_bounds():
    problem = Formation(4, "reference")
    rng = np.random.default_rng(6)
    state = problem.reset(3, rng)
    obs = problem.m3fc_observation(state)
    low, high = problem.m3fc_observation_bounds()
    assert obs.shape == (3, 102) and obs.dtype == np.float64
    np.testing.assert_array_equal(obs[:, 98:100], state.major)
    np.testing.assert_array_equal(obs[:, 100:102], state.target)
    np.testing.assert_allclose(obs[:, :98].reshape(3, 49, 2).sum(axis=1), 1.0, rtol=1e-12)  # no ×10
    np.testing.assert_array_equal(low, np.r_[np.zeros(98), np.full(4, -2.0)])
    np.testing.assert_array_equal(high, np.r_[np.ones(98), np.full(4, 2.0)])
    assert np.all(obs >= low) and np.all(obs <= high)


def test_observation_cells_on_known_points():
    """Minor at cell (6, 0) → index 14·6 + 0 = 84; particles at cells (3, 3), (0, 6) → 49, 13."""
    problem = Formation(1, "paper")
    state = make_state(
        minors=[[[1.8, -1.8]]],
        major=[[0.1, -0.2]],
        target=[[0.0, 0.5]],
        particles=[[[0.0, 0.0], [-1.8, 1.8], [0.2, 0.2], [0.1, -0.1]]],
    )
    obs = problem.m3fc_observation(state)[0]
    expected = np.zeros(102)
    expected[84] = 1.0
    expected[14 * 3 + 2 * 3 + 1] = 3 / 4
    expected[14 * 0 + 2 * 6 + 1] = 1 / 4
    expected[98:] = [0.1, -0.2, 0.0, 0.5]
    np.testing.assert_allclose(obs, expected, atol=1e-12)
    np.testing.assert_array_equal(problem.minor_cells(state), [[42]])


def test_same_seed_same_trajectory():
    problem = Formation(6, "paper")

    def rollout(seed):
        rng = np.random.default_rng(seed)
        state = problem.reset(2, rng)
        out = []
        for _ in range(8):
            state, r = problem.step(state, rng.uniform(-1, 1, (2, 2)), rng.uniform(-1, 1, (2, 6, 2)), rng)
            out.append(r)
        return state, np.array(out)

    (s1, r1), (s2, r2), (_, r3) = rollout(1), rollout(1), rollout(2)
    np.testing.assert_array_equal(r1, r2)
    for name in ("minors", "major", "target", "particles"):
        np.testing.assert_array_equal(getattr(s1, name), getattr(s2, name))
    assert not np.array_equal(r1, r3)


def test_presets_and_interface():
    assert [f.name for f in dataclasses.fields(FormationSwitches)] == [f.name for f in dataclasses.fields(Switches)]
    paper, ref = Formation.PRESETS["paper"], Formation.PRESETS["reference"]
    assert (paper.std_map, paper.xi_squash, paper.de_decode) == ("paper", "none", "same_as_ce")
    assert (ref.std_map, ref.xi_squash, ref.de_decode) == ("reference", "tanh", "reference_mismatch")
    problem = Formation(5, "reference")
    assert problem.name == "formation" and problem.env_id == "m3fmarl/Formation-v0"
    assert problem.horizon == 100 and problem.minor_action_dim == 2 and problem.major_action_dim == 2
    assert problem.has_major and problem.cell_shape == (7, 7) and problem.xi_size == 196
    assert problem.reference_de_squash == "none"


def test_bad_input_raises():
    problem = Formation(3)
    rng = np.random.default_rng(0)
    state = problem.reset(2, rng)
    with pytest.raises(ValueError):
        problem.step(state, np.zeros((2, 2)), np.zeros((2, 3, 3)), rng)
    with pytest.raises(ValueError):
        problem.step(state, None, np.zeros((2, 3, 2)), rng)
    with pytest.raises(ValueError):
        problem.step(state, np.array([[np.nan, 0.0], [0.0, 0.0]]), np.zeros((2, 3, 2)), rng)
    with pytest.raises(ValueError):
        Formation(3, noise_std=0.1)  # Formation has no such switch


def test_draw_smoke():
    import matplotlib.pyplot as plt

    problem = Formation(10)
    state = problem.reset(2, np.random.default_rng(0))
    fig, ax = plt.subplots()
    problem.draw(ax, state, index=1)
    assert len(ax.collections) >= 4
    plt.close(fig)
