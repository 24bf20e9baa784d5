"""RLlib algorithms driven by one of our batched samplers, with exactly resumable iterations.

:class:`BatchedTraining` is mixed into an RLlib ``Algorithm``: :class:`BatchedPPO` (RLlib's PPO)
is the algorithm under M3FPPO, M3FA2C (sampler: :class:`m3fmarl.m3fc.sampler.M3FCSampler`),
IPPO/MAPPO/MF-PPO (``marl_baselines.sampler``); ``marl_baselines.hmf.HMF`` mixes it into
RLlib's base ``Algorithm``.  A subclass provides ``_make_sampler`` and ``_sample_and_update``;
the mixin gives them:

* per-iteration seeds (:func:`m3fmarl.sampling.iteration_seeds`) for action sampling, RLlib's
  minibatch shuffling and the reference minibatch order, drawn from (``seed``, number of
  iterations done) at the start of every ``training_step``; the env copies start from the
  ``env`` seed of iteration 0 and continue their episodes from iteration to iteration;
* the number of iterations done and the sampler's state (the copies' states, the env
  generator, the last 100 finished training episode returns) as part of the algorithm state,
  so ``save_to_path``/``restore_from_path`` carry them;
* RLlib's sampling metrics (env steps, episodes, smoothed return) logged as its env runners do.

Together: the state saved after iteration k determines iteration k + 1 completely, so a run
resumed from that checkpoint gives the same progress rows and weights as an uninterrupted one
(tests/test_resume.py).  Sampling runs in the driver with the local learner's modules (no
weight sync), so ``num_learners`` must be 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.algorithms.ppo import PPO
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    EPISODE_RETURN_MAX,
    EPISODE_RETURN_MEAN,
    EPISODE_RETURN_MIN,
    NUM_AGENT_STEPS_SAMPLED,
    NUM_AGENT_STEPS_SAMPLED_LIFETIME,
    NUM_ENV_STEPS_SAMPLED,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    NUM_EPISODES,
    NUM_EPISODES_LIFETIME,
)

from m3fmarl.sampling import iteration_seeds, seed_globals
from m3fmarl.util import process_cpus

STATE_KEY = "m3f_sampling"
"""Algorithm-state key of the sampling bookkeeping (iterations done, recent returns)."""


def set_torch_threads(n: int | None = None) -> None:
    """``n`` intra-op torch threads; default the process's CPUs (:func:`m3fmarl.util.process_cpus`:
    1 unless the trial was given more — sampling and learning share the trial's cores, and thread
    contention made training 11× slower)."""
    import torch

    n = process_cpus() if n is None else n
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def on_environment_created(*, env_runner: Any = None, **kwargs: Any) -> None:
    """Env-runner callback (local or remote runner): torch inference on one thread."""
    set_torch_threads()


class BatchedTraining:
    """Mixin for an RLlib ``Algorithm`` whose ``training_step`` samples with a batched sampler
    (see module docstring); list it before the Algorithm class."""

    def setup(self, config: Any) -> None:
        super().setup(config)
        self._iterations_done = 0
        self._sampler = self._make_sampler()
        self._sampler.reset(iteration_seeds(int(self.config.seed or 0), 0)["env"])

    # --- for subclasses ----------------------------------------------------------------------
    def _make_sampler(self) -> Any:
        """The batched sampler (with ``reset(seed)``, ``sample``, ``get_state``/``set_state``
        and ``recent_returns``)."""
        raise NotImplementedError

    def _sample_and_update(self) -> None:
        """Sample one train batch (continuing the sampler's episodes) and update."""
        raise NotImplementedError

    # --- the iteration -----------------------------------------------------------------------
    def local_learner(self) -> Any:
        learner = self.learner_group._learner
        if learner is None:
            raise RuntimeError(f"{type(self).__name__} samples with the local learner's modules: use num_learners=0")
        return learner

    def training_step(self) -> None:
        set_torch_threads()
        seeds = iteration_seeds(int(self.config.seed or 0), self._iterations_done)
        seed_globals(seeds)
        learner = self.local_learner()
        if hasattr(learner, "reseed_minibatches"):
            learner.reseed_minibatches(seeds["minibatch"])
        self._sample_and_update()
        self._iterations_done += 1

    def log_sampling(self, env_steps: int, num_episodes: int, agent_steps: dict[str, int]) -> None:
        """Env steps, agent steps per module, episodes and the return over the last 100
        finished episodes, under RLlib's env-runner keys."""
        m = self.metrics
        m.log_value((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED), env_steps, reduce="sum")
        m.log_value((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), env_steps, reduce="lifetime_sum")
        for module_id, count in agent_steps.items():
            m.log_value((ENV_RUNNER_RESULTS, NUM_AGENT_STEPS_SAMPLED, module_id), count, reduce="sum")
            m.log_value((ENV_RUNNER_RESULTS, NUM_AGENT_STEPS_SAMPLED_LIFETIME, module_id), count,
                        reduce="lifetime_sum")
        m.log_value((ENV_RUNNER_RESULTS, NUM_EPISODES), num_episodes, reduce="sum")
        m.log_value((ENV_RUNNER_RESULTS, NUM_EPISODES_LIFETIME), num_episodes, reduce="lifetime_sum")
        recent = list(self._sampler.recent_returns)
        if recent:  # smoothed over the last 100 finished training episodes (RLlib-1.8 default)
            m.log_value((ENV_RUNNER_RESULTS, EPISODE_RETURN_MEAN), float(np.mean(recent)), window=1)
            m.log_value((ENV_RUNNER_RESULTS, EPISODE_RETURN_MIN), float(np.min(recent)), window=1)
            m.log_value((ENV_RUNNER_RESULTS, EPISODE_RETURN_MAX), float(np.max(recent)), window=1)

    # --- state ---------------------------------------------------------------------------------
    def get_state(self, components: Any = None, *, not_components: Any = None, **kwargs: Any) -> dict:
        state = super().get_state(components, not_components=not_components, **kwargs)
        if self._check_component(STATE_KEY, components, not_components):
            state[STATE_KEY] = {"iterations_done": int(self._iterations_done), "sampler": self._sampler.get_state()}
        return state

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        own = state.get(STATE_KEY)
        if own is not None:
            self._iterations_done = int(own["iterations_done"])
            self._sampler.set_state(own["sampler"])

    def get_module(self, module_id: str = "default_policy") -> Any:
        """The learner's module: the one the sampler acts with (the local env runner's copy is
        never synced, since it does not sample)."""
        return self.local_learner().module[module_id]

    @property
    def iterations_done(self) -> int:
        """Training iterations this algorithm (and the runs it was restored from) has done."""
        return self._iterations_done


class BatchedPPO(BatchedTraining, PPO):
    """RLlib PPO whose ``training_step`` samples with a batched sampler (see module docstring)."""

    def update_module(self, module_id: str, columns: dict[str, Any], env_steps: int) -> None:
        """One ``LearnerGroup.update`` of ``module_id`` on a sampled batch (``num_epochs`` passes of
        ``minibatch_size`` rows), its results aggregated under the learner results."""
        from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
        from ray.rllib.utils.metrics import LEARNER_RESULTS

        lifetime = self.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0)
        results = self.learner_group.update(
            batch=MultiAgentBatch({module_id: SampleBatch(columns)}, env_steps=env_steps),
            timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: lifetime},
            num_epochs=self.config.num_epochs,
            minibatch_size=self.config.minibatch_size,
            shuffle_batch_per_epoch=self.config.shuffle_batch_per_epoch,
        )
        self.metrics.aggregate(results, key=LEARNER_RESULTS)
