"""Exact optimal-transport cost between uniform empirical measures (spec/environments.md §2.3, S12).

The 2G and Formation rewards need

    W(x, p) = min_γ Σ_ij γ_ij ‖x_i − p_j‖²,   γ ≥ 0,  γ 1 = 1/N,  γᵀ 1 = 1/K,

the exact OT cost with squared-Euclidean ground cost between the uniform measures on the N minor
positions ``x`` and the K target particles ``p``.  The reference computes it with POT's
``ot.emd2(a, b, ot.dist(x, p))`` (network simplex).  :func:`ot_cost` returns the same optimum
(spec S12: any exact solver is fine, only the cost matters), faster:

* the cost matrix comes from ``scipy.spatial.distance.cdist(..., "sqeuclidean")``, which sums
  squared coordinate differences directly (non-negative by construction, no ‖x‖² + ‖p‖² − 2x·p
  cancellation, and 2–5× faster than ``ot.dist`` at these sizes);
* solver rule by L = lcm(N, K): L ≤ :data:`ASSIGNMENT_MAX_SIZE` (64) → the L × L assignment
  problem (each minor replicated L/N times, each particle L/K times; optimal couplings of uniform
  measures can be taken as permutations of the copies, Birkhoff), solved by
  ``scipy.optimize.linear_sum_assignment``, cost / L; otherwise POT's compiled network simplex
  (``ot.lp.emd_wrap.emd_c``) called directly, skipping the backend dispatch, marginal checks and
  dual re-centring of ``ot.emd2`` (a fixed ~70 µs per call);
* :func:`ot_cost_batch` solves the B copies on a thread pool: the C solver releases the GIL, so
  two idle cores give close to 2× (results are bit-identical to the serial loop).

The assignment route loses above L ≈ 64 even for N = K (no replication; 300 × 300: 9–12 ms vs
6–7 ms), and badly when rows or columns are replicated (the matrix is massively degenerate, which
the shortest-augmenting-path solver handles poorly): so for every shape the environments use
(K = 100 or 300, hence L ≥ 100) the network simplex runs.  Also tried and slower: warm-starting
the simplex with dual potentials, POT's lazy (coordinate) solver, and a sparse candidate graph
(k nearest neighbours, or the support of a coarse grid-level plan) re-solved until the duals
certify optimality on the full matrix (3–6× slower: too many rounds and violated edges).

Timings (ms per solve; means over 5 point sets × 30 solves; minors uniform on [−2, 2]²,
particles from one 2G component; 2-core machine, numpy 2.4.6, scipy 1.17.1, POT 0.9.7.post1;
measured 2026-11-25):

    (N, K)      L     ot_cost_pot   network simplex   assignment   → ot_cost uses
                      (plain POT)   (emd_c + cdist)
    (20, 100)   100      0.19           0.11             0.48         simplex
    (300, 100)  300      2.04           1.90             7.96         simplex
    (20, 300)   300      0.55           0.46             8.93         simplex
    (300, 300)  300      6.98           6.64            11.9          simplex
    (500, 300) 1500     10.8           10.7            832            simplex
    (40, 40)     40      —              0.077            0.027        assignment
    (20, 20)     20      0.092          0.022            0.012        assignment
    (7, 5)       35      0.077          0.008            0.017        assignment (rule; ~µs either way)

    cost matrix alone: (300, 300) ot.dist 0.13 ms, cdist 0.06 ms; (300, 100) 0.046 / 0.023 ms.

    ot_cost_batch, B = 16, 2 threads vs 1: (300, 300) 74 → 39 ms, (300, 100) 27 → 15 ms with the
    second core idle; only 98 → 63–78 ms while another process kept that core busy.

Agreement with ``ot.emd2(a, b, ot.dist(x, p))``: relative differences ≤ 3.3e-16 in all of the
above (they come only from the two ways of forming the cost matrix).
"""

from __future__ import annotations

import functools
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import ot
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from m3fmarl.util import process_cpus

logger = logging.getLogger(__name__)

try:  # POT's compiled network simplex; a private module, so fall back to ot.emd2 if it moves.
    from ot.lp.emd_wrap import emd_c as _emd_c
