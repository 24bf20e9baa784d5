"""M3FA2C: single-agent A2C on the batched M3FC environment, expressed through RLlib 2.60's PPO.

Spec: ``spec/experiments.md`` §1.5 (M3FA2C), with §1.1 (shared RLlib-1.8 mechanics), §1.2 and
§1.10.  RLlib 2.60 has no A2C (hazard H6), so M3FA2C is a ``PPOConfig`` whose learner performs the
RLlib-1.8 A2C update:

* one gradient step per iteration on the whole train batch (``num_epochs=1``,
  ``minibatch_size=None`` → RLlib's ``MiniBatchDummyIterator`` yields the batch once);
* loss (reference, sum-reduced over the real time steps of the batch)
  ``−Σ A·log π(a|o) + c_vf·½ Σ (V − R)² − c_ent·Σ H`` with c_vf 1, c_ent 0 — written out in
  :class:`M3FA2CTorchLearner`, not obtained from PPO's surrogate;
* advantages GAE(γ 0.99, λ 1.0) **not** standardised (H3), value targets R = A + V_old, no value
  clipping, no KL term, global-norm gradient clip 40, Adam lr 5e-5;
* rollout fragments of 20 steps (RLlib-1.8 A2C default): every copy of the vector env is sampled
  20 steps per ``sample()`` call, the episode chunk is cut there and its advantages bootstrap from
  V of the next observation, exactly as RLlib 1.8 post-processed each 20-step fragment.

The network, the GAE connector and the sampling path are M3FPPO's (:mod:`.m3fppo`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.algorithms.ppo.ppo import LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import ENTROPY_KEY, POLICY_LOSS_KEY, VF_LOSS_KEY
from ray.rllib.utils.torch_utils import explained_variance

from m3fmarl.algorithms.m3fppo import (
    STANDARDIZE_KEY,
    VF_CLIP_KEY,
    M3FPPOTorchLearner,
    apply_overrides,
    m3fc_base_config,
    split_settings,
)

LOSS_REDUCTION_KEY = "a2c_loss_reduction"
"""``learner_config_dict`` key: ``"sum"`` over the real time steps of the batch (RLlib 1.8 A2C,
both variants) or ``"mean"`` (sum / number of real steps; not used by any experiment)."""



class M3FA2CTorchLearner(M3FPPOTorchLearner):
    """PPO torch learner that performs the RLlib-1.8 A2C update (spec §1.5).

    Why a subclass: RLlib 2.60 has no A2C, and its PPO loss is a *mean* over the minibatch of
    ``−min(r·A, clip(r)·A) + c_vf·clamp((V − R)², 0, c)`` (+ KL).  The reference A2C loss
    (RLlib 1.8 ``a3c_torch_policy.actor_critic_loss``) is *sum*-reduced,
    ``−Σ A·log π(a|o) + c_vf·½ Σ (V − R)² − c_ent·Σ H``, and the reduction matters because of
    the global-norm gradient clip at 40 (with ~24 000 summed samples the clip is active on
    essentially every step, so sum vs mean changes the update; Adam alone would be nearly
    invariant to the scale).  The per-module loss has no hook for the reduction, so
    ``compute_loss_for_module`` is replaced here by the A2C formula.

    On equivalence with PPO: with one epoch of one full-batch minibatch the PPO ratio
    r = π_θ/π_old is 1 at the only gradient step (θ = θ_old), so ∇(r·A) = A·∇log π and an
    unclipped surrogate would give the same policy gradient (up to the mean/sum scale).  That
    relies on ``ACTION_LOGP`` from the env runner matching the learner's log-prob to float
    precision and on the clip range being inactive; the explicit −A·log π avoids both
    assumptions and does not read ``ACTION_LOGP`` at all.

    Everything else is inherited from :class:`M3FPPOTorchLearner`: the GAE connector (here with
    standardisation off, ``learner_config_dict["standardize_advantages"] = False``), one torch
    thread, the learner state.  Only real time steps count (``Columns.LOSS_MASK``; RLlib's
    artificial bootstrap rows are excluded).  Gradient clipping is RLlib's
    (``grad_clip=40``, ``grad_clip_by="global_norm"``: g ← g·40/max(‖g‖ + 1e-6, 40) over all
    parameters of the module's single Adam optimizer, as ``clip_grad_norm_`` did in RLlib 1.8).

    ``build`` refuses settings that would make this something other than A2C: a KL loss, more
    than one epoch or a minibatch size (which would take several steps on one batch with a loss
    that has no off-policy correction).
    """

    def build(self) -> None:
        cfg = self.config
        if cfg.use_kl_loss:
            raise ValueError("M3FA2C has no KL term: set use_kl_loss=False")
        if cfg.num_epochs != 1 or cfg.minibatch_size is not None:
            raise ValueError(
                "M3FA2C takes one gradient step on the whole batch: num_epochs=1, minibatch_size=None "
                f"(got num_epochs={cfg.num_epochs}, minibatch_size={cfg.minibatch_size})"
            )
        reduction = cfg.learner_config_dict.get(LOSS_REDUCTION_KEY, "sum")
        if reduction not in ("sum", "mean"):
            raise ValueError(f"{LOSS_REDUCTION_KEY} must be 'sum' or 'mean', got {reduction!r}")
        super().build()

    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict[str, Any], fwd_out: dict) -> Any:
        module = self.module[module_id].unwrapped()
        mask = batch.get(Columns.LOSS_MASK)
        if mask is not None:
            mask = mask.bool()
        num_valid = mask.sum() if mask is not None else batch[Columns.ADVANTAGES].shape[0]
        per_step = config.learner_config_dict.get(LOSS_REDUCTION_KEY, "sum") == "mean"

        def reduce(x: torch.Tensor) -> torch.Tensor:
            total = torch.sum(x[mask]) if mask is not None else torch.sum(x)
            return total / num_valid if per_step else total

        dist = module.get_train_action_dist_cls().from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
        logp = dist.logp(batch[Columns.ACTIONS])
        adv = batch[Columns.ADVANTAGES].detach()
        values = module.compute_values(batch, embeddings=fwd_out.get(Columns.EMBEDDINGS))
        targets = batch[Columns.VALUE_TARGETS].detach()
        entropy = dist.entropy()
        entropy_coeff = self.entropy_coeff_schedulers_per_module[module_id].get_current_value()

        policy_loss = -reduce(adv * logp)
        vf_loss = 0.5 * reduce((values - targets) ** 2)
        entropy_sum = reduce(entropy)
        total = policy_loss + config.vf_loss_coeff * vf_loss - entropy_coeff * entropy_sum

        valid_t = targets if mask is None else targets[mask]
        valid_v = values if mask is None else values[mask]
        self.metrics.log_dict(
            {
                POLICY_LOSS_KEY: policy_loss,
                VF_LOSS_KEY: vf_loss,
                LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY: explained_variance(valid_t, valid_v),
                ENTROPY_KEY: entropy_sum / (1 if per_step else num_valid),  # mean entropy per step
                "num_valid_steps": num_valid,
            },
            key=module_id,
            window=1,
        )
        return total


def m3fa2c_config(
    problem: str, num_minors: int, variant: str = "reference", *, seed: int = 0, settings: Any = None,
    env_config: dict[str, Any] | None = None, **overrides: Any,
) -> PPOConfig:
    """The PPOConfig of M3FA2C for one problem (spec §1.5), RLlib 2.60 new API stack.

    The M3FC base of :func:`m3fmarl.algorithms.m3fppo.m3fc_base_config` (same env, sampler,
    network, normc initialisation, action clipping, reporting) with the A2C update:
    :class:`M3FA2CTorchLearner`; ``num_epochs=1`` and ``minibatch_size=None`` (one gradient step
    on the whole batch, so no shuffling); no KL term; ``clip_param=inf`` (unused by the A2C loss;
    were the PPO surrogate used, the ratio is 1 on the single pass anyway); no value clipping;
    advantage standardisation off (H3); global-norm gradient clip; loss sum-reduced.  These define
    the algorithm; every hyperparameter — γ, λ, lr, vf coefficient, entropy coefficient, gradient
    clip, batch, copies, rollout fragment — comes from ``settings``.

    ``variant``: ``paper`` = ``reference`` for the algorithm (spec §1.5 [judgement]: the paper
    defers to "the same hyperparameters as in PPO" and otherwise defaults, and the only
    PPO-specific paper/code difference, the KL pair, does not exist in A2C).  The variant is
    still passed to the environment, whose switches differ between variants.

    Args:
        problem, num_minors, seed, env_config: as in ``m3fppo_config``.
        settings: a :class:`m3fmarl.config.A2CSettings` (default: its defaults =
            ``configs/algorithms/m3fa2c.yaml``): 120 copies with fragments of 20 make each copy
            contribute 10 fragments = 200 steps per iteration — for T = 200 one whole episode,
            for T = 100 two, the reference's 1 200 fragments of 20 steps.  Every copy's rollout is
            cut every ``rollout_fragment_length`` steps and bootstrapped from V there (the
            RLlib-1.8 A2C default 20); ``train_batch_size`` must be a multiple of fragment × B.
        **overrides: fields of the settings dataclass replace those of ``settings``; any other
            name is a PPOConfig attribute applied last (``learner_config_dict`` is merged, e.g.
            ``{"a2c_loss_reduction": "mean"}``); unknown names raise ``TypeError``.
    """
    from m3fmarl.config import A2CSettings

    s, rest = split_settings(settings, A2CSettings, overrides)
    config = m3fc_base_config(problem, num_minors, variant, seed=seed, num_envs=s.num_envs_per_env_runner,
                              fragment=s.rollout_fragment_length, env_config=env_config,
                              learner_class=M3FA2CTorchLearner)
    config.learner_config_dict.update({VF_CLIP_KEY: None, STANDARDIZE_KEY: False, LOSS_REDUCTION_KEY: "sum"})
    config.training(
        num_epochs=1, minibatch_size=None, shuffle_batch_per_epoch=False, use_kl_loss=False, kl_coeff=0.0,
        clip_param=math.inf, vf_clip_param=math.inf, grad_clip=s.grad_clip, grad_clip_by="global_norm",
        gamma=s.gamma, lambda_=s.lambda_, lr=s.lr, vf_loss_coeff=s.vf_loss_coeff, entropy_coeff=s.entropy_coeff,
        train_batch_size_per_learner=s.train_batch_size,
    )
    return apply_overrides(config, rest)
