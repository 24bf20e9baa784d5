"""Exact OT cost (spec/environments.md §2.3, S12): hand case, brute force, agreement with POT."""

from __future__ import annotations

import itertools

import numpy as np
import ot
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m3fmarl.problems.ot import ot_cost, ot_cost_assignment, ot_cost_batch, ot_cost_pot

FAST = settings(derandomize=True, deadline=None, max_examples=12)


def pot_reference(x: np.ndarray, p: np.ndarray) -> float:
    """What the reference computes: ``ot.emd2`` on ``ot.dist`` (squared Euclidean)."""
    a = np.full(len(x), 1.0 / len(x))
    b = np.full(len(p), 1.0 / len(p))
    return float(ot.emd2(a, b, ot.dist(x, p)))


def sample_points(seed: int, n: int, k: int, spread: float, offset: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, size=(n, 2))
    p = np.clip(rng.normal(0.0, spread, size=(k, 2)) + [offset, 0.0], -2, 2)
    return x, p


def test_hand_case_of_spec():
    """Spec §2.3: minors (0,0), (1,0); particles (1,0), (0,1).

    Costs [[1, 1], [0, 2]]; the identity pairing costs (1 + 2)/2 = 1.5, the swap (1 + 0)/2 = 0.5,
    so W = 0.5.
    """
    x = np.array([[0.0, 0.0], [1.0, 0.0]])
    p = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert ot_cost(x, p) == pytest.approx(0.5, abs=1e-12)
    assert ot_cost_pot(x, p) == pytest.approx(0.5, abs=1e-12)
    assert ot_cost_assignment(x, p) == pytest.approx(0.5, abs=1e-12)
    np.testing.assert_allclose(ot_cost_batch(x[None], p[None]), [0.5], atol=1e-12)


def test_one_minor_pays_the_mean_squared_distance():
    """N = 1: all mass of the single minor goes to every particle, W = mean_j ‖x − p_j‖²."""
    x = np.array([[0.5, -1.0]])
    p = np.array([[0.5, 1.0], [1.5, -1.0], [-0.5, 0.0]])
    # squared distances: 4, 1, 1 + 1 = 2 -> mean 7/3
    assert ot_cost(x, p) == pytest.approx(7.0 / 3.0, rel=1e-12)


def test_uneven_split_hand_case():
    """N = 2, K = 4 on a line: minors at 0 and 10, particles at 0, 1, 9, 10.

    Each minor takes two particles (mass 1/4 each); the optimal split is {0, 1} → 0 and
    {9, 10} → 10, cost (0 + 1 + 1 + 0)/4 = 0.5.
    """
    x = np.array([[0.0, 0.0], [10.0, 0.0]])
    p = np.array([[0.0, 0.0], [1.0, 0.0], [9.0, 0.0], [10.0, 0.0]])
    assert ot_cost(x, p) == pytest.approx(0.5, rel=1e-12)


def test_identical_sets_cost_zero():
    x, _ = sample_points(3, 30, 1, 1.0, 0.0)
    assert ot_cost(x, x[::-1].copy()) == pytest.approx(0.0, abs=1e-12)


@FAST
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 6))
def test_equal_sizes_match_brute_force_over_permutations(seed, n):
    """N = K: an optimal coupling is a permutation (Birkhoff), so enumerate them all."""
    x, p = sample_points(seed, n, n, 1.0, 0.0)
    d = ((x[:, None, :] - p[None, :, :]) ** 2).sum(-1)
    best = min(d[np.arange(n), list(perm)].mean() for perm in itertools.permutations(range(n)))
    assert ot_cost(x, p) == pytest.approx(best, rel=1e-9, abs=1e-15)


# Both solver routes of ot_cost: L = lcm(N, K) <= 64 (assignment) and above (network simplex).
SHAPES = [(7, 5), (5, 7), (40, 40), (1, 9), (9, 1), (20, 100), (20, 300), (300, 100), (13, 29), (60, 45)]


@FAST
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=st.sampled_from(SHAPES),
    spread=st.floats(0.01, 2.0),
    offset=st.floats(-1.5, 1.5),
)
def test_agrees_with_pot_emd2(seed, shape, spread, offset):
    n, k = shape
    x, p = sample_points(seed, n, k, spread, offset)
    expected = pot_reference(x, p)
    assert ot_cost(x, p) == pytest.approx(expected, rel=1e-9, abs=1e-14)
    assert ot_cost_pot(x, p) == pytest.approx(expected, rel=1e-12, abs=1e-14)


