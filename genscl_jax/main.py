"""Command line: python -m genscl_jax.main --config configs/X.py [--config.key=value ...] --workdir DIR

Thin on purpose: flags -> validated config -> the mode's run() -> DIR/summary.json. The logic lives in importable
modules that notebooks call directly.
"""

from __future__ import annotations

import os
import re
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

from genscl_jax import runner
from genscl_jax.config import keys, recipes
from genscl_jax.runtime import preemption

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file in configs/.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events and summary.json.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Also show the libraries' INFO logging (orbax, tfds, TensorFlow, jax, "
                             "absl), every metric at each log step and the parameter table; absl's --verbosity too.")
_INTERRUPTED = 128 + 2  # a shell's exit status for SIGINT, which scripts and schedulers read as "interrupted"
_NOTHING_UNSAVED = "interrupted by Ctrl-C, with no trained step unsaved; the same command resumes"
_STOPPED_AT_ONCE = "stopped at once by Ctrl-C, saving nothing more; the same command resumes from the newest checkpoint"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    started = time.time()
    runner.configure_console(verbose=_VERBOSE.value or flags.FLAGS["verbosity"].present)
    # Signals are answered while the main thread is busy in C++ too (runtime/preemption.py): this ends the process.
    preemption.set_exit_handler(_exit_for_signal)
    try:
        summary = runner.run(_CONFIG.value, _WORKDIR.value, recipe=config_path(sys.argv) or "")
    except keys.ConfigError as e:
        # One line, no traceback: these are the user's to fix, and the message says how.
        print(f"config error: {e}", file=sys.stderr)
        sys.exit(2)
    except runner.RunError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        # A second Ctrl-C, or one before the run could take it as a request: nothing more is saved.
        _exit_at_once(_STOPPED_AT_ONCE)
    at = f" at step {summary['steps']}" if summary.get("steps") is not None else ""
    if summary.get("interrupted"):
        if summary.get("steps"):
            print(f"interrupted by Ctrl-C{at}, checkpoint saved; the same command resumes", file=sys.stderr)
        else:  # taken before the first step of a fresh run (or in a stage with no loop): nothing needed saving
            print(_NOTHING_UNSAVED, file=sys.stderr)
        sys.exit(_INTERRUPTED)
    if summary.get("preempted"):
        logging.warning("Preempted%s; the checkpoint is saved and a rerun resumes.", at)
        return
    headline = {k: summary[k] for k in ("final_loss", "test_top1", "knn_top1", "probe_top1", "linear_eval_top1",
                                        "linear_eval_top5") if summary.get(k) is not None}
    # The run's own time, from its summary: a finished workdir, rerun, answers with the same line.
    print(f"{summary['mode']} done in {summary.get('total_wall_seconds', time.time() - started):.0f} s: "
          + ", ".join(f"{k}={v:.4f}" for k, v in headline.items())
          + f" (summary: {os.path.join(_WORKDIR.value, 'summary.json')})")


def _exit_for_signal(why: str) -> None:
    """preemption's exit handler, called from its watcher thread while the main thread is busy (in C++): a second
    Ctrl-C, or a stop request where every trained step is already in a checkpoint (data preparation, compilation,
    feature extraction)."""
    if why == "second interrupt":
        _exit_at_once(_STOPPED_AT_ONCE)
    if why == "interrupted":
        _exit_at_once(_NOTHING_UNSAVED)
    logging.warning("Preempted, with no trained step unsaved; a rerun resumes.")
    _exit_at_once(None, status=0)


def _exit_at_once(message: str | None, status: int = _INTERRUPTED) -> None:
    """Prints `message` and ends the process now with `status` (the interrupted status, 130), skipping the interpreter's
    shutdown. sys.exit(130) is not enough: under `python -m`, a KeyboardInterrupt that went through code run by
    exec() or eval() of a string (dataclasses build their methods so, and flax builds modules while a model is
    made) leaves CPython's "unhandled KeyboardInterrupt" flag set although main caught it, and the process then
    kills itself with SIGINT (status -2) instead. The shutdown would also wait for threads and jax.distributed,
    which a second Ctrl-C asked not to wait for. What the run saved is on disk; a save still in flight is dropped as
    kill -9 drops one (checkpoints are committed atomically, and a resume takes the newest committed one)."""
    if message:
        print(message, file=sys.stderr)
    logging.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with every mistake in the config flags as one line (exit 2) instead of a traceback:
    a config file that is missing, does not parse (its line) or has no get_config, and an unknown --config.KEY
    (with the closest keys), before the recipe is even loaded."""
    recipe = config_path(argv)
    problem = recipes.recipe_file_problem(recipe) if recipe else None
    if problem:
        _exit_with_config_error(problem)
    for arg in argv[1:]:
        if arg.startswith("--config."):
            error = keys.unknown_key_error(arg[len("--config."):].split("=", 1)[0])
            if error:
                _exit_with_config_error(error)
    try:
        return flags.FLAGS(argv)
    except Exception as e:  # noqa: BLE001 -- the recipe file's own code runs here, and may raise anything
        _exit_with_config_error(_loading_error(e, recipe))


def _loading_error(error: Exception, recipe: str | None) -> str:
    """One line for an error while absl parsed the flags and ml_collections ran the recipe."""
    # ml_collections wraps the recipe's or the parser's own error; its last line is the one that says what.
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    last = re.sub(r"^\w+(Error|Exception): ", "", lines[-1]) if lines else type(error).__name__
    wrong_type = re.match(r"Could not override field '(\w+)' \(reference\)\. (.*) is of original type <class "
                          r"'(\w+)'> and cannot be casted to type <class '(\w+)'>", last)
    if wrong_type:  # a recipe assigned a value of the wrong type to a key of base_config(); name the key in full
        leaf, value, given, expected = wrong_type.groups()
        named = " or ".join(f"config.{k}" for k in keys.keys_named(leaf)) or f"config.{leaf}"
        return f"{recipe}: {named}={value}: expected {expected}, got {given}"
    if isinstance(error, (flags.Error, OSError)) or not recipe:
        return last
    return f"{recipe.split(':', 1)[0]}: get_config() raised {type(error).__name__}: {last}"


def _exit_with_config_error(error: object) -> None:
    print(f"config error: {error}", file=sys.stderr)
    sys.exit(2)


def config_path(argv: list[str]) -> str | None:
    """The --config value of a command line, read before absl parses it (the recipe must be importable by then)."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg[len("--config="):]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


if __name__ == "__main__":
    if config_path(sys.argv):
        recipes.make_recipe_importable(config_path(sys.argv))
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main, flags_parser=parse_flags)
