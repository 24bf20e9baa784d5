"""Evaluation of trained policies (m3fmarl/evaluate.py): loading, CE/DE rollouts, reproducibility.

Real RLlib, no mocks.  The fast tests use an untrained module built from the M3FPPO module spec
(no Ray).  The slow ones train M3FPPO for one tiny iteration (Beach bar and Potential, N = 5,
batch 400, 4 copies), save the Algorithm with ``save_to_path`` and evaluate the checkpoint; Ray
is started once for the module (an Algorithm cannot be built without it: ``EnvRunnerGroup`` calls
``ray.put``).  About 30 s in all.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray.rllib")
torch = pytest.importorskip("torch")

import gymnasium as gym  # noqa: E402
import ray  # noqa: E402

import m3fmarl  # noqa: E402
import m3fmarl.evaluate as ev  # noqa: E402
from m3fmarl.algorithms.m3fppo import m3fppo_config  # noqa: E402
from m3fmarl.evaluate import EVAL_EPISODES, EvalResult, Policy, evaluate, load_policy  # noqa: E402
from m3fmarl.m3fc.vector import M3FCVectorEnv  # noqa: E402

TINY = dict(train_batch_size=400, minibatch_size=200, num_epochs=1, num_envs_per_env_runner=4)
PROBLEMS = ["beach-bar", "potential"]


def untrained_policy(problem: str = "beach-bar", n: int = 5, seed: int = 0) -> Policy:
    cfg = m3fppo_config(problem, n)
    venv = gym.make_vec(m3fmarl.ENV_IDS[problem], num_envs=1, vectorization_mode="vector_entry_point",
                        num_minors=n, variant="reference")
    spec = cfg.rl_module_spec
    spec.observation_space, spec.action_space = venv.single_observation_space, venv.single_action_space
    torch.manual_seed(seed)
    return Policy(spec.build(), problem=problem, variant="reference", num_minors=n)


class SpyEnv(M3FCVectorEnv):
    """The real vector env, recording the actions it is stepped with."""

    received: list = []

    def step(self, actions):
        SpyEnv.received.append(tuple(np.array(a) for a in actions) if isinstance(actions, tuple) else np.array(actions))
        return super().step(actions)


def check_stats(r: EvalResult, n: int, execution: str, episodes: int) -> None:
    assert (r.num_minors, r.execution, r.episodes, len(r.returns)) == (n, execution, episodes, episodes)
    assert np.all(np.isfinite(r.returns)) and math.isfinite(r.mean) and math.isfinite(r.ci95) and r.std > 0
    assert r.mean == pytest.approx(np.mean(r.returns)) and r.std == pytest.approx(np.std(r.returns, ddof=1))
    assert r.ci95 == pytest.approx(1.96 * r.std / math.sqrt(episodes))


# --- fast: untrained module, no Ray ----------------------------------------------------------


def test_sample_layouts_and_clipping() -> None:
    pol = untrained_policy("beach-bar", 5)
    obs = np.random.default_rng(0).random((3, 45))
    torch.manual_seed(1)
    xi, major = pol.sample(obs)
    assert xi.shape == (3, 125) and major.shape == (3,) and np.issubdtype(major.dtype, np.integer)
    xi, major = pol.sample(obs, 400)  # DE: 400 independent samples per observation
    assert xi.shape == (3, 400, 125) and major.shape == (3, 400)
    # untrained: means ≈ 0 and log-stds ≈ 0, so the samples are ≈ N(0, 1) and differ between minors
    assert abs(xi.std() - 1.0) < 0.02 and abs(xi.mean()) < 0.02
    assert len(np.unique(major[0])) == 5
    env_xi, env_major = pol.to_env((xi, major))
    np.testing.assert_allclose(env_xi, np.clip(xi, -1.0, 1.0), atol=1e-6)
    np.testing.assert_array_equal(env_major, major)


def test_evaluate_untrained_is_deterministic_and_leaves_torch_rng_alone() -> None:
    pol = untrained_policy("potential", 4)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = evaluate(pol, num_minors=[2, 6], episodes=5, num_envs=3, seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = evaluate(pol, num_minors=[2, 6], episodes=5, num_envs=3, seed=1)
    assert a == b and all(np.array_equal(x.returns, y.returns) for x, y in zip(a, b, strict=True))
    for r, n in zip(a, [2, 6], strict=True):
        check_stats(r, n, "centralized", 5)
        assert (r.problem, r.variant, r.train_num_minors, r.seed) == ("potential", "reference", 4, 1)
    # an N's result does not depend on which other N are evaluated in the same call
    c = evaluate(pol, num_minors=6, episodes=5, num_envs=3, seed=1)
    np.testing.assert_array_equal(c[0].returns, a[1].returns)
    assert torch.get_num_threads() >= 1


def test_evaluate_rejects_bad_arguments() -> None:
    pol = untrained_policy("beach-bar", 5)
    with pytest.raises(ValueError, match="execution"):
        evaluate(pol, num_minors=3, episodes=2, execution="distributed")
    with pytest.raises(ValueError, match="num_minors"):
        evaluate(pol, num_minors=[3, 0], episodes=2)
    with pytest.raises(ValueError, match="episodes"):
        evaluate(pol, num_minors=3, episodes=0)
    with pytest.raises(ValueError, match="seed"):
        evaluate(pol, num_minors=3, episodes=2, seed=-1)
    with pytest.raises(ValueError, match="trained on 'beach-bar'"):
        evaluate(pol, problem="potential", num_minors=3, episodes=2)
    with pytest.raises(ValueError, match="unknown problem"):
        evaluate(pol, problem="beach-ball", num_minors=3, episodes=2)
    bare = pol.module  # a bare module: problem and variant must be given; spaces are checked
    with pytest.raises(ValueError, match="problem unknown"):
        evaluate(bare, num_minors=3, episodes=2)
    with pytest.raises(ValueError, match="does not fit the policy"):
        evaluate(bare, problem="potential", variant="reference", num_minors=3, episodes=2)
    assert evaluate(bare, problem="beach", variant="paper", num_minors=3, episodes=2, num_envs=2)[0].episodes == 2


def test_load_policy_bad_paths(tmp_path) -> None:
    missing = tmp_path / "no_such_checkpoint"
    with pytest.raises(ValueError, match="does not exist") as e:
        load_policy(missing)
    assert str(missing) in str(e.value) and "save_to_path" in str(e.value) and "\n" not in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="is not an RLlib Algorithm checkpoint") as e:
        load_policy(str(empty))
    assert str(empty) in str(e.value) and "\n" not in str(e.value)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        load_policy(a_file)
    # an RLModule checkpoint (not an Algorithm one)
    module_dir = tmp_path / "module"
    untrained_policy().module.save_to_path(str(module_dir))
    with pytest.raises(ValueError, match="is not an RLlib Algorithm checkpoint"):
        load_policy(module_dir)


# --- slow: a real tiny training run, saved and reloaded --------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """problem → (algorithm after one iteration, its checkpoint directory)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    built, out = [], {}
    try:
        for i, problem in enumerate(PROBLEMS):
            algo = m3fppo_config(problem, 5, seed=i, **TINY).build_algo()
            built.append(algo)
            algo.train()
            path = tmp_path_factory.mktemp(f"ckpt-{problem}")
            algo.save_to_path(str(path))
            out[problem] = (algo, path)
        yield out
    finally:
        for algo in built:
            algo.stop()
        ray.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("problem", PROBLEMS)
