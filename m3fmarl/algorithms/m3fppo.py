"""M3FPPO: single-agent PPO on the batched M3FC environment, on RLlib 2.60's new API stack.

Spec: ``spec/experiments.md`` §1.1 (RLlib-1.8 PPO semantics), §1.2 (hyperparameters), §1.3
(network), §1.4 (M3FPPO), §1.10 (RLlib 2.x checklist).  RLlib facts this relies on are collected
in ``docs/rllib-notes.md``.

Pieces:

* :func:`m3fppo_config` — the ``PPOConfig`` (Table 3 settings, reference KL pair) of
  :class:`M3FCAlgorithm`.
* :class:`M3FCAlgorithm` — RLlib's PPO sampling with :class:`m3fmarl.m3fc.sampler.M3FCSampler`
  (B copies of the M3FC view stepped as arrays in the driver; GAE(γ, λ) with truncation
  bootstrap, the old value predictions V_old kept for the value clip), exactly resumable
  iterations (:mod:`m3fmarl.algorithms.batched`).
* :class:`M3FPPOTorchRLModule` — RLlib's default PPO torch module (separate 256-256 tanh actor
  and critic MLPs, linear heads, state-dependent log-std) re-initialised as RLlib 1.8 did
  (normc 1.0 hidden layers, normc 0.01 heads, zero biases; spec §1.3 / H4).
* :class:`M3FPPOTorchLearner` — PPO torch learner with the RLlib-1.8 value clipping (H1) and the
  RLlib-1.8 KL statistic for the adaptive KL coefficient.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import tree
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.algorithms.ppo.ppo import (
    LEARNER_RESULTS_KL_KEY,
    LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY,
    LEARNER_RESULTS_VF_LOSS_UNCLIPPED_KEY,
)
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import ENTROPY_KEY, POLICY_LOSS_KEY, VF_LOSS_KEY
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.metrics import ENV_RUNNER_SAMPLING_TIMER, LEARNER_UPDATE_TIMER, TIMERS
from ray.rllib.utils.torch_utils import explained_variance

import m3fmarl
from m3fmarl.algorithms.batched import BatchedPPO, on_environment_created, set_torch_threads
from m3fmarl.m3fc.env import M3FCCore
from m3fmarl.m3fc.sampler import M3FCSampler
from m3fmarl.problems import canonical_name
from m3fmarl.problems.core import VARIANTS, check_choice
from m3fmarl.sampling import ADVANTAGES, standardize

# --- settings --------------------------------------------------------------------------------

VF_CLIP_KEY = "rllib18_vf_clip_param"
"""``learner_config_dict`` key: RLlib-1.8 ``vf_clip_param`` (clip of V − V_old; None = off)."""
STANDARDIZE_KEY = "standardize_advantages"
"""``learner_config_dict`` key: standardise advantages over the train batch (PPO: True)."""
KL_STAT_KEY = "kl_statistic"
"""``learner_config_dict`` key: KL fed to the adaptive coefficient: ``"mean"`` over all
minibatches of the update (RLlib 1.8) or ``"last"`` minibatch (RLlib 2.60's PPOLearner)."""

MINIBATCHING_KEY = "minibatching"
"""``learner_config_dict`` key: ``"shuffled"`` (RLlib 2.x: rows reshuffled every epoch) or
``"reference"`` (RLlib 1.8 + MARLlib on one CPU: contiguous slices of the collected batch, only
the order of the slices permuted every epoch; spec §1.1 item 6)."""
SAMPLER_KEY = "m3fc_sampler"
"""``learner_config_dict`` key: settings of :class:`M3FCSampler` (``num_envs``, ``fragment``)."""

KL_COEFFS_STATE_KEY = "kl_coeffs"
"""Learner-state key under which :class:`M3FPPOTorchLearner` checkpoints the KL coefficients."""



# --- network ---------------------------------------------------------------------------------


def normc_(weight: torch.Tensor, std: float = 1.0) -> torch.Tensor:
    """RLlib-1.8 "normc" initialiser, in place: N(0, 1) weights, then each output unit's incoming
    weight vector (a row of torch's ``(out, in)`` weight) rescaled to L2 norm ``std``."""
    with torch.no_grad():
        weight.normal_(0.0, 1.0)
        weight.mul_(std / weight.norm(dim=1, keepdim=True))
    return weight


class _NumpyTanh(torch.autograd.Function):
    """tanh with the forward pass on numpy: measured 15× faster than ``torch.tanh`` for float32
    on one thread with torch 2.13 CPU here (7 200 × 256: 0.31 ms vs 4.9 ms; docs/benchmarks.md).
    Backward is the usual ``grad · (1 − y²)``.  CPU tensors only."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        y = torch.from_numpy(np.tanh(x.detach().numpy()))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return grad * (1.0 - y * y)


class FastTanh(torch.nn.Module):
    """Drop-in ``torch.nn.Tanh`` (no parameters, same values up to rounding) using
    :class:`_NumpyTanh` on CPU and ``torch.tanh`` elsewhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return torch.tanh(x)
        return _NumpyTanh.apply(x)


def use_fast_tanh(module: torch.nn.Module) -> int:
    """Replace every ``torch.nn.Tanh`` inside ``module`` by :class:`FastTanh`; returns how many."""
    count = 0
    for parent in module.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Tanh):
                setattr(parent, name, FastTanh())
                count += 1
    return count


