# Sourced by the launchers (tpu_vm.sh, gpu_single_node.sh, slurm_submit.sh): before anything is created, queued or
# started, the accelerator's own compiler checks that the run's steps fit its memory (`python -m genscl_jax.plan`,
# deviceless: libtpu or the CUDA plugin, `pip install "genscl-jax[plan-tpu]"` / `[plan-gpu]`, on this machine).
# A recipe that does not fit stops here in one line with the plan's suggestion (the --config. flags that fit).
# --skip-plan-check (or GENSCL_PLAN_CHECK=off) skips it. Needs PROG and die from the launcher.

# plan_check DIR TARGET CONFIG [--config.KEY=VALUE ...]: CONFIG is relative to DIR; returns when the run fits.
plan_check() {
  local dir=$1 target=$2 config=$3 out rc=0
  shift 3
  [[ ${GENSCL_PLAN_CHECK:-on} != off ]] || return 0
  local python=${GENSCL_PLAN_PYTHON:-${GENSCL_PYTHON:-python3}}
  echo "$PROG: checking that $config fits $target with the accelerator's compiler (minutes; --skip-plan-check skips)" >&2
  out=$(cd "$dir" && PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}" \
        "$python" -m genscl_jax.plan --config "$config" --target "$target" "$@" 2>&1) || rc=$?
  case $rc in
    0) echo "$PROG: plan: $(grep -m1 'memory:' <<< "$out" | sed 's/^ *//')" >&2 ;;
    3) die "$config does not fit $target: $(tail -n 1 <<< "$out") (or --skip-plan-check)" ;;
    *) die "the plan check could not run: $(grep '^plan:' <<< "$out" | tail -n 1 || true)$(grep -q '^plan:' <<< "$out" || tail -n 1 <<< "$out") (or --skip-plan-check)" ;;
  esac
}
