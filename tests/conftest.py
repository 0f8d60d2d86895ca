"""Shared test fixtures: tiny configs that exercise the real code paths in seconds on a 2-core CPU."""

import os
import shutil
import subprocess
import tempfile

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

from genscl_jax.config import defaults, recipes  # noqa: E402


def make_tiny_config(**overrides):
    """A synthetic-data pretraining config with the ~20k-parameter tiny ResNet at 8 px (recipes.shrink_to_tiny)."""
    config = recipes.shrink_to_tiny(defaults.base_config())
    config.learning_rate = 0.05
    config.warmup_epochs = 0.0
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


@pytest.fixture
def tiny_config():
    return make_tiny_config