except ImportError:  # pragma: no cover - depends on the POT version
    _emd_c = None

MAX_ITER = 1_000_000
"""Network-simplex iteration cap.  POT's default (100 000) is reached by no realistic shape here
(checked up to 2000 × 300), but a larger cap keeps the result exact on unusual inputs."""


def _available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover - non-Linux


def _default_threads() -> int:
    """``$M3FMARL_OT_THREADS`` if set, else the process's CPUs (a trial's ``cpus``, default 1)."""
    raw = os.environ.get("M3FMARL_OT_THREADS")
    if raw is None:
        return process_cpus()
    if raw == "auto":
        return max(1, min(_available_cores(), 8))
    try:
        return max(1, int(raw))
    except ValueError:
        raise ValueError(f"M3FMARL_OT_THREADS must be an integer >= 1 or 'auto', got {raw!r}") from None


# ot_cost_batch's default thread count is read at each call: the process's CPUs
# (m3fmarl.util.use_cpus; 1 unless a trial was given more, so that a process uses its share of
# cores like every other part of the stack), or M3FMARL_OT_THREADS (a number, or "auto" for every
# core up to 8) when set.  A bad value fails at import:
_default_threads()

ASSIGNMENT_MAX_SIZE = 64
"""Largest L = lcm(N, K) solved as an L × L assignment; above it the network simplex is faster."""

MIN_PARALLEL_SIZE = 2_000
"""Smallest N·K for which :func:`ot_cost_batch` uses threads (below it, hand-off costs more)."""

_SOLVER_ARGS: int | None = None  # emd_c arity: 7 (POT ≥ 0.9.6, with warm start) or 5 (older)


