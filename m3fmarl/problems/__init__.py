"""The five problems of the paper (spec/environments.md §2–§6), batched over copies.

``PROBLEMS`` maps the CLI name of each problem to ``"module:Class"``; modules are imported on
first use so that ``import m3fmarl`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from m3fmarl.problems.core import VARIANTS, Problem

PROBLEMS: dict[str, str] = {
    "two-gaussians": "m3fmarl.problems.two_gaussians:TwoGaussians",
    "formation": "m3fmarl.problems.formation:Formation",
    "beach-bar": "m3fmarl.problems.beach_bar:BeachBar",
    "foraging": "m3fmarl.problems.foraging:Foraging",
    "potential": "m3fmarl.problems.potential:Potential",
}
"""CLI name → implementation, in the paper's order (panels (a)–(e))."""


def canonical_name(name: str) -> str:
    """``beach_bar``/``BeachBar``-style spellings → ``beach-bar``; unknown names raise."""
    key = str(name).strip().lower().replace("_", "-")
    aliases = {"2g": "two-gaussians", "beach": "beach-bar", "twogaussians": "two-gaussians",
               "beachbar": "beach-bar"}
    key = aliases.get(key, key)
    if key not in PROBLEMS:
        raise ValueError(f"unknown problem {name!r}; valid: {', '.join(PROBLEMS)}")
    return key


def problem_class(name: str) -> type[Problem]:
    module, cls = PROBLEMS[canonical_name(name)].split(":")
    return getattr(importlib.import_module(module), cls)


def make_problem(name: str, num_minors: int, variant: str = "paper", **switches: Any) -> Problem:
    """Build problem ``name`` with N = ``num_minors`` under ``variant`` plus switch overrides."""
    return problem_class(name)(num_minors, variant=variant, **switches)


__all__ = ["PROBLEMS", "VARIANTS", "Problem", "canonical_name", "make_problem", "problem_class"]
