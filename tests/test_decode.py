"""ξ decoders (spec §1.2): valid decision rules, std maps, squash, binning."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from m3fmarl.m3fc.decode import decision_rule_discrete, decode_continuous, decode_discrete
from m3fmarl.m3fc.env import M3FCCore
from m3fmarl.problems.core import batched_histogram, nearest_bin

finite = st.floats(-5, 5, allow_nan=False, width=32)


def test_discrete_rule_example() -> None:
    """ξ[x, ·] = (1, −1, 0, 0.5, −0.5) → (ξ + 1 + ε)/Z = (2, ε, 1, 1.5, 0.5)/5 = (0.4, 2e−11, 0.2, 0.3, 0.1)."""
    p = decision_rule_discrete(np.array([1.0, -1.0, 0.0, 0.5, -0.5]))
    np.testing.assert_allclose(p, [0.4, 2e-11, 0.2, 0.3, 0.1], rtol=1e-6)


@given(xi=arrays(np.float32, (3, 25 * 5), elements=finite))
def test_discrete_rules_are_distributions(xi: np.ndarray) -> None:
    p = decision_rule_discrete(xi.reshape(3, 25, 5))
    assert np.all(p > 0)
    np.testing.assert_allclose(p.sum(-1), 1.0)


def test_discrete_sampling_frequencies() -> None:
    xi = np.tile(np.array([1.0, -1.0, 0.0, 0.5, -0.5]), 25)[None]
    cells = np.zeros((1, 200_000), dtype=np.int64)
    a = decode_discrete(xi, cells, 25, 5, np.random.default_rng(0))
    freq = np.bincount(a[0], minlength=5) / a.size
    np.testing.assert_allclose(freq, [0.4, 0.0, 0.2, 0.3, 0.1], atol=0.004)


@pytest.mark.parametrize(
    "std_map, squash, lo, hi",
    [("paper", "none", 1e-10, 0.25 + 1e-10), ("reference", "none", 2.5e-11, 0.5 + 2.5e-11),
     ("reference", "tanh", 0.0596, 0.4404)],
)
@given(xi=arrays(np.float32, (2, 7 * 2 * 2), elements=finite))
def test_continuous_actions_within_bounds(xi: np.ndarray, std_map: str, squash: str, lo: float, hi: float) -> None:
    cells = np.tile(np.arange(7), (2, 3))
    u = decode_continuous(xi, cells, 7, 2, np.random.default_rng(0), squash=squash, std_map=std_map)
    assert u.shape == (2, 21, 2) and np.all(np.abs(u) <= 1.0)


@pytest.mark.parametrize(
    "std_map, squash, xi_mean, xi_std, mean, std",
    [
        ("reference", "none", 0.0, 0.0, 0.0, 0.25),  # golden README: ξ = 0 → N(0, 0.25²)
        ("reference", "tanh", 0.0, 0.0, 0.0, 0.25),
        ("paper", "none", 0.0, 0.0, 0.0, 0.125),  # s = ε + (0 + 1)/8
        ("reference", "tanh", 0.2, -1.0, np.tanh(0.2), (np.tanh(-1) + 1) / 4),
        ("paper", "none", -0.3, -0.6, -0.3, 0.4 / 8),
        ("reference", "none", 3.0, -1.0, 1.0, 2.5e-11),  # clipped to [−1, 1] first
    ],
)
def test_continuous_mean_and_std(std_map, squash, xi_mean, xi_std, mean, std) -> None:
    n = 200_000
    xi = np.zeros((1, 1, 1, 2))
    xi[..., 0], xi[..., 1] = xi_mean, xi_std
    u = decode_continuous(xi.reshape(1, -1), np.zeros((1, n), dtype=np.int64), 1, 1,
                          np.random.default_rng(0), squash=squash, std_map=std_map)[0, :, 0]
    if abs(mean) + 3 * std < 1:  # clipping negligible
        assert u.mean() == pytest.approx(mean, abs=4 * std / np.sqrt(n) + 1e-12)
        assert u.std() == pytest.approx(std, rel=0.01)
    else:  # a (near-)deterministic rule outside the box: the action sits on the clipped mean
        np.testing.assert_allclose(u, np.clip(mean, -1, 1), atol=1e-9)


def test_each_minor_uses_its_own_cell() -> None:
    """Cell 0 says 'mean −1', cell 1 says 'mean +1' (tiny std): minors follow their cell."""
    xi = np.zeros((1, 2, 1, 2))
    xi[0, 0, 0] = (-1.0, -1.0)
    xi[0, 1, 0] = (1.0, -1.0)
    cells = np.array([[0, 1, 1, 0]])
    u = decode_continuous(xi.reshape(1, -1), cells, 2, 1, np.random.default_rng(0), squash="none", std_map="reference")
    np.testing.assert_allclose(u[0, :, 0], [-1, 1, 1, -1], atol=1e-8)


def test_de_decoding_reference_mismatch_squash() -> None:
    """M2: under the reference preset 2G and Formation decode DE without tanh; Potential keeps tanh."""
    for name, ce, de in (("two-gaussians", "tanh", "none"), ("formation", "tanh", "none"),
                         ("potential", "tanh", "tanh"), ("foraging", "none", "none")):
        assert M3FCCore(name, 3, "reference").squash == ce
        assert M3FCCore(name, 3, "reference", execution="decentralized").squash == de
        assert M3FCCore(name, 3, "paper", execution="decentralized").squash == "none"


def test_nearest_bin_centres_and_ties() -> None:
    """7 cells on [−2, 2], width 4/7: centres map to their own cell; boundaries go to the lower cell."""
    centres = -2 + 4 / 14 + 4 / 7 * np.arange(7)
    np.testing.assert_array_equal(nearest_bin(centres, -2, 2, 7), np.arange(7))
    bounds = -2 + 4 / 7 * np.arange(1, 7)
    np.testing.assert_array_equal(nearest_bin(bounds + 1e-9, -2, 2, 7), np.arange(1, 7))
    np.testing.assert_array_equal(nearest_bin(bounds - 1e-9, -2, 2, 7), np.arange(0, 6))
    np.testing.assert_array_equal(nearest_bin(np.array([-2.0, 2.0, -5.0, 5.0]), -2, 2, 7), [0, 6, 0, 6])


@given(x=arrays(np.float64, 50, elements=st.floats(-2, 2)))
def test_nearest_bin_is_the_argmin_distance_to_centres(x: np.ndarray) -> None:
    centres = -2 + 4 / 14 + 4 / 7 * np.arange(7)
    dist = np.abs(x[:, None] - centres[None])
    ok = np.abs(((x + 2) / (4 / 7)) - np.round((x + 2) / (4 / 7))) > 1e-9  # away from boundaries
    np.testing.assert_array_equal(nearest_bin(x, -2, 2, 7)[ok], dist.argmin(1)[ok])


@given(cells=arrays(np.int64, (3, 17), elements=st.integers(0, 48)))
def test_batched_histogram_sums_to_one_and_counts(cells: np.ndarray) -> None:
    h = batched_histogram(cells, 49)
    np.testing.assert_allclose(h.sum(1), 1.0)
    for b in range(3):
        np.testing.assert_allclose(h[b], np.bincount(cells[b], minlength=49) / 17)
