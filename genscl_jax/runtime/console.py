"""What a run prints: its own lines on process 0's stderr, the libraries' logging quiet unless asked for.

A run's narrative (start-up, progress, resume) goes to stderr with the warnings, one stream in one order; stdout
keeps the result (main's final line). On a terminal the progress is a live bar (training.progress); elsewhere (CI,
SLURM, Colab's log) plain lines. Only process 0 prints; every process still logs its own warnings.

Quiet (the command line's default, `configure(verbose=False)`): orbax, tfds, TensorFlow, clu, jax and absl log
only WARNING and above, and TensorFlow's C++ INFO lines are off (import_tensorflow). A few library warnings that say
nothing to the user are dropped by name (_BENIGN_WARNINGS), and so are orbax's tracebacks of an exception it raises
again to the caller (a failed save: the run's own one-line error says it). genscl_jax's own logging is untouched:
its warnings (preemption, TensorBoard unwritable, a damaged checkpoint skipped, ...) always show. Nothing is
configured at import, so a notebook or a library caller keeps its own logging setup.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import sys
import tempfile

import jax

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Library warnings that are noise here: (where the record comes from, what its message contains), each with why.
_BENIGN_WARNINGS = (
    # orbax, for the read-only manager that restores a pretrained encoder: it only says which options it ignores.
    ("orbax", "CheckpointManagerOptions.read_only=True"),
    ("orbax", "Given directory is read only"),
    # tfds, listing its data_dir: a dataset folder being prepared (or another dataset's unfinished one).
    ("tensorflow_datasets", "has no dataset_info.json"),
    # TensorFlow deprecations inside tfds's own code: nothing the user can change.
    (os.path.join("tensorflow", "python", "util", "deprecation.py"), "is deprecated"),
)

_verbose = False  # --verbose: every library's logging
_quiet = False  # configured quiet (the command line without --verbose); False too where nothing was configured


def configure(verbose: bool) -> None:
    """Sets up the process's console for a command-line run; `verbose` shows every library's INFO logging."""
    global _verbose, _quiet
    _verbose, _quiet = verbose, not verbose
    if verbose:
        for name in ("absl", "tensorflow"):  # an earlier drop_benign_warnings() in this process is undone
            logger = logging.getLogger(name)
            for dropping in [f for f in logger.filters if isinstance(f, _BenignFilter)]:
                logger.removeFilter(dropping)
        return
    drop_benign_warnings()
    # Read by TensorFlow's C++ logging when TensorFlow loads (only reading a tfds dataset loads it): INFO lines off,
    # its warnings kept. A value the user set stays.
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    quiet = _LibraryFilter()
    for handler in logging.root.handlers:  # absl's handler under absl.app; any handler a caller installed
        if not any(isinstance(f, _LibraryFilter) for f in handler.filters):
            handler.addFilter(quiet)
    if live():
        _log_above_bars()


def import_tensorflow() -> None:
    """Imports TensorFlow (every command-line run does, for TensorBoard and tf.data) without its C++ INFO lines
    when quiet.

    TensorFlow 2.16+ writes its start-up notes (oneDNN, CPU instructions) through absl's C++ logging before that is
    initialised: straight to file descriptor 2, whatever TF_CPP_MIN_LOG_LEVEL says. The import runs with fd 2 caught
    in a file; what it wrote is then passed on, less the INFO lines.
    """
    if not _quiet or "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is None:
        return
    sys.stderr.flush()
    with tempfile.TemporaryFile() as caught:
        saved = os.dup(2)
        os.dup2(caught.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            sys.stderr.write(_without_cpp_info(caught.read().decode(errors="replace")))
            sys.stderr.flush()


_CPP_LOG_LINE = re.compile(r"^[IWEF]\d{4} ")  # absl/glog C++ prefix: severity, MMDD, time, thread, file:line]


def _without_cpp_info(text: str) -> str:
    """C++ log output without its INFO records (each with its continuation lines) and absl's pre-init notice."""
    kept, dropping = [], False
    for line in text.splitlines(keepends=True):
        if _CPP_LOG_LINE.match(line) or line.startswith("WARNING: All log messages before absl::InitializeLog()"):
            dropping = line.startswith(("I", "WARNING: All log messages"))
        if not dropping:
            kept.append(line)
    return "".join(kept)


def verbose() -> bool:
    """Whether the user asked for the libraries' logging (--verbose or absl's --verbosity)."""
    return _verbose


def is_primary() -> bool:
    return jax.process_index() == 0


def live() -> bool:
    """Whether progress shows as live bars: stderr is a terminal."""
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def say(line: str, *, log_elsewhere: bool = False) -> None:
    """One line of the run's narrative on process 0's stderr (above any live bar). `log_elsewhere`: the other
    processes log it (INFO), for facts of each process (e.g. the step it resumed from)."""
    if not is_primary():
        if log_elsewhere:
            logging.getLogger(__name__).info("%s", line)
        return
    if live():
        from tqdm import tqdm
        tqdm.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr, flush=True)


def drop_benign_warnings() -> None:
    """Drops _BENIGN_WARNINGS at the loggers they come through ("absl": orbax and tfds; "tensorflow"), for every
    caller: the command line, and a notebook or script calling load_encoder, export or data.resolve, where no handler
    of ours is installed. Only those named records go; the caller's logging setup is otherwise untouched. --verbose
    (configure(verbose=True) first) keeps them. Called by the operations that cause them, never at import."""
    if _verbose:
        return
    for name in ("absl", "tensorflow"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _BenignFilter) for f in logger.filters):
            logger.addFilter(_BenignFilter())


def _is_benign(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return any(where in record.pathname and what in message for where, what in _BENIGN_WARNINGS)


class _BenignFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _is_benign(record)


class _LibraryFilter(logging.Filter):
    """Passes genscl_jax's records, and the libraries' WARNING and above except _BENIGN_WARNINGS.

    absl's logging (orbax, tfds, clu use it) arrives under the logger "absl" whatever module called it; the
    record's pathname says which one did."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("genscl_jax") or record.pathname.startswith(_PACKAGE_DIR):
            return True
        if record.levelno < logging.WARNING:
            return False
        if "orbax" in record.pathname and record.exc_info:
            # A failed background save, logged with its traceback by each orbax thread it passed through (five
            # times over 350 lines for one full disk, the last ones possibly after the run's own error line). orbax
            # raises it again in the caller's save or wait_until_finished, and the run reports it in one line
            # (training/checkpointing.py: CheckpointError); --verbose shows the tracebacks.
            return False
        return not _is_benign(record)


class _AboveBars:
    """A stream that writes above tqdm's live bars (clears them, writes, redraws), so a warning logged while a
    bar is shown is a line of its own rather than text glued to the bar."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        from tqdm import tqdm
        with tqdm.external_write_mode(file=self._stream):
            return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _log_above_bars() -> None:
    from absl import logging as absl_logging

    handler = absl_logging.get_absl_handler().python_handler
    if handler.stream is sys.stderr:
        handler.stream = _AboveBars(sys.stderr)
