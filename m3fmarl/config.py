"""Typed settings loaded from commented YAML (``configs/``), rejecting unknown keys and bad values.

One source of truth: a frozen dataclass with a docstring under each field.  The YAML files in
``configs/algorithms/`` are instances of it; a test checks that every file's keys are exactly
the fields, so the two cannot drift.  Errors are :class:`ConfigError` (a ``ValueError``) with one
line naming the file, the key and the valid choices; the CLI prints it and exits 2.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
"""The repository's ``configs/`` folder."""


MINIBATCHINGS: tuple[str, ...] = ("shuffled", "reference")
"""Valid ``minibatching`` settings (``m3fmarl.algorithms.m3fppo.ReferenceMinibatches``)."""


GROUPINGS: tuple[str, ...] = ("ipc", "bins")
"""How HMF groups the minors at each episode start: ``ipc`` (the paper's K-means-style grouping,
farthest-point centres then assignment to the nearest group mean) or ``bins`` (fixed spatial bins:
the problem's histogram cells split into m contiguous ranges); ``marl_baselines.hmf``."""

REWARD_MODES: tuple[str, ...] = ("team", "sum")
"""HMF's TD targets from the team reward or from the paper's literal sums over agents."""


class ConfigError(ValueError):
    """A bad configuration file or value (one line, names the file and the key)."""


def _check_common(settings: Any, positive: tuple[str, ...]) -> None:
    """Checks shared by the settings classes: ``positive`` fields > 0, γ in (0, 1], λ in [0, 1]."""
    for name in positive:
        if getattr(settings, name) <= 0:
            raise ConfigError(f"{name} must be > 0, got {getattr(settings, name)}")
    if not 0.0 < settings.gamma <= 1.0:
        raise ConfigError(f"gamma must be in (0, 1], got {settings.gamma}")
    if not 0.0 <= settings.lambda_ <= 1.0:
        raise ConfigError(f"lambda_ must be in [0, 1], got {settings.lambda_}")


KL_BY_VARIANT: dict[str, tuple[float, float]] = {
    "reference": (0.2, 0.03),  # code: initial kl_coeff 0.2 (RLlib default), kl_target 0.03
    "paper": (0.03, 0.01),  # Table 3 read literally: coefficient 0.03, RLlib-1.8 default target
}
"""Variant → (initial kl_coeff, kl_target) where the settings say ``null``, spec §1.2."""

MINIBATCHING_BY_VARIANT: dict[str, str] = {"reference": "reference", "paper": "shuffled"}
"""Variant → minibatching where the settings say ``null`` (the paper does not say; standard PPO
reshuffles, the authors' stack sliced the collected batch)."""


