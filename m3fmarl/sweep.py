"""``m3fmarl sweep``: run the trials of one or several experiment definitions on Ray Tune, or
one trial alone.

Several experiment files (``m3fmarl sweep experiments/*.yaml``) form one *campaign*: a trial is
identified by what determines its training (problem, algorithm, N, seed, variant, resolved
settings, iteration cap), so a run that several experiments name (the Fig. 5 runs behind Table 2
and Figs. 7, 9, 10) is trained once, and each distinct evaluation cell (N, execution, episodes,
seed) of it is computed once (:func:`m3fmarl.experiments.merge_sweeps`).

Layout of a sweep directory (``--out``)::

    sweep.json                       the ledger: budget, every experiment with its trials and
                                     evaluation cells, the distinct trials with who uses them
    trials/<problem>__<algo>__N<N>__s<seed>__<iterations>it__<digest>/
        run.json config.yaml progress.csv tb/ checkpoints/   exactly as `m3fmarl train` writes
        evaluation.json              the evaluation cells done so far, rewritten atomically; the
                                     trial is finished iff it holds every cell it is asked for
    logs/<trial>.log                 the trial's progress lines (one "start" line per attempt)
    tune/attempt-K/                  Ray Tune's own experiment state of the K-th invocation
    summary.csv                      one row per trial and evaluation cell, after every invocation

Every trial is a Tune function trainable asking for ``cpus`` CPUs (1 for M3FPPO/M3FA2C, which
sample in the driver), so Tune packs as many trials as the cluster has CPUs.  A trial that
raises is restarted up to ``--max-failures`` times; it then continues from its newest
checkpoint, because the trainable always resumes a run directory that already exists.  Trials
that still fail are listed at the end with their error and the command exits 1.

``--resume`` after a crash or a kill: finished trials are kept untouched and not rerun;
unfinished ones continue from their newest complete checkpoint; a trained trial that a newly
added experiment asks more of gets only the missing evaluation cells.  ``--list`` shows the
distinct trials and which experiments use each; ``--trial-index I`` runs one of them without Tune
(``slurm/array.sh``) into the same layout.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from m3fmarl.experiments import BUDGETS, Campaign, Cell, Trial, load_experiment, merge_sweeps
from m3fmarl.util import as_float, nonneg_int, positive_int

LEDGER = "sweep.json"
EVAL_FILE = "evaluation.json"


class SweepError(ValueError):
    """A bad sweep directory or request (one line, exit 2)."""


# ----------------------------------------------------------------------------------------------
# the sweep directory
# ----------------------------------------------------------------------------------------------


def trial_dir(out: Path, trial: Trial) -> Path:
    return out / "trials" / trial.name


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_evaluation(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / EVAL_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def evaluated_cells(ev: dict[str, Any] | None, iterations: int) -> dict[Cell, dict[str, Any]]:
    """The cells an ``evaluation.json`` holds for a run trained ``iterations`` iterations."""
    if not isinstance(ev, dict) or ev.get("iterations") != iterations or not isinstance(ev.get("results"), list):
        return {}
    out = {}
    for r in ev["results"]:
        try:
            out[Cell(int(r["num_minors"]), str(r["execution"]), int(r["episodes"]), int(r["seed"]))] = r
        except (KeyError, TypeError, ValueError):
            continue
    return out


def missing_cells(out: Path, trial: Trial) -> list[Cell]:
    have = evaluated_cells(read_evaluation(trial_dir(out, trial)), trial.iterations)
    return [c for c in trial.cells if c not in have]


def is_finished(out: Path, trial: Trial) -> bool:
    """True iff the trial's run directory holds every evaluation cell this trial asks for, of a
    run trained for its number of iterations."""
    return not missing_cells(out, trial)


def settings_diff(stored: dict[str, Any] | None, settings: Any) -> str:
    """"" if a run stored with ``stored`` settings may continue under ``settings``, else the
    differing keys.  A setting the stored record lacks (added to the code later) must be at its
    default, which is what the resumed run gets."""
    if stored is None or settings is None:
        return ""
    from dataclasses import fields

    now = asdict(settings)
    defaults = {f.name: f.default for f in fields(settings)}
    bad = [f"{k}: {stored[k]!r} -> {v!r}" if k in stored else f"{k}: (default {defaults[k]!r}) -> {v!r}"
           for k, v in now.items() if stored.get(k, defaults[k]) != v]
    bad += [f"{k}: {stored[k]!r} -> (no such setting)" for k in stored if k not in now]
    return ", ".join(bad)


def _read_ledger(out: Path) -> dict[str, Any] | None:
    ledger = out / LEDGER
    if not ledger.exists():
        return None
    try:
        stored = json.loads(ledger.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SweepError(f"{ledger}: unreadable ({err}); choose another --out") from None
    if not isinstance(stored, dict) or not isinstance(stored.get("experiments"), list):
        raise SweepError(f"{ledger}: not a sweep ledger of this m3fmarl version (no experiment list); "
                         "choose another --out")
    return stored


def check_ledger(out: Path, campaign: Campaign, resume: bool, create: bool) -> None:
    """Refuse to mix budgets in one directory, or to start over a sweep without ``--resume``;
    with ``create``, write the ledger: the experiments already recorded there (kept, so a
    directory can grow experiment by experiment) plus ``campaign``'s, and the distinct trials of
    all of them."""
    if (out / "run.json").exists():
        raise SweepError(f"--out {out} is a training run directory (it holds run.json), not a sweep directory; "
                         "choose another --out")
    stored = _read_ledger(out)
    if stored is not None:
        if stored.get("budget") != campaign.budget:
            raise SweepError(f"{out} holds a sweep with the {stored.get('budget')} budget, not {campaign.budget}; "
                             "choose another --out")
        if not resume:
            names = ", ".join(e.get("experiment", "?") for e in stored["experiments"])
            raise SweepError(f"{out} already holds a sweep ({names}); pass --resume to continue it or add "
                             "experiments to it (finished trials are kept), or choose another --out")
    elif resume and not create:
        raise SweepError(f"--resume: no sweep to resume in {out} (no {LEDGER})")
    if create:
        out.mkdir(parents=True, exist_ok=True)
        with exclusive(out / LOCK_DIR / "ledger.lock"):
            _write_ledger(out, campaign)


def _write_ledger(out: Path, campaign: Campaign) -> None:
    """Merge ``campaign`` into the ledger of ``out`` (read again under the ledger lock, so two
    sweeps adding experiments at once both keep theirs)."""
    stored = _read_ledger(out)
    new = campaign.to_dict()
    ids = {e["experiment"] for e in new["experiments"]}
    kept_exps = [e for e in (stored or {}).get("experiments", []) if e.get("experiment") not in ids]
    stored_trials = {t["name"]: t for t in (stored or {}).get("trials", [])}
    trials: dict[str, dict[str, Any]] = {}
    for e in kept_exps:  # who uses a recorded trial, and its cells: from the experiments kept
        for name in e.get("trials", []):
            if name in stored_trials:
                t = trials.setdefault(name, {**stored_trials[name], "cells": [], "used_by": []})
                t["cells"] = list({json.dumps(c, sort_keys=True): c
                                   for c in t["cells"] + e.get("cells", {}).get(name, [])}.values())
                t["used_by"].append(e["experiment"])
    for t in new["trials"]:
        if t["name"] in trials:
            old = trials[t["name"]]
            t = {**t, "cells": list({json.dumps(c, sort_keys=True): c for c in old["cells"] + t["cells"]}.values()),
                 "used_by": list(dict.fromkeys(old["used_by"] + t["used_by"]))}
        trials[t["name"]] = t
    record = {"budget": campaign.budget, "experiments": kept_exps + new["experiments"],
              "trials": list(trials.values()), "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    _write_atomic(out / LEDGER, json.dumps(record, indent=1))


# ----------------------------------------------------------------------------------------------
# one trial (shared by the Tune trainable and --trial-index)
# ----------------------------------------------------------------------------------------------


def _last_row(run_dir: Path) -> dict[str, str] | None:
    try:
        with open(run_dir / "progress.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError:
        return None
    return rows[-1] if rows else None


def _ray_node() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()[:12] if ray.is_initialized() else "-"


LOCK_DIR = ".locks"
"""Under ``<out>/``: one lock file per trial being trained, and one for the ledger."""


@contextlib.contextmanager
def exclusive(path: Path, log: Any = None, what: str = "", poll_s: float = 2.0) -> Iterator[None]:
    """Hold an exclusive POSIX lock (``fcntl.lockf``: also across the nodes of a shared NFS
    filesystem) on ``path`` for the block.  If another process holds it, say so once through
    ``log`` (naming the holder written into the file) and wait for it."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        said = False
        while True:
            try:
                fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if log is not None and not said:
                    fh.seek(0)
                    holder = fh.read().strip() or "another process"
                    log(f"waiting for {what or path.name}: held by {holder}")
                    said = True
                time.sleep(poll_s)
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {os.uname().nodename} since {time.strftime('%H:%M:%S')}\n")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.lockf(fh, fcntl.LOCK_UN)


