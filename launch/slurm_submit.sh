#!/usr/bin/env bash
# Submits launch/slurm_multinode.sbatch with the sbatch options built from flags, after checking the arguments
# (so a typo fails now, not after hours in the queue).
#
# Usage: launch/slurm_submit.sh --nodes N --workdir SHARED_DIR [FLAGS] [--config.KEY=VALUE ...] [-- MORE_MAIN_ARGS]
#
#   --nodes N              nodes, one task (process) per node (required)
#   --workdir DIR          checkpoints and summaries on shared storage (or gs://) (required)
#   --config PATH          config file (default configs/imagenet_resnet50.py)
#   --gpus-per-node G      default 8
#   --cpus-per-task C      CPU cores for each node's process, for the input pipeline (default 16)
#   --partition P, --account A, --qos Q, --time D-HH:MM:SS, --job-name J    the usual sbatch options
#   --output PATTERN       SLURM's log file (default slurm-%x-%j.out in the current directory)
#   --sbatch-arg ARG       any other sbatch option, repeatable (e.g. --sbatch-arg=--constraint=a100)
#   --dry-run              print the sbatch command instead of submitting (the plan check still runs)
#   --gpu-type NAME        h100-80gb, h200, a100-80gb, a100-40gb or l4: before queuing, the GPU compiler checks that
#                          the config fits NAMExG on N nodes (launch/plan_check.sh: `python -m genscl_jax.plan`);
#                          required unless --skip-plan-check (or GENSCL_PLAN_CHECK=off)
#   --plan-arg ARG         extra flag for the plan check, repeatable
#   -h, --help             this text
#
# Run it from the repo root. Python: an activated venv on the shared filesystem, or GENSCL_PYTHON=/path/bin/python
# (the environment is exported to the job).
#
# Example:
#   launch/slurm_submit.sh --nodes 4 --gpus-per-node 8 --partition gpu --time 2-00:00:00 \
#     --workdir /shared/$USER/genscl/run1 --config configs/imagenet_resnet50.py --config.kd.alpha=0
set -euo pipefail

PROG=$(basename "$0")
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "$PROG: error: $*" >&2; exit 2; }
value() { [[ $# -ge 2 && $2 != --* ]] || die "$1 needs a value"; printf '%s' "$2"; }

NODES="" WORKDIR="" CONFIG="configs/imagenet_resnet50.py" GPUS=8 CPUS=16 OUTPUT="slurm-%x-%j.out" DRY_RUN=0
OPTIONAL=() EXTRA=() MAIN_ARGS=() GPU_TYPE="" PLAN_CHECK=1 PLAN_ARGS=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --config.*) MAIN_ARGS+=("$1"); shift; continue ;;
    --) shift; MAIN_ARGS+=("$@"); break ;;
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;;
  esac
  case $1 in
    -h|--help) usage; exit 0 ;;
    --nodes) NODES=$(value "$@"); shift 2 ;;
    --workdir) WORKDIR=$(value "$@"); shift 2 ;;
    --config) CONFIG=$(value "$@"); shift 2 ;;
    --gpus-per-node) GPUS=$(value "$@"); shift 2 ;;
    --cpus-per-task) CPUS=$(value "$@"); shift 2 ;;
    --partition|--account|--qos|--time|--job-name) OPTIONAL+=("$1=$(value "$@")"); shift 2 ;;
    --output) OUTPUT=$(value "$@"); shift 2 ;;
    --sbatch-arg) [[ $# -ge 2 ]] || die "--sbatch-arg needs a value"; EXTRA+=("$2"); shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --gpu-type) GPU_TYPE=$(value "$@"); shift 2 ;;
    --skip-plan-check) PLAN_CHECK=0; shift ;;
    --plan-arg) [[ $# -ge 2 ]] || die "--plan-arg needs a value"; PLAN_ARGS+=("$2"); shift 2 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

[[ -n $NODES ]] || die "--nodes is required"
[[ $NODES =~ ^[1-9][0-9]*$ ]] || die "--nodes needs a positive integer, got '$NODES'"
[[ $GPUS =~ ^[1-9][0-9]*$ ]] || die "--gpus-per-node needs a positive integer, got '$GPUS'"
[[ $CPUS =~ ^[1-9][0-9]*$ ]] || die "--cpus-per-task needs a positive integer, got '$CPUS'"
[[ -n $WORKDIR ]] || die "--workdir is required: a directory on shared storage (or gs://)"
case $WORKDIR in /tmp/*|/var/tmp/*|/dev/shm/*) die "--workdir $WORKDIR is node-local: use shared storage so every node and a requeued job see it" ;; esac
[[ -f ${CONFIG%%:*} ]] || die "config file '${CONFIG%%:*}' not found (run from the repo root or give an absolute path)"
if (( ! DRY_RUN )) && ! command -v sbatch >/dev/null 2>&1; then die "sbatch not found: run this on a SLURM login node"; fi

if (( PLAN_CHECK )) && [[ ${GENSCL_PLAN_CHECK:-on} != off ]]; then
  [[ -n $GPU_TYPE ]] || die "--gpu-type is required for the check that the config fits the GPUs before queuing (h100-80gb, h200, a100-80gb, a100-40gb, l4), or --skip-plan-check"
  overrides=()
  for arg in ${MAIN_ARGS[@]+"${MAIN_ARGS[@]}"}; do [[ $arg != --config.* ]] || overrides+=("$arg"); done
  # shellcheck source=launch/plan_check.sh
  source "$REPO_ROOT/launch/plan_check.sh"
  plan_check . "${GPU_TYPE}x$GPUS,hosts=$NODES" "$CONFIG" ${overrides[@]+"${overrides[@]}"} ${PLAN_ARGS[@]+"${PLAN_ARGS[@]}"}
fi

cmd=(sbatch "--nodes=$NODES" --ntasks-per-node=1 "--gpus-per-node=$GPUS" "--cpus-per-task=$CPUS"
     "--output=$OUTPUT" "--export=ALL,GENSCL_REPO=$REPO_ROOT"
     ${OPTIONAL[@]+"${OPTIONAL[@]}"} ${EXTRA[@]+"${EXTRA[@]}"}
     "$REPO_ROOT/launch/slurm_multinode.sbatch" --config "$CONFIG" --workdir "$WORKDIR" ${MAIN_ARGS[@]+"${MAIN_ARGS[@]}"})
if (( DRY_RUN )); then
  printf '+'; printf ' %q' "${cmd[@]}"; printf '\n'
  exit 0
fi
exec "${cmd[@]}"