def _check_points(x: NDArray, p: NDArray, batched: bool) -> tuple[NDArray, NDArray]:
    x = np.asarray(x, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    nd = 3 if batched else 2
    what = "(B, N, d) and (B, K, d)" if batched else "(N, d) and (K, d)"
    if x.ndim != nd or p.ndim != nd:
        raise ValueError(f"ot: expected point arrays of shapes {what}, got {x.shape} and {p.shape}")
    if x.shape[-1] != p.shape[-1] or (batched and x.shape[0] != p.shape[0]):
        raise ValueError(f"ot: incompatible shapes {x.shape} and {p.shape}; expected {what}")
    if x.shape[-2] < 1 or p.shape[-2] < 1:
        raise ValueError(f"ot: need at least one point on each side, got {x.shape} and {p.shape}")
    if not (np.isfinite(x).all() and np.isfinite(p).all()):
        raise ValueError("ot: point arrays contain NaN or inf")
    return x, p


@functools.lru_cache(maxsize=64)
def _uniform_weights(n: int, k: int) -> tuple[NDArray, NDArray]:
    """Uniform weights, b rescaled to a's total mass exactly as ``ot.emd2`` does."""
    a = np.full(n, 1.0 / n)
    b = np.full(k, 1.0 / k)
    b = b * a.sum() / b.sum()
    a.flags.writeable = False
    b.flags.writeable = False
    return a, b


def squared_distances(x: NDArray, p: NDArray) -> NDArray[np.float64]:
    """``(N, K)`` matrix of ‖x_i − p_j‖² (C-contiguous float64, every entry ≥ 0)."""
    return cdist(x, p, "sqeuclidean")


def _assignment_cost(m: NDArray[np.float64]) -> float:
    """Exact OT cost as an L × L assignment problem, L = lcm(N, K).

    With uniform weights an optimal coupling can be taken as a permutation between L/N copies
    of every x_i and L/K copies of every p_j (Birkhoff), so W = (assignment cost) / L.
    """
    n, k = m.shape
    size = math.lcm(n, k)
    rep = m if n == k else np.repeat(np.repeat(m, size // n, axis=0), size // k, axis=1)
    rows, cols = linear_sum_assignment(rep)
    return float(rep[rows, cols].sum() / size)


def _emd_cost(m: NDArray[np.float64]) -> float:
    """Exact OT cost for cost matrix ``m`` between uniform weights (POT's network simplex)."""
    global _SOLVER_ARGS
    a, b = _uniform_weights(*m.shape)
    if _emd_c is None:  # pragma: no cover - depends on the POT version
        return float(ot.emd2(a, b, m, numItermax=MAX_ITER))
    if _SOLVER_ARGS is None or _SOLVER_ARGS == 7:
        try:
            out = _emd_c(a, b, m, MAX_ITER, 1, None, None)
            _SOLVER_ARGS = 7
        except TypeError:  # pragma: no cover - POT < 0.9.6 has no warm-start arguments
            _SOLVER_ARGS = 5
            out = _emd_c(a, b, m, MAX_ITER, 1)
    else:  # pragma: no cover
        out = _emd_c(a, b, m, MAX_ITER, 1)
    cost, code = out[1], out[-1]
    if code != 1:  # 1 = OPTIMAL in POT's result codes
        logger.warning("ot: network simplex ended with result code %s (not optimal) on a %s problem", code, m.shape)
    return float(cost)


def _solve(m: NDArray[np.float64]) -> float:
    """The faster exact solver for this shape (see the timings in the module docstring)."""
    if math.lcm(*m.shape) <= ASSIGNMENT_MAX_SIZE:
        return _assignment_cost(m)
    return _emd_cost(m)


def ot_cost(x: NDArray, p: NDArray) -> float:
    """Exact squared-Euclidean OT cost between the uniform measures on ``x`` and ``p``.

    Args:
        x: ``(N, d)`` points, weight 1/N each.
        p: ``(K, d)`` points, weight 1/K each.

    Returns:
        W = min_γ Σ γ_ij ‖x_i − p_j‖² (equal to ``ot.emd2(a, b, ot.dist(x, p))``).

    Raises:
        ValueError: on mismatched shapes, empty sets or non-finite coordinates.
    """
    x, p = _check_points(x, p, batched=False)
    return _solve(squared_distances(x, p))


def ot_cost_batch(x: NDArray, p: NDArray, num_threads: int | None = None) -> NDArray[np.float64]:
    """:func:`ot_cost` for each of B copies.

    Args:
        x: ``(B, N, d)`` points.
        p: ``(B, K, d)`` points.
        num_threads: worker threads (default: the process's CPUs, or ``$M3FMARL_OT_THREADS``); the
            result does not depend on it.

    Returns:
        ``(B,)`` costs.
    """
    x, p = _check_points(x, p, batched=True)
    b = x.shape[0]
    threads = _default_threads() if num_threads is None else int(num_threads)

    def solve(i: int) -> float:
        return _solve(squared_distances(x[i], p[i]))

    if threads <= 1 or b <= 1 or x.shape[1] * p.shape[1] < MIN_PARALLEL_SIZE:
        return np.fromiter((solve(i) for i in range(b)), dtype=np.float64, count=b)
    return np.fromiter(_pool(min(threads, b)).map(solve, range(b)), dtype=np.float64, count=b)


@functools.cache
def _pool(num_threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=num_threads, thread_name_prefix="m3fmarl-ot")


def ot_cost_pot(x: NDArray, p: NDArray) -> float:
    """The plain POT computation the reference uses: ``ot.emd2(a, b, ot.dist(x, p))``.

    Kept for benchmarks and tests (same inputs and result as :func:`ot_cost`).
    """
    x, p = _check_points(x, p, batched=False)
    n, k = x.shape[0], p.shape[0]
    return float(ot.emd2(np.full(n, 1.0 / n), np.full(k, 1.0 / k), ot.dist(x, p)))


def ot_cost_assignment(x: NDArray, p: NDArray, max_size: int = 5_000) -> float:
    """Exact cost via the L × L assignment problem, L = lcm(N, K) (see module docstring).

    Raises:
        ValueError: if L exceeds ``max_size`` (the matrix would be L²).
    """
    x, p = _check_points(x, p, batched=False)
    size = math.lcm(x.shape[0], p.shape[0])
    if size > max_size:
        raise ValueError(f"ot_cost_assignment: lcm(N, K) = {size} exceeds max_size = {max_size}")
    return _assignment_cost(squared_distances(x, p))
