"""The multi-agent view (spec/environments.md §1.3, §2.5–§6.5): PettingZoo and RLlib APIs, the
observation layouts against the authors' wrappers, rewards equal to the problems', per-agent GAE
and the MAPPO critic input."""

from __future__ import annotations

import json

import numpy as np
import pytest

import m3fmarl
from m3fmarl.golden import GOLDEN_DIR
from m3fmarl.multiagent import MultiAgentCore, rllib_env_class
from m3fmarl.problems import PAPER_NAMES, PROBLEMS, make_problem
from marl_baselines.sampler import BatchedSampler, gae

GOLDEN = GOLDEN_DIR / "marl_spaces_and_examples.json"
GOLDEN_NAMES = PAPER_NAMES  # golden files use the paper's short names
VARIANTS = ("paper", "reference")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_pettingzoo_parallel_api(problem: str, variant: str) -> None:
    from pettingzoo.test import parallel_api_test

    env = m3fmarl.parallel_env(problem, num_minors=3, variant=variant)
    horizon = env.core.horizon
    parallel_api_test(env, num_cycles=horizon + 5)  # crosses the truncation at T


@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_rllib_multiagent_env_check(problem: str) -> None:
    from ray.rllib.utils.pre_checks.env import check_multiagent_environments

    env = rllib_env_class()({"problem": problem, "num_minors": 4, "variant": "reference"})
    check_multiagent_environments(env)
    obs, _ = env.reset(seed=1)
    expected = (["major"] if problem != "two-gaussians" else []) + [f"minor_{i}" for i in range(4)]
    assert list(obs) == expected


def test_rllib_envs_are_registered_under_m3fmarl_problem() -> None:
    from ray.tune.registry import ENV_CREATOR, _global_registry

    from m3fmarl.multiagent import register_rllib_envs

    names = register_rllib_envs()
    assert names == [f"m3fmarl-{p}" for p in PROBLEMS]
    env = _global_registry.get(ENV_CREATOR, "m3fmarl-foraging")({"num_minors": 2, "variant": "paper"})
    assert env.core.name == "foraging" and env.core.num_minors == 2 and env.core.problem.variant == "paper"


@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_reference_spaces_match_the_authors_wrappers(problem: str) -> None:
    golden = json.loads(GOLDEN.read_text())["problems"][GOLDEN_NAMES[problem]]["marl_N20"]
    env = m3fmarl.parallel_env(problem, num_minors=20, variant="reference")
    flat_len = len(next(iter(golden["examples_seed0"].values()))["flat"])
    assert env.observation_space("minor_0").shape == (flat_len,)
    ids = golden["agent_ids"]
    assert len(env.possible_agents) == (20 if problem == "two-gaussians" else 21)
    assert (-1 in ids) == (problem != "two-gaussians")
    act = golden["action_space"].get("first", golden["action_space"])
    space = env.action_space("minor_0")
    if act["type"] == "Discrete":
        assert space.n == act["n"]
    else:
        assert list(space.shape) == act["shape"] and space.low.min() == -1.0 and space.high.max() == 1.0


@pytest.mark.parametrize("problem", [p for p in PROBLEMS if p != "two-gaussians"])
def test_major_own_slot_follows_the_reference(problem: str) -> None:
    """The major's "own state" slot: the golden example's values (zeros, Beach the one-hot of
    (0, 0)), identical in every episode; the rest of its observation equals a minor's."""
    golden = json.loads(GOLDEN.read_text())["problems"][GOLDEN_NAMES[problem]]["marl_N20"]["examples_seed0"]
    core = MultiAgentCore(problem, 20, "reference")
    own = core.layout.own
    major_gold = np.asarray(golden["-1"]["flat"])
    obs = core.observe(core.problem.reset(3, np.random.default_rng(0)))
    np.testing.assert_allclose(obs[:, 0, own], np.broadcast_to(major_gold[own], (3, own.size)), atol=1e-6)
    np.testing.assert_array_equal(obs[:, 0, core.layout.shared], obs[:, 5, core.layout.shared])


