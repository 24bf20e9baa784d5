#!/bin/bash
# m3fmarl sweep on a Ray cluster that lives inside this Slurm job.
#
#   sbatch slurm/sweep.sh experiments/table2.yaml --budget reduced
#   sbatch --nodes=4 --ntasks-per-node=1 --cpus-per-task=48 slurm/sweep.sh experiments/fig5.yaml --budget paper
#   sbatch slurm/sweep.sh experiments/table2.yaml --budget reduced --resume     # after a crash
#   sbatch slurm/sweep.sh experiments/*.yaml --budget paper --out results/paper/sweep   # every experiment:
#                                                   # trials shared by several experiments run once
#
# Every argument is passed to `m3fmarl sweep` (experiment file(s), --budget, --out, --resume,
# --max-failures, ...); this script adds --address of the job's Ray head.  One Ray node per
# Slurm task: task 0 is the head, on the node running this script; tasks 1..n-1 are workers
# (task i on node i mod nodes), each with --num-cpus = --cpus-per-task.  Each trial needs 1 CPU,
# so Tune runs (tasks x cpus-per-task) trials at once.  Results go to --out (default
# results/sweeps/<id>[+<id>...]-<budget> under the submit directory), which must be on a
# filesystem all nodes share.  The Python environment: $M3FMARL_VENV, else ./.venv of the submit directory,
# else whatever `m3fmarl` is on PATH (sbatch exports the caller's environment).
#
#
# Time limits and preemption: Slurm sends the script SIGUSR1 10 minutes before the job's time
# limit (--signal), and when a preemption is announced; the script passes it to the sweep, whose
# running trials save their last finished iteration and stop; Ray is torn down and the job
# requeues itself (scontrol requeue). The requeued job (same job id, SLURM_RESTART_COUNT > 0)
# continues the sweep with --resume: finished trials are kept, stopped ones continue from their
# checkpoints. So a sweep whose trials outlive any time limit runs unattended to the end; the log
# (appended to, across the job's runs) says when each run hands over and the next picks up.
# Leave 10 minutes for the longest iteration plus a checkpoint; give more with
# --signal=B:USR1@<seconds> if a paper-budget iteration takes longer.
#
# Defaults below are for one small node; override them on the sbatch command line.
#SBATCH --job-name=m3fmarl-sweep
#SBATCH --cpus-per-task=2
#SBATCH --mem-per-cpu=3G
#SBATCH --time=24:00:00
#SBATCH --signal=B:USR1@600
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-sweep-%j.out
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: sbatch slurm/sweep.sh EXPERIMENT.yaml [EXPERIMENT.yaml ...] --budget smoke|reduced|paper [--out DIR] [--resume] ..." >&2
  exit 2
fi
if [ -z "${SLURM_JOB_ID:-}" ]; then
  echo "slurm/sweep.sh runs inside a Slurm job: submit it with sbatch (for one machine use m3fmarl sweep)" >&2
  exit 2
fi
cd "${SLURM_SUBMIT_DIR:-.}"
venv=${M3FMARL_VENV:-}
if [ -z "$venv" ] && [ -x .venv/bin/m3fmarl ]; then venv=.venv; fi
if [ -n "$venv" ]; then source "$venv/bin/activate"; fi
command -v m3fmarl >/dev/null || { echo "m3fmarl is not on PATH (set M3FMARL_VENV)" >&2; exit 2; }

STOPPED=3  # m3fmarl sweep's exit status after stopping on request with trials unfinished
# The request: this file appears (on the filesystem the nodes share; the trials look for it
# after each iteration). Not a signal to the sweep: Ray Tune takes SIGUSR1 to kill its trials,
# and the sweep may still be starting when Slurm's warning comes.
export M3FMARL_STOP_FILE=$PWD/.m3fmarl-stop-$SLURM_JOB_ID
rm -f "$M3FMARL_STOP_FILE"
sweep_pid=""
interrupted=0
stop_asked=""  # usr1: requeue after stopping; term: scancel, or a preemption that requeues by itself
on_signal() {
  interrupted=1
  [ -n "$stop_asked" ] && [ "$1" = usr1 ] || stop_asked=$1
  echo "[sweep.sh] $(date '+%F %T') SIG${1^^} ($2): running trials save their last finished iteration and stop"
  touch "$M3FMARL_STOP_FILE"
}
trap 'on_signal usr1 "time limit near or preemption announced"' USR1
trap 'on_signal term "job cancelled or preempted"' TERM

