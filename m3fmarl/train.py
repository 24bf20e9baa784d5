"""Training runs: run directory, RLlib training loop, progress, metrics, checkpoints, resume.

A run directory holds everything needed to understand and continue a run:

* ``run.json``: what was run (algorithm, problem, N, variant, seed, length), the resolved
  settings, git SHA and dirty flag, package versions, command line, machine, creation time;
* ``config.yaml``: the resolved algorithm settings (same keys as ``configs/algorithms/*.yaml``);
* ``progress.csv``: one row per iteration (env steps, returns, throughput, timers);
* ``tb/``: TensorBoard events of the same metrics;
* ``checkpoints/iter_NNNNNN/``: RLlib checkpoints (every k iterations and at the end), each
  with a ``m3fmarl.json`` marker written after the checkpoint is complete.

``resume`` continues from the newest complete checkpoint; rows of ``progress.csv`` after it are
dropped (those iterations are trained again).  An existing run directory is never overwritten.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import pickle
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from m3fmarl import registry
from m3fmarl.config import ConfigError, load_algorithm, settings_class
from m3fmarl.interrupts import raising
from m3fmarl.problems import canonical_name
from m3fmarl.problems.core import check_choice, check_num_minors
from m3fmarl.util import use_cpus


def is_multiagent(algo: str) -> bool:
    """True for algorithms trained on the multi-agent view (their policies act per agent)."""
    return registry.get(algo).multiagent


RUN_FILE = "run.json"
MARKER = "m3fmarl.json"
PROGRESS_FIELDS = [
    "iteration", "env_steps", "episode_return_mean", "episode_return_min", "episode_return_max",
    "num_episodes", "time_this_iter_s", "time_total_s", "env_steps_per_s", "sample_time_s", "learn_time_s",
    "vf_loss", "policy_loss", "mean_kl", "entropy",
]


class RunError(ValueError):
    """A run directory problem (exists, not ours, nothing to resume): one line, exit 2."""


DEFAULT_ITERATIONS = 100
"""Training iterations of a run that names none."""


@dataclass(frozen=True)
class RunSpec:
    """What a training run is: the identity stored in ``run.json``."""

    algo: str
    problem: str
    num_minors: int
    variant: str = "reference"
    seed: int = 0
    iterations: int = DEFAULT_ITERATIONS

    def __post_init__(self) -> None:
        check_choice("algo", self.algo, registry.names())
        object.__setattr__(self, "problem", canonical_name(self.problem))
        check_num_minors(self.num_minors)
        check_choice("variant", self.variant, ("paper", "reference"))
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")

    def default_dir(self, root: str | Path = "results/runs") -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return Path(root) / f"{self.problem}__{self.algo}__N{self.num_minors}__{self.variant}__s{self.seed}__{stamp}"


# ----------------------------------------------------------------------------------------------
# provenance
# ----------------------------------------------------------------------------------------------


def git_info() -> dict[str, Any]:
    """SHA and dirty flag of the checkout the package runs from (None outside git)."""
    repo = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                    capture_output=True, text=True, timeout=10, check=True).stdout.strip())
        return {"sha": sha, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}


def package_versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("m3fmarl", "numpy", "scipy", "torch", "ray", "gymnasium", "pettingzoo", "POT", "pandas"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


# ----------------------------------------------------------------------------------------------
# run directory
# ----------------------------------------------------------------------------------------------


def _invocation(argv: list[str], resume: bool) -> dict[str, Any]:
    """One entry of ``run.json["invocations"]``: every ``train`` call on the run directory."""
    return {"command": list(argv), "resume": resume, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "git": git_info(), "host": platform.node(), "pid": os.getpid()}


def write_run_record(run_dir: Path, record: dict[str, Any]) -> None:
    """Write ``run.json`` atomically (a kill never leaves half a file)."""
    tmp = run_dir / (RUN_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, run_dir / RUN_FILE)


def read_run(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RunError(f"{run_dir}: not an m3fmarl run directory (cannot read {RUN_FILE}: {err})") from None


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first, as (iteration, path).  A checkpoint is
    complete when its ``m3fmarl.json`` marker exists: the marker is written last, inside a
    temporary directory that is renamed into place (:func:`save_checkpoint`)."""
    out = []
    for path in sorted((run_dir / "checkpoints").glob("iter_*")):
        marker = path / MARKER
        if marker.is_file():
            try:
                out.append((int(json.loads(marker.read_text())["iteration"]), path))
            except (ValueError, KeyError, json.JSONDecodeError):
                continue
    return sorted(out)