def test_observation_layouts_hold_the_states() -> None:
    rng = np.random.default_rng(3)
    # Formation: own position, major y and target z, the two-layer histogram (sums 1 + 1).
    core = MultiAgentCore("formation", 6, "reference")
    s = core.problem.reset(2, rng)
    obs = core.observe(s)
    np.testing.assert_allclose(obs[:, 1:, :2], s.minors, atol=1e-6)
    np.testing.assert_allclose(obs[:, 0, 2:6], np.concatenate([s.major, s.target], 1), atol=1e-6)
    np.testing.assert_allclose(obs[:, 0, 6:].sum(1), 2.0, atol=1e-5)
    # Potential: own x, y, z, the 7-bin histogram.
    core = MultiAgentCore("potential", 6, "paper")
    s = core.problem.reset(2, rng)
    obs = core.observe(s)
    np.testing.assert_allclose(obs[:, 1:, 0], s.minors, atol=1e-6)
    np.testing.assert_allclose(obs[:, 3, 1:3], np.stack([s.major, s.target], 1), atol=1e-6)
    # Beach: two one-hots of the own cell.
    core = MultiAgentCore("beach-bar", 6, "paper")
    s = core.problem.reset(2, rng)
    obs = core.observe(s)
    x1, x2 = np.divmod(s.minors, 5)
    assert (obs[:, 1:, :5].argmax(-1) == x1).all() and (obs[:, 1:, 5:10].argmax(-1) == x2).all()
    np.testing.assert_allclose(obs[:, 0, 30:].sum(1), 1.0, atol=1e-6)  # joint histogram (paper)


def test_two_gaussians_histogram_scale_is_the_m3_switch() -> None:
    rng = np.random.default_rng(0)
    for variant, scale in (("reference", 1.0), ("paper", 10.0)):
        core = MultiAgentCore("two-gaussians", 8, variant)
        s = core.problem.reset(1, rng)
        cells = core.observe(s)[0].reshape(8, 49, 4)
        np.testing.assert_allclose(cells[:, :, 2].sum(1), scale, rtol=1e-5)
        np.testing.assert_allclose(cells[:, :, 3].sum(1), scale, rtol=1e-5)
        np.testing.assert_allclose(cells[:, 7, :2], (s.minors[0] + 2) / 4, atol=1e-6)  # own, tiled


def test_foraging_area_layer_is_the_r9_switch() -> None:
    ref = MultiAgentCore("foraging", 5, "reference")
    paper = MultiAgentCore("foraging", 5, "paper")
    assert ref.obs_dim == 201 and paper.obs_dim == 54
    rng = np.random.default_rng(4)
    s = ref.problem.reset(6, rng)
    for _ in range(30):  # let areas spawn
        s, _ = ref.step(s, rng.uniform(-1, 1, (6, 6, 2)), rng)
    obs = ref.observe(s)
    layers = obs[:, 0, 5:].reshape(6, 49, 2, 2)
    np.testing.assert_allclose(layers[..., 0].sum((1, 2)), 1.0, atol=1e-5)  # minors
    np.testing.assert_allclose(layers[..., 1].sum((1, 2)), s.area_alive.sum(1) / 5, atol=1e-6)  # areas / 5
    assert s.area_alive.any()


@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_team_reward_and_dynamics_are_the_problems(problem: str) -> None:
    """Same state, same actions, same RNG: the view's step equals the problem's own step."""
    core = MultiAgentCore(problem, 7, "reference")
    p = make_problem(problem, 7, "reference")
    s = p.reset(3, np.random.default_rng(5))
    rng = np.random.default_rng(6)
    if core.discrete:
        a = rng.integers(0, 5, size=(3, core.num_agents))
        major, minors = a[:, 0], a[:, 1:]
    else:
        a = rng.uniform(-1.3, 1.3, size=(3, core.num_agents, core.action_dim))
        c = np.clip(a, -1, 1)
        major, minors = (c[:, 0], c[:, 1:]) if core.has_major else (None, c)
    s1, r1 = core.step(s, a, np.random.default_rng(9))
    s2, r2 = p.step(s, major, minors, np.random.default_rng(9))
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(core.observe(s1), core.observe(s2))


