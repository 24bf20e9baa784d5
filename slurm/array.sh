#!/bin/bash
# m3fmarl sweep without Ray Tune: one trial per Slurm array task, for clusters where Ray cannot
# span nodes.  Each task runs `m3fmarl sweep ... --trial-index $SLURM_ARRAY_TASK_ID`, which
# trains and evaluates that trial into the same run directory as a Tune sweep
# (<out>/trials/<problem>__<algo>__N<N>__s<seed>__<iterations>it__<digest>/, evaluation.json).
# Several experiment files form one campaign: a trial they share is one array task.
#
#   slurm/array.sh experiments/table2.yaml --budget reduced       # submits itself: one task per trial
#   slurm/array.sh experiments/*.yaml --budget reduced --out results/reduced/sweep   # every experiment
#   sbatch --array=0-19 slurm/array.sh experiments/table2.yaml --budget reduced   # the same, by hand
#
# Run directly (not in a job), the script counts the trials (`m3fmarl sweep --list`) and submits
# itself with --array=0-(count-1); sbatch options go in front as SBATCH_* variables or by
# submitting by hand.  A finished trial is skipped and an unfinished one continues from its
# newest checkpoint, so resubmitting the same command resumes the sweep.  --out must be on a
# filesystem all nodes share; the default is results/sweeps/<id>[+<id>...]-<budget> under the
# submit directory.  Python environment: $M3FMARL_VENV, else ./.venv, else `m3fmarl` on PATH.
#
# Time limits and preemption: 10 minutes before a task's time limit Slurm sends SIGUSR1
# (--signal); the trial saves its last finished iteration and stops, and the task requeues
# itself (scontrol requeue); its next run continues the trial from that checkpoint. A trial
# longer than any time limit thus runs to the end unattended. SIGTERM (scancel, or a preemption
# that requeues the task by itself) also saves the last finished iteration, without a requeue.
#SBATCH --job-name=m3fmarl-trial
#SBATCH --cpus-per-task=1
#SBATCH --mem-per-cpu=3G
#SBATCH --time=24:00:00
#SBATCH --signal=B:USR1@600
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-trial-%A_%a.out
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: slurm/array.sh EXPERIMENT.yaml [EXPERIMENT.yaml ...] --budget smoke|reduced|paper [--out DIR]" >&2
  exit 2
fi
cd "${SLURM_SUBMIT_DIR:-.}"
venv=${M3FMARL_VENV:-}
if [ -z "$venv" ] && [ -x .venv/bin/m3fmarl ]; then venv=.venv; fi
if [ -n "$venv" ]; then source "$venv/bin/activate"; fi
command -v m3fmarl >/dev/null || { echo "m3fmarl is not on PATH (set M3FMARL_VENV)" >&2; exit 2; }
export OMP_NUM_THREADS=1 RAY_USAGE_STATS_ENABLED=0

if [ -z "${SLURM_ARRAY_TASK_ID:-}" ]; then
  if [ -n "${SLURM_JOB_ID:-}" ]; then
    echo "slurm/array.sh: submit it as an array job (sbatch --array=0-<trials-1>) or run it directly" >&2
    exit 2
  fi
  listing=$(m3fmarl sweep "$@" --list)  # validates the experiment first (exit 2 on bad input)
  count=$(grep -c '^[0-9]' <<<"$listing")
  echo "$listing"
  exec sbatch --array=0-$((count - 1)) "$0" "$@"
fi

task=${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}
STOPPED=3  # m3fmarl sweep's exit status after stopping on request with its trial unfinished
export M3FMARL_STOP_FILE=$PWD/.m3fmarl-stop-$task  # the request (looked for after each iteration)
rm -f "$M3FMARL_STOP_FILE"
trial_pid=""
interrupted=0
stop_asked=""
on_signal() {
  interrupted=1
  [ -n "$stop_asked" ] && [ "$1" = usr1 ] || stop_asked=$1
  echo "[array.sh] $(date '+%F %T') SIG${1^^} ($2): the trial saves its last finished iteration and stops"
  touch "$M3FMARL_STOP_FILE"
}
trap 'on_signal usr1 "time limit near or preemption announced"' USR1
trap 'on_signal term "task cancelled or preempted"' TERM

if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then
  echo "[array.sh] $(date '+%F %T') job $task picks up (run $((SLURM_RESTART_COUNT + 1))) on $(hostname -s)"
else
  echo "[array.sh] job $task on $(hostname -s)"
fi
# In the background so that the traps run at once; wait again after a trap until it exits.
m3fmarl sweep "$@" --trial-index "$SLURM_ARRAY_TASK_ID" --cpus "${SLURM_CPUS_PER_TASK:-1}" &
trial_pid=$!
while :; do
  interrupted=0
  status=0
  wait "$trial_pid" || status=$?
  [ "$interrupted" = 1 ] || break
  kill -0 "$trial_pid" 2>/dev/null && continue
  status=0
  wait "$trial_pid" || status=$?
  break
done
trap '' USR1 TERM  # the trial is over: a late signal must not recreate the stop file or kill the task
rm -f "$M3FMARL_STOP_FILE"
if [ "$status" = "$STOPPED" ] && [ "$stop_asked" = usr1 ]; then
  echo "[array.sh] $(date '+%F %T') job $task hands over: requeued; its next run continues the trial"
  scontrol requeue "$task" && exit 0
  echo "[array.sh] scontrol requeue failed: resubmit the same command" >&2
fi
exit "$status"
