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
from genscl_jax.config import recipes, validation

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file in configs/.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events and summary.json.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Also show the libraries' INFO logging (orbax, tfds, TensorFlow, jax, "
                             "absl), every metric at each log step and the parameter table; absl's --verbosity too.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    started = time.time()
    runner.configure_console(verbose=_VERBOSE.value or flags.FLAGS["verbosity"].present)
    try:
        summary = runner.run(_CONFIG.value, _WORKDIR.value, recipe=config_path(sys.argv) or "")
    except validation.ConfigError as e:
        # One line, no traceback: these are the user's to fix, and the message says how.
        print(f"config error: {e}", file=sys.stderr)
        sys.exit(2)
    except runner.RunError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    if summary.get("preempted"):
        logging.warning("Preempted at step %d; the checkpoint is saved and a rerun resumes.", summary["steps"])
        return
    headline = {k: summary[k] for k in ("final_loss", "test_top1", "knn_top1", "probe_top1", "linear_eval_top1",
                                        "linear_eval_top5") if summary.get(k) is not None}
    print(f"{summary['mode']} done in {time.time() - started:.0f} s: "
          + ", ".join(f"{k}={v:.4f}" for k, v in headline.items())
          + f" (summary: {os.path.join(_WORKDIR.value, 'summary.json')})")


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with every mistake in the config flags as one line (exit 2) instead of a traceback:
    an unknown --config.KEY names the closest keys, before the recipe is even loaded."""
    for arg in argv[1:]:
        if arg.startswith("--config."):
            error = validation.unknown_key_error(arg[len("--config."):].split("=", 1)[0])
            if error:
                _exit_with_config_error(error)
    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as e:
        # ml_collections wraps the recipe's or the parser's own error; its last line is the one that says what.
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        last = re.sub(r"^\w+(Error|Exception): ", "", lines[-1]) if lines else type(e).__name__
        _exit_with_config_error(last)


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
