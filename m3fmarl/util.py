"""Small helpers shared across modules: value checks for the command line, sweeps, evaluation
and the report, and the CPU budget of a process (a trial's ``cpus``)."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np


def as_float(x: Any) -> float:
    """``float(x)``, or NaN when ``x`` is empty, None or not a number (CSV cells)."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def nonneg_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = nonneg_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def int_list(name: str, values: int | Sequence[int]) -> list[int]:
    """``values`` (one int or several) as a non-empty list of integers >= 1; ``ValueError`` naming
    ``name`` otherwise."""
    vals = [values] if isinstance(values, (int, np.integer)) else list(values)
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be integers >= 1, got {v!r}")
    if not vals:
        raise ValueError(f"{name} must not be empty")
    return [int(v) for v in vals]


CPUS_ENV = "M3FMARL_CPUS"
"""Environment variable holding the CPUs this process may use for its numerical work (a trial's
``cpus``; default 1)."""


def process_cpus() -> int:
    """The CPUs this process may use: torch intra-op threads of the learner and of policy
    inference, and the threads of the exact-OT solves (:func:`use_cpus`; default 1)."""
    try:
        return max(1, int(os.environ.get(CPUS_ENV, "1")))
    except ValueError:
        return 1


def use_cpus(n: int) -> None:
    """Let this process use ``n`` CPUs (a trial given ``cpus: n``): torch runs ``n`` intra-op
    threads and the exact-OT solves of a vector env run on ``n`` threads.  One process per trial,
    so trials packed on a node by their ``cpus`` never oversubscribe it."""
    n = int(n)
    if n < 1:
        raise ValueError(f"cpus must be >= 1, got {n}")
    os.environ[CPUS_ENV] = str(n)
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """``n`` torch intra-op threads inside the block (small forward passes, e.g. evaluation and
    the qualitative frames, are fastest on one); the previous count afterwards."""
    import torch

    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
