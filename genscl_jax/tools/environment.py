"""The machine and software a measurement ran on: one dict of facts (`facts()`), and the two ways the tools write it.

The bench records the dict in its JSON and prints `bench_line` above its results; the study's results.md opens
with `study_lines`. Library versions are read from the installed packages' metadata, so nothing is imported to
learn them: the bench never loads TensorFlow.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
from typing import Any

# Label -> the distributions that may provide it (TensorFlow's CPU-only wheel has its own name).
LIBRARIES = {"flax": ("flax",), "optax": ("optax",), "orbax.checkpoint": ("orbax-checkpoint",),
             "tensorflow": ("tensorflow", "tensorflow-cpu")}


def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def library_versions() -> dict[str, str]:
    """{label: version} of the LIBRARIES installed here (those missing are left out)."""
    versions = {}
    for label, distributions in LIBRARIES.items():
        for name in distributions:
            try:
                versions[label] = importlib.metadata.version(name)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return versions


def facts() -> dict[str, Any]:
    """Date, JAX and jaxlib, the devices, the host (CPU model, cores, OS), XLA_FLAGS, Python and the libraries."""
    import jax  # here, not at import: the study's driver imports this module and runs JAX only in its runs
    import jaxlib

    devices = jax.devices()
    return {
        "date": datetime.date.today().isoformat(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_platforms": sorted({d.platform for d in devices}),
        "num_devices": len(devices),
        "num_processes": jax.process_count(),
        "cpu": cpu_model_name(),
        "host_cpus": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "python": platform.python_version(),
        "libraries": library_versions(),
    }


def bench_line(env: dict[str, Any]) -> str:
    """The bench's one-line header: date, JAX, the devices, the CPU and XLA_FLAGS."""
    return (f"# {env['date']} jax {env['jax']} on {env['num_devices']} x {env['device_kind']} ({env['backend']}), "
            f"cpu: {env['cpu']} x{env['host_cpus']}, XLA_FLAGS={env['xla_flags']!r}")


def study_lines(env: dict[str, Any], written: datetime.datetime) -> str:
    """results.md's Markdown list: the machine, when it was written (UTC) and the versions."""
    versions = {"python": env["python"], "jax": env["jax"], "jaxlib": env["jaxlib"], **env["libraries"]}
    return (f"- machine: {env['cpu']}, {env['host_cpus']} CPU cores visible, {env['os']}, devices: "
            f"{', '.join(env['device_platforms'])}\n"
            f"- written: {written.astimezone(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n"
            f"- versions: {', '.join(f'{k} {v}' for k, v in versions.items())}\n")
