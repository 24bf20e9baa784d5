"""M3FA2C on RLlib 2.60 (new API stack): the A2C loss, the config, and a real tiny run.

The loss tests build the learner directly (``config.build_learner``, no Ray) and feed it a
hand-made batch.  The run tests (marked slow) use real RLlib, no mocks: Beach bar N = 5, 8 vector
copies × 40 steps (two rollout fragments of 20 each) = train batch 320, sampling with
:class:`~m3fmarl.m3fc.sampler.M3FCSampler` in the driver; a few seconds plus Ray start-up.

No learning-curve test: on Potential and Beach bar N = 5 with 20–40 iterations of 2 000 steps
(≤ 18 s), even with lr raised to 1e-3 … 1e-2, the training return showed no trend above its
iteration-to-iteration noise (one update per iteration), so such a test could not be reliable in
under a minute.  The descent test below checks the direction of the update instead.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("ray.rllib")
torch = pytest.importorskip("torch")

import gymnasium as gym  # noqa: E402
from ray.rllib.core.columns import Columns  # noqa: E402

import m3fmarl.algorithms as algorithms  # noqa: E402
from m3fmarl.algorithms.m3fa2c import LOSS_REDUCTION_KEY, M3FA2CTorchLearner, m3fa2c_config  # noqa: E402
from m3fmarl.algorithms.m3fppo import M3FPPOTorchLearner, M3FPPOTorchRLModule  # noqa: E402

MID = "default_policy"
TINY = dict(train_batch_size=320, num_envs_per_env_runner=8)  # 8 copies × 2 fragments of 20 steps


# --- config ----------------------------------------------------------------------------------


def test_config_has_the_a2c_settings() -> None:
    cfg = m3fa2c_config("beach-bar", 300)
    assert cfg.learner_class is M3FA2CTorchLearner
    assert (cfg.num_epochs, cfg.minibatch_size, cfg.shuffle_batch_per_epoch) == (1, None, False)
    assert cfg.train_batch_size_per_learner == 24000
    assert not cfg.use_kl_loss
    assert math.isinf(cfg.clip_param) and math.isinf(cfg.vf_clip_param)
    assert (cfg.grad_clip, cfg.grad_clip_by) == (40.0, "global_norm")
    assert (cfg.gamma, cfg.lambda_, cfg.lr, cfg.vf_loss_coeff, cfg.entropy_coeff) == (0.99, 1.0, 5e-5, 1.0, 0.0)
    lcd = cfg.learner_config_dict
    assert lcd["standardize_advantages"] is False and lcd["rllib18_vf_clip_param"] is None
    assert lcd[LOSS_REDUCTION_KEY] == "sum"
    # sampling: fragments of 20 (RLlib-1.8 A2C), 120 copies → 10 fragments per copy per iteration
    assert lcd["m3fc_sampler"] == {"num_envs": 120, "fragment": 20} and cfg.explore
    assert cfg.normalize_actions and not cfg.clip_actions
    assert cfg.env == "m3fmarl/BeachBar-v0" and cfg.env_config == {"num_minors": 300, "variant": "reference"}
    assert cfg.rl_module_spec.module_class is M3FPPOTorchRLModule
    cfg.validate()
    # paper = reference for the algorithm; the variant still reaches the env
    paper = m3fa2c_config("foraging", 20, "paper")
    assert paper.env_config["variant"] == "paper" and not paper.use_kl_loss and paper.grad_clip == 40.0
    assert paper.learner_config_dict == lcd
    # overrides win, learner_config_dict is merged
    o = m3fa2c_config("potential", 5, lr=1e-4, learner_config_dict={LOSS_REDUCTION_KEY: "mean"})
    assert o.lr == 1e-4 and o.learner_config_dict["standardize_advantages"] is False
    assert o.learner_config_dict[LOSS_REDUCTION_KEY] == "mean"
    with pytest.raises(TypeError, match="no_such_setting"):
        m3fa2c_config("beach-bar", 5, no_such_setting=1)
    with pytest.raises(ValueError, match="multiple"):
        m3fa2c_config("beach-bar", 5, num_envs_per_env_runner=64)  # 24000 / (20·64) not whole
    assert m3fa2c_config("beach-bar", 5, num_envs_per_env_runner=64, rollout_fragment_length=375) \
        .learner_config_dict["m3fc_sampler"] == {"num_envs": 64, "fragment": 375}
    assert algorithms.m3fa2c_config is m3fa2c_config


# --- loss on a hand-made batch ----------------------------------------------------------------


@pytest.fixture()
def learner_and_batch():
    """A built A2C learner (Beach bar N = 5 spaces) and a 64-row hand-made batch with 6 masked rows,
    Box actions partly outside [−1, 1], advantages and targets of the sizes seen in training."""
    venv = gym.make_vec("m3fmarl/BeachBar-v0", num_envs=2, vectorization_mode="vector_entry_point",
                        num_minors=5, variant="reference")
    torch.manual_seed(0)
    learner = m3fa2c_config("beach-bar", 5).build_learner(
        spaces={MID: (venv.single_observation_space, venv.single_action_space)}
    )
    module = learner.module[MID]
    gen = torch.Generator().manual_seed(1)
    n = 64
    obs = torch.rand(n, 45, generator=gen)
    with torch.no_grad():
        logits = module.forward_exploration({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
        actions = module.get_exploration_action_dist_cls().from_logits(logits).sample()
    actions = (actions[0] * 1.5, actions[1])  # wider than the policy: more samples outside [−1, 1]
    assert float(actions[0].abs().max()) > 1.0
    mask = torch.ones(n, dtype=torch.bool)
    mask[[7, 19, 20, 40, 41, 63]] = False
    batch = {
        Columns.OBS: obs,
        Columns.ACTIONS: actions,
        Columns.ADVANTAGES: 30.0 * torch.randn(n, generator=gen),
        Columns.VALUE_TARGETS: -100.0 + 20.0 * torch.randn(n, generator=gen),
        Columns.LOSS_MASK: mask,
    }
    return learner, batch


def _formula(module, batch):
    """−Σ A·log π(a|o) + ½ Σ (V − R)² over the unmasked rows, with log π computed by hand from the
    head outputs: 125 Gaussian means, 125 log-stds, 5 categorical logits."""
    logits = module.forward_train(batch)[Columns.ACTION_DIST_INPUTS]
    mean, log_std, cat = logits[:, :125], logits[:, 125:250], logits[:, 250:]
    a_box, a_major = batch[Columns.ACTIONS]
    logp_box = (-0.5 * ((a_box - mean) / torch.exp(log_std)) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    logp_major = torch.log_softmax(cat, dim=-1).gather(-1, a_major.long().unsqueeze(-1)).squeeze(-1)
    logp = logp_box + logp_major
    values = module.compute_values(batch)
    m = batch[Columns.LOSS_MASK]
    policy = -(batch[Columns.ADVANTAGES][m] * logp[m]).sum()
    value = 0.5 * ((values[m] - batch[Columns.VALUE_TARGETS][m]) ** 2).sum()
    return policy + value, logp, policy, value


def _grads(module, loss):
    module.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad.detach().clone() for name, p in module.named_parameters()}


def _learner_loss(learner, batch, **kw):
    module = learner.module[MID]
    return learner.compute_loss_for_module(
        module_id=MID, config=learner.config.get_config_for_module(MID), batch=batch,
        fwd_out=module.forward_train(batch), **kw,
    )


def test_loss_and_gradient_equal_the_a2c_formula(learner_and_batch) -> None:
    learner, batch = learner_and_batch
    module = learner.module[MID]
    expected, logp, _, _ = _formula(module, batch)
    # the hand-written log-prob is the module's action distribution's
    dist = module.get_train_action_dist_cls().from_logits(module.forward_train(batch)[Columns.ACTION_DIST_INPUTS])
    torch.testing.assert_close(logp, dist.logp(batch[Columns.ACTIONS]), rtol=1e-5, atol=1e-4)

    loss = _learner_loss(learner, batch)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-2)
    got = _grads(module, _learner_loss(learner, batch))
    want = _grads(module, _formula(module, batch)[0])
    assert set(got) == set(want) and len(got) == 12  # 2 × (2 encoder layers) + 2 heads, weights + biases
    for name in want:
        scale = float(want[name].abs().max())
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-4 * scale, msg=name)
    # masked rows do not count: changing them leaves the loss unchanged
    changed = dict(batch)
    changed[Columns.ADVANTAGES] = batch[Columns.ADVANTAGES].clone()
    changed[Columns.ADVANTAGES][~batch[Columns.LOSS_MASK]] = 1e6
    torch.testing.assert_close(_learner_loss(learner, changed), loss)
    # "mean" reduction = sum / number of real steps
    learner.config.learner_config_dict[LOSS_REDUCTION_KEY] = "mean"
    torch.testing.assert_close(_learner_loss(learner, batch), expected / 58, rtol=1e-5, atol=1e-4)


def test_ppo_surrogate_gives_the_same_gradient_at_theta_old(learner_and_batch) -> None:
    """The equivalence the A2C loss does not rely on, checked: at θ = θ_old (ratio 1, clip range
    inf) PPO's mean loss has the A2C policy gradient / n on the actor and 2·(A2C value gradient) / n
    on the separate critic (mean (V − R)² vs ½ Σ (V − R)²)."""
    learner, batch = learner_and_batch
    module = learner.module[MID]
    with torch.no_grad():
        fwd = module.forward_train(batch)
        dist = module.get_train_action_dist_cls().from_logits(fwd[Columns.ACTION_DIST_INPUTS])
        ppo_batch = {
            **batch,
            Columns.ACTION_LOGP: dist.logp(batch[Columns.ACTIONS]),
            Columns.ACTION_DIST_INPUTS: fwd[Columns.ACTION_DIST_INPUTS],
            Columns.VF_PREDS: module.compute_values(batch),
        }
    ppo_loss = M3FPPOTorchLearner.compute_loss_for_module(
        learner, module_id=MID, config=learner.config.get_config_for_module(MID), batch=ppo_batch,
        fwd_out=module.forward_train(ppo_batch),
    )
    n = int(batch[Columns.LOSS_MASK].sum())
    ppo = _grads(module, ppo_loss)
    a2c = _grads(module, _learner_loss(learner, batch))
    for name, g in a2c.items():
        actor = "actor_encoder" in name or name.startswith("pi.")
        critic = "critic_encoder" in name or name.startswith("vf.")
        assert actor != critic, name
        scale = n if actor else n / 2
        torch.testing.assert_close(ppo[name] * scale, g, rtol=1e-3, atol=1e-4 * float(g.abs().max()), msg=name)


def test_one_update_clips_the_global_norm_at_40_and_descends(learner_and_batch) -> None:
    learner, batch = learner_and_batch
    module = learner.module[MID]
    mb = {MID: batch}
    losses = learner.compute_losses(fwd_out=learner.module.forward_train(mb), batch=mb)
    raw = {k: v.clone() for k, v in learner.compute_gradients(losses).items()}
    raw_norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in raw.values())))
    assert raw_norm > 400.0  # summed over 58 steps: the clip is active
    clipped = learner.postprocess_gradients({k: v.clone() for k, v in raw.items()})
    norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in clipped.values())))
    assert norm == pytest.approx(40.0, rel=1e-5)
    for k in raw:  # same direction
        torch.testing.assert_close(clipped[k], raw[k] * (40.0 / raw_norm), rtol=1e-4, atol=1e-9)
    logged = learner.metrics.peek((MID, "gradients_default_optimizer_global_norm"))
    assert float(logged) == pytest.approx(raw_norm, rel=1e-4)

    with torch.no_grad():
        _, _, policy0, value0 = _formula(module, batch)
    learner.apply_gradients(clipped)
    with torch.no_grad():
        _, _, policy1, value1 = _formula(module, batch)
    # one Adam step of 5e-5 along the clipped gradient: Σ A·log π up, ½ Σ (V − R)² down
    assert float(policy1) < float(policy0) and float(value1) < float(value0)


def test_learner_refuses_non_a2c_settings() -> None:
    spaces = {MID: (gym.spaces.Box(-1.0, 1.0, (3,)), gym.spaces.Box(-1.0, 1.0, (2,)))}
    for bad in (dict(use_kl_loss=True), dict(num_epochs=2), dict(minibatch_size=100),
                dict(learner_config_dict={LOSS_REDUCTION_KEY: "max"})):
        with pytest.raises(ValueError):
            m3fa2c_config("potential", 5, **bad).build_learner(spaces=spaces)


# --- real RLlib run --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def algo(ray_session):
    algorithm = m3fa2c_config("beach-bar", 5, seed=3, **TINY).build_algo()
    try:
        yield algorithm
    finally:
        algorithm.stop()


@pytest.fixture(scope="module")
def two_iterations(algo):
    """Two ``train()`` calls, with the weights before and the Adam step counts after each (run
    before any test samples by hand, which would add to the runner's step metrics)."""
    learner = algo.learner_group._learner
    module = learner.module[MID]
    [(_, optimizer)] = learner.get_optimizers_for_module(MID)

    def adam_steps():
        return {float(optimizer.state[p]["step"]) for p in module.parameters()}

    before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    r1 = algo.train()
    after1 = {k: v.detach().clone() for k, v in module.state_dict().items()}
    steps1 = adam_steps()
    r2 = algo.train()
    return dict(r1=r1, r2=r2, before=before, after1=after1, steps1=steps1, steps2=adam_steps())


@pytest.mark.slow
def test_one_train_call_is_one_full_batch_gradient_step(algo, two_iterations) -> None:
    r1, r2 = two_iterations["r1"], two_iterations["r2"]
    assert r1["env_runners"]["num_env_steps_sampled"] == 320
    assert r1["num_env_steps_sampled_lifetime"] == 320
    assert r2["num_env_steps_sampled_lifetime"] == 640
    stats = r1["learners"][MID]
    # one minibatch holding the whole batch of 320 sampled steps
    assert stats["num_valid_steps"] == 320
    assert stats["num_module_steps_trained"] == 320
    assert r1["learners"]["__all_modules__"]["num_env_steps_trained"] == 320
    assert stats["weights_seq_no"] == 1 and r2["learners"][MID]["weights_seq_no"] == 2
    assert stats["gradients_default_optimizer_global_norm"] > 40.0  # logged before the clip
    for key in ("policy_loss", "vf_loss", "entropy", "total_loss"):
        assert np.isfinite(stats[key]), key
    assert "mean_kl_loss" not in stats
    # exactly one Adam step on every parameter per iteration
    assert two_iterations["steps1"] == {1.0} and two_iterations["steps2"] == {2.0}
    before, after = two_iterations["before"], two_iterations["after1"]
    delta = max(float((after[k] - before[k]).abs().max()) for k in before)
    assert 0.0 < delta <= 5e-5 * 1.001  # the first Adam step moves each weight by at most lr
    # the sampler acts with the learner's module
    assert algo.get_module() is algo.learner_group._learner.module[MID]


@pytest.mark.slow
def test_learner_batch_has_20_step_fragments_and_raw_advantages(algo, two_iterations) -> None:
    learner = algo.learner_group._learner
    module = learner.module[MID]
    sampler = algo._sampler
    assert sampler.fragment == 20
    rewards = []
    original = sampler.core.advance

    def spy(state, xi, major, rng):
        out = original(state, xi, major, rng)
        rewards.append(out[1].copy())
        return out

    sampler.core.advance = spy
    try:
        sampler.reset(5)
        columns, _ = sampler.sample(module.unwrapped(), 40)  # two fragments of 20 per copy
    finally:
        del sampler.core.advance
    batch = {k: (tuple(torch.from_numpy(x) for x in v) if isinstance(v, tuple) else torch.from_numpy(v))
             for k, v in columns.items()}
    assert batch[Columns.OBS].shape[0] == 8 * 40
    with torch.no_grad():
        values = module.compute_values(batch)
    r = torch.from_numpy(np.stack(rewards).T.reshape(-1)).float()  # copy-major like the rows
    # the first fragment of every copy ends at t = 19 and bootstraps from V of the next
    # observation (t = 20 of the same copy): R = r + γ·V(s')
    rows = np.arange(8) * 40 + 19
    torch.testing.assert_close(batch[Columns.VALUE_TARGETS][rows], r[rows] + 0.99 * values[rows + 1],
                               rtol=1e-5, atol=1e-3)
    # inside a fragment: R_t = r_t + γ·R_{t+1}
    inner = np.arange(8)[:, None] * 40 + np.arange(18)
    inner = inner.ravel()
    torch.testing.assert_close(batch[Columns.VALUE_TARGETS][inner],
                               r[inner] + 0.99 * batch[Columns.VALUE_TARGETS][inner + 1], rtol=1e-5, atol=1e-3)
    # advantages are not standardised: A = R − V exactly, and far from mean 0 / std 1
    adv = batch[Columns.ADVANTAGES]
    torch.testing.assert_close(adv, batch[Columns.VALUE_TARGETS] - values, rtol=1e-5, atol=1e-3)
    assert abs(float(adv.mean())) > 10.0
    # loss of the learner = the A2C formula on this batch
    with torch.no_grad():
        loss = learner.compute_loss_for_module(
            module_id=MID, config=learner.config.get_config_for_module(MID), batch=batch,
            fwd_out=module.forward_train(batch),
        )
        logp = module.get_train_action_dist_cls().from_logits(
            module.forward_train(batch)[Columns.ACTION_DIST_INPUTS]).logp(batch[Columns.ACTIONS])
    expected = -(adv * logp).sum() + 0.5 * ((values - batch[Columns.VALUE_TARGETS]) ** 2).sum()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1.0)
