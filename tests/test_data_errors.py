"""Data problems end a run in one line (`error: ...`, exit 1, no traceback), in seconds, naming what to fix:
missing or damaged Fashion-MNIST files, and a dataset that needs a download on a machine without network."""

import gzip
import os
import socket
import subprocess
import sys
import time

import pytest
from conftest import network_namespace_problem

from genscl_jax.data import network_probe

ROOT = os.path.join(os.path.dirname(__file__), "..")
# Lines TensorFlow and XLA print at start-up, whatever happens.
NOISE = ("oneDNN", "cpu_feature", "rebuild TensorFlow", "absl::InitializeLog")


def run_main(args, env=None, prefix=()):
    started = time.time()
    proc = subprocess.run([*prefix, sys.executable, "-m", "genscl_jax.main", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})
    return proc, time.time() - started


def assert_one_line_error(proc, *expected):
    err = proc.stderr
    assert proc.returncode == 1, err
    assert "Traceback" not in err, err
    last = [line for line in err.splitlines() if line.strip() and not any(n in line for n in NOISE)][-1]
    assert last.startswith("error: "), err
    for text in expected:
        assert text in last, last
    return last


def fashion_args(tmp_path):
    return ["--config", "configs/quickstart.py", "--config.data_dir", str(tmp_path / "tfds"), "--workdir",
            str(tmp_path / "run")]


@pytest.mark.slow
def test_missing_fashion_mnist_files_are_one_line(tmp_path):
    proc, _ = run_main(fashion_args(tmp_path), env={"GENSCL_FASHION_MNIST_DIR": str(tmp_path / "nowhere")})
    assert_one_line_error(proc, "Fashion-MNIST idx files not found in", str(tmp_path / "nowhere"),
                          "apt-get install dataset-fashion-mnist")


@pytest.mark.slow
def test_a_truncated_idx_file_is_named_with_how_to_restore_it(tmp_path):
    from helpers import write_tiny_fashion_mnist

    source = tmp_path / "source"
    source.mkdir()
    write_tiny_fashion_mnist(str(source))
    damaged = source / "t10k-labels-idx1-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[:-12])  # A copy cut short: gzip's end-of-stream marker is gone.
    with pytest.raises(EOFError):
        gzip.decompress(damaged.read_bytes())
    proc, _ = run_main(fashion_args(tmp_path), env={"GENSCL_FASHION_MNIST_DIR": str(source)})
    last = assert_one_line_error(proc, str(damaged), "apt-get install --reinstall dataset-fashion-mnist")
    assert "tfds build" not in last  # Not the advice for a missing download: the file is here, and damaged.


@pytest.mark.slow
def test_a_download_without_network_fails_in_seconds_with_how_to_prepare(tmp_path):
    """CIFAR-10 not prepared in data_dir, in a network namespace with only loopback: no request leaves the machine,
    and the run must not spend minutes in tfds's download retries."""
    problem = network_namespace_problem()
    if problem:
        pytest.skip(f"needs a private network namespace: {problem}")
    offline = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$0" "$@"']
    proc, seconds = run_main(["--config", "configs/cifar10_resnet50.py", "--config.data_dir",
                              str(tmp_path / "tfds"), "--workdir", str(tmp_path / "run")], prefix=offline)
    assert_one_line_error(proc, f"cifar10 is not prepared in {tmp_path / 'tfds'}", "www.cs.toronto.edu",
                          "`tfds build cifar10 --data_dir DIR`", "--config.data_dir=DIR")
    assert seconds < 30, seconds  # Mostly the interpreter, JAX and TensorFlow starting; the probe takes < 1 s.
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_probe_reports_a_refused_connection_and_goes_through_a_proxy(monkeypatch):
    with socket.socket() as unused:  # A port nothing listens on: bound, never listening.
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        started = time.time()
        reason = network_probe.unreachable_reason(f"http://127.0.0.1:{port}/data.tar.gz", timeout_s=2)
    assert reason.startswith(f"127.0.0.1:{port}: ") and time.time() - started < 2
    monkeypatch.setenv("https_proxy", "http://proxy.internal:3128")
    monkeypatch.setenv("no_proxy", "")
    assert network_probe.connection_target("https://www.cs.toronto.edu/x.tar.gz") == ("proxy.internal", 3128)
    monkeypatch.delenv("https_proxy")
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    assert network_probe.connection_target("https://www.cs.toronto.edu/x.tar.gz") == ("www.cs.toronto.edu", 443)


def test_without_the_debian_package_and_offline_fashion_mnist_names_apt_get_first(tmp_path, monkeypatch):
    """README's first command on a machine without dataset-fashion-mnist that cannot download either: the line
    names the Debian package first, then the download route."""
    from genscl_jax import data
    from genscl_jax.config import defaults
    from genscl_jax.data import fashion_mnist_offline

    monkeypatch.delenv(fashion_mnist_offline.SOURCE_DIR_ENV, raising=False)
    monkeypatch.setattr(fashion_mnist_offline, "DEFAULT_SOURCE_DIR", str(tmp_path / "no-debian-package"))
    monkeypatch.setattr(network_probe, "unreachable_reason", lambda url, **kwargs: "does not answer (offline)")
    config = defaults.base_config()
    config.dataset, config.data_dir = "fashion_mnist", str(tmp_path / "tfds")
    with pytest.raises(data.DataError) as error:
        data.readable_source(config)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"fashion_mnist is not prepared in {tmp_path / 'tfds'} and cannot be prepared here "
                              "(its download server does not answer (offline)); run `apt-get install "
                              "dataset-fashion-mnist`"), message
    assert message.index("apt-get install dataset-fashion-mnist") < message.index("`tfds build fashion_mnist")


def test_runlocal_runs_on_synthetic_data_where_only_a_download_would_prepare_the_dataset(monkeypatch):
    """A recipe's `:runlocal` (config.synthetic_if_unprepared) swaps a dataset that needs a download for the synthetic
    task, in a copy that config.json records; a prepared (or locally preparable) dataset, or any other run, is kept."""
    from genscl_jax import data, runner
    from genscl_jax.config import defaults, recipes
    from genscl_jax.data import tfds_builders

    class Unprepared:
        def is_prepared(self):
            return False

    class PreparesOffline(Unprepared):
        PREPARES_OFFLINE = True

    assert tfds_builders.download_needed(Unprepared(), "/data") == ("not prepared in /data, and preparing it needs a "
                                                                    "download")
    assert tfds_builders.download_needed(PreparesOffline(), "/data") is None

    config = recipes.apply_runlocal(defaults.base_config())
    monkeypatch.setattr(data, "download_needed", lambda c: "not prepared in /data, and preparing it needs a download")
    offline = runner._offline_dataset(config)
    assert (offline.dataset, config.dataset) == ("synthetic", "cifar10")
    config.synthetic_if_unprepared = False  # not a runlocal run: the dataset stays, and prepare() says what to do
    assert runner._offline_dataset(config) is config
    config.synthetic_if_unprepared = True
    monkeypatch.setattr(data, "download_needed", lambda c: None)
    assert runner._offline_dataset(config) is config