def test_load_and_evaluate_ce_de(trained, problem) -> None:
    _, path = trained[problem]
    pol = load_policy(path)
    assert (pol.problem, pol.variant, pol.num_minors, pol.env_config) == (problem, "reference", 5, {})
    assert (pol.normalize_actions, pol.clip_actions, pol.checkpoint) == (True, False, path)
    for execution in ("centralized", "decentralized"):
        # 6 episodes with 4 copies: two batches, the second one cut
        res = evaluate(pol, num_minors=[3, 7], episodes=6, execution=execution, num_envs=4, seed=0)
        assert [r.num_minors for r in res] == [3, 7]
        for r, n in zip(res, [3, 7], strict=True):
            check_stats(r, n, execution, 6)
            assert (r.problem, r.variant, r.train_num_minors) == (problem, "reference", 5)
    default = evaluate(pol, num_minors=3)  # spec §2.0 episode counts, training variant
    assert default[0].episodes == EVAL_EPISODES[problem] == (100 if problem == "beach-bar" else 500)
    check_stats(default[0], 3, "centralized", EVAL_EPISODES[problem])
    assert evaluate(pol, episodes=2, num_envs=2)[0].num_minors == 5  # default N: training N


@pytest.mark.slow
@pytest.mark.parametrize("problem", PROBLEMS)
def test_checkpoint_round_trip(trained, problem) -> None:
    algo, path = trained[problem]
    in_memory = Policy.from_algorithm(algo)
    loaded = load_policy(path)
    assert (in_memory.problem, in_memory.variant, in_memory.num_minors) == (loaded.problem, loaded.variant, 5)
    mem_state, disk_state = in_memory.module.state_dict(), loaded.module.state_dict()
    assert mem_state.keys() <= disk_state.keys()  # env runner: inference-only (actor) module
    assert all(torch.equal(mem_state[k], disk_state[k]) for k in mem_state)
    for execution in ("centralized", "decentralized"):
        a = evaluate(in_memory, num_minors=[3, 7], episodes=4, execution=execution, num_envs=4, seed=5)
        b = evaluate(loaded, num_minors=[3, 7], episodes=4, execution=execution, num_envs=4, seed=5)
        assert a == b
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x.returns, y.returns)


