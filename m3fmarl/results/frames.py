"""Qualitative rollouts of trained M3FC policies: paper Figures 8 and 11 (spec/experiments.md
"fig8", "fig11"; paper Appendix R.3).

One episode of a policy is played in the batched :class:`~m3fmarl.m3fc.vector.M3FCVectorEnv` with
stochastic actions (sampled as :func:`m3fmarl.evaluate.evaluate` samples them), and the env state
is recorded at chosen times; the recorded states are drawn as the paper's panel rows.

Snapshot times (:data:`SNAPSHOT_TIMES`):

* fig8 — read from the figure's text extraction, unambiguous: Beach t = 0, 3, 25, 50; Foraging
  t = 0, 20, 30, 40.
* fig11 — the text extraction holds twelve time labels, {0, 0, 0, 5, 5, 25, 25, 25, 35, 45, 50,
  75}, without a clear panel order.  R.3 places t = 25 and t = 50 (the sinusoidal peaks) in the
  2G row (a–d), which leaves 0 and 75 for 2G: 2G t = 0, 25, 50, 75.  The remaining eight labels
  {0, 0, 5, 5, 25, 25, 35, 45} split into two rows of one 0, one 5, one 25 and one of {35, 45}:
  Formation t = 0, 5, 25, 35 and Potential t = 0, 5, 25, 45 (which of the two rows has 35 and
  which 45 is a guess; both problems have T = 100, so either is within the episode).

Pictures: each problem's own ``draw(ax, state, index)`` (Foraging, 2G, Formation, Potential);
Beach is drawn here as a heat map (``imshow``) of the 5 × 5 histogram of the minors with the bar
(major) and its target in green.  Potential additionally gets the arrow of the force the minors'
potential exerts on the major (not to scale, as in the paper): the major has no speed of its own
(spec P4), so its one-step displacement under ``Potential.step`` from the recorded state *is* that
force; it is obtained by stepping a copy of the state with the problem's own dynamics, not
re-implemented here.  The Foraging truck has no target in this implementation (the paper caption
mentions one), so none is drawn.

Beach bar occupancy (spec fig8, paper: "M3FPPO learns to accumulate up to 70 % of agents on the
bar"): the fraction of minors on the bar's cell, maximised over the states t = 0..T of an
episode, then averaged (and maximised) over episodes — :func:`beach_bar_occupancy`, vectorised
over episodes (B copies in one env).

Matplotlib is used off-screen only (Agg canvas, no pyplot state), as in :mod:`m3fmarl.render`.

Public API: :func:`rollout_frames`, :func:`render_figure`, :func:`beach_bar_occupancy`,
:func:`render_qualitative`, :data:`SNAPSHOT_TIMES`, :data:`PAPER_BAR_FRACTION`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from m3fmarl.evaluate import Policy
from m3fmarl.m3fc.env import EXECUTIONS
from m3fmarl.m3fc.vector import M3FCVectorEnv
from m3fmarl.problems import PAPER_NAMES, canonical_name
from m3fmarl.problems.core import State, check_choice
from m3fmarl.rollout import play
from m3fmarl.util import torch_threads

SNAPSHOT_TIMES: dict[str, dict[str, tuple[int, ...]]] = {
    "fig8": {"beach-bar": (0, 3, 25, 50), "foraging": (0, 20, 30, 40)},
    "fig11": {"two-gaussians": (0, 25, 50, 75), "formation": (0, 5, 25, 35), "potential": (0, 5, 25, 45)},
}
"""Figure → problem (row order) → snapshot times of its panels (see the module docstring)."""

PAPER_BAR_FRACTION = 0.70
"""The paper's "up to 70 % of agents on the bar" (Beach, Fig. 8)."""

GRID = 5  # Beach bar torus side; cells are 5·x¹ + x² (m3fmarl.problems.beach_bar)
PANEL_INCHES = 3.0
DPI = 100


# --- playing an episode ----------------------------------------------------------------------