def _linears(module: torch.nn.Module | None) -> list[torch.nn.Linear]:
    return [] if module is None else [m for m in module.modules() if isinstance(m, torch.nn.Linear)]


def normc_init_(module: torch.nn.Module, last_std: float = 1.0) -> None:
    """Every Linear layer of ``module``, in order: weights :func:`normc_` 1.0 (the last one
    ``last_std``: 0.01 for policy and value heads, spec H4), biases 0."""
    layers = _linears(module)
    for i, layer in enumerate(layers):
        normc_(layer.weight, last_std if i == len(layers) - 1 else 1.0)
        torch.nn.init.zeros_(layer.bias)


class M3FPPOTorchRLModule(DefaultPPOTorchRLModule):
    """RLlib's default PPO torch module, initialised as RLlib 1.8's fully connected net.

    With ``model_config`` ``fcnet_hiddens=[256, 256]``, ``fcnet_activation="tanh"``,
    ``vf_share_layers=False``, ``head_fcnet_hiddens=[]``, ``free_log_std=False`` the default module
    is exactly the reference network (spec §1.3): an actor encoder obs→256→256 (tanh) with a
    linear head giving the action-distribution inputs (means and log-stds of every Box part,
    logits of a Discrete part), and a separate critic encoder obs→256→256 (tanh) with a linear
    head → 1.  Only the initialisation differs in RLlib 2.60 (torch default kaiming-uniform,
    non-zero biases), so ``setup`` re-initialises when ``model_config["m3f_init"] == "normc"``:
    hidden layers normc 1.0, the last layer of the policy and value heads normc 0.01, all biases
    0 (spec H4).  Consequence: initial action means ≈ 0 and log-stds ≈ 0.
    """

    def setup(self) -> None:
        super().setup()
        if self.model_config.get("m3f_init", "normc") == "normc":
            self._normc_init()
        if self.model_config.get("m3f_fast_tanh", True):
            use_fast_tanh(self)

    def _normc_init(self) -> None:
        heads = [h for h in (getattr(self, "pi", None), getattr(self, "vf", None)) if h is not None]
        head_layers = {id(m) for h in heads for m in _linears(h)}
        for layer in _linears(self.encoder):
            if id(layer) not in head_layers:
                normc_(layer.weight, 1.0)
                torch.nn.init.zeros_(layer.bias)
        for head in heads:
            normc_init_(head, 0.01)


# --- minibatches -----------------------------------------------------------------------------


