"""The algorithm registry: the one place that names the algorithms m3fmarl can train.

Everything else — the command line, training, settings files, experiment definitions, sweeps,
evaluation, the report and the reproduction — reads this registry and spells no algorithm name
itself.  An entry says, per algorithm:

* ``name`` (``--algo``, experiment files, trial names) and ``label`` (tables and plots);
* ``view``: ``m3fc`` — one upper-level policy on the M3FC view, evaluated with centralised (CE)
  or decentralised (DE) execution, transferable over N — or ``multi-agent`` — one policy per
  agent group on the N-agent view, every agent acting on its own observation;
* ``settings``: its settings dataclass (``module:Class``); the commented YAML of its defaults is
  ``configs/algorithms/<name>.yaml``;
* ``builder``: ``module:function(problem, num_minors, variant, *, seed, settings)`` returning the
  RLlib ``AlgorithmConfig``;
* ``color`` for plots, and ``mf_reference`` for the one algorithm whose policy gives the "MF"
  line of Figs. 7/12/13 and the qualitative Figs. 8/11 (the paper's M3FPPO).

Entries are plain strings, so reading the registry imports neither ray nor torch.  Adding an
algorithm: its module (builder and whatever it needs), its YAML, one entry here, tests
(docs/adding-an-algorithm.md).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

VIEWS = ("m3fc", "multi-agent")


@dataclass(frozen=True)
class Algorithm:
    name: str
    label: str
    view: str
    settings: str
    """``module:Class`` of the settings dataclass."""
    builder: str
    """``module:function`` building the RLlib AlgorithmConfig from (problem, N, variant, seed,
    settings)."""
    color: str
    description: str
    mf_reference: bool = False
    deviation: str = ""
    """How this algorithm departs from the problems as the paper poses them (stated beside its
    results in tables and figures), or empty."""

    def __post_init__(self) -> None:
        if self.view not in VIEWS:
            raise ValueError(f"{self.name}: view must be one of {', '.join(VIEWS)}, got {self.view!r}")

    @property
    def multiagent(self) -> bool:
        """True for algorithms trained on the multi-agent view (their policies act per agent)."""
        return self.view == "multi-agent"

    def settings_class(self) -> type:
        return _resolve(self.settings)

    def build_config(self, problem: str, num_minors: int, variant: str, *, seed: int, settings: Any) -> Any:
        """The RLlib AlgorithmConfig of one run (imports ray)."""
        return _resolve(self.builder)(problem, num_minors, variant, seed=seed, settings=settings)


def _resolve(path: str) -> Any:
    module, attr = path.split(":")
    return getattr(importlib.import_module(module), attr)


ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (
    # in the paper's Table 2 column order
    Algorithm("ippo", "IPPO", "multi-agent", "m3fmarl.config:PPOSettings", "marl_baselines.ppo:ippo_config",
              "tab:green", "independent PPO, one policy per agent group, each critic on its own observation"),
    Algorithm("mappo", "MAPPO", "multi-agent", "m3fmarl.config:PPOSettings", "marl_baselines.ppo:mappo_config",
              "tab:purple", "IPPO with centralised critics (global state and the other agents' actions)"),
    Algorithm("m3fa2c", "M3FA2C", "m3fc", "m3fmarl.config:A2CSettings", "m3fmarl.algorithms.m3fa2c:m3fa2c_config",
              "tab:blue", "A2C on the M3FC view (one full-batch step per iteration)"),
    Algorithm("m3fppo", "M3FPPO", "m3fc", "m3fmarl.config:PPOSettings", "m3fmarl.algorithms.m3fppo:m3fppo_config",
              "tab:red", "PPO on the M3FC view (the paper's method)", mf_reference=True),
    Algorithm("mfppo", "MF-PPO", "multi-agent", "m3fmarl.config:MFPPOSettings", "marl_baselines.mfppo:mfppo_config",
              "tab:orange", "PPO with permutation-invariant DeepSet actors and critics over the minors "
              "(spec §4.1; not in the paper's tables)"),
    Algorithm("hmf", "HMF", "multi-agent", "m3fmarl.config:HMFSettings", "marl_baselines.hmf:hmf_config",
              "tab:brown", "hierarchical mean-field Q-learning: per-agent Q, grouped minors with attention-weighted "
              "mean fields (spec §4.2; not in the paper's tables)",
              deviation="value-based: on the continuous problems every agent picks from a discrete velocity grid "
                        "({−1, 0, 1}², Potential 5 levels; spec §4.2), not from the continuous action space"),
)}
"""Name → entry, in the paper's Table 2 column order, then the extra baselines (spec §4)."""


def get(name: str) -> Algorithm:
    """The entry of ``name``; ``ValueError`` (one line naming the valid choices) otherwise."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; valid: {', '.join(ALGORITHMS)}") from None


def names(view: str | None = None) -> tuple[str, ...]:
    """Algorithm names (of one ``view``), in registry order."""
    return tuple(a.name for a in ALGORITHMS.values() if view is None or a.view == view)


def mf_reference() -> Algorithm:
    """The algorithm whose policies give the "MF" level and the qualitative figures."""
    return next(a for a in ALGORITHMS.values() if a.mf_reference)