args=("$@")
restarts=${SLURM_RESTART_COUNT:-0}
if [ "$restarts" -gt 0 ]; then
  case " $* " in *" --resume "*) ;; *) args+=(--resume) ;; esac
  echo "[sweep.sh] $(date '+%F %T') job $SLURM_JOB_ID picks up (run $((restarts + 1))): m3fmarl sweep ${args[*]}"
fi
# Check the experiment and the arguments before starting any Ray process (exit 2 on bad input).
m3fmarl sweep "${args[@]}" --list >/dev/null

export OMP_NUM_THREADS=1 RAY_USAGE_STATS_ENABLED=0
# `ray start --block` would spend up to 30 s draining its node on SIGTERM; nothing to drain here.
export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0
# Ray 2.60 turns token authentication on implicitly for some processes and not for others;
# set it for all of them, with a token of this job only (srun passes the environment on).
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
if [ "$RAY_AUTH_MODE" = token ] && [ -z "${RAY_AUTH_TOKEN:-}${RAY_AUTH_TOKEN_PATH:-}" ]; then
  RAY_AUTH_TOKEN=$(python -c 'import secrets; print(secrets.token_hex(32))')
  export RAY_AUTH_TOKEN
fi

cpus=${SLURM_CPUS_PER_TASK:-1}  # Slurm 22.05's srun does not inherit it: passed explicitly below
ntasks=${SLURM_NTASKS:-1}
mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
head_node=${nodes[0]}
head_ip=$(getent hosts "$head_node" | awk '{print $1; exit}')
[ -n "$head_ip" ] || { echo "cannot resolve the head node $head_node" >&2; exit 1; }
# Ports from the job id, inside 20000-29999 (between Ray's worker ports and the ephemeral range),
# 20 per job: GCS, dashboard, client server, then one dashboard-agent port per Ray node.
port0=$((20000 + (SLURM_JOB_ID % 500) * 20))
gcs_port=$port0
dashboard_port=$((port0 + 1))
client_port=$((port0 + 2))
# Short on purpose: Ray's unix socket paths under it must stay below 108 bytes.
ray_tmp=/tmp/ray-$SLURM_JOB_ID

head_pid=""
worker_pids=()

# Send SIGTERM to the tasks of this job's steps called $1 (signalling srun itself would make
# Slurm kill the step with SIGKILL, and Ray would leave files behind).
term_steps() {
  local ids
  ids=$(squeue -h -s -j "$SLURM_JOB_ID" -o '%i %j' | awk -v want="$1" '$2 == want {print $1}')
  if [ -n "$ids" ]; then scancel --signal=TERM $ids 2>/dev/null || true; fi
}

# Wait up to $1 seconds for the remaining arguments (PIDs) to exit.
await_exit() {
  local limit=$(($1 * 4)) pid running
  shift
  for ((n = 0; n < limit; n++)); do
    running=0
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && running=1; done
    [ "$running" = 0 ] && return 0
    sleep 0.25
  done
  return 1
}