class ReferenceMinibatches:
    """Minibatches as the reference made them (spec §1.1 item 6): every module's train batch is
    cut into contiguous ``minibatch_size`` slices in collection order (the last one shorter if
    the size does not divide), and each epoch visits all slices once in a freshly permuted
    order — 24 000 / 4 000 × 8 = 48 gradient steps for M3FPPO.

    Rows outside the loss (``Columns.LOSS_MASK`` false: the learner connector's artificial
    bootstrap rows at the end of every episode chunk, which RLlib 1.8 did not have) are removed
    first, so the slices hold exactly the sampled steps.  With several modules in one batch
    every step takes one slice per module; a module with fewer slices starts its next
    permutation early.
    """

    def __init__(self, batch: Any, *, num_epochs: int, minibatch_size: int, rng: np.random.Generator) -> None:
        from ray.rllib.policy.sample_batch import SampleBatch

        self._env_steps = batch.env_steps()
        self._num_epochs = int(num_epochs)
        self._size = int(minibatch_size)
        self._rng = rng
        self._batches = {}
        for module_id, module_batch in batch.policy_batches.items():
            n = len(module_batch)
            columns = {k: v for k, v in module_batch.items()}
            mask = columns.pop(Columns.LOSS_MASK, None)
            if mask is not None:
                keep = torch.as_tensor(mask).bool()

                def rows(leaf: Any, keep: torch.Tensor = keep, n: int = n) -> Any:
                    return leaf[keep] if hasattr(leaf, "shape") and leaf.shape[:1] == (n,) else leaf

                # nested columns too: a Tuple action space gives a tuple of per-part tensors
                columns = {k: tree.map_structure(rows, v) for k, v in columns.items()}
            self._batches[module_id] = SampleBatch(columns)

    def num_slices(self, module_id: str) -> int:
        return max(1, math.ceil(len(self._batches[module_id]) / self._size))

    def __iter__(self) -> Any:
        from ray.rllib.policy.sample_batch import MultiAgentBatch

        steps = max(self.num_slices(m) for m in self._batches)
        orders = {m: [] for m in self._batches}
        for _ in range(self._num_epochs):
            for _ in range(steps):
                minibatch = {}
                for module_id, module_batch in self._batches.items():
                    if not orders[module_id]:
                        orders[module_id] = list(self._rng.permutation(self.num_slices(module_id)))
                    k = int(orders[module_id].pop(0))
                    minibatch[module_id] = module_batch[k * self._size:(k + 1) * self._size]
                yield MultiAgentBatch(minibatch, self._env_steps)


# --- loss ------------------------------------------------------------------------------------


def rllib18_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, targets: torch.Tensor, clip_param: float | None,
) -> torch.Tensor:
    """Per-sample RLlib-1.8 PPO value loss (spec §1.1 item 4, hazard H1).

    ``max((V − R)², (V_clip − R)²)`` with ``V_clip = V_old + clip(V − V_old, −c, c)``: the change
    of the value prediction relative to the sampling-time prediction is clipped (PPO2 style).
    ``clip_param`` None or inf gives the plain squared error.
    """
    err = (values - targets) ** 2
    if clip_param is None or math.isinf(clip_param):
        return err
    clipped = old_values + torch.clamp(values - old_values, -clip_param, clip_param)
    return torch.maximum(err, (clipped - targets) ** 2)


