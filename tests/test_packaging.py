"""The package metadata: pyproject.toml's dependencies are requirements.txt's, and the package it declares holds
every module of genscl_jax (subpackages included)."""

import os
import re
import tomllib

ROOT = os.path.join(os.path.dirname(__file__), "..")


def requirement_names(lines):
    return sorted(re.split(r"[<>=\[ ;]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")
                  for line in lines if line.strip() and not line.strip().startswith(("#", "-r")))


def test_pyproject_dependencies_are_requirements_txt():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        lines = [line.split("#", 1)[0] for line in f]
    required = sorted(line.strip() for line in lines if line.strip() and not line.startswith("-r"))
    assert sorted(project["dependencies"]) == required
    assert requirement_names(project["dependencies"]) == requirement_names(lines)


def test_every_subpackage_is_a_package():
    """setuptools' find includes only folders with __init__.py: a module in a folder without one would be left
    out of `pip install .`."""
    for folder, _, files in os.walk(os.path.join(ROOT, "genscl_jax")):
        if any(f.endswith(".py") for f in files) and "__pycache__" not in folder:
            assert "__init__.py" in files, folder
