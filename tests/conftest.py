"""Shared test fixtures: tiny configs that exercise the real code paths in seconds on a 2-core CPU."""

import os
import shutil
import subprocess
import tempfile
import textwrap

import pytest

# Tests run tiny programs whose cost is almost all XLA compile time: skipping backend optimisation compiles them
# ~2.5x faster, and a persistent cache shared by the test session compiles each identical program once.
# Subprocesses started by tests inherit both through the environment.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "genscl_jax_test_xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# torchvision (for the weight-conversion tests) must be imported before TensorFlow: with torch 2.14 the other
# order segfaults inside triton's import. The product itself only imports torch (weights-only loading), which
# is safe in either order.
try:
    import torch  # noqa: F401
    import torchvision  # noqa: F401
except ImportError:
    pass

from genscl_jax.config import defaults  # noqa: E402


def make_tiny_config(**overrides):
    """A synthetic-data pretraining config with a ~20k-parameter ResNet at 8 px."""
    config = defaults.base_config()
    config.dataset = "synthetic"
    config.image_size = 8
    config.model = "resnet10"
    config.width_multiplier = 0.0625
    config.stem = "cifar"
    config.head.hidden_dim = 16
    config.head.output_dim = 8
    config.batch_size = 8
    config.num_train_steps = 4
    config.learning_rate = 0.05
    config.warmup_epochs = 0.0
    config.checkpoint_every_steps = 2
    config.log_every_steps = 1
    config.eval_batch_size = 64
    config.moco.queue_size = 32
    config.linear_eval.batch_size = 64
    config.linear_eval.num_epochs = 1
    return set_keys(config, overrides)


def set_keys(config, overrides):
    """Sets dotted keys ("moco.enabled") of a ConfigDict; returns it."""
    for key, value in overrides.items():
        target = config
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return config


def network_namespace_problem(tools=("unshare", "ip")):
    """Why a private network namespace (`unshare --net`, loopback up) cannot be made here, or None. Tests that start
    a server or must not reach the network run inside one, and skip with this reason elsewhere."""
    for tool in tools:
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (util-linux / iproute2)"
    probe = subprocess.run(["unshare", "--net", "sh", "-c", "ip link set lo up"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`unshare --net` failed (needs root or CAP_SYS_ADMIN): {probe.stderr.strip()[:200]}"
    return None


def write_config(path, **settings):
    """A config file for a ~20k-parameter ResNet on 8 px synthetic images (what conftest.make_tiny_config makes,
    without importing the test suite's conftest and its torch into every CLI start)."""
    lines = "".join(f"    c.{key} = {value!r}\n" for key, value in settings.items())
    path.write_text(textwrap.dedent("""\
        from genscl_jax.config import defaults


        def get_config():
            c = defaults.base_config()
            c.dataset, c.image_size, c.model, c.width_multiplier, c.stem = "synthetic", 8, "resnet10", 0.0625, "cifar"
            c.head.hidden_dim, c.head.output_dim = 16, 8
            c.batch_size, c.learning_rate, c.warmup_epochs = 8, 0.05, 0.0
            c.log_every_steps, c.eval_batch_size, c.moco.queue_size = 1, 64, 32
            c.linear_eval.batch_size = 64
        """) + lines + "    return c\n")
    return str(path)


def mount_namespace_problem():
    """Why a private mount namespace (`unshare --mount`, where a small tmpfs stands for a full disk) cannot be made
    here, or None."""
    if shutil.which("unshare") is None:
        return "`unshare` is not installed (util-linux)"
    probe = subprocess.run(["unshare", "--mount", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`unshare --mount` with a tmpfs failed (needs root or CAP_SYS_ADMIN): {probe.stderr.strip()[:200]}"
    return None


# Lines TensorFlow and XLA print at start-up, whatever happens.
STARTUP_NOISE = ("oneDNN", "cpu_feature", "rebuild TensorFlow", "absl::InitializeLog")


def last_line(err):
    """The last line a command printed to stderr, start-up noise aside."""
    lines = [line for line in err.splitlines() if line.strip() and not any(n in line for n in STARTUP_NOISE)]
    return lines[-1] if lines else ""


@pytest.fixture
def tiny_config():
    return make_tiny_config