class M3FPPOTorchLearner(PPOTorchLearner):
    """PPO torch learner with RLlib-1.8 semantics where RLlib 2.60 differs.

    Why a subclass: RLlib 2.60's ``PPOTorchLearner.compute_loss_for_module`` clamps the *squared
    value error* at ``vf_clip_param`` (``clamp((V − R)², 0, c)``: zero gradient once
    |V − R| > √c), whereas the reference (RLlib 1.8) clips the *change* of V relative to the
    sampling-time prediction, ``max((V − R)², (V_old + clip(V − V_old, ±c) − R)²)``.  With
    returns of O(10–1500) and c = 10 the 2.60 rule would stop critic learning (hazard H1), and the
    loss function has no hook for the value term, so the whole per-module loss is overridden here
    (same policy/KL/entropy terms as RLlib's).  The built-in clip must be off
    (``vf_clip_param = inf``); c comes from ``learner_config_dict["rllib18_vf_clip_param"]``.

    Also:

    * it learns from train batches that already hold advantages, value targets and V_old
      (``Columns.VF_PREDS``), written by our batched samplers; ``build`` sets torch to one thread;
    * the adaptive KL coefficient is updated with the mean KL over all minibatches of the update,
      as RLlib 1.8 did (its learner stats were averaged over every SGD minibatch); RLlib 2.60 feeds
      it the KL of the last minibatch only (``learner_config_dict["kl_statistic"] = "last"``
      restores that);
    * the KL coefficients are part of the learner state, so a run restored from a checkpoint
      continues with its adapted coefficient (RLlib 2.60 restarts from ``kl_coeff``).
    """

    def build(self) -> None:
        set_torch_threads()
        super().build()
        self._kl_sums: dict[str, list] = {}

    MINIBATCH_ITERATORS: dict[str, type] = {"reference": ReferenceMinibatches}
    """``learner_config_dict["minibatching"]`` values served by an iterator of ours (built as
    ``cls(batch, num_epochs=, minibatch_size=, rng=)``); any other value is RLlib's reshuffling
    ``MiniBatchCyclicIterator`` (``shuffled``)."""
    DEFAULT_MINIBATCHING = "shuffled"

    def _create_iterator_if_necessary(self, *, training_data: Any, num_total_minibatches: int = 0,
                                      num_epochs: int = 1, minibatch_size: int | None = None,
                                      shuffle_batch_per_epoch: bool = False, **kwargs: Any) -> Any:
        """Minibatches of :attr:`MINIBATCH_ITERATORS` (``reference``: :class:`ReferenceMinibatches`)
        instead of RLlib's reshuffling ``MiniBatchCyclicIterator``."""
        mode = self.config.learner_config_dict.get(MINIBATCHING_KEY, self.DEFAULT_MINIBATCHING)
        iterator = self.MINIBATCH_ITERATORS.get(mode)
        if iterator is None or not minibatch_size or training_data.data_iterators:
            return super()._create_iterator_if_necessary(
                training_data=training_data, num_total_minibatches=num_total_minibatches, num_epochs=num_epochs,
                minibatch_size=minibatch_size, shuffle_batch_per_epoch=shuffle_batch_per_epoch, **kwargs)
        batch = self._make_batch_if_necessary(training_data=training_data)
        for module_id in list(batch.policy_batches):
            if not self.should_module_be_updated(module_id, batch):
                del batch.policy_batches[module_id]
        if not batch.policy_batches:
            return {}
        if not hasattr(self, "_minibatch_rng"):
            self._minibatch_rng = np.random.default_rng(self.config.seed)
        return iterator(batch, num_epochs=num_epochs, minibatch_size=minibatch_size, rng=self._minibatch_rng)

    def reseed_minibatches(self, seed: int) -> None:
        """Restart the reference minibatch order from ``seed`` (set per training iteration by
        :class:`M3FCAlgorithm`, so a resumed run repeats the uninterrupted one)."""
        self._minibatch_rng = np.random.default_rng(seed)

    def before_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().before_gradient_based_update(timesteps=timesteps)
        self._kl_sums = {}

    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict[str, Any], fwd_out: dict) -> Any:
        module = self.module[module_id].unwrapped()
        if Columns.LOSS_MASK in batch:
            mask = batch[Columns.LOSS_MASK]
            num_valid = torch.sum(mask)

            def mean(x: torch.Tensor) -> torch.Tensor:
                return torch.sum(x[mask]) / num_valid
        else:
            mask = None
            mean = torch.mean

        curr_dist = module.get_train_action_dist_cls().from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
        prev_dist = module.get_exploration_action_dist_cls().from_logits(batch[Columns.ACTION_DIST_INPUTS])
        ratio = torch.exp(curr_dist.logp(batch[Columns.ACTIONS]) - batch[Columns.ACTION_LOGP])
        adv = batch[Columns.ADVANTAGES]
        surrogate = torch.min(adv * ratio, adv * torch.clamp(ratio, 1 - config.clip_param, 1 + config.clip_param))
        entropy = curr_dist.entropy()
        entropy_coeff = self.entropy_coeff_schedulers_per_module[module_id].get_current_value()

        values = module.compute_values(batch, embeddings=fwd_out.get(Columns.EMBEDDINGS))
        targets = batch[Columns.VALUE_TARGETS]
        clip = config.learner_config_dict.get(VF_CLIP_KEY, 10.0)
        vf_loss = rllib18_value_loss(values, batch[Columns.VF_PREDS], targets, clip)

        total = mean(-surrogate + config.vf_loss_coeff * vf_loss - entropy_coeff * entropy)
        if config.use_kl_loss:
            mean_kl = mean(prev_dist.kl(curr_dist))
            total = total + self.curr_kl_coeffs_per_module[module_id] * mean_kl
            acc = self._kl_sums.setdefault(module_id, [0.0, 0])
            acc[0] = acc[0] + mean_kl.detach()
            acc[1] += 1
        else:
            mean_kl = torch.zeros((), device=total.device)

        valid_t = targets if mask is None else targets[mask]
        valid_v = values if mask is None else values[mask]
        self.metrics.log_dict(
            {
                POLICY_LOSS_KEY: -mean(surrogate),
                VF_LOSS_KEY: mean(vf_loss),
                LEARNER_RESULTS_VF_LOSS_UNCLIPPED_KEY: mean((values - targets) ** 2),
                LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY: explained_variance(valid_t, valid_v),
                ENTROPY_KEY: mean(entropy),
                LEARNER_RESULTS_KL_KEY: mean_kl,
            },
            key=module_id,
            window=1,
        )
        return total

    def get_state(self, components: Any = None, *, not_components: Any = None, **kwargs: Any) -> dict:
        """Learner state plus the adaptive KL coefficients (RLlib 2.60 does not checkpoint them:
        a restored run would restart from ``kl_coeff``)."""
        state = super().get_state(components, not_components=not_components, **kwargs)
        if self._check_component(KL_COEFFS_STATE_KEY, components, not_components):
            state[KL_COEFFS_STATE_KEY] = {mid: float(v) for mid, v in self.curr_kl_coeffs_per_module.items()}
        return state

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        for mid, value in state.get(KL_COEFFS_STATE_KEY, {}).items():
            self.curr_kl_coeffs_per_module[mid].data.fill_(value)

    def _update_module_kl_coeff(self, *, module_id: str, config: Any, kl_loss: float) -> None:
        acc = self._kl_sums.get(module_id)
        if config.learner_config_dict.get(KL_STAT_KEY, "mean") == "mean" and acc and acc[1] > 0:
            kl_loss = float(acc[0] / acc[1])
            self.metrics.log_value((module_id, "mean_kl_update"), kl_loss, window=1)
        super()._update_module_kl_coeff(module_id=module_id, config=config, kl_loss=kl_loss)