def test_actions_are_mapped_by_agent_id_not_dict_order() -> None:
    def run(reverse: bool) -> list[float]:
        env = m3fmarl.parallel_env("formation", num_minors=4, variant="reference")
        env.reset(seed=2)
        rng = np.random.default_rng(0)
        rewards = []
        for _ in range(5):
            acts = {a: rng.uniform(-1, 1, 2).astype(np.float32) for a in env.agents}
            if reverse:
                acts = dict(reversed(list(acts.items())))
            _, r, _, _, _ = env.step(acts)
            rewards.append(r["major"])
        return rewards

    assert run(False) == run(True)


def test_bad_actions_are_refused_with_one_line() -> None:
    env = m3fmarl.parallel_env("beach-bar", num_minors=2, variant="paper")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="missing actions"):
        env.step({"major": 0, "minor_0": 1})
    with pytest.raises(ValueError, match="unknown agent id 'minor_7'"):
        env.step({"major": 0, "minor_0": 1, "minor_1": 2, "minor_7": 0})
    with pytest.raises(ValueError, match="must be in 0..4"):
        env.step({"major": 0, "minor_0": 1, "minor_1": 9})
    with pytest.raises(ValueError, match="unknown problem"):
        m3fmarl.parallel_env("chess", num_minors=2)
    with pytest.raises(ValueError, match="num_minors"):
        m3fmarl.parallel_env("formation", num_minors=0)


def test_same_seed_same_episode() -> None:
    def episode() -> list:
        env = m3fmarl.parallel_env("foraging", num_minors=3, variant="reference")
        obs, _ = env.reset(seed=11)
        out = [obs["minor_1"].copy()]
        rng = np.random.default_rng(1)
        while env.agents:
            obs, r, *_ = env.step({a: rng.uniform(-1, 1, 2) for a in env.agents})
            out.append(obs["minor_1"].copy())
        return out

    a, b = episode(), episode()
    assert len(a) == 201
    np.testing.assert_array_equal(np.stack(a), np.stack(b))


def test_render_rgb_array() -> None:
    env = m3fmarl.parallel_env("beach-bar", num_minors=5, render_mode="rgb_array")
    env.reset(seed=0)
    img = env.render()
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8


# --- per-agent GAE -------------------------------------------------------------------------------


def test_gae_per_agent_on_a_hand_made_batch() -> None:
    """Two agents, T = 4, the episode ends after step 1 (truncation: bootstrap from the final
    observation's value), the fragment after step 3.  Hand recursion with γ = 0.5, λ = 0.5."""
    g, lam = 0.5, 0.5
    values = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]])
    rewards = np.array([1.0, 2.0, 3.0, 4.0])[:, None]
    ends = np.array([False, True, False, False])[:, None]
    next_values = np.array([[2.0, 20.0], [7.0, 70.0], [4.0, 40.0], [5.0, 50.0]])  # t=1: V(final obs)
    adv = gae(values, rewards, next_values, ends, g, lam)
    expected = np.zeros((4, 2))
    for k in range(2):
        d = rewards[:, 0] + g * next_values[:, k] - values[:, k]
        expected[3, k] = d[3]
        expected[2, k] = d[2] + g * lam * expected[3, k]
        expected[1, k] = d[1]  # episode end: no carry across it
        expected[0, k] = d[0] + g * lam * expected[1, k]
    np.testing.assert_allclose(adv, expected)
    # agent 0's advantages do not depend on agent 1's values
    values2 = values.copy()
    values2[:, 1] += 100.0
    np.testing.assert_allclose(gae(values2, rewards, next_values, ends, g, lam)[:, 0], adv[:, 0])


class _ConstModule:
    """A stand-in policy: zero-mean Gaussian actions; value = first observation entry (or the
    first critic-input entry)."""

    def __init__(self, dim: int, critic: bool = False) -> None:
        self.dim, self.critic = dim, critic

    def forward_exploration(self, batch: dict) -> dict:
        import torch

        return {"action_dist_inputs": torch.zeros(batch["obs"].shape[0], 2 * self.dim)}

    def get_exploration_action_dist_cls(self):  # noqa: ANN201
        from ray.rllib.core.distribution.torch.torch_distribution import TorchDiagGaussian

        return TorchDiagGaussian

    def compute_values(self, batch: dict):  # noqa: ANN201
        x = batch["critic_obs"] if self.critic else batch["obs"]
        return x[:, 0] * 1.0


