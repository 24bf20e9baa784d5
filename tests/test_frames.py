"""Qualitative rollouts for Figures 8 and 11 (m3fmarl/results/frames.py).

Real, untrained M3FPPO modules (built from the config's module spec on the M3FC spaces, no Ray,
no training): frames at the requested times, reproducibility, the Beach bar occupancy against a
direct count, and the rendered PNGs.  About 15 s.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ray.rllib")
torch = pytest.importorskip("torch")

from m3fmarl.algorithms.m3fppo import m3fppo_config  # noqa: E402
from m3fmarl.evaluate import Policy  # noqa: E402
from m3fmarl.m3fc.env import M3FCCore  # noqa: E402
from m3fmarl.results.frames import (  # noqa: E402
    PAPER_BAR_FRACTION,
    SNAPSHOT_TIMES,
    beach_bar_occupancy,
    render_figure,
    render_qualitative,
    rollout_frames,
)

_CACHE: dict[tuple[str, int], Policy] = {}


def untrained(problem: str, n: int = 20) -> Policy:
    """An untrained M3FPPO policy (``reference`` variant) of ``problem`` at training N = ``n``."""
    if (problem, n) not in _CACHE:
        core = M3FCCore(problem, n, "reference")
        spec = m3fppo_config(problem, n).rl_module_spec
        spec.observation_space, spec.action_space = core.observation_space, core.action_space
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            module = spec.build()
        _CACHE[problem, n] = Policy(module=module, problem=problem, variant="reference", num_minors=n)
    return _CACHE[problem, n]


def direct_bar_fraction(state) -> float:
    """Hand count: minors on the bar's cell 5·x¹ + x², over N."""
    counts = np.bincount(state.minors[0], minlength=25)
    return counts[5 * state.bar[0, 0] + state.bar[0, 1]] / state.minors.shape[1]


def test_frames_at_requested_times() -> None:
    pol = untrained("beach-bar")
    frames = rollout_frames(pol, 30, [25, 0, 3, 3, 200], seed=1)
    assert frames["times"] == [0, 3, 25, 200]
    assert [int(s.t[0]) for s in frames["states"]] == [0, 3, 25, 200]
    for s in frames["states"]:
        assert s.minors.shape == (1, 30) and s.bar.shape == (1, 2) and s.target.shape == (1, 2)
    assert frames["rewards"].shape == (200,) and np.all(np.isfinite(frames["rewards"]))
    assert frames["bar_fraction"].shape == (201,)
    assert (frames["problem"], frames["num_minors"], frames["horizon"]) == ("beach-bar", 30, 200)
    # states are copies, not views of the env's moving state
    assert len({id(s) for s in frames["states"]}) == 4
    # a continuous problem, DE execution, transfer to another N
    pf = rollout_frames(untrained("formation"), 12, [0, 5], seed=0, execution="decentralized")
    assert [int(s.t[0]) for s in pf["states"]] == [0, 5] and pf["states"][1].minors.shape == (1, 12, 2)
    assert pf["bar_fraction"] is None and pf["rewards"].shape == (100,)
    with pytest.raises(ValueError, match="times"):
        rollout_frames(pol, 30, [0, 201])
    with pytest.raises(ValueError, match="execution"):
        rollout_frames(pol, 30, [0], execution="nope")


