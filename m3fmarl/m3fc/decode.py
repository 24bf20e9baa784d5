"""ξ → minor decision rule → minor actions (spec/environments.md §1.2).

The M3FC action carries ξ, the parameters of one decision rule π′(u | cell) that every minor
applies at its own cell.  This module turns ξ into sampled minor actions, batched over copies.

Continuous problems: ξ has shape ``cells + (d, 2)`` (last axis = mean slot, std slot).  After
clipping to [−1, 1] (RLlib's action clip) and an optional tanh (switch ``xi_squash``, G2):

* mean m = ξ̃[cell, d, 0]
* std  s = ε + (ξ̃[cell, d, 1] + 1)/8            (``std_map = paper``, range [ε, 0.25 + ε])
  or  s = (ξ̃[cell, d, 1] + 1 + ε)/4            (``std_map = reference``, used as a std)
* u = clip(m + s·η, −1, 1), η ~ N(0, I) per minor and dimension.

Discrete problems (Beach): π′(u | x) = (ξ̃[x, u] + 1 + ε)/Z_x, sampled by inverse CDF with one
uniform draw per minor.

Execution: centralised (CE) uses one ξ for all minors: ``xi`` is ``(B, |ξ|)``.  Decentralised (DE)
gives each minor its own sample: ``xi`` is ``(B, N, |ξ|)``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from m3fmarl.kernels import discrete_actions, gaussian_actions
from m3fmarl.problems.core import EPS_DEC, FloatArray, IntArray

STD_MAPS = ("paper", "reference")
SQUASHES = ("none", "tanh")


def _std(raw: FloatArray, std_map: str) -> FloatArray:
    if std_map == "paper":
        return EPS_DEC + (raw + 1.0) * 0.125
    return (raw + 1.0 + EPS_DEC) * 0.25


def _preprocess(xi: FloatArray, squash: str) -> FloatArray:
    out = np.clip(xi, -1.0, 1.0)
    if squash == "tanh":
        np.tanh(out, out=out)
    return out


def decode_continuous(
    xi: NDArray[np.floating],
    cells: IntArray,
    num_cells: int,
    action_dim: int,
    rng: np.random.Generator,
    *,
    squash: str,
    std_map: str,
) -> FloatArray:
    """Sample continuous minor actions.

    Args:
        xi: ``(B, |ξ|)`` (CE) or ``(B, N, |ξ|)`` (DE), layout ``cells + (d, 2)`` in C order.
        cells: ``(B, N)`` flat cell of each minor.
        num_cells: number of cells M.
        action_dim: d.
        rng: source of the Gaussian noise.
        squash: ``none`` or ``tanh`` (applied after clipping).
        std_map: ``paper`` or ``reference``.

    Returns:
        ``(B, N, d)`` actions in [−1, 1].
    """
    b, n = cells.shape
    if xi.ndim == 2:
        # CE: map the (small) table once, then gather per minor.
        table = _preprocess(xi.reshape(b, num_cells, action_dim, 2).astype(np.float64), squash)
        mean_tab, std_tab = table[..., 0], _std(table[..., 1], std_map)  # (B, M, d)
        u = np.empty((b, n, action_dim))
        gaussian_actions(
            rng, np.ascontiguousarray(mean_tab), np.ascontiguousarray(std_tab),
            np.ascontiguousarray(cells, dtype=np.int64), u,
        )
        return u
    else:
        # DE: every minor has its own ξ; gather its cell's entries first.
        per = xi.reshape(b, n, num_cells, action_dim * 2)
        g = np.take_along_axis(per, cells[:, :, None, None], axis=2)[:, :, 0]
        g = _preprocess(g.reshape(b, n, action_dim, 2).astype(np.float64), squash)
        mean, std = g[..., 0], _std(g[..., 1], std_map)
    u = mean + std * rng.standard_normal(mean.shape)
    return np.clip(u, -1.0, 1.0, out=u)


def decision_rule_discrete(xi: NDArray[np.floating]) -> FloatArray:
    """π′ over the last axis: (clip(ξ) + 1 + ε) / Z (spec §1.2 discrete decoding)."""
    p = np.clip(xi, -1.0, 1.0).astype(np.float64) + (1.0 + EPS_DEC)
    return p / p.sum(axis=-1, keepdims=True)


def decode_discrete(
    xi: NDArray[np.floating], cells: IntArray, num_cells: int, num_actions: int, rng: np.random.Generator
) -> IntArray:
    """Sample discrete minor actions; ``xi`` as in :func:`decode_continuous` with layout
    ``cells + (A,)``.  Returns ``(B, N)`` action indices."""
    b, n = cells.shape
    if xi.ndim == 2:
        # CE: the CDF table (B, M, A) is tiny; one compiled pass draws and looks up every minor.
        cdf_tab = np.cumsum(decision_rule_discrete(xi.reshape(b, num_cells, num_actions)), axis=-1)
        out = np.empty((b, n), dtype=np.int64)
        discrete_actions(rng, np.ascontiguousarray(cdf_tab), np.ascontiguousarray(cells, dtype=np.int64), out)
        return out
    # DE: every minor has its own ξ, so its own CDF.
    draw = rng.random((b, n))
    per = xi.reshape(b, n, num_cells, num_actions)
    g = np.take_along_axis(per, cells[:, :, None, None], axis=2)[:, :, 0]
    cdf = np.cumsum(decision_rule_discrete(g), axis=-1).reshape(b * n, num_actions).T
    flat = draw.ravel()
    a = np.zeros(b * n, dtype=np.int64)
    for k in range(num_actions):  # a = #{k : cdf_k <= draw}; a loop over the A actions only
        a += cdf[k] <= flat
    # Rounding can leave the total just below the draw; the reference then picks action 0.
    a[a >= num_actions] = 0
    return a.reshape(b, n)
