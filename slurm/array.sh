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
#SBATCH --job-name=m3fmarl-trial
#SBATCH --cpus-per-task=1
#SBATCH --mem-per-cpu=3G
#SBATCH --time=24:00:00
#SBATCH --output=slurm-trial-%A_%a.out
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: slurm/array.sh EXPERIMENT.yaml [EXPERIMENT.yaml ...] [--budget smoke|reduced|paper] [--out DIR]" >&2
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

echo "[array.sh] job ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} on $(hostname -s)"
exec m3fmarl sweep "$@" --trial-index "$SLURM_ARRAY_TASK_ID" --cpus "${SLURM_CPUS_PER_TASK:-1}"