@settings(derandomize=True, deadline=None, max_examples=6)
@given(seed=st.integers(0, 2**32 - 1), shape=st.sampled_from([(9, 10), (30, 45), (20, 100), (70, 70)]))
def test_assignment_reformulation_agrees(seed, shape):
    """Above L = 64 ot_cost runs the network simplex; the assignment is an independent exact method."""
    n, k = shape
    x, p = sample_points(seed, n, k, 0.7, 0.5)
    assert ot_cost(x, p) == pytest.approx(ot_cost_assignment(x, p), rel=1e-9, abs=1e-14)


def test_clustered_points_at_the_paper_size():
    """(300, 300), particles from one tight 2G component: still equal to POT."""
    x, p = sample_points(11, 300, 300, np.sqrt(0.05), -1.0)
    assert ot_cost(x, p) == pytest.approx(pot_reference(x, p), rel=1e-9)


def test_batch_equals_single_solves_for_any_thread_count():
    rng = np.random.default_rng(5)
    x = rng.uniform(-2, 2, size=(5, 40, 2))
    p = rng.normal(0, 0.6, size=(5, 70, 2))
    single = np.array([ot_cost(x[i], p[i]) for i in range(5)])
    for threads in (1, 2, 3):
        np.testing.assert_array_equal(ot_cost_batch(x, p, num_threads=threads), single)
    assert ot_cost_batch(x, p).shape == (5,)
    assert len(set(single.tolist())) == 5  # the copies really are different problems


def test_is_symmetric_and_translation_invariant():
    x, p = sample_points(8, 12, 30, 0.5, 0.3)
    shift = np.array([3.0, -7.0])
    assert ot_cost(p, x) == pytest.approx(ot_cost(x, p), rel=1e-9)
    assert ot_cost(x + shift, p + shift) == pytest.approx(ot_cost(x, p), rel=1e-9)


@pytest.mark.parametrize(
    "x, p",
    [
        (np.zeros((3, 2)), np.zeros((4, 3))),  # dimension mismatch
        (np.zeros((0, 2)), np.zeros((4, 2))),  # empty
        (np.zeros(3), np.zeros((4, 2))),  # not 2-D
        (np.array([[np.nan, 0.0]]), np.zeros((4, 2))),  # NaN
    ],
)
def test_bad_input_raises(x, p):
    with pytest.raises(ValueError):
        ot_cost(x, p)


def test_batch_bad_input_raises():
    with pytest.raises(ValueError):
        ot_cost_batch(np.zeros((2, 3, 2)), np.zeros((3, 4, 2)))
    with pytest.raises(ValueError):
        ot_cost_batch(np.zeros((3, 2)), np.zeros((4, 2)))


def test_a_trials_cpus_set_the_ot_and_torch_threads(monkeypatch):
    """use_cpus(k) (a trial given `cpus: k`, or `m3fmarl train --cpus k`): the exact-OT solves of
    a batch run on k threads and torch on k intra-op threads; the costs do not change."""
    import threading

    import torch

    from m3fmarl.util import CPUS_ENV, process_cpus, use_cpus

    monkeypatch.delenv("M3FMARL_OT_THREADS", raising=False)
    before = torch.get_num_threads()
    rng = np.random.default_rng(0)
    x, p = rng.normal(size=(16, 300, 2)), rng.normal(size=(16, 100, 2))  # ≈ 2 ms per solve

    def solver_threads() -> set[str]:
        seen: set[str] = set()
        original = ot_cost.__globals__["_solve"]

        def spy(m):  # noqa: ANN001
            seen.add(threading.current_thread().name)
            return original(m)

        monkeypatch.setitem(ot_cost.__globals__, "_solve", spy)
        try:
            costs.append(ot_cost_batch(x, p))
        finally:
            monkeypatch.setitem(ot_cost.__globals__, "_solve", original)
        return seen

    costs: list[np.ndarray] = []
    try:
        monkeypatch.setenv(CPUS_ENV, "1")
        assert solver_threads() == {threading.current_thread().name}
        use_cpus(2)
        assert process_cpus() == 2 and torch.get_num_threads() == 2
        names = solver_threads()
        assert len(names) == 2 and all(n.startswith("m3fmarl-ot") for n in names)
        np.testing.assert_array_equal(costs[0], costs[1])
        with pytest.raises(ValueError, match="cpus must be >= 1"):
            use_cpus(0)
    finally:
        torch.set_num_threads(before)
