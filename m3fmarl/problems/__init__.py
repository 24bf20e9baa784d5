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

PAPER_NAMES: dict[str, str] = {"two-gaussians": "2G", "formation": "Formation", "beach-bar": "Beach",
                               "foraging": "Foraging", "potential": "Potential"}
"""CLI name → the paper's short name (also the names in ../shared/golden and spec/paper_results.csv)."""


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


def switch_docs(cls: type) -> dict[str, str]:
    """Field docstrings (the string literal under each field) of a ``Switches`` dataclass and its
    bases, read from the source: the one place a switch is described."""
    import ast
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for field, doc in zip(body, body[1:], strict=False):
            if (isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name)
                    and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)):
                docs[field.target.id] = " ".join(str(doc.value.value).split())
    return docs


def switch_table() -> list[dict[str, Any]]:
    """One row per (problem, switch): its ``paper`` and ``reference`` preset values and meaning."""
    import dataclasses

    rows = []
    decoder = ("std_map", "xi_squash")  # continuous decoding only; Beach's decoder is discrete
    for name in PROBLEMS:
        cls = problem_class(name)
        paper, ref = cls.PRESETS["paper"], cls.PRESETS["reference"]
        docs = switch_docs(type(paper))
        for f in dataclasses.fields(paper):
            if cls.num_minor_actions is not None and f.name in decoder:
                continue
            rows.append({"problem": name, "switch": f.name, "paper": getattr(paper, f.name),
                         "reference": getattr(ref, f.name), "doc": docs.get(f.name, "")})
    return rows


def switch_markdown() -> str:
    """The switch table as Markdown (docs/variants.md embeds it; a test keeps the two equal)."""
    lines = ["| problem | switch | `paper` | `reference` | meaning |", "|---|---|---|---|---|"]
    for r in switch_table():
        mark = "" if r["paper"] == r["reference"] else " **≠**"
        lines.append(f"| {r['problem']} | `{r['switch']}`{mark} | `{r['paper']!r}` | `{r['reference']!r}` "
                     f"| {r['doc'].replace('|', '¦')} |")
    return "\n".join(lines) + "\n"


__all__ += ["switch_docs", "switch_markdown", "switch_table"]