# --- algorithm -------------------------------------------------------------------------------

_ENV_ID_TO_PROBLEM = {env_id: name for name, env_id in m3fmarl.ENV_IDS.items()}


class M3FCAlgorithm(BatchedPPO):
    """M3FPPO and M3FA2C: RLlib's PPO (its learner, checkpoints, metrics) sampling the M3FC
    view with :class:`M3FCSampler` in the driver (one actor pass per step on all B copies, the
    train batch written directly; no per-copy episode objects), iterations exactly resumable
    (:class:`~m3fmarl.algorithms.batched.BatchedPPO`).

    The sampler's settings are in ``learner_config_dict["m3fc_sampler"]`` (``num_envs``: copies
    B; ``fragment``: GAE cut every k steps, M3FA2C 20, or None); the problem, N, variant and
    switch overrides are the config's env id and ``env_config``.  Each iteration samples
    ``train_batch_size / B`` more steps of every copy.
    """

    def _make_sampler(self) -> M3FCSampler:
        opts = self.config.learner_config_dict[SAMPLER_KEY]
        core = M3FCCore(_ENV_ID_TO_PROBLEM[self.config.env], **dict(self.config.env_config))
        num_envs = int(opts["num_envs"])
        if self.config.train_batch_size_per_learner % num_envs:
            raise ValueError(f"train_batch_size ({self.config.train_batch_size_per_learner}) must be a multiple "
                             f"of num_envs_per_env_runner ({num_envs})")
        return M3FCSampler(core, num_envs, gamma=self.config.gamma, lambda_=self.config.lambda_,
                           fragment=opts.get("fragment"))

    def _sample_and_update(self) -> None:
        module = self.local_learner().module[DEFAULT_MODULE_ID].unwrapped()
        steps = self.config.train_batch_size_per_learner // self._sampler.num_envs
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            columns, stats = self._sampler.sample(module, steps)
        self.log_sampling(stats.env_steps, len(stats.episode_returns), {DEFAULT_MODULE_ID: stats.env_steps})
        if self.config.learner_config_dict.get(STANDARDIZE_KEY, True):
            columns[ADVANTAGES] = standardize(columns[ADVANTAGES])
        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            self.update_module(DEFAULT_MODULE_ID, columns, stats.env_steps)


