"""Evaluation of trained M3FC policies (spec/experiments.md §2.0, §1.4).

A policy trained by M3FPPO (an RLlib 2.60 ``RLModule``) is run in the batched
:class:`~m3fmarl.m3fc.vector.M3FCVectorEnv` for full episodes with **stochastic** actions, at any
number of minors N (transfer over N: the policy depends on N only through the histogram), under
centralised (CE) or decentralised (DE) execution:

* CE: one upper-level action sample per copy and step, shared by all minors;
* DE: N independent samples per copy and step from the same observation; minor i decodes the
  i-th sample, the major acts on the first (the DE action layout of :mod:`m3fmarl.m3fc.env`).

Actions are sampled as RLlib's env runner does with ``explore=True``: ``forward_exploration``,
the module's exploration action distribution built from ``ACTION_DIST_INPUTS``, ``sample()``;
then the env runner's ``NormalizeAndClipActions`` step (``normalize_actions=True``: unsquash,
which on Box(−1, 1) is the identity, then clip to [−1, 1]; Discrete parts unchanged).

For DE the network is evaluated once per copy and the distribution inputs are repeated N times
before sampling: all B·N samples come from one batched ``sample()`` call.  This is the same
distribution as N forward passes on the same observation (the network is deterministic) at 1/N
of the cost.

Reproducibility: everything is seeded from ``seed`` and N (``np.random.SeedSequence([seed, N])``
gives the env seed and the torch seed); sampling uses torch's CPU generator inside
``torch.random.fork_rng``, so the caller's torch RNG state is left untouched and RLlib's own
distribution classes do the sampling.

Public API: :func:`load_policy`, :class:`Policy` (also :meth:`Policy.from_algorithm` for an
in-memory algorithm), :func:`evaluate`, :class:`EvalResult`, :data:`EVAL_EPISODES`.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tree
from gymnasium import spaces
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.utils.spaces.space_utils import clip_action, get_base_struct_from_space, unsquash_action

import m3fmarl
from m3fmarl.m3fc.env import EXECUTIONS
from m3fmarl.m3fc.vector import M3FCVectorEnv
from m3fmarl.problems import canonical_name
from m3fmarl.problems.core import VARIANTS, check_choice
from m3fmarl.rollout import ReturnStats, play
from m3fmarl.util import int_list, torch_threads

EVAL_EPISODES: dict[str, int] = {
    "two-gaussians": 100,
    "formation": 100,
    "beach-bar": 100,
    "foraging": 300,
    "potential": 500,
}
"""Evaluation episodes per problem and (N, execution) (spec §2.0, Fig. 9 caption)."""

MODULE_SUBPATH = Path("learner_group") / "learner" / "rl_module" / DEFAULT_MODULE_ID
"""Where an Algorithm checkpoint keeps the trained (full, learner-side) default module."""

_ENV_ID_TO_PROBLEM = {env_id: name for name, env_id in m3fmarl.ENV_IDS.items()}
_ENV_KWARGS_NOT_SWITCHES = ("num_minors", "variant", "execution", "render_mode", "num_envs", "problem")
_EXPECTED = ("an RLlib 2.60 Algorithm checkpoint directory of an m3fmarl env, as written by "
             "algo.save_to_path() (with rllib_checkpoint.json, class_and_ctor_args.pkl and "
             f"{MODULE_SUBPATH.as_posix()}/), or a policy export (policy.json + policy.pt)")


# --- the policy ------------------------------------------------------------------------------


@dataclass
class Policy:
    """A trained M3FC policy: its RLModule plus what training recorded about the environment.

    Attributes:
        module: the torch RLModule (full or inference-only) with ``forward_exploration`` and
            ``get_exploration_action_dist_cls``.
        problem: canonical problem name of training (``beach-bar``, …), None if unknown.
        variant: env variant of training, None if unknown.
        num_minors: N of training, None if unknown.
        env_config: the other env kwargs of training (switch overrides such as
            ``histogram="joint"``); applied at evaluation too.
        normalize_actions, clip_actions: the RLlib action post-processing of training
            (``NormalizeAndClipActions``); M3FPPO uses (True, False).
        checkpoint: the checkpoint directory it was loaded from, if any.
    """

    module: RLModule
    problem: str | None = None
    variant: str | None = None
    num_minors: int | None = None
    env_config: dict[str, Any] = field(default_factory=dict)
    normalize_actions: bool = True
    clip_actions: bool = False
    checkpoint: Path | None = None

    def __post_init__(self) -> None:
        if self.problem is not None:
            self.problem = canonical_name(self.problem)
        if self.variant is not None:
            check_choice("variant", self.variant, VARIANTS)
        self._action_struct = get_base_struct_from_space(self.module.action_space)

    @classmethod
    def from_algorithm(cls, algo: Any, module_id: str = DEFAULT_MODULE_ID) -> Policy:
        """The policy of an in-memory RLlib Algorithm (the env runner's module, as sampled with)."""
        return cls.from_config_state(algo.get_module(module_id), algo.config.get_state())

    @classmethod
    def from_config_state(cls, module: RLModule, config: Mapping[str, Any], checkpoint: Path | None = None) -> Policy:
        """Policy from a module and an ``AlgorithmConfig.get_state()`` dict (env id, env_config,
        action post-processing).  Raises ``ValueError`` if the env is not an m3fmarl env."""
        env = config.get("env")
        if env not in _ENV_ID_TO_PROBLEM:
            raise ValueError(f"the algorithm was trained on env {env!r}, not an m3fmarl env "
                             f"({', '.join(_ENV_ID_TO_PROBLEM)})")
        env_config = dict(config.get("env_config") or {})
        n = env_config.get("num_minors")
        return cls(
            module=module,
            problem=_ENV_ID_TO_PROBLEM[env],
            variant=env_config.get("variant"),
            num_minors=None if n is None else int(n),
            env_config={k: v for k, v in env_config.items() if k not in _ENV_KWARGS_NOT_SWITCHES},
            normalize_actions=bool(config.get("normalize_actions", True)),
            clip_actions=bool(config.get("clip_actions", False)),
            checkpoint=checkpoint,
        )

    # --- acting --------------------------------------------------------------------------------
    def sample(self, obs: np.ndarray, samples_per_obs: int | None = None) -> Any:
        """Raw stochastic actions for a batch of observations ``(B, obs_dim)``, drawn from torch's
        global generator (seed it, or use :func:`evaluate`).

        ``samples_per_obs=None``: one sample per observation, leaves of shape ``(B, …)`` (CE).
        ``samples_per_obs=N``: N independent samples per observation, leaves ``(B, N, …)`` (DE).
        Returns a numpy array (plain Box space) or a tuple of arrays (Tuple space).
        """
        module = self.module
        with torch.no_grad():
            out = module.forward_exploration({Columns.OBS: torch.as_tensor(obs, dtype=torch.float32)})
            inputs = out[Columns.ACTION_DIST_INPUTS]
            if samples_per_obs is not None:
                inputs = inputs.repeat_interleave(int(samples_per_obs), dim=0)
            dist = module.get_exploration_action_dist_cls().from_logits(inputs)
            actions = dist.sample()
        batch = obs.shape[0]
        if samples_per_obs is None:
            return tree.map_structure(lambda t: t.numpy(), actions)
        return tree.map_structure(lambda t: t.numpy().reshape(batch, int(samples_per_obs), *t.shape[1:]), actions)

    def to_env(self, actions: Any) -> Any:
        """RLlib's ``NormalizeAndClipActions`` on (batched) raw actions: unsquash + clip every
        bounded float Box part (``normalize_actions``), or only clip (``clip_actions``)."""
        if self.normalize_actions:
            return unsquash_action(actions, self._action_struct)
        if self.clip_actions:
            return clip_action(actions, self._action_struct)
        return actions


# --- loading ---------------------------------------------------------------------------------


def load_policy(checkpoint: str | Path) -> Policy:
    """Load the trained default RLModule of an RLlib 2.60 Algorithm checkpoint (``algo.save_to_path``),
    or of a policy export (:mod:`m3fmarl.export`: ``policy.json`` + ``policy.pt``).

    Only the module is built (``RLModule.from_checkpoint`` on
    ``learner_group/learner/rl_module/default_policy``): no Algorithm, no env runners, no Ray.
    The problem, variant, training N, switch overrides and action post-processing are read from
    the algorithm config stored in the checkpoint (``class_and_ctor_args.pkl``).

    Raises:
        ValueError: the path does not exist, or is not an Algorithm checkpoint of an m3fmarl env.
    """
    from m3fmarl.export import is_export, load_modules

    path = Path(checkpoint).expanduser().resolve()  # RLlib needs absolute paths
    if not path.exists():
        raise ValueError(f"checkpoint {str(path)!r} does not exist; expected {_EXPECTED}")
    if is_export(path):  # a compact policy export (results/<budget>/trials/*/)
        modules, meta = load_modules(path)
        if meta["view"] != "m3fc":
            raise ValueError(f"{str(path)!r} is a policy export of an IPPO/MAPPO policy, not an M3FC policy")
        return Policy(module=modules["default_policy"], problem=meta["problem"], variant=meta["variant"],
                      num_minors=int(meta["num_minors"]), env_config=dict(meta.get("switches") or {}),
                      normalize_actions=bool(meta.get("normalize_actions", True)),
                      clip_actions=bool(meta.get("clip_actions", False)), checkpoint=path)
    if not path.is_dir():
        raise ValueError(f"checkpoint {str(path)!r} is not a directory; expected {_EXPECTED}")
    ctor_file = path / "class_and_ctor_args.pkl"
    module_dir = path / MODULE_SUBPATH
    if not (path / "rllib_checkpoint.json").is_file() or not ctor_file.is_file() or not module_dir.is_dir():
        raise ValueError(f"{str(path)!r} is not an RLlib Algorithm checkpoint; expected {_EXPECTED}")

    from ray.rllib.algorithms.algorithm import Algorithm

    try:
        with ctor_file.open("rb") as f:
            ctor_info = pickle.load(f)
        algo_class = ctor_info["class"]
        config = ctor_info["ctor_args_and_kwargs"][0][0]
    except Exception as e:  # noqa: BLE001 - any unreadable file means "not our checkpoint"
        raise ValueError(f"{str(path)!r}: cannot read the stored algorithm config ({type(e).__name__}: {e}); "
                         f"expected {_EXPECTED}") from e
    if not (isinstance(algo_class, type) and issubclass(algo_class, Algorithm)):
        raise ValueError(f"{str(path)!r} holds a {algo_class!r} checkpoint, not an Algorithm; expected {_EXPECTED}")
    if not isinstance(config, Mapping):
        config = config.get_state()  # an AlgorithmConfig object
    try:
        with torch.random.fork_rng(devices=[]):  # module setup draws initial weights: keep the caller's RNG
            module = RLModule.from_checkpoint(module_dir)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{str(module_dir)!r}: cannot load the RLModule ({type(e).__name__}: {e}); "
                         f"expected {_EXPECTED}") from e
    if not (isinstance(module, torch.nn.Module) and hasattr(module, "forward_exploration")):
        raise ValueError(f"{str(module_dir)!r} holds a {type(module).__name__}, not a torch RLModule")
    try:
        return Policy.from_config_state(module, config, checkpoint=path)
    except ValueError as e:
        raise ValueError(f"{str(path)!r}: {e}; expected {_EXPECTED}") from e


