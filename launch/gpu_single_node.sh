#!/usr/bin/env bash
# One machine, all of its GPUs: one process drives every visible GPU, which JAX uses as one mesh (the global batch is
# split across them; BatchNorm statistics and the contrast set span all of them).
#
# Usage: launch/gpu_single_node.sh [--num-gpus N] [--dry-run] --config CONFIG --workdir DIR [--config.KEY=VALUE ...]
#
#   --num-gpus N       use the first N GPUs (sets CUDA_VISIBLE_DEVICES; the first N of it when it is already set);
#                      default: all GPUs the process can see
#   --dry-run          print the command instead of running it (the plan check still runs)
#   --plan-target T    the GPUs, for the check that the config fits them before the run starts (launch/plan_check.sh:
#                      `python -m genscl_jax.plan`), e.g. h100-80gbx8; default: read from nvidia-smi
#   --skip-plan-check  start without that check (also GENSCL_PLAN_CHECK=off)
#   --plan-arg ARG     extra flag for the plan check, repeatable
#   -h, --help         this text
#   everything else    passed to `python -m genscl_jax.main` unchanged (--config, --workdir, --config.KEY=VALUE)
#
# Environment:
#   GENSCL_PYTHON      the Python to run (default: python, e.g. from an activated venv with jax[cuda12] installed)
#
# SIGTERM (e.g. from a scheduler) makes the run save a checkpoint and exit 0; the same command again resumes.
#
# Example:
#   launch/gpu_single_node.sh --num-gpus 4 --config configs/cifar100_resnet50.py --workdir runs/c100 \
#     --config.batch_size=1024
set -euo pipefail

PROG=$(basename "$0")
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${GENSCL_PYTHON:-python}

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "$PROG: error: $*" >&2; exit 2; }

NUM_GPUS="" DRY_RUN=0 CONFIG="" WORKDIR="" MAIN_ARGS=() PLAN_TARGET="" PLAN_CHECK=1 PLAN_ARGS=()
while [[ $# -gt 0 ]]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --num-gpus) [[ $# -ge 2 ]] || die "--num-gpus needs a value"; NUM_GPUS=$2; shift 2 ;;
    --num-gpus=*) NUM_GPUS=${1#*=}; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    --plan-target) [[ $# -ge 2 ]] || die "--plan-target needs a value"; PLAN_TARGET=$2; shift 2 ;;
    --plan-target=*) PLAN_TARGET=${1#*=}; shift ;;
    --skip-plan-check) PLAN_CHECK=0; shift ;;
    --plan-arg) [[ $# -ge 2 ]] || die "--plan-arg needs a value"; PLAN_ARGS+=("$2"); shift 2 ;;
    --plan-arg=*) PLAN_ARGS+=("${1#*=}"); shift ;;
    --config|--workdir)
      [[ $# -ge 2 && $2 != --* ]] || die "$1 needs a value"
      if [[ $1 == --config ]]; then CONFIG=$2; else WORKDIR=$2; fi
      MAIN_ARGS+=("$1" "$2"); shift 2 ;;
    --config=*) CONFIG=${1#*=}; MAIN_ARGS+=("$1"); shift ;;
    --workdir=*) WORKDIR=${1#*=}; MAIN_ARGS+=("$1"); shift ;;
    *) MAIN_ARGS+=("$1"); shift ;;
  esac
done
[[ -n $CONFIG ]] || die "--config is required, e.g. --config configs/cifar10_resnet50.py"
[[ -n $WORKDIR ]] || die "--workdir is required: the directory for checkpoints and summary.json"
[[ -f ${CONFIG%%:*} ]] || die "config file '${CONFIG%%:*}' not found (relative paths are from the current directory)"

if [[ -n $NUM_GPUS ]]; then
  [[ $NUM_GPUS =~ ^[1-9][0-9]*$ ]] || die "--num-gpus needs a positive integer, got '$NUM_GPUS'"
  if [[ -n ${CUDA_VISIBLE_DEVICES:-} ]]; then
    IFS=, read -r -a visible <<< "$CUDA_VISIBLE_DEVICES"
  elif command -v nvidia-smi >/dev/null 2>&1; then
    visible=()
    count=$(nvidia-smi -L | grep -c '^GPU ' || true)
    for ((i = 0; i < count; i++)); do visible+=("$i"); done
  else  # no way to count them here: trust the request
    visible=()
    for ((i = 0; i < NUM_GPUS; i++)); do visible+=("$i"); done
  fi
  (( NUM_GPUS <= ${#visible[@]} )) || die "--num-gpus $NUM_GPUS but only ${#visible[@]} GPU(s) visible"
  CUDA_VISIBLE_DEVICES=$(IFS=,; echo "${visible[*]:0:NUM_GPUS}")
  export CUDA_VISIBLE_DEVICES
fi

# One process: a SLURM_NTASKS > 1 inherited from an allocation would make genscl_jax.runtime.parallel wait for peers.
unset SLURM_NTASKS SLURM_NPROCS
# `-m genscl_jax.main` from any directory, while relative --config/--workdir paths stay relative to where you are.
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"

# The plan's GPU name for the model nvidia-smi reports ("NVIDIA H100 80GB HBM3" -> h100-80gb), or nothing.
gpu_name() {
  case $1 in
    *H100*80GB*) echo h100-80gb ;; *H200*) echo h200 ;; *A100*80GB*) echo a100-80gb ;; *A100*40GB*) echo a100-40gb ;;
    *" L4"*) echo l4 ;; *) echo "" ;;
  esac
}
if (( PLAN_CHECK )) && [[ ${GENSCL_PLAN_CHECK:-on} != off ]]; then
  if [[ -z $PLAN_TARGET ]] && command -v nvidia-smi >/dev/null 2>&1; then
    # The listing is read whole, once: `nvidia-smi -L | head -n 1` closes the pipe early, and under pipefail the
    # broken pipe (a traceback or exit 141 from nvidia-smi) turns a known model into a failed check.
    listing=$(nvidia-smi -L 2>/dev/null || true)
    model=${listing%%$'\n'*} name=$(gpu_name "$model")
    count=${NUM_GPUS:-$(grep -c '^GPU ' <<< "$listing" || true)}
    [[ -z $name ]] || PLAN_TARGET="${name}x$count"
  fi
  [[ -n $PLAN_TARGET ]] || die "no GPU model the plan check knows here: give --plan-target (h100-80gbxN, h200xN, a100-80gbxN, a100-40gbxN, l4xN) or --skip-plan-check"
  overrides=()
  for arg in "${MAIN_ARGS[@]}"; do [[ $arg != --config.* ]] || overrides+=("$arg"); done
  # shellcheck source=launch/plan_check.sh
  source "$REPO_ROOT/launch/plan_check.sh"
  plan_check . "$PLAN_TARGET" "$CONFIG" ${overrides[@]+"${overrides[@]}"} ${PLAN_ARGS[@]+"${PLAN_ARGS[@]}"}
fi

cmd=("$PYTHON" -m genscl_jax.main "${MAIN_ARGS[@]}")
echo "$PROG: CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-(all)} ${cmd[*]}" >&2
if (( DRY_RUN )); then
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
exec "${cmd[@]}"  # exec: SIGTERM reaches the engine directly