def test_sampler_batches_are_per_agent_trajectories_with_gae() -> None:
    """The sampler's flat batch holds each agent's trajectory contiguously, and its advantages
    equal GAE recomputed from that agent's own rewards/values with the episode-end bootstraps."""
    import torch

    torch.manual_seed(0)
    core = MultiAgentCore("formation", 3, "reference")
    sampler = BatchedSampler(core, num_envs=2, seed=0, gamma=0.9, lambda_=0.8)
    modules = {"major": _ConstModule(2), "minor": _ConstModule(2)}
    steps = 150  # crosses the episode end at T = 100
    batches, stats = sampler.sample(modules, steps)
    assert stats.env_steps == 300 and len(stats.episode_returns) == 2
    minor = batches["minor"]
    assert minor["obs"].shape == (2 * 3 * steps, 104)
    # copy 1, minor 2 is the 6th trajectory piece; its value is its own x-coordinate (obs[0])
    piece = slice(5 * steps, 6 * steps)
    v = minor["obs"][piece, 0].astype(np.float64)
    np.testing.assert_allclose(minor["vf_preds"][piece], v, rtol=1e-6)
    targets = minor["value_targets"][piece].astype(np.float64)
    adv = minor["advantages"][piece].astype(np.float64)
    np.testing.assert_allclose(targets - v, adv, atol=1e-4)
    # Inside an episode A_t − γλ A_{t+1} − (γ V_{t+1} − V_t) = r_t, the team reward: the same for
    # every agent of a copy although each agent's values differ.
    for t in (10, 50, 120):
        lhs = adv[t] - 0.9 * 0.8 * adv[t + 1] - (0.9 * v[t + 1] - v[t])
        other = slice(3 * steps, 4 * steps)  # copy 1, minor 0: same copy, same team reward
        va, aa = minor["obs"][other, 0].astype(np.float64), minor["advantages"][other].astype(np.float64)
        rhs = aa[t] - 0.9 * 0.8 * aa[t + 1] - (0.9 * va[t + 1] - va[t])
        assert lhs == pytest.approx(rhs, abs=1e-3)


def test_mappo_critic_sees_the_global_state_and_the_actor_does_not() -> None:
    import torch

    from marl_baselines.ppo import MAPPOTorchRLModule

    core = MultiAgentCore("formation", 4, "reference")
    width = core.action_dim
    module = MAPPOTorchRLModule(
        observation_space=core.observation_space(), action_space=core.action_space(),
        model_config={"fcnet_hiddens": [32, 32], "fcnet_activation": "tanh", "vf_share_layers": False,
                      "head_fcnet_hiddens": [], "free_log_std": False, "critic_global_dim": core.global_state_dim,
                      "critic_action_dim": (core.num_agents - 1) * width},
    )
    sampler = BatchedSampler(core, num_envs=1, seed=0, centralized_critic=True)
    obs = sampler.obs.copy()
    actions = np.zeros((1, core.num_agents, width), dtype=np.float32)
    c = sampler.critic_obs(obs, actions)
    assert c.shape == (1, core.num_agents, core.global_state_dim + (core.num_agents - 1) * width)
    # the critic input of minor_0 holds minor_3's position (global state), its actor input does not
    moved = obs.copy()
    moved[0, 4, :2] += 0.5  # minor_3's own position
    c_moved = sampler.critic_obs(moved, actions)
    with torch.no_grad():
        v = module.compute_values({"critic_obs": torch.from_numpy(c[0, 1:2])})
        v_moved = module.compute_values({"critic_obs": torch.from_numpy(c_moved[0, 1:2])})
        pi = module.forward_exploration({"obs": torch.from_numpy(obs[0, 1:2])})["action_dist_inputs"]
        pi_moved = module.forward_exploration({"obs": torch.from_numpy(moved[0, 1:2])})["action_dist_inputs"]
    assert not torch.equal(v, v_moved)
    assert torch.equal(pi, pi_moved)
    # the other agents' actions, in agent order without its own: minor_0 (index 1) sees major, minor_1..3
    actions[0, :, 0] = np.arange(core.num_agents)
    c = sampler.critic_obs(obs, actions)
    others = c[0, 1, core.global_state_dim:].reshape(core.num_agents - 1, width)[:, 0]
    np.testing.assert_array_equal(others, [0, 2, 3, 4])
    # the global state holds every agent's own position once
    glob = core.global_state(obs)[0]
    own = glob[-core.num_agents * 2:].reshape(core.num_agents, 2)
    np.testing.assert_allclose(own[1:], sampler.state.minors[0], atol=1e-6)


