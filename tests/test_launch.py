"""launch/: the TPU VM, single-node GPU and SLURM launchers, run against fake gcloud/srun/sbatch/scontrol/python.

Each fake is written into tmp_path, put first on PATH, appends {"prog", "argv", "env"} as one JSON line per call to a
log and exits 0 (or fails / reports a preempted TPU where a test asks). Nothing touches the network or trains.
"""

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tarfile

import pytest

pytestmark = pytest.mark.slow  # trains a run or starts a process

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
LAUNCH = os.path.join(ROOT, "launch")
SCRIPTS = ["tpu_vm.sh", "tpu_worker.sh", "gpu_single_node.sh", "slurm_multinode.sbatch", "slurm_submit.sh"]

FAKE = """#!{python} -S
import json, os, shutil, sys
prog = os.path.basename(sys.argv[0])
argv = sys.argv[1:]
keep = ("CUDA_VISIBLE_DEVICES", "JAX_LOCAL_DEVICE_IDS", "PYTHONPATH", "SLURM_NTASKS", "GENSCL_REPO")
with open(os.environ["FAKE_CALLS"], "a") as f:
    env = {{k: os.environ[k] for k in keep if k in os.environ}}
    f.write(json.dumps({{"prog": prog, "argv": argv, "env": env}}) + "\\n")
joined = " ".join(argv)
# FAKE_FAIL="SUBSTRING=CODE[xN];...": calls whose argv contains SUBSTRING exit CODE (only the first N such calls)
for i, rule in enumerate(filter(None, os.environ.get("FAKE_FAIL", "").split(";"))):
    pattern, code = rule.rsplit("=", 1)
    code, _, times = code.partition("x")
    if pattern in joined:
        counter = os.environ["FAKE_CALLS"] + f".fail{{i}}"
        n = int(open(counter).read()) if os.path.exists(counter) else 0
        open(counter, "w").write(str(n + 1))
        if not times or n < int(times):
            print(prog + ": simulated failure", file=sys.stderr)
            sys.exit(int(code))
if prog == "gcloud" and "describe" in argv and "queued-resources" in argv:
    # FAKE_QR_STATES: states of the queued resource in successive describe calls, the last one repeating
    states = os.environ.get("FAKE_QR_STATES", "ACTIVE").split(",")
    counter = os.environ["FAKE_CALLS"] + ".qr_describes"
    n = int(open(counter).read()) if os.path.exists(counter) else 0
    open(counter, "w").write(str(n + 1))
    print(states[min(n, len(states) - 1)])
elif prog == "gcloud" and "describe" in argv:
    fmt = next((a for a in argv if a.startswith("--format=")), "")
    if "acceleratorType" in fmt:
        print(os.environ.get("FAKE_ACCELERATOR", "v4-32"))
    elif "state" in fmt:  # FAKE_STATES: states returned by successive describe calls, the last one repeating
        states = os.environ.get("FAKE_STATES", "READY").split(",")
        counter = os.environ["FAKE_CALLS"] + ".describes"
        n = int(open(counter).read()) if os.path.exists(counter) else 0
        open(counter, "w").write(str(n + 1))
        state = states[min(n, len(states) - 1)]
        if state in ("NOT_FOUND", "UNREACHABLE"):  # describe fails: the TPU is gone / gcloud cannot tell
            print(f"ERROR: (gcloud.compute.tpus.tpu-vm.describe) {{state}}: simulated", file=sys.stderr)
            sys.exit(1)
        print(state)
if prog == "gcloud" and "scp" in argv and os.environ.get("FAKE_SCP_KEEP"):
    shutil.copy(argv[argv.index("scp") + 1], os.environ["FAKE_SCP_KEEP"])
if prog == "srun" and os.environ.get("FAKE_SRUN_SUMMARY"):
    open(os.environ["FAKE_SRUN_SUMMARY"], "w").write("{{}}")
if prog == "srun" and os.environ.get("FAKE_SRUN_EXEC"):  # run the task command, as one task would
    task = argv[next(i for i, a in enumerate(argv) if not a.startswith("-")):]
    sys.exit(os.spawnvpe(os.P_WAIT, task[0], task, dict(os.environ, CUDA_VISIBLE_DEVICES="4,5,6,7")))
if prog == "nvidia-smi":
    for i in range(int(os.environ.get("FAKE_GPUS", "8"))):
        print(f"GPU {{i}}: {{os.environ.get('FAKE_GPU_MODEL', 'NVIDIA H100')}} (UUID: GPU-{{i}})")
"""


@pytest.fixture
def fake(tmp_path):
    """Writes the fakes into tmp_path/bin; returns a helper that runs a launcher and reads back the calls."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for prog in ("gcloud", "srun", "sbatch", "scontrol", "python", "nvidia-smi"):
        path = bindir / prog
        path.write_text(FAKE.format(python=sys.executable))
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    calls_file = tmp_path / "calls.jsonl"

    class Fake:
        calls_path = calls_file
        tmp = tmp_path

        def run(self, script, *args, env=None, cwd=ROOT):
            environ = {k: v for k, v in os.environ.items()
                       if not k.startswith(("SLURM_", "CUDA_", "JAX_", "TFDS_", "GENSCL_"))}
            environ.update(PATH=f"{bindir}:{environ['PATH']}", FAKE_CALLS=str(calls_file), TMPDIR=str(tmp_path),
                           GENSCL_TPU_METADATA_URL=f"file://{tmp_path}/no-metadata",
                           # The plan check compiles for minutes: its own tests switch it on (test_*_plan_check_*).
                           GENSCL_PLAN_CHECK="off")
            environ.update(env or {})
            return subprocess.run(["bash", os.path.join(LAUNCH, script), *args], cwd=cwd, env=environ,
                                  capture_output=True, text=True, timeout=60)

        def calls(self, prog=None):
            if not calls_file.exists():
                return []
            rows = [json.loads(line) for line in calls_file.read_text().splitlines()]
            return [r for r in rows if prog is None or r["prog"] == prog]

    return Fake()


def steps(fake):
    """The gcloud calls by subcommand: create, scp, ssh, describe, delete, storage; qr-create, qr-describe and
    qr-delete for queued resources."""
    def step(argv):
        if argv[0] == "storage":
            return "storage"
        return ("qr-" if argv[2] == "queued-resources" else "") + argv[3]
    return [step(c["argv"]) for c in fake.calls("gcloud")]


def flag(argv, name):
    """The value of --name=VALUE or --name VALUE in argv (None when absent)."""
    for i, a in enumerate(argv):
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
    return None


def one_error_line(proc, *fragments):
    """A usage error: exit 2, nothing on stdout, one line on stderr naming the problem."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "error:" in lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ------------------------------------------------------------------------------------------------ all scripts