# --- config ----------------------------------------------------------------------------------


MODEL_CONFIG: dict[str, Any] = {
    "fcnet_hiddens": [256, 256], "fcnet_activation": "tanh", "vf_share_layers": False,
    "head_fcnet_hiddens": [], "free_log_std": False, "m3f_init": "normc",
}
"""The reference network (spec §1.3) in RLlib's default-model keys: separate 256-256 tanh actor and
critic, linear heads, state-dependent log-std, normc initialisation."""


def split_settings(settings: Any, settings_class: type, overrides: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``settings`` (default: the dataclass defaults) with the ``overrides`` that name one of its
    fields applied, and the remaining overrides (PPOConfig attributes).  Lets a builder be called
    as ``m3fppo_config(..., lr=1e-3)`` while the settings dataclass stays the only source of every
    hyperparameter."""
    import dataclasses

    base = settings if settings is not None else settings_class()
    if not isinstance(base, settings_class):
        raise TypeError(f"settings must be a {settings_class.__name__}, got {type(base).__name__}")
    fields = {f.name for f in dataclasses.fields(settings_class)}
    mine = {k: v for k, v in overrides.items() if k in fields}
    rest = {k: v for k, v in overrides.items() if k not in fields}
    return (dataclasses.replace(base, **mine) if mine else base), rest


def m3fc_base_config(
    problem: str, num_minors: int, variant: str, *, seed: int, num_envs: int, fragment: int | None,
    env_config: dict[str, Any] | None, learner_class: type,
) -> PPOConfig:
    """What M3FPPO and M3FA2C share: :class:`M3FCAlgorithm` on the problem's M3FC view (centralised
    execution, Box actions clipped on the way to the simulator), the reference network, one
    local learner of ``learner_class``, the sampler's copies and fragment, smoothing over 100
    episodes, the run's seed.  No hyperparameter is set here."""
    check_choice("variant", variant, VARIANTS)
    env_id = problem if problem in m3fmarl.ENV_IDS.values() else m3fmarl.ENV_IDS[canonical_name(problem)]
    if isinstance(num_minors, bool) or not isinstance(num_minors, (int, np.integer)) or num_minors < 1:
        raise ValueError(f"num_minors must be an integer >= 1, got {num_minors!r}")
    env_kwargs = {**(env_config or {}), "num_minors": int(num_minors), "variant": variant}
    if env_kwargs.get("execution", "centralized") != "centralized":
        raise ValueError("M3F algorithms train with centralized execution (one upper-level action per step); "
                         "decentralized execution is for evaluation only")
    return (
        PPOConfig(algo_class=M3FCAlgorithm)
        .api_stack(enable_rl_module_and_learner=True, enable_env_runner_and_connector_v2=True)
        .framework("torch")
        # normalize_actions=True on Box(-1, 1) = clip to the bounds on the way to the env; the
        # unclipped sample is stored and scored (RLlib 1.8 too).  M3FCSampler does this;
        # evaluation (m3fmarl.evaluate.Policy.to_env) reads the flag from here.
        .environment(env_id, env_config=env_kwargs, normalize_actions=True, clip_actions=False)
        # Sampling is M3FCSampler's, in the driver; the one local env runner only provides the
        # spaces.  No observation filter (NoFilter), stochastic actions.
        .env_runners(num_env_runners=0, num_envs_per_env_runner=1, explore=True)
        .learners(num_learners=0, learner_class=learner_class,
                  learner_config_dict={SAMPLER_KEY: {"num_envs": int(num_envs), "fragment": fragment}})
        .rl_module(rl_module_spec=RLModuleSpec(module_class=M3FPPOTorchRLModule, model_config=dict(MODEL_CONFIG)))
        .callbacks(on_environment_created=on_environment_created)
        .reporting(metrics_num_episodes_for_smoothing=100)
        .debugging(seed=seed)
    )


