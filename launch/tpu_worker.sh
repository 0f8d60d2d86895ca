#!/usr/bin/env bash
# Runs on each Cloud TPU VM worker; launch/tpu_vm.sh calls it there through `gcloud ... ssh --worker=...`.
#
# Usage: bash launch/tpu_worker.sh COMMAND [ARGS]
#
# Commands:
#   setup [--python-bin PY]   make REPO/.venv (Python >= 3.11: python3.12/3.11, else apt-get install python3.11),
#                             pip install -r requirements.txt, then pip install -U "jax[tpu]"
#   start -- CMD [ARGS...]    run CMD (e.g. python -m genscl_jax.main ...) from the repo root, detached from the ssh
#                             session, with the venv on PATH; its output goes to $GENSCL_RUN_DIR/run-TIME.log.
#                             On a multi-host slice it sets JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
#                             JAX_PROCESS_ID from the VM's metadata (worker 0 coordinates), so that
#                             genscl_jax.runtime.parallel starts jax.distributed on every worker.
#   follow                    print the current run's log until the run ends; exit with its exit code
#   status                    one line: running, finished (exit code) or no run
#   stop                      SIGTERM the run: the engine saves a checkpoint and exits 0
#
# Environment:
#   GENSCL_RUN_DIR            logs and run state (default ~/genscl_jax_run)
#   GENSCL_VENV               venv put first on PATH for the run (default REPO/.venv)
#   GENSCL_TPU_METADATA_URL   metadata attributes URL (default: the GCE metadata server's instance attributes)
set -euo pipefail

PROG=$(basename "$0")
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN_DIR=${GENSCL_RUN_DIR:-$HOME/genscl_jax_run}
VENV=${GENSCL_VENV:-$REPO_ROOT/.venv}
METADATA_URL=${GENSCL_TPU_METADATA_URL:-http://metadata.google.internal/computeMetadata/v1/instance/attributes}
SUPERVISOR_PID=$RUN_DIR/supervisor.pid  # the bash that waits for the run and records its exit code
CHILD_PID=$RUN_DIR/run.pid
EXIT_CODE=$RUN_DIR/exit_code
CURRENT_LOG=$RUN_DIR/current_log

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "$PROG ($(hostname)): error: $*" >&2; exit 2; }
alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

setup() {
  local py=""
  while [[ $# -gt 0 ]]; do
    case $1 in --python-bin) py=${2:?--python-bin needs a value}; shift 2 ;; *) die "setup: unknown argument $1" ;; esac
  done
  if [[ -z $py ]]; then
    for candidate in python3.12 python3.11; do
      if command -v "$candidate" >/dev/null; then py=$candidate; break; fi
    done
  fi
  if [[ -z $py ]]; then  # TPU VM images are Ubuntu 22.04 with Python 3.10; the project needs 3.11 or newer
    echo "$(hostname): installing python3.11 with apt-get"
    sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq python3.11 python3.11-venv
    py=python3.11
  fi
  cd "$REPO_ROOT"
  [[ -x $VENV/bin/python ]] || "$py" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q -U pip
  "$VENV/bin/python" -m pip install -q -r requirements.txt
  "$VENV/bin/python" -m pip install -q -U "jax[tpu]"
  "$VENV/bin/python" -c 'import sys, jax, flax; print(sys.version.split()[0], "jax", jax.__version__, "flax", flax.__version__)' \
    | sed "s/^/$(hostname): ready: python /"
}

metadata() { curl -sf --max-time 5 -H 'Metadata-Flavor: Google' "$METADATA_URL/$1"; }

# Multi-host slices: tell genscl_jax.runtime.parallel (JAX_* variables) how to reach worker 0. The shell that gcloud ssh
# opens has no TPU_WORKER_HOSTNAMES, so without this each worker would start alone.
export_distributed_env() {
  [[ -z ${JAX_COORDINATOR_ADDRESS:-} ]] || return 0
  local endpoints worker hosts count
  endpoints=$(metadata worker-network-endpoints) || return 0  # not on a TPU VM: a single process
  worker=$(metadata agent-worker-number) || return 0
  # Each entry is a hostname or name:id:ip; workers are listed in worker order.
  hosts=$(tr ',' '\n' <<< "$endpoints" | awk -F: 'NF { print $NF }')
  count=$(grep -c . <<< "$hosts")
  (( count > 1 )) || return 0
  JAX_COORDINATOR_ADDRESS="$(head -n 1 <<< "$hosts"):${JAX_COORDINATOR_PORT:-8482}"
  export JAX_COORDINATOR_ADDRESS JAX_NUM_PROCESSES=$count JAX_PROCESS_ID=$worker
}

