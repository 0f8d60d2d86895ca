"""The package metadata: pyproject.toml's dependencies are the requirements files', `pip install .` gives an
importable genscl_jax outside the checkout, and the code passes pyproject.toml's lint rules."""

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")


def requirement_names(lines):
    return sorted(re.split(r"[<>=\[ ;]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")
                  for line in lines if line.strip() and not line.strip().startswith(("#", "-r")))


def requirements(name):
    with open(os.path.join(ROOT, name)) as f:
        lines = [line.split("#", 1)[0].strip() for line in f]
    return sorted(line for line in lines if line and not line.startswith("-r"))


def test_pyproject_dependencies_are_the_requirements_files():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    assert sorted(project["dependencies"]) == requirements("requirements.txt")
    assert sorted(project["optional-dependencies"]["torch"]) == requirements("requirements-torch.txt")
    assert sorted(project["optional-dependencies"]["test"]) == requirements("requirements-test.txt")
    assert sorted(project["optional-dependencies"]["notebook"]) == requirements("requirements-notebook.txt")
    assert requirement_names(project["dependencies"]) == requirement_names(requirements("requirements.txt"))


def test_safetensors_is_a_core_dependency():
    """README's install (`pip install -e .`) is enough for `python -m genscl_jax.export --output x.safetensors`."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        assert "safetensors" in requirement_names(tomllib.load(f)["project"]["dependencies"])


@pytest.mark.slow
def test_a_built_wheel_holds_every_module_and_imports_outside_the_checkout(tmp_path):
    """What `pip install .` / `pip install git+URL` install: every module of the checkout, importable from
    elsewhere (here: the wheel unpacked into a folder that is the only genscl_jax on the path)."""
    pytest.importorskip("setuptools")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "wheel"), ROOT], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    shutil.rmtree(os.path.join(ROOT, "build"), ignore_errors=True)  # setuptools' scratch folder
    (wheel,) = (tmp_path / "wheel").iterdir()
    with zipfile.ZipFile(wheel) as archive:
        packaged = {name for name in archive.namelist() if name.endswith(".py")}
        archive.extractall(tmp_path / "site")
    checkout = {os.path.relpath(os.path.join(folder, f), ROOT).replace(os.sep, "/")
                for folder, _, files in os.walk(os.path.join(ROOT, "genscl_jax")) for f in files if f.endswith(".py")}
    assert checkout <= packaged, sorted(checkout - packaged)
    probe = ("import genscl_jax, genscl_jax.data.registry as r, genscl_jax.config.defaults as c; "
             "print(genscl_jax.__file__, len(r.NAMES), len(c.base_config()))")
    run = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(tmp_path / "site")))
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith(str(tmp_path / "site")), run.stdout


@pytest.mark.slow
def test_code_passes_the_lint_rules():
    ruff = shutil.which("ruff") or os.path.join(os.path.dirname(sys.executable), "ruff")
    if not os.path.exists(ruff):
        pytest.skip("ruff is not installed (requirements-test.txt installs it)")
    result = subprocess.run([ruff, "check", "--output-format", "concise", "."], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]


def test_every_subpackage_is_a_package():
    """setuptools' find includes only folders with __init__.py: a module in a folder without one would be left
    out of `pip install .`."""
    for folder, _, files in os.walk(os.path.join(ROOT, "genscl_jax")):
        if any(f.endswith(".py") for f in files) and "__pycache__" not in folder:
            assert "__init__.py" in files, folder
