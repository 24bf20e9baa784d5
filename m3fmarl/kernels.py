"""Compiled (numba) loops for the simulators' hottest paths, bit-for-bit equal to numpy's.

Numpy spends most of a large-batch step on passes over temporaries and on per-draw calls into
the bit generator; a numba loop fuses the passes and inlines the generator.  Every kernel here
performs the same floating-point operations in the same order as the numpy expression it
replaces (sums included: :func:`pairwise_sum` is numpy's summation), and draws from the
``np.random.Generator`` it is given in the same order, so results and random streams are
identical to numpy's (tests/test_kernels.py).  Kernels are compiled on first use and cached on
disk (``cache=True``); numba never contracts ``a * b + c`` into an FMA unless asked.  Importing
this module makes Ctrl-C safe during the kernels' calls (:mod:`m3fmarl.interrupts`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from m3fmarl.interrupts import install_safe_ctrl_c

install_safe_ctrl_c()  # Ctrl-C inside numba's unboxing of a Generator must not crash (m3fmarl/interrupts.py)

PAIRWISE_BLOCK = 128
"""numpy's PW_BLOCKSIZE: blocks up to this length are summed with 8 accumulators."""


@njit("float64(float64[::1], int64, int64)", cache=True, nogil=True)
def pairwise_sum(a: np.ndarray, start: int, n: int) -> float:
    """``a[start:start + n].sum()`` exactly as numpy's float64 ``add.reduce`` adds a contiguous run."""
    if n < 8:
        res = -0.0
        for i in range(start, start + n):
            res += a[i]
        return res
    if n <= PAIRWISE_BLOCK:
        r0, r1, r2, r3 = a[start], a[start + 1], a[start + 2], a[start + 3]
        r4, r5, r6, r7 = a[start + 4], a[start + 5], a[start + 6], a[start + 7]
        i = 8
        stop = n - n % 8
        while i < stop:
            j = start + i
            r0 += a[j]
            r1 += a[j + 1]
            r2 += a[j + 2]
            r3 += a[j + 3]
            r4 += a[j + 4]
            r5 += a[j + 5]
            r6 += a[j + 6]
            r7 += a[j + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res += a[start + i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return pairwise_sum(a, start, n2) + pairwise_sum(a, start + n2, n - n2)


@njit(cache=True, nogil=True)
def row_sum(a: np.ndarray) -> float:
    """``a.sum()`` of a contiguous 1-D float64 array, as numpy's ``a.sum(axis=-1)`` gives per row."""
    return 0.0 + pairwise_sum(a, 0, a.shape[0])


@njit(cache=True, nogil=True)
def gaussian_actions(
    rng: np.random.Generator, mean_tab: np.ndarray, std_tab: np.ndarray, cells: np.ndarray, out: np.ndarray
) -> None:
    """``out[c, i] = clip(mean_tab[c, cells[c, i]] + std_tab[c, cells[c, i]] * z, -1, 1)``,
    z ~ N(0, I) drawn in C order over (c, i, dim): the numpy expression
    ``np.clip(mean + std * rng.standard_normal(mean.shape), -1, 1)`` on the gathered ``(B, M, d)``
    tables, same numbers, same generator state afterwards."""
    b, n = cells.shape
    d = mean_tab.shape[2]
    for c in range(b):
        for i in range(n):
            cell = cells[c, i]
            for j in range(d):
                u = mean_tab[c, cell, j] + std_tab[c, cell, j] * rng.standard_normal()
                out[c, i, j] = min(max(u, -1.0), 1.0)


@njit(cache=True, nogil=True)
def discrete_actions(rng: np.random.Generator, cdf_tab: np.ndarray, cells: np.ndarray, out: np.ndarray) -> None:
    """``out[c, i]`` = #{k : cdf_tab[c, cells[c, i], k] ≤ u}, u ~ U[0, 1) drawn in C order over
    (c, i) (``rng.random((B, N))``), and 0 where rounding leaves the CDF's end below u — inverse-CDF
    sampling as :func:`m3fmarl.m3fc.decode.decode_discrete`, same draws and actions."""
    b, n = cells.shape
    num_actions = cdf_tab.shape[2]
    for c in range(b):
        for i in range(n):
            u = rng.random()
            cell = cells[c, i]
            a = 0
            for k in range(num_actions):
                if cdf_tab[c, cell, k] <= u:
                    a += 1
            out[c, i] = 0 if a >= num_actions else a


@njit(cache=True, nogil=True)
def cell_counts(cells: np.ndarray, num_cells: int) -> np.ndarray:
    """``(B, M)`` int64 counts of each row of ``cells`` (``np.bincount`` per row)."""
    b, n = cells.shape
    counts = np.zeros((b, num_cells), dtype=np.int64)
    for c in range(b):
        for i in range(n):
            counts[c, cells[c, i]] += 1
    return counts


@njit(cache=True, nogil=True)
def grid_cells_flat(points: np.ndarray, lo: float, width: float, num_bins: int, layer: np.ndarray,
                    out: np.ndarray) -> None:
    """``out[r]`` = flat C-order cell of ``points[r]`` (``(R, d)``), per axis
    ``clip(ceil((x − lo)/width), 1, num_bins) − 1`` (:func:`m3fmarl.problems.core.nearest_bin`);
    with a non-empty ``layer`` (``(R,)`` of 0/1) the cell is ``2·cell + layer``."""
    d = points.shape[1]
    for r in range(points.shape[0]):
        flat = 0
        for j in range(d):
            k = np.ceil((points[r, j] - lo) / width)
            k = min(max(k, 1.0), float(num_bins))
            flat = flat * num_bins + int(k) - 1
        if layer.shape[0]:
            flat = 2 * flat + layer[r]
        out[r] = flat