def _make_env(policy: Policy, num_minors: int, num_envs: int, execution: str) -> M3FCVectorEnv:
    if policy.problem is None or policy.variant is None:
        raise ValueError("the policy carries no training problem/variant (build Policy(problem=, variant=))")
    check_choice("execution", execution, EXECUTIONS)
    if isinstance(num_minors, bool) or not isinstance(num_minors, (int, np.integer)) or num_minors < 1:
        raise ValueError(f"num_minors must be an integer >= 1, got {num_minors!r}")
    env = M3FCVectorEnv(policy.problem, num_envs=num_envs, num_minors=int(num_minors), variant=policy.variant,
                        execution=execution, **policy.env_config)
    obs_env, obs_mod = env.single_observation_space.shape, policy.module.observation_space.shape
    if obs_env != obs_mod:
        raise ValueError(f"{policy.problem} ({policy.variant}, N={num_minors}) does not fit the policy: "
                         f"env observation {obs_env}, module observation {obs_mod}")
    return env


def _play(policy: Policy, env: M3FCVectorEnv, seed: int, on_state: Callable[[int, State], None]) -> np.ndarray:
    """Play one episode in every copy of ``env`` (stochastic actions; torch seeded with ``seed``
    inside ``fork_rng``, env reset with ``seed``); call ``on_state(t, state)`` for t = 0..T and
    return the rewards ``(T, B)``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    n = env.problem.num_minors
    de = env.core.decentralized
    rewards = np.zeros((env.problem.horizon, env.num_envs))

    def record(t: int, state: State, reward: np.ndarray | None) -> None:
        if reward is not None:
            rewards[t - 1] = reward
        on_state(t, state)

    with torch_threads(1), torch.random.fork_rng(devices=[]):  # batch-1 passes: one thread
        torch.manual_seed(int(seed))
        play(env, lambda obs: policy.to_env(policy.sample(obs, n if de else None)), env.num_envs, int(seed), record)
    return rewards


def bar_fraction(state: State) -> np.ndarray:
    """``(B,)`` fraction of minors on the bar's cell of a Beach bar state (minors ``(B, N)`` cells
    5·x¹ + x², bar ``(B, 2)``)."""
    bar_cell = state.bar[:, 0] * GRID + state.bar[:, 1]
    return (state.minors == bar_cell[:, None]).mean(axis=1)


def rollout_frames(
    policy: Policy, num_minors: int, times: Sequence[int], seed: int = 0, execution: str = "centralized",
) -> dict[str, Any]:
    """Play one full episode (T steps) of ``policy`` at N = ``num_minors`` and record the state
    at the requested times.

    Args:
        policy: a :class:`m3fmarl.evaluate.Policy` with ``problem`` and ``variant``.
        num_minors: N.
        times: snapshot times in [0, T]; t = 0 is the state after reset, t = k after k steps.
        seed: seeds torch (``torch.manual_seed`` inside ``fork_rng``: the caller's RNG is left
            alone) and the env (``reset(seed=seed)``); same seed ⇒ same frames.
        execution: ``centralized`` or ``decentralized``.

    Returns:
        ``problem``, ``variant``, ``num_minors``, ``execution``, ``seed``, ``horizon``;
        ``times`` (sorted, unique) and ``states`` (a deep copy of ``env.state``, B = 1, for each);
        ``rewards`` ``(T,)`` (r_t of step t → t + 1); ``bar_fraction`` ``(T + 1,)`` — the fraction
        of minors on the bar's cell at t = 0..T — for Beach bar, else None; ``env_problem`` (the
        :class:`~m3fmarl.problems.core.Problem` instance played, for drawing).

    Raises:
        ValueError: a time outside [0, T], an unknown execution, bad N/seed, or a policy that does
            not fit the env.
    """
    env = _make_env(policy, num_minors, 1, execution)
    horizon = env.problem.horizon
    wanted = sorted({int(t) for t in times})
    for t in times:
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= t <= horizon:
            raise ValueError(f"times must be integers in [0, T = {horizon}], got {t!r}")
    if not wanted:
        raise ValueError("times must not be empty")
    states: dict[int, State] = {}
    beach = env.problem.name == "beach-bar"
    fractions = np.zeros(horizon + 1) if beach else None

    def record(t: int, state: State) -> None:
        if t in wanted:
            states[t] = copy.deepcopy(state)
        if fractions is not None:
            fractions[t] = bar_fraction(state)[0]

    rewards = _play(policy, env, seed, record)
    return {
        "problem": env.problem.name, "variant": policy.variant, "num_minors": int(num_minors),
        "execution": execution, "seed": int(seed), "horizon": horizon,
        "times": wanted, "states": [states[t] for t in wanted],
        "rewards": rewards[:, 0], "bar_fraction": fractions, "env_problem": env.problem,
    }


def beach_bar_occupancy(policy: Policy, num_minors: int = 300, episodes: int = 10, seed: int = 0,
                        execution: str = "centralized") -> dict[str, Any]:
    """Largest fraction of minors on the bar's cell during a Beach bar episode.

    ``episodes`` copies are played together in one env (one ``reset(seed=seed)``); per episode
    the fraction is maximised over t = 0..T, then averaged and maximised over episodes.

    Returns:
        ``max_fraction`` (list, per episode), ``mean_max``, ``max_max``, ``time_of_max`` (per
        episode), ``mean_fraction`` (the time- and episode-average), ``paper`` (0.70),
        ``num_minors``, ``episodes``, ``seed``, ``execution``.
    """
    if policy.problem != "beach-bar":
        raise ValueError(f"beach_bar_occupancy needs a Beach bar policy, got {policy.problem!r}")
    if isinstance(episodes, bool) or not isinstance(episodes, (int, np.integer)) or episodes < 1:
        raise ValueError(f"episodes must be an integer >= 1, got {episodes!r}")
    env = _make_env(policy, num_minors, int(episodes), execution)
    fractions = np.zeros((env.problem.horizon + 1, int(episodes)))

    def record(t: int, state: State) -> None:
        fractions[t] = bar_fraction(state)

    _play(policy, env, seed, record)
    best = fractions.max(axis=0)
    return {
        "max_fraction": [float(f) for f in best], "mean_max": float(best.mean()), "max_max": float(best.max()),
        "time_of_max": [int(t) for t in fractions.argmax(axis=0)], "mean_fraction": float(fractions.mean()),
        "paper": PAPER_BAR_FRACTION, "num_minors": int(num_minors), "episodes": int(episodes),
        "seed": int(seed), "execution": execution,
    }


# --- drawing ---------------------------------------------------------------------------------


def _figure(rows: int, cols: int) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(PANEL_INCHES * cols + 0.6, PANEL_INCHES * rows + 0.2), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _beach_histogram(state: State) -> np.ndarray:
    """5 × 5 empirical mean field of copy 0, indexed [x¹, x²]."""
    return (np.bincount(state.minors[0], minlength=GRID * GRID) / state.minors.shape[1]).reshape(GRID, GRID)


def _draw_beach(ax: Any, state: State, vmax: float) -> Any:
    mu = _beach_histogram(state)
    # x¹ horizontal, x² vertical (as BeachBar.draw); imshow rows are the vertical axis.
    image = ax.imshow(mu.T, origin="lower", cmap="viridis", vmin=0.0, vmax=vmax,
                      extent=(-0.5, GRID - 0.5, -0.5, GRID - 0.5))
    for x1 in range(GRID):
        for x2 in range(GRID):
            if mu[x1, x2] >= 0.005:
                ax.text(x1, x2, f"{mu[x1, x2]:.0%}", ha="center", va="center", fontsize=7,
                        color="k" if mu[x1, x2] > 0.6 * vmax else "w")
    (y1, y2), (z1, z2) = state.bar[0], state.target[0]
    ax.scatter([y1], [y2], marker="^", s=170, facecolors="none", edgecolors="limegreen", linewidths=2.5,
               label="bar (major)")
    ax.scatter([z1], [z2], marker="*", s=220, facecolors="limegreen", edgecolors="k", linewidths=0.8,
               label="target")
    ax.set_xticks(range(GRID))
    ax.set_yticks(range(GRID))
    ax.set_xlabel("$x^1$")
    ax.set_ylabel("$x^2$")
    return image


def _draw_potential_extras(ax: Any, problem: Any, state: State) -> None:
    """Potential panel additions: the minors' density (a histogram along the torus, below the
    line — 300 points on a line are unreadable otherwise) and the arrow of the minors' push on
    the major (its one-step displacement under the problem's own dynamics; not to scale)."""
    from m3fmarl.problems.potential import HI, LENGTH, LO

    x = state.minors[0]
    counts, edges = np.histogram(x, bins=40, range=(LO, HI))
    ax.bar(edges[:-1], np.minimum(10.0 * counts / x.size, 0.9), width=np.diff(edges), bottom=-1.0, align="edge",
           color="tab:blue", alpha=0.3, label="minor density")
    probe = copy.deepcopy(state)
    nxt, _ = problem.step(probe, np.zeros((1, 1)), np.zeros((1, x.size, 1)), np.random.default_rng(0))
    drift = (float(nxt.major[0] - state.major[0]) - LO) % LENGTH + LO  # shortest way round the torus
    force = drift / problem.switches.force_coeff  # in [−1, 1]: the mean of (1 − d)^+ · sign
    if abs(force) < 1e-6:
        return
    length = 0.3 + 1.2 * abs(force)  # not to scale, as in the paper
    # Centred over the major, shifted to stay inside the panel near the ends of the torus.
    centre = min(max(float(state.major[0]), LO + length / 2), HI - length / 2)
    start, end = centre - np.sign(force) * length / 2, centre + np.sign(force) * length / 2
    ax.annotate("", xy=(end, 0.45), xytext=(start, 0.45),
                arrowprops=dict(arrowstyle="-|>", color="tab:purple", lw=2.0, mutation_scale=18))
    ax.text(centre, 0.6, "push", ha="center", fontsize=7, color="tab:purple")


def _draw_row(fig: Any, axes: Sequence[Any], frames: Mapping[str, Any]) -> None:
    problem = frames["env_problem"]
    name = frames["problem"]
    label = PAPER_NAMES.get(name, name)
    if name == "beach-bar":
        vmax = max(max(float(_beach_histogram(s).max()) for s in frames["states"]), 0.05)
        image = None
        for ax, t, state in zip(axes, frames["times"], frames["states"], strict=True):
            image = _draw_beach(ax, state, vmax)
            ax.set_title(f"{label}, t = {t}, on bar {frames['bar_fraction'][t]:.0%}", fontsize=10)
        axes[0].legend(loc="upper left", fontsize=6, framealpha=0.7, markerscale=0.5)
        fig.colorbar(image, ax=list(axes), shrink=0.85, label="fraction of minors")
        return
    for ax, t, state in zip(axes, frames["times"], frames["states"], strict=True):
        problem.draw(ax, state, 0)
        if name == "potential":
            _draw_potential_extras(ax, problem, state)
        ax.set_title(f"{label}, t = {t}", fontsize=10)
    axes[0].legend(loc="upper left", fontsize=6, framealpha=0.7, markerscale=0.6)


def _figure_problems(fig_id: str) -> dict[str, tuple[int, ...]]:
    if fig_id not in SNAPSHOT_TIMES:
        raise ValueError(f"unknown figure {fig_id!r}; valid: {', '.join(SNAPSHOT_TIMES)}")
    return SNAPSHOT_TIMES[fig_id]


def _render_rows(frames_list: Sequence[Mapping[str, Any]], out_png: str | Path) -> Path:
    cols = max(len(f["times"]) for f in frames_list)
    fig = _figure(len(frames_list), cols)
    grid = fig.subplots(len(frames_list), cols, squeeze=False)
    for row, frames in zip(grid, frames_list, strict=True):
        _draw_row(fig, row[: len(frames["times"])], frames)
        for ax in row[len(frames["times"]):]:
            ax.set_axis_off()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def render_figure(policy: Policy, fig_id: str, out_png: str | Path, num_minors: int = 300,
                  seed: int = 0) -> dict[str, Any]:
    """Render the policy's row of ``fig_id`` (``fig8``: Beach or Foraging; ``fig11``: 2G,
    Formation or Potential) — one episode, snapshots at :data:`SNAPSHOT_TIMES` — to ``out_png``.

    Returns the frames of :func:`rollout_frames` plus ``file`` (the PNG path).

    Raises:
        ValueError: unknown figure, or the policy's problem is not part of it.
    """
    problems = _figure_problems(fig_id)
    if policy.problem not in problems:
        raise ValueError(f"{fig_id} shows {', '.join(problems)}; the policy is for {policy.problem!r}")
    frames = rollout_frames(policy, num_minors, problems[policy.problem], seed=seed)
    frames["file"] = _render_rows([frames], out_png)
    return frames


def render_qualitative(policies: Mapping[str, Policy], out_dir: str | Path, num_minors: int = 300,
                       seed: int = 0, occupancy_episodes: int = 10) -> dict[str, Any]:
    """Write ``fig8.png`` (Beach and Foraging rows) and ``fig11.png`` (2G, Formation, Potential
    rows) into ``out_dir`` from the given policies (keyed by problem name; any spelling
    :func:`~m3fmarl.problems.canonical_name` accepts).

    A figure with none of its problems given is not written; missing problems are left out of
    their figure and listed in ``notes``.  With a Beach policy the bar occupancy
    (:func:`beach_bar_occupancy`, ``occupancy_episodes`` episodes) is computed as well.

    Returns:
        ``files`` (written PNGs), ``beach_occupancy`` (dict or None), ``times`` (figure →
        problem → snapshot times used), ``missing`` (problems without a policy), ``notes``.

    Raises:
        ValueError: a key naming an unknown problem, or a policy trained on another problem.
    """
    given: dict[str, Policy] = {}
    for key, pol in policies.items():
        name = canonical_name(key)
        if pol.problem != name:
            raise ValueError(f"policies[{key!r}] was trained on {pol.problem!r}, not {name!r}")
        given[name] = pol
    out_dir = Path(out_dir)
    files: list[str] = []
    notes: list[str] = []
    missing: list[str] = []
    times: dict[str, dict[str, list[int]]] = {}
    for fig_id, problems in SNAPSHOT_TIMES.items():
        frames_list = []
        for name, ts in problems.items():
            if name not in given:
                missing.append(name)
                notes.append(f"{fig_id}: no policy for {name}; its row is left out")
                continue
            frames_list.append(rollout_frames(given[name], num_minors, ts, seed=seed))
            times.setdefault(fig_id, {})[name] = list(ts)
        if not frames_list:
            notes.append(f"{fig_id}: no policy for any of its problems; {fig_id}.png not written")
            continue
        files.append(str(_render_rows(frames_list, out_dir / f"{fig_id}.png")))
    occupancy = None
    if "beach-bar" in given:
        occupancy = beach_bar_occupancy(given["beach-bar"], num_minors=num_minors, episodes=occupancy_episodes,
                                        seed=seed)
    return {"files": files, "beach_occupancy": occupancy, "times": times, "missing": missing, "notes": notes,
            "num_minors": int(num_minors), "seed": int(seed)}


__all__ = ["PAPER_BAR_FRACTION", "SNAPSHOT_TIMES", "bar_fraction", "beach_bar_occupancy", "render_figure",
           "render_qualitative", "rollout_frames"]
