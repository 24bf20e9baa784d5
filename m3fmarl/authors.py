"""The authors' M3FC environments, built from a checkout of their code, for side-by-side benchmarks.

Speed ratios to the authors' env are only meaningful when both run in one process on one
machine (their speed depends on the Python/numpy stack as much as on the CPU), so
``m3fmarl bench envs --authors-src DIR`` times their env and ours alternately.  ``DIR`` is a
checkout of github.com/tudkcui/M3FC-MARL (the directory holding ``marllib/``); nothing of it is
part of this package.  Their code uses the old ``gym`` API (``reset() -> obs``, 4-tuple
``step``), so the interpreter must have ``gym`` 0.21 importable as well as ours (docs/benchmarks.md,
"Side by side with the authors' env", gives the recipe).

The envs are built as the authors' example scripts build them (spec/golden protocol):
``FlattenObservation(Wrapper(Simulator(**cfg), **cfg))`` with ``cfg`` the ``env_args`` of their
``expK.yaml``, only ``num_agents`` overridden.  The simulator and wrapper modules are imported
directly rather than through their ``args_parser``, which also imports the multi-agent wrappers
(and with them RLlib 1.x and ma_gym).
"""

from __future__ import annotations

import importlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PACKAGE = "marllib.envs.m3fc_envs"


@dataclass(frozen=True)
class AuthorsBuild:
    experiment: str  # marllib/envs/base_env/config/<experiment>.yaml
    simulator: str  # module:class under PACKAGE
    wrapper: str


BUILDS: dict[str, AuthorsBuild] = {
    "foraging": AuthorsBuild(
        "exp2", "major_minor_foraging:MajorMinorForagingEnv",
        "wrappers.major_minor_foraging_wrapper:ForagingMajorMinorMFCEnv",
    ),
    "beach-bar": AuthorsBuild(
        "exp3", "major_minor_beach_tuple:MajorMinorBeachTupleEnv",
        "wrappers.major_minor_discrete_pure_tuple:PureDiscreteTupleMajorMinorMFCEnv",
    ),
    "potential": AuthorsBuild(
        "exp4", "major_minor_potential_field:MajorMinorPotentialFieldEnv",
        "wrappers.major_minor_discrete_gaussian:DiscreteGaussianMajorMinorMFCEnv",
    ),
}
"""Problems whose authors' env runs without exact OT (2G/Formation: see the OT table instead)."""

DEFAULTS: dict[str, Any] = {
    "policy": "fc", "id": 0, "verbose": 0, "use_lstm": 0, "dims": 2, "unbounded_actions": 0,
    "hyperparam_config": 0, "x_bins_per_dim": 3, "u_bins_per_dim": 3, "obs_time": 0,
}
"""The defaults their config parser fills in for keys an experiment file leaves out."""


class AuthorsUnavailable(RuntimeError):
    """The authors' checkout or its ``gym`` is missing; the message says what to do."""


def _class(qualified: str) -> type:
    module, name = qualified.split(":")
    return getattr(importlib.import_module(f"{PACKAGE}.{module}"), name)


def check_source(src: str | Path) -> Path:
    """The checkout's root (holding ``marllib/``), importable; raises :class:`AuthorsUnavailable`."""
    root = Path(src).expanduser().resolve()
    if not (root / "marllib" / "envs" / "m3fc_envs").is_dir():
        raise AuthorsUnavailable(
            f"--authors-src {src}: no marllib/envs/m3fc_envs below it (expected a checkout of "
            "github.com/tudkcui/M3FC-MARL)"
        )
    try:
        import gym  # noqa: F401  (the authors' code needs the old gym API)
    except ImportError as exc:
        raise AuthorsUnavailable(
            "--authors-src needs the old 'gym' package (0.21) beside m3fmarl: see docs/benchmarks.md, "
            "'Side by side with the authors' env'"
        ) from exc
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return root


def make_env(src: str | Path, problem: str, num_minors: int, seed: int = 0) -> Any:
    """The authors' flat M3FC env for ``problem`` with N minors, seeded as the golden protocol."""
    import torch
    import yaml
    from gym.wrappers import FlattenObservation

    if problem not in BUILDS:
        raise AuthorsUnavailable(f"no authors' env for {problem!r}; valid: {', '.join(BUILDS)}")
    root = check_source(src)
    build = BUILDS[problem]
    path = root / "marllib" / "envs" / "base_env" / "config" / f"{build.experiment}.yaml"
    cfg = DEFAULTS | dict(yaml.safe_load(path.read_text())["env_args"])
    cfg["num_agents"] = int(num_minors)
    simulator, wrapper = _class(build.simulator), _class(build.wrapper)
    cfg["game"], cfg["solver"] = simulator, wrapper
    env = FlattenObservation(wrapper(simulator(**cfg), **cfg))
    torch.manual_seed(seed)
    np.random.seed(seed)
    inner = env.unwrapped.env_MARL
    for space in (inner.minor_observation_space, inner.minor_action_space, inner.major_observation_space,
                  inner.major_action_space, env.action_space, env.observation_space):
        space.seed(seed)
    return env


def steps_per_second(env: Any, min_seconds: float, pool_size: int = 16) -> float:
    """Env steps/s of an old-API env under uniform-random actions (resets included), as
    :func:`m3fmarl.bench.bench_single` times ours."""
    env.reset()
    pool = [env.action_space.sample() for _ in range(pool_size)]
    steps, start = 0, time.perf_counter()
    while True:
        for _ in range(20):
            done = env.step(pool[steps % pool_size])[2]
            steps += 1
            if done:
                env.reset()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return steps / elapsed
