"""Experiment definitions (``experiments/*.yaml``): typed, validated, expanded into trials.

An experiment file names the grid of one paper table or figure (spec/experiments.md §2): the
problems, one or more *blocks* (algorithms × N × seeds with a training length), the evaluation
of every trained policy, and per-budget overrides.  ``paper`` is the definition as written;
``smoke`` and ``reduced`` override parts of it (spec §3.2)::

    id: fig5
    variant: reference
    problems: [two-gaussians, formation, beach-bar, foraging, potential]
    grid:
      - algorithms: [m3fppo]
        num_minors: [300]
        seeds: [0, 1, 2]
        iterations: {default: 5000, foraging: 13000}
        budgets:                       # overrides of this block only
          reduced: {seeds: [0], iterations: 200}
    evaluation: {num_minors: null, executions: [centralized], episodes: null}
    budgets:                           # overrides of every block (and of the evaluation)
      smoke:
        num_minors: [5]
        iterations: 2
        settings: {m3fppo: {train_batch_size: 2000, minibatch_size: 500}}
        evaluation: {episodes: 5}

Loading is strict, like ``configs/``: unknown keys, unknown problems or algorithms, bad N,
empty lists and duplicate trials are refused with one line naming the file and the line
(``fig5.yaml:12: ...``), before anything runs.  :func:`load_experiment` returns a frozen
:class:`Sweep` whose :attr:`Sweep.trials` is the expanded list of :class:`Trial`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from m3fmarl import registry
from m3fmarl.config import ConfigError, from_dict, load_algorithm

BUDGETS = ("smoke", "reduced", "paper")
"""``paper`` = the definition as written; the others are overrides listed in the file."""

EXECUTIONS = ("centralized", "decentralized")
VARIANTS = ("paper", "reference")
EXPERIMENTS_DIR = Path(__file__).resolve().parents[1] / "experiments"


# ----------------------------------------------------------------------------------------------
# YAML with line numbers
# ----------------------------------------------------------------------------------------------


class _Map(dict):
    """A YAML mapping that remembers the line of itself and of each key (1-based)."""

    line: int = 0
    lines: dict[Any, int]


class _Seq(list):
    """A YAML sequence that remembers the line of itself and of each item."""

    line: int = 0
    lines: list[int]


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_map(loader: _LineLoader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    out = _Map()
    out.line = node.start_mark.line + 1
    out.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in out:
            raise ConfigError(f"{loader.name}:{line}: duplicate key {key!r}")
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = line
    return out


def _construct_seq(loader: _LineLoader, node: yaml.SequenceNode) -> _Seq:
    out = _Seq(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.lines = [child.start_mark.line + 1 for child in node.value]
    return out


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"experiment file not found: {path}")
    loader = _LineLoader(path.read_text())
    loader.name = path.name
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as err:
        line = err.problem_mark.line + 1 if err.problem_mark else "?"
        raise ConfigError(f"{path.name}:{line}: not valid YAML ({err.problem})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path.name}: not valid YAML ({str(err).splitlines()[0]})") from None
    finally:
        loader.dispose()


# ----------------------------------------------------------------------------------------------
# typed definition
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """How every trained policy is evaluated (spec §2.0): stochastic actions, mean ± 95% CI."""

    num_minors: tuple[int, ...] | None = None
    """N values to evaluate at; ``null`` = the training N (transfer over N otherwise)."""
    executions: tuple[str, ...] = ("centralized",)
    """centralized (CE) and/or decentralized (DE) execution."""
    episodes: int | None = None
    """Episodes per (N, execution); ``null`` = per problem (100/100/100/300/500)."""
    seed: int = 0
    """Evaluation seed (env and action sampling are derived from it and N)."""


class Cell(NamedTuple):
    """One evaluation of a trained policy: N, execution, episodes, seed.  IPPO/MAPPO policies have
    one execution only, ``multi-agent`` (every agent acts on its own observation)."""

    num_minors: int
    execution: str
    episodes: int
    seed: int


MULTI_AGENT = "multi-agent"


def evaluation_cells(algo: str, problem: str, train_num_minors: int, evaluation: Evaluation) -> tuple[Cell, ...]:
    """The cells ``evaluation`` asks for from a trial of ``algo`` on ``problem`` trained at
    ``train_num_minors`` (episodes ``null`` = per problem, spec §2.0)."""
    from m3fmarl.evaluate import EVAL_EPISODES

    episodes = evaluation.episodes or EVAL_EPISODES[problem]
    multiagent = algo in registry.ALGORITHMS and registry.get(algo).multiagent
    executions = (MULTI_AGENT,) if multiagent else evaluation.executions
    return tuple(Cell(n, e, episodes, evaluation.seed)
                 for e in executions for n in (evaluation.num_minors or (train_num_minors,)))


def _settings_digest(variant: str, settings: Any) -> str:
    """Six hex digits identifying (variant, settings).  Settings equal to the dataclass default are
    left out, so a setting added to the code later (at its default) keeps existing trials'
    identities."""
    if settings is None:
        fields: dict[str, Any] = {}
    else:
        defaults = type(settings)()
        fields = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)
                  if getattr(settings, f.name) != getattr(defaults, f.name)}
    text = json.dumps({"variant": variant, "settings": fields}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:6]


@dataclass(frozen=True)
class Trial:
    """One training run plus its evaluation: the unit Tune schedules and array mode runs.

    A trial is identified by what determines its training — problem, algorithm, N, seed,
    variant, resolved settings and iteration cap — and :attr:`name` spells that identity, so
    experiments that name the same run share one trial directory; its evaluation cells are the
    union of what they ask for (:func:`merge_sweeps`).
    """

    problem: str
    algo: str
    num_minors: int
    seed: int
    iterations: int
    variant: str
    settings: Any
    """The resolved algorithm settings dataclass (defaults file + overrides)."""
    evaluation: Evaluation
    cpus: int = 1
    cells: tuple[Cell, ...] = ()
    """The evaluation cells (from ``evaluation``; after :func:`merge_sweeps`, of every experiment
    that uses the trial)."""

    def __post_init__(self) -> None:
        if not self.cells:
            object.__setattr__(self, "cells", evaluation_cells(self.algo, self.problem, self.num_minors,
                                                               self.evaluation))

    @property
    def short_name(self) -> str:
        """``potential__m3fppo__N300__s0``: problem, algorithm, N and seed."""
        return f"{self.problem}__{self.algo}__N{self.num_minors}__s{self.seed}"

    @property
    def name(self) -> str:
        """Directory name under ``<out>/trials/``, unique per training identity:
        ``potential__m3fppo__N300__s0__200it__3f2a9c`` (iteration cap; digest of variant and
        settings)."""
        return f"{self.short_name}__{self.iterations}it__{_settings_digest(self.variant, self.settings)}"

    @property
    def env_steps(self) -> int:
        """Env steps of the whole run (0 if the settings are unknown)."""
        return self.iterations * int(getattr(self.settings, "train_batch_size", 0))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "problem": self.problem, "algo": self.algo, "num_minors": self.num_minors,
                "seed": self.seed, "iterations": self.iterations, "variant": self.variant, "cpus": self.cpus,
                "settings": dataclasses.asdict(self.settings) if self.settings is not None else None,
                "cells": [c._asdict() for c in self.cells]}


@dataclass(frozen=True)
class Sweep:
    """An experiment file resolved for one budget."""

    id: str
    description: str
    budget: str
    path: Path
    trials: tuple[Trial, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"experiment": self.id, "description": self.description, "path": str(self.path),
                "trials": [t.name for t in self.trials],
                "cells": {t.name: [c._asdict() for c in t.cells] for t in self.trials}}


@dataclass(frozen=True)
class Campaign:
    """Several experiments at one budget with their trials deduplicated: each distinct trial once,
    with the union of the evaluation cells its experiments ask for."""

    budget: str
    experiments: tuple[Sweep, ...]
    trials: tuple[Trial, ...]
    used_by: dict[str, tuple[str, ...]]
    """Trial name → ids of the experiments that use it."""

    @property
    def label(self) -> str:
        return "+".join(s.id for s in self.experiments)

    def to_dict(self) -> dict[str, Any]:
        return {"budget": self.budget, "experiments": [s.to_dict() for s in self.experiments],
                "trials": [{**t.to_dict(), "used_by": list(self.used_by[t.name])} for t in self.trials]}


def merge_sweeps(sweeps: list[Sweep] | tuple[Sweep, ...]) -> Campaign:
    """One :class:`Campaign` of ``sweeps`` (all of one budget; experiment ids distinct)."""
    if not sweeps:
        raise ConfigError("no experiment given")
    budgets = {s.budget for s in sweeps}
    if len(budgets) > 1:
        raise ConfigError(f"experiments of one sweep must share a budget, got {', '.join(sorted(budgets))}")
    ids = [s.id for s in sweeps]
    dup = next((i for i in ids if ids.count(i) > 1), None)
    if dup is not None:
        paths = ", ".join(str(s.path) for s in sweeps if s.id == dup)
        raise ConfigError(f"experiment id {dup!r} given twice ({paths})")
    trials: dict[str, Trial] = {}
    used_by: dict[str, list[str]] = {}
    for sweep in sweeps:
        for t in sweep.trials:
            if t.name in trials:
                known = trials[t.name]
                cells = tuple(dict.fromkeys(known.cells + t.cells))
                trials[t.name] = dataclasses.replace(known, cells=cells, cpus=max(known.cpus, t.cpus))
            else:
                trials[t.name] = t
            used_by.setdefault(t.name, []).append(sweep.id)
    return Campaign(sweeps[0].budget, tuple(sweeps), tuple(trials.values()),
                    {k: tuple(dict.fromkeys(v)) for k, v in used_by.items()})


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------

_TOP_KEYS = ("id", "description", "variant", "problems", "grid", "evaluation", "budgets")
_BLOCK_KEYS = ("algorithms", "problems", "num_minors", "seeds", "iterations", "settings", "cpus", "evaluation",
               "budgets")
_OVERRIDE_KEYS = ("problems", "num_minors", "seeds", "iterations", "settings", "cpus", "evaluation")
_BLOCK_OVERRIDE_KEYS = ("algorithms", "problems", "num_minors", "seeds", "iterations", "settings", "cpus",
                        "evaluation")
_EVAL_KEYS = tuple(f.name for f in dataclasses.fields(Evaluation))


class _Ctx:
    """File name plus the line of the innermost mapping/sequence, for error messages."""

    def __init__(self, file: str):
        self.file = file

    def at(self, node: Any, key: Any = None) -> str:
        line = 0
        if isinstance(node, _Map):
            line = node.lines.get(key, node.line) if key is not None else node.line
        elif isinstance(node, _Seq):
            line = node.lines[key] if isinstance(key, int) and key < len(node.lines) else node.line
        return f"{self.file}:{line}" if line else self.file

    def fail(self, node: Any, key: Any, message: str) -> ConfigError:
        return ConfigError(f"{self.at(node, key)}: {message}")


def _mapping(ctx: _Ctx, parent: Any, key: Any, value: Any, allowed: tuple[str, ...], what: str) -> _Map:
    if not isinstance(value, dict):
        raise ctx.fail(parent, key, f"{what} must be a mapping, got {type(value).__name__}")
    for k in value:
        if k not in allowed:
            raise ctx.fail(value, k, f"unknown key {k!r} in {what}; valid: {', '.join(allowed)}")
    return value


def _int(ctx: _Ctx, parent: Any, key: Any, value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ctx.fail(parent, key, f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def _list(ctx: _Ctx, parent: Any, key: Any, value: Any, what: str) -> _Seq:
    if not isinstance(value, list):
        raise ctx.fail(parent, key, f"{what} must be a list, got {value!r}")
    if not value:
        raise ctx.fail(parent, key, f"{what} is empty: the grid would have no trial")
    if not isinstance(value, _Seq):
        value = _Seq(value)
        value.lines = []
    return value


def _problems(ctx: _Ctx, parent: Any, key: Any, value: Any) -> tuple[str, ...]:
    from m3fmarl.problems import PROBLEMS, canonical_name

    seq = _list(ctx, parent, key, value, "problems")
    out = []
    for i, name in enumerate(seq):
        try:
            out.append(canonical_name(name))
        except ValueError:
            raise ctx.fail(seq, i, f"unknown problem {name!r}; valid: {', '.join(PROBLEMS)}") from None
    return tuple(dict.fromkeys(out))


def _algorithms(ctx: _Ctx, parent: Any, key: Any, value: Any, valid: tuple[str, ...]) -> tuple[str, ...]:
    seq = _list(ctx, parent, key, value, "algorithms")
    for i, name in enumerate(seq):
        if name not in valid:
            raise ctx.fail(seq, i, f"unknown algorithm {name!r}; valid: {', '.join(valid)}")
    return tuple(dict.fromkeys(seq))


def _ints(ctx: _Ctx, parent: Any, key: Any, value: Any, what: str, minimum: int) -> tuple[int, ...]:
    seq = _list(ctx, parent, key, value, what)
    return tuple(dict.fromkeys(_int(ctx, seq, i, v, f"{what} entry", minimum) for i, v in enumerate(seq)))


def _per_problem(ctx: _Ctx, parent: Any, key: Any, value: Any, what: str,
                 parse: Callable[[Any, Any, Any, str], Any]) -> dict[str, Any]:
    """``x`` or ``{default: x, foraging: y}`` → {problem or 'default': parse(...)}; ``parse``
    gets (parent, key, value, label) of each entry."""
    from m3fmarl.problems import PROBLEMS, canonical_name

    if not isinstance(value, dict):
        return {"default": parse(parent, key, value, what)}
    out = {}
    for raw, v in value.items():
        name = raw
        if raw != "default":
            try:
                name = canonical_name(raw)
            except ValueError:
                raise ctx.fail(value, raw, f"unknown problem {raw!r} in {what}; valid: default, "
                                           f"{', '.join(PROBLEMS)}") from None
        out[name] = parse(value, raw, v, f"{what}[{raw}]")
    return out


def _iterations(ctx: _Ctx, parent: Any, key: Any, value: Any) -> dict[str, int]:
    """``200`` or ``{default: 5000, foraging: 13000}`` → {problem or 'default': iterations}."""
    return _per_problem(ctx, parent, key, value, "iterations",
                        lambda par, k, v, label: _int(ctx, par, k, v, label, 1))


def _num_minors(ctx: _Ctx, parent: Any, key: Any, value: Any) -> dict[str, tuple[int, ...]]:
    """``[300]`` or ``{default: [300], formation: [50]}`` → {problem or 'default': N values}."""
    return _per_problem(ctx, parent, key, value, "num_minors",
                        lambda par, k, v, label: _ints(ctx, par, k, v, label, 1))


def _settings(ctx: _Ctx, parent: Any, key: Any, value: Any, valid: tuple[str, ...]) -> dict[str, dict]:
    if not isinstance(value, dict):
        raise ctx.fail(parent, key, f"settings must map algorithm → setting overrides, got {value!r}")
    out = {}
    for algo, overrides in value.items():
        if algo not in valid:
            raise ctx.fail(value, algo, f"unknown algorithm {algo!r} in settings; valid: {', '.join(valid)}")
        if not isinstance(overrides, dict):
            raise ctx.fail(value, algo, f"settings.{algo} must be a mapping, got {overrides!r}")
        if algo in registry.ALGORITHMS:
            fields = [f.name for f in dataclasses.fields(registry.get(algo).settings_class())]
            for k in overrides:
                if k not in fields:
                    raise ctx.fail(overrides, k, f"unknown {algo} setting {k!r}; valid: {', '.join(fields)}")
        out[algo] = dict(overrides)
    return out


def _evaluation(ctx: _Ctx, parent: Any, key: Any, value: Any, base: dict[str, Any]) -> dict[str, Any]:
    m = _mapping(ctx, parent, key, value, _EVAL_KEYS, "evaluation")
    out = dict(base)
    for k, v in m.items():
        if k == "num_minors":
            out[k] = None if v is None else _ints(ctx, m, k, v, "evaluation.num_minors", 1)
        elif k == "executions":
            seq = _list(ctx, m, k, v, "evaluation.executions")
            for i, e in enumerate(seq):
                if e not in EXECUTIONS:
                    raise ctx.fail(seq, i, f"unknown execution {e!r}; valid: {', '.join(EXECUTIONS)}")
            out[k] = tuple(dict.fromkeys(seq))
        elif k == "episodes":
            out[k] = None if v is None else _int(ctx, m, k, v, "evaluation.episodes", 1)
        elif k == "seed":
            out[k] = _int(ctx, m, k, v, "evaluation.seed", 0)
    return out


def _merge_settings(a: dict[str, dict], b: dict[str, dict]) -> dict[str, dict]:
    out = {k: dict(v) for k, v in a.items()}
    for algo, overrides in b.items():
        out.setdefault(algo, {}).update(overrides)
    return out


def _block_fields(ctx: _Ctx, block: _Map, valid_algos: tuple[str, ...], allowed: tuple[str, ...],
                  what: str) -> dict[str, Any]:
    """The typed values of the block-like keys present in ``block`` (a block or an override)."""
    out: dict[str, Any] = {}
    for k, v in block.items():
        if k not in allowed:
            raise ctx.fail(block, k, f"unknown key {k!r} in {what}; valid: {', '.join(allowed)}")
        if k == "algorithms":
            out[k] = _algorithms(ctx, block, k, v, valid_algos)
        elif k == "problems":
            out[k] = _problems(ctx, block, k, v)
        elif k == "num_minors":
            out[k] = _num_minors(ctx, block, k, v)
        elif k == "seeds":
            out[k] = _ints(ctx, block, k, v, "seeds", 0)
        elif k == "iterations":
            out[k] = _iterations(ctx, block, k, v)
        elif k == "settings":
            out[k] = _settings(ctx, block, k, v, valid_algos)
        elif k == "cpus":
            out[k] = _per_problem(ctx, block, k, v, "cpus", lambda par, kk, vv, label: _int(ctx, par, kk, vv, label, 1))
        elif k == "evaluation":
            _mapping(ctx, block, k, v, _EVAL_KEYS, "evaluation")  # merged by the caller
    return out


def _budget_map(ctx: _Ctx, parent: _Map, key: str, value: Any, what: str) -> dict[str, _Map]:
    overridable = tuple(b for b in BUDGETS if b != "paper")
    m = _mapping(ctx, parent, key, value, overridable, what)
    for name, override in m.items():
        if not isinstance(override, dict):
            raise ctx.fail(m, name, f"{what}.{name} must be a mapping of overrides, got {override!r}")
    return m


def load_experiment(path: str | Path, budget: str = "paper", algorithms: tuple[str, ...] | None = None) -> Sweep:
    """Load and validate ``path`` for ``budget``; every error names the file and line.

    ``algorithms`` are the valid algorithm names (default: those of :mod:`m3fmarl.registry`).
    """
    path = Path(path)
    if budget not in BUDGETS:
        raise ConfigError(f"unknown budget {budget!r}; valid: {', '.join(BUDGETS)}")
    valid_algos = tuple(algorithms) if algorithms is not None else registry.names()
    ctx = _Ctx(path.name)
    doc = _read_yaml(path)
    if doc is None:
        raise ConfigError(f"{path.name}: empty experiment file")
    top = _mapping(ctx, None, None, doc, _TOP_KEYS, "the experiment")
    for required in ("id", "problems", "grid"):
        if required not in top:
            raise ctx.fail(top, None, f"missing key {required!r} (required: id, problems, grid)")
    exp_id = top["id"]
    if not isinstance(exp_id, str) or not exp_id or any(c in exp_id for c in "/ \\"):
        raise ctx.fail(top, "id", f"id must be a non-empty name without spaces or slashes, got {exp_id!r}")
    description = top.get("description") or ""
    variant = top.get("variant", "reference")
    if variant not in VARIANTS:
        raise ctx.fail(top, "variant", f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    problems = _problems(ctx, top, "problems", top["problems"])
    grid = _list(ctx, top, "grid", top["grid"], "grid")
    evaluation = _evaluation(ctx, top, "evaluation", top.get("evaluation") or _Map(),
                             {f.name: f.default for f in dataclasses.fields(Evaluation)})
    budgets = _budget_map(ctx, top, "budgets", top.get("budgets") or _Map(), "budgets")
    top_override: dict[str, Any] = {}
    for name, override in budgets.items():  # validate every budget, use the chosen one
        fields = _block_fields(ctx, override, valid_algos, _OVERRIDE_KEYS, f"budgets.{name}")
        ev = evaluation
        if "evaluation" in override:
            ev = _evaluation(ctx, override, "evaluation", override["evaluation"], evaluation)
        if name == budget:
            top_override, evaluation = fields, ev
    top_override.pop("evaluation", None)

    trials: dict[str, Trial] = {}
    lines: dict[str, str] = {}
    for b, block in enumerate(grid):
        where = f"grid[{b}]"
        if not isinstance(block, dict):
            raise ctx.fail(grid, b, f"{where} must be a mapping with {', '.join(_BLOCK_KEYS)}")
        fields = _block_fields(ctx, block, valid_algos, _BLOCK_KEYS, where)
        for required in ("algorithms", "num_minors", "seeds", "iterations"):
            if required not in fields:
                raise ctx.fail(block, None, f"{where}: missing key {required!r}")
        block_eval = evaluation
        if "evaluation" in block:
            block_eval = _evaluation(ctx, block, "evaluation", block["evaluation"], block_eval)
        block_budgets = _budget_map(ctx, block, "budgets", block.get("budgets") or _Map(), f"{where}.budgets")
        block_override: dict[str, Any] = {}
        for name, override in block_budgets.items():
            bf = _block_fields(ctx, override, valid_algos, _BLOCK_OVERRIDE_KEYS, f"{where}.budgets.{name}")
            ev = block_eval
            if "evaluation" in override:
                ev = _evaluation(ctx, override, "evaluation", override["evaluation"], block_eval)
            if name == budget:
                block_override, block_eval = bf, ev
        evaluation_obj = Evaluation(**block_eval)
        resolved = {"problems": problems, "settings": {}, "cpus": {"default": 1}, **fields}
        for override in (top_override, block_override):
            for k, v in override.items():
                resolved[k] = _merge_settings(resolved["settings"], v) if k == "settings" else v
        for algo in resolved["algorithms"]:
            overrides = resolved["settings"].get(algo, {})
            if algo in registry.ALGORITHMS:
                base = load_algorithm(algo)
                settings = from_dict(type(base), {**dataclasses.asdict(base), **overrides},
                                     where=f"{ctx.at(block)}: {algo} settings")
            elif algorithms is not None:  # checking a file for algorithms not installed yet
                settings = None
            else:
                raise ctx.fail(block, "algorithms", f"algorithm {algo!r} is not in m3fmarl.registry")
            pairs = []
            for problem in resolved["problems"]:
                ns = resolved["num_minors"].get(problem, resolved["num_minors"].get("default"))
                if ns is None:
                    raise ctx.fail(block, "num_minors", f"{where}: no num_minors for {problem} (add a 'default')")
                pairs += [(problem, n) for n in ns]
            for (problem, n), seed in itertools.product(pairs, resolved["seeds"]):
                its = resolved["iterations"]
                iterations = its.get(problem, its.get("default"))
                if iterations is None:
                    raise ctx.fail(block, "iterations", f"{where}: no iterations for {problem} (add a 'default')")
                cpus = resolved["cpus"]
                trial = Trial(problem, algo, n, seed, iterations, variant, settings, evaluation_obj,
                              cpus.get(problem, cpus.get("default", 1)))
                if trial.name in trials:
                    raise ctx.fail(block, None, f"trial {trial.name} is defined twice (also at {lines[trial.name]})")
                trials[trial.name] = trial
                lines[trial.name] = ctx.at(block)
    if not trials:
        raise ctx.fail(top, "grid", "the grid has no trial")
    return Sweep(exp_id, description, budget, path.resolve(), tuple(trials.values()))


def experiment_files() -> list[Path]:
    """The shipped experiment definitions, ``experiments/*.yaml``."""
    return sorted(EXPERIMENTS_DIR.glob("*.yaml"))