@dataclasses.dataclass(frozen=True)
class PPOSettings:
    """PPO hyperparameters of M3FPPO (paper Table 3; spec/experiments.md §1.2, §1.10)."""

    gamma: float = 0.99
    """Discount factor γ."""
    lambda_: float = 1.0
    """GAE λ (1.0: advantages are bootstrapped discounted returns minus V)."""
    lr: float = 5e-5
    """Adam step size, constant."""
    clip_param: float = 0.2
    """PPO ratio clip ε."""
    use_kl_loss: bool = True
    """Add the adaptive KL penalty β·KL(π_old ‖ π)."""
    kl_coeff: float | None = None
    """Initial β; ``null`` = per variant (reference 0.2, paper 0.03; spec §1.2)."""
    kl_target: float | None = None
    """KL target of the adaptive β (×1.5 above 2×target, ×0.5 below target/2); ``null`` = per
    variant (reference 0.03, paper 0.01)."""
    vf_loss_coeff: float = 1.0
    """Weight of the value loss."""
    entropy_coeff: float = 0.0
    """Weight of the entropy bonus."""
    vf_clip_param: float | None = 10.0
    """RLlib-1.8 value clip: V − V_old clipped to ±this (spec H1); ``null`` = no clip."""
    grad_clip: float | None = None
    """Global gradient-norm clip; ``null`` = none (PPO reference)."""
    train_batch_size: int = 24_000
    """Env steps collected per training iteration."""
    minibatch_size: int = 4_000
    """Samples per gradient step; must divide train_batch_size."""
    num_epochs: int = 8
    """Passes over the train batch per iteration."""
    num_envs_per_env_runner: int = 120
    """Copies B of the batched env stepped together in one sampler."""
    minibatching: str | None = None
    """``shuffled`` (rows reshuffled every epoch, RLlib 2.x) or ``reference`` (contiguous slices
    in collection order, only their order permuted per epoch: the authors' RLlib 1.8 + MARLlib
    on one CPU, spec §1.1 item 6); ``null`` = per variant (reference → reference, paper →
    shuffled)."""

    MINIBATCHINGS: ClassVar[tuple[str, ...]] = MINIBATCHINGS
    MINIBATCHING_BY_VARIANT: ClassVar[dict[str, str]] = MINIBATCHING_BY_VARIANT

    def resolved(self, variant: str) -> PPOSettings:
        """The settings as a run of ``variant`` uses them: ``null`` KL coefficient, KL target and
        minibatching replaced by the variant's values (what ``config.yaml`` of a run records)."""
        kl_coeff, kl_target = KL_BY_VARIANT[variant]
        return dataclasses.replace(
            self, kl_coeff=kl_coeff if self.kl_coeff is None else self.kl_coeff,
            kl_target=kl_target if self.kl_target is None else self.kl_target,
            minibatching=self.minibatching or self.MINIBATCHING_BY_VARIANT[variant])

    def __post_init__(self) -> None:
        if self.minibatching is not None and self.minibatching not in self.MINIBATCHINGS:
            raise ConfigError(f"minibatching must be {', '.join(self.MINIBATCHINGS)} or null, "
                              f"got {self.minibatching!r}")
        _check_common(self, ("lr", "train_batch_size", "minibatch_size", "num_epochs", "num_envs_per_env_runner"))
        if self.train_batch_size % self.minibatch_size:
            raise ConfigError(f"minibatch_size ({self.minibatch_size}) must divide "
                              f"train_batch_size ({self.train_batch_size})")
        for name in ("kl_coeff", "kl_target", "vf_clip_param", "grad_clip"):
            value = getattr(self, name)
            if value is not None and (value <= 0 or math.isnan(value)):
                raise ConfigError(f"{name} must be > 0 or null, got {value}")


@dataclasses.dataclass(frozen=True)
class MFPPOSettings(PPOSettings):
    """MF-PPO (spec/experiments.md §4.1): IPPO's PPO settings (Table 3) plus the DeepSet network."""

    num_envs_per_env_runner: int = 24
    """Copies B of the multi-agent problem stepped together (as IPPO)."""
    deepset_form: str = "pooled"
    """Population embedding: ``pooled`` (mean_j φ([x_j, x0]) once per population, linear in N) or
    ``pairwise`` (mean_j φ([x_i, x_j, x0]) per agent, O(N²) per joint step; docs/benchmarks.md)."""
    deepset_hidden: int = 128
    """Width of φ's two tanh layers and of the actor and critic heads' two tanh layers (128: about
    IPPO's number of weights, 0.7×, and 1.2× its time per iteration; the spec's 256 has 2.6× the
    weights and takes 3.3×, docs/benchmarks.md)."""

    MINIBATCHINGS: ClassVar[tuple[str, ...]] = ("populations", "shuffled")
    MINIBATCHING_BY_VARIANT: ClassVar[dict[str, str]] = {"reference": "populations", "paper": "populations"}

    def __post_init__(self) -> None:
        super().__post_init__()
        from marl_baselines.deepset import FORMS

        if self.deepset_form not in FORMS:
            raise ConfigError(f"deepset_form must be {' or '.join(FORMS)}, got {self.deepset_form!r}")
        if self.deepset_hidden <= 0:
            raise ConfigError(f"deepset_hidden must be > 0, got {self.deepset_hidden}")


T = TypeVar("T")