@pytest.mark.parametrize("script", SCRIPTS)
def test_syntax_and_help(script):
    path = os.path.join(LAUNCH, script)
    assert subprocess.run(["bash", "-n", path], capture_output=True, text=True).returncode == 0
    if shutil.which("shellcheck"):
        check = subprocess.run(["shellcheck", "-s", "bash", path], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout
    out = subprocess.run(["bash", path, "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "Usage:" in out.stdout and "set -euo" not in out.stdout and "#SBATCH --" not in out.stdout


def test_readme_names_every_script():
    readme = open(os.path.join(LAUNCH, "README.md")).read()
    for script in SCRIPTS:
        assert script in readme


# ------------------------------------------------------------------------------------------------ TPU VM
TPU = ["--name", "genscl-test", "--zone", "us-central2-b", "--project", "my-proj"]
WORKDIR = "gs://bucket/run1"


@pytest.mark.parametrize("accelerator, version, hosts", [
    ("v4-32", "tpu-ubuntu2204-base", 4), ("v5litepod-16", "v2-alpha-tpuv5-lite", 4),
    ("v5p-8", "v2-alpha-tpuv5", 1), ("v6e-8", "v2-alpha-tpuv6e", 1), ("v6e-64", "v2-alpha-tpuv6e", 16),
])
@pytest.mark.parametrize("spot", [True, False])
def test_tpu_create(fake, accelerator, version, hosts, spot):
    proc = fake.run("tpu_vm.sh", "create", *TPU, "--accelerator-type", accelerator, *(["--spot"] if spot else []))
    assert proc.returncode == 0, proc.stderr
    (call,) = fake.calls("gcloud")
    argv = call["argv"]
    assert argv[:5] == ["compute", "tpus", "tpu-vm", "create", "genscl-test"]
    assert flag(argv, "--accelerator-type") == accelerator
    assert flag(argv, "--version") == version
    assert flag(argv, "--zone") == "us-central2-b" and flag(argv, "--project") == "my-proj"
    assert ("--spot" in argv) == spot
    assert f"({hosts} host(s))" in proc.stderr


def test_tpu_create_version_override_and_extra_args(fake):
    proc = fake.run("tpu_vm.sh", "create", "--name=t1", "--zone=europe-west4-a", "--accelerator-type=v6e-8",
                    "--version=v2-alpha-tpuv6e-custom", "--create-arg=--reserved")
    assert proc.returncode == 0, proc.stderr
    argv = fake.calls("gcloud")[0]["argv"]
    assert flag(argv, "--version") == "v2-alpha-tpuv6e-custom" and "--reserved" in argv
    assert flag(argv, "--project") is None  # gcloud's configured project


def test_tpu_install_copies_the_tree_to_all_workers(fake):
    keep = fake.tmp / "copied.tar.gz"
    proc = fake.run("tpu_vm.sh", "install", *TPU, env={"FAKE_SCP_KEEP": str(keep)})
    assert proc.returncode == 0, proc.stderr
    scp, ssh = fake.calls("gcloud")
    assert scp["argv"][3] == "scp" and "--worker=all" in scp["argv"]
    assert scp["argv"][5] == "genscl-test:/tmp/genscl_jax_src.tar.gz"
    assert not os.path.exists(scp["argv"][4])  # the local tarball is cleaned up
    assert ssh["argv"][3] == "ssh" and "--worker=all" in ssh["argv"]
    remote = flag(ssh["argv"], "--command")
    assert "tar -xzf /tmp/genscl_jax_src.tar.gz -C genscl_jax" in remote
    assert "bash genscl_jax/launch/tpu_worker.sh setup" in remote
    with tarfile.open(keep) as tar:
        names = set(tar.getnames())
    assert {"genscl_jax/main.py", "requirements.txt", "launch/tpu_worker.sh", "configs/imagenet_resnet50.py"} <= names
    assert not any(n.startswith(".venv/") or n.startswith(".git/") for n in names)


def test_tpu_install_from_git(fake):
    proc = fake.run("tpu_vm.sh", "install", *TPU, "--repo-url", "https://example.com/me/genscl_jax.git",
                    "--ref", "v1", "--python-bin", "python3.11")
    assert proc.returncode == 0, proc.stderr
    (ssh,) = fake.calls("gcloud")
    assert "--worker=all" in ssh["argv"]
    remote = flag(ssh["argv"], "--command")
    assert "git clone --depth=1 --branch v1 https://example.com/me/genscl_jax.git genscl_jax" in remote
    assert "tpu_worker.sh setup --python-bin python3.11" in remote


def test_tpu_run_starts_the_main_command_on_all_workers_and_follows(fake):
    proc = fake.run("tpu_vm.sh", "run", *TPU, "--accelerator-type", "v4-32", "--workdir", WORKDIR,
                    "--config", "configs/imagenet_resnet50.py", "--tfds-data-dir", "gs://bucket/tfds",
                    "--config.kd.alpha=0", "--", "--config.linear_eval.decay_epochs=(60,75,85)")
    assert proc.returncode == 0, proc.stderr
    start, follow, describe, storage = fake.calls("gcloud")
    assert "--worker=all" in start["argv"]
    remote = flag(start["argv"], "--command")
    assert "python -m genscl_jax.main --config configs/imagenet_resnet50.py --workdir gs://bucket/run1" in remote
    words = shlex.split(remote)  # what the worker's shell will see
    assert words[:4] == ["TFDS_DATA_DIR=gs://bucket/tfds", "bash", "genscl_jax/launch/tpu_worker.sh", "start"]
    assert words[-2:] == ["--config.kd.alpha=0", "--config.linear_eval.decay_epochs=(60,75,85)"]
    assert "--worker=0" in follow["argv"] and "tpu_worker.sh follow" in flag(follow["argv"], "--command")
    assert describe["argv"][3] == "describe"  # checked for preemption after the run
    assert storage["argv"] == ["storage", "ls", "gs://bucket/run1/summary.json"]  # finished, not stopped


def test_tpu_run_asks_gcloud_for_the_slice_size(fake):
    proc = fake.run("tpu_vm.sh", "run", *TPU, "--workdir", "/home/me/run1", env={"FAKE_ACCELERATOR": "v4-16"})
    one_error_line(proc, "gs://", "v4-16")
    proc = fake.run("tpu_vm.sh", "run", *TPU, "--workdir", "/home/me/run1", "--detach",
                    env={"FAKE_ACCELERATOR": "v6e-8"})  # single host: allowed, with a warning
    assert proc.returncode == 0, proc.stderr
    assert "lost when the VM is preempted or deleted" in proc.stderr


@pytest.mark.parametrize("args, fragments", [
    (["create", "--zone", "z", "--accelerator-type", "v4-8"], ["--name"]),
    (["create", "--name", "t1", "--accelerator-type", "v4-8"], ["--zone"]),
    (["create", "--name", "t1", "--zone", "z"], ["--accelerator-type"]),
    (["create", "--name", "t1", "--zone", "z", "--accelerator-type", "v3-8"], ["unknown accelerator type 'v3-8'"]),
    (["create", "--name", "t1", "--zone", "z", "--accelerator-type", "v5e-16"], ["v5litepod-16"]),
    (["create", "--name", "t1", "--zone", "z", "--accelerator-type", "v4-12"], ["multiples of 8"]),
    (["create", "--name", "t1", "--zone", "z", "--accelerator-type", "v6e-2"], ["1, 4, 8"]),
    (["create", "--name", "Bad_Name", "--zone", "z", "--accelerator-type", "v4-8"], ["--name 'Bad_Name'"]),
    (["launch", "--name", "t1", "--zone", "z"], ["unknown command 'launch'"]),
    ([], ["no command"]),
    (["create", "--name", "t1", "--zone", "z", "--accelerator-type", "v4-8", "--bogus"], ["unknown flag --bogus"]),
    (["create", "--name", "--zone", "z"], ["--name needs a value"]),
    (["run", "--name", "t1", "--zone", "z", "--accelerator-type", "v4-32"], ["--workdir"]),
    (["run", *TPU, "--accelerator-type", "v4-32", "--workdir", "/tmp/run1"], ["gs://", "v4-32", "4 hosts"]),
    (["run", *TPU, "--accelerator-type", "v5litepod-16", "--workdir", "runs/x"], ["gs://", "v5litepod-16"]),
    (["run", *TPU, "--workdir", WORKDIR, "--config", "configs/nope.py"], ["configs/nope.py", "not found"]),
    (["run", *TPU, "--workdir", WORKDIR, "--retry-on-preemption", "2"], ["--accelerator-type"]),
    (["run", *TPU, "--workdir", WORKDIR, "--retry-on-preemption", "many"], ["--retry-on-preemption"]),
    (["all", *TPU, "--accelerator-type", "v4-8", "--workdir", WORKDIR, "--env", "NOEQUALS"], ["KEY=VALUE"]),
    (["all", *TPU, "--accelerator-type", "v4-8", "--workdir", WORKDIR, "--detach"], ["--detach"]),
])
def test_tpu_bad_arguments_fail_fast(fake, args, fragments):
    proc = fake.run("tpu_vm.sh", *args)
    one_error_line(proc, *fragments)
    assert fake.calls() == []  # nothing was created or started


def test_tpu_dry_run_prints_everything_and_calls_nothing(fake):
    proc = fake.run("tpu_vm.sh", "all", *TPU, "--accelerator-type", "v5p-16", "--spot", "--workdir", WORKDIR,
                    "--retry-on-preemption", "3", "--dry-run", "--config.batch_size=1024")
    assert proc.returncode == 0, proc.stderr
    assert fake.calls() == []
    printed = [shlex.split(line[2:]) for line in proc.stdout.splitlines() if line.startswith("+ ")]
    check = printed.pop(-2)  # the run finished: summary.json is in the bucket, then the slice goes
    assert check == ["gcloud", "storage", "ls", "gs://bucket/run1/summary.json"]
    assert [argv[4] for argv in printed] == ["create", "scp", "ssh", "ssh", "ssh", "delete"]
    assert all(argv[:4] == ["gcloud", "compute", "tpus", "tpu-vm"] for argv in printed)
    create, scp, install, start, follow, delete = printed
    assert "--spot" in create and flag(create, "--accelerator-type") == "v5p-16"
    assert flag(create, "--version") == "v2-alpha-tpuv5"
    assert "--worker=all" in scp and "--worker=all" in install and "--worker=all" in start
    assert "python -m genscl_jax.main --config configs/imagenet_resnet50.py --workdir gs://bucket/run1 " \
           "--config.batch_size=1024" in flag(start, "--command")
    assert "--quiet" in delete


@pytest.mark.parametrize("command, worker", [("logs", "0"), ("logs", "all"), ("stop", "all"), ("status", "all")])
def test_tpu_logs_stop_status(fake, command, worker):
    extra = ["--worker", worker] if command == "logs" else []
    proc = fake.run("tpu_vm.sh", command, *TPU, *extra)
    assert proc.returncode == 0, proc.stderr
    ssh = fake.calls("gcloud")[-1]["argv"]
    assert ssh[3] == "ssh" and f"--worker={worker}" in ssh
    assert f"tpu_worker.sh {'follow' if command == 'logs' else command}" in flag(ssh, "--command")


def test_tpu_delete(fake):
    proc = fake.run("tpu_vm.sh", "delete", *TPU)
    assert proc.returncode == 0, proc.stderr
    (call,) = fake.calls("gcloud")
    assert call["argv"][3:5] == ["delete", "genscl-test"] and "--quiet" in call["argv"]


def test_tpu_all_recreates_after_preemption_and_resumes_the_same_workdir(fake):
    proc = fake.run("tpu_vm.sh", "all", *TPU, "--accelerator-type", "v4-32", "--spot", "--workdir", WORKDIR,
                    "--retry-on-preemption", "2",
                    env={"FAKE_STATES": "PREEMPTED,READY", "FAKE_FAIL": "tpu_worker.sh follow=255"})
    assert proc.returncode == 255, proc.stderr  # the second follow also "broke", on a READY slice: not preemption
    assert steps(fake) == ["create", "scp", "ssh", "ssh", "ssh", "describe",  # preempted during the first run
                           "delete", "create", "scp", "ssh", "ssh", "ssh", "describe"]
    # No delete at the end: the run may still be going on the READY slice.
    assert "keeping genscl-test: the run did not finish (exit code 255" in proc.stderr
    starts = [flag(c["argv"], "--command") for c in fake.calls("gcloud")
              if "tpu_worker.sh start" in " ".join(c["argv"])]
    assert len(starts) == 2 and all("--workdir gs://bucket/run1" in s for s in starts) and starts[0] == starts[1]
    assert "retry 1 of 2" in proc.stderr


POLL_FAST = {"GENSCL_POLL_S": "0.01", "GENSCL_PREEMPTION_POLLS": "3"}


def test_tpu_run_waits_for_a_preemption_that_stopped_the_run_cleanly(fake):
    """The run saved and exited 0 on the preemption notice while the slice still read READY."""
    proc = fake.run("tpu_vm.sh", "run", *TPU, "--accelerator-type", "v4-32", "--workdir", WORKDIR,
                    "--retry-on-preemption", "1",
                    env={**POLL_FAST, "FAKE_STATES": "READY,READY,PREEMPTED,READY", "FAKE_FAIL": "summary.json=1x1"})
    assert proc.returncode == 0, proc.stderr
    assert steps(fake) == ["ssh", "ssh", "describe", "storage", "describe", "describe",
                           "delete", "create", "scp", "ssh", "ssh", "ssh", "describe", "storage"]


def test_tpu_run_stopped_before_the_end_is_not_success(fake):
    proc = fake.run("tpu_vm.sh", "run", *TPU, "--accelerator-type", "v4-32", "--workdir", WORKDIR,
                    "--retry-on-preemption", "1", env={**POLL_FAST, "FAKE_FAIL": "summary.json=1"})
    assert proc.returncode == 75
    assert "stopped before the end" in proc.stderr
    assert steps(fake) == ["ssh", "ssh", "describe", "storage", "describe", "describe", "describe"]


def test_tpu_run_recreates_a_slice_that_is_gone_without_deleting_it(fake):
    proc = fake.run("tpu_vm.sh", "run", *TPU, "--accelerator-type", "v4-32", "--workdir", WORKDIR,
                    "--retry-on-preemption", "1", env={"FAKE_STATES": "NOT_FOUND,READY"})
    assert proc.returncode == 0, proc.stderr
    assert steps(fake) == ["ssh", "ssh", "describe", "create", "scp", "ssh", "ssh", "ssh", "describe", "storage"]


def test_tpu_run_never_recreates_when_gcloud_cannot_tell_the_state(fake):
    proc = fake.run("tpu_vm.sh", "run", *TPU, "--accelerator-type", "v4-32", "--workdir", WORKDIR,
                    "--retry-on-preemption", "3",
                    env={"FAKE_STATES": "UNREACHABLE", "FAKE_FAIL": "tpu_worker.sh follow=255"})
    assert proc.returncode == 255
    assert steps(fake) == ["ssh", "ssh", "describe"] and "may still be going" in proc.stderr


def test_tpu_run_preempted_without_retries_says_how_to_resume(fake):
    proc = fake.run("tpu_vm.sh", "run", *TPU, "--accelerator-type", "v4-32", "--workdir", WORKDIR,
                    env={"FAKE_STATES": "PREEMPTED"})
    assert proc.returncode == 75
    assert "same --workdir to resume" in proc.stderr
    assert steps(fake) == ["ssh", "ssh", "describe"]


def test_tpu_all_stops_when_the_slice_cannot_be_recreated(fake):
    proc = fake.run("tpu_vm.sh", "all", *TPU, "--accelerator-type", "v6e-8", "--spot", "--workdir", WORKDIR,
                    "--retry-on-preemption", "3", env={"FAKE_STATES": "PREEMPTED", "FAKE_FAIL": "create=1"})
    assert proc.returncode == 1
    assert steps(fake) == ["create"]  # nothing after a failed create
    proc = fake.run("tpu_vm.sh", "run", *TPU, "--accelerator-type", "v6e-8", "--workdir", WORKDIR,
                    "--retry-on-preemption", "3", env={"FAKE_STATES": "PREEMPTED", "FAKE_FAIL": "create=1"})
    assert proc.returncode == 1
    assert steps(fake)[1:] == ["ssh", "ssh", "describe", "delete", "create"]


def test_tpu_all_deletes_the_slice_when_install_fails(fake):
    proc = fake.run("tpu_vm.sh", "all", *TPU, "--accelerator-type", "v4-8", "--workdir", WORKDIR,
                    env={"FAKE_FAIL": "tpu_worker.sh setup=1"})
    assert proc.returncode == 1
    assert steps(fake) == ["create", "scp", "ssh", "delete"]


def test_tpu_all_deletes_only_once_summary_json_is_in_the_bucket(fake):
    proc = fake.run("tpu_vm.sh", "all", *TPU, "--accelerator-type", "v4-32", "--workdir", WORKDIR)
    assert proc.returncode == 0, proc.stderr
    assert steps(fake) == ["create", "scp", "ssh", "ssh", "ssh", "describe", "storage", "storage", "delete"]
    assert fake.calls("gcloud")[-2]["argv"] == ["storage", "ls", "gs://bucket/run1/summary.json"]


def test_tpu_all_keeps_the_slice_when_the_run_stopped_without_summary(fake):
    """Exit 0 without summary.json (stopped by SIGTERM): the checkpoints are in the bucket, the slice is kept."""
    proc = fake.run("tpu_vm.sh", "all", *TPU, "--accelerator-type", "v4-32", "--workdir", WORKDIR,
                    env={"FAKE_FAIL": "summary.json=1"})
    assert proc.returncode == 75
    assert steps(fake) == ["create", "scp", "ssh", "ssh", "ssh", "describe", "storage"]  # no delete
    assert "keeping genscl-test: the run did not finish" in proc.stderr
    assert "tpu_vm.sh delete --name genscl-test" in proc.stderr


def test_tpu_all_refuses_a_local_workdir_it_would_delete(fake):
    proc = fake.run("tpu_vm.sh", "all", *TPU, "--accelerator-type", "v6e-8", "--workdir", "/home/me/run1")
    one_error_line(proc, "all deletes the slice", "gs://")
    assert fake.calls() == []


def test_tpu_create_queued_waits_until_active(fake):
    proc = fake.run("tpu_vm.sh", "create", *TPU, "--accelerator-type", "v5litepod-16", "--spot", "--queued",
                    "--create-arg=--valid-until-duration=6h",
                    env={"GENSCL_POLL_S": "0.01", "FAKE_QR_STATES": "WAITING_FOR_RESOURCES,PROVISIONING,ACTIVE"})
    assert proc.returncode == 0, proc.stderr
    assert steps(fake) == ["qr-create", "qr-describe", "qr-describe", "qr-describe"]
    create = fake.calls("gcloud")[0]["argv"]
    assert create[:5] == ["compute", "tpus", "queued-resources", "create", "genscl-test"]
    assert flag(create, "--node-id") == "genscl-test" and flag(create, "--accelerator-type") == "v5litepod-16"
    assert flag(create, "--runtime-version") == "v2-alpha-tpuv5-lite" and flag(create, "--zone") == "us-central2-b"
    assert "--spot" in create and "--valid-until-duration=6h" in create
    assert "queued resource genscl-test: PROVISIONING" in proc.stderr


def test_tpu_create_queued_that_fails_stops(fake):
    proc = fake.run("tpu_vm.sh", "all", *TPU, "--accelerator-type", "v4-8", "--queued", "--workdir", WORKDIR,
                    env={"GENSCL_POLL_S": "0.01", "FAKE_QR_STATES": "WAITING_FOR_RESOURCES,FAILED"})
    assert proc.returncode == 1
    assert steps(fake) == ["qr-create", "qr-describe", "qr-describe"]  # nothing installed, nothing to delete
    assert "is FAILED" in proc.stderr


def test_tpu_queued_all_and_recreation_after_preemption_go_through_the_queued_resource(fake):
    proc = fake.run("tpu_vm.sh", "all", *TPU, "--accelerator-type", "v4-32", "--spot", "--queued",
                    "--workdir", WORKDIR, "--retry-on-preemption", "1", env={"FAKE_STATES": "PREEMPTED,READY"})
    assert proc.returncode == 0, proc.stderr
    assert steps(fake) == ["qr-create", "qr-describe", "scp", "ssh", "ssh", "ssh", "describe",  # preempted
                           "qr-delete", "qr-create", "qr-describe", "scp", "ssh", "ssh", "ssh", "describe",
                           "storage", "storage", "qr-delete"]
    deletes = [c["argv"] for c in fake.calls("gcloud") if c["argv"][2:4] == ["queued-resources", "delete"]]
    assert all("--force" in argv and "--quiet" in argv for argv in deletes)


def test_tpu_delete_queued(fake):
    proc = fake.run("tpu_vm.sh", "delete", *TPU, "--queued")
    assert proc.returncode == 0, proc.stderr
    (call,) = fake.calls("gcloud")
    assert call["argv"][:5] == ["compute", "tpus", "queued-resources", "delete", "genscl-test"]
    assert "--force" in call["argv"] and "--quiet" in call["argv"]


@pytest.mark.parametrize("command", ["install", "run", "logs", "stop"])
def test_tpu_ssh_args_reach_every_ssh_and_scp(fake, command):
    extra = ["--accelerator-type", "v4-32", "--workdir", WORKDIR] if command == "run" else []
    proc = fake.run("tpu_vm.sh", command, *TPU, *extra, "--ssh-arg=--internal-ip",
                    "--ssh-arg", "--tunnel-through-iap")
    assert proc.returncode == 0, proc.stderr
    remote = [c["argv"] for c in fake.calls("gcloud") if c["argv"][3:4] in (["ssh"], ["scp"])]
    assert remote and all("--internal-ip" in argv and "--tunnel-through-iap" in argv for argv in remote)
    for argv in remote:
        if argv[3] == "ssh":  # the flags come before --command and its one argument
            assert argv.index("--tunnel-through-iap") < argv.index("--command") == len(argv) - 2


def test_tpu_worker_start_follow_and_multihost_env(tmp_path):
    """The worker side, run here: detached start, JAX_* from (fake) metadata, follow returns the exit code."""
    metadata = tmp_path / "metadata"
    metadata.mkdir()
    (metadata / "worker-network-endpoints").write_text("w-0:0:10.0.0.2,w-1:1:10.0.0.3,w-2:2:10.0.0.4")
    (metadata / "agent-worker-number").write_text("2")
    env = dict(os.environ, GENSCL_RUN_DIR=str(tmp_path / "run"), GENSCL_VENV=str(tmp_path / "no-venv"),
               GENSCL_TPU_METADATA_URL=f"file://{metadata}")
    env.pop("JAX_COORDINATOR_ADDRESS", None)
    worker = os.path.join(LAUNCH, "tpu_worker.sh")
    program = "import os, sys; print('ARGS', sys.argv[1:], os.getcwd()); " \
              "print('ENV', [os.environ.get(k) for k in ('JAX_COORDINATOR_ADDRESS', 'JAX_NUM_PROCESSES', " \
              "'JAX_PROCESS_ID')]); sys.exit(3)"
    started = subprocess.run(["bash", worker, "start", "--", sys.executable, "-c", program, "a b"], env=env,
                             capture_output=True, text=True, timeout=30)
    assert started.returncode == 0, started.stderr
    assert "process 2 of 3" in started.stdout
    follow = subprocess.run(["bash", worker, "follow"], env=env, capture_output=True, text=True, timeout=30)
    assert follow.returncode == 3
    assert f"ARGS ['a b'] {ROOT}" in follow.stdout
    assert "ENV ['10.0.0.2:8482', '3', '2']" in follow.stdout
    status = subprocess.run(["bash", worker, "status"], env=env, capture_output=True, text=True, timeout=30)
    assert "finished, exit code 3" in status.stdout


# ------------------------------------------------------------------------------------------------ one GPU node
def test_gpu_single_node_passes_config_overrides_through(fake):
    proc = fake.run("gpu_single_node.sh", "--num-gpus", "2", "--config", "configs/cifar10_resnet50.py",
                    "--workdir", "/data/runs/c10", "--config.batch_size=64", "--config.dtype=bfloat16",
                    env={"SLURM_NTASKS": "4"})
    assert proc.returncode == 0, proc.stderr
    (call,) = fake.calls("python")
    assert call["argv"] == ["-m", "genscl_jax.main", "--config", "configs/cifar10_resnet50.py",
                            "--workdir", "/data/runs/c10", "--config.batch_size=64", "--config.dtype=bfloat16"]
    assert call["env"]["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert call["env"]["PYTHONPATH"].split(":")[0] == ROOT
    assert "SLURM_NTASKS" not in call["env"]  # one process, never a distributed start


def test_gpu_single_node_all_gpus_by_default_and_subset_of_visible(fake):
    proc = fake.run("gpu_single_node.sh", "--config=configs/quickstart.py", "--workdir=/x")
    assert proc.returncode == 0, proc.stderr
    assert "CUDA_VISIBLE_DEVICES" not in fake.calls("python")[-1]["env"]
    proc = fake.run("gpu_single_node.sh", "--num-gpus=2", "--config=configs/quickstart.py", "--workdir=/x",
                    env={"CUDA_VISIBLE_DEVICES": "3,5,7"})
    assert proc.returncode == 0, proc.stderr
    assert fake.calls("python")[-1]["env"]["CUDA_VISIBLE_DEVICES"] == "3,5"


def test_gpu_single_node_uses_genscl_python(fake, tmp_path):
    other = tmp_path / "bin" / "python3.12-fake"
    shutil.copy(tmp_path / "bin" / "python", other)
    proc = fake.run("gpu_single_node.sh", "--config", "configs/quickstart.py", "--workdir", "/x",
                    env={"GENSCL_PYTHON": str(other)})
    assert proc.returncode == 0, proc.stderr
    assert [c["prog"] for c in fake.calls()] == ["python3.12-fake"]


@pytest.mark.parametrize("args, fragments", [
    (["--workdir", "/x"], ["--config"]),
    (["--config", "configs/quickstart.py"], ["--workdir"]),
    (["--config", "configs/nope.py", "--workdir", "/x"], ["configs/nope.py"]),
    (["--num-gpus", "0", "--config", "configs/quickstart.py", "--workdir", "/x"], ["--num-gpus"]),
    (["--num-gpus", "4", "--config", "configs/quickstart.py", "--workdir", "/x"], ["only 2 GPU(s)"]),
])
def test_gpu_single_node_bad_arguments(fake, args, fragments):
    proc = fake.run("gpu_single_node.sh", *args, env={"FAKE_GPUS": "2"})
    one_error_line(proc, *fragments)
    assert fake.calls("python") == []


# ------------------------------------------------------------------------------------------------ SLURM
QUICKSTART = os.path.join(ROOT, "configs/quickstart.py")
SLURM_ENV = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NUM_NODES": "2", "SLURM_GPUS_PER_NODE": "8",
             "SLURM_CPUS_PER_TASK": "16", "SLURM_RESTART_COUNT": "0"}


def test_slurm_runs_one_task_per_node_and_requeues_when_stopped(fake, tmp_path):
    # Submitted from tmp_path with a relative workdir (pytest's tmp_path is under /tmp, which the script refuses).
    config = os.path.join(ROOT, "configs/imagenet_resnet50.py")
    proc = fake.run("slurm_multinode.sbatch", "--config", config, "--workdir", "shared/run1", "--config.kd.alpha=0",
                    env=SLURM_ENV, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (srun,) = fake.calls("srun")
    argv = srun["argv"]
    assert flag(argv, "--nodes") == "2" and flag(argv, "--ntasks") == "2" and flag(argv, "--ntasks-per-node") == "1"
    assert flag(argv, "--gpus-per-node") == "8" and flag(argv, "--cpus-per-task") == "16"
    main = argv[argv.index("python"):]
    assert main == ["python", "-m", "genscl_jax.main", "--config", config, "--workdir", "shared/run1",
                    "--config.kd.alpha=0"]
    assert srun["env"]["PYTHONPATH"].split(":")[0] == ROOT
    # The engine exited 0 without summary.json: stopped by SIGTERM with a checkpoint, so the job requeues itself.
    (requeue,) = fake.calls("scontrol")
    assert requeue["argv"] == ["requeue", "4242"]


def test_slurm_does_not_requeue_past_the_limit(fake, tmp_path):
    proc = fake.run("slurm_multinode.sbatch", "--config", QUICKSTART, "--workdir", "run1", cwd=tmp_path,
                    env={**SLURM_ENV, "SLURM_RESTART_COUNT": "3", "GENSCL_MAX_REQUEUES": "3"})
    assert proc.returncode == 0, proc.stderr
    assert fake.calls("scontrol") == [] and "resubmit with the same --workdir" in proc.stderr


def test_slurm_finished_run_is_not_requeued(fake, tmp_path):
    (tmp_path / "run1").mkdir()
    proc = fake.run("slurm_multinode.sbatch", f"--config={QUICKSTART}", "--workdir=run1", cwd=tmp_path,
                    env={**SLURM_ENV, "FAKE_SRUN_SUMMARY": str(tmp_path / "run1" / "summary.json")})
    assert proc.returncode == 0, proc.stderr
    assert fake.calls("scontrol") == [] and "finished" in proc.stdout


def test_slurm_failure_is_passed_on_and_not_requeued(fake, tmp_path):
    proc = fake.run("slurm_multinode.sbatch", "--config", QUICKSTART, "--workdir", "run1", cwd=tmp_path,
                    env={**SLURM_ENV, "FAKE_FAIL": "genscl_jax.main=7"})
    assert proc.returncode == 7
    assert fake.calls("scontrol") == []


def test_slurm_task_sees_all_gpus_of_its_node(fake, tmp_path):
    """The per-task wrapper gives jax.distributed every local GPU (not just the one numbered SLURM_LOCALID)."""
    proc = fake.run("slurm_multinode.sbatch", "--config", QUICKSTART, "--workdir", "run1", cwd=tmp_path,
                    env={**SLURM_ENV, "FAKE_SRUN_EXEC": "1"})
    assert proc.returncode == 0, proc.stderr
    (python,) = fake.calls("python")
    assert python["env"]["JAX_LOCAL_DEVICE_IDS"] == "0,1,2,3"  # the fake srun shows the task 4 GPUs
    assert python["argv"][:2] == ["-m", "genscl_jax.main"]


@pytest.mark.parametrize("args, fragments", [
    (["--workdir", "/shared/x"], ["--config"]),
    (["--config", "configs/quickstart.py"], ["--workdir"]),
    (["--config", "configs/quickstart.py", "--workdir", "/tmp/run1"], ["node-local"]),
    (["--config", "configs/nope.py", "--workdir", "/shared/x"], ["configs/nope.py"]),
])
def test_slurm_bad_arguments(fake, args, fragments):
    proc = fake.run("slurm_multinode.sbatch", *args, env=SLURM_ENV)
    one_error_line(proc, *fragments)
    assert fake.calls() == []


def test_slurm_submit_builds_the_sbatch_command(fake):
    proc = fake.run("slurm_submit.sh", "--nodes", "4", "--gpus-per-node", "4", "--partition", "gpu",
                    "--time", "2-00:00:00", "--sbatch-arg=--constraint=a100", "--workdir", "/shared/me/run1",
                    "--config", "configs/imagenet_resnet50.py", "--config.kd.alpha=0")
    assert proc.returncode == 0, proc.stderr
    (call,) = fake.calls("sbatch")
    argv = call["argv"]
    assert flag(argv, "--nodes") == "4" and flag(argv, "--ntasks-per-node") == "1"
    assert flag(argv, "--gpus-per-node") == "4" and flag(argv, "--partition") == "gpu"
    assert flag(argv, "--time") == "2-00:00:00" and "--constraint=a100" in argv
    assert flag(argv, "--export") == f"ALL,GENSCL_REPO={ROOT}"
    script = argv.index(os.path.join(LAUNCH, "slurm_multinode.sbatch"))
    assert argv[script + 1:] == ["--config", "configs/imagenet_resnet50.py", "--workdir", "/shared/me/run1",
                                 "--config.kd.alpha=0"]


@pytest.mark.parametrize("args, fragments", [
    (["--workdir", "/shared/x"], ["--nodes"]),
    (["--nodes", "two", "--workdir", "/shared/x"], ["--nodes"]),
    (["--nodes", "2"], ["--workdir"]),
    (["--nodes", "2", "--workdir", "/dev/shm/x"], ["node-local"]),
    (["--nodes", "2", "--workdir", "/shared/x", "--config", "configs/nope.py"], ["configs/nope.py"]),
    (["--nodes", "2", "--workdir", "/shared/x", "--gpus"], ["unknown argument --gpus"]),
])
def test_slurm_submit_bad_arguments(fake, args, fragments):
    proc = fake.run("slurm_submit.sh", *args)
    one_error_line(proc, *fragments)
    assert fake.calls() == []


def test_slurm_submit_dry_run(fake):
    proc = fake.run("slurm_submit.sh", "--nodes", "2", "--workdir", "/shared/x", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert fake.calls() == []
    assert proc.stdout.startswith("+ sbatch --nodes=2 ")


# ------------------------------------------------------------------------------------------------ plan check
PLAN_ON = {"GENSCL_PLAN_CHECK": "on"}


def test_tpu_plan_check_stops_before_creating_with_the_plans_line(fake):
    """The fake python stands for `python -m genscl_jax.plan`: FAKE_FAIL makes it say the config does not fit."""
    fail = {**PLAN_ON, "FAKE_FAIL": "genscl_jax.plan=3", "GENSCL_PLAN_PYTHON": "python"}
    proc = fake.run("tpu_vm.sh", "all", *TPU, "--accelerator-type", "v5litepod-16", "--workdir", WORKDIR,
                    "--dry-run", "--config.batch_size=4096", "--plan-arg=--device-memory-gb=15", env=fail)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "tpu_vm.sh: error: configs/imagenet_resnet50.py does not fit v5litepod-16: ")
    assert "+ gcloud" not in proc.stdout  # nothing created, not even printed
    (plan,) = fake.calls("python")
    assert plan["argv"] == ["-m", "genscl_jax.plan", "--config", "configs/imagenet_resnet50.py", "--target",
                            "v5litepod-16", "--config.batch_size=4096", "--device-memory-gb=15"]
    fits = fake.run("tpu_vm.sh", "all", *TPU, "--accelerator-type", "v5litepod-16", "--workdir", WORKDIR,
                    "--dry-run", env={**PLAN_ON, "GENSCL_PLAN_PYTHON": "python"})
    assert fits.returncode == 0 and "tpu-vm create" in fits.stdout
    skipped = fake.run("tpu_vm.sh", "all", *TPU, "--accelerator-type", "v5litepod-16", "--workdir", WORKDIR,
                       "--dry-run", "--skip-plan-check", env=fail)
    assert skipped.returncode == 0 and "tpu-vm create" in skipped.stdout and len(fake.calls("python")) == 2


def test_tpu_create_checks_only_a_config_it_is_given(fake):
    env = {**PLAN_ON, "GENSCL_PLAN_PYTHON": "python"}
    fake.run("tpu_vm.sh", "create", *TPU, "--accelerator-type", "v4-8", env=env)
    assert fake.calls("python") == []
    fake.run("tpu_vm.sh", "create", *TPU, "--accelerator-type", "v4-8", "--config", "configs/quickstart.py", env=env)
    assert [c["argv"][4:6] for c in fake.calls("python")] == [["--target", "v4-8"]]


def test_gpu_launchers_check_the_gpus_they_name_or_see(fake):
    env = {**PLAN_ON, "GENSCL_PLAN_PYTHON": "python", "FAKE_GPUS": "2"}
    proc = fake.run("gpu_single_node.sh", "--plan-target", "a100-40gbx2", "--config", "configs/quickstart.py",
                    "--workdir", "/x", "--dry-run", env=env)
    assert proc.returncode == 0, proc.stderr
    assert fake.calls("python")[0]["argv"][4:6] == ["--target", "a100-40gbx2"]
    # The fake nvidia-smi's "NVIDIA H100" names no memory size: the launcher asks for --plan-target.
    proc = fake.run("gpu_single_node.sh", "--config", "configs/quickstart.py", "--workdir", "/x", env=env)
    one_error_line(proc, "--plan-target")
    proc = fake.run("slurm_submit.sh", "--nodes", "2", "--workdir", "/shared/run", "--gpu-type", "h100-80gb",
                    "--dry-run", env={**env, "FAKE_FAIL": "genscl_jax.plan=3"})
    assert proc.returncode == 2 and "does not fit h100-80gbx8,hosts=2" in proc.stderr
    assert not [c for c in fake.calls() if c["prog"] == "sbatch"]
    one_error_line(fake.run("slurm_submit.sh", "--nodes", "2", "--workdir", "/shared/run", env=env), "--gpu-type")


def test_the_gpu_launcher_reads_the_model_from_a_long_gpu_listing(fake):
    # A listing longer than a pipe's buffer: reading only its first line (`nvidia-smi -L | head -n 1`) breaks the
    # pipe under nvidia-smi, which the launcher (pipefail) then took for a failure, on a machine with a known model.
    env = {**PLAN_ON, "GENSCL_PLAN_PYTHON": "python", "FAKE_GPUS": "3000", "FAKE_GPU_MODEL": "NVIDIA H100 80GB HBM3"}
    proc = fake.run("gpu_single_node.sh", "--config", "configs/quickstart.py", "--workdir", "/x", "--dry-run", env=env)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert fake.calls("python")[0]["argv"][4:6] == ["--target", "h100-80gbx3000"]
