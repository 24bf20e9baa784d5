"""Pieces shared by the batched samplers (M3FC: :mod:`m3fmarl.m3fc.sampler`; IPPO/MAPPO:
:mod:`marl_baselines.sampler`): the train-batch column names, the actor-only forward pass,
chunked critic passes, and the per-iteration seeds that make training exactly resumable.

Why the samplers bypass RLlib's env runner: RLlib keeps one Python episode object per copy (per
agent, in multi-agent runs) and runs its connectors per copy and step; for these batched numpy
simulators that bookkeeping costs several times the simulator itself (docs/benchmarks.md).
The samplers step ``B`` copies, run each policy once per step on all its rows, and write the
train batch directly.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

# Column names (RLlib's ``Columns`` values, spelled out to keep the samplers free of ray imports).
OBS = "obs"
ACTIONS = "actions"
ACTION_LOGP = "action_logp"
ACTION_DIST_INPUTS = "action_dist_inputs"
ADVANTAGES = "advantages"
VALUE_TARGETS = "value_targets"
VF_PREDS = "vf_preds"

VALUE_CHUNK_ROWS = 4096
"""Rows per critic forward pass when values are computed for a whole rollout (one pass over a
whole rollout's activations does not fit in cache: 2–3× slower at N = 300)."""


def actor_inputs(module: Any, obs: torch.Tensor) -> torch.Tensor:
    """Action-distribution inputs of ``obs`` from the actor alone.

    RLlib's ``forward_exploration`` of the default PPO module also runs the critic encoder (its
    actor-critic encoder computes both); sampling needs only the actor, so for modules with
    ``encoder.actor_encoder`` and ``pi`` those two are called directly (the same computation as
    the actor half of ``forward_exploration``).  Other modules use ``forward_exploration``.
    """
    actor = getattr(getattr(module, "encoder", None), "actor_encoder", None)
    if actor is not None and hasattr(module, "pi") and not module.is_stateful():
        return module.pi(actor({OBS: obs})["encoder_out"])
    return module.forward_exploration({OBS: obs})[ACTION_DIST_INPUTS]


def values_in_chunks(module: Any, rows: np.ndarray) -> np.ndarray:
    """V of every row of ``rows`` ``(R, D)`` (float64 ``(R,)``), :data:`VALUE_CHUNK_ROWS` at a time."""
    out = np.empty(rows.shape[0], dtype=np.float64)
    with torch.no_grad():
        for i in range(0, rows.shape[0], VALUE_CHUNK_ROWS):
            chunk = np.ascontiguousarray(rows[i:i + VALUE_CHUNK_ROWS])
            out[i:i + VALUE_CHUNK_ROWS] = module.compute_values({OBS: torch.from_numpy(chunk)}).numpy()
    return out


class SamplerState:
    """Checkpointable state of a batched sampler: the copies' states (``state``), observations
    (``obs``), running returns (``episode_return``), the env generator (``rng``) and the recent
    finished returns (``recent_returns``).  With it a restored sampler continues the very same
    episodes (exact resume)."""

    rng: np.random.Generator
    state: Any
    obs: np.ndarray
    episode_return: np.ndarray
    recent_returns: Any

    def get_state(self) -> dict[str, Any]:
        """Everything the next ``sample`` depends on besides the modules and torch's generator
        (plain picklable values)."""
        if getattr(self, "rng", None) is None:
            raise RuntimeError(f"{type(self).__name__}: reset(seed) before get_state()")
        return {"rng": self.rng.bit_generator.state, "state": self.state.copy(), "obs": self.obs.copy(),
                "episode_return": self.episode_return.copy(), "recent_returns": list(self.recent_returns)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["rng"]
        self.state = state["state"].copy()
        self.obs = np.array(state["obs"])
        self.episode_return = np.array(state["episode_return"], dtype=np.float64)
        self.recent_returns.clear()
        self.recent_returns.extend(state["recent_returns"])


def distinct_keys(keys: np.ndarray, num_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """For ``keys`` ``(R, k)`` in [0, num_keys) (own-state ids of k agents in R copies or steps):
    the flat index of one representative per distinct (row, key) and the inverse map ``(R·k,)``
    (agents with equal keys in one row have equal observations: evaluate the representative
    once)."""
    flat = (np.arange(keys.shape[0], dtype=np.int64)[:, None] * num_keys + keys).ravel()
    _, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)


def standardize(adv: np.ndarray) -> np.ndarray:
    """Advantages standardised over the whole train batch (RLlib-1.8 PPO, spec §1.1 item 3)."""
    a = adv.astype(np.float64)
    return ((a - a.mean()) / max(1e-4, a.std())).astype(np.float32)


def iteration_seeds(seed: int, iteration: int) -> dict[str, int]:
    """Independent seeds for everything random in training iteration ``iteration`` (0-based) of a
    run with ``seed``: the env copies (``env``), action sampling (``torch``), RLlib's minibatch
    shuffling (``numpy``, the global generator), our reference minibatch order (``minibatch``)
    and Python's ``random`` (``python``).

    Every iteration starts from these seeds and fresh episodes, so an iteration is a function of
    the weights, optimiser state and counters at its start: a run resumed from the checkpoint
    after iteration k repeats iteration k + 1 of an uninterrupted run exactly.
    """
    names = ("env", "torch", "numpy", "minibatch", "python")
    words = np.random.SeedSequence([int(seed), int(iteration)]).generate_state(len(names))
    return {name: int(w) for name, w in zip(names, words, strict=True)}


def seed_globals(seeds: dict[str, int]) -> None:
    """Seed torch's, numpy's and Python's global generators from :func:`iteration_seeds`."""
    torch.manual_seed(seeds["torch"])
    np.random.seed(seeds["numpy"])
    random.seed(seeds["python"])