def test_beach_bar_policy_runs_once_per_distinct_cell_with_the_same_outputs() -> None:
    """With N > 25 minors, Beach bar agents of a copy that share a cell share an observation; the
    sampler evaluates actor and critic once per (copy, cell) — the outputs must equal the
    one-pass-per-agent ones."""
    import torch

    from marl_baselines.ppo import marl_module_specs

    core = MultiAgentCore("beach-bar", 60, "reference")
    torch.manual_seed(0)
    modules = {mid: spec.build() for mid, spec in marl_module_specs("local", core).items()}
    sampler = BatchedSampler(core, num_envs=3, seed=4)
    keys = core.own_keys(sampler.state)
    assert keys.shape == (3, 61) and keys[:, 0].tolist() == [25, 25, 25]
    calls: list[int] = []
    encoder = modules["minor"].encoder.actor_encoder
    hook = encoder.register_forward_hook(lambda m, inp, out: calls.append(len(inp[0]["obs"])))
    _, _, shared = sampler.act(modules, sampler.obs, keys)
    _, _, plain = sampler.act(modules, sampler.obs, None)
    hook.remove()
    assert calls[0] == len({(c, k) for c in range(3) for k in keys[c, 1:]}) <= 75 and calls[1] == 180
    torch.testing.assert_close(torch.from_numpy(shared["minor"]), torch.from_numpy(plain["minor"]),
                               rtol=1e-5, atol=1e-6)
    obs = np.stack([sampler.obs, sampler.obs])
    v_shared = sampler._values(modules, obs, None, np.stack([keys, keys]))
    v_plain = sampler._values(modules, obs, None, None)
    np.testing.assert_allclose(v_shared, v_plain, rtol=1e-5, atol=1e-6)
    assert core.num_own_keys == 26 and MultiAgentCore("formation", 60).own_keys(sampler.state) is None


def test_each_agent_samples_its_own_seeded_action_stream():
    """reset(seed) seeds every agent's action space (seed + i): the agents' samples differ from
    each other and repeat with the same seed (one shared space seeded N times would not)."""
    def samples(seed: int) -> dict[str, np.ndarray]:
        env = m3fmarl.parallel_env("potential", num_minors=3, variant="reference")
        env.reset(seed=seed)
        return {a: np.array([env.action_space(a).sample() for _ in range(4)]) for a in env.possible_agents}

    first, again = samples(7), samples(7)
    agents = list(first)
    assert all(np.array_equal(first[a], again[a]) for a in agents)
    assert not np.array_equal(first[agents[0]], first[agents[1]])
    assert not np.array_equal(first[agents[0]], samples(8)[agents[0]])


@pytest.mark.parametrize("problem", PROBLEMS)
def test_observations_rebuild_exactly_from_the_global_state(problem: str) -> None:
    """What HMF's replay buffer stores instead of every agent's observation (a few per cent of
    the numbers at N = 20), mid-episode, after random actions, at two N."""
    for n in (1, 7):
        core = MultiAgentCore(problem, n, "reference")
        rng = np.random.default_rng(3)
        state, obs = core.reset(4, rng)
        for _ in range(6):
            a = (rng.integers(0, core.num_actions, (4, core.num_agents)) if core.discrete
                 else rng.uniform(-1, 1, (4, core.num_agents, core.action_dim)))
            state, _ = core.step(state, a, rng)
            obs = core.observe(state)
            g = core.global_state(obs)
            assert g.shape == (4, core.global_state_dim)
            np.testing.assert_array_equal(core.observations_from_global(g), obs)
