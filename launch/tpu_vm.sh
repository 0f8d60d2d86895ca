#!/usr/bin/env bash
# Cloud TPU VM lifecycle for genscl_jax: create a slice, install the project on every worker, run, follow, delete.
#
# Usage: launch/tpu_vm.sh COMMAND [FLAGS] [--config.KEY=VALUE ...] [-- MORE_MAIN_ARGS ...]
#
# Commands:
#   create    create the TPU VM slice (gcloud compute tpus tpu-vm create; with --queued, a queued resource, waited
#             for until it is ACTIVE)
#   install   copy this working tree (or git clone --repo-url) to every worker, then make a venv there with
#             pip install -r requirements.txt and pip install -U "jax[tpu]"
#   run       start `python -m genscl_jax.main --config CONFIG --workdir WORKDIR ...` on every worker (detached,
#             so a dropped ssh connection does not stop training) and stream worker 0's log until it ends
#   logs      stream the log of the current (or last) run of one worker (default 0) until the run ends
#   status    the slice's state and, per worker, whether the run is going or how it ended
#   stop      SIGTERM the run on every worker: it saves a checkpoint and exits 0; `run` again resumes
#   delete    delete the slice (no prompt; with --queued, the queued resource and its slice)
#   all       create + install + run + delete; deletes only once WORKDIR/summary.json is in the bucket (the run
#             finished) or when install failed (nothing ran); otherwise keeps the slice and says so; --keep: never
#
# Flags:
#   --name NAME                 TPU VM name (required)
#   --zone ZONE                 e.g. us-central2-b (v4), us-west4-a (v5e), us-east5-a (v5p), us-east5-b (v6e) (required)
#   --project PROJECT           Google Cloud project (default: gcloud's configured project)
#   --accelerator-type TYPE     v4-N, v5litepod-N (v5e), v5p-N or v6e-N (required by create and all; run uses it
#                               to tell single- from multi-host slices and asks gcloud when it is missing)
#   --version VERSION           TPU software (runtime) version; default per generation:
#                                 v4 tpu-ubuntu2204-base, v5litepod v2-alpha-tpuv5-lite,
#                                 v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e
#   --spot                      spot capacity (cheap, preemptible); default on-demand
#   --queued                    create through a queued resource (gcloud compute tpus queued-resources create, id
#                               and node id NAME) and wait until it is ACTIVE; delete (and recreation after a
#                               preemption) deletes the queued resource with its slice. Pass it to every command
#                               that creates or deletes. Bound the wait with --create-arg=--valid-until-duration=6h
#   --create-arg ARG            extra flag for `gcloud ... create`, repeatable (e.g. --create-arg=--reserved)
#   --ssh-arg ARG               extra flag for every `gcloud ... tpu-vm ssh` and `scp`, repeatable (e.g.
#                               --ssh-arg=--internal-ip, --ssh-arg=--tunnel-through-iap)
#   --repo-url URL [--ref REF]  install: git clone URL (at branch/tag REF) on the workers instead of copying
#   --remote-dir DIR            repo location on the workers, relative to the home directory (default genscl_jax)
#   --python-bin PY             install: interpreter for the workers' venv (default: python3.12/3.11, apt if absent)
#   --config PATH               config file, relative to the repo root (default configs/imagenet_resnet50.py)
#   --workdir gs://BUCKET/DIR   checkpoints and summaries (required by run and all; gs:// on multi-host slices
#                               and with all, which deletes the slice)
#   --tfds-data-dir gs://...    TFDS_DATA_DIR on the workers (default: $TFDS_DATA_DIR here, if set)
#   --env KEY=VALUE             extra environment variable for the run on the workers, repeatable
#   --config.KEY=VALUE          config override passed to genscl_jax.main, as is everything after --
#   --retry-on-preemption N     run/all: when the slice is preempted, delete and recreate it, install, and rerun
#                               with the same workdir (which resumes) up to N times (default 0)
#   --detach                    run: start and return; follow later with `logs`
#   --worker W                  logs: worker index or all (default 0)
#   --keep                      all: do not delete the slice at the end
#   --dry-run                   print every gcloud command instead of running it (the plan check still runs)
#   --skip-plan-check           create/all: do not check first that the config fits the slice (launch/plan_check.sh:
#                               `python -m genscl_jax.plan` for --accelerator-type, with --config and its overrides;
#                               create checks only when --config is given). Also GENSCL_PLAN_CHECK=off
#   --plan-arg ARG              extra flag for the plan check, repeatable (e.g. --plan-arg=--device-memory-gb=15)
#   -h, --help                  this text
#
# Preemption: the engine saves a checkpoint on SIGTERM and exits 0, and a run with the same --workdir resumes from
# it. After a spot preemption, `launch/tpu_vm.sh create ...`, `install ...` and `run ...` again with the same
# --workdir continue the run; --retry-on-preemption N does exactly that automatically.
#
# Example:
#   launch/tpu_vm.sh all --name genscl-v4 --zone us-central2-b --project my-proj --accelerator-type v4-32 --spot \
#     --workdir gs://my-bucket/genscl/run1 --tfds-data-dir gs://my-bucket/tensorflow_datasets \
#     --retry-on-preemption 5 --config.kd.alpha=0
set -euo pipefail

