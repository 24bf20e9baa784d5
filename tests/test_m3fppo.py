"""M3FPPO on RLlib 2.60 (new API stack): config, RLlib-1.8 value loss, GAE, and a real tiny run.

The run tests (marked slow: "short training runs") use real RLlib, no mocks: Beach bar N = 5,
8 copies × 200 steps (one whole episode each) = train batch 1 600, minibatch 400, 2 epochs,
sampling with :class:`~m3fmarl.m3fc.sampler.M3FCSampler` in the driver; about 15 s including Ray
start-up.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("ray.rllib")
torch = pytest.importorskip("torch")

from ray.rllib.algorithms.algorithm import Algorithm  # noqa: E402
from ray.rllib.core.columns import Columns  # noqa: E402

from m3fmarl.algorithms.m3fppo import (  # noqa: E402
    FastTanh,
    M3FCAlgorithm,
    M3FPPOTorchLearner,
    M3FPPOTorchRLModule,
    ReferenceMinibatches,
    m3fppo_config,
    rllib18_value_loss,
)
from m3fmarl.m3fc.sampler import M3FCSampler  # noqa: E402
from m3fmarl.sampling import iteration_seeds  # noqa: E402

TINY = dict(train_batch_size=1600, minibatch_size=400, num_epochs=2, num_envs_per_env_runner=8)


# --- pure functions --------------------------------------------------------------------------


def test_rllib18_value_loss_hand_case() -> None:
    # per column: V = V_old (clip inactive); V moved +20 towards R (V_clip = +10 is further
    # from R → clipped branch wins, zero gradient); V moved +5 (inside the clip); V moved −30
    # away from R = 0 (V_clip = −10 is closer → unclipped wins, full gradient); V_old 50 → V 30 with R = 0
    # (V_clip = 40 is further → clipped branch wins)
    v = torch.tensor([0.0, 20.0, 5.0, -30.0, 30.0], requires_grad=True)
    v_old = torch.tensor([0.0, 0.0, 0.0, 0.0, 50.0])
    r = torch.tensor([100.0, 100.0, -100.0, 0.0, 0.0])
    loss = rllib18_value_loss(v, v_old, r, 10.0)
    expected = torch.tensor([10000.0, 8100.0, 11025.0, 900.0, 1600.0])
    torch.testing.assert_close(loss, expected)
    # where the clipped branch is the max, the gradient w.r.t. V vanishes (PPO2-style clip)
    loss.sum().backward()
    torch.testing.assert_close(v.grad, torch.tensor([-200.0, 0.0, 210.0, -60.0, 0.0]))
    # the formula, written out once more
    v_clip = v_old + torch.clamp(v.detach() - v_old, -10.0, 10.0)
    torch.testing.assert_close(loss.detach(), torch.maximum((v.detach() - r) ** 2, (v_clip - r) ** 2))
    # no clip → plain squared error
    torch.testing.assert_close(rllib18_value_loss(v.detach(), v_old, r, None), (v.detach() - r) ** 2)
    torch.testing.assert_close(rllib18_value_loss(v.detach(), v_old, r, math.inf), (v.detach() - r) ** 2)


def test_config_settings() -> None:
    cfg = m3fppo_config("beach-bar", 300)
    assert (cfg.gamma, cfg.lambda_, cfg.lr, cfg.clip_param) == (0.99, 1.0, 5e-5, 0.2)
    assert cfg.use_kl_loss and (cfg.kl_coeff, cfg.kl_target) == (0.2, 0.03)
    assert (cfg.entropy_coeff, cfg.vf_loss_coeff, cfg.grad_clip) == (0.0, 1.0, None)
    assert math.isinf(cfg.vf_clip_param) and cfg.learner_config_dict["rllib18_vf_clip_param"] == 10.0
    assert (cfg.train_batch_size_per_learner, cfg.minibatch_size, cfg.num_epochs) == (24000, 4000, 8)
    assert cfg.algo_class is M3FCAlgorithm and cfg.explore
    # 120 copies × 200 steps: every copy plays whole episodes, as the reference's 200-step fragments
    assert cfg.learner_config_dict["m3fc_sampler"] == {"num_envs": 120, "fragment": None}
    assert cfg.normalize_actions and not cfg.clip_actions
    assert cfg.env == "m3fmarl/BeachBar-v0" and cfg.env_config == {"num_minors": 300, "variant": "reference"}
    assert cfg.learner_class is M3FPPOTorchLearner
    assert cfg.enable_rl_module_and_learner and cfg.enable_env_runner_and_connector_v2
    mc = cfg.rl_module_spec.model_config
    assert mc["fcnet_hiddens"] == [256, 256] and mc["fcnet_activation"] == "tanh"
    assert mc["vf_share_layers"] is False and mc["free_log_std"] is False
    paper = m3fppo_config("foraging", 20, "paper", lr=1e-4, env_config={"execution": "centralized"})
    assert (paper.kl_coeff, paper.kl_target, paper.lr) == (0.03, 0.01, 1e-4)
    assert paper.env == "m3fmarl/Foraging-v0" and paper.env_config["variant"] == "paper"
    with pytest.raises(ValueError, match="variant"):
        m3fppo_config("beach-bar", 5, "code")
    with pytest.raises(ValueError, match="unknown problem"):
        m3fppo_config("beach-ball", 5)
    with pytest.raises(ValueError, match="centralized"):
        m3fppo_config("beach-bar", 5, env_config={"execution": "decentralized"})
    with pytest.raises(TypeError, match="no_such_setting"):
        m3fppo_config("beach-bar", 5, no_such_setting=1)


def test_module_is_the_reference_network() -> None:
    """Separate 45→256→256 tanh actor and critic, linear heads (255 = 125 means + 125 log-stds
    + 5 logits, and 1), normc initialisation with zero biases; initial log-stds ≈ 0."""
    import gymnasium as gym

    cfg = m3fppo_config("beach-bar", 5)
    venv = gym.make_vec("m3fmarl/BeachBar-v0", num_envs=2, vectorization_mode="vector_entry_point", num_minors=5,
                        variant="reference")
    spec = cfg.rl_module_spec
    spec.observation_space, spec.action_space = venv.single_observation_space, venv.single_action_space
    torch.manual_seed(0)
    module = spec.build()
    assert isinstance(module, M3FPPOTorchRLModule)
    actor = [m for m in module.encoder.actor_encoder.modules() if isinstance(m, torch.nn.Linear)]
    critic = [m for m in module.encoder.critic_encoder.modules() if isinstance(m, torch.nn.Linear)]
    pi = [m for m in module.pi.modules() if isinstance(m, torch.nn.Linear)]
    vf = [m for m in module.vf.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in actor] == [(45, 256), (256, 256)]
    assert [(m.in_features, m.out_features) for m in critic] == [(45, 256), (256, 256)]
    assert [(m.in_features, m.out_features) for m in pi] == [(256, 255)]
    assert [(m.in_features, m.out_features) for m in vf] == [(256, 1)]
    assert sum(isinstance(m, FastTanh) for m in module.encoder.actor_encoder.modules()) == 2
    assert not any(isinstance(m, torch.nn.Tanh) for m in module.modules())
    for layer, norm in [(m, 1.0) for m in actor + critic] + [(m, 0.01) for m in pi + vf]:
        torch.testing.assert_close(layer.weight.norm(dim=1), torch.full((layer.out_features,), norm))
        assert torch.count_nonzero(layer.bias) == 0
    obs, _ = venv.reset(seed=0)
    with torch.no_grad():
        out = module.forward_exploration({Columns.OBS: torch.as_tensor(obs, dtype=torch.float32)})
    logits = out[Columns.ACTION_DIST_INPUTS]
    assert logits.shape == (2, 255) and float(logits.abs().max()) < 0.1  # means, log-stds ≈ 0


# --- real RLlib run --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def algo(ray_session):
    algorithm = m3fppo_config("beach-bar", 5, seed=3, **TINY).build_algo()
    try:
        yield algorithm
    finally:
        algorithm.stop()


@pytest.fixture(scope="module")
def two_results(algo):
    return algo.train(), algo.train()


@pytest.mark.slow
def test_algorithm_samples_with_the_batched_sampler(algo) -> None:
    sampler = algo._sampler
    assert isinstance(sampler, M3FCSampler) and sampler.fragment is None
    assert sampler.num_envs == 8 and sampler.problem.num_minors == 5 and sampler.problem.variant == "reference"
    # the module it acts with is the learner's (no stale env-runner copy)
    assert algo.get_module() is algo.learner_group._learner.module["default_policy"]


@pytest.mark.slow
def test_train_twice(algo, two_results) -> None:
    r1, r2 = two_results
    assert r1["env_runners"]["num_env_steps_sampled"] == 1600
    assert r2["num_env_steps_sampled_lifetime"] - r1["num_env_steps_sampled_lifetime"] == 1600
    # 200 steps per copy per iteration and T = 200: 8 whole episodes per iteration
    assert r1["env_runners"]["num_episodes"] == 8 and r2["env_runners"]["num_episodes"] == 8
    for key in ("episode_return_mean", "episode_return_min", "episode_return_max"):
        assert np.isfinite(r2["env_runners"][key])
    learner = r2["learners"]["default_policy"]
    for key in ("policy_loss", "vf_loss", "vf_loss_unclipped", "entropy", "mean_kl_loss", "mean_kl_update"):
        assert np.isfinite(learner[key]), key
    # adaptive KL (RLlib-1.8 rule on the mean KL over all minibatches of each update)
    coeff = 0.2
    for r in (r1, r2):
        kl = r["learners"]["default_policy"]["mean_kl_update"]
        coeff *= 1.5 if kl > 2 * 0.03 else 0.5 if kl < 0.5 * 0.03 else 1.0
    assert math.isclose(learner["curr_kl_coeff"], coeff, rel_tol=1e-6)
    for k, v in r2["timers"].items():
        assert np.isfinite(v), k
    assert algo.iterations_done == 2


@pytest.mark.slow
def test_reference_variant_trains_on_exactly_the_sampled_steps(algo, two_results) -> None:
    """``reference`` minibatching: per epoch every sampled step once — the module steps trained
    are epochs × batch exactly."""
    assert algo.config.learner_config_dict["minibatching"] == "reference"
    r1, _ = two_results
    epochs, batch = algo.config.num_epochs, algo.config.train_batch_size_per_learner
    assert r1["learners"]["default_policy"]["num_module_steps_trained"] == epochs * batch


@pytest.fixture(scope="module")
def spied_batch(algo, two_results):
    """One sampler rollout (8 copies × 200 steps, one whole episode each) with the actions the
    simulator received recorded."""
    sampler = algo._sampler
    core = sampler.core
    received = []
    original = core.advance

    def spy(state, xi, major, rng):
        received.append((np.array(xi), np.array(major)))
        return original(state, xi, major, rng)

    core.advance = spy
    try:
        torch.manual_seed(0)
        sampler.reset(11)
        batch, stats = sampler.sample(algo.get_module().unwrapped(), 200)
    finally:
        del core.advance
    return batch, stats, received


@pytest.mark.slow
def test_env_gets_clipped_actions_batch_keeps_the_sample(spied_batch) -> None:
    batch, stats, received = spied_batch
    assert len(received) == 200 and stats.env_steps == 1600 and len(stats.episode_returns) == 8
    xi, major = batch[Columns.ACTIONS]
    assert xi.shape == (1600, 125) and major.shape == (1600,)
    stored_xi = xi.reshape(8, 200, 125).swapaxes(0, 1)  # rows are copy-major
    stored_major = major.reshape(8, 200).T
    sent_xi = np.stack([r[0] for r in received])
    sent_major = np.stack([r[1] for r in received])
    assert np.abs(stored_xi).max() > 1.0  # std ≈ 1 at initialisation: many samples outside [-1, 1]
    assert np.abs(sent_xi).max() <= 1.0
    np.testing.assert_allclose(sent_xi, np.clip(stored_xi, -1.0, 1.0), atol=1e-6)
    np.testing.assert_array_equal(sent_major, stored_major)


@pytest.mark.slow
def test_batch_has_old_values_gae_targets_and_the_sampling_log_probs(algo, spied_batch) -> None:
    batch, stats, _ = spied_batch
    learner = algo.learner_group._learner
    module = learner.module["default_policy"].unwrapped()
    tb = {k: (tuple(torch.from_numpy(x) for x in v) if isinstance(v, tuple) else torch.from_numpy(v))
          for k, v in batch.items()}
    with torch.no_grad():
        values = module.compute_values(tb).double()
        fwd = module.forward_train(tb)
        dist = module.get_train_action_dist_cls().from_logits(fwd[Columns.ACTION_DIST_INPUTS])
        logp = dist.logp(tb[Columns.ACTIONS])
    # V_old of the batch = the critic's values with the sampling weights
    torch.testing.assert_close(tb[Columns.VF_PREDS].double(), values, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(tb[Columns.ACTION_LOGP], logp, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(tb[Columns.ACTION_DIST_INPUTS], fwd[Columns.ACTION_DIST_INPUTS], rtol=1e-5, atol=1e-5)
    # value targets R = A + V_old (the recursion itself: test_sampler_gae_equals_the_recursion…)
    adv = batch[Columns.ADVANTAGES].astype(np.float64).reshape(8, 200)
    targets = batch[Columns.VALUE_TARGETS].astype(np.float64).reshape(8, 200)
    v = values.numpy().reshape(8, 200)
    np.testing.assert_allclose(targets, adv + v, rtol=1e-5, atol=1e-3)
    assert len(stats.episode_returns) == 8  # one whole episode per copy
    # at the start of an update (θ = θ_old): ratio 1, KL 0, standardised advantages have mean 0,
    # V = V_old (clip inactive) → total loss = mean of (V − R)²
    from m3fmarl.sampling import standardize

    tb[Columns.ADVANTAGES] = torch.from_numpy(standardize(batch[Columns.ADVANTAGES]))
    with torch.no_grad():
        loss = learner.compute_loss_for_module(
            module_id="default_policy", config=learner.config.get_config_for_module("default_policy"),
            batch=tb, fwd_out=fwd,
        )
    expected = ((values - tb[Columns.VALUE_TARGETS].double()) ** 2).mean()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-4, atol=1e-3)


@pytest.mark.slow
def test_sampler_gae_equals_the_recursion_on_the_rewards(algo) -> None:
    """The sampler's advantages on one copy equal GAE computed by hand from the simulator's
    rewards and the critic (γ 0.99, λ 1): a rollout replayed with the same seeds."""
    sampler = M3FCSampler(algo._sampler.core, 2, gamma=0.99, lambda_=1.0)
    module = algo.get_module().unwrapped()
    rewards = []
    original = sampler.core.advance

    def spy(state, xi, major, rng):
        out = original(state, xi, major, rng)
        rewards.append(out[1].copy())
        return out

    sampler.core.advance = spy
    try:
        torch.manual_seed(4)
        sampler.reset(3)
        batch, _ = sampler.sample(module, 230)  # one episode of 200 and a 30-step piece
    finally:
        del sampler.core.advance
    r = np.stack(rewards).T  # (2, 230)
    obs = torch.from_numpy(batch[Columns.OBS])
    with torch.no_grad():
        v = module.compute_values({Columns.OBS: obs}).double().numpy().reshape(2, 230)
    adv = batch[Columns.ADVANTAGES].astype(np.float64).reshape(2, 230)
    # inside the first episode (t < 199): δ_t + γ A_{t+1}
    np.testing.assert_allclose(adv[:, :198], (r[:, :198] + 0.99 * v[:, 1:199] - v[:, :198]) + 0.99 * adv[:, 1:199],
                               rtol=1e-4, atol=1e-2)
    # the second episode's piece starts fresh: its first observation is a reset, not a successor
    np.testing.assert_allclose(adv[:, 200:228], (r[:, 200:228] + 0.99 * v[:, 201:229] - v[:, 200:228])
                               + 0.99 * adv[:, 201:229], rtol=1e-4, atol=1e-2)


@pytest.mark.slow
def test_sampler_continues_episodes_across_calls_and_restores_its_state(algo) -> None:
    module = algo.get_module().unwrapped()
    sampler = M3FCSampler(algo._sampler.core, 3)
    sampler.reset(9)
    _, first = sampler.sample(module, 150)
    assert first.episode_returns == []  # T = 200: nothing ends in the first 150 steps
    saved = sampler.get_state()
    torch.manual_seed(1)
    batch, second = sampler.sample(module, 150)
    assert len(second.episode_returns) == 3  # the episodes started in the first call end at 200
    twin = M3FCSampler(algo._sampler.core, 3)
    twin.set_state(saved)
    torch.manual_seed(1)
    again, third = twin.sample(module, 150)
    assert third.episode_returns == second.episode_returns
    for key in (Columns.OBS, Columns.ADVANTAGES, Columns.ACTION_LOGP):
        np.testing.assert_array_equal(again[key], batch[key])


@pytest.mark.slow
def test_iteration_seeds_are_distinct_and_reproducible() -> None:
    a, b = iteration_seeds(0, 0), iteration_seeds(0, 1)
    assert a == iteration_seeds(0, 0) and a != b and iteration_seeds(1, 0) != a
    assert len(set(a.values())) == len(a)


@pytest.mark.slow
def test_checkpoint_restores_the_kl_coefficient(algo, two_results, tmp_path) -> None:
    coeff = float(algo.learner_group._learner.curr_kl_coeffs_per_module["default_policy"])
    assert coeff != 0.2  # adapted twice
    algo.save_to_path(str(tmp_path))
    restored = Algorithm.from_checkpoint(str(tmp_path))
    try:
        learner = restored.learner_group._learner
        assert isinstance(learner, M3FPPOTorchLearner)
        assert math.isclose(float(learner.curr_kl_coeffs_per_module["default_policy"]), coeff, rel_tol=1e-6)
        assert restored.iteration == algo.iteration
        assert restored.iterations_done == algo.iterations_done == 2
        assert list(restored._sampler.recent_returns) == list(algo._sampler.recent_returns)
    finally:
        restored.stop()


def test_fast_tanh_equals_tanh_in_value_and_gradient() -> None:
    x = torch.randn(300, 17, dtype=torch.float32, requires_grad=True)
    y = FastTanh()(x)
    torch.testing.assert_close(y, torch.tanh(x), rtol=0, atol=2e-7)
    (g,) = torch.autograd.grad((y * torch.arange(17.0)).sum(), x)
    x2 = x.detach().clone().requires_grad_(True)
    (g2,) = torch.autograd.grad((torch.tanh(x2) * torch.arange(17.0)).sum(), x2)
    torch.testing.assert_close(g, g2, rtol=1e-4, atol=1e-5)  # y differs from torch.tanh by ≤ 1 ulp


def test_reference_minibatches_are_permuted_contiguous_slices_without_masked_rows() -> None:
    """Spec §1.1 item 6: 8 epochs × 6 contiguous slices of 4 000 sampled rows = 48 steps; the
    connector's artificial bootstrap rows (loss mask false) are not part of any slice."""
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    rows = 24_000 + 120  # 120 artificial rows, one after each episode chunk
    index = torch.arange(rows)
    mask = torch.ones(rows, dtype=torch.bool)
    mask[torch.arange(120) * 201 + 200] = False
    columns = {"i": index, Columns.LOSS_MASK: mask, "actions": (2 * index, 3 * index[:, None])}  # Tuple space
    batch = MultiAgentBatch({"default_policy": SampleBatch(columns)}, env_steps=24_000)
    it = ReferenceMinibatches(batch, num_epochs=8, minibatch_size=4_000, rng=np.random.default_rng(0))
    mbs = []
    for mb in it:
        b = mb.policy_batches["default_policy"]
        assert torch.equal(b["actions"][0], 2 * b["i"]) and torch.equal(b["actions"][1][:, 0], 3 * b["i"])
        mbs.append(b["i"])
    assert len(mbs) == 48 and all(len(m) == 4_000 for m in mbs)
    real = index[mask]
    for epoch in range(8):
        seen = torch.cat(mbs[epoch * 6:(epoch + 1) * 6])
        assert torch.equal(torch.sort(seen).values, real)  # every sampled row once per epoch
        for m in mbs[epoch * 6:(epoch + 1) * 6]:
            k = int((real == m[0]).nonzero())
            assert k % 4_000 == 0 and torch.equal(m, real[k:k + 4_000])  # a contiguous slice
    orders = [tuple(int((real == m[0]).nonzero()) // 4_000 for m in mbs[e * 6:(e + 1) * 6]) for e in range(8)]
    assert len(set(orders)) > 1  # the slice order is permuted per epoch
