"""Command line: ``m3fmarl demo | envs | rollout | train | evaluate | golden | bench | sweep | report | reproduce``.

Usage errors (unknown problem, variant, bad N, …) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from m3fmarl.util import positive_int

EXIT_USAGE = 2

VARIANT_HELP = ("paper: the dynamics as the paper describes them (the default, everywhere); reference: as the "
                "authors' code does (the experiments that reproduce the published numbers set it)")


class UsageError(Exception):
    """A bad command-line value; printed as one line, exit status 2."""


def _problem(text: str) -> str:
    from m3fmarl.problems import canonical_name

    try:
        return canonical_name(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _fmt_rate(x: float) -> str:
    return f"{x / 1e3:.1f}k" if x >= 1e4 else f"{x:.0f}"


# ----------------------------------------------------------------------------------------------
# commands
# ----------------------------------------------------------------------------------------------


def cmd_envs(args: argparse.Namespace) -> int:
    from m3fmarl import ENV_IDS
    from m3fmarl.m3fc.env import M3FCCore

    if args.switches:
        from m3fmarl.problems import switch_markdown

        print(switch_markdown(), end="")
        return 0

    print(f"{'problem':<14} {'gymnasium id':<26} {'T':>4} {'obs':>4} {'|xi|':>5}  major action")
    for name, env_id in ENV_IDS.items():
        core = M3FCCore(name, args.num_minors, args.variant)
        p = core.problem
        major = core.action_space[1] if hasattr(core.action_space, "spaces") else "none"
        print(f"{name:<14} {env_id:<26} {p.horizon:>4} {core.observation_space.shape[0]:>4} "
              f"{p.xi_size:>5}  {major}")
    return 0


def cmd_rollout(args: argparse.Namespace) -> int:
    from m3fmarl.rollout import ReturnStats, episode_returns

    start = time.perf_counter()
    r = episode_returns(args.problem, args.num_minors, args.episodes, variant=args.variant,
                        policy=args.policy, seed=args.seed, num_envs=args.num_envs, execution=args.execution)
    s = ReturnStats.of(r)
    out = {"problem": args.problem, "num_minors": args.num_minors, "variant": args.variant,
           "policy": args.policy, "execution": args.execution, "seed": args.seed, "episodes": s.episodes,
           "mean": s.mean, "std": s.std, "ci95": s.ci95, "seconds": time.perf_counter() - start}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{args.problem} N={args.num_minors} {args.variant} {args.policy}: "
              f"return {s.mean:.2f} ± {s.ci95:.2f} (95% CI, std {s.std:.2f}, {s.episodes} episodes)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train one algorithm on one problem into a run directory (progress, CSV, TB, checkpoints)."""
    from m3fmarl.config import load_algorithm
    from m3fmarl.train import RunSpec, Terminated, train

    settings = load_algorithm(args.algo, args.config)
    if args.timesteps is not None:
        iterations = max(1, -(-args.timesteps // settings.train_batch_size))
    else:
        iterations = args.iterations
    spec = RunSpec(args.algo, args.problem, args.num_minors, args.variant, args.seed, iterations)
    out = Path(args.out) if args.out else spec.default_dir()
    print(f"train {spec.algo} on {spec.problem}, N={spec.num_minors}, {spec.variant}, seed {spec.seed}: "
          f"{iterations} iterations x {settings.train_batch_size} env steps -> {out}", flush=True)
    try:
        train(spec, out, settings=settings, resume=args.resume, checkpoint_every=args.checkpoint_every,
              argv=["m3fmarl", *sys.argv[1:]], log=lambda line: print(line, flush=True), cpus=args.cpus)
    except Terminated:
        return 128 + signal.SIGTERM  # 143, as if the signal had ended it: what Slurm and shells expect
    except KeyboardInterrupt:
        return 130
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """The paper's evaluation protocol on one checkpoint, over one or more N (transfer, Fig. 9)."""
    from m3fmarl.evaluate import evaluate, load_policy
    from m3fmarl.export import is_export
    from m3fmarl.train import RUN_FILE, checkpoints

    path = Path(args.checkpoint)
    if (path / RUN_FILE).is_file() and not is_export(path):  # a run directory: its newest complete checkpoint
        done = checkpoints(path)
        if not done:
            raise UsageError(f"{path}: run directory without a complete checkpoint")
        path = done[-1][1]
    from marl_baselines.evaluate import EXECUTION, evaluate_marl, is_marl_checkpoint, load_marl_policy

    marl = is_marl_checkpoint(path)
    if marl:
        if args.execution not in (None, EXECUTION):
            raise UsageError(f"--execution {args.execution} applies to M3FPPO/M3FA2C policies; IPPO/MAPPO agents "
                             f"always act on their own observations (execution {EXECUTION})")
        policy = load_marl_policy(path)
        executions = [EXECUTION]
    else:
        if args.execution == EXECUTION:
            raise UsageError(f"--execution {EXECUTION} is for IPPO/MAPPO checkpoints; use centralized, "
                             "decentralized or both")
        policy = load_policy(path)
        execution = args.execution or "centralized"
        executions = ["centralized", "decentralized"] if execution == "both" else [execution]
    results = []
    if not args.json:
        print(f"evaluate {path} ({policy.problem}, trained at N={policy.num_minors}, {policy.variant})")
        print(f"{'execution':<14} {'N':>5} {'episodes':>9} {'mean':>12} {'std':>10} {'ci95':>9}")
    for execution in executions:
        if marl:
            rows = evaluate_marl(policy, num_minors=args.num_minors, episodes=args.episodes, seed=args.seed)
        else:
            rows = evaluate(policy, num_minors=args.num_minors, episodes=args.episodes, execution=execution,
                            seed=args.seed)
        for res in rows:
            results.append(res.to_dict())
            if not args.json:
                print(f"{execution:<14} {res.num_minors:>5} {res.episodes:>9} {res.mean:>12.2f} {res.std:>10.2f} "
                      f"{res.ci95:>9.2f}", flush=True)
    if args.json:
        print(json.dumps({"checkpoint": str(path), "results": results}, indent=1))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """A compact, committable copy of a run: its small files and the final policy as weights only."""
    from m3fmarl.export import copy_small_files, export_policy
    from m3fmarl.train import RUN_FILE, checkpoints

    run_dir, dest = Path(args.run_dir), Path(args.out)
    if not (run_dir / RUN_FILE).is_file():
        raise UsageError(f"{run_dir}: not a run directory (no {RUN_FILE}; `m3fmarl train --out DIR` writes one)")
    done = checkpoints(run_dir)
    if not done:
        raise UsageError(f"{run_dir}: run directory without a complete checkpoint")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(f"--out {dest} exists and is not an empty directory; choose another --out (nothing is "
                         "overwritten)")
    if dest.resolve() == run_dir.resolve() or run_dir.resolve() in dest.resolve().parents:
        raise UsageError(f"--out {dest} is inside the run directory {run_dir}; choose another --out")
    iteration, checkpoint = done[-1]
    export_policy(checkpoint, dest)
    copied = copy_small_files(run_dir, dest)
    size = sum(p.stat().st_size for p in dest.iterdir() if p.is_file())
    print(f"exported {run_dir} (iteration {iteration}) to {dest}: {', '.join(copied)}, policy.pt + policy.json "
          f"({size / 1024:.0f} kB); evaluate it with `m3fmarl evaluate --checkpoint {dest}`")
    return 0


def cmd_golden(args: argparse.Namespace) -> int:
    """Replay the golden protocol (P0, reference variant) and compare with the authors' numbers."""
    from m3fmarl.golden import compare, load_golden

    rows = [r for r in load_golden(args.golden) if not args.problem or r.name in args.problem]
    results = []
    if not args.json:
        print(f"{'problem':<14} {'N':>4} {'reference mean ± ci95 (n)':>30} {'ours mean ± ci95 (n)':>30} {'z':>6}")
    for row in rows:
        c = compare(row, episodes=int(row.episodes * args.episodes_factor), seed=args.seed)
        results.append({"problem": row.name, "num_minors": row.num_minors, "reference_mean": row.mean,
                        "reference_std": row.std, "reference_episodes": row.episodes, "mean": c.ours.mean,
                        "std": c.ours.std, "episodes": c.ours.episodes, "z": c.z})
        if not args.json:
            ref_ci = 1.96 * row.std / row.episodes**0.5
            print(f"{row.name:<14} {row.num_minors:>4} {row.mean:>14.2f} ± {ref_ci:<6.2f} ({row.episodes:>5}) "
                  f"{c.ours.mean:>14.2f} ± {c.ours.ci95:<6.2f} ({c.ours.episodes:>5}) {c.z:>6.2f}", flush=True)
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


def cmd_bench_envs(args: argparse.Namespace) -> int:
    from m3fmarl.authors import AuthorsUnavailable, check_source
    from m3fmarl.bench import machine_info, rows_as_dicts, run_env_bench

    def show(row: Any) -> None:
        if not args.json:
            unit = "solves/s" if row.kind.startswith("ot") else "env steps/s"
            vs = f"{row.speedup:6.1f}x authors" if row.speedup is not None else ""
            if row.authors_steps_per_s:
                vs += f" (theirs {_fmt_rate(row.authors_steps_per_s)}/s beside it)"
            print(f"{row.problem:<14} N={row.num_minors:<4} {row.kind:<7} B={row.num_envs:<3} "
                  f"{_fmt_rate(row.steps_per_s):>8} {unit:<11} {row.ms_per_call:8.3f} ms/call  {vs}", flush=True)

    if args.authors_src is not None:
        try:
            check_source(args.authors_src)
        except AuthorsUnavailable as exc:
            raise UsageError(str(exc)) from None
    if not args.json:
        print(f"bench envs: variant={args.variant}, vector copies={args.num_envs}, "
              f">= {args.seconds}s per row, uniform-random actions")
    rows = run_env_bench(args.problem, args.num_minors, args.variant, args.num_envs, args.seconds, show,
                         authors_src=args.authors_src)
    if args.json:
        print(json.dumps({"machine": machine_info(), "rows": rows_as_dicts(rows)}, indent=1))
    return 0


def cmd_bench_train(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from m3fmarl.bench import bench_train, machine_info

    settings = None
    if args.train_batch_size is not None:
        import dataclasses

        from m3fmarl.config import load_algorithm

        base = load_algorithm(args.algo)
        batch = args.train_batch_size
        fields = {f.name for f in dataclasses.fields(base)}
        minibatch = min(getattr(base, "minibatch_size", batch), batch)
        if batch % minibatch:
            raise UsageError(f"--train-batch-size {batch} must be a multiple of the minibatch size {minibatch}")
        copies = getattr(base, "num_envs_per_env_runner", 1)
        if batch % copies:
            raise UsageError(f"--train-batch-size {batch} must be a multiple of num_envs_per_env_runner {copies}")
        settings = dataclasses.replace(base, train_batch_size=batch,
                                       **({"minibatch_size": minibatch} if "minibatch_size" in fields else {}))
    b = bench_train(args.algo, args.problem, args.num_minors, args.variant, args.iterations, settings=settings,
                    cpus=args.cpus)
    if args.json:
        print(json.dumps({"machine": machine_info(), **asdict(b), "other_s": b.other_s,
                          "env_steps_per_s": b.env_steps_per_s}, indent=1))
        return 0
    print(f"bench train: {b.algo} on {b.problem}, N={b.num_minors}, {b.variant}, {b.train_batch_size} env steps "
          f"per iteration, {args.cpus} CPU(s), mean of {b.iterations} iterations after a warm-up")
    print(f"  {b.seconds_per_iteration:.2f} s/iteration ({_fmt_rate(b.env_steps_per_s)} env steps/s): "
          f"sampling {b.sampling_s:.2f} s, learner {b.learner_s:.2f} s, other {b.other_s:.2f} s")
    print(f"  sampling alone (env + policy inference): {_fmt_rate(b.train_batch_size / b.sampling_s)} env steps/s")
    return 0


def cmd_bench_marl(args: argparse.Namespace) -> int:
    """Joint steps/s of IPPO/MAPPO sampling (env + policy inference + values/GAE)."""
    from dataclasses import asdict

    from m3fmarl.bench import bench_marl_sampling, machine_info
    from m3fmarl.problems import PROBLEMS

    problems = args.problem or list(PROBLEMS)
    rows = []
    if not args.json:
        print(f"bench marl: {args.algo} sampling, {args.variant}, B={args.num_envs} copies, fresh policies, one core")
        print(f"{'problem':<14} {'N':>4} {'joint steps/s':>14} {'agent steps/s':>14} {'vs authors env @N=20':>21}")
    for problem in problems:
        for n in args.num_minors:
            b = bench_marl_sampling(args.algo, problem, n, args.variant, args.num_envs, args.seconds)
            rows.append({**asdict(b), "joint_steps_per_s": b.joint_steps_per_s, "vs_authors_env": b.vs_authors_env})
            if not args.json:
                vs = f"{b.vs_authors_env:.1f}x" if b.vs_authors_env is not None else ""
                print(f"{b.problem:<14} {n:>4} {_fmt_rate(b.joint_steps_per_s):>14} "
                      f"{_fmt_rate(b.agent_steps_per_s):>14} {vs:>21}", flush=True)
    if args.json:
        print(json.dumps({"machine": machine_info(), "rows": rows}, indent=1))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Roll out every problem with the fixed P0 policy; print returns and speed; save a picture."""
    import numpy as np

    from m3fmarl.m3fc.env import M3FCEnv
    from m3fmarl.problems import PROBLEMS
    from m3fmarl.render import figure_to_rgb
    from m3fmarl.rollout import ReturnStats, episode_returns, uniform_policy

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"m3fmarl demo: each problem at N={args.num_minors}, variant={args.variant}, "
          f"{args.episodes} episodes per policy, batched {args.episodes} copies at a time\n")
    header = f"{'problem':<14} {'T':>4} {'zero ξ (P0) return':>24} {'uniform-random return':>24} {'env steps/s':>12}"
    print(header)
    print("-" * len(header))
    for name in PROBLEMS:
        stats = {}
        t0 = time.perf_counter()
        for pol in ("zero", "uniform"):
            r = episode_returns(name, args.num_minors, args.episodes, variant=args.variant, policy=pol,
                                seed=args.seed, num_envs=args.episodes)
            stats[pol] = ReturnStats.of(r)
        sec = time.perf_counter() - t0
        horizon = M3FCEnv(name, num_minors=1).problem.horizon
        rate = 2 * args.episodes * horizon / sec
        z, u = stats["zero"], stats["uniform"]
        print(f"{name:<14} {horizon:>4} {z.mean:>14.2f} ± {z.ci95:<7.2f} {u.mean:>14.2f} ± {u.ci95:<7.2f} "
              f"{_fmt_rate(rate):>12}", flush=True)

    # One rendered episode: frames of Beach bar under uniform-random decision rules.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    env = M3FCEnv("beach-bar", num_minors=args.num_minors, variant=args.variant, render_mode="rgb_array")
    env.reset(seed=args.seed)
    rng = np.random.default_rng(args.seed)
    times = [0, 50, 100, 150, 200]
    frames = [env.render()]
    for t in range(1, env.problem.horizon + 1):
        env.step(uniform_policy(None, env.action_space, rng))
        if t in times:
            frames.append(env.render())
    fig = Figure(figsize=(3 * len(frames), 3.3), dpi=80)
    FigureCanvasAgg(fig)
    for i, frame in enumerate(frames):
        ax = fig.add_subplot(1, len(frames), i + 1)
        ax.imshow(frame)
        ax.axis("off")
    fig.suptitle(f"Beach bar, N={args.num_minors}, {args.variant}: one episode, uniform-random decision rules")
    fig.tight_layout()
    path = out / "demo_episode.png"
    from PIL import Image

    Image.fromarray(figure_to_rgb(fig)).save(path)
    print(f"\nwrote {path} ({len(frames)} frames of one episode)")
    if args.train_iterations:
        _demo_training(args, out)
    return 0


def _demo_training(args: argparse.Namespace, out: Path) -> None:
    """Train M3FPPO on Potential (N=10, reference) for a minute; evaluate it against the fixed
    policies; save the learning curve."""
    from m3fmarl import registry
    from m3fmarl.config import CONFIG_DIR, PPOSettings, load
    from m3fmarl.evaluate import evaluate, load_policy
    from m3fmarl.results.plots import plot_learning_curves
    from m3fmarl.rollout import ReturnStats, episode_returns
    from m3fmarl.train import RunSpec, checkpoints, train

    settings = load(PPOSettings, CONFIG_DIR / "demo" / "m3fppo-potential.yaml")
    spec = RunSpec(registry.mf_reference().name, "potential", 10, "reference", seed=args.seed,
                   iterations=args.train_iterations)
    run_dir = out / "runs" / time.strftime("m3fppo-potential-%Y%m%d-%H%M%S")
    print(f"\ntraining M3FPPO on potential, N=10, reference ({args.train_iterations} iterations x "
          f"{settings.train_batch_size} env steps, settings configs/demo/m3fppo-potential.yaml) -> {run_dir}",
          flush=True)
    train(spec, run_dir, settings=settings, checkpoint_every=args.train_iterations,
          log=lambda line: print(line, flush=True))
    episodes = args.eval_episodes
    trained = evaluate(load_policy(checkpoints(run_dir)[-1][1]), episodes=episodes, seed=1)[0]
    rows = [("M3FPPO (trained, stochastic)", trained.mean, trained.ci95)]
    for pol, label in (("zero", "zero decision rule ξ = 0"), ("uniform", "uniform-random actions")):
        s = ReturnStats.of(episode_returns("potential", 10, episodes, variant="reference", policy=pol, seed=1))
        rows.append((label, s.mean, s.ci95))
    print(f"\n{'policy (potential, N=10, reference)':<36} {'return':>10} {'± 95% CI':>9}   ({episodes} episodes)")
    for label, mean, ci in rows:
        print(f"{label:<36} {mean:>10.2f} {ci:>9.2f}")
    curve = plot_learning_curves([run_dir], out / "learning_curve.png", labels=["M3FPPO (training)"],
                                 colors=[registry.mf_reference().color],
                                 baselines={rows[1][0]: rows[1][1], rows[2][0]: rows[2][1]},
                                 title="M3FPPO on Potential, N=10 (reference)")
    print(f"\nwrote {curve}")


# ----------------------------------------------------------------------------------------------
# parser
# ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from m3fmarl.problems import PROBLEMS, VARIANTS

    parser = argparse.ArgumentParser(
        prog="m3fmarl", description="Major-minor mean-field MARL: the five problems, M3FPPO/M3FA2C and the "
                                    "baselines, sweeps and the paper's tables and figures.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    problems = ", ".join(PROBLEMS)

    p = sub.add_parser("demo", help="roll out every problem, then train and evaluate M3FPPO briefly; save pictures")
    p.add_argument("--num-minors", type=positive_int, default=20, help="N (default 20)")
    p.add_argument("--variant", choices=VARIANTS, default="paper", help=VARIANT_HELP)
    p.add_argument("--episodes", type=positive_int, default=16, help="episodes per policy and problem")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/demo", help="where pictures and the run go (default results/demo)")
    p.add_argument("--train-iterations", type=int, default=80,
                   help="M3FPPO iterations of the training part (0 = skip training; default 80, about a minute)")
    p.add_argument("--eval-episodes", type=positive_int, default=1000, help="evaluation episodes per policy")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("envs", help="list the Gymnasium ids and their spaces")
    p.add_argument("--num-minors", type=positive_int, default=20)
    p.add_argument("--variant", choices=VARIANTS, default="paper", help=VARIANT_HELP)
    p.add_argument("--switches", action="store_true", help="print every fidelity switch with both presets (Markdown)")
    p.set_defaults(func=cmd_envs)

    p = sub.add_parser("rollout", help="returns of a fixed policy (zero ξ or uniform-random) with a 95%% CI")
    p.add_argument("--problem", type=_problem, required=True, help=f"one of: {problems}")
    p.add_argument("--num-minors", type=positive_int, default=20)
    p.add_argument("--variant", choices=VARIANTS, default="paper", help=VARIANT_HELP)
    p.add_argument("--execution", choices=("centralized", "decentralized"), default="centralized")
    p.add_argument("--policy", choices=("zero", "uniform"), default="zero")
    p.add_argument("--episodes", type=positive_int, default=100)
    p.add_argument("--num-envs", type=positive_int, default=100, help="copies stepped together")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_rollout)

    from m3fmarl import registry

    p = sub.add_parser("train", help="train one algorithm on one problem (run directory, checkpoints, --resume)")
    p.add_argument("--algo", choices=registry.names(), required=True)
    p.add_argument("--problem", type=_problem, required=True, help=f"one of: {problems}")
    p.add_argument("--num-minors", type=positive_int, required=True, help="N of the training system")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--iterations", type=positive_int, default=100, help="training iterations (default 100)")
    length.add_argument("--timesteps", type=positive_int, help="env steps (rounded up to whole iterations)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variant", choices=VARIANTS, default="paper", help=VARIANT_HELP)
    p.add_argument("--config", help="algorithm settings YAML (default configs/algorithms/<algo>.yaml)")
    p.add_argument("--out", help="run directory (default results/runs/<problem>__<algo>__N.._<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--checkpoint-every", type=positive_int, default=10, help="iterations between checkpoints")
    p.add_argument("--cpus", type=positive_int, default=1,
                   help="cores for this run: learner threads and exact-OT solver threads (default 1)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint (stochastic actions, 95%% CI) over one or more N")
    p.add_argument("--checkpoint", required=True,
                   help="a checkpoint directory, a run directory (newest checkpoint), or a policy export "
                        "(policy.json + policy.pt, e.g. results/reduced/trials/<trial>)")
    p.add_argument("--num-minors", type=positive_int, nargs="+", help="N values (default: the training N)")
    p.add_argument("--episodes", type=positive_int, help="episodes per N (default per problem: 100/300/500)")
    p.add_argument("--execution", choices=("centralized", "decentralized", "both", "multi-agent"), default=None,
                   help="M3F policies: centralized (default), decentralized or both; IPPO/MAPPO: multi-agent")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="a compact copy of a run to commit or share: run.json, config.yaml, "
                                      "progress.csv, evaluation.json and the final policy (weights only)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `m3fmarl train`")
    p.add_argument("--out", required=True, help="a new (or empty) directory for the copy")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("golden", help="replay the golden protocol and compare with the authors' returns")
    p.add_argument("--problem", type=_problem, action="append", help="repeatable; default all")
    p.add_argument("--episodes-factor", type=float, default=1.0,
                   help="our episodes = factor × the reference's count (at least 1×)")
    p.add_argument("--seed", type=int, default=20261125)
    p.add_argument("--golden", default=None,
                   help="path of reference_returns.csv (default: the one shipped in m3fmarl/golden_data)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_golden)

    bench = sub.add_parser("bench", help="benchmarks (numbers for docs/benchmarks.md)")
    bsub = bench.add_subparsers(dest="what", required=True, metavar="WHAT")
    p = bsub.add_parser("envs", help="env steps/s of the single and vector env, and the OT solve alone")
    p.add_argument("--problem", type=_problem, action="append", help=f"repeatable; default all of: {problems}")
    p.add_argument("--num-minors", type=positive_int, nargs="+", default=[20, 300])
    p.add_argument("--variant", choices=VARIANTS, default="paper", help=VARIANT_HELP)
    p.add_argument("--num-envs", type=positive_int, default=64, help="vector env copies (default 64)")
    p.add_argument("--seconds", type=float, default=1.0, help="minimum timing per row")
    p.add_argument("--authors-src", metavar="DIR",
                   help="a checkout of the authors' code (tudkcui/M3FC-MARL): time their env beside ours "
                        "in this process (needs the old 'gym'; docs/benchmarks.md)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_envs)

    p = bsub.add_parser("train", help="seconds per training iteration and where the time goes")
    p.add_argument("--algo", choices=registry.names(), default=registry.mf_reference().name)
    p.add_argument("--problem", type=_problem, required=True, help=f"one of: {problems}")
    p.add_argument("--num-minors", type=positive_int, default=300)
    p.add_argument("--variant", choices=VARIANTS, default="paper", help=VARIANT_HELP)
    p.add_argument("--iterations", type=positive_int, default=3, help="measured iterations after one warm-up")
    p.add_argument("--train-batch-size", type=positive_int,
                   help="env (joint) steps per iteration instead of the config's (e.g. 2400 for IPPO at N=300)")
    p.add_argument("--cpus", type=positive_int, default=1, help="cores of the trial (learner and OT threads)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_train)

    p = bsub.add_parser("marl", help="joint steps/s of IPPO/MAPPO sampling (env + inference + GAE)")
    p.add_argument("--algo", choices=registry.names("multi-agent"), default=registry.names("multi-agent")[0])
    p.add_argument("--problem", type=_problem, action="append", help=f"repeatable; default all of: {problems}")
    p.add_argument("--num-minors", type=positive_int, nargs="+", default=[20, 300])
    p.add_argument("--variant", choices=VARIANTS, default="paper", help=VARIANT_HELP)
    p.add_argument("--num-envs", type=positive_int, default=24, help="copies stepped together (default 24)")
    p.add_argument("--seconds", type=float, default=3.0, help="minimum timing per row")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_marl)

    from m3fmarl.sweep import add_parser as add_sweep_parser

    add_sweep_parser(sub)

    from m3fmarl.results.report import add_parser as add_report_parser

    add_report_parser(sub)

    from m3fmarl.reproduce import add_parser as add_reproduce_parser

    add_reproduce_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    import logging

    # RLlib 2.60 warns about its own internal RLModuleConfig each time a module is built
    # ("DeprecationWarning: RLModule(config=...)"); nothing a user can act on.
    logging.getLogger("ray._common.deprecation").setLevel(logging.ERROR)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UsageError, ValueError) as err:
        print(f"m3fmarl: error: {err}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
