"""The compiled kernels equal the numpy expressions they replace, bit for bit (m3fmarl/kernels.py)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from m3fmarl.kernels import cell_counts, gaussian_actions, pairwise_sum, row_sum
from m3fmarl.m3fc.decode import decode_continuous
from m3fmarl.problems.core import batched_histogram, grid_cells, nearest_bin

CI = settings(derandomize=True, deadline=None, max_examples=40)


@CI
@given(n=st.integers(0, 1100), seed=st.integers(0, 2**32 - 1))
def test_row_sum_is_numpys_sum(n: int, seed: int) -> None:
    """numpy's pairwise summation (8 accumulators, blocks of 128, halving above): same bits."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n) * 10.0 ** rng.uniform(-8, 8, n)  # wide magnitudes: order matters
    assert row_sum(x) == x.sum()
    rows = x[: n - n % 3].reshape(3, -1) if n >= 3 else np.zeros((3, 0))
    assert [row_sum(np.ascontiguousarray(r)) for r in rows] == list(rows.sum(axis=1))


def test_row_sum_order_is_not_sequential() -> None:
    """The test above can fail: a plain left-to-right sum differs from numpy's on such data."""
    x = np.random.default_rng(1).standard_normal(300) * 10.0 ** np.random.default_rng(2).uniform(-8, 8, 300)
    sequential = 0.0
    for v in x:
        sequential += v
    assert sequential != x.sum() and row_sum(x) == x.sum()
    assert pairwise_sum(x, 0, 7) == sum(x[:7].tolist())


@CI
@given(seed=st.integers(0, 2**32 - 1), b=st.integers(1, 5), n=st.integers(1, 40), d=st.sampled_from([1, 2]))
def test_gaussian_actions_draw_numpys_stream(seed: int, b: int, n: int, d: int) -> None:
    rng = np.random.default_rng(seed)
    m = 6
    mean = rng.uniform(-1, 1, (b, m, d))
    std = rng.uniform(0, 0.5, (b, m, d))
    cells = rng.integers(0, m, (b, n))
    r1, r2 = np.random.default_rng(seed + 1), np.random.default_rng(seed + 1)
    out = np.empty((b, n, d))
    gaussian_actions(r1, mean, std, cells, out)
    gather = np.arange(b)[:, None]
    expected = np.clip(mean[gather, cells] + std[gather, cells] * r2.standard_normal((b, n, d)), -1.0, 1.0)
    np.testing.assert_array_equal(out, expected)
    assert r1.bit_generator.state == r2.bit_generator.state


@CI
@given(seed=st.integers(0, 2**32 - 1), squash=st.sampled_from(["none", "tanh"]),
       std_map=st.sampled_from(["paper", "reference"]))
def test_decode_continuous_ce_equals_the_numpy_expression(seed: int, squash: str, std_map: str) -> None:
    rng = np.random.default_rng(seed)
    b, n, m, d = 3, 17, 49, 2
    xi = rng.uniform(-1.5, 1.5, (b, m * d * 2))
    cells = rng.integers(0, m, (b, n))
    got = decode_continuous(xi, cells, m, d, np.random.default_rng(seed), squash=squash, std_map=std_map)
    table = np.clip(xi.reshape(b, m, d, 2), -1, 1)
    if squash == "tanh":
        table = np.tanh(table)
    raw = table[..., 1]
    std = 1e-10 + (raw + 1.0) * 0.125 if std_map == "paper" else (raw + 1.0 + 1e-10) * 0.25
    gather = np.arange(b)[:, None]
    z = np.random.default_rng(seed).standard_normal((b, n, d))
    np.testing.assert_array_equal(got, np.clip(table[..., 0][gather, cells] + std[gather, cells] * z, -1, 1))


@CI
@given(points=arrays(np.float64, (4, 9, 2), elements=st.floats(-3, 3)), layer=st.booleans())
def test_grid_cells_combine_nearest_bins(points: np.ndarray, layer: bool) -> None:
    edges = -2 + 4 / 7 * np.arange(8)
    points[0, :8, 0] = edges  # exact cell boundaries: ties go to the lower cell
    marks = points[..., 0] > 0.5 if layer else None
    idx = nearest_bin(points, -2, 2, 7)
    expected = idx[..., 0] * 7 + idx[..., 1]
    if layer:
        expected = 2 * expected + marks
    np.testing.assert_array_equal(grid_cells(points, -2, 2, 7, marks), expected)
    one_d = nearest_bin(points[..., :1], -2, 2, 7)[..., 0]
    np.testing.assert_array_equal(grid_cells(points[..., :1], -2, 2, 7), one_d)


