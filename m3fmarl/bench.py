"""Environment throughput benchmarks (``m3fmarl bench envs``); numbers go in docs/benchmarks.md.

What is timed:

* ``single``: :class:`~m3fmarl.m3fc.env.M3FCEnv` (the unwrapped Gymnasium env, B = 1), env steps/s.
* ``vector``: :class:`~m3fmarl.m3fc.vector.M3FCVectorEnv` with ``num_envs`` copies; env steps/s
  counts every copy's step (so it is comparable per env step with the single env).
* ``ot``: for 2G and Formation, the exact-OT solve alone on the problem's shapes, with POT's
  ``emd2`` and with our solver (:func:`m3fmarl.problems.ot.ot_cost`).

Actions are uniform-random over the action space, drawn before timing (a pool that is cycled),
so the numbers measure the environment, not the action sampler.  Everything runs in this
process on one core (set ``OMP_NUM_THREADS=1``).
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from m3fmarl.m3fc.env import M3FCEnv
from m3fmarl.m3fc.vector import M3FCVectorEnv
from m3fmarl.problems import PROBLEMS, canonical_name
from m3fmarl.rollout import uniform_policy

POOL = 16

AUTHORS_STEPS_PER_S: dict[tuple[str, int], float] = {
    ("beach-bar", 300): 530, ("foraging", 300): 1120, ("potential", 300): 1590,
    ("two-gaussians", 300): 250, ("formation", 300): 80,
    ("beach-bar", 20): 2320, ("foraging", 20): 1820, ("potential", 20): 2870,
    ("two-gaussians", 20): 1190, ("formation", 20): 630,
}
"""Env steps/s of the authors' M3FC envs (one core, uniform-random actions, this machine kind),
as given in issue 3; the benchmark prints our speed-up over them."""


@dataclass
class BenchRow:
    problem: str
    num_minors: int
    variant: str
    kind: str  # single | vector | ot-pot | ot-ours
    num_envs: int
    steps_per_s: float  # env steps/s (ot rows: solves/s)
    ms_per_call: float  # ms per env.step call (ot rows: per solve)
    authors_steps_per_s: float | None = None  # measured in the same run (--authors-src)

    @property
    def speedup(self) -> float | None:
        """Env steps/s over the authors' env: the one measured beside it if any, else the
        quoted table (None for OT rows or unknown N)."""
        base = self.authors_steps_per_s or AUTHORS_STEPS_PER_S.get((self.problem, self.num_minors))
        return None if base is None or self.kind.startswith("ot") else self.steps_per_s / base


def _timed(fn: Any, min_seconds: float, min_calls: int) -> tuple[int, float]:
    calls, start = 0, time.perf_counter()
    while True:
        fn(calls)
        calls += 1
        elapsed = time.perf_counter() - start
        if calls >= min_calls and elapsed >= min_seconds:
            return calls, elapsed


def bench_single(problem: str, num_minors: int, variant: str, min_seconds: float) -> BenchRow:
    env = M3FCEnv(problem, num_minors=num_minors, variant=variant)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    pool = [uniform_policy(None, env.action_space, rng) for _ in range(POOL)]
    horizon = env.problem.horizon

    def one(i: int) -> None:
        env.step(pool[i % POOL])
        if (i + 1) % horizon == 0:
            env.reset()

    one(0)  # warm-up
    calls, sec = _timed(one, min_seconds, 20)
    return BenchRow(problem, num_minors, variant, "single", 1, calls / sec, 1e3 * sec / calls)


def bench_vector(problem: str, num_minors: int, variant: str, num_envs: int, min_seconds: float) -> BenchRow:
    env = M3FCVectorEnv(problem, num_envs=num_envs, num_minors=num_minors, variant=variant)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    pool = [uniform_policy(None, env.action_space, rng) for _ in range(POOL)]

    def one(i: int) -> None:
        env.step(pool[i % POOL])

    one(0)
    calls, sec = _timed(one, min_seconds, 5)
    return BenchRow(problem, num_minors, variant, "vector", num_envs, calls * num_envs / sec, 1e3 * sec / calls)


def bench_ot(problem: str, num_minors: int, variant: str, min_seconds: float) -> list[BenchRow]:
    """Time the exact-OT solve alone on the shapes the problem's reward uses."""
    from m3fmarl.problems import make_problem
    from m3fmarl.problems.ot import ot_cost, ot_cost_pot

    p = make_problem(problem, num_minors, variant)
    state = p.reset(1, np.random.default_rng(0))
    x = np.asarray(state.minors[0], dtype=np.float64)
    q = np.asarray(state.particles[0], dtype=np.float64)
    rows = []
    for kind, fn in (("ot-pot", ot_cost_pot), ("ot-ours", ot_cost)):
        fn(x, q)
        calls, sec = _timed(lambda _i, fn=fn: fn(x, q), min_seconds, 5)
        rows.append(BenchRow(problem, num_minors, variant, kind, 1, calls / sec, 1e3 * sec / calls))
    return rows