PROG=$(basename "$0")
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
EXIT_USAGE=2
EXIT_PREEMPTED=75

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "$PROG: error: $*" >&2; exit "$EXIT_USAGE"; }
note() { echo "$PROG: $*" >&2; }

# ---------------------------------------------------------------------------------------------------- arguments
COMMAND=""
NAME="" ZONE="" PROJECT="" ACCELERATOR="" VERSION="" SPOT=0 QUEUED=0 DRY_RUN=0 DETACH=0 KEEP=0 PLAN_CHECK=1
CONFIG_GIVEN=0 PLAN_ARGS=()
REPO_URL="" REF="" REMOTE_DIR="genscl_jax" PYTHON_BIN=""
CONFIG="configs/imagenet_resnet50.py" WORKDIR="" TFDS_DIR="${TFDS_DATA_DIR:-}" RETRIES=0 WORKER=0
CREATE_ARGS=() SSH_ARGS=() ENV_ARGS=() MAIN_ARGS=()

# Prints the value of flag $1 (the next argument) or fails with one line.
value() { [[ $# -ge 2 && $2 != --* ]] || die "$1 needs a value"; printf '%s' "$2"; }

while [[ $# -gt 0 ]]; do
  case $1 in
    --config.*) MAIN_ARGS+=("$1"); shift; continue ;;
    --) shift; MAIN_ARGS+=("$@"); break ;;
    --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;;  # --flag=value -> --flag value
  esac
  case $1 in
    -h|--help) usage; exit 0 ;;
    --name) NAME=$(value "$@"); shift 2 ;;
    --zone) ZONE=$(value "$@"); shift 2 ;;
    --project) PROJECT=$(value "$@"); shift 2 ;;
    --accelerator-type) ACCELERATOR=$(value "$@"); shift 2 ;;
    --version) VERSION=$(value "$@"); shift 2 ;;
    --spot) SPOT=1; shift ;;
    --queued) QUEUED=1; shift ;;
    --create-arg) [[ $# -ge 2 ]] || die "--create-arg needs a value"; CREATE_ARGS+=("$2"); shift 2 ;;
    --ssh-arg) [[ $# -ge 2 ]] || die "--ssh-arg needs a value"; SSH_ARGS+=("$2"); shift 2 ;;
    --repo-url) REPO_URL=$(value "$@"); shift 2 ;;
    --ref) REF=$(value "$@"); shift 2 ;;
    --remote-dir) REMOTE_DIR=$(value "$@"); shift 2 ;;
    --python-bin) PYTHON_BIN=$(value "$@"); shift 2 ;;
    --config) CONFIG=$(value "$@"); CONFIG_GIVEN=1; shift 2 ;;
    --skip-plan-check) PLAN_CHECK=0; shift ;;
    --plan-arg) [[ $# -ge 2 ]] || die "--plan-arg needs a value"; PLAN_ARGS+=("$2"); shift 2 ;;
    --workdir) WORKDIR=$(value "$@"); shift 2 ;;
    --tfds-data-dir) TFDS_DIR=$(value "$@"); shift 2 ;;
    --env) ENV_ARGS+=("$(value "$@")"); shift 2 ;;
    --retry-on-preemption) RETRIES=$(value "$@"); shift 2 ;;
    --detach) DETACH=1; shift ;;
    --worker) WORKER=$(value "$@"); shift 2 ;;
    --keep) KEEP=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -*) die "unknown flag $1 (see --help)" ;;
    *) [[ -z $COMMAND ]] || die "unexpected argument '$1' (see --help)"; COMMAND=$1; shift ;;
  esac