def run_trial(trial: Trial, out: Path, *, checkpoint_every: int = 10, report: Any = None,
              echo: bool = False, stop_file: Path | None = None) -> dict[str, Any]:
    """Train and evaluate ``trial`` into ``<out>/trials/<name>``; resume what is there.

    The trial is trained under a lock (``<out>/.locks/<trial>.lock``): two sweeps that share the
    trial (say, two Slurm jobs of different experiments on one campaign directory) never train it
    at once — the second waits, then finds it trained and only adds the evaluation cells it
    asks for.  ``report(metrics)`` is called after every iteration and once at the end (Tune's
    report).  Returns the final metrics; ``metrics["stopped"]`` is True when ``stop_file``
    appeared (the sweep is handing over before a time limit): the trial then saved its last
    finished iteration and stopped, unfinished, without raising.
    """
    from m3fmarl.train import TrainingStopped

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    run_dir = trial_dir(out, trial)
    log_dir = out / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_fh = open(log_dir / f"{trial.name}.log", "a")

    def log(line: str) -> None:
        log_fh.write(f"{time.strftime('%H:%M:%S')} {line}\n")
        log_fh.flush()
        if echo:
            print(line, flush=True)
        if report is not None and line.startswith("iter "):
            row = _last_row(run_dir)
            if row is not None:
                report({"iteration": int(row["iteration"]), "env_steps": as_float(row["env_steps"]),
                        "episode_return_mean": as_float(row["episode_return_mean"]), "finished": False})

    try:
        log(f"start {trial.name} (pid {os.getpid()}, host {os.uname().nodename}, ray node {_ray_node()})")
        try:
            if stop_file is not None and stop_file.exists():
                raise TrainingStopped(run_dir, 0)
            with exclusive(out / LOCK_DIR / f"{trial.name}.lock", log, f"trial {trial.name}"):
                _train_and_evaluate(trial, out, run_dir, checkpoint_every, log, stop_file)
        except TrainingStopped:
            row = _last_row(run_dir) or {}
            metrics = {"iteration": int(row.get("iteration", 0)), "env_steps": as_float(row.get("env_steps")),
                       "episode_return_mean": as_float(row.get("episode_return_mean")), "finished": False,
                       "stopped": True}
            log(f"stopped on request at iteration {metrics['iteration']} (the sweep hands over; --resume continues)")
            if report is not None:
                report(metrics)
            return metrics
        ev = read_evaluation(run_dir) or {}
        row = _last_row(run_dir) or {}
        have = evaluated_cells(ev, trial.iterations)
        first = have.get(trial.cells[0], {}) if trial.cells else {}
        metrics = {"iteration": int(row.get("iteration", trial.iterations)),
                   "env_steps": as_float(row.get("env_steps")),
                   "episode_return_mean": as_float(row.get("episode_return_mean")), "finished": True,
                   "eval_mean": as_float(first.get("mean")), "eval_ci95": as_float(first.get("ci95"))}
        log(f"finished: evaluation {metrics['eval_mean']:.2f} ± {metrics['eval_ci95']:.2f}")
        if report is not None:
            report(metrics)
        return metrics
    except BaseException as err:
        log(f"failed: {type(err).__name__}: {err}")
        raise
    finally:
        log_fh.close()