# --- evaluation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalResult:
    """Return statistics of one (N, execution) evaluation: sample std (ddof 1) and the 95% CI
    half-width ``1.96·std/√episodes``."""

    problem: str
    variant: str
    num_minors: int
    execution: str
    episodes: int
    mean: float
    std: float
    ci95: float
    seed: int
    train_num_minors: int | None = None
    returns: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)

    def to_dict(self, returns: bool = False) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("problem", "variant", "num_minors", "execution", "episodes",
                                           "mean", "std", "ci95", "seed", "train_num_minors")}
        if returns:
            d["returns"] = [float(r) for r in self.returns]
        return d


def _space_signature(space: spaces.Space, drop_lead: bool) -> list[tuple]:
    """Per-part (kind, shape, size) of an action space; ``drop_lead`` removes the DE axis N."""
    parts = space.spaces if isinstance(space, spaces.Tuple) else (space,)
    sig = []
    for s in parts:
        if isinstance(s, spaces.Box):
            sig.append(("box", s.shape[1:] if drop_lead else s.shape))
        elif isinstance(s, spaces.MultiDiscrete) and drop_lead:
            sig.append(("discrete", int(s.nvec.flat[0])))
        elif isinstance(s, spaces.Discrete):
            sig.append(("discrete", int(s.n)))
        else:
            sig.append((type(s).__name__, getattr(s, "shape", None)))
    return sig


