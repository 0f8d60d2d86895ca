"""The two test tiers: `pytest -m "not slow"` (every test that neither trains a run nor starts a process, in about
two minutes) and the whole suite. Read from the test files' source, so these checks cost nothing to run."""

import ast
import functools
import importlib.util
import os

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
# What makes a test slow: a call that starts a process, or that trains (builds a trainer and runs its compiled
# step, or runs the loop or the runner).
PROCESS_CALLS = {("subprocess", "run"), ("subprocess", "Popen"), ("subprocess", "check_call"),
                 ("subprocess", "check_output"), ("subprocess", "call"), ("runner", "run"), ("train_loop", "run"),
                 # The study runs each of its runs as a process of the command line (its main too, after checking
                 # its arguments: a long test of it is caught by test_every_long_test_is_slow).
                 ("study", "run_study"), ("study", "execute")}
TRAINING_ATTRIBUTES = {"build_trainer", "train_step"}
TRAINING_NAMES = {"build_trainer", "run_steps", "NotebookClient"}


def all_test_files():
    return sorted(name for name in os.listdir(TESTS) if name.startswith("test_") and name.endswith(".py"))


@functools.lru_cache(maxsize=None)
def parse(name):
    with open(os.path.join(TESTS, name)) as f:
        return ast.parse(f.read())


def direct_cause(node):
    """The first call under `node` that trains or starts a process, or None; and the names it refers to."""
    names = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute):
            if (isinstance(sub.value, ast.Name) and (sub.value.id, sub.attr) in PROCESS_CALLS) \
                    or sub.attr in TRAINING_ATTRIBUTES:
                return ast.unparse(sub), names
        elif isinstance(sub, ast.Name):
            if sub.id in TRAINING_NAMES:
                return sub.id, names
            names.add(sub.id)
        elif isinstance(sub, ast.arg):
            names.add(sub.arg)  # a fixture of the same file
    return None, names


def heavy_tests(tree):
    """{test name: why it is slow} for the file's tests that train or start a process, directly or through the
    file's own functions, classes and fixtures."""
    defined = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    causes = {}

    def cause(name, seen):
        if name not in causes:
            why, names = direct_cause(defined[name])
            for other in sorted(names & defined.keys() - seen - {name}):
                if why:
                    break
                inner = cause(other, seen | {name})
                why = inner and f"{other} -> {inner}"
            causes[name] = why
        return causes[name]

    return {name: cause(name, set()) for name in defined if name.startswith("test_") and cause(name, set())}


def marked_slow(tree):
    """The file's tests marked slow (all of them under a module-level `pytestmark`)."""
    tests = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
    module_marks = [ast.unparse(n.value) for n in tree.body if isinstance(n, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in n.targets)]
    if any("slow" in mark for mark in module_marks):
        return {t.name for t in tests}
    return {t.name for t in tests if any("mark.slow" in ast.unparse(d) for d in t.decorator_list)}


def test_every_test_that_trains_or_starts_a_process_is_marked_slow():
    unmarked = []
    for name in all_test_files():
        tree = parse(name)
        slow = marked_slow(tree)
        unmarked += [f"{name}::{test} ({why})" for test, why in heavy_tests(tree).items() if test not in slow]
    assert not unmarked, ("mark these `@pytest.mark.slow` (or the file `pytestmark = pytest.mark.slow`), so the "
                          "fast tier stays fast: " + "; ".join(unmarked))


def test_every_long_test_is_slow():
    """`long(minutes)` orders the suite's tests of a minute or more: the fast tier must leave every one of them out."""
    unmarked = []
    for name in all_test_files():
        tree = parse(name)
        long = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)
                and any("mark.long" in ast.unparse(d) for d in n.decorator_list)}
        unmarked += [f"{name}::{test}" for test in sorted(long - marked_slow(tree))]
    assert not unmarked, "mark these `@pytest.mark.slow` too: " + "; ".join(unmarked)


def test_the_fast_tier_has_tests_in_most_files():
    """`-m "not slow"` selects the unit tests: at least half the files keep a fast test (none would be exit 5)."""
    files, with_fast = all_test_files(), []
    for name in files:
        tree = parse(name)
        tests = {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}
        if tests - marked_slow(tree):
            with_fast.append(name)
    assert len(with_fast) >= len(files) // 2, with_fast