def _train_and_evaluate(trial: Trial, out: Path, run_dir: Path, checkpoint_every: int, log: Any,
                        stop_file: Path | None = None) -> None:
    """Train ``trial`` to its length (resuming a run directory that exists) and evaluate the
    cells it still misses; nothing if it is finished (called under the trial's lock)."""
    from m3fmarl.train import RUN_FILE, RunSpec, checkpoints, read_run, train

    if not missing_cells(out, trial):
        log("already finished; nothing to do")
        return
    done = checkpoints(run_dir)
    if not done or done[-1][0] != trial.iterations:
        resume = (run_dir / RUN_FILE).exists()
        if resume:
            diff = settings_diff(read_run(run_dir).get("settings") or {}, trial.settings)
            if diff:
                raise SweepError(f"{run_dir} holds a run with other settings ({diff}); choose another --out")
        spec = RunSpec(trial.algo, trial.problem, trial.num_minors, trial.variant, trial.seed, trial.iterations)
        train(spec, run_dir, settings=trial.settings, resume=resume, checkpoint_every=checkpoint_every,
              argv=["m3fmarl", "sweep", f"trial={trial.name}"], log=log, stop_file=stop_file, cpus=trial.cpus)
        done = checkpoints(run_dir)
    final = done[-1]
    if final[0] != trial.iterations:
        raise SweepError(f"{run_dir}: newest checkpoint is iteration {final[0]}, expected {trial.iterations}")
    _evaluate(trial, run_dir, final[1], missing_cells(out, trial), log)


