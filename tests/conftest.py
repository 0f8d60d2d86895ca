"""Shared test fixtures: tiny configs that exercise the real code paths in seconds on a 2-core CPU."""

import os
import re
import shutil
import subprocess
import tempfile
import textwrap

import pytest

# Tests run tiny programs whose cost is almost all XLA compile time: skipping backend optimisation compiles them
# ~2.5x faster, and a persistent cache shared by the test session compiles each identical program once.
# Subprocesses started by tests inherit both through the environment. The flag is added once: JAX's cache key
# hashes every word of XLA_FLAGS, so an xdist worker (which inherits the flag from the controller and imports this
# file again) or a test's subprocess that imports it would otherwise key the same program differently, and miss.
NO_BACKEND_OPTIMIZATION = "--xla_backend_optimization_level=0"
if NO_BACKEND_OPTIMIZATION not in os.environ.get("XLA_FLAGS", "").split():
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + NO_BACKEND_OPTIMIZATION).strip()
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

import helpers  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "long(minutes): a test of a minute or more (runs of the command line in "
                                       "subprocesses); the suite starts these first, longest first")
    config.addinivalue_line("markers", "slow: trains a run or starts a process; `-m \"not slow\"` (the fast tier) "
                                       "leaves it out (tests/test_tiers.py checks that such tests carry it)")


def pytest_sessionfinish(session, exitstatus):
    """The fast tier over files that hold only slow tests selects none: that is an answer, not an error, so it
    says so in one line and exits 0 instead of pytest's 5 ("no tests ran")."""
    markexpr = session.config.getoption("markexpr", "") or ""
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and "not slow" in markexpr \
            and not session.config.getoption("keyword", ""):
        print(f"\nevery test selected is slow (trains a run or starts a process), so -m {markexpr!r} runs none; "
              "the whole suite runs them")
        session.exitstatus = pytest.ExitCode.OK


def pytest_collection_modifyitems(items):
    """The long tests first, longest first, then the rest in file order: pytest-xdist hands the first tests out to
    its workers in turn, so the two workers end together, instead of one running the study alone at the end while
    the other has finished (CI's time, .ci/run)."""
    def minutes(item):
        marker = item.get_closest_marker("long")
        return marker.kwargs.get("minutes", 1) if marker else 0

    items.sort(key=lambda item: -minutes(item))  # stable: file order within each length


# The tiny configs live in helpers.py, which imports no torch: the scripts tests run in subprocesses
# (multihost_worker.py, multidevice_equivalence.py) build them from there and skip torch's 6 s import.
WATCHING_OFF, make_tiny_config, set_keys = helpers.WATCHING_OFF, helpers.make_tiny_config, helpers.set_keys


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
    """A config file of the tiny config (what make_tiny_config makes: recipes.shrink_to_tiny, watching off) with
    `settings` ({"checkpoint_every_steps": 3, "moco.enabled": True}) on top, for runs of the command line, which
    then import neither this conftest nor its torch."""
    lines = "".join(f"    c.{key} = {value!r}\n" for key, value in {**WATCHING_OFF, **settings}.items())
    path.write_text(textwrap.dedent("""\
        from genscl_jax.config import defaults, recipes


        def get_config():
            c = recipes.shrink_to_tiny(defaults.base_config())
            c.learning_rate, c.warmup_epochs = 0.05, 0.0
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


# The prefix of absl's and C++'s log lines (I1207 07:28:46.488179 140667 file.py:905] ...), shown at --verbosity=1.
LOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d")


def without_log_lines(err):
    """`err` without its log lines: what the command itself printed, for a run with --verbosity=1."""
    return "\n".join(line for line in err.splitlines() if not LOG_LINE.match(line))


@pytest.fixture
def tiny_config():
    return make_tiny_config
