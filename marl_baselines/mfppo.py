"""MF-PPO: PPO with permutation-invariant DeepSet actors and critics on the multi-agent view
(spec/experiments.md §4.1).

One policy for the major agent and one shared by all minors, as IPPO; each is a
:class:`MFPPOTorchRLModule`, whose actor and critic see

* the row's **own** state (the own part of its IPPO observation; the major's fixed slot),
* the **context** its population shares: the shared part of the observation without the minors'
  histogram (major state, targets, particles, areas; ``Problem.agent_population`` says which
  entries are the histogram), and
* the **population**: the own states of all N minors of its copy, pooled by a DeepSet
  (:class:`marl_baselines.deepset.DeepSetActorCritic`, mean pooling, so the same weights run
  at any N).

The minors' histogram of the IPPO observation is replaced by the DeepSet embedding.  Everything
else — Table 3 PPO settings, per-policy updates and epochs, the batched sampler, the RLlib-1.8
loss, per-iteration seeds and exact resume — is IPPO's (:mod:`marl_baselines.ppo`).

Populations are stored once per (step, copy), not once per agent: the train batch of a policy
has, per row, its observation and ``population_index`` into a table ``(T·B, N, own_dim)`` that
the sampler returns with the batch and the algorithm hands to the module before its update
(:meth:`MFPPOTorchRLModule.set_populations`).  :class:`PopulationMinibatches` cuts every
minibatch along populations (all rows of a population together), so one pass of the set
network φ per population member serves all the rows of the population in the minibatch.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import tree
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import ValueFunctionAPI
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule

from m3fmarl.algorithms.m3fppo import normc_init_, use_fast_tanh
from m3fmarl.multiagent.core import MAJOR_ID, MultiAgentCore
from m3fmarl.sampling import distinct_keys
from marl_baselines.deepset import FORMS, DeepSetActorCritic
from marl_baselines.ppo import MARLPPOTorchLearner, marl_config
from marl_baselines.sampler import POPULATION_INDEX


class MFPPOTorchRLModule(TorchRLModule, ValueFunctionAPI):
    """MF-PPO's actor and critic for one policy (module docstring).

    ``model_config``: ``mf_own`` / ``mf_context`` (indices of the observation), ``mf_minor_offset``
    (agent index of the first minor), ``mf_hidden`` (width of φ and the heads), ``mf_form``
    (``pooled`` or ``pairwise``, :mod:`marl_baselines.deepset`), ``m3f_fast_tanh``.

    Acting and values take the observations of all agents of a copy at once
    (:meth:`joint_action_inputs`, :meth:`joint_values`: the sampler and the evaluator call them
    instead of the per-row forward passes); the learner's forward passes take rows with a
    ``population_index`` into the table set by :meth:`set_populations`.
    """

    population_aware = True
    ACTOR_PREFIXES = ("net.actor_set.", "net.actor_head.")
    """State-dict keys of the actor (what a policy export keeps)."""

    def setup(self) -> None:
        cfg = self.model_config
        self._own = torch.as_tensor(cfg["mf_own"], dtype=torch.long)
        self._context = torch.as_tensor(cfg["mf_context"], dtype=torch.long)
        self._minor_offset = int(cfg["mf_minor_offset"])
        form = cfg.get("mf_form", "pooled")
        if form not in FORMS:
            raise ValueError(f"unknown DeepSet form {form!r}; valid: {', '.join(FORMS)}")
        space = self.action_space
        self._discrete = hasattr(space, "n")
        outputs = int(space.n) if self._discrete else 2 * int(np.prod(space.shape))
        own_dim = int(self._own.numel())
        self.net = DeepSetActorCritic(own_dim, own_dim, int(self._context.numel()), outputs,
                                      hidden=int(cfg.get("mf_hidden", 256)), form=form)
        for head in (self.net.actor_head, self.net.critic_head):
            normc_init_(head, 0.01)
        for embedding in (self.net.actor_set, self.net.critic_set):
            normc_init_(embedding.phi)
        if cfg.get("m3f_fast_tanh", True):
            use_fast_tanh(self)
        self._table: torch.Tensor | None = None

    # --- distributions -------------------------------------------------------------------------
    def _dist_cls(self) -> Any:
        from ray.rllib.core.distribution.torch.torch_distribution import TorchCategorical, TorchDiagGaussian

        return TorchCategorical if self._discrete else TorchDiagGaussian

    def get_train_action_dist_cls(self) -> Any:
        return self._dist_cls()

    def get_exploration_action_dist_cls(self) -> Any:
        return self._dist_cls()

    def get_inference_action_dist_cls(self) -> Any:
        return self._dist_cls()

    # --- joint (all agents of a copy) ------------------------------------------------------------
    def _joint_parts(self, obs: torch.Tensor, agents: slice, keys: np.ndarray | None = None,
                     num_keys: int | None = None) -> tuple[tuple[torch.Tensor, ...], np.ndarray | None]:
        """``obs`` ``(G, n, D)`` → (own, population, context, group, frequencies) for the k agents
        of ``agents`` and the inverse map of their rows (None: one row per agent).

        Without ``keys``: own ``(G·k, own)``, population ``(G, N, own)`` (mean pooling),
        context ``(G, c)``, group ``(G·k,)``.  With ``keys`` ``(G, n)`` (agents of a copy with
        equal keys have equal own states, ``num_keys`` values: Beach bar's cells): the population
        is given as its distinct states with their frequencies ``(G, num_keys, own)``, and only
        one row per distinct (copy, key) is evaluated — the same outputs, at a cost that does not
        grow with N."""
        g = obs.shape[0]
        rows = obs[:, agents]
        k = rows.shape[1]
        own = rows[..., self._own].reshape(g * k, -1)
        population = obs[:, self._minor_offset:][..., self._own]
        context = obs[:, 0, self._context]
        group = torch.arange(g).repeat_interleave(k)
        if keys is None or num_keys is None:
            return (own, population, context, group, None), None
        n = population.shape[1]
        member_keys = (np.arange(g)[:, None] * num_keys + keys[:, self._minor_offset:]).ravel()
        counts = np.bincount(member_keys, minlength=g * num_keys)
        representative = np.zeros(g * num_keys, dtype=np.int64)
        representative[member_keys] = np.arange(member_keys.size)
        population = population.reshape(g * n, -1)[torch.from_numpy(representative)].reshape(g, num_keys, -1)
        frequencies = torch.from_numpy(counts.reshape(g, num_keys) / n).to(population.dtype)
        first, inverse = distinct_keys(keys[:, agents], num_keys)
        first_t = torch.from_numpy(first)
        return (own[first_t], population, context, group[first_t], frequencies), inverse

    def joint_action_inputs(self, obs: torch.Tensor, agents: slice, keys: np.ndarray | None = None,
                            num_keys: int | None = None) -> torch.Tensor:
        """Action-distribution inputs ``(G·k, width)`` of the agents ``agents`` of each of G copies
        (rows copy-major), from the observations ``(G, n, D)`` of all their agents (``keys``:
        see :meth:`_joint_parts`)."""
        parts, inverse = self._joint_parts(obs, agents, keys, num_keys)
        out = self.net.action_inputs(*parts)
        return out if inverse is None else out[torch.from_numpy(inverse)]

    def joint_values(self, obs: torch.Tensor, agents: slice, keys: np.ndarray | None = None,
                     num_keys: int | None = None) -> torch.Tensor:
        """V ``(G·k,)`` of the agents ``agents`` of each of G copies."""
        parts, inverse = self._joint_parts(obs, agents, keys, num_keys)
        out = self.net.value(*parts)
        return out if inverse is None else out[torch.from_numpy(inverse)]

    # --- rows with a population index (learner) ----------------------------------------------------
    def set_populations(self, table: np.ndarray | torch.Tensor | None) -> None:
        """The population table ``(P, N, own)`` the ``population_index`` column of the next
        batches points into (None: release it)."""
        self._table = None if table is None else torch.as_tensor(table, dtype=torch.float32)

    def _row_parts(self, batch: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        if self._table is None or POPULATION_INDEX not in batch:
            raise RuntimeError("MF-PPO rows need a population_index column and set_populations(table) first")
        obs = batch[Columns.OBS]
        index = torch.as_tensor(batch[POPULATION_INDEX], dtype=torch.long)
        unique, group = torch.unique(index, return_inverse=True)
        first = torch.empty(unique.shape[0], dtype=torch.long).scatter_(0, group, torch.arange(index.shape[0]))
        return obs[:, self._own], self._table[unique], obs[first][:, self._context], group

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self.net.action_inputs(*self._row_parts(batch))}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return self._forward(batch)

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        return self.net.value(*self._row_parts(batch))


# --- minibatches -------------------------------------------------------------------------------


class PopulationMinibatches:
    """Minibatches of whole populations: every epoch permutes a module's populations and cuts
    them into groups of ⌈minibatch_size / k⌉ populations (k = rows per population: 1 for the
    major's policy, N for the minors'), each minibatch holding all rows of its populations."""

    def __init__(self, batch: Any, *, num_epochs: int, minibatch_size: int, rng: np.random.Generator) -> None:
        self._env_steps = batch.env_steps()
        self._num_epochs = int(num_epochs)
        self._rng = rng
        self._batches = {}
        for module_id, module_batch in batch.policy_batches.items():
            columns = dict(module_batch.items())
            index = np.asarray(columns[POPULATION_INDEX])
            order = np.argsort(index, kind="stable")
            counts = np.bincount(index)
            k = int(counts.max())
            if np.any(counts[counts > 0] != k):
                raise ValueError(f"{module_id}: populations of unequal size in the train batch")
            groups = order.reshape(-1, k)
            per_minibatch = max(1, math.ceil(int(minibatch_size) / k))
            self._batches[module_id] = (columns, groups, per_minibatch)

    def __iter__(self) -> Any:
        from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

        for module_id, (columns, groups, per_minibatch) in self._batches.items():
            for _ in range(self._num_epochs):
                perm = self._rng.permutation(groups.shape[0])
                for start in range(0, perm.shape[0], per_minibatch):
                    rows = groups[perm[start:start + per_minibatch]].ravel()

                    def take(leaf: Any, rows: np.ndarray = rows) -> Any:
                        if isinstance(leaf, torch.Tensor):
                            return leaf[torch.from_numpy(rows)]
                        return leaf[rows] if hasattr(leaf, "shape") else leaf

                    minibatch = {k: tree.map_structure(take, v) for k, v in columns.items()}
                    yield MultiAgentBatch({module_id: SampleBatch(minibatch)}, self._env_steps)


class MFPPOTorchLearner(MARLPPOTorchLearner):
    """IPPO's learner with :class:`PopulationMinibatches` when ``minibatching`` is ``populations``
    (the default; the authors' code has no MF-PPO, so there is no reference order to follow), or
    RLlib's row shuffling (``shuffled``: a minibatch of R rows then touches up to R populations,
    each pooled over its N members)."""

    MINIBATCH_ITERATORS = {"populations": PopulationMinibatches}
    DEFAULT_MINIBATCHING = "populations"


# --- config ------------------------------------------------------------------------------------


def module_specs(core: MultiAgentCore, settings: Any) -> dict[str, RLModuleSpec]:
    """One :class:`MFPPOTorchRLModule` spec per policy with the problem's observation layout."""
    own, shared = core.layout.own, core.layout.shared
    population = set(int(i) for i in core.problem.agent_population())
    context = [int(i) for i in shared if int(i) not in population]
    cfg = {"mf_own": [int(i) for i in own], "mf_context": context, "mf_minor_offset": core.minor_offset,
           "mf_hidden": int(settings.deepset_hidden), "mf_form": settings.deepset_form, "m3f_fast_tanh": True}
    return {mid: RLModuleSpec(module_class=MFPPOTorchRLModule, model_config=dict(cfg),
                              observation_space=core.observation_space(), action_space=core.action_space())
            for mid in ([MAJOR_ID] if core.has_major else []) + ["minor"]}


def mfppo_config(problem: str, num_minors: int, variant: str = "reference", **kwargs: Any) -> PPOConfig:
    """MF-PPO (spec §4.1): IPPO's configuration (:func:`marl_baselines.ppo.marl_config`: Table 3
    settings from ``configs/algorithms/mfppo.yaml``, per-policy epochs, batched sampling) with
    DeepSet modules and population minibatches."""
    return marl_config("mfppo", "local", problem, num_minors, variant, module_specs=module_specs,
                       learner_class=MFPPOTorchLearner, **kwargs)