def prepare_run_dir(spec: RunSpec, settings: Any, run_dir: Path, resume: bool, argv: list[str]) -> dict[str, Any]:
    """Create (or, with ``resume``, check) the run directory; returns the run record."""
    if (run_dir / RUN_FILE).exists():
        record = read_run(run_dir)
        if not resume:
            raise RunError(f"{run_dir} already holds a run ({record['spec']['algo']} on "
                           f"{record['spec']['problem']}, N={record['spec']['num_minors']}); pass --resume to "
                           "continue it or choose another --out")
        stored = RunSpec(**{**record["spec"], "iterations": spec.iterations})
        if stored != spec:
            raise RunError(f"{run_dir}: --resume with different settings: stored {record['spec']}, "
                           f"asked {dataclasses.asdict(spec)}")
        record["spec"]["iterations"] = spec.iterations
        record.setdefault("invocations", []).append(_invocation(argv, resume=True))
        write_run_record(run_dir, record)
        return record
    if resume:
        raise RunError(f"--resume: no run to resume in {run_dir} (no {RUN_FILE})")
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunError(f"{run_dir} exists and is not an m3fmarl run directory; choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "spec": dataclasses.asdict(spec),
        "settings": dataclasses.asdict(settings),
        "git": git_info(),
        "versions": package_versions(),
        "command": argv,
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "invocations": [_invocation(argv, resume=False)],
    }
    write_run_record(run_dir, record)
    header = (f"# Resolved {spec.algo} settings of this run ({spec.problem}, N={spec.num_minors}, {spec.variant}): "
              "per-variant nulls replaced by the values used\n")
    (run_dir / "config.yaml").write_text(
        header + yaml.safe_dump(dataclasses.asdict(settings.resolved(spec.variant)), sort_keys=False))
    return record


def _truncate_progress(path: Path, last_iteration: int) -> None:
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["iteration"]) <= last_iteration]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=PROGRESS_FIELDS)
        w.writeheader()
        w.writerows(rows)


# ----------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------


def _get(d: dict, *keys: str, default: float = math.nan) -> float:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    try:
        return float(d)
    except (TypeError, ValueError):
        return default


def metrics_row(result: dict[str, Any], iteration: int) -> dict[str, float]:
    """The progress.csv row of one RLlib result dict."""
    learners = result.get("learners", {})
    # single-agent runs: "default_policy"; IPPO/MAPPO: the shared minor policy's statistics
    learner = learners.get("default_policy", learners.get("minor", {}))
    runners = result.get("env_runners", {})
    t_iter = _get(result, "time_this_iter_s")
    sampled = _get(runners, "num_env_steps_sampled")
    return {
        "iteration": iteration,
        "env_steps": _get(result, "num_env_steps_sampled_lifetime",
                          default=_get(runners, "num_env_steps_sampled_lifetime")),
        "episode_return_mean": _get(runners, "episode_return_mean"),
        "episode_return_min": _get(runners, "episode_return_min"),
        "episode_return_max": _get(runners, "episode_return_max"),
        "num_episodes": _get(runners, "num_episodes"),
        "time_this_iter_s": t_iter,
        "time_total_s": _get(result, "time_total_s"),
        "env_steps_per_s": sampled / t_iter if t_iter and t_iter > 0 else math.nan,
        "sample_time_s": _get(result, "timers", "env_runner_sampling_timer"),
        "learn_time_s": _get(result, "timers", "learner_update_timer"),
        "vf_loss": _get(learner, "vf_loss"),
        "policy_loss": _get(learner, "policy_loss"),
        "mean_kl": _get(learner, "mean_kl_loss"),
        "entropy": _get(learner, "entropy"),
    }


