"""Common core of the five problems (spec/environments.md §0, §1).

A *problem* is the finite-agent system: one (possibly trivial) major agent, N exchangeable minor
agents, one shared reward, a fixed horizon T.  Every problem here is written once, batched over
``B`` independent copies: arrays carry a leading copy axis (minors ``(B, N, d)``, major
``(B, d0)``), and the single environment is simply the ``B = 1`` case of the same code.

The M3FC view (:mod:`m3fmarl.m3fc`) and the multi-agent view only encode observations and decode
actions; all dynamics and rewards live in the problem modules.

Fidelity switches: each problem has a frozen ``Switches`` dataclass whose fields are the named
paper/reference differences of spec §7.1, with the two presets of spec §7.4.  A problem is built
from a ``variant`` ("paper" or "reference") plus optional per-switch overrides.
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
from numpy.typing import NDArray

from m3fmarl.kernels import cell_counts, grid_cells_flat

VARIANTS: tuple[str, ...] = ("paper", "reference")
"""Valid values of ``variant``: what the paper describes, or what the authors' code does."""

EPS_DEC = 1e-10
"""ε_dec of the decision-rule decoders (spec §0)."""

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def check_variant(variant: str) -> str:
    """Return ``variant`` or raise ``ValueError`` naming the valid ones."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    return variant


def check_num_minors(num_minors: Any) -> int:
    """Return ``num_minors`` as an int >= 1 or raise ``ValueError``."""
    if isinstance(num_minors, bool) or not isinstance(num_minors, (int, np.integer)):
        raise ValueError(f"num_minors must be an integer >= 1, got {num_minors!r}")
    if num_minors < 1:
        raise ValueError(f"num_minors must be >= 1, got {num_minors}")
    return int(num_minors)


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}: invalid value {value!r}; valid: {valid}")


# ----------------------------------------------------------------------------------------------
# Binning and histograms (spec §1.2)
# ----------------------------------------------------------------------------------------------


def nearest_bin(x: NDArray[np.floating], lo: float, hi: float, num_bins: int) -> IntArray:
    """Index of the nearest of ``num_bins`` equally spaced cell centres on [lo, hi].

    Centres are ``lo + (k + 1/2)(hi - lo)/num_bins``.  Ties (a point exactly on a cell
    boundary) go to the lower index, as the reference's argmin does; points outside [lo, hi]
    go to the first/last cell.  Equivalent to ``ceil((x - lo)/w) - 1`` clipped to the range.
    """
    w = (hi - lo) / num_bins
    idx = np.ceil((x - lo) / w).astype(np.int64) - 1
    np.clip(idx, 0, num_bins - 1, out=idx)
    return idx


NO_LAYER = np.zeros(0, dtype=np.uint8)


def grid_cells(
    points: NDArray[np.floating], lo: float, hi: float, num_bins: int,
    layer: NDArray | None = None,
) -> IntArray:
    """Flat C-order cell of points ``(..., d)`` on a ``num_bins``-per-axis grid over [lo, hi]^d.

    Per axis the index is :func:`nearest_bin`'s; the flat cell is
    ``Σ_j idx_j · num_bins^(d−1−j)``.  With ``layer`` (``(...)`` of 0/1, e.g. a boolean) the cell
    is ``2 · cell + layer`` (a second, interleaved histogram layer).  Same result as combining
    :func:`nearest_bin`'s indices, in one compiled pass.
    """
    d = points.shape[-1]
    flat_points = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, d)
    marks = NO_LAYER if layer is None else np.ascontiguousarray(layer, dtype=np.uint8).reshape(-1)
    out = np.empty(flat_points.shape[0], dtype=np.int64)
    grid_cells_flat(flat_points, float(lo), (hi - lo) / num_bins, int(num_bins), marks, out)
    return out.reshape(points.shape[:-1])


def batched_histogram(cells: IntArray, num_cells: int, weight: float | None = None) -> FloatArray:
    """Normalised histogram of each row of ``cells``.

    Args:
        cells: ``(B, N)`` integer cell indices in ``[0, num_cells)``.
        num_cells: number of cells M.
        weight: mass per point; default ``1/N`` (the empirical measure, sums to 1).

    Returns:
        ``(B, M)`` array of masses.
    """
    n = cells.shape[1]
    counts = cell_counts(np.ascontiguousarray(cells, dtype=np.int64), int(num_cells))
    w = 1.0 / n if weight is None else weight
    return counts * w


def unit_ball_projection(u: FloatArray, eps: float = 0.0) -> FloatArray:
    """proj(u) = u / (max(1, ||u||_2) + eps) over the last axis (spec §0, §2.2 step 1)."""
    norm = np.sqrt(np.einsum("...i,...i->...", u, u))
    return u / (np.maximum(norm, 1.0) + eps)[..., None]


def wrap(x: FloatArray, lo: float, hi: float) -> FloatArray:
    """wrap_[lo,hi)(x) = ((x - lo) mod (hi - lo)) + lo.

    Written as two conditional shifts, exact for |x - [lo, hi)| < hi - lo (every move here is at
    most one speed, far below the torus length) and 5× faster than a float ``mod``; anything
    farther out falls back to ``mod``.
    """
    length = hi - lo
    y = np.where(x >= hi, x - length, x)
    y = np.where(y < lo, y + length, y)
    if y.size and (y.min() < lo or y.max() >= hi):
        y = np.mod(x - lo, length) + lo
    return y


# ----------------------------------------------------------------------------------------------
# State and switches
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class State:
    """Base of every problem state: array fields with a leading copy axis ``B``.

    Subclasses add their own fields (minors, major, targets, …); ``t`` is the per-copy step.
    """

    t: IntArray  # (B,) steps taken since reset

    @property
    def num_envs(self) -> int:
        return int(self.t.shape[0])

    def copy(self) -> State:
        return dataclasses.replace(
            self, **{f.name: np.array(getattr(self, f.name), copy=True) for f in dataclasses.fields(self)}
        )

    def take(self, index: Any) -> State:
        """The copies selected by ``index`` (a slice, index array or mask), as a new state."""
        return dataclasses.replace(
            self, **{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)}
        )


S = TypeVar("S", bound=State)


def put_copies(state: S, index: Any, part: S) -> S:
    """A new state: ``state`` with the copies at ``index`` replaced by ``part``.

    States are never modified in place (the problems memoise per state object).
    """
    fields = {}
    for f in dataclasses.fields(state):
        arr = np.array(getattr(state, f.name), copy=True)
        arr[index] = getattr(part, f.name)
        fields[f.name] = arr
    return dataclasses.replace(state, **fields)


def with_major_slot(minor_own: FloatArray, major_own: FloatArray | None) -> FloatArray:
    """Stack the major's own-state slot (``(d,)``, the same for all copies) before the minors'
    ``(B, N, d)``; ``None``: no major."""
    if major_own is None:
        return minor_own
    b, _, d = minor_own.shape
    head = np.broadcast_to(np.asarray(major_own, dtype=minor_own.dtype), (b, 1, d))
    return np.concatenate([head, minor_own], axis=1)


def where_copies(mask: NDArray[np.bool_], new: S, old: S) -> S:
    """Per copy, ``new`` where ``mask`` (shape ``(B,)``) is true and ``old`` elsewhere."""
    out = {}
    for f in dataclasses.fields(old):
        a, b = getattr(new, f.name), getattr(old, f.name)
        m = mask.reshape((-1,) + (1,) * (np.ndim(b) - 1))
        out[f.name] = np.where(m, a, b)
    return dataclasses.replace(old, **out)


@dataclasses.dataclass(frozen=True)
class Switches:
    """Base of the per-problem fidelity switches.

    The M3FC decoder switches (spec §7.1 G1, G2, M2) are common to every problem; each problem
    adds its own fields.  Values are validated in ``__post_init__`` against ``CHOICES``.
    """

    std_map: str = "paper"
    """m3fc.std_map (G1): ``paper`` s = ε + (ξ+1)/8, ``reference`` s = (ξ̃+1+ε)/4."""
    xi_squash: str = "none"
    """m3fc.xi_squash (G2): ``none`` or ``tanh`` applied to ξ after clipping (CE)."""
    de_decode: str = "same_as_ce"
    """m3fc.de_decode (M2): ``same_as_ce`` or ``reference_mismatch`` (DE decodes without tanh
    for 2G and Formation, as the authors' per-agent wrappers do)."""

    CHOICES: ClassVar[dict[str, tuple[Any, ...]]] = {
        "std_map": ("paper", "reference"),
        "xi_squash": ("none", "tanh"),
        "de_decode": ("same_as_ce", "reference_mismatch"),
    }

    def __post_init__(self) -> None:
        for name, choices in self.CHOICES.items():
            check_choice(name, getattr(self, name), choices)


SW = TypeVar("SW", bound=Switches)


def resolve_switches(presets: dict[str, SW], variant: str, overrides: dict[str, Any]) -> SW:
    """The preset of ``variant`` with ``overrides`` applied; unknown switch names are refused."""
    check_variant(variant)
    base = presets[variant]
    names = [f.name for f in dataclasses.fields(base)]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ValueError(f"unknown switch {unknown[0]!r}; valid: {', '.join(names)}")
    return dataclasses.replace(base, **overrides)


# ----------------------------------------------------------------------------------------------
# Problem base class
# ----------------------------------------------------------------------------------------------


class Problem(ABC, Generic[S]):
    """A batched major-minor problem (spec §1.1).

    Class attributes describe the interface the views need:

    * ``name``: CLI name (``beach-bar``); ``env_id``: the Gymnasium id.
    * ``horizon``: T (episodes are exactly T steps, then truncated).
    * ``minor_action_dim``: d for continuous minor actions (U = [-1, 1]^d), or ``None``.
    * ``num_minor_actions``: size of a discrete minor action set, or ``None``.
    * ``xi_shape`` (property): the decision-rule parameter layout, cells first, C order.
    * ``has_major``: whether the problem has a major agent with an action.
    * ``reference_de_squash``: ξ squash the reference DE wrapper applies (bug M2).
    """

    name: ClassVar[str]
    env_id: ClassVar[str]
    horizon: ClassVar[int]
    minor_action_dim: ClassVar[int | None] = None
    num_minor_actions: ClassVar[int | None] = None
    major_action_dim: ClassVar[int | None] = None
    """d0 of a continuous major action Box(-1, 1, (d0,)), or None."""
    num_major_actions: ClassVar[int | None] = None
    """size of a discrete major action, or None."""
    major_action_dtype: ClassVar[type] = np.float32
    """dtype of a continuous major action Box (the reference wrappers' choice)."""
    reference_de_squash: ClassVar[str] = "none"
    PRESETS: ClassVar[dict[str, Switches]]

    def __init__(self, num_minors: int, variant: str = "paper", **switches: Any) -> None:
        self.num_minors = check_num_minors(num_minors)
        self.variant = check_variant(variant)
        self.switches = resolve_switches(self.PRESETS, variant, switches)

    # --- structure ---------------------------------------------------------------------------
    @property
    def has_major(self) -> bool:
        return self.major_action_dim is not None or self.num_major_actions is not None

    @property
    def discrete(self) -> bool:
        return self.num_minor_actions is not None

    @property
    @abstractmethod
    def cell_shape(self) -> tuple[int, ...]:
        """Shape of the decoding cell grid (e.g. ``(7, 7)``); cells are flattened in C order."""

    @property
    def num_cells(self) -> int:
        return math.prod(self.cell_shape)

    @property
    def xi_shape(self) -> tuple[int, ...]:
        """ξ layout: ``cells + (d, 2)`` (continuous, last axis = mean, std) or ``cells + (A,)``."""
        if self.discrete:
            return self.cell_shape + (int(self.num_minor_actions),)
        return self.cell_shape + (int(self.minor_action_dim), 2)

    @property
    def xi_size(self) -> int:
        return math.prod(self.xi_shape)

    # --- dynamics ----------------------------------------------------------------------------
    @abstractmethod
    def reset(self, num_envs: int, rng: np.random.Generator) -> S:
        """Sample ``num_envs`` initial states (t = 0)."""

    @abstractmethod
    def step(
        self, state: S, major_u: NDArray | None, minor_u: NDArray, rng: np.random.Generator
    ) -> tuple[S, FloatArray]:
        """Advance every copy one step.

        Args:
            state: the pre-step state (not modified).
            major_u: ``(B, d0)`` in [-1, 1] or ``(B,)`` int for a discrete major; ``None`` when the
                problem has no major agent.
            minor_u: ``(B, N, d)`` in [-1, 1], or ``(B, N)`` ints for discrete minor actions.
            rng: the only source of randomness.

        Returns:
            The next state and the shared reward ``r_t``, shape ``(B,)``.
        """

    @abstractmethod
    def minor_cells(self, state: S) -> IntArray:
        """``(B, N)`` flat decoding cell of each minor (from the pre-step state, spec S4)."""

    def cells(self, state: S) -> IntArray:
        """:meth:`minor_cells`, memoised for the most recent state object.

        The M3FC view bins every state twice (observation after a step, decoding before the
        next); states are never modified in place (``step`` returns a new one), so the state's
        identity is a safe key.
        """
        memo = getattr(self, "_cells_memo", None)
        if memo is not None and memo[0]() is state:
            return memo[1]
        cells = self.minor_cells(state)
        self._cells_memo = (weakref.ref(state), cells)
        return cells

    # --- M3FC observation --------------------------------------------------------------------
    @abstractmethod
    def m3fc_observation(self, state: S) -> FloatArray:
        """``(B, obs_dim)`` flat M3FC observation: histogram layers, then the major part."""

    @abstractmethod
    def m3fc_observation_bounds(self) -> tuple[FloatArray, FloatArray]:
        """``(low, high)`` of the flat M3FC observation, each ``(obs_dim,)``."""

    # --- multi-agent observation (spec §1.3) --------------------------------------------------
    agent_own_dim: ClassVar[int]
    """Size of an agent's own-state part at the start of its observation."""
    num_own_keys: ClassVar[int | None] = None
    """How many distinct own states an agent can have (Beach bar: 25 cells + the major's slot),
    or None for continuous own states."""

    @property
    def num_agents(self) -> int:
        return self.num_minors + (1 if self.has_major else 0)

    def agent_own(self, state: S) -> FloatArray:
        """``(B, n_agents, agent_own_dim)``: each agent's own state (the major's fixed slot first)."""
        raise NotImplementedError

    def agent_shared(self, state: S) -> FloatArray:
        """``(B, shared_dim)``: the part of the observation every agent of a copy shares."""
        raise NotImplementedError

    def agent_observations(self, state: S) -> NDArray[np.float32]:
        """``(B, n_agents, obs_dim)`` float32: every agent's observation, [own, shared], agents in
        the order major (if any), minor_0 … minor_{N-1}."""
        own = self.agent_own(state)
        shared = self.agent_shared(state)
        b = shared.shape[0]
        out = np.empty((b, own.shape[1], own.shape[2] + shared.shape[1]), dtype=np.float32)
        out[:, :, : own.shape[2]] = own
        out[:, :, own.shape[2]:] = shared[:, None, :]
        return out

    def agent_observation_bounds(self) -> tuple[FloatArray, FloatArray]:
        """``(low, high)`` of one agent's observation, each ``(obs_dim,)``."""
        raise NotImplementedError

    def agent_layout(self) -> tuple[IntArray, IntArray]:
        """(own, shared): indices of one agent's observation that hold its own state once and
        those every agent of a copy shares; together every distinct piece of information."""
        d = self.agent_observation_bounds()[0].shape[0]
        return np.arange(self.agent_own_dim), np.arange(self.agent_own_dim, d)

    def agent_action_grid(self) -> FloatArray | None:
        """A finite action set for value-based agents (HMF, spec/experiments.md §4.2): ``(K, d)``
        points of U = [-1, 1]^d — 1-D: the 5 levels {−1, −0.5, 0, 0.5, 1}; 2-D: {−1, 0, 1}² (9
        velocities; the dynamics normalise norms > 1) — or None where the minor actions are
        discrete already (Beach bar).  Agent k's discrete action i means the continuous action
        ``grid[i]`` (a deviation from the paper's continuous action spaces)."""
        if self.discrete:
            return None
        d = int(self.minor_action_dim)
        if d == 1:
            return np.linspace(-1.0, 1.0, 5)[:, None]
        levels = np.array([-1.0, 0.0, 1.0])
        return np.stack(np.meshgrid(*([levels] * d), indexing="ij"), axis=-1).reshape(-1, d)

    def agent_population(self) -> IntArray:
        """Indices of one agent's observation that hold the minors' own empirical distribution
        (their histogram): what a permutation-invariant population embedding (MF-PPO) replaces.
        The rest of the shared part is the population's context (major state, targets, other
        populations such as particles or areas)."""
        raise NotImplementedError

    def agent_own_keys(self, state: S) -> IntArray | None:
        """``(B, n_agents)`` id of each agent's own state when there are :attr:`num_own_keys`
        of them (agents of one copy with equal keys have equal observations), else None."""
        return None

    # --- rendering ---------------------------------------------------------------------------
    @abstractmethod
    def draw(self, ax: Any, state: S, index: int = 0) -> None:
        """Draw copy ``index`` of ``state`` (major, minors, targets) on a matplotlib axis."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_minors={self.num_minors}, variant={self.variant!r})"