done

# ---------------------------------------------------------------------------------------------------- validation
GENERATION="" SIZE=0 HOSTS=0  # HOSTS=0: unknown

# Sets GENERATION, SIZE, HOSTS and the default VERSION from an accelerator type, or fails with one line.
parse_accelerator() {
  local type=$1
  if [[ $type =~ ^v5e-([0-9]+)$ ]]; then
    die "v5e slices are called v5litepod-N by gcloud: use --accelerator-type=v5litepod-${BASH_REMATCH[1]}"
  fi
  [[ $type =~ ^(v4|v5litepod|v5p|v6e)-([0-9]+)$ ]] \
    || die "unknown accelerator type '$type': expected v4-N, v5litepod-N (v5e), v5p-N or v6e-N"
  GENERATION=${BASH_REMATCH[1]}
  SIZE=$((10#${BASH_REMATCH[2]}))
  case $GENERATION in
    v4|v5p)  # N counts TensorCores: 2 per chip, 4 chips (8 cores) per host
      (( SIZE >= 8 && SIZE % 8 == 0 )) || die "$type: $GENERATION sizes are multiples of 8 (TensorCores), e.g. ${GENERATION}-8, ${GENERATION}-32"
      HOSTS=$((SIZE / 8)) ;;
    v5litepod|v6e)  # N counts chips: up to 8 on one host, 4 per host beyond
      case $SIZE in 1|4|8) HOSTS=1 ;; 16|32|64|128|256) HOSTS=$((SIZE / 4)) ;;
        *) die "$type: $GENERATION sizes are 1, 4, 8, 16, 32, 64, 128 or 256 (chips)" ;; esac ;;
  esac
  if [[ -z $VERSION ]]; then
    case $GENERATION in
      v4) VERSION=tpu-ubuntu2204-base ;;
      v5litepod) VERSION=v2-alpha-tpuv5-lite ;;
      v5p) VERSION=v2-alpha-tpuv5 ;;
      v6e) VERSION=v2-alpha-tpuv6e ;;
    esac
  fi
}

require() {  # require FLAG VALUE: the flag must be set for this command
  [[ -n $2 ]] || die "$COMMAND needs $1 (see --help)"
}

[[ -n $COMMAND ]] || die "no command given: create, install, run, logs, status, stop, delete or all (see --help)"
case $COMMAND in create|install|run|logs|status|stop|delete|all) ;;
  *) die "unknown command '$COMMAND': expected create, install, run, logs, status, stop, delete or all" ;; esac