def _fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _fmt_count(x: float) -> str:
    if not math.isfinite(x):
        return "?"
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.1f}{unit}" if abs(x) < 10 * div else f"{x / div:.0f}{unit}"
    return f"{x:.0f}"


def progress_line(row: dict[str, float], total: int, eta_s: float, last_return: float = math.nan) -> str:
    """``iter 12/100 | steps 288k | return -41.2 | 2.1k steps/s | ETA 1h05m``.

    When no episode ended in this iteration, the last known mean return is shown, marked ``*``.
    """
    ret = row["episode_return_mean"]
    shown = f"{ret:.1f}" if math.isfinite(ret) else (f"{last_return:.1f}*" if math.isfinite(last_return) else "n/a")
    return (f"iter {int(row['iteration'])}/{total} | steps {_fmt_count(row['env_steps'])} | "
            f"return {shown} | {_fmt_count(row['env_steps_per_s'])} steps/s | ETA {_fmt_duration(eta_s)}")


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------


RUN_PLAN_KEY = "m3f_run_plan"
"""``learner_config_dict`` key of the run's plan, ``{"iterations": …}`` (the iterations asked for),
for settings defined relative to the run's length (HMF's ``exploration_fraction``)."""


def build_config(spec: RunSpec, settings: Any) -> Any:
    """The RLlib AlgorithmConfig of a run: its algorithm's registry builder on its settings, with
    the run's plan under :data:`RUN_PLAN_KEY`."""
    config = registry.get(spec.algo).build_config(spec.problem, spec.num_minors, spec.variant, seed=spec.seed,
                                                  settings=settings)
    config.learner_config_dict = {**config.learner_config_dict, RUN_PLAN_KEY: {"iterations": int(spec.iterations)}}
    return config


TMP_PREFIX = ".tmp-"
"""Prefix of a checkpoint directory being written (renamed to ``iter_NNNNNN`` when complete)."""


