"""Evaluation of trained IPPO/MAPPO policies with the paper's protocol (spec §2.0).

Every agent samples its own action from its policy (stochastic, clipped to [−1, 1] as in
training) for full episodes; the return is the undiscounted team return.  The actors see only
their own observation, whose size does not depend on N, so a policy trained at one N runs
unchanged at any other (the MAPPO critic, which depends on N, is not needed to act).

The result rows are :class:`m3fmarl.evaluate.EvalResult` with ``execution="multi-agent"``, so
one table holds M3F and multi-agent results.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from m3fmarl.multiagent.core import MultiAgentCore
from m3fmarl.problems.core import check_choice
from m3fmarl.rollout import ReturnStats
from m3fmarl.util import torch_threads

EXECUTION = "multi-agent"
"""The ``execution`` label of multi-agent evaluation results."""

MODULES_SUBPATH = Path("learner_group") / "learner" / "rl_module"


@dataclass
class MARLPolicy:
    """Trained IPPO/MAPPO policies: ``modules`` maps ``major``/``minor`` to RLModules."""

    modules: dict[str, Any]
    algo: str
    problem: str
    variant: str
    num_minors: int
    switches: dict[str, Any] = field(default_factory=dict)
    checkpoint: Path | None = None


def is_marl_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is an Algorithm checkpoint with a ``minor`` module (IPPO/MAPPO), or a
    policy export (:mod:`m3fmarl.export`) of one."""
    from m3fmarl.export import is_export, read_meta

    if is_export(path):
        try:
            return read_meta(path).get("view") == "multi-agent"
        except ValueError:
            return False
    return (Path(path) / MODULES_SUBPATH / "minor").is_dir()


def load_marl_policy(checkpoint: str | Path) -> MARLPolicy:
    """Load the modules and the multi-agent settings of an IPPO/MAPPO checkpoint, or of a policy
    export (:mod:`m3fmarl.export`) (no Ray)."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    from m3fmarl.export import is_export, load_modules
    from marl_baselines.ppo import MARL_KEY

    path = Path(checkpoint).expanduser().resolve()
    if is_export(path):
        modules, meta = load_modules(path)
        if meta["view"] != "multi-agent":
            raise ValueError(f"{str(path)!r} is a policy export of an M3FC policy, not IPPO/MAPPO")
        return MARLPolicy(modules=modules, algo=meta["algo"], problem=meta["problem"], variant=meta["variant"],
                          num_minors=int(meta["num_minors"]), switches=dict(meta.get("switches") or {}),
                          checkpoint=path)
    if not is_marl_checkpoint(path):
        raise ValueError(f"{str(path)!r} is not an IPPO/MAPPO checkpoint (no {MODULES_SUBPATH.as_posix()}/minor/)")
    try:
        with (path / "class_and_ctor_args.pkl").open("rb") as f:
            config = pickle.load(f)["ctor_args_and_kwargs"][0][0]
        if not isinstance(config, Mapping):
            config = config.get_state()
        opts = dict(config["learner_config_dict"][MARL_KEY])
    except Exception as e:  # noqa: BLE001 - unreadable means not ours
        raise ValueError(f"{str(path)!r}: cannot read the stored IPPO/MAPPO config ({type(e).__name__}: {e})") from e
    modules = {}
    with torch.random.fork_rng(devices=[]):
        for sub in sorted((path / MODULES_SUBPATH).iterdir()):
            if sub.is_dir():
                modules[sub.name] = RLModule.from_checkpoint(sub)
    return MARLPolicy(modules=modules, algo=opts["algo"], problem=opts["problem"], variant=opts["variant"],
                      num_minors=int(opts["num_minors"]), switches=dict(opts.get("switches", {})), checkpoint=path)


def marl_episode_returns(
    modules: Mapping[str, Any], core: MultiAgentCore, episodes: int, seed: int, num_envs: int = 100,
) -> np.ndarray:
    """Team returns of ``episodes`` full episodes, every agent acting stochastically."""
    from marl_baselines.sampler import BatchedSampler

    env_seed, torch_seed = (int(s) for s in np.random.SeedSequence([seed, core.num_minors]).generate_state(2))
    out: list[np.ndarray] = []
    done = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed)
        rng = np.random.default_rng(env_seed)
        while done < episodes:
            b = min(num_envs, episodes - done)
            sampler = BatchedSampler(core, b, seed=int(rng.integers(2**63)))
            total = np.zeros(b)
            for _ in range(core.horizon):
                actions, _, _ = sampler.act(modules, sampler.obs, core.own_keys(sampler.state))
                sampler.state, reward = core.step(sampler.state, actions, sampler.rng)
                sampler.obs = core.observe(sampler.state)
                total += reward
            if not np.all(sampler.state.t == core.horizon):
                raise RuntimeError(f"{core.name}: episodes did not end at T = {core.horizon}")
            out.append(total)
            done += b
    return np.concatenate(out)


def evaluate_marl(
    policy: MARLPolicy, num_minors: int | Sequence[int] | None = None, episodes: int | None = None,
    seed: int = 0, num_envs: int = 100, variant: str | None = None,
) -> list[Any]:
    """Mean team return of ``policy`` for each N (default the training N); episodes default per
    problem (:data:`m3fmarl.evaluate.EVAL_EPISODES`)."""
    from m3fmarl.evaluate import EVAL_EPISODES, EvalResult
    from m3fmarl.util import int_list

    variant = policy.variant if variant is None else variant
    check_choice("variant", variant, ("paper", "reference"))
    ns = int_list("num_minors", policy.num_minors if num_minors is None else num_minors)
    (episodes,) = int_list("episodes", EVAL_EPISODES[policy.problem] if episodes is None else episodes)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    modules = {mid: m.unwrapped() if hasattr(m, "unwrapped") else m for mid, m in policy.modules.items()}
    results = []
    with torch_threads(1):
        for n in ns:
            core = MultiAgentCore(policy.problem, n, variant, **policy.switches)
            returns = marl_episode_returns(modules, core, episodes, int(seed), num_envs)
            s = ReturnStats.of(returns)
            results.append(EvalResult(problem=policy.problem, variant=variant, num_minors=n, execution=EXECUTION,
                                      episodes=s.episodes, mean=s.mean, std=s.std, ci95=s.ci95, seed=int(seed),
                                      train_num_minors=policy.num_minors, returns=returns))
    return results


def uniform_episode_returns(core: MultiAgentCore, episodes: int, seed: int = 0, num_envs: int = 100) -> np.ndarray:
    """Team returns when every agent acts uniformly at random (U[−1, 1]^d, or uniform over the
    5 Beach moves): the baseline a learning test must beat."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    done = 0
    while done < episodes:
        b = min(num_envs, episodes - done)
        state, _ = core.reset(b, rng)
        total = np.zeros(b)
        for _ in range(core.horizon):
            if core.discrete:
                actions = rng.integers(0, core.num_actions, size=(b, core.num_agents))
            else:
                actions = rng.uniform(-1.0, 1.0, size=(b, core.num_agents, core.action_dim))
            state, reward = core.step(state, actions, rng)
            total += reward
        out.append(total)
        done += b
    return np.concatenate(out)
