"""``m3fmarl reproduce``: every paper table and figure at one budget, in one resumable command.

``m3fmarl reproduce --budget reduced`` (what ``make reproduce`` runs) takes every definition in
``experiments/`` as one campaign (:func:`m3fmarl.experiments.merge_sweeps`: a training run that
several tables and figures share is trained once), runs it as a sweep, then writes the report and
the files worth committing::

    results/<budget>/
        sweep/                 the working sweep directory (checkpoints, TensorBoard, logs, Tune
                               state; large, not committed: see .gitignore)
        report.md, table2-<budget>.md/.csv, <fig>-<budget>.png    `m3fmarl report` of the sweep
        baselines.csv          every Table 2 M3F cell against ξ = 0 and uniform actions at N = 20,
                               and every other M3F trial at its training N
        fig8.png, fig11.png    rollouts of the Table 2 M3FPPO policies at the paper's snapshot
                               times (:mod:`m3fmarl.results.frames`), appended to report.md with
                               Beach bar's largest fraction of minors on the bar's cell
        trials/<trial>/        per finished trial: run.json, config.yaml, progress.csv,
                               evaluation.json; for the trials behind Table 2 and Fig. 9 also the
                               final policy as an export (policy.pt + policy.json, actor weights
                               only, loaded with ``weights_only=True``):
                               ``m3fmarl evaluate --checkpoint results/<budget>/trials/<trial>``
        campaign.md / campaign.json   commands, package versions, machine, CPU-hours per
                               experiment and in all, which trials each experiment uses

Running the command again resumes: finished trials are kept untouched, unfinished ones continue
from their newest checkpoint (exactly, see :mod:`m3fmarl.algorithms.batched`), and the report and
exports are rewritten.  ``--budget paper --address auto`` runs the same campaign on a Ray
cluster (docs/cluster.md).  A ``README.md`` in the output directory (the reading of the results)
is never written by this command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from m3fmarl.experiments import BUDGETS, Campaign, experiment_files
from m3fmarl.sweep import (
    SweepError,
    check_ledger,
    is_finished,
    list_trials,
    load_campaign,
    read_evaluation,
    run_sweep,
    trial_dir,
)

POLICY_EXPERIMENTS = ("table2", "fig9")
"""Experiments whose trials' final policies are exported (every Table 2 cell, Fig. 9's policies)."""


def export_results(campaign: Campaign, sweep_dir: Path, out: Path) -> dict[str, Any]:
    """Copy the small files of every finished trial (and the policy exports of those behind
    Table 2 and Fig. 9) to ``out/trials/``; returns the campaign record (campaign.json)."""
    from m3fmarl.export import copy_small_files, export_policy
    from m3fmarl.train import checkpoints, package_versions

    trials_out = out / "trials"
    trials_out.mkdir(parents=True, exist_ok=True)
    per_trial = {}
    for t in campaign.trials:
        src = trial_dir(sweep_dir, t)
        seconds = 0.0
        try:
            import csv

            with open(src / "progress.csv", newline="") as fh:
                rows = list(csv.DictReader(fh))
            seconds = float(rows[-1]["time_total_s"]) if rows else 0.0
        except (OSError, KeyError, ValueError):
            pass
        ev = read_evaluation(src) or {}
        finished = is_finished(sweep_dir, t)
        per_trial[t.name] = {"finished": finished, "used_by": list(campaign.used_by[t.name]),
                             "train_cpu_hours": seconds * t.cpus / 3600,
                             "eval_cpu_hours": float(ev.get("seconds", 0.0)) * t.cpus / 3600,
                             "iterations": t.iterations, "env_steps": t.env_steps}
        if not finished:
            continue
        dest = trials_out / t.name
        copy_small_files(src, dest)
        if set(campaign.used_by[t.name]) & set(POLICY_EXPERIMENTS):
            final = checkpoints(src)[-1][1]
            export_policy(final, dest)
            per_trial[t.name]["policy"] = f"trials/{t.name}"
    experiments = {}
    for exp in campaign.experiments:
        names = [t.name for t in exp.trials]
        experiments[exp.id] = {
            "definition": str(exp.path), "trials": names,
            "finished": sum(per_trial[n]["finished"] for n in names),
            "cpu_hours": sum(per_trial[n]["train_cpu_hours"] + per_trial[n]["eval_cpu_hours"] for n in names),
        }
    return {
        "budget": campaign.budget,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": package_versions(),
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor()},
        "distinct_trials": len(campaign.trials),
        "trials_named_by_experiments": sum(len(e.trials) for e in campaign.experiments),
        "cpu_hours_total": sum(v["train_cpu_hours"] + v["eval_cpu_hours"] for v in per_trial.values()),
        "experiments": experiments,
        "trials": per_trial,
    }


def baselines(sweep_dir: Path, out: Path, report_md: Path, num_minors: int = 20, seed: int = 0) -> dict[str, Any]:
    """The fixed policies ξ = 0 (P0) and uniform-random upper-level actions (paper episode counts,
    the campaign's variant) next to (1) every Table 2 M3FPPO/M3FA2C cell at N = ``num_minors`` and
    (2) every other finished M3F trial of the campaign at its training N (CE), with whether the
    policy beats both by more than the CIs (the check the reading needs); written to
    ``baselines.csv`` (column ``scope``) and appended to ``report_md``."""
    import csv

    from m3fmarl.evaluate import EVAL_EPISODES
    from m3fmarl.results.claims import relation
    from m3fmarl.results.report import ALGO_LABELS, M3F_ALGOS, PROBLEM_LABELS, ci95, load_sweep, table2_cells
    from m3fmarl.rollout import episode_returns

    sweeps = load_sweep(sweep_dir)
    cells = [c for s in sweeps if s.experiment == "table2" for c in table2_cells(s)]
    rows: list[dict[str, Any]] = []
    lines: dict[str, list[str]] = {"table2": [], "trial": []}
    cache: dict[tuple[str, str, int, int], dict[str, dict[str, float]]] = {}

    def base_of(problem: str, variant: str, episodes: int, n: int) -> dict[str, dict[str, float]]:
        key = (problem, variant, episodes, n)
        if key not in cache:
            cache[key] = {}
            for policy in ("zero", "uniform"):
                r = episode_returns(problem, n, episodes, variant=variant, policy=policy, seed=seed)
                stats = {"mean": float(r.mean()), "std": float(r.std(ddof=1)), "episodes": episodes}
                stats["ci95"] = ci95(stats, variant)
                cache[key][policy] = stats
        return cache[key]

    def add(scope: str, problem: str, algo: str, trial: str, variant: str, n: int, result: dict[str, Any]) -> None:
        episodes = int(result.get("episodes") or EVAL_EPISODES[problem])
        base = base_of(problem, variant, episodes, n)
        ours = {"mean": result["mean"], "ci95": ci95(result, variant)}
        beats = all(relation((ours["mean"], ours["ci95"]), (b["mean"], b["ci95"])) == "above" for b in base.values())
        rows.append({"scope": scope, "problem": problem, "variant": variant, "algorithm": algo, "num_minors": n,
                     "episodes": episodes, "mean": ours["mean"], "ci95": ours["ci95"],
                     "zero_mean": base["zero"]["mean"], "zero_ci95": base["zero"]["ci95"],
                     "uniform_mean": base["uniform"]["mean"], "uniform_ci95": base["uniform"]["ci95"],
                     "beats_both_beyond_ci": beats, "trial": trial})
        lines[scope].append(
            f"| {PROBLEM_LABELS.get(problem, problem)} | {ALGO_LABELS[algo]} | "
            + (f"`{trial}` | " if scope == "trial" else "")
            + f"{ours['mean']:.1f} ± {ours['ci95']:.1f} | {base['zero']['mean']:.1f} ± {base['zero']['ci95']:.1f} | "
            f"{base['uniform']['mean']:.1f} ± {base['uniform']['ci95']:.1f} | {'yes' if beats else '**no**'} |")

    for c in cells:
        if c.algo not in M3F_ALGOS or c.result is None or c.result.get("num_minors") != num_minors:
            continue
        add("table2", c.problem, c.algo, c.trial.name, c.trial.variant, num_minors, c.result)
    seen = {(row["trial"], row["num_minors"]) for row in rows}
    for s in sweeps:
        for t in s.finished:
            result = t.cell(t.num_minors, "centralized")
            if t.algo not in M3F_ALGOS or (t.name, t.num_minors) in seen or result is None:
                continue
            seen.add((t.name, t.num_minors))
            add("trial", t.problem, t.algo, t.name, t.variant, t.num_minors, result)
    if rows:
        with open(out / "baselines.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        text = ["", "## M3F policies against fixed policies", "",
                "ξ = 0 (the zero decision rule, major action 0) and uniform-random upper-level actions, at the same N, "
                "with the same episodes and CI rule; *beats* = the policy's lower CI bound is above both baselines' "
                "upper bounds.", ""]
        if lines["table2"]:
            text += [f"Every Table 2 M3FPPO/M3FA2C cell (N = {num_minors}):", "",
                     "| problem | algorithm | ours | ξ = 0 | uniform | beats both beyond the CIs |",
                     "|---|---|---|---|---|---|", *lines["table2"], ""]
        if lines["trial"]:
            text += ["Every finished M3F trial of the campaign at its training N (centralized), where not above:", "",
                     "| problem | algorithm | trial | ours | ξ = 0 | uniform | beats both beyond the CIs |",
                     "|---|---|---|---|---|---|---|", *lines["trial"], ""]
        with open(report_md, "a") as fh:
            fh.write("\n".join(text) + "\n")
    return {"rows": rows}


def qualitative(sweep_dir: Path, out: Path, report_md: Path) -> dict[str, Any]:
    """Figs. 8 and 11 from the Table 2 M3FPPO policies (the cell's best trial per problem),
    rendered at N = 300, and Beach bar's occupancy of the bar's cell next to the paper's 70 %;
    appended to ``report_md``.  Returns what was drawn."""
    from m3fmarl.evaluate import load_policy
    from m3fmarl.results.frames import PAPER_BAR_FRACTION, render_qualitative
    from m3fmarl.results.report import REFERENCE, load_sweep, table2_cells
    from m3fmarl.train import checkpoints

    policies, sources = {}, {}
    for sweep in load_sweep(sweep_dir):
        if sweep.experiment != "table2":
            continue
        for cell in table2_cells(sweep):
            if cell.algo == REFERENCE.name and cell.trial is not None:
                policies[cell.problem] = load_policy(checkpoints(cell.trial.run_dir)[-1][1])
                sources[cell.problem] = cell.trial.name
    if not policies:
        return {"files": [], "note": "no finished Table 2 M3FPPO trial yet"}
    drawn = render_qualitative(policies, out)
    lines = ["", "## Figs. 8 and 11 — rollouts of the Table 2 M3FPPO policies (N = 300)", "",
             "One episode per problem with stochastic actions (seed 0), snapshots at the paper's times; policies: "
             + ", ".join(f"{p}: `{n}`" for p, n in sources.items()) + ".", ""]
    lines += [f"![{Path(f).stem}]({Path(f).name})" for f in drawn["files"]]
    occ = drawn.get("beach_occupancy")
    if occ:
        lines += ["", f"Beach bar: the largest fraction of minors on the bar's cell during an episode is "
                      f"{occ['mean_max']:.2f} on average over {len(occ['max_fraction'])} episodes "
                      f"(at most {occ['max_max']:.2f}); the paper reports up to {PAPER_BAR_FRACTION:.2f}."]
    with open(report_md, "a") as fh:
        fh.write("\n".join(lines) + "\n")
    return {"files": [Path(f).name for f in drawn["files"]], "policies": sources,
            "beach_occupancy": None if not occ else {k: occ[k] for k in ("mean_max", "max_max", "paper")}}


def campaign_markdown(record: dict[str, Any], command: str) -> str:
    """campaign.md: how the results were made, on what, at what cost."""
    v = record["versions"]
    m = record["machine"]
    lines = [
        f"# Campaign: every experiment at the {record['budget']} budget", "",
        f"Written {record['written']} by `m3fmarl reproduce`. Rerunning the command resumes the campaign "
        "(finished trials kept, unfinished ones continue from their newest checkpoint).", "",
        "```bash", command, "```", "",
        f"- machine: {m['host']}, {m['cpus']} CPUs, {m['platform']}",
        "- packages: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
        f"- {record['distinct_trials']} distinct trials ({record['trials_named_by_experiments']} named by the "
        f"experiments; shared ones trained once); {record['cpu_hours_total']:.1f} CPU-hours of training and "
        "evaluation in all", "",
        "| experiment | trials finished | CPU-hours (its trials, shared ones counted in each) |", "|---|---|---|",
    ]
    for exp, info in record["experiments"].items():
        lines.append(f"| {exp} | {info['finished']} / {len(info['trials'])} | {info['cpu_hours']:.1f} |")
    lines += ["", "| trial | used by | iterations | env steps | training CPU-h | evaluation CPU-h | policy |",
              "|---|---|---|---|---|---|---|"]
    for name, t in record["trials"].items():
        policy = f"`{t['policy']}`" if t.get("policy") else ("unfinished" if not t["finished"] else "-")
        lines.append(f"| {name} | {', '.join(t['used_by'])} | {t['iterations']} | {t['env_steps']:,} | "
                     f"{t['train_cpu_hours']:.2f} | {t['eval_cpu_hours']:.2f} | {policy} |")
    return "\n".join(lines) + "\n"


def reproduce(budget: str, out: Path, *, address: str | None = None, cpus: int | None = None,
              max_failures: int = 2, checkpoint_every: int = 10, report_every: float = 60.0,
              marl_scaling: str = "team", command: str = "", experiments: list[Path] | None = None) -> int:
    """Run (or resume) the campaign of every experiment (``experiments``, default every file in
    ``experiments/``) at ``budget`` into ``out``, then report and export.  Returns the sweep's
    exit status (0: every trial finished)."""
    from m3fmarl.results.report import build_report

    campaign = load_campaign([str(p) for p in (experiments or experiment_files())], budget)
    sweep_dir = out / "sweep"
    try:
        check_ledger(sweep_dir, campaign, resume=True, create=True)
    except OSError as err:
        raise SweepError(f"--out {out}: cannot write the campaign directory ({err.strerror})") from None
    status = run_sweep(campaign, sweep_dir, address=address, cpus=cpus, max_failures=max_failures,
                       checkpoint_every=checkpoint_every, report_every=report_every)
    rep = build_report([sweep_dir], out, marl_scaling=marl_scaling)
    record = export_results(campaign, sweep_dir, out)
    record["baselines"] = baselines(sweep_dir, out, rep.markdown)["rows"]
    record["qualitative"] = qualitative(sweep_dir, out, rep.markdown)
    (out / "campaign.json").write_text(json.dumps(record, indent=1))
    (out / "campaign.md").write_text(campaign_markdown(record, command or f"m3fmarl reproduce --budget {budget} "
                                                                          f"--out {out}"))
    print(f"reproduce ({budget}): report {rep.markdown}, campaign record {out / 'campaign.md'}, "
          f"{sum(t['finished'] for t in record['trials'].values())} of {len(record['trials'])} trials finished",
          flush=True)
    return status


def cmd_reproduce(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path("results") / args.budget
    if args.status:
        files = [str(p) for p in (args.experiments or experiment_files())]
        print("\n".join(list_trials(load_campaign(files, args.budget), out / "sweep")))
        return 0
    command = " ".join(["m3fmarl", "reproduce", "--budget", args.budget, "--out", str(out)]
                       + (["--address", args.address] if args.address else [])
                       + (["--cpus", str(args.cpus)] if args.cpus else []))
    return reproduce(args.budget, out, address=args.address, cpus=args.cpus, max_failures=args.max_failures,
                     checkpoint_every=args.checkpoint_every, report_every=args.report_every,
                     marl_scaling=args.marl_scaling, command=command,
                     experiments=[Path(p) for p in args.experiments] if args.experiments else None)


def add_parser(sub: Any) -> None:
    """The ``reproduce`` subcommand."""
    from m3fmarl.results.report import MARL_SCALINGS
    from m3fmarl.util import nonneg_int, positive_int

    p = sub.add_parser("reproduce", help="every paper table and figure at one budget: one resumable campaign, then "
                                         "the report and the files to commit (results/<budget>/)")
    p.add_argument("--budget", choices=BUDGETS, default="reduced",
                   help="reduced (one machine, hours; default), smoke (minutes) or paper (a cluster)")
    p.add_argument("--out", help="output directory (default results/<budget>)")
    p.add_argument("--address", help="Ray cluster to use: auto, host:port or ray://host:port (default: a local Ray "
                                     "with this machine's CPUs)")
    p.add_argument("--cpus", type=positive_int, help="CPUs of the local Ray (default: all)")
    p.add_argument("--max-failures", type=nonneg_int, default=2, help="retries of a failing trial (default 2)")
    p.add_argument("--checkpoint-every", type=positive_int, default=10, help="iterations between checkpoints")
    p.add_argument("--report-every", type=float, default=60.0, help="seconds between progress tables (default 60)")
    p.add_argument("--marl-scaling", choices=MARL_SCALINGS, default="team",
                   help="IPPO/MAPPO curves in figs 7/12/13 (see m3fmarl report --help)")
    p.add_argument("--experiments", nargs="+", metavar="EXPERIMENT",
                   help="experiment files to use instead of every file in experiments/")
    p.add_argument("--status", action="store_true",
                   help="where the campaign in --out stands (each trial finished / started:<iterations> / todo, "
                        "CPU-hours, ETA), read from its files while it runs or after; runs nothing")
    p.set_defaults(func=cmd_reproduce)