def save_checkpoint(algo: Any, run_dir: Path, spec: RunSpec, iteration: int, env_steps: float, keep: int,
                    state: dict[str, Any] | None = None, time_total_s: float = math.nan) -> Path:
    """Write checkpoint ``iter_NNNNNN`` of ``algo`` (or of ``state``, an ``algo.get_state()``
    taken earlier): into a temporary directory, marker last, then renamed into place, so a kill
    at any moment leaves either the complete checkpoint or none.  Keeps the newest ``keep``."""
    final = run_dir / "checkpoints" / f"iter_{iteration:06d}"
    tmp = run_dir / "checkpoints" / f"{TMP_PREFIX}{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    algo.save_to_path(str(tmp.resolve()), state=state)
    marker = {"iteration": iteration, "env_steps": env_steps, "time_total_s": time_total_s,
              **dataclasses.asdict(spec), "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (tmp / MARKER).write_text(json.dumps(marker, indent=1))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for _, old in checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _marker(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def restore_newest(algo: Any, run_dir: Path, log: Callable[[str], None]) -> tuple[int, float]:
    """Restore ``algo`` from the newest checkpoint that loads; a newest checkpoint that does not
    (truncated by a full disk, a damaged file) is skipped with a warning and the previous one
    used.  Returns (iteration, time_total_s) of the checkpoint used, (0, 0.0) if none loads."""
    for iteration, path in reversed(checkpoints(run_dir)):
        try:
            algo.restore_from_path(str(path.resolve()))
        except Exception as err:  # noqa: BLE001 - any failure to load means: try the previous one
            log(f"warning: checkpoint {path.name} cannot be restored ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}); trying the previous one")
            continue
        done = getattr(algo, "iterations_done", iteration)
        if done != iteration:
            raise RunError(f"{path}: the marker says iteration {iteration} but the algorithm state has {done}")
        total = _marker(path).get("time_total_s", math.nan)
        return iteration, float(total) if total is not None and math.isfinite(float(total)) else 0.0
    return 0, 0.0


@contextlib.contextmanager
def _ray_processes_deaf_to_sigterm() -> Iterator[None]:
    """Start Ray's local processes (GCS, raylet, workers) with SIGTERM blocked, as Ray itself
    starts them with SIGINT blocked.  A SIGTERM sent to every process of a job (Slurm's time
    limit, ``scancel``, ``kill -- -PGID``, a container stop) then reaches only this driver, which
    saves the last finished iteration; otherwise the raylet exits at once and takes the driver
    with it ("connection to the plasma store failed. Terminate the process") before the save.
    The processes still exit with the driver (Ray's fate sharing, SIGKILL on parent death); the
    price is ``ray.shutdown`` waiting ~1 s per process before it kills them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        if signal.SIGTERM not in blocked:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


class Terminated(KeyboardInterrupt):
    """SIGTERM (Slurm's time limit, ``kill``) turned into the same clean stop as Ctrl-C."""


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """While training in the main thread, SIGTERM raises :class:`Terminated` (a
    KeyboardInterrupt), so that it gets Ctrl-C's handling: the last finished iteration is saved.
    Both handlers never raise inside numba's unboxing of a Generator (:mod:`m3fmarl.interrupts`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, raising(exc))
                for sig, exc in ((signal.SIGTERM, Terminated), (signal.SIGINT, KeyboardInterrupt))}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class TrainingStopped(Exception):
    """Training was asked to stop (a stop file appeared, e.g. at a Slurm time limit) and stopped
    after a finished iteration, saved as a checkpoint; ``--resume`` continues it."""

    def __init__(self, run_dir: Path, iteration: int) -> None:
        super().__init__(f"{run_dir}: stopped on request after iteration {iteration} (checkpoint saved)")
        self.run_dir = run_dir
        self.iteration = iteration


def train(
    spec: RunSpec, run_dir: str | Path, *, settings: Any = None, resume: bool = False, checkpoint_every: int = 10,
    keep_checkpoints: int = 3, argv: list[str] | None = None, log: Callable[[str], None] = print,
    stop_file: Path | None = None, cpus: int = 1,
) -> Path:
    """Train ``spec`` into ``run_dir`` (or continue it with ``resume``); returns the run directory.

    ``cpus``: cores this training may use (a trial's ``cpus``): the learner's torch threads and
    the exact-OT solves of 2G and Formation run on that many threads.  Same seed and same
    ``cpus`` give the same numbers; the OT costs do not depend on ``cpus``, but torch's float
    sums in the learner do (in the last digits), so a run resumed with another ``cpus`` is still
    a valid run but not bit-identical to an uninterrupted one.

    Exact resume: every iteration is a function of the algorithm state at its start (weights,
    optimiser, KL coefficient, counters, the last 100 episode returns) and of (seed, iteration)
    (:class:`m3fmarl.algorithms.batched.BatchedPPO`).  Checkpoints only ever hold the state at
    the end of a finished iteration: on Ctrl-C or SIGTERM in the middle of an iteration, the
    state kept in memory after the last finished iteration is written (if newer than the last
    checkpoint), never the half-trained one.  After SIGKILL, ``--resume`` restarts from the last
    checkpoint, drops the progress rows after it, and retrains those iterations to the same
    numbers.

    ``stop_file``: when this file exists after an iteration, the iteration is saved as a
    checkpoint and :class:`TrainingStopped` is raised (how a sweep stops its trials before a
    Slurm time limit or a preemption, from any node of a shared filesystem).
    """
    run_dir = Path(run_dir)
    if settings is None:
        settings = load_algorithm(spec.algo)
    if not isinstance(settings, settings_class(spec.algo)):
        raise ConfigError(f"settings for {spec.algo} must be {settings_class(spec.algo).__name__}")
    # the config first: input it refuses (a grouping the problem cannot have, …) leaves no run dir
    config = None if resume else build_config(spec, settings)
    record = prepare_run_dir(spec, settings, run_dir, resume, argv or sys.argv)
    if resume:
        settings = type(settings)(**record["settings"])  # a resumed run keeps its own settings
        config = build_config(spec, settings)

    import logging

    import ray

    logging.getLogger("ray.rllib").setLevel(logging.ERROR)
    use_cpus(cpus)
    record["invocations"][-1]["cpus"] = int(cpus)
    write_run_record(run_dir, record)
    if not ray.is_initialized():
        with _ray_processes_deaf_to_sigterm():
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                     configure_logging=True, logging_level="ERROR")
    for stale in (run_dir / "checkpoints").glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)  # a checkpoint whose writer was killed
    algo = config.build_algo()
    start, time_base = 0, 0.0
    if resume:
        start, time_base = restore_newest(algo, run_dir, log)
        if start:
            log(f"resumed {run_dir} from iteration {start} (iter_{start:06d})")
        else:
            log(f"resume: {run_dir} has no complete checkpoint; starting from iteration 0")
        record["invocations"][-1]["resumed_from_iteration"] = start
        write_run_record(run_dir, record)
    _truncate_progress(run_dir / "progress.csv", start)
    if start >= spec.iterations:
        log(f"{run_dir}: already trained for {start} iterations (asked {spec.iterations}); nothing to do")
        algo.stop()
        return run_dir

    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(run_dir / "tb"))
    progress = run_dir / "progress.csv"
    new_file = not progress.exists() or progress.stat().st_size == 0
    fh = open(progress, "a", newline="")
    csv_writer = csv.DictWriter(fh, fieldnames=PROGRESS_FIELDS)
    if new_file:
        csv_writer.writeheader()
    t0 = time.perf_counter()
    row: dict[str, float] = {"env_steps": math.nan}
    last_return = math.nan
    # the state after the last finished iteration, pickled (a frozen copy), and what it is
    snapshot: bytes | None = None
    snap = {"iteration": start, "env_steps": math.nan, "time_total_s": time_base}
    saved = start
    try:
        with _stop_on_sigterm():
            for iteration in range(start + 1, spec.iterations + 1):
                result = algo.train()
                state = pickle.dumps(algo.get_state(), protocol=pickle.HIGHEST_PROTOCOL)
                row = metrics_row(result, iteration)
                row["time_total_s"] = time_base + (time.perf_counter() - t0)
                csv_writer.writerow(row)
                fh.flush()
                snapshot = state
                snap = {"iteration": iteration, "env_steps": row["env_steps"], "time_total_s": row["time_total_s"]}
                for key, value in row.items():
                    if key != "iteration" and math.isfinite(value):
                        writer.add_scalar(key, value, global_step=iteration)
                per_iter = (time.perf_counter() - t0) / (iteration - start)
                log(progress_line(row, spec.iterations, per_iter * (spec.iterations - iteration), last_return))
                if math.isfinite(row["episode_return_mean"]):
                    last_return = row["episode_return_mean"]
                stop_now = stop_file is not None and Path(stop_file).exists()
                if iteration % checkpoint_every == 0 or iteration == spec.iterations or stop_now:
                    save_checkpoint(algo, run_dir, spec, iteration, row["env_steps"], keep_checkpoints,
                                    state=pickle.loads(snapshot), time_total_s=row["time_total_s"])
                    saved = iteration
                if stop_now and iteration < spec.iterations:
                    log(f"stop requested ({stop_file}): saved iteration {iteration}; continue with --resume")
                    raise TrainingStopped(run_dir, iteration)
    except KeyboardInterrupt as stop:
        # keep every finished iteration: the frozen state after the last one, never the
        # half-trained state of the interrupted iteration
        if snapshot is not None and snap["iteration"] > saved:
            path = save_checkpoint(algo, run_dir, spec, snap["iteration"], snap["env_steps"], keep_checkpoints,
                                   state=pickle.loads(snapshot), time_total_s=snap["time_total_s"])
            saved = snap["iteration"]
            log(f"{'terminated' if isinstance(stop, Terminated) else 'interrupted'}: saved {path} "
                f"(iteration {saved}); continue with --resume")
        else:
            log(f"{'terminated' if isinstance(stop, Terminated) else 'interrupted'}: last checkpoint is "
                f"iteration {saved}; continue with --resume")
        raise
    finally:
        fh.close()
        writer.close()
        algo.stop()
    log(f"done: {run_dir} (final checkpoint {checkpoints(run_dir)[-1][1].name})")
    return run_dir