def evaluate(
    policy: Policy | RLModule,
    problem: str | None = None,
    num_minors: int | Sequence[int] | None = None,
    episodes: int | None = None,
    execution: str = "centralized",
    variant: str | None = None,
    seed: int = 0,
    num_envs: int = 100,
    switches: Mapping[str, Any] | None = None,
) -> list[EvalResult]:
    """Mean episode return of ``policy`` with stochastic actions, for each N in ``num_minors``.

    Args:
        policy: a :class:`Policy` (from :func:`load_policy` or :meth:`Policy.from_algorithm`) or a
            bare RLModule (then ``problem`` and ``variant`` are required).
        problem: problem name; default the policy's training problem (a different one raises).
        num_minors: N or a list of N to evaluate at; default the training N.
        episodes: full episodes per N; default per problem (:data:`EVAL_EPISODES`: 100 for 2G,
            Formation, Beach bar, 300 Foraging, 500 Potential).
        execution: ``centralized`` (one sample per copy and step) or ``decentralized`` (N
            independent samples per copy and step; the major acts on the first).
        variant: env variant; default the policy's training variant.
        seed: non-negative integer; results are a deterministic function of (policy, seed, N,
            settings).  Env seed and sampling seed come from ``SeedSequence([seed, N])``.
        num_envs: copies stepped together (B); the last batch is cut to ``episodes``.
        switches: per-switch env overrides, applied over the training ``env_config``.

    Returns:
        One :class:`EvalResult` per N, in the given order.

    Raises:
        ValueError: unknown problem/variant/execution, bad N/episodes/seed/num_envs, problem
            differing from the policy's, or env spaces that do not fit the module.
    """
    if not isinstance(policy, Policy):
        policy = Policy(module=policy)
    name = canonical_name(problem) if problem is not None else policy.problem
    if name is None:
        raise ValueError("problem unknown: the policy carries no training problem; pass problem=")
    if policy.problem is not None and name != policy.problem:
        raise ValueError(f"the policy was trained on {policy.problem!r}, cannot evaluate it on {name!r}")
    variant = variant if variant is not None else policy.variant
    if variant is None:
        raise ValueError("variant unknown: the policy carries no training variant; pass variant=")
    check_choice("variant", variant, VARIANTS)
    check_choice("execution", execution, EXECUTIONS)
    if num_minors is None:
        if policy.num_minors is None:
            raise ValueError("num_minors unknown: the policy carries no training N; pass num_minors=")
        num_minors = policy.num_minors
    ns = int_list("num_minors", num_minors)
    episodes = EVAL_EPISODES[name] if episodes is None else episodes
    (episodes,) = int_list("episodes", episodes)
    (num_envs,) = int_list("num_envs", num_envs)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    env_kwargs = {**policy.env_config, **(switches or {})}

    results = []
    with torch_threads(1):
        for n in ns:
            returns = _episode_returns(policy, name, n, variant, execution, episodes, int(seed), num_envs, env_kwargs)
            stats = ReturnStats.of(returns)
            results.append(EvalResult(
                problem=name, variant=variant, num_minors=n, execution=execution, episodes=stats.episodes,
                mean=stats.mean, std=stats.std, ci95=stats.ci95,
                seed=int(seed), train_num_minors=policy.num_minors, returns=returns,
            ))
    return results


