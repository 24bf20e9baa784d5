"""IPPO and MAPPO on the multi-agent view, on RLlib 2.60's new API stack (spec/experiments.md
§1.1, §1.6, §1.7, §1.10).

* Policies: ``major`` (the major agent) and ``minor`` (shared by all minors); 2G: ``minor`` only
  (spec §1.6).  Both are :class:`~m3fmarl.algorithms.m3fppo.M3FPPOTorchRLModule` (separate 256-256
  tanh actor and critic, normc init); MAPPO swaps the critic for :class:`MAPPOTorchRLModule`'s
  centralised one.
* Learner: :class:`~m3fmarl.algorithms.m3fppo.M3FPPOTorchLearner` (RLlib-1.8 value clip, mean-KL
  adaptive coefficient, KL coefficients checkpointed), trained **per policy**: one
  ``LearnerGroup.update`` per module with its own ``num_epochs`` passes of ``minibatch_size``
  rows (hazard H2 — RLlib's joint multi-agent iterator would give the major policy ~N× more
  epochs than the minor policy).
* Sampling: :class:`marl_baselines.sampler.BatchedSampler` in the driver, with the learner's own
  modules (no weight sync needed); ``train_batch_size`` counts env (joint) steps (H5).
* Algorithm: :class:`MARLPPO`, RLlib's PPO with this ``training_step`` (per-iteration seeds, exact
  resume: :class:`~m3fmarl.algorithms.batched.BatchedPPO`); checkpoints, restore and metrics are
  RLlib's.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.columns import Columns
from ray.rllib.core.models.base import ENCODER_OUT
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.metrics import ENV_RUNNER_SAMPLING_TIMER, LEARNER_UPDATE_TIMER, TIMERS

from m3fmarl.algorithms.batched import BatchedPPO, on_environment_created
from m3fmarl.algorithms.m3fppo import (
    MODEL_CONFIG,
    STANDARDIZE_KEY,
    M3FPPOTorchLearner,
    M3FPPOTorchRLModule,
    apply_overrides,
    normc_init_,
    ppo_training,
    split_settings,
    use_fast_tanh,
)
from m3fmarl.multiagent.core import MAJOR_ID, MultiAgentCore, policy_of
from m3fmarl.multiagent.envs import register_rllib_envs, rllib_env_name
from m3fmarl.problems import canonical_name
from m3fmarl.problems.core import VARIANTS, check_choice, check_num_minors
from m3fmarl.sampling import ADVANTAGES, standardize
from marl_baselines.sampler import BOOTSTRAPS, CRITIC_OBS, BatchedSampler

MARL_KEY = "m3f_marl"
"""``learner_config_dict`` key holding the MARL settings (problem, N, variant, critic, …)."""

MAPPO_BOOTSTRAP: dict[str, str] = {"reference": "last_step", "paper": "next_obs"}
"""Variant → how a MAPPO critic bootstraps cut trajectories (spec §1.7)."""


# --- MAPPO critic ------------------------------------------------------------------------------


class MAPPOTorchRLModule(M3FPPOTorchRLModule):
    """PPO module whose value function is MAPPO's centralised critic (spec §1.7).

    The actor is the IPPO actor (own observation only).  The critic reads the batch column
    ``critic_obs`` = [global state (G numbers), the other agents' actions (A numbers)]: the global
    state goes through its own 256-256 tanh MLP, the result is concatenated with the others'
    actions and a linear layer gives V.  G and A come from ``model_config["critic_global_dim"]``
    and ``["critic_action_dim"]``.  The obs-only critic branch of the parent module is never
    evaluated (the forward passes run the actor alone).
    """

    def setup(self) -> None:
        super().setup()
        g = int(self.model_config["critic_global_dim"])
        a = int(self.model_config["critic_action_dim"])
        hidden = list(self.model_config.get("fcnet_hiddens", [256, 256]))
        layers: list[torch.nn.Module] = []
        width = g
        for h in hidden:
            layers += [torch.nn.Linear(width, h), torch.nn.Tanh()]
            width = h
        self.cc_encoder = torch.nn.Sequential(*layers)
        self.cc_head = torch.nn.Linear(width + a, 1)
        self._cc_global_dim = g
        normc_init_(self.cc_encoder)
        normc_init_(self.cc_head, 0.01)
        if self.model_config.get("m3f_fast_tanh", True):
            use_fast_tanh(self.cc_encoder)

    def _actor_only(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self.pi(self.encoder.actor_encoder(batch)[ENCODER_OUT])}

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return self._actor_only(batch)

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        # The parent also runs its obs-only critic encoder for the value embeddings; the
        # centralised critic does not use them (compute_values reads critic_obs).
        return self._actor_only(batch)

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        x = batch[CRITIC_OBS]
        h = self.cc_encoder(x[:, : self._cc_global_dim])
        return self.cc_head(torch.cat([h, x[:, self._cc_global_dim:]], dim=1)).squeeze(-1)


# --- learner -----------------------------------------------------------------------------------


class MARLPPOTorchLearner(M3FPPOTorchLearner):
    """:class:`M3FPPOTorchLearner` for per-policy updates: the adaptive KL coefficient of a
    policy changes only in an update that trained that policy."""

    def _update_module_kl_coeff(self, *, module_id: str, config: Any, kl_loss: float) -> None:
        if module_id not in self._kl_sums:
            return
        super()._update_module_kl_coeff(module_id=module_id, config=config, kl_loss=kl_loss)


# --- algorithm ---------------------------------------------------------------------------------


class MARLPPO(BatchedPPO):
    """RLlib PPO whose ``training_step`` samples with :class:`BatchedSampler` and updates each
    policy separately (per-module epochs); iterations exactly resumable
    (:class:`~m3fmarl.algorithms.batched.BatchedPPO`)."""

    def _make_sampler(self) -> BatchedSampler:
        opts = self.config.learner_config_dict[MARL_KEY]
        core = MultiAgentCore(opts["problem"], opts["num_minors"], opts["variant"], **opts.get("switches", {}))
        num_envs = int(opts["num_envs"])
        if self.config.train_batch_size_per_learner % num_envs:
            raise ValueError(f"train_batch_size ({self.config.train_batch_size_per_learner}) must be a multiple of "
                             f"num_envs_per_env_runner ({num_envs})")
        self._standardize = bool(self.config.learner_config_dict.get(STANDARDIZE_KEY, True))
        return BatchedSampler(
            core, num_envs, seed=int(self.config.seed or 0), centralized_critic=opts["critic"] == "centralized",
            bootstrap=opts["bootstrap"], gamma=self.config.gamma, lambda_=self.config.lambda_,
        )

    def _local_modules(self) -> dict[str, Any]:
        learner = self.local_learner()
        return {mid: learner.module[mid].unwrapped() for mid in learner.module.keys()}

    def _sample_and_update(self) -> None:
        steps_per_env = self.config.train_batch_size_per_learner // self._sampler.num_envs
        modules = self._local_modules()
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            batches, stats = self._sampler.sample(modules, steps_per_env)
        self.log_sampling(stats.env_steps, len(stats.episode_returns),
                          {g.module_id: stats.env_steps * len(g.agents) for g in self._sampler.groups})
        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            for module_id, columns in batches.items():
                if self._standardize:
                    columns[ADVANTAGES] = standardize(columns[ADVANTAGES])
                module = modules[module_id]
                if not hasattr(module, "set_populations"):
                    self.update_module(module_id, columns, stats.env_steps)
                    continue
                module.set_populations(stats.populations)  # the rows point into the sampled populations
                try:
                    self.update_module(module_id, columns, stats.env_steps)
                finally:
                    module.set_populations(None)


# --- config ------------------------------------------------------------------------------------

CRITICS = ("local", "centralized")
"""IPPO: every policy's critic on its own observation; MAPPO: a centralised critic (spec §1.7)."""


def marl_module_specs(critic: str, core: MultiAgentCore) -> dict[str, RLModuleSpec]:
    """One RLModuleSpec per policy (``major`` if the problem has one, ``minor``), with the view's
    spaces; with a centralised critic the modules get its input sizes."""
    width = core.num_actions if core.discrete else core.action_dim
    specs = {}
    for mid in ([MAJOR_ID] if core.has_major else []) + ["minor"]:
        cfg = dict(MODEL_CONFIG)
        cls: type = M3FPPOTorchRLModule
        if critic == "centralized":
            cfg.update(critic_global_dim=core.global_state_dim, critic_action_dim=(core.num_agents - 1) * width)
            cls = MAPPOTorchRLModule
        specs[mid] = RLModuleSpec(module_class=cls, model_config=cfg, observation_space=core.observation_space(),
                                  action_space=core.action_space())
    return specs


def marl_config(
    algo: str, critic: str, problem: str, num_minors: int, variant: str = "reference", *, seed: int = 0,
    settings: Any = None, env_config: dict[str, Any] | None = None, bootstrap: str | None = None,
    module_specs: Any = None, learner_class: type | None = None, **overrides: Any,
) -> PPOConfig:
    """The config of PPO on the multi-agent view (IPPO, MAPPO: Table 3 settings, spec §1.6/§1.7/§1.10).

    Args:
        algo: the registry name the run is recorded under (``ippo``, ``mappo``).
        critic: ``local`` (IPPO) or ``centralized`` (MAPPO's critic: global state and the other
            agents' actions).
        problem, num_minors, variant, seed: as for :func:`m3fmarl.algorithms.m3fppo_config`.
        settings: the algorithm's settings dataclass (:class:`m3fmarl.config.PPOSettings` or a
            subclass), the only source of the hyperparameters (default:
            ``configs/algorithms/<algo>.yaml``).  Per policy: ``minibatch_size``,
            ``num_epochs`` (spec §1.1 item 6); ``train_batch_size`` counts joint env steps
            (24 000 → 24 000 major and 24 000·N minor samples, spec §1.6);
            ``num_envs_per_env_runner`` B copies each contribute ``train_batch_size / B``
            consecutive joint steps per iteration (B = 24 → 1 000: whole episodes).
        env_config: switch overrides of the problem.
        bootstrap: centralised critic only, ``next_obs`` or ``last_step``; default by variant
            (reference ``last_step``, spec §1.7).
        module_specs: ``f(core, settings) -> {module_id: RLModuleSpec}`` (default: the IPPO/MAPPO
            modules of ``critic``); learner_class: default :class:`MARLPPOTorchLearner`.
        **overrides: settings fields replace those of ``settings``; other names are PPOConfig
            attributes (``learner_config_dict={…}`` is merged).
    """
    from m3fmarl.config import load_algorithm, settings_class

    check_choice("critic", critic, CRITICS)
    check_choice("variant", variant, VARIANTS)
    problem = canonical_name(problem)
    num_minors = check_num_minors(num_minors)
    if bootstrap is None:
        bootstrap = MAPPO_BOOTSTRAP[variant] if critic == "centralized" else "next_obs"
    check_choice("bootstrap", bootstrap, BOOTSTRAPS)
    s, rest = split_settings(settings if settings is not None else load_algorithm(algo), settings_class(algo),
                             overrides)
    switches = dict(env_config or {})
    core = MultiAgentCore(problem, num_minors, variant, **switches)
    register_rllib_envs()
    specs = marl_module_specs(critic, core) if module_specs is None else module_specs(core, s)
    config = (
        multiagent_view(PPOConfig(algo_class=MARLPPO), problem, num_minors, variant, switches, specs, seed)
        .learners(
            num_learners=0,
            learner_class=learner_class or MARLPPOTorchLearner,
            learner_config_dict={
                MARL_KEY: {"algo": algo, "problem": problem, "num_minors": num_minors, "variant": variant,
                           "switches": switches, "num_envs": int(s.num_envs_per_env_runner),
                           "critic": critic, "bootstrap": bootstrap},
            },
        )
    )
    return apply_overrides(ppo_training(config, s, variant), rest)


def multiagent_view(config: Any, problem: str, num_minors: int, variant: str, switches: dict[str, Any],
                    specs: dict[str, RLModuleSpec], seed: int) -> Any:
    """``config`` (an RLlib AlgorithmConfig) set up for the multi-agent view of ``problem``: the
    registered RLlib env, the policies of ``specs`` (agents mapped by :func:`policy_of`), env steps
    counted jointly, no remote env runners (our samplers run in the driver), torch on one thread
    per runner, smoothing over 100 episodes, ``seed``."""

    def policy_mapping_fn(agent_id: Any, *args: Any, **kwargs: Any) -> str:
        return policy_of(agent_id)

    return (
        config.api_stack(enable_rl_module_and_learner=True, enable_env_runner_and_connector_v2=True)
        .framework("torch")
        .environment(rllib_env_name(problem), env_config={"num_minors": num_minors, "variant": variant, **switches},
                     normalize_actions=True, clip_actions=False)
        .env_runners(num_env_runners=0, num_envs_per_env_runner=1, explore=True)
        .multi_agent(policies=list(specs), policy_mapping_fn=policy_mapping_fn, count_steps_by="env_steps")
        .rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs=specs))
        .callbacks(on_environment_created=on_environment_created)
        .reporting(metrics_num_episodes_for_smoothing=100)
        .debugging(seed=seed)
    )


def ippo_config(problem: str, num_minors: int, variant: str = "reference", **kwargs: Any) -> PPOConfig:
    """IPPO (spec §1.6): :func:`marl_config` with local critics."""
    return marl_config("ippo", "local", problem, num_minors, variant, **kwargs)


def mappo_config(problem: str, num_minors: int, variant: str = "reference", **kwargs: Any) -> PPOConfig:
    """MAPPO (spec §1.7): :func:`marl_config` with centralised critics."""
    return marl_config("mappo", "centralized", problem, num_minors, variant, **kwargs)