def _evaluate(trial: Trial, run_dir: Path, checkpoint: Path, cells: list[Cell], log: Any) -> None:
    """Evaluate the final checkpoint on ``cells`` and add them to ``evaluation.json`` (rewritten
    atomically; the cells already there are kept).

    M3FPPO/M3FA2C: :func:`m3fmarl.evaluate.evaluate` per (execution, episodes, seed) over the
    cells' N.  IPPO/MAPPO: every agent acts on its own observation (execution ``multi-agent``,
    ``marl_baselines.evaluate``).  A cell's numbers depend only on (policy, N, execution,
    episodes, seed), so cells evaluated in different invocations equal cells evaluated together.
    """
    from m3fmarl import registry

    t0 = time.perf_counter()
    groups: dict[tuple[str, int, int], list[int]] = {}
    for c in cells:
        groups.setdefault((c.execution, c.episodes, c.seed), []).append(c.num_minors)
    results = []
    if not registry.get(trial.algo).multiagent:
        from m3fmarl.evaluate import evaluate, load_policy

        policy = load_policy(checkpoint)
        for (execution, episodes, seed), ns in groups.items():
            results += evaluate(policy, num_minors=ns, episodes=episodes, execution=execution, seed=seed)
    else:
        try:
            from marl_baselines.evaluate import evaluate_marl, load_marl_policy
        except ImportError as err:
            raise SweepError(f"cannot evaluate {trial.algo} runs: {err}") from None
        policy = load_marl_policy(checkpoint)
        for (_, episodes, seed), ns in groups.items():
            results += evaluate_marl(policy, num_minors=ns, episodes=episodes, seed=seed)
    for r in results:
        log(f"eval N={r.num_minors} {r.execution}: {r.mean:.2f} ± {r.ci95:.2f} ({r.episodes} episodes)")
    previous = evaluated_cells(read_evaluation(run_dir), trial.iterations)
    merged = {**previous, **{Cell(r.num_minors, r.execution, r.episodes, r.seed): r.to_dict() for r in results}}
    record = {"trial": trial.name, "iterations": trial.iterations, "checkpoint": checkpoint.name,
              "results": list(merged.values()), "seconds": time.perf_counter() - t0,
              "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    _write_atomic(run_dir / EVAL_FILE, json.dumps(record, indent=1))


# ----------------------------------------------------------------------------------------------
# Ray Tune
# ----------------------------------------------------------------------------------------------


def _tune_trainable(config: dict[str, Any], trials: dict[str, Trial], out: str, checkpoint_every: int,
                    stop_file: str | None = None) -> None:
    from ray import tune

    run_trial(trials[config["trial"]], Path(out), checkpoint_every=checkpoint_every, report=tune.report,
              stop_file=Path(stop_file) if stop_file else None)


EXIT_STOPPED = 3
"""Exit status of a sweep that stopped on request (its stop file, or :data:`STOP_SIGNAL`) with
trials unfinished: rerun with ``--resume`` (``slurm/sweep.sh`` and ``slurm/array.sh`` requeue
their job themselves)."""

STOP_FILE_ENV = "M3FMARL_STOP_FILE"
"""Names the stop file (see :func:`stop_on_signal`); the Slurm scripts set it and create the file
when Slurm's warning signal comes."""

STOP_SIGNAL = signal.SIGUSR2
"""Asks a running sweep to stop soon, losing nothing: each running trial saves its last finished
iteration and stops (for interactive use; the Slurm scripts use the stop file).  Not SIGUSR1,
which Ray Tune takes over during ``Tuner.fit`` to end the experiment at once (trials killed
mid-iteration)."""


@contextlib.contextmanager
def stop_on_signal(out: Path) -> Iterator[Path]:
    """While the block runs, :data:`STOP_SIGNAL` creates a stop file under ``out`` that every
    running trial checks after each iteration (from any node: ``out`` is on a shared
    filesystem): it saves that iteration and stops.  Yields the file's path.

    With ``$M3FMARL_STOP_FILE`` set (the Slurm scripts set it, on the shared filesystem), that
    file is the stop file: the script creates it itself when Slurm's warning comes, even while
    this process is still starting, and removes it; a file already there means "stop now"."""
    given = os.environ.get(STOP_FILE_ENV)
    path = Path(given) if given else out / LOCK_DIR / f"stop-{os.getpid()}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not given:
        path.unlink(missing_ok=True)

    def handler(signum: int, frame: Any) -> None:
        path.touch()
        print(f"[{time.strftime('%H:%M:%S')}] stop requested ({signal.Signals(signum).name}): running trials save "
              "their last finished iteration and stop; trials not started stay unstarted; continue with --resume",
              flush=True)

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(STOP_SIGNAL, handler) if main else None
    try:
        yield path
    finally:
        if main:
            signal.signal(STOP_SIGNAL, previous)
        if not given:  # ours; a given file belongs to the script that set it
            path.unlink(missing_ok=True)


def _fmt(x: float, digits: int = 1) -> str:
    return f"{x:.{digits}f}" if isinstance(x, float) and math.isfinite(x) else "-"


def _fmt_steps(x: float) -> str:
    if not math.isfinite(x):
        return "-"
    return f"{x / 1e6:.1f}M" if x >= 1e6 else f"{x / 1e3:.0f}k" if x >= 1e3 else f"{x:.0f}"


def _trial_time(run_dir: Path) -> tuple[int, float]:
    """(iterations done, training seconds so far) of a run directory, from its progress.csv."""
    row = _last_row(run_dir)
    if row is None:
        return 0, 0.0
    t = as_float(row.get("time_total_s"))
    return int(row.get("iteration", 0)), (t if math.isfinite(t) else 0.0)


def campaign_progress(sweep: Campaign, out: Path, slots: int) -> dict[str, Any]:
    """Where a campaign stands, from its run directories: trials finished / started / not
    started, CPU-hours used (training time × CPUs of each trial, evaluation not counted) and an
    ETA for the rest — remaining iterations × seconds per iteration (the trial's own rate once
    it has trained, else the mean rate of measured trials of the same problem, algorithm and N,
    of the same problem and algorithm, of the same algorithm, of any trial), spread over
    ``slots`` trials at a time; a rough figure until most kinds of trial have been measured.
    The ETA is None while no trial has trained yet."""
    rates: dict[tuple[str, ...], list[float]] = {}
    state = {}
    for t in sweep.trials:
        done, seconds = _trial_time(trial_dir(out, t))
        state[t.name] = (done, seconds)
        if done:
            rate = seconds / done
            rates.setdefault((t.problem, t.algo, str(t.num_minors)), []).append(rate)
            rates.setdefault((t.problem, t.algo), []).append(rate)
            rates.setdefault((t.algo,), []).append(rate)
            rates.setdefault((), []).append(rate)
    finished = running = 0
    cpu_s = remaining = 0.0
    unknown = 0
    for t in sweep.trials:
        done, seconds = state[t.name]
        cpu_s += seconds * t.cpus
        if is_finished(out, t):
            finished += 1
            continue
        running += done > 0
        left = t.iterations - done
        if left <= 0:
            continue
        rate = seconds / done if done else next(
            (float(np.mean(rates[k])) for k in ((t.problem, t.algo, str(t.num_minors)), (t.problem, t.algo), (t.algo,),
                                                ()) if k in rates), None)
        if rate is None:
            unknown += 1
        else:
            remaining += left * rate
    todo = len(sweep.trials) - finished - running
    eta = None if unknown else remaining / max(1, slots)
    return {"finished": finished, "started": running, "not_started": todo, "cpu_hours": cpu_s / 3600, "eta_s": eta}


def progress_line(sweep: Campaign, out: Path, slots: int) -> str:
    """One line of :func:`campaign_progress`: trials done / started / not started, CPU-hours, ETA."""
    p = campaign_progress(sweep, out, slots)
    eta = "unknown (no rate measured yet)" if p["eta_s"] is None else _elapsed(p["eta_s"])
    return (f"trials: {p['finished']} done, {p['started']} started, {p['not_started']} not started | "
            f"{p['cpu_hours']:.1f} CPU-h of training so far | ETA {eta}")


class ProgressTable:
    """A compact live table of the sweep, printed at most every ``every`` seconds and on every
    trial start, finish and failure; its header line has the campaign's progress
    (:func:`campaign_progress`) when the sweep directory ``out`` is given."""

    def __init__(self, sweep: Campaign, kept: list[str], every: float, stream: Any = None, out: Path | None = None,
                 slots: int = 1):
        self.sweep = sweep
        self.out = out
        self.slots = slots
        self.every = every
        self.stream = stream  # None: sys.stdout at print time (the table is pickled under Ray Client)
        self.t0 = time.monotonic()
        self.last = 0.0
        self.state: dict[str, dict[str, Any]] = {t.name: {"status": "pending"} for t in sweep.trials}
        for name in kept:
            self.state[name] = {"status": "kept"}
        self.attempts: dict[str, int] = {}

    def update(self, name: str, status: str | None = None, result: dict[str, Any] | None = None) -> None:
        st = self.state.setdefault(name, {"status": "pending"})
        if status is not None:
            st["status"] = status
        if result:
            st.update({k: result[k] for k in ("iteration", "env_steps", "episode_return_mean", "eval_mean")
                       if k in result})

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for st in self.state.values():
            out[st["status"]] = out.get(st["status"], 0) + 1
        return out

    def print(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        its = {t.name: t.iterations for t in self.sweep.trials}
        counts = ", ".join(f"{v} {k}" for k, v in sorted(self.counts().items()))
        lines = [f"[sweep {self.sweep.label}/{self.sweep.budget} {_elapsed(now - self.t0)}] {counts}"]
        if self.out is not None:
            lines.append("  " + progress_line(self.sweep, self.out, self.slots))
        lines.append(f"  {'trial':<54} {'status':<10} {'iter':>11} {'env steps':>9} {'return':>9} {'eval':>9}")
        for name, st in self.state.items():
            if st["status"] == "pending" and len(self.state) > 12:
                continue
            it = st.get("iteration")
            lines.append(f"  {name:<54} {st['status']:<10} {(f'{it}/{its[name]}' if it else '-'):>11} "
                         f"{_fmt_steps(st.get('env_steps', math.nan)):>9} "
                         f"{_fmt(st.get('episode_return_mean', math.nan)):>9} {_fmt(st.get('eval_mean', math.nan)):>9}")
        print("\n".join(lines), file=self.stream or sys.stdout, flush=True)


def _elapsed(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _make_callback(table: ProgressTable) -> Any:
    from ray import tune

    def event(name: str, what: str) -> None:
        c = table.counts()
        done = c.get("finished", 0) + c.get("kept", 0)
        print(f"[{_elapsed(time.monotonic() - table.t0)}] {what} {name} ({done}/{len(table.state)} finished, "
              f"{c.get('FAILED', 0)} failed)", file=table.stream or sys.stdout, flush=True)

    class _Progress(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):  # noqa: ANN001
            name = trial.config["trial"]
            table.attempts[name] = table.attempts.get(name, 0) + 1
            n = table.attempts[name]
            table.update(name, "running" if n == 1 else f"retry {n - 1}")
            event(name, "started" if n == 1 else f"restarted (retry {n - 1})")

        def on_trial_result(self, iteration, trials, trial, result, **info):  # noqa: ANN001
            table.update(trial.config["trial"], None, result)
            table.print()

        def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: ANN001
            name = trial.config["trial"]
            if (trial.last_result or {}).get("stopped"):
                table.update(name, "stopped", trial.last_result)
                event(name, f"stopped on request after iteration {trial.last_result.get('iteration', 0)} (saved)")
                return
            table.update(name, "finished", trial.last_result)
            ev = table.state[name].get("eval_mean", math.nan)
            event(name, f"finished (eval {_fmt(ev, 2)})")

        def on_trial_error(self, iteration, trials, trial, **info):  # noqa: ANN001
            name = trial.config["trial"]
            table.update(name, "FAILED")
            event(name, "FAILED after all retries:")

        def on_step_end(self, iteration, trials, **info):  # noqa: ANN001
            table.print()

    return _Progress()


def _probe(address: str) -> None:
    """Fail fast (one line) if a ``host:port`` or ``ray://host:port`` address does not accept
    connections; ``auto`` is left to Ray."""
    import socket

    if address == "auto":
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise SweepError(f"--address {address}: expected auto, host:port or ray://host:port")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as err:
        raise SweepError(f"--address {address}: nothing answers there ({err.strerror or err}); is the Ray "
                         "head running?") from None


def _init_ray(address: str | None, cpus: int | None) -> None:
    import ray

    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    if address:
        # An existing cluster (or a Ray Jobs driver): keep the job's runtime env (working_dir).
        _probe(address)  # ray.init would wait for an unreachable GCS for a very long time
        for attempt in (1, 2):
            try:
                ray.init(address=address, log_to_driver=False, logging_level="ERROR")
                break
            except ConnectionAbortedError:  # Ray Client: the head could not start our server (yet)
                if attempt == 2:
                    raise SweepError(f"--address {address}: the Ray Client server on the head failed to start a "
                                     "driver for us twice (see ray_client_server*.err in the head's logs)") from None
                time.sleep(5)
            except (ConnectionError, ValueError, RuntimeError) as err:
                lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
                raise SweepError(f"--address {address}: cannot connect to a Ray cluster "
                                 f"({lines[-1].strip() if lines else type(err).__name__})") from None
    else:
        # "local": a new Ray of our own even if `ray start` runs on this machine.
        ray.init(address="local", num_cpus=cpus or os.cpu_count() or 1, include_dashboard=False,
                 log_to_driver=False, logging_level="ERROR", runtime_env={"env_vars": env})


def run_sweep(sweep: Campaign, out: Path, *, address: str | None = None, cpus: int | None = None,
              max_failures: int = 2, checkpoint_every: int = 10, report_every: float = 10.0) -> int:
    """Run every unfinished trial of ``sweep`` on Ray Tune; returns the exit status (0 all done)."""
    import ray
    from ray import tune

    out = out.resolve()
    kept = [t.name for t in sweep.trials if is_finished(out, t)]
    todo = [t for t in sweep.trials if t.name not in kept]
    steps = sum(t.env_steps for t in sweep.trials)
    named = sum(len(e.trials) for e in sweep.experiments)
    shared = f" ({named} named by the experiments, shared ones trained once)" if named != len(sweep.trials) else ""
    print(f"sweep {sweep.label} ({sweep.budget} budget): {len(sweep.trials)} trials{shared}, {_fmt_steps(steps)} "
          f"env steps in all; {len(kept)} finished (kept), {len(todo)} to run -> {out}", flush=True)
    table = ProgressTable(sweep, kept, report_every, out=out, slots=1)
    stopped = False
    if todo:
        _init_ray(address, cpus)
        try:
            with stop_on_signal(out) as stop_file:
                resources = ray.cluster_resources()
                table.slots = max(1, int(resources.get("CPU", 1) // max(t.cpus for t in todo)))
                print(f"ray: {int(resources.get('CPU', 0))} CPUs on {len([n for n in ray.nodes() if n['Alive']])} "
                      f"node(s); {max(t.cpus for t in todo)} CPU per trial; max_failures={max_failures}", flush=True)
                largest = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]), default=0)
                too_big = [t.name for t in todo if t.cpus > largest]
                if too_big:  # Tune would keep them pending for ever
                    raise SweepError(f"{too_big[0]} needs {trials_cpus(todo, too_big[0])} CPUs, but the largest Ray "
                                     f"node has {largest:g}")
                attempt = f"{1 + len(list((out / 'tune').glob('attempt-*')))}-{os.getpid()}"  # unique per sweep process
                trials = {t.name: t for t in todo}
                trainable = tune.with_resources(
                    tune.with_parameters(_tune_trainable, trials=trials, out=str(out),
                                         checkpoint_every=checkpoint_every, stop_file=str(stop_file)),
                    lambda config: {"cpu": trials[config["trial"]].cpus},
                )
                # Ray's new console output would print its own banner and a TensorBoard hint for a
                # temp dir; the legacy reporter at verbose=0 prints nothing (our table reports).
                os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
                tuner = tune.Tuner(
                    trainable,
                    param_space={"trial": tune.grid_search(list(trials))},
                    tune_config=tune.TuneConfig(trial_name_creator=lambda t: t.config["trial"],
                                                trial_dirname_creator=lambda t: t.config["trial"]),
                    run_config=tune.RunConfig(
                        name=f"attempt-{attempt}", storage_path=str(out / "tune"), verbose=0,
                        failure_config=tune.FailureConfig(max_failures=max_failures),
                        callbacks=[_make_callback(table)],
                    ),
                )
                grid = tuner.fit()
                errors = {r.config["trial"]: r.error for r in grid if r.error is not None}
                stopped = stop_file.exists()
        finally:
            ray.shutdown()
    else:
        errors = {}
    status = _finish(sweep, out, table, errors, stopped)
    return EXIT_STOPPED if stopped and status else status


def trials_cpus(trials: list[Trial], name: str) -> int:
    return next(t.cpus for t in trials if t.name == name)


def summary_rows(out: Path) -> list[dict[str, Any]]:
    """One row per evaluation cell of every trial in the ledger of ``out`` (all experiments the
    directory holds, not only those of the last invocation), finished cells only."""
    try:
        ledger = _read_ledger(out) or {}
    except SweepError:
        return []
    rows = []
    for t in ledger.get("trials", []):
        try:
            have = evaluated_cells(read_evaluation(out / "trials" / t["name"]), int(t["iterations"]))
            steps = int(t["iterations"]) * int((t.get("settings") or {}).get("train_batch_size") or 0)
            for c in t["cells"]:
                r = have.get(Cell(int(c["num_minors"]), str(c["execution"]), int(c["episodes"]), int(c["seed"])))
                if r is None:
                    continue
                rows.append({"trial": t["name"], "used_by": " ".join(t.get("used_by", [])), "problem": t["problem"],
                             "algo": t["algo"], "train_num_minors": t["num_minors"], "seed": t["seed"],
                             "iterations": t["iterations"], "env_steps": steps, "eval_num_minors": r["num_minors"],
                             "execution": r["execution"], "episodes": r["episodes"], "mean": r["mean"],
                             "ci95": r["ci95"]})
        except (KeyError, TypeError, ValueError):
            continue
    return rows


def _finish(sweep: Campaign, out: Path, table: ProgressTable, errors: dict[str, Any], stopped: bool = False) -> int:
    rows = []
    missing = []
    for t in sweep.trials:
        have = evaluated_cells(read_evaluation(trial_dir(out, t)), t.iterations)
        if any(c not in have for c in t.cells):
            missing.append(t.name)
            table.update(t.name, "FAILED" if t.name in errors else "stopped" if stopped else "unfinished")
            continue
        row = _last_row(trial_dir(out, t)) or {}
        first = have[t.cells[0]]
        table.update(t.name, "kept" if table.state[t.name]["status"] == "kept" else "finished",
                     {"iteration": int(row.get("iteration", t.iterations)), "env_steps": as_float(row.get("env_steps")),
                      "episode_return_mean": as_float(row.get("episode_return_mean")),
                      "eval_mean": as_float(first.get("mean"))})
        for c in t.cells:
            r = have[c]
            rows.append({"trial": t.name, "used_by": " ".join(sweep.used_by[t.name]), "problem": t.problem,
                         "algo": t.algo, "train_num_minors": t.num_minors, "seed": t.seed, "iterations": t.iterations,
                         "env_steps": t.env_steps, "eval_num_minors": r["num_minors"], "execution": r["execution"],
                         "episodes": r["episodes"], "mean": r["mean"], "ci95": r["ci95"]})
    rows = summary_rows(out) or rows
    if rows:
        with open(out / "summary.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    table.print(force=True)
    if not missing:
        print(f"sweep {sweep.label}: all {len(sweep.trials)} trials finished; results in {out}/summary.csv",
              flush=True)
        return 0
    if stopped and not errors:
        files = " ".join(str(e.path) for e in sweep.experiments)
        print(f"sweep {sweep.label}: stopped on request with {len(missing)} of {len(sweep.trials)} trials unfinished "
              f"(their last iterations are checkpointed); continue with: m3fmarl sweep {files} --budget {sweep.budget} "
              f"--out {out} --resume", flush=True)
        return 1
    print(f"sweep {sweep.label}: {len(missing)} of {len(sweep.trials)} trials not finished:", file=sys.stderr)
    for name in missing:
        err = errors.get(name)
        err = getattr(err, "cause", None) or err  # a RayTaskError wraps the trial's exception
        why = f"{type(err).__name__}: {str(err).strip().splitlines()[-1]}" if err is not None else "not run"
        print(f"  {name}: {why} (log: {out}/logs/{name}.log)", file=sys.stderr)
    files = " ".join(str(e.path) for e in sweep.experiments)
    print(f"rerun with --resume to retry them (finished trials are kept): m3fmarl sweep {files} "
          f"--budget {sweep.budget} --out {out} --resume", file=sys.stderr, flush=True)
    return 1


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------


def load_campaign(paths: list[str], budget: str) -> Campaign:
    """The experiments at ``paths`` for ``budget``, their trials deduplicated."""
    return merge_sweeps([load_experiment(p, budget) for p in paths])


def default_out(campaign: Campaign) -> Path:
    return Path("results") / "sweeps" / f"{campaign.label}-{campaign.budget}"


def list_trials(campaign: Campaign, out: Path) -> list[str]:
    """``--list``: one line per distinct trial (index, name, iterations, env steps, CPUs, status,
    the experiments that use it; status ``finished``, ``started:<iterations done>`` or ``todo``),
    then a ``#`` line with the campaign's progress in ``out`` (:func:`progress_line`, its ETA
    for as many trials at a time as this machine's CPUs hold).  Read from the run directories
    only: safe while the sweep runs, in another shell or on a cluster's login node."""
    named = sum(len(e.trials) for e in campaign.experiments)
    lines = [f"# {campaign.label} ({campaign.budget} budget): {len(campaign.trials)} distinct trials ({named} named by "
             f"the experiments); index name iterations env_steps cpus status used_by"]
    for i, t in enumerate(campaign.trials):
        done = _trial_time(trial_dir(out, t))[0]
        status = "finished" if is_finished(out, t) else f"started:{done}" if done else "todo"
        users = ",".join(campaign.used_by[t.name])
        lines.append(f"{i} {t.name} {t.iterations} {t.env_steps} {t.cpus} {status} {users}")
    slots = max(1, (os.cpu_count() or 1) // max((t.cpus for t in campaign.trials), default=1))
    lines.append(f"# {progress_line(campaign, out, slots)} (at {slots} trial(s) at a time)")
    return lines


def cmd_sweep(args: argparse.Namespace) -> int:
    campaign = load_campaign(args.experiments, args.budget)
    out = Path(args.out) if args.out else default_out(campaign)
    if args.list:
        print("\n".join(list_trials(campaign, out)))
        return 0
    if args.trial_index is not None:
        if not 0 <= args.trial_index < len(campaign.trials):
            raise SweepError(f"--trial-index {args.trial_index} out of range; {campaign.label} ({campaign.budget}) "
                             f"has trials 0..{len(campaign.trials) - 1}")
        try:
            check_ledger(out, campaign, resume=True, create=True)
        except OSError as err:
            raise SweepError(f"--out {out}: cannot write the sweep directory ({err.strerror})") from None
        trial = campaign.trials[args.trial_index]
        print(f"trial {args.trial_index}/{len(campaign.trials)}: {trial.name}, {trial.iterations} iterations x "
              f"{trial.settings.train_batch_size} env steps -> {trial_dir(out.resolve(), trial)}", flush=True)
        _init_ray(args.address, args.cpus or trial.cpus)
        with stop_on_signal(out.resolve()) as stop_file:
            m = run_trial(trial, out.resolve(), checkpoint_every=args.checkpoint_every, echo=True, stop_file=stop_file)
        if m.get("stopped"):
            print(f"trial {trial.name}: stopped on request at iteration {m['iteration']}; rerun the same command to "
                  "continue it", flush=True)
            return EXIT_STOPPED
        print(f"trial {trial.name}: finished, evaluation {m['eval_mean']:.2f} ± {m['eval_ci95']:.2f}", flush=True)
        return 0
    check_ledger(out, campaign, resume=args.resume, create=False)
    try:
        check_ledger(out, campaign, resume=True, create=True)
    except OSError as err:
        raise SweepError(f"--out {out}: cannot write the sweep directory ({err.strerror})") from None
    return run_sweep(campaign, out, address=args.address, cpus=args.cpus, max_failures=args.max_failures,
                     checkpoint_every=args.checkpoint_every, report_every=args.report_every)


def add_parser(sub: Any) -> None:
    """The ``sweep`` subcommand."""
    p = sub.add_parser("sweep", help="run experiment definitions (problems x algorithms x N x seeds) on Ray Tune; "
                                     "trials shared by several experiments run once")
    p.add_argument("experiments", nargs="+", metavar="EXPERIMENT",
                   help="experiment file(s), e.g. experiments/table2.yaml or experiments/*.yaml")
    p.add_argument("--budget", choices=BUDGETS, required=True,
                   help="smoke (minutes), reduced (one machine, hours) or paper (full length: a cluster, days); "
                        "required, so that a typo never starts weeks of CPU")
    p.add_argument("--out", help="sweep directory (default results/sweeps/<id>[+<id>...]-<budget>)")
    p.add_argument("--address", help="Ray cluster to use: auto, host:port or ray://host:port (default: start a "
                                     "local Ray with this machine's CPUs)")
    p.add_argument("--cpus", type=positive_int, help="CPUs of the local Ray (default: all)")
    p.add_argument("--resume", action="store_true",
                   help="continue the sweep in --out (or add experiments to it): keep finished trials, resume the "
                        "others from checkpoints")
    p.add_argument("--max-failures", type=nonneg_int, default=2, help="retries of a failing trial (default 2)")
    p.add_argument("--checkpoint-every", type=positive_int, default=10, help="iterations between checkpoints")
    p.add_argument("--report-every", type=float, default=30.0, help="seconds between progress tables (default 30)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--list", action="store_true",
                      help="list the distinct trials with their index, status and experiments, run nothing")
    mode.add_argument("--trial-index", type=nonneg_int,
                      help="run only trial I, in this process without Ray Tune (Slurm array mode)")
    p.set_defaults(func=cmd_sweep)