def test_no_test_file_imports_another():
    """Shared helpers live in conftest.py or helpers.py: importing a test file runs its module code (and, under
    xdist, can collect its tests twice)."""
    found = []
    for name in all_test_files():
        for node in ast.walk(parse(name)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{name} imports {m}" for m in modules if m.split(".")[0].startswith("test_")]
    assert not found, found


def test_scripts_run_in_subprocesses_import_no_torch():
    """The scripts tests start as processes (a 2-process run's workers, the 8-device equivalence) take the tiny configs
    from helpers.py: conftest.py imports torch and torchvision first (6 s of each process's start, for nothing)."""
    scripts = [name for name in os.listdir(TESTS) if name.endswith(".py") and not name.startswith("test_")
               and name not in ("conftest.py", "helpers.py")]
    assert {"multihost_worker.py", "multidevice_equivalence.py"} <= set(scripts)
    found, needle = [], "from conftest " + "import"  # split, so that this file's own string does not match
    for name in [*scripts, *all_test_files()]:
        for node in ast.walk(parse(name)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and needle in node.value:
                found.append(f"{name}: a script in a string imports conftest")
            elif name in scripts and isinstance(node, ast.ImportFrom) and node.module == "conftest":
                found.append(f"{name} imports conftest")
    assert not found, found
    helpers_imports = set()
    for node in ast.walk(parse("helpers.py")):
        if isinstance(node, ast.Import):
            helpers_imports |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            helpers_imports.add((node.module or "").split(".")[0])
    assert not helpers_imports & {"torch", "torchvision", "conftest"}, helpers_imports


@pytest.mark.parametrize("source,expected", [
    ("import subprocess\ndef test_a():\n    subprocess.run(['true'])\n", {"test_a"}),
    ("def run(x):\n    return x.build_trainer()\n@pytest.fixture\ndef trained():\n    return run(1)\n"
     "def test_b(trained):\n    pass\n", {"test_b"}),
    ("class Worker:\n    def go(self):\n        subprocess.Popen([])\ndef test_c():\n    Worker().go()\n", {"test_c"}),
    ("def train_step(model):\n    return model\ndef test_d():\n    train_step(1)\n", set()),
])
def test_the_check_finds_training_and_processes_through_helpers_fixtures_and_classes(source, expected):
    assert set(heavy_tests(ast.parse(source))) == expected


class FakeSession:
    def __init__(self, markexpr, keyword=""):
        self.options = {"markexpr": markexpr, "keyword": keyword}
        self.config = self
        self.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED

    def getoption(self, name, default=None):
        return self.options.get(name, default)


@pytest.mark.parametrize("markexpr,keyword,status", [
    ("not slow", "", pytest.ExitCode.OK),  # a file of slow tests only: the fast tier has none of them
    ("", "", pytest.ExitCode.NO_TESTS_COLLECTED),  # nothing found, no tier asked for: still pytest's 5
    ("not slow", "typo", pytest.ExitCode.NO_TESTS_COLLECTED),  # -k matched nothing: a mistake, so 5
])
def test_the_fast_tier_of_only_slow_tests_exits_0_with_one_line(markexpr, keyword, status, capsys):
    import conftest

    session = FakeSession(markexpr, keyword)
    conftest.pytest_sessionfinish(session, session.exitstatus)
    assert session.exitstatus == status
    assert ("every test selected is slow" in capsys.readouterr().out) == (status == pytest.ExitCode.OK)


def test_conftest_adds_the_xla_flag_once(monkeypatch):
    """An xdist worker inherits XLA_FLAGS from the controller and imports conftest again; JAX's persistent cache key
    hashes every word of XLA_FLAGS, so a second copy of the flag would key the workers' programs apart from those
    of a run without xdist and of subprocesses that import conftest."""
    import conftest

    monkeypatch.setenv("XLA_FLAGS", f"--xla_force_host_platform_device_count=2 {conftest.NO_BACKEND_OPTIMIZATION}")
    spec = importlib.util.spec_from_file_location("conftest_imported_again", os.path.join(TESTS, "conftest.py"))
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    assert os.environ["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=2",
                                               conftest.NO_BACKEND_OPTIMIZATION]