def _check_type(where: str, name: str, value: Any, annotation: Any) -> Any:
    """``value`` converted to the field's type, or a ConfigError naming the expected type."""
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{where}: {name} may not be null")
    for t in options:
        if t is bool and isinstance(value, bool):
            return value
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t is float and isinstance(value, str):
            # PyYAML reads `5e-5` (no dot) as a string; YAML 1.2 and users mean a number.
            try:
                return float(value)
            except ValueError:
                pass
        if t is str and isinstance(value, str):
            return value
    names = " or ".join("null" if t is type(None) else t.__name__ for t in options)
    raise ConfigError(f"{where}: {name} must be {names}, got {value!r}")


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build the settings dataclass ``cls`` from ``data``; unknown keys and bad types refused."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {k: _check_type(where, k, v, hints[k]) for k, v in data.items()}
    try:
        return cls(**values)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None


def load(cls: type[T], path: str | Path) -> T:
    """Load ``path`` (YAML) into ``cls``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path.name}: not valid YAML ({str(err).splitlines()[0]})") from None
    return from_dict(cls, data, where=path.name)


@dataclasses.dataclass(frozen=True)
class A2CSettings:
    """A2C hyperparameters of M3FA2C (spec/experiments.md §1.5: PPO's values where they apply,
    RLlib-1.8 A2C defaults elsewhere)."""

    gamma: float = 0.99
    """Discount factor γ."""
    lambda_: float = 1.0
    """GAE λ."""
    lr: float = 5e-5
    """Adam step size, constant."""
    vf_loss_coeff: float = 1.0
    """Weight of the value loss (½ Σ (V − R)²)."""
    entropy_coeff: float = 0.0
    """Weight of the entropy bonus."""
    grad_clip: float | None = 40.0
    """Global gradient-norm clip (RLlib-1.8 A2C default 40); ``null`` = none."""
    train_batch_size: int = 24_000
    """Env steps per iteration; one gradient step on the whole batch."""
    rollout_fragment_length: int = 20
    """Steps per copy between bootstraps (RLlib-1.8 A2C default 20); train_batch_size must be a
    multiple of rollout_fragment_length × num_envs_per_env_runner."""
    num_envs_per_env_runner: int = 120
    """Copies B of the batched env (120 × 20 × 10 = 24000)."""

    def resolved(self, variant: str) -> A2CSettings:
        """The settings as a run of ``variant`` uses them (no per-variant ``null`` here)."""
        return self

    def __post_init__(self) -> None:
        _check_common(self, ("lr", "train_batch_size", "rollout_fragment_length", "num_envs_per_env_runner"))
        chunk = self.rollout_fragment_length * self.num_envs_per_env_runner
        if self.train_batch_size % chunk:
            raise ConfigError(f"train_batch_size ({self.train_batch_size}) must be a multiple of "
                              f"rollout_fragment_length × num_envs_per_env_runner ({chunk})")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"grad_clip must be > 0 or null, got {self.grad_clip}")


@dataclasses.dataclass(frozen=True)
class HMFSettings:
    """HMF, hierarchical mean-field Q-learning (spec/experiments.md §4.2).  The seed paper's
    hyperparameter tables are not in our copy: every value is the spec's placeholder or our
    choice, measured where docs/hmf.md says."""

    gamma: float = 0.99
    """Discount factor γ of both TD levels."""
    lr: float = 5e-4
    """Adam step size, constant (one optimiser per policy's networks)."""
    grad_clip: float | None = 10.0
    """Global gradient-norm clip; ``null`` = none."""
    train_batch_size: int = 24_000
    """Joint env steps sampled per training iteration (as IPPO, so curves share their x-axis)."""
    num_envs_per_env_runner: int = 16
    """Copies B stepped together (must divide train_batch_size / rollout_steps)."""
    rollout_steps: int = 4
    """Steps per copy between learning phases (B·rollout_steps joint transitions per phase)."""
    minibatch_size: int = 64
    """Joint transitions per gradient step."""
    training_intensity: float = 4.0
    """Replayed joint transitions per sampled one (gradient steps per phase = B·rollout_steps·
    training_intensity / minibatch_size; fractions carry over)."""
    replay_capacity: int = 100_000
    """Joint transitions kept (RLlib's ReplayBuffer, uniform sampling; each stores two global
    states, ``MultiAgentCore.global_state_dim`` floats each)."""
    learning_starts: int = 1_000
    """Joint transitions in the buffer before the first gradient step."""
    tau: float = 0.01
    """Soft target update θ̂ ← τθ + (1 − τ)θ̂ after every gradient step."""
    epsilon_initial: float = 1.0
    """ε of the ε-greedy exploration on Q_LOC at the start."""
    epsilon_final: float = 0.05
    """ε from ``exploration_fraction`` of the run on (linear in between)."""
    exploration_fraction: float = 0.2
    """Part of the run's planned joint env steps (iterations asked for × train_batch_size) over
    which ε anneals (spec §4.2: the first 20 %)."""
    hidden: int = 256
    """Width of the two tanh layers of Q_LOC and Q_GMF."""
    key_dim: int = 64
    """Key width of the group attention."""
    gmf_actions: bool = False
    """Whether the mean field μ averages the members' (observation, action) as in the paper
    (``true``) or their observations only (``false``).  With team rewards the paper's form makes
    the action-choosing Q_LOC learn inverted preferences (``marl_baselines.hmf.HMFNetworks``,
    docs/hmf.md); ``false`` keeps the two-level structure with Q_GMF a group's state value."""
    num_groups: int = 2
    """Groups m of minors (the major is a group of its own); 1 ≤ m ≤ N."""
    grouping: str = "ipc"
    """``ipc`` (the paper's K-means-style grouping on the minors' own states at each episode
    start) or ``bins`` (fixed ranges of the problem's histogram cells)."""
    ipc_iterations: int = 3
    """Rounds of "join the nearest group mean" after the farthest-point start."""
    reward_mode: str = "team"
    """TD targets from the team reward r (``team``) or the paper's literal sums over the group's
    / all agents' rewards (``sum``: r times the number of agents)."""
    alpha: float = 0.0
    """Weight of the member-to-mean regulariser α Σ_k ‖x_k − μ(x)‖² (0 = off)."""
    group_kl_coeff: float = 0.0
    """Weight of KL(π_k ‖ group mean policy) with π_k = softmax(Q_LOC) (0 = off)."""

    def resolved(self, variant: str) -> HMFSettings:
        """The settings as a run of ``variant`` uses them (HMF has no per-variant values)."""
        return self

    def __post_init__(self) -> None:
        for name in ("lr", "train_batch_size", "num_envs_per_env_runner", "rollout_steps", "minibatch_size",
                     "training_intensity", "replay_capacity", "exploration_fraction", "hidden", "key_dim",
                     "num_groups", "ipc_iterations"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 < self.gamma <= 1.0:
            raise ConfigError(f"gamma must be in (0, 1], got {self.gamma}")
        if not 0.0 < self.tau <= 1.0:
            raise ConfigError(f"tau must be in (0, 1], got {self.tau}")
        for name in ("epsilon_initial", "epsilon_final", "exploration_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("alpha", "group_kl_coeff", "learning_starts"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"grad_clip must be > 0 or null, got {self.grad_clip}")
        if self.grouping not in GROUPINGS:
            raise ConfigError(f"grouping must be {' or '.join(GROUPINGS)}, got {self.grouping!r}")
        if self.reward_mode not in REWARD_MODES:
            raise ConfigError(f"reward_mode must be {' or '.join(REWARD_MODES)}, got {self.reward_mode!r}")
        chunk = self.num_envs_per_env_runner * self.rollout_steps
        if self.train_batch_size % chunk:
            raise ConfigError(f"train_batch_size ({self.train_batch_size}) must be a multiple of "
                              f"num_envs_per_env_runner × rollout_steps ({chunk})")
        if self.minibatch_size > self.replay_capacity:
            raise ConfigError(f"minibatch_size ({self.minibatch_size}) must not exceed replay_capacity "
                              f"({self.replay_capacity})")


def settings_class(name: str) -> type:
    """The settings dataclass of algorithm ``name`` (from :mod:`m3fmarl.registry`)."""
    from m3fmarl import registry

    try:
        return registry.get(name).settings_class()
    except ValueError as err:
        raise ConfigError(str(err)) from None


def load_algorithm(name: str, path: str | Path | None = None) -> Any:
    """The settings of algorithm ``name`` from ``path`` or ``configs/algorithms/<name>.yaml``."""
    return load(settings_class(name), path or CONFIG_DIR / "algorithms" / f"{name}.yaml")