@CI
@given(cells=arrays(np.int64, (3, 30), elements=st.integers(0, 97)))
def test_cell_counts_are_bincounts(cells: np.ndarray) -> None:
    counts = cell_counts(cells, 98)
    for row, c in zip(cells, counts, strict=True):
        np.testing.assert_array_equal(c, np.bincount(row, minlength=98))
    np.testing.assert_array_equal(batched_histogram(cells, 98), counts * (1.0 / 30))  # weight 1/N


@CI
@given(seed=st.integers(0, 2**32 - 1), b=st.integers(1, 4), n=st.integers(1, 40))
def test_decode_discrete_ce_is_inverse_cdf_with_numpys_draws(seed: int, b: int, n: int) -> None:
    """One uniform per minor in C order, action = #{k : CDF_k ≤ u} (0 if rounding leaves the
    CDF's end below u) — the numpy expression of the decoder, same generator state afterwards."""
    from m3fmarl.m3fc.decode import decision_rule_discrete, decode_discrete

    rng = np.random.default_rng(seed)
    m, a = 25, 5
    xi = rng.uniform(-1.5, 1.5, (b, m * a))
    xi[0, :a] = [1.0, -1.0, -1.0, -1.0, -1.0]  # a cell with (almost) all mass on one action
    cells = rng.integers(0, m, (b, n))
    r1, r2 = np.random.default_rng(seed + 1), np.random.default_rng(seed + 1)
    got = decode_discrete(xi, cells, m, a, r1)
    cdf = np.cumsum(decision_rule_discrete(xi.reshape(b, m, a)), axis=-1)[np.arange(b)[:, None], cells]
    u = r2.random((b, n))
    expected = (cdf <= u[..., None]).sum(axis=-1)
    expected[expected >= a] = 0
    np.testing.assert_array_equal(got, expected)
    assert r1.bit_generator.state == r2.bit_generator.state


_INTERRUPTED_LOOP = """
import gymnasium as gym
import numpy as np
import m3fmarl
from m3fmarl.m3fc.decode import decode_continuous, decode_discrete

rng = np.random.default_rng(0)
xi, xd = rng.uniform(-1, 1, (2, 16)), rng.uniform(-1, 1, (2, 12))
cells = rng.integers(0, 4, (2, 3))
env = gym.make("m3fmarl/Foraging-v0", num_minors=3)
env.reset(seed=0)
for _ in range(3):  # first calls compile or load the kernels: numba's typing is not interruptible
    decode_continuous(xi, cells, 4, 2, rng, squash="none", std_map="paper")
    decode_discrete(xd, cells, 4, 3, rng)
    env.step(env.action_space.sample())
print("ready", flush=True)
caught = False
while True:
    try:  # the report inside the try: the next interrupt, sent once it is read, lands in here
        if caught:
            caught = False
            print("caught", flush=True)
        while True:  # small batches: the calls into the kernels are most of the time
            decode_continuous(xi, cells, 4, 2, rng, squash="none", std_map="paper")
            decode_discrete(xd, cells, 4, 3, rng)
            if env.step(env.action_space.sample())[3]:
                env.reset()
    except KeyboardInterrupt:
        caught = True
"""


def test_ctrl_c_inside_the_kernels_raises_keyboardinterrupt_instead_of_crashing() -> None:
    """Ctrl-C lands wherever Python runs, also inside numba's unboxing of the kernels'
    Generator, which does not check ``ctypes.cast`` for an exception: Python's own SIGINT handler
    made that a segmentation fault (3 of 3 runs of this test, within 2–22 interrupts).  Importing
    the kernels installs :func:`m3fmarl.interrupts.raising` instead (train uses it for SIGTERM
    too): 300 interrupts at random points, each one a KeyboardInterrupt, no crash."""
    import signal
    import subprocess
    import sys
    import time

    child = subprocess.Popen([sys.executable, "-c", _INTERRUPTED_LOOP], stdout=subprocess.PIPE, text=True)
    delays = np.random.default_rng(0).uniform(0.001, 0.005, 300)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        for k, delay in enumerate(delays):
            time.sleep(delay)  # the child is back in its loop: the signal lands at a random point of it
            child.send_signal(signal.SIGINT)
            line = child.stdout.readline().strip()
            assert line == "caught", f"interrupt {k}: the loop died with status {child.wait()} (-11: SIGSEGV)"
    finally:
        child.kill()
        child.wait()
