"""tools/environment.py: the one record of the machine and versions, as the bench's JSON and header and the
study's results.md write it, read without importing the libraries it names (no TensorFlow in the bench)."""

import datetime
import importlib.metadata
import json
import subprocess
import sys

import pytest

from genscl_jax.tools import environment

# A fresh process: this test session imports TensorFlow elsewhere.
_SCRIPT = """
import datetime, json, sys
from genscl_jax.tools import environment
env = environment.facts()
text = environment.study_lines(env, datetime.datetime(2025, 1, 2, 3, 4, tzinfo=datetime.timezone.utc))
print(json.dumps({"env": env, "text": text, "tensorflow_loaded": "tensorflow" in sys.modules}))
"""


@pytest.mark.slow
def test_facts_name_the_library_versions_without_importing_the_libraries():
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=300, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not out["tensorflow_loaded"]
    import flax
    import tensorflow as tf

    assert out["env"]["libraries"]["flax"] == flax.__version__
    assert out["env"]["libraries"]["tensorflow"] == tf.__version__  # the CPU wheel's distribution has its own name
    assert f"tensorflow {tf.__version__}" in out["text"] and f"flax {flax.__version__}" in out["text"]


def test_the_bench_and_the_study_write_the_same_facts():
    env = environment.facts()
    line = environment.bench_line(env)
    text = environment.study_lines(env, datetime.datetime(2025, 1, 2, 3, 4, tzinfo=datetime.timezone.utc))
    assert env["cpu"] in line and env["cpu"] in text
    assert f"jax {env['jax']}" in line and f"jax {env['jax']}, jaxlib {env['jaxlib']}" in text
    assert f"{env['host_cpus']} CPU cores visible, {env['os']}, devices: cpu" in text
    assert "- written: 2025-01-02 03:04 UTC" in text
    assert env["libraries"]["optax"] == importlib.metadata.version("optax")
