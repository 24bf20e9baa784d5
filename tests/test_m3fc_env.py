"""The M3FC Gymnasium view of every problem: API, spaces, seeding, vector env, bad input."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given
from hypothesis import strategies as st

import m3fmarl
from m3fmarl.m3fc.env import M3FCEnv
from m3fmarl.m3fc.vector import M3FCVectorEnv
from m3fmarl.rollout import uniform_policy

from .conftest import PROBLEM_NAMES

IDS = list(m3fmarl.ENV_IDS.values())
VARIANTS = ["paper", "reference"]
EXECUTIONS = ["centralized", "decentralized"]


@pytest.mark.parametrize("execution", EXECUTIONS)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_env_checker(env_id: str, variant: str, execution: str) -> None:
    env = gym.make(env_id, num_minors=4, variant=variant, execution=execution, render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=False)


@pytest.mark.parametrize("env_id", IDS)
def test_make_vec_uses_the_vector_entry_point(env_id: str) -> None:
    venv = gym.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point", num_minors=7)
    assert isinstance(venv, M3FCVectorEnv)
    assert venv.num_envs == 3 and venv.problem.num_minors == 7
    obs, _ = venv.reset(seed=1)
    assert obs.shape == (3,) + venv.single_observation_space.shape
    assert venv.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP


def _rollout(env: gym.Env, seed: int, steps: int) -> tuple[list[np.ndarray], list[float]]:
    rng = np.random.default_rng(seed + 1000)
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs], []
    for _ in range(steps):
        obs, r, term, trunc, _ = env.step(uniform_policy(None, env.action_space, rng))
        observations.append(obs)
        rewards.append(r)
        if term or trunc:
            obs, _ = env.reset()
            observations.append(obs)
    return observations, rewards


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", PROBLEM_NAMES)
def test_same_seed_same_trajectory_and_states_in_space(name: str, variant: str) -> None:
    a = M3FCEnv(name, num_minors=6, variant=variant)
    b = M3FCEnv(name, num_minors=6, variant=variant)
    oa, ra = _rollout(a, seed=3, steps=30)
    ob, rb = _rollout(b, seed=3, steps=30)
    assert ra == rb
    for x, y in zip(oa, ob, strict=True):
        np.testing.assert_array_equal(x, y)
        assert a.observation_space.contains(x)
    _, rc = _rollout(M3FCEnv(name, num_minors=6, variant=variant), seed=4, steps=30)
    assert rc != ra


@pytest.mark.parametrize("execution", EXECUTIONS)
@pytest.mark.parametrize("name", PROBLEM_NAMES)
def test_vector_env_with_one_copy_equals_single_env(name: str, execution: str) -> None:
    """B = 1: identical to the single env step by step, through the NEXT_STEP autoreset."""
    single = M3FCEnv(name, num_minors=5, variant="reference", execution=execution)
    vec = M3FCVectorEnv(name, num_envs=1, num_minors=5, variant="reference", execution=execution)
    horizon = single.problem.horizon
    rng = np.random.default_rng(0)
    o1, _ = single.reset(seed=11)
    o2, _ = vec.reset(seed=11)
    np.testing.assert_array_equal(o1, o2[0])
    for t in range(horizon + 3):
        action = uniform_policy(None, vec.action_space, rng)
        o2, r2, te2, tr2, _ = vec.step(action)
        if t == horizon:  # the vector env's autoreset step; the single env resets by hand
            o1, _ = single.reset()
            assert r2[0] == 0.0 and not tr2[0] and not te2[0]
        else:
            single_action = tuple(a[0] for a in action) if isinstance(action, tuple) else action[0]
            o1, r1, te1, tr1, _ = single.step(single_action)
            assert r1 == r2[0] and tr1 == tr2[0] and te1 == te2[0]
            assert tr1 == (t == horizon - 1)
        np.testing.assert_array_equal(o1, o2[0])


@pytest.mark.parametrize("name", PROBLEM_NAMES)
def test_vector_env_copies_equal_single_envs_in_distribution(name: str) -> None:
    """B = 24 copies in one call vs 24 separately seeded single envs: mean returns agree."""
    episodes, n = 24, 5
    vec = M3FCVectorEnv(name, num_envs=episodes, num_minors=n, variant="paper")
    rng = np.random.default_rng(5)
    vec.reset(seed=123)
    v_ret = np.zeros(episodes)
    for _ in range(vec.problem.horizon):
        _, r, _, _, _ = vec.step(uniform_policy(None, vec.action_space, rng))
        v_ret += r
    s_ret = []
    for k in range(episodes):
        env = M3FCEnv(name, num_minors=n, variant="paper")
        env.reset(seed=1000 + k)
        total = 0.0
        for _ in range(env.problem.horizon):
            _, r, _, _, _ = env.step(uniform_policy(None, env.action_space, rng))
            total += r
        s_ret.append(total)
    s_ret = np.array(s_ret)
    se = np.sqrt(v_ret.var(ddof=1) / episodes + s_ret.var(ddof=1) / episodes)
    assert abs(v_ret.mean() - s_ret.mean()) < 4 * se, (v_ret.mean(), s_ret.mean(), se)


def test_vector_env_partial_autoreset_keeps_other_copies() -> None:
    """Copies out of phase: a resetting copy is replaced, the other keeps stepping."""
    vec = M3FCVectorEnv("potential", num_envs=2, num_minors=3, variant="paper")
    vec.reset(seed=0)
    vec._needs_reset[:] = [True, False]
    vec.state.t[0] = 57
    obs, r, _, trunc, _ = vec.step(vec.action_space.sample())
    assert r[0] == 0.0 and r[1] != 0.0
    assert vec.state.t[0] == 0 and vec.state.t[1] == 1
    assert not trunc.any()
    assert vec.observation_space.contains(obs)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", PROBLEM_NAMES)
def test_histograms_are_distributions(name: str, variant: str) -> None:
    """Under ``paper`` every histogram layer of the observation sums to 1 (2G: ×10)."""
    env = M3FCVectorEnv(name, num_envs=3, num_minors=9, variant=variant)
    obs, _ = env.reset(seed=0)
    p = env.problem
    rng = np.random.default_rng(0)
    for _ in range(5):
        if name == "beach-bar":
            hist = obs[:, :25]
            if variant == "paper":
                np.testing.assert_allclose(hist.sum(1), 1.0)
            else:  # B4: row-union bug, sums in [5, 10], constant along each row
                assert np.all((hist.sum(1) >= 5 - 1e-9) & (hist.sum(1) <= 10 + 1e-9))
                np.testing.assert_allclose(hist.reshape(-1, 5, 5), hist.reshape(-1, 5, 5)[:, :, :1].repeat(5, 2))
        elif name in ("two-gaussians", "formation"):
            layers = obs[:, :98].reshape(-1, 49, 2)
            scale = 10.0 if name == "two-gaussians" else 1.0
            np.testing.assert_allclose(layers.sum(1), scale)
        else:
            np.testing.assert_allclose(obs[:, : p.num_cells].sum(1), 1.0)
        obs, *_ = env.step(uniform_policy(None, env.action_space, rng))


@pytest.mark.parametrize("name", PROBLEM_NAMES)
def test_decentralized_action_space_has_one_sample_per_minor(name: str) -> None:
    n = 6
    ce = M3FCEnv(name, num_minors=n)
    de = M3FCEnv(name, num_minors=n, execution="decentralized")
    ce_xi = ce.action_space[0] if isinstance(ce.action_space, gym.spaces.Tuple) else ce.action_space
    de_xi = de.action_space[0] if isinstance(de.action_space, gym.spaces.Tuple) else de.action_space
    assert de_xi.shape == (n,) + ce_xi.shape


def test_de_with_identical_samples_matches_ce_in_distribution() -> None:
    """DE whose N samples are all the same ξ decodes like CE (paper variant, Potential)."""
    n, steps = 200, 40
    xi = np.linspace(-0.9, 0.9, 14).astype(np.float32)
    ce = M3FCVectorEnv("potential", num_envs=16, num_minors=n)
    de = M3FCVectorEnv("potential", num_envs=16, num_minors=n, execution="decentralized")
    ce.reset(seed=1)
    de.reset(seed=2)
    hist_ce, hist_de = 0, 0
    for _ in range(steps):
        o1, *_ = ce.step((np.tile(xi, (16, 1)), np.zeros((16, 1))))
        o2, *_ = de.step((np.tile(xi, (16, n, 1)), np.zeros((16, n, 1))))
        hist_ce = hist_ce + o1[:, :7].mean(0)
        hist_de = hist_de + o2[:, :7].mean(0)
    np.testing.assert_allclose(hist_ce / steps, hist_de / steps, atol=0.03)


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"problem": "chess"}, "valid: two-gaussians, formation, beach-bar, foraging, potential"),
        ({"problem": "potential", "variant": "papers"}, "valid: paper, reference"),
        ({"problem": "potential", "execution": "ce"}, "'centralized', 'decentralized'"),
        ({"problem": "potential", "num_minors": 0}, "num_minors must be >= 1"),
        ({"problem": "potential", "num_minors": 2.5}, "integer"),
        ({"problem": "potential", "render_mode": "human"}, "'rgb_array'"),
        ({"problem": "potential", "force_coef": 0.1}, "unknown switch 'force_coef'; valid:"),
        ({"problem": "beach-bar", "histogram": "marginal"}, "valid: 'joint', 'row_union_bug'"),
    ],
)
def test_bad_construction_is_refused_with_valid_choices(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=None) as err:
        M3FCEnv(**kwargs)
    assert needle in str(err.value)


@pytest.mark.parametrize("name", PROBLEM_NAMES)
def test_bad_actions_are_refused(name: str) -> None:
    env = M3FCEnv(name, num_minors=3)
    env.reset(seed=0)
    good = env.action_space.sample()
    is_tuple = isinstance(good, tuple)
    xi = good[0] if is_tuple else good
    bad_shape = np.zeros(xi.shape[0] + 1, dtype=np.float32)
    nan = xi.copy()
    nan[0] = np.nan
    for bad_xi, needle in ((bad_shape, "shape"), (nan, "NaN")):
        with pytest.raises(ValueError, match=needle):
            env.step((bad_xi, good[1]) if is_tuple else bad_xi)
    if is_tuple:
        with pytest.raises(ValueError, match="pair"):
            env.step(xi)
        bad_major = 7 if env.problem.num_major_actions else np.full(env.problem.major_action_dim, np.nan)
        with pytest.raises(ValueError, match="major"):
            env.step((xi, bad_major))


def test_render_returns_an_rgb_picture() -> None:
    env = M3FCEnv("beach-bar", num_minors=5, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert frame.std() > 0  # something was drawn


@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 40))
def test_states_stay_inside_spaces_for_any_seed_and_n(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    for name in ("beach-bar", "potential", "foraging"):
        env = M3FCVectorEnv(name, num_envs=2, num_minors=n, variant=["paper", "reference"][seed % 2])
        obs, _ = env.reset(seed=seed)
        for _ in range(8):
            assert env.observation_space.contains(obs)
            obs, r, *_ = env.step(uniform_policy(None, env.action_space, rng))
            assert np.all(np.isfinite(r))