start() {
  [[ ${1:-} == -- ]] && shift
  [[ $# -gt 0 ]] || die "start needs a command after --"
  mkdir -p "$RUN_DIR"
  if alive "$SUPERVISOR_PID"; then
    die "a run is already going here (pid $(cat "$SUPERVISOR_PID"), log $(cat "$CURRENT_LOG")); follow it with 'tpu_vm.sh logs' or stop it with 'tpu_vm.sh stop'"
  fi
  rm -f "$SUPERVISOR_PID" "$CHILD_PID" "$EXIT_CODE"
  local log
  log=$RUN_DIR/run-$(date +%Y%m%d-%H%M%S).log
  echo "$log" > "$CURRENT_LOG"
  export_distributed_env
  [[ ! -d $VENV/bin ]] || export PATH="$VENV/bin:$PATH"
  cd "$REPO_ROOT"
  # setsid + nohup: the run outlives the ssh session that started it.
  nohup setsid bash "$REPO_ROOT/launch/$PROG" _supervise "$@" > "$log" 2>&1 < /dev/null &
  local waited=0
  until [[ -f $SUPERVISOR_PID ]]; do
    sleep 0.1; waited=$((waited + 1))
    (( waited < 100 )) || die "the run did not start; see $log"
  done
  echo "$(hostname): started ${JAX_PROCESS_ID:+process $JAX_PROCESS_ID of $JAX_NUM_PROCESSES }(log $log): $*"
}

# Runs the command, forwards SIGTERM/SIGINT/SIGHUP to it as SIGTERM, and records its exit code.
_supervise() {
  echo "=== $(date -Is) $(hostname): $*"
  "$@" &
  local child=$! rc
  echo "$child" > "$CHILD_PID"
  trap 'kill -TERM "$child" 2>/dev/null || true' TERM INT HUP
  echo $$ > "$SUPERVISOR_PID"
  while true; do
    rc=0; wait "$child" || rc=$?
    kill -0 "$child" 2>/dev/null || break  # still alive: wait was interrupted by a forwarded signal
  done
  echo "$rc" > "$EXIT_CODE"
  echo "=== $(date -Is) exit code $rc"
}

follow() {
  [[ -f $CURRENT_LOG ]] || die "no run was started on this worker"
  local log rc
  log=$(cat "$CURRENT_LOG")
  if alive "$SUPERVISOR_PID"; then
    tail -n +1 -F --pid="$(cat "$SUPERVISOR_PID")" "$log" 2>/dev/null
  else
    cat "$log"
  fi
  if [[ ! -s $EXIT_CODE ]]; then
    echo "$PROG ($(hostname)): the run ended without an exit code (killed, or the VM is going down)" >&2
    return 1
  fi
  rc=$(cat "$EXIT_CODE")
  return "$rc"
}

status() {
  local host
  host=$(hostname)
  if [[ ! -f $CURRENT_LOG ]]; then echo "$host: no run"
  elif alive "$SUPERVISOR_PID"; then echo "$host: running (pid $(cat "$CHILD_PID"), log $(cat "$CURRENT_LOG"))"
  elif [[ -s $EXIT_CODE ]]; then echo "$host: finished, exit code $(cat "$EXIT_CODE") (log $(cat "$CURRENT_LOG"))"
  else echo "$host: ended without an exit code (log $(cat "$CURRENT_LOG"))"
  fi
}

stop() {
  if alive "$CHILD_PID"; then
    kill -TERM "$(cat "$CHILD_PID")"
    echo "$(hostname): sent SIGTERM; the run saves a checkpoint and exits"
  else
    echo "$(hostname): no run is going"
  fi
}

case ${1:-} in
  setup|start|follow|status|stop|_supervise) cmd=$1; shift; "$cmd" "$@" ;;
  -h|--help) usage ;;
  *) die "unknown command '${1:-}': expected setup, start, follow, status or stop" ;;
esac
