"""Small value checks shared by the command line, sweeps, evaluation and the report."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
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
