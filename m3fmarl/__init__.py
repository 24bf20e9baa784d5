"""m3fmarl: major-minor mean-field multi-agent RL — problems, M3FC environments, experiments.

Importing the package registers the five Gymnasium ids (``m3fmarl/TwoGaussians-v0``,
``m3fmarl/Formation-v0``, ``m3fmarl/BeachBar-v0``, ``m3fmarl/Foraging-v0``,
``m3fmarl/Potential-v0``), each with the single env as ``entry_point`` and the batched env as
``vector_entry_point``.  Nothing heavy (no ray, no torch) is imported here.
"""

from __future__ import annotations

import gymnasium as gym

__version__ = "0.1.0"

ENV_IDS: dict[str, str] = {
    "two-gaussians": "m3fmarl/TwoGaussians-v0",
    "formation": "m3fmarl/Formation-v0",
    "beach-bar": "m3fmarl/BeachBar-v0",
    "foraging": "m3fmarl/Foraging-v0",
    "potential": "m3fmarl/Potential-v0",
}
"""Problem name → Gymnasium id of its M3FC environment."""


def _register() -> None:
    for name, env_id in ENV_IDS.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point="m3fmarl.m3fc.env:M3FCEnv",
            vector_entry_point="m3fmarl.m3fc.vector:M3FCVectorEnv",
            kwargs={"problem": name},
        )


_register()


def parallel_env(problem: str, num_minors: int = 20, variant: str = "paper", render_mode: str | None = None,
                 **switches: object) -> object:
    """PettingZoo ``ParallelEnv`` of ``problem``'s multi-agent view (agents ``major``,
    ``minor_0 … minor_{N-1}``; 2G has no major).  See :mod:`m3fmarl.multiagent.envs`."""
    from m3fmarl.multiagent.envs import parallel_env as make

    return make(problem, num_minors, variant, render_mode, **switches)


__all__ = ["ENV_IDS", "__version__", "parallel_env"]