def run_env_bench(
    problems: list[str] | None = None, num_minors: list[int] | None = None, variant: str = "reference",
    num_envs: int = 64, min_seconds: float = 1.0, progress: Any = None, authors_src: str | None = None,
) -> list[BenchRow]:
    """Run the benchmark grid; ``progress`` (if given) is called with each finished row.

    With ``authors_src`` (a checkout of the authors' code, see :mod:`m3fmarl.authors`) the
    authors' env of each problem that has one is timed just before and just after ours, and
    the speed-ups are taken over the mean of those two measurements.
    """
    names = [canonical_name(p) for p in problems] if problems else list(PROBLEMS)
    if authors_src is not None:
        from m3fmarl import authors

        authors.check_source(authors_src)

    def theirs(name: str, n: int) -> float:
        return authors.steps_per_second(authors.make_env(authors_src, name, n), min_seconds)

    rows: list[BenchRow] = []
    for name in names:
        for n in num_minors or [20, 300]:
            side_by_side = authors_src is not None and name in authors.BUILDS
            before = theirs(name, n) if side_by_side else None
            new = [bench_single(name, n, variant, min_seconds),
                   bench_vector(name, n, variant, num_envs, min_seconds)]
            if before is not None:
                mean = (before + theirs(name, n)) / 2
                for row in new:
                    row.authors_steps_per_s = mean
            if name in ("two-gaussians", "formation"):
                new += bench_ot(name, n, variant, min_seconds)
            for row in new:
                rows.append(row)
                if progress is not None:
                    progress(row)
    return rows


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "date": time.strftime("%Y-%m-%d"),
    }


def rows_as_dicts(rows: list[BenchRow]) -> list[dict[str, Any]]:
    return [asdict(r) | {"speedup_vs_authors": r.speedup} for r in rows]


@dataclass
class TrainBench:
    algo: str
    problem: str
    num_minors: int
    variant: str
    train_batch_size: int
    iterations: int
    seconds_per_iteration: float  # mean wall time of the measured iterations
    sampling_s: float  # RLlib's env-runner sampling timer (smoothed over iterations)
    learner_s: float  # RLlib's learner-update timer (smoothed)

    @property
    def other_s(self) -> float:
        return max(0.0, self.seconds_per_iteration - self.sampling_s - self.learner_s)

    @property
    def env_steps_per_s(self) -> float:
        return self.train_batch_size / self.seconds_per_iteration