@pytest.mark.slow
def test_seeds(trained) -> None:
    pol = load_policy(trained["potential"][1])
    for execution in ("centralized", "decentralized"):
        kw = dict(num_minors=[3, 7], episodes=4, execution=execution, num_envs=4)
        a, b, c = evaluate(pol, seed=0, **kw), evaluate(pol, seed=0, **kw), evaluate(pol, seed=1, **kw)
        for x, y, z in zip(a, b, c, strict=True):
            np.testing.assert_array_equal(x.returns, y.returns)
            assert x == y and x.mean != z.mean
            assert not np.any(x.returns == z.returns)


@pytest.mark.slow
@pytest.mark.parametrize("problem", PROBLEMS)
def test_actions_are_stochastic_and_clipped(trained, problem, monkeypatch) -> None:
    pol = load_policy(trained[problem][1])
    monkeypatch.setattr(ev, "M3FCVectorEnv", SpyEnv)
    horizon = 200 if problem == "beach-bar" else 100
    sent = {}
    for execution, seed in [("centralized", 0), ("centralized", 1), ("decentralized", 0)]:
        SpyEnv.received = []
        evaluate(pol, num_minors=7, episodes=3, execution=execution, num_envs=3, seed=seed)
        assert len(SpyEnv.received) == horizon
        sent[execution, seed] = SpyEnv.received
    lead = {"centralized": (3,), "decentralized": (3, 7)}
    for (execution, _), steps in sent.items():
        xi = np.stack([s[0] for s in steps])
        major = np.stack([s[1] for s in steps])
        n_lead = len(lead[execution])
        assert xi.shape[1:-1] == lead[execution] and major.shape[1:1 + n_lead] == lead[execution]
        # every Box part reaching the env is within [-1, 1], and the clip is active (std ≈ 1
        # after one tiny iteration: many samples fall outside and arrive as exactly ±1)
        assert np.abs(xi).max() <= 1.0 and np.mean(np.abs(xi) == 1.0) > 0.05
        if problem == "potential":
            assert np.abs(major).max() <= 1.0 and np.any(np.abs(major) == 1.0)
        else:
            assert np.issubdtype(major.dtype, np.integer) and set(np.unique(major)) == set(range(5))
    # stochastic: another seed gives other actions at the very first step (same first observation
    # distribution, independent samples); DE: the 7 minors' samples of one copy differ
    first_ce0, first_ce1 = sent["centralized", 0][0][0], sent["centralized", 1][0][0]
    assert not np.allclose(first_ce0, first_ce1)
    de_xi = sent["decentralized", 0][0][0]  # (copies, N, |ξ|)
    assert all(len({row.tobytes() for row in de_xi[b]}) == 7 for b in range(3))


@pytest.mark.slow
def test_sampling_is_the_training_samplers_sampling(trained) -> None:
    """With the same torch seed, ``Policy.sample`` draws exactly the actions the training sampler
    draws (exploration distribution of the actor's output → ``sample()``)."""
    algo, _ = trained["beach-bar"]
    pol = Policy.from_algorithm(algo)
    sampler = algo._sampler
    obs = sampler.core.observe(sampler.problem.reset(4, np.random.default_rng(0))).astype(np.float32)
    torch.manual_seed(42)
    (train_xi, train_major), _, _ = sampler.act(algo.get_module().unwrapped(), obs)
    torch.manual_seed(42)
    xi, major = pol.sample(obs)
    np.testing.assert_array_equal(xi, train_xi)
    np.testing.assert_array_equal(major, train_major)


@pytest.mark.slow
def test_relative_checkpoint_path_loads(monkeypatch, trained) -> None:
    """A checkpoint given relative to the working directory loads (RLlib wants absolute URIs)."""
    _, ckpt = trained["beach-bar"]
    monkeypatch.chdir(Path(ckpt).parent)
    policy = load_policy(Path(ckpt).name)
    assert policy.problem == "beach-bar" and policy.checkpoint == Path(ckpt).resolve()