def ppo_training(config: PPOConfig, settings: Any, variant: str) -> PPOConfig:
    """The PPO hyperparameters of ``settings`` (a :class:`m3fmarl.config.PPOSettings`) into
    ``config`` — the only place they are set; KL pair and minibatching default per variant
    (spec §1.2, §1.1 item 6).  Shared by M3FPPO and IPPO/MAPPO."""
    settings = settings.resolved(variant)
    config.learner_config_dict.update({
        VF_CLIP_KEY: settings.vf_clip_param, STANDARDIZE_KEY: True, KL_STAT_KEY: "mean",
        MINIBATCHING_KEY: settings.minibatching,
    })
    return config.training(
        gamma=settings.gamma, lambda_=settings.lambda_, lr=settings.lr,
        train_batch_size_per_learner=settings.train_batch_size, minibatch_size=settings.minibatch_size,
        num_epochs=settings.num_epochs, shuffle_batch_per_epoch=True, clip_param=settings.clip_param,
        use_kl_loss=settings.use_kl_loss,
        kl_coeff=settings.kl_coeff, kl_target=settings.kl_target,
        vf_loss_coeff=settings.vf_loss_coeff, entropy_coeff=settings.entropy_coeff,
        vf_clip_param=float("inf"),  # built-in 2.x clip off; the RLlib-1.8 clip is in the learner
        grad_clip=settings.grad_clip, use_gae=True, use_critic=True,
    )


def m3fppo_config(
    problem: str, num_minors: int, variant: str = "reference", *, seed: int = 0, settings: Any = None,
    fragment: int | None = None, env_config: dict[str, Any] | None = None, **overrides: Any,
) -> PPOConfig:
    """The PPOConfig of M3FPPO for one problem (spec §1.1–1.4, §1.10), RLlib 2.60 new API stack.

    Args:
        problem: problem name (``beach-bar``, ``foraging``, …; aliases as in
            :func:`m3fmarl.problems.canonical_name`) or its Gymnasium id.
        num_minors: N, the number of minor agents of the simulated system.
        variant: ``reference`` (the authors' code: KL coefficient 0.2 → target 0.03) or ``paper``
            (Table 3 read literally: coefficient 0.03 → target 0.01); also the env variant.
        seed: the run's seed; every iteration draws its action-sampling and minibatch seeds from
            (seed, iteration) (:func:`m3fmarl.sampling.iteration_seeds`).
        settings: a :class:`m3fmarl.config.PPOSettings` — the only source of the
            hyperparameters (default: its defaults = ``configs/algorithms/m3fppo.yaml``).  Its
            ``num_envs_per_env_runner`` is B, the copies the sampler steps together: each copy
            contributes ``train_batch_size / B`` consecutive steps per iteration; B = 120 makes
            that exactly 200 steps, so every iteration holds whole episodes (one per copy for
            T = 200, two for T = 100) as the reference's 200-step fragments of one env did.
        fragment: cut and bootstrap every copy's rollout every ``fragment`` steps; None = only at
            episode ends.
        env_config: extra env kwargs (switch overrides such as ``histogram="joint"``);
            ``num_minors`` and ``variant`` are set from the arguments.
        **overrides: fields of the settings dataclass (``lr=1e-4``, ``train_batch_size=2000``)
            replace those of ``settings``; any other name is a PPOConfig attribute applied last
            via ``update_from_dict`` (``learner_config_dict`` is merged).
    """
    from m3fmarl.config import PPOSettings

    s, rest = split_settings(settings, PPOSettings, overrides)
    config = m3fc_base_config(problem, num_minors, variant, seed=seed, num_envs=s.num_envs_per_env_runner,
                              fragment=fragment, env_config=env_config, learner_class=M3FPPOTorchLearner)
    return apply_overrides(ppo_training(config, s, variant), rest)


def apply_overrides(config: PPOConfig, overrides: dict[str, Any]) -> PPOConfig:
    """Apply ``**overrides`` of a config builder in place (and return the config): PPOConfig
    attributes set via ``update_from_dict``, unknown names refused with ``TypeError``, and a
    ``learner_config_dict`` merged over the one already in the config (not replacing it).
    Shared by :func:`m3fppo_config` and ``m3fa2c_config``."""
    if overrides:
        unknown = [k for k in overrides if not hasattr(config, k)]
        if unknown:
            raise TypeError(f"unknown PPOConfig setting(s): {', '.join(sorted(unknown))}")
        if "learner_config_dict" in overrides:
            overrides = {**overrides, "learner_config_dict": {**config.learner_config_dict,
                                                              **overrides["learner_config_dict"]}}
        config.update_from_dict(overrides)
    return config