require --name "$NAME"
require --zone "$ZONE"
[[ $NAME =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] || die "--name '$NAME': lowercase letters, digits and '-', starting with a letter"
[[ $RETRIES =~ ^[0-9]+$ ]] || die "--retry-on-preemption needs a count, got '$RETRIES'"
[[ $WORKER =~ ^([0-9]+|all)$ ]] || die "--worker needs a worker index or all, got '$WORKER'"
if [[ $COMMAND == create || $COMMAND == all ]]; then require --accelerator-type "$ACCELERATOR"; fi
if [[ $COMMAND == all ]] && (( DETACH )); then die "all cannot --detach: it deletes the slice when the run ends (use create, install, run --detach)"; fi
if [[ -n $ACCELERATOR ]]; then parse_accelerator "$ACCELERATOR"; fi
if [[ $COMMAND == run || $COMMAND == all ]]; then
  require --workdir "$WORKDIR"
  [[ -f $REPO_ROOT/${CONFIG%%:*} ]] || die "config '${CONFIG%%:*}' not found under $REPO_ROOT (it is relative to the repo root)"
  if (( RETRIES > 0 )) && [[ -z $ACCELERATOR ]]; then
    die "--retry-on-preemption needs --accelerator-type to recreate the slice"
  fi
  if [[ $COMMAND == all && $WORKDIR != gs://* ]]; then
    die "all deletes the slice at the end, and --workdir $WORKDIR would be on it: use a gs:// workdir (or create, install and run yourself)"
  fi
  if [[ $WORKDIR != gs://* && $HOSTS -ne 1 && -n $ACCELERATOR ]]; then
    die "--workdir must be a gs:// path on multi-host slice $ACCELERATOR ($HOSTS hosts): every worker reads and writes the same checkpoints"
  fi
fi
for kv in ${ENV_ARGS[@]+"${ENV_ARGS[@]}"}; do
  [[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env needs KEY=VALUE, got '$kv'"
done
if (( ! DRY_RUN )) && ! command -v gcloud >/dev/null 2>&1; then
  die "gcloud not found on PATH: install the Google Cloud CLI and run 'gcloud auth login'"
fi

# ---------------------------------------------------------------------------------------------------- gcloud
# Shell-quotes words for a command line: plain words as they are, others in single quotes.
quote() {
  local out="" word q="'"
  for word in "$@"; do
    if [[ $word =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then out+=" $word"; else out+=" '${word//$q/$q\\$q$q}'"; fi
  done
  printf '%s' "${out# }"
}

# Every side effect goes through x: --dry-run prints the command instead.
x() {
  if (( DRY_RUN )); then
    echo "+ $(quote "$@")"
    return 0
  fi
  "$@"
}

TPU=(gcloud compute tpus tpu-vm)
QUEUED_RESOURCES=(gcloud compute tpus queued-resources)
LOCATION=("--zone=$ZONE")
[[ -z $PROJECT ]] || LOCATION+=("--project=$PROJECT")

# ssh WORKER COMMAND: run a shell command on one worker or all of them.
ssh_workers() { x "${TPU[@]}" ssh "$NAME" "${LOCATION[@]}" "--worker=$1" ${SSH_ARGS[@]+"${SSH_ARGS[@]}"} --command "$2"; }

# The TPU's state (READY, PREEMPTED, ...), MISSING when it does not exist, UNKNOWN when gcloud fails otherwise
# (network, credentials): never a reason to delete and recreate a slice.
tpu_state() {
  local state errors
  errors=$(mktemp "${TMPDIR:-/tmp}/genscl_tpu_state.XXXXXX")
  if state=$("${TPU[@]}" describe "$NAME" "${LOCATION[@]}" "--format=value(state)" 2>"$errors"); then
    echo "${state:-UNKNOWN}"
  elif grep -q "NOT_FOUND" "$errors"; then
    echo MISSING
  else
    echo UNKNOWN
  fi
  rm -f "$errors"
}

gone() { case $1 in PREEMPTED|TERMINATED|STOPPED|MISSING) return 0 ;; *) return 1 ;; esac; }

# Polls the state until the slice is gone or GENSCL_PREEMPTION_POLLS polls (every GENSCL_POLL_S s) have passed.
wait_until_gone() {
  local state=$1 polls=${GENSCL_PREEMPTION_POLLS:-12}
  while ! gone "$state" && (( polls > 0 )); do
    sleep "${GENSCL_POLL_S:-15}"
    polls=$((polls - 1))
    state=$(tpu_state)
  done
  echo "$state"
}

# The engine writes summary.json only when the run finished (not when it stopped on SIGTERM).
run_finished() {
  [[ $WORKDIR == gs://* ]] || return 0  # a local workdir is on the TPU VM: taken on trust (all refuses one)
  if (( DRY_RUN )); then x gcloud storage ls "${WORKDIR%/}/summary.json"; return; fi
  gcloud storage ls "${WORKDIR%/}/summary.json" >/dev/null 2>&1
}


do_create() {
  local cmd=("${TPU[@]}" create "$NAME" "${LOCATION[@]}" "--accelerator-type=$ACCELERATOR" "--version=$VERSION")
  (( ! QUEUED )) || cmd=("${QUEUED_RESOURCES[@]}" create "$NAME" "--node-id=$NAME" "${LOCATION[@]}"
                         "--accelerator-type=$ACCELERATOR" "--runtime-version=$VERSION")
  (( SPOT )) && cmd+=(--spot)
  cmd+=(${CREATE_ARGS[@]+"${CREATE_ARGS[@]}"})
  local capacity=on-demand
  (( ! SPOT )) || capacity=spot
  (( ! QUEUED )) || capacity+=", queued"
  note "creating $NAME: $ACCELERATOR ($HOSTS host(s)), $VERSION, $capacity, $ZONE"
  x "${cmd[@]}" || return
  (( ! QUEUED )) || wait_until_active
}

# A queued resource waits for capacity (WAITING_FOR_RESOURCES), then PROVISIONING, then ACTIVE: its slice exists.
# FAILED (e.g. --valid-until-duration passed) and SUSPENDED (preempted) end the wait with an error.
wait_until_active() {
  local state="" previous="" errors
  if (( DRY_RUN )); then x "${QUEUED_RESOURCES[@]}" describe "$NAME" "${LOCATION[@]}" "--format=value(state.state)"; return; fi
  errors=$(mktemp "${TMPDIR:-/tmp}/genscl_qr_state.XXXXXX")
  while true; do
    state=$("${QUEUED_RESOURCES[@]}" describe "$NAME" "${LOCATION[@]}" "--format=value(state.state)" 2>"$errors") \
      || state="UNKNOWN ($(head -c 300 "$errors"))"
    [[ $state == "$previous" ]] || note "queued resource $NAME: $state"
    previous=$state
    case $state in
      ACTIVE) rm -f "$errors"; return 0 ;;
      FAILED|SUSPENDED|SUSPENDING|DELETING)
        rm -f "$errors"
        note "queued resource $NAME is $state, no slice will come of it; see: gcloud compute tpus queued-resources describe $NAME --zone $ZONE; then $PROG delete --queued --name $NAME --zone $ZONE"
        return 1 ;;
    esac
    sleep "${GENSCL_POLL_S:-15}"
  done
}

do_install() {
  local dir setup
  dir=$(quote "$REMOTE_DIR")
  setup="bash $dir/launch/tpu_worker.sh setup"
  [[ -z $PYTHON_BIN ]] || setup+=" --python-bin $(quote "$PYTHON_BIN")"
  if [[ -n $REPO_URL ]]; then
    local clone="git clone --depth=1" fetch
    [[ -z $REF ]] || clone+=" --branch $(quote "$REF")"
    fetch="git -C $dir fetch --depth=1 origin $(quote "${REF:-HEAD}") && git -C $dir checkout --force FETCH_HEAD"
    note "installing $REPO_URL${REF:+ at $REF} on every worker of $NAME"
    ssh_workers all "set -e; if [ -d $dir/.git ]; then $fetch; else $clone $(quote "$REPO_URL") $dir; fi; $setup"
    return
  fi
  # Copy the working tree as it is (tracked and untracked files, not what .gitignore ignores: .venv, runs/).
  local tarball remote_tar=/tmp/genscl_jax_src.tar.gz
  if (( DRY_RUN )); then
    tarball=${TMPDIR:-/tmp}/genscl_jax_src.XXXXXX
    echo "# pack $REPO_ROOT (git ls-files --cached --others --exclude-standard) into $tarball"
  else
    tarball=$(mktemp "${TMPDIR:-/tmp}/genscl_jax_src.XXXXXX")
    # shellcheck disable=SC2064  # expand now: the trap must remove this very file
    trap "rm -f '$tarball'" EXIT
    pack_tree "$tarball" || return
  fi
  note "copying $REPO_ROOT to every worker of $NAME and installing"
  x "${TPU[@]}" scp "$tarball" "$NAME:$remote_tar" "${LOCATION[@]}" --worker=all ${SSH_ARGS[@]+"${SSH_ARGS[@]}"} || return
  rm -f "$tarball"
  trap - EXIT
  ssh_workers all "set -e; mkdir -p $dir; tar -xzf $remote_tar -C $dir; rm -f $remote_tar; $setup"
}

pack_tree() {
  if git -C "$REPO_ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$REPO_ROOT" && git ls-files -z --cached --others --exclude-standard \
      | while IFS= read -r -d '' f; do if [[ -e $f ]]; then printf '%s\0' "$f"; fi; done \
      | tar --null -T - -czf "$1")
  else
    tar -C "$REPO_ROOT" --exclude=.venv --exclude=.git --exclude=__pycache__ --exclude=runs -czf "$1" .
  fi
}

# The remote command that starts the run detached on a worker; the engine command is spelled out in full.
start_command() {
  local cmd prefix="" kv
  [[ -z $TFDS_DIR ]] || prefix+="TFDS_DATA_DIR=$(quote "$TFDS_DIR") "
  for kv in ${ENV_ARGS[@]+"${ENV_ARGS[@]}"}; do prefix+="${kv%%=*}=$(quote "${kv#*=}") "; done
  cmd=$(quote python -m genscl_jax.main --config "$CONFIG" --workdir "$WORKDIR" ${MAIN_ARGS[@]+"${MAIN_ARGS[@]}"})
  printf '%sbash %s/launch/tpu_worker.sh start -- %s' "$prefix" "$(quote "$REMOTE_DIR")" "$cmd"
}

follow_command() { printf 'bash %s/launch/tpu_worker.sh follow' "$(quote "$REMOTE_DIR")"; }

# Starts the run on all workers and follows worker 0; returns the run's exit code (255: the ssh stream broke).
start_and_follow() {
  ssh_workers all "$(start_command)" || return
  if (( DETACH )); then
    note "started; follow it with: $PROG logs --name $NAME --zone $ZONE${PROJECT:+ --project $PROJECT}"
    return 0
  fi
  ssh_workers 0 "$(follow_command)"
}

do_run() {
  if [[ -z $ACCELERATOR ]]; then  # single- or multi-host decides whether a local workdir can work
    local type=""
    if (( DRY_RUN )); then x "${TPU[@]}" describe "$NAME" "${LOCATION[@]}" "--format=value(acceleratorType)"
    else type=$("${TPU[@]}" describe "$NAME" "${LOCATION[@]}" "--format=value(acceleratorType)") \
      || die "cannot describe TPU $NAME in $ZONE: does it exist? (create it first)"; fi
    if [[ -n $type ]]; then ACCELERATOR=${type##*/}; parse_accelerator "$ACCELERATOR"; fi
  fi
  if [[ $WORKDIR != gs://* ]]; then
    (( HOSTS == 1 )) || die "--workdir must be a gs:// path on a multi-host slice ${ACCELERATOR:-(unknown size)}: every worker reads and writes the same checkpoints"
    note "warning: local --workdir $WORKDIR lives on the TPU VM's disk and is lost when the VM is preempted or deleted"
  fi
  [[ -n $TFDS_DIR || $CONFIG != *imagenet* ]] \
    || note "warning: no --tfds-data-dir (TFDS_DATA_DIR): ImageNet is read from ~/tensorflow_datasets on each worker"

  local attempt=0 rc state
  while true; do
    rc=0; start_and_follow || rc=$?
    if (( DRY_RUN || DETACH )); then return "$rc"; fi
    state=$(tpu_state)
    if (( rc == 0 )) && ! gone "$state"; then
      if run_finished; then return 0; fi
      # Exit 0 without summary.json: the run stopped on SIGTERM after saving a checkpoint. A spot preemption
      # notice does that while the slice still reads READY, so give the preemption time to show.
      if (( attempt < RETRIES )); then state=$(wait_until_gone "$state"); fi
      if ! gone "$state"; then
        note "the run stopped before the end (SIGTERM: stop, maintenance or preemption) with a checkpoint in $WORKDIR: run again with the same --workdir to resume"
        return "$EXIT_PREEMPTED"
      fi
    fi
    if ! gone "$state"; then
      if (( rc == 255 )); then
        note "lost the log stream (ssh exit 255) while $NAME is $state; the run may still be going: $PROG logs --name $NAME --zone $ZONE"
      elif [[ $state == UNKNOWN ]]; then
        note "the run ended with exit code $rc and gcloud cannot tell the state of $NAME; check: $PROG status --name $NAME --zone $ZONE"
      fi
      return "$rc"
    fi
    if (( attempt >= RETRIES )); then
      note "$NAME was preempted (state $state); the last checkpoint is in $WORKDIR: create, install and run again with the same --workdir to resume"
      return "$EXIT_PREEMPTED"
    fi
    attempt=$((attempt + 1))
    note "$NAME was preempted (state $state): recreating it and resuming from $WORKDIR (retry $attempt of $RETRIES)"
    # Explicit returns: `all` calls this where set -e does not apply. A queued resource outlives its preempted
    # slice (SUSPENDED) and holds the name: it goes too.
    if (( QUEUED )); then do_delete || return
    elif [[ $state != MISSING ]]; then do_delete || return; fi
    do_create || return
    do_install || return
  done
}

do_delete() {
  if (( QUEUED )); then
    note "deleting queued resource $NAME and its slice"
    x "${QUEUED_RESOURCES[@]}" delete "$NAME" "${LOCATION[@]}" --force --quiet
  else
    note "deleting $NAME"
    x "${TPU[@]}" delete "$NAME" "${LOCATION[@]}" --quiet
  fi
}

do_all() {
  do_create || return
  local rc=0 ran=0 how_to_delete="$PROG delete"
  (( ! QUEUED )) || how_to_delete+=" --queued"
  how_to_delete+=" --name $NAME --zone $ZONE${PROJECT:+ --project $PROJECT}"
  # Ctrl-C leaves the slice (and a run on it) alone rather than deleting it under a run that has not saved.
  trap 'note "interrupted: $NAME is left as it is; stop the run with \`$PROG stop\`, delete the slice with \`$how_to_delete\`"; exit 130' INT
  do_install || rc=$?
  if (( rc == 0 )); then ran=1; do_run || rc=$?; fi
  if (( KEEP )); then
    note "keeping $NAME (--keep); delete it with: $how_to_delete"
  elif (( ran )) && ! { (( rc == 0 )) && run_finished; }; then
    # Deleting now could kill a run that is still going (a broken log stream) or leave nothing to look at.
    note "keeping $NAME: the run did not finish (exit code $rc, no ${WORKDIR%/}/summary.json); its checkpoints are in $WORKDIR. Resume with \`$PROG run\` and the same --workdir, or delete it with: $how_to_delete"
  else
    do_delete || note "warning: deleting $NAME failed; check with: gcloud compute tpus tpu-vm list --zone $ZONE"
  fi
  return "$rc"
}

# shellcheck source=launch/plan_check.sh
source "$REPO_ROOT/launch/plan_check.sh"
if (( PLAN_CHECK )) && [[ $COMMAND == all || ( $COMMAND == create && $CONFIG_GIVEN == 1 ) ]]; then
  overrides=()
  for arg in ${MAIN_ARGS[@]+"${MAIN_ARGS[@]}"}; do [[ $arg != --config.* ]] || overrides+=("$arg"); done
  plan_check "$REPO_ROOT" "$ACCELERATOR" "$CONFIG" ${overrides[@]+"${overrides[@]}"} ${PLAN_ARGS[@]+"${PLAN_ARGS[@]}"}
fi
(( DRY_RUN )) && echo "# dry run: printing the commands, running none"
case $COMMAND in
  create) do_create ;;
  install) do_install ;;
  run) do_run ;;
  logs) ssh_workers "$WORKER" "$(follow_command)" ;;
  status) x "${TPU[@]}" describe "$NAME" "${LOCATION[@]}" "--format=value(state,acceleratorType,health)"
          ssh_workers all "bash $(quote "$REMOTE_DIR")/launch/tpu_worker.sh status" ;;
  stop) ssh_workers all "bash $(quote "$REMOTE_DIR")/launch/tpu_worker.sh stop" ;;
  delete) do_delete ;;
  all) do_all ;;
esac