teardown() {
  local rc=$?
  # The sweep is over: a warning or cancel arriving now must neither stop the teardown half-way
  # nor end the job as killed by a signal (the default action), so both are ignored from here.
  trap '' USR1 TERM
  rm -f "$M3FMARL_STOP_FILE"
  echo "[sweep.sh] stopping Ray"
  if [ ${#worker_pids[@]} -gt 0 ]; then
    term_steps ray-worker
    await_exit 20 "${worker_pids[@]}" || kill -TERM "${worker_pids[@]}" 2>/dev/null || true
  fi
  if [ -n "$head_pid" ]; then
    term_steps ray-head
    await_exit 20 "$head_pid" || kill -TERM "$head_pid" 2>/dev/null || true
  fi
  wait 2>/dev/null || true
  srun --overlap --nodes="${SLURM_JOB_NUM_NODES:-1}" --ntasks="${SLURM_JOB_NUM_NODES:-1}" --ntasks-per-node=1 \
    rm -rf "$ray_tmp" 2>/dev/null || true
  if [ "$rc" = "$STOPPED" ] && [ "$stop_asked" = usr1 ]; then
    # The sweep stopped on the warning signal with trials unfinished: run again, same job id.
    echo "[sweep.sh] $(date '+%F %T') job $SLURM_JOB_ID hands over: requeued; the next run continues with --resume"
    scontrol requeue "$SLURM_JOB_ID" && exit 0
    echo "[sweep.sh] scontrol requeue failed: resubmit with --resume" >&2
  fi
  echo "[sweep.sh] done (exit $rc)"
  exit "$rc"
}
trap teardown EXIT

echo "[sweep.sh] job $SLURM_JOB_ID: Ray head on $head_node ($head_ip:$gcs_port), $ntasks Ray node(s) x $cpus CPU(s)"
srun --job-name=ray-head --nodes=1 --ntasks=1 --cpus-per-task="$cpus" -w "$head_node" \
  ray start --head --block --node-ip-address="$head_ip" --port="$gcs_port" --num-cpus="$cpus" \
  --temp-dir="$ray_tmp" --dashboard-port="$dashboard_port" --ray-client-server-port="$client_port" \
  --dashboard-agent-listen-port=$((port0 + 3)) --disable-usage-stats &
head_pid=$!

deadline=$((SECONDS + 120))
until timeout 20 ray health-check --address "$head_ip:$gcs_port" >/dev/null 2>&1; do
  kill -0 "$head_pid" 2>/dev/null || { echo "[sweep.sh] the Ray head exited" >&2; exit 1; }
  [ "$SECONDS" -lt "$deadline" ] || { echo "[sweep.sh] the Ray head is not up after 120 s" >&2; exit 1; }
  sleep 1
done

for ((i = 1; i < ntasks; i++)); do
  srun --job-name=ray-worker --nodes=1 --ntasks=1 --cpus-per-task="$cpus" -w "${nodes[i % ${#nodes[@]}]}" \
    ray start --address="$head_ip:$gcs_port" --block --num-cpus="$cpus" --temp-dir="$ray_tmp" \
    --dashboard-agent-listen-port=$((port0 + 3 + i)) &
  worker_pids+=($!)
done

# All Ray nodes joined (at most 120 s), so the sweep sees every CPU from the start.
RAY_ADDRESS=$head_ip:$gcs_port python - "$ntasks" <<'PY'
import sys
import time

import ray

ray.init(logging_level="ERROR")
want, deadline = int(sys.argv[1]), time.time() + 120
while (alive := sum(n["Alive"] for n in ray.nodes())) < want:
    if time.time() > deadline:
        sys.exit(f"[sweep.sh] only {alive} of {want} Ray nodes joined in 120 s")
    time.sleep(1)
print(f"[sweep.sh] Ray cluster: {alive} node(s), {int(ray.cluster_resources()['CPU'])} CPUs", flush=True)
PY

[ -z "$stop_asked" ] || exit "$STOPPED"  # the signal came while Ray started
# In the background, so that the trap runs at once (bash defers traps until a foreground
# command ends); `wait` returns early when the trap runs, so wait again until the sweep exits.
m3fmarl sweep "${args[@]}" --address "$head_ip:$gcs_port" &
sweep_pid=$!
while :; do
  interrupted=0
  status=0
  wait "$sweep_pid" || status=$?
  [ "$interrupted" = 1 ] || break
  kill -0 "$sweep_pid" 2>/dev/null && continue
  status=0
  wait "$sweep_pid" || status=$?  # it ended while the trap ran: its own exit status
  break
done
exit "$status"
