"""Devices to compile for without having them: a Target's mesh from libtpu's or the CUDA plugin's deviceless
topology, and the check that the compiler it needs (the plan-tpu / plan-gpu extra) is installed and matches jaxlib.

The host's own backend stays the CPU (the plan command runs with JAX_PLATFORMS=cpu): these devices are only
compiled for, never run on.
"""

from __future__ import annotations

import importlib.metadata as metadata
import re

from jax.sharding import Mesh

from genscl_jax.runtime import parallel
from genscl_jax.tools import accelerators

# What each extra installs (pyproject.toml [plan-tpu] / [plan-gpu]): jax's own extras, pinned to the installed jax.
_INSTALL = {"tpu": 'pip install "jax[tpu]=={jax}"', "gpu": 'pip install "jax[cuda12-local]=={jax}"'}
_EXTRA = {"tpu": "plan-tpu", "gpu": "plan-gpu"}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _pinned_libtpu() -> str | None:
    """The libtpu series the installed jax's [tpu] extra pins ("0.0.42"), from jax's own metadata."""
    for requirement in metadata.requires("jax") or ():
        match = re.match(r'libtpu\s*==\s*([\d.]+?)(\.\*)?\s*;.*extra\s*==\s*"tpu"', requirement)
        if match:
            return match.group(1)
    return None


def requirements(platform: str) -> list[str]:
    """The exact packages the plan-tpu / plan-gpu extra brings for the installed jax and jaxlib (what CI installs
    with --no-deps into a venv layered over the test venv: .ci/plan_venv)."""
    if platform == "tpu":
        return [f"libtpu=={_pinned_libtpu() or ''}.*"]
    jaxlib = _version("jaxlib")
    return [f"jax-cuda12-plugin=={jaxlib}", f"jax-cuda12-pjrt=={jaxlib}"]


def compiler_problem(platform: str, any_libtpu: bool = False) -> str | None:
    """One line naming what is missing or mismatched for compiling for `platform`, and the command that fixes it;
    None when the compiler is there. `any_libtpu`: a libtpu other than the one jax pins is taken as it is (libtpu
    0.0.52 loads in jax 0.10.2 and compiles the v6e programs its pinned 0.0.42.1 crashes on, BENCHMARKS.md 11.1)."""
    jax_version, jaxlib_version = _version("jax"), _version("jaxlib")
    fix = (f'{_INSTALL[platform].format(jax=jax_version)} (= pip install "genscl-jax[{_EXTRA[platform]}]" with '
           f"this jax)")
    if platform == "tpu":
        installed, pinned = _version("libtpu"), _pinned_libtpu()
        if installed is None:
            return f"compiling for a TPU needs libtpu, which is not installed; run: {fix}"
        if pinned and not (installed == pinned or installed.startswith(pinned + ".")) and not any_libtpu:
            return (f"libtpu {installed} does not match jax {jax_version} (which pins libtpu {pinned}.*); run: {fix}, "
                    f"or pass --any-libtpu to compile with libtpu {installed} as it is")
        return None
    plugin, pjrt = _version("jax-cuda12-plugin"), _version("jax-cuda12-pjrt")
    if plugin is None or pjrt is None:
        return f"compiling for NVIDIA GPUs needs the CUDA plugin (jax-cuda12-plugin), not installed; run: {fix}"
    if plugin != jaxlib_version or pjrt != jaxlib_version:
        return (f"the CUDA plugin {plugin} (pjrt {pjrt}) does not match jaxlib {jaxlib_version}; run: {fix}")
    return None


def target_mesh(target: accelerators.Target) -> Mesh:
    """A 1-D mesh (axis "data", as parallel.create_mesh) over the target's devices, deviceless."""
    from jax.experimental import topologies  # the TPU / CUDA plugin loads here, after compiler_problem said yes

    if target.platform == "tpu":
        topology = topologies.get_topology_desc(topology_name=target.topology, platform="tpu",
                                                chips_per_host_bounds=list(target.chips_per_host_bounds))
    else:
        topology = topologies.get_topology_desc(platform="cuda", topology=target.topology,
                                                target_config=accelerators.gpu_target_config(target))
    return parallel.create_mesh(list(topology.devices))