def bench_train(algo: str, problem: str, num_minors: int, variant: str = "reference", iterations: int = 3,
                settings: Any = None, cpus: int = 1) -> TrainBench:
    """Seconds per training iteration with the algorithm's configured settings (default YAML),
    after one warm-up iteration, and where the time goes (sampling, learner, other); ``cpus`` as
    a trial given that many (learner and OT threads)."""
    import ray

    from m3fmarl.util import use_cpus

    use_cpus(cpus)

    from m3fmarl.config import load_algorithm
    from m3fmarl.train import RunSpec, build_config

    spec = RunSpec(algo, problem, num_minors, variant, seed=0, iterations=iterations)
    settings = settings or load_algorithm(algo)
    if not ray.is_initialized():
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
    algo_obj = build_config(spec, settings).build_algo()
    try:
        algo_obj.train()  # warm-up: module build, first env reset, JIT-free torch init
        walls, result = [], {}
        for _ in range(iterations):
            t0 = time.perf_counter()
            result = algo_obj.train()
            walls.append(time.perf_counter() - t0)
    finally:
        algo_obj.stop()
    timers = result.get("timers", {})
    return TrainBench(algo, spec.problem, num_minors, variant, settings.train_batch_size, iterations,
                      float(np.mean(walls)), float(timers.get("env_runner_sampling_timer", np.nan)),
                      float(timers.get("learner_update_timer", np.nan)))


# ----------------------------------------------------------------------------------------------
# multi-agent sampling (IPPO/MAPPO)
# ----------------------------------------------------------------------------------------------

AUTHORS_MARL_JOINT_STEPS_PER_S: dict[str, float] = {
    "beach-bar": 2170, "potential": 1920, "two-gaussians": 840, "foraging": 750, "formation": 560,
}
"""Joint steps/s of the authors' multi-agent envs alone at N = 20 (no policy, no RLlib; one
core, this machine kind), as given in issue 5."""


@dataclass
class MarlSampleBench:
    algo: str
    problem: str
    num_minors: int
    variant: str
    num_envs: int
    steps: int
    seconds: float

    @property
    def joint_steps_per_s(self) -> float:
        return self.steps / self.seconds

    @property
    def agent_steps_per_s(self) -> float:
        n_agents = self.num_minors + (0 if self.problem == "two-gaussians" else 1)
        return self.joint_steps_per_s * n_agents

    @property
    def vs_authors_env(self) -> float | None:
        """Our sampling (env + inference + GAE) over the authors' env alone, at N = 20 only."""
        base = AUTHORS_MARL_JOINT_STEPS_PER_S.get(self.problem)
        return None if base is None or self.num_minors != 20 else self.joint_steps_per_s / base


def bench_marl_sampling(algo: str, problem: str, num_minors: int, variant: str = "reference", num_envs: int = 24,
                        min_seconds: float = 3.0, fragment: int = 50) -> MarlSampleBench:
    """Joint env steps/s of IPPO/MAPPO sampling: the batched sampler with freshly initialised
    policies (actor inference, the env, critic values and GAE at the end of each fragment)."""
    import torch

    from m3fmarl import registry
    from m3fmarl.multiagent import MultiAgentCore
    from marl_baselines.ppo import MARL_KEY
    from marl_baselines.sampler import BatchedSampler

    torch.set_num_threads(1)
    core = MultiAgentCore(canonical_name(problem), num_minors, variant)
    config = registry.get(algo).build_config(core.name, num_minors, variant, seed=0, settings=None)
    opts = config.learner_config_dict[MARL_KEY]
    if "critic" not in opts:
        raise ValueError(f"bench marl times the PPO samplers (actor, critic values, GAE); {algo} samples "
                         f"off-policy: time it with `m3fmarl bench train --algo {algo}`")
    torch.manual_seed(0)
    modules = {mid: spec.build() for mid, spec in config.rl_module_spec.rl_module_specs.items()}
    sampler = BatchedSampler(core, num_envs, seed=0, centralized_critic=opts["critic"] == "centralized",
                             bootstrap=opts["bootstrap"])
    sampler.sample(modules, 5)  # warm-up
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        sampler.sample(modules, fragment)
        steps += fragment * num_envs
    return MarlSampleBench(algo, core.name, num_minors, variant, num_envs, steps, time.perf_counter() - start)