def _episode_returns(
    policy: Policy, problem: str, n: int, variant: str, execution: str, episodes: int, seed: int,
    num_envs: int, env_kwargs: Mapping[str, Any],
) -> np.ndarray:
    env_seed, torch_seed = (int(s) for s in np.random.SeedSequence([seed, n]).generate_state(2))
    env = M3FCVectorEnv(problem, num_envs=min(num_envs, episodes), num_minors=n, variant=variant,
                        execution=execution, **env_kwargs)
    _check_spaces(policy, env)
    de = execution == "decentralized"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed)
        return play(env, lambda obs: policy.to_env(policy.sample(obs, n if de else None)), episodes, env_seed)


def _check_spaces(policy: Policy, env: M3FCVectorEnv) -> None:
    module = policy.module
    obs_env, obs_mod = env.single_observation_space.shape, module.observation_space.shape
    act_env = _space_signature(env.single_action_space, env.core.decentralized)
    act_mod = _space_signature(module.action_space, False)
    if obs_env != obs_mod or act_env != act_mod:
        p = env.problem
        raise ValueError(
            f"{p.name} ({p.variant}, N={p.num_minors}) does not fit the policy: env observation {obs_env}, "
            f"action parts {act_env}; module observation {obs_mod}, action parts {act_mod}"
        )


__all__ = ["EVAL_EPISODES", "EvalResult", "Policy", "evaluate", "load_policy"]