def test_same_seed_same_frames_and_caller_rng_untouched() -> None:
    pol = untrained("beach-bar")
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = rollout_frames(pol, 40, [0, 10, 50], seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = rollout_frames(pol, 40, [0, 10, 50], seed=7)
    c = rollout_frames(pol, 40, [0, 10, 50], seed=8)
    for sa, sb in zip(a["states"], b["states"], strict=True):
        np.testing.assert_array_equal(sa.minors, sb.minors)
        np.testing.assert_array_equal(sa.bar, sb.bar)
        np.testing.assert_array_equal(sa.target, sb.target)
    np.testing.assert_array_equal(a["rewards"], b["rewards"])
    assert not np.array_equal(a["states"][2].minors, c["states"][2].minors)


def test_bar_fraction_matches_a_direct_count_and_occupancy() -> None:
    pol = untrained("beach-bar")
    times = list(range(0, 201, 20))
    frames = rollout_frames(pol, 50, times, seed=3)
    for t, state in zip(frames["times"], frames["states"], strict=True):
        assert frames["bar_fraction"][t] == pytest.approx(direct_bar_fraction(state))
    # one episode of the occupancy statistic is the same episode (B = 1, same seeds)
    occ = beach_bar_occupancy(pol, num_minors=50, episodes=1, seed=3)
    assert occ["mean_max"] == pytest.approx(frames["bar_fraction"].max())
    assert occ["max_fraction"] == [pytest.approx(frames["bar_fraction"].max())]
    assert frames["bar_fraction"][occ["time_of_max"][0]] == pytest.approx(occ["max_max"])
    assert occ["paper"] == PAPER_BAR_FRACTION


def test_occupancy_of_an_untrained_policy_is_near_uniform() -> None:
    """An untrained policy moves minors ≈ uniformly at random: ≈ 1/25 on the bar on average, and
    the per-episode maximum stays far below the paper's 0.70."""
    occ = beach_bar_occupancy(untrained("beach-bar"), num_minors=300, episodes=6, seed=0)
    assert len(occ["max_fraction"]) == 6 and occ["episodes"] == 6 and occ["num_minors"] == 300
    assert all(0.0 <= f <= 1.0 for f in occ["max_fraction"])
    assert abs(occ["mean_fraction"] - 1 / 25) < 0.01
    assert 1 / 25 < occ["mean_max"] < 0.2 and occ["mean_max"] <= occ["max_max"] <= 1.0
    with pytest.raises(ValueError, match="Beach bar"):
        beach_bar_occupancy(untrained("potential"), num_minors=10, episodes=1)


def check_png(path) -> None:
    from matplotlib.image import imread

    img = imread(str(path))
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 600 and img.shape[2] in (3, 4)
    assert not np.all(img == img[0, 0])
    assert len(np.unique(img.reshape(-1, img.shape[2]), axis=0)) > 50  # a picture, not a blank


def test_render_qualitative_and_figure(tmp_path) -> None:
    pols = {"beach": untrained("beach-bar"), "potential": untrained("potential")}
    out = render_qualitative(pols, tmp_path / "q", num_minors=60, seed=0, occupancy_episodes=2)
    assert out["files"] == [str(tmp_path / "q" / "fig8.png"), str(tmp_path / "q" / "fig11.png")]
    for f in out["files"]:
        check_png(f)
    assert sorted(out["missing"]) == ["foraging", "formation", "two-gaussians"]
    assert any("foraging" in note for note in out["notes"])
    assert out["times"] == {"fig8": {"beach-bar": [0, 3, 25, 50]}, "fig11": {"potential": [0, 5, 25, 45]}}
    assert out["beach_occupancy"]["episodes"] == 2 and 0.0 <= out["beach_occupancy"]["mean_max"] <= 1.0

    frames = render_figure(untrained("foraging"), "fig8", tmp_path / "fig8_foraging.png", num_minors=40)
    check_png(frames["file"])
    assert frames["times"] == list(SNAPSHOT_TIMES["fig8"]["foraging"])
    with pytest.raises(ValueError, match="fig11"):
        render_figure(untrained("foraging"), "fig11", tmp_path / "x.png", num_minors=10)
    with pytest.raises(ValueError, match="trained on"):
        render_qualitative({"formation": untrained("potential")}, tmp_path / "y")
    nothing = render_qualitative({}, tmp_path / "z")
    assert nothing["files"] == [] and nothing["beach_occupancy"] is None and len(nothing["notes"]) == 7
