"""Compact, safe copies of trained policies: what ``results/<budget>/trials/*/`` commits.

An RLlib checkpoint holds the whole algorithm (optimizer state, critic, connector state,
pickled classes and configs: several MB, and unpickling it runs code).  A *policy export* is a
directory with

* ``policy.pt`` — the actor's weights only (``encoder.actor_encoder.*`` and ``pi.*`` of each
  module, or the prefixes a module class names in ``ACTOR_PREFIXES``; float32 tensors;
  ``torch.load(..., weights_only=True)`` reads it: no code runs), and
* ``policy.json`` — what is needed to rebuild the modules and the environment: algorithm,
  problem, variant, training N, switch overrides, and per module its class (one of this
  package's module classes, checked against an allow-list) and ``model_config``.

:func:`load_exported` rebuilds the modules from the problem's own spaces and loads the weights;
``m3fmarl evaluate --checkpoint DIR`` accepts such a directory wherever it accepts a checkpoint
(:func:`m3fmarl.evaluate.load_policy` for M3FPPO/M3FA2C, ``marl_baselines.evaluate.load_marl_policy``
for IPPO/MAPPO), so every committed cell can be re-evaluated.  The critic is not exported, so an
export cannot continue training.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

POLICY_FILE = "policy.pt"
POLICY_META = "policy.json"
FORMAT = "m3fmarl-policy/1"
ACTOR_PREFIXES = ("encoder.actor_encoder.", "pi.")
"""State-dict keys of the actor (what acting needs); the rest is the critic.  A module class
with its own ``ACTOR_PREFIXES`` attribute names its own."""
MODULE_CLASSES = (
    "m3fmarl.algorithms.m3fppo:M3FPPOTorchRLModule",
    "marl_baselines.ppo:MAPPOTorchRLModule",
    "marl_baselines.mfppo:MFPPOTorchRLModule",
    "marl_baselines.hmf:HMFTorchRLModule",
)
"""The module classes an export may name (nothing else is imported)."""


def is_export(path: str | Path) -> bool:
    return (Path(path) / POLICY_META).is_file()


def _class_path(module: Any) -> str:
    cls = type(module)
    return f"{cls.__module__}:{cls.__qualname__}"


def _actor_prefixes(module: Any) -> tuple[str, ...]:
    return tuple(getattr(module, "ACTOR_PREFIXES", ACTOR_PREFIXES))


def _actor_state(module: Any) -> dict[str, Any]:
    return {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()
            if k.startswith(_actor_prefixes(module))}


def export_policy(checkpoint: str | Path, dest: str | Path) -> Path:
    """Write the export of the policy in ``checkpoint`` (an RLlib checkpoint of M3FPPO, M3FA2C,
    IPPO or MAPPO) into ``dest`` (created); returns ``dest``."""
    import torch

    from m3fmarl.evaluate import load_policy
    from marl_baselines.evaluate import is_marl_checkpoint, load_marl_policy

    dest = Path(dest)
    if is_marl_checkpoint(checkpoint):
        marl = load_marl_policy(checkpoint)
        modules = dict(marl.modules)
        meta: dict[str, Any] = {"view": "multi-agent", "algo": marl.algo, "problem": marl.problem,
                                "variant": marl.variant, "num_minors": marl.num_minors,
                                "switches": dict(marl.switches)}
    else:
        policy = load_policy(checkpoint)
        modules = {"default_policy": policy.module}
        meta = {"view": "m3fc", "problem": policy.problem, "variant": policy.variant,
                "num_minors": policy.num_minors, "switches": dict(policy.env_config),
                "normalize_actions": policy.normalize_actions, "clip_actions": policy.clip_actions}
    for module in modules.values():
        if _class_path(module) not in MODULE_CLASSES:
            raise ValueError(f"{checkpoint}: module class {_class_path(module)} cannot be exported "
                             f"(known: {', '.join(MODULE_CLASSES)})")
    tensors = {f"{mid}/{k}": v for mid, m in modules.items() for k, v in _actor_state(m).items()}
    meta = {"format": FORMAT, **meta, "source_checkpoint": str(Path(checkpoint).resolve()),
            "modules": {mid: {"class": _class_path(m), "model_config": dict(m.model_config)}
                        for mid, m in modules.items()}}
    dest.mkdir(parents=True, exist_ok=True)
    torch.save(tensors, dest / POLICY_FILE)
    (dest / POLICY_META).write_text(json.dumps(meta, indent=1))
    return dest


RUN_SMALL_FILES = ("run.json", "config.yaml", "progress.csv", "evaluation.json")
"""The files of a run directory worth committing beside its policy export."""


def copy_small_files(run_dir: str | Path, dest: str | Path) -> list[str]:
    """Copy the :data:`RUN_SMALL_FILES` that ``run_dir`` holds into ``dest`` (created); returns
    their names."""
    import shutil

    run_dir, dest = Path(run_dir), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in RUN_SMALL_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, dest / name)
            copied.append(name)
    return copied


def read_meta(path: str | Path) -> dict[str, Any]:
    """``policy.json`` of an export; ``ValueError`` if it is not one."""
    path = Path(path)
    try:
        meta = json.loads((path / POLICY_META).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a policy export (cannot read {POLICY_META}: {err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path}: {POLICY_META} is not an {FORMAT} file")
    return meta


def load_modules(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Rebuild the modules of the export at ``path`` from the problem's spaces and load the
    actor weights.  Returns (modules by id, metadata)."""
    import torch
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    path = Path(path)
    meta = read_meta(path)
    try:
        tensors = torch.load(path / POLICY_FILE, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file: not a usable export
        raise ValueError(f"{path}: cannot read {POLICY_FILE} ({type(err).__name__}: {err})") from None
    spaces = _spaces(meta)
    modules = {}
    for mid, info in meta["modules"].items():
        if info["class"] not in MODULE_CLASSES:
            raise ValueError(f"{path}: module class {info['class']} is not one of {', '.join(MODULE_CLASSES)}")
        mod_name, cls_name = info["class"].split(":")
        cls = getattr(importlib.import_module(mod_name), cls_name)
        obs_space, act_space = spaces[mid]
        with torch.random.fork_rng(devices=[]):  # the build draws initial weights: keep the caller's RNG
            module = RLModuleSpec(module_class=cls, observation_space=obs_space, action_space=act_space,
                                  model_config=dict(info["model_config"])).build()
        state = {k.split("/", 1)[1]: v for k, v in tensors.items() if k.split("/", 1)[0] == mid}
        result = module.load_state_dict(state, strict=False)
        if result.unexpected_keys or any(k.startswith(_actor_prefixes(module)) for k in result.missing_keys):
            raise ValueError(f"{path}: weights of module {mid} do not fit the rebuilt module "
                             f"(unexpected {result.unexpected_keys[:3]}, missing {result.missing_keys[:3]})")
        module.eval()
        modules[mid] = module
    return modules, meta


def _spaces(meta: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """(observation, action) space per module id, from the problem as trained."""
    n, variant, switches = int(meta["num_minors"]), meta["variant"], dict(meta.get("switches") or {})
    if meta["view"] == "m3fc":
        from m3fmarl.m3fc.env import M3FCCore

        core = M3FCCore(meta["problem"], n, variant, **switches)
        return {"default_policy": (core.observation_space, core.action_space)}
    from m3fmarl.multiagent.core import MultiAgentCore

    core = MultiAgentCore(meta["problem"], n, variant, **switches)
    return {mid: (core.observation_space(), core.action_space()) for mid in meta["modules"]}
