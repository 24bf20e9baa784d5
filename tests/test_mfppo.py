"""MF-PPO's modules, sampling and minibatches, without training (the training tests are in
tests/test_ippo.py, parametrised over every multi-agent algorithm, and below under ``slow``).

* permutation invariance as a property: permuting the minors permutes their action
  distributions and leaves every value and the major's outputs unchanged;
* the same weights act at N = 5 and N = 50 (and evaluate there);
* the learner's row forward (population table + ``population_index``) gives exactly what the
  sampler stored (action-distribution inputs and V), so PPO's ratio starts at 1;
* minibatches hold whole populations and visit every row once per epoch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from m3fmarl.config import MFPPOSettings
from m3fmarl.multiagent import MultiAgentCore
from m3fmarl.sampling import ACTION_DIST_INPUTS, OBS, VF_PREDS
from marl_baselines.mfppo import POPULATION_INDEX, PopulationMinibatches, module_specs
from marl_baselines.sampler import BatchedSampler

from .conftest import PROBLEM_NAMES


def _modules(problem: str, n: int, seed: int = 0, **settings) -> tuple[MultiAgentCore, dict]:
    core = MultiAgentCore(problem, n, "reference")
    torch.manual_seed(seed)
    specs = module_specs(core, MFPPOSettings(**settings))
    return core, {mid: spec.build() for mid, spec in specs.items()}


@pytest.mark.parametrize("problem", PROBLEM_NAMES)
def test_population_entries_are_the_minors_histogram(problem: str) -> None:
    """``agent_population`` names the minors' histogram: each copy's entries sum to its scale
    (1; Beach's reference row-union histogram counts a minor in two rows)."""
    core = MultiAgentCore(problem, 7, "paper")
    _, obs = core.reset(4, np.random.default_rng(0))
    idx = core.problem.agent_population()
    scale = getattr(core.problem.switches, "marl_hist_scale", 1.0)
    np.testing.assert_allclose(obs[:, :, idx].sum(-1), scale, rtol=1e-5)
    own, shared = core.problem.agent_layout()
    assert set(idx) <= set(shared) and not set(idx) & set(own)


@settings(max_examples=15, deadline=None)
@given(problem=st.sampled_from(PROBLEM_NAMES), form=st.sampled_from(["pooled", "pairwise"]),
       seed=st.integers(0, 2**31 - 1))
def test_permuting_the_minors_permutes_their_outputs(problem: str, form: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    core, modules = _modules(problem, 6, seed=seed % 1000, deepset_form=form, deepset_hidden=32)
    _, obs = core.reset(3, rng)
    perm = rng.permutation(core.num_minors)
    order = np.concatenate([np.arange(core.minor_offset), core.minor_offset + perm])
    permuted = obs[:, order]
    for mid, module in modules.items():
        sel = slice(core.minor_offset, core.num_agents) if mid == "minor" else slice(0, 1)
        k = sel.stop - sel.start
        with torch.no_grad():
            a = module.joint_action_inputs(torch.from_numpy(obs), sel).numpy().reshape(3, k, -1)
            a_p = module.joint_action_inputs(torch.from_numpy(permuted), sel).numpy().reshape(3, k, -1)
            v = module.joint_values(torch.from_numpy(obs), sel).numpy().reshape(3, k)
            v_p = module.joint_values(torch.from_numpy(permuted), sel).numpy().reshape(3, k)
        if mid == "minor":
            a, v = a[:, perm], v[:, perm]
        np.testing.assert_allclose(a_p, a, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(v_p, v, rtol=1e-4, atol=1e-5)


def test_the_same_weights_act_at_any_n() -> None:
    from marl_baselines.evaluate import MARLPolicy, evaluate_marl

    core, modules = _modules("formation", 5)
    for n in (5, 50):
        other = MultiAgentCore("formation", n, "reference")
        _, obs = other.reset(2, np.random.default_rng(n))
        with torch.no_grad():
            out = modules["minor"].joint_action_inputs(torch.from_numpy(obs), slice(1, n + 1))
        assert out.shape == (2 * n, 4) and torch.isfinite(out).all()
    policy = MARLPolicy(modules=modules, algo="mfppo", problem="formation", variant="reference", num_minors=5)
    results = evaluate_marl(policy, num_minors=[5, 50], episodes=2, num_envs=2)
    assert [r.num_minors for r in results] == [5, 50] and all(np.isfinite(r.mean) for r in results)


@pytest.mark.parametrize("problem", ["beach-bar", "potential", "two-gaussians"])
def test_learner_rows_reproduce_what_the_sampler_stored(problem: str) -> None:
    core, modules = _modules(problem, 4)
    sampler = BatchedSampler(core, 3, seed=0)
    batches, stats = sampler.sample(modules, 7)
    assert stats.populations.shape == (7 * 3, 4, core.layout.own.size)
    for mid, batch in batches.items():
        module = modules[mid]
        k = 4 if mid == "minor" else 1
        assert np.bincount(batch[POPULATION_INDEX]).tolist() == [k] * 21
        module.set_populations(stats.populations)
        rows = {OBS: torch.from_numpy(batch[OBS]), POPULATION_INDEX: torch.from_numpy(batch[POPULATION_INDEX])}
        with torch.no_grad():
            inputs = module.forward_train(rows)[ACTION_DIST_INPUTS].numpy()
            values = module.compute_values(rows).numpy()
        module.set_populations(None)
        np.testing.assert_allclose(inputs, batch[ACTION_DIST_INPUTS], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(values, batch[VF_PREDS], rtol=1e-5, atol=1e-5)
        with pytest.raises(RuntimeError, match="set_populations"):
            module.forward_train(rows)


def test_minibatches_hold_whole_populations_and_cover_every_row() -> None:
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    index = np.repeat(np.arange(30), 4)
    np.random.default_rng(0).shuffle(index)
    batch = MultiAgentBatch({"minor": SampleBatch({POPULATION_INDEX: index, "row": np.arange(120)})}, 30)
    mbs = list(PopulationMinibatches(batch, num_epochs=2, minibatch_size=40, rng=np.random.default_rng(1)))
    assert len(mbs) == 2 * 3
    for epoch in (mbs[:3], mbs[3:]):
        seen = np.concatenate([mb.policy_batches["minor"]["row"] for mb in epoch])
        assert sorted(seen) == list(range(120))
        for mb in epoch:
            counts = np.bincount(mb.policy_batches["minor"][POPULATION_INDEX])
            assert set(counts[counts > 0]) == {4} and len(mb.policy_batches["minor"]) == 40


# --- training (slow: real RLlib) -----------------------------------------------------------------

LEARN_SETTINGS = MFPPOSettings(lr=3e-3, train_batch_size=2000, minibatch_size=500, num_epochs=8,
                               num_envs_per_env_runner=20)
"""IPPO's learning-test settings (tests/test_ippo.py).  Measured (reference, Beach bar N = 5, seed 0,
45 iterations, 2 cores shared with another training run): default 128-unit DeepSet −634.7 ± 2.5
(300 episodes; −650.1 ± 2.0 before equal cells were evaluated once, which changes the float
rounding; 112 s of training) against ξ = 0 −681.9 ± 3.4 and uniform −693.2 ± 1.8 (margin ≥ 26
over the CIs); with 256 units −641.0 ± 2.2 (341 s); IPPO reaches −628.0 ± 2.2 with the same
settings."""


@pytest.mark.slow
def test_mfppo_learns_beach_bar(tmp_path, ray_session) -> None:
    from m3fmarl.train import RunSpec, train

    from .conftest import check_marl_beats_fixed_policies

    run = train(RunSpec("mfppo", "beach-bar", 5, "reference", seed=0, iterations=45), tmp_path / "run",
                settings=LEARN_SETTINGS, checkpoint_every=45, log=lambda line: None)
    check_marl_beats_fixed_policies("MF-PPO", run, "beach-bar", 5)


@pytest.mark.slow
def test_same_seed_same_run_and_resume_continues_it_exactly(tmp_path, ray_session) -> None:
    from m3fmarl.train import RunSpec

    from .conftest import check_same_seed_and_exact_resume

    tiny = MFPPOSettings(lr=1e-3, train_batch_size=200, minibatch_size=100, num_epochs=2, num_envs_per_env_runner=10)
    check_same_seed_and_exact_resume(RunSpec("mfppo", "foraging", 3, "reference", seed=2, iterations=3), tiny,
                                     tmp_path)


@pytest.mark.parametrize("form", ["pooled", "pairwise"])
def test_equal_own_states_are_evaluated_once_with_the_same_result(form: str) -> None:
    """Beach bar: acting and values from distinct (copy, cell) rows and a population given as its
    distinct cells with frequencies equal the per-agent computation."""
    core, modules = _modules("beach-bar", 40, deepset_form=form, deepset_hidden=32)
    state, obs = core.reset(3, np.random.default_rng(2))
    keys = core.own_keys(state)
    whole = torch.from_numpy(obs)
    for mid, module in modules.items():
        sel = slice(1, core.num_agents) if mid == "minor" else slice(0, 1)
        with torch.no_grad():
            torch.testing.assert_close(module.joint_action_inputs(whole, sel, keys, core.num_own_keys),
                                       module.joint_action_inputs(whole, sel), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(module.joint_values(whole, sel, keys, core.num_own_keys),
                                       module.joint_values(whole, sel), rtol=1e-5, atol=1e-6)
