"""SIGTERM (spot preemption, maintenance, `launch/tpu_vm.sh stop`) -> every process stops at one and the same step.

One process: the SIGTERM handler sets a flag that the loop reads between steps; a step in flight is never cut.

Several processes: SIGTERM reaches them at different steps, or only some of them. A process that stopped on its own
flag would save alone while the others wait in the next step's collectives forever. So every `every_steps` steps
all processes agree whether to stop, through jax.distributed's coordination service:

    each process that was signalled writes a key  genscl_jax/preemption/<loop>/<step>/<process>
    all processes meet at a barrier
    all processes list  genscl_jax/preemption/<loop>/<step>/  and stop if it holds any key

Every key of a step is written before the barrier opens and listed after it, so all processes see the same list
and stop at the same step. The agreement talks only to the coordinator (two round trips per check); it launches
nothing on the devices, so it never waits for the steps queued there, as an all-gather of the flag would. JAX's
own preemption sync point is not used: its SIGTERM listener is replaced by this Python handler, and mixing the two
let one process stop alone.

jax.distributed.initialize installs that listener, which takes SIGTERM without ending the process or telling
anyone. So the runner calls `listen()` right after it: a SIGTERM that comes while the model is built or a checkpoint
is restored is kept as a request, and the loop stops at its first check (at the step it resumed from, saving
nothing new).

Ctrl-C (SIGINT) is the same request, made by a person: the run saves at the step it reached and exits with an
interrupt's status (130; `was_interrupted()` tells the runner), where KeyboardInterrupt would lose every step since
the last periodic checkpoint. A second Ctrl-C raises KeyboardInterrupt at once, for a save that takes too long.

Prompt everywhere: Python runs its signal handlers only between bytecodes of the main thread, so one stuck in C++
(an XLA compile, a long TensorFlow or numpy call) would hold a signal for as long as that call takes. So `listen`
also points signal.set_wakeup_fd at a pipe that a watcher thread reads: the C-level handler writes every signal's
number there at once, and the watcher takes the request (or the second Ctrl-C) while the main thread is still
busy. What the watcher can do without the main thread depends on the phase:
- The command line registers `set_exit_handler`: a second Ctrl-C ends the process from the watcher at once; and in
  one process, a request that no loop has taken within GRACE_SECONDS while nothing is unsaved (data preparation,
  feature extraction, the first compilation, a finished stage's final evaluation) ends it too, saving nothing
  because there is nothing to save. While training progress is unsaved, the main thread must save it: it polls
  the request between steps and, in an evaluation, between batches (`poll_batches`: the evaluation is abandoned,
  the loop saves the current step and marks its evaluation as due, and the resumed run redoes it).
- Several processes keep to one stop step for all: no process ends or abandons an evaluation alone.
"""

from __future__ import annotations

import itertools
import os
import select
import signal
import threading
import time
from typing import Callable, Iterable, Iterator, TypeVar

import jax
from absl import logging
from jax._src import distributed  # the coordination client orbax uses for its barriers too; no public accessor

# Hosts reach a check at different times (compilation, evaluation, a checkpoint written by one of them): the
# barrier waits for the slowest. A process that died makes the coordination service fail the barrier at once.
_BARRIER_TIMEOUT_MS = 60 * 60 * 1000
# Numbers the loops of this process; every process runs the same loops in the same order, so the numbers agree.
_loops = itertools.count()
# Set by SIGTERM or Ctrl-C in this process; cleared when a loop has stopped for it, or by `listen` at the start of
# a run.
_stop_requested = threading.Event()
# Set by Ctrl-C (cleared by `listen`): the stop was a person's, so the command line exits as interrupted.
_interrupted = threading.Event()
# Set when a loop has taken the request (it saves and returns): the watcher leaves the exit to it.
_taken = threading.Event()
# Set while this process holds training progress that no checkpoint has yet (train_loop's `unsaved_progress`).
_unsaved = threading.Event()
_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_previous_handlers: dict[int, object] = {}  # what `listen` replaced, for `stop_listening`
# How long the watcher leaves a request to the main thread (a loop between steps takes it within a step) before it
# acts alone where nothing is unsaved.
GRACE_SECONDS = 2.0


class StopRequested(Exception):
    """Raised in the main thread where it polls (`poll_batches`): drop the work in progress, the request stands."""


def _take_signal(signum: int) -> None:
    """The one place a SIGTERM or Ctrl-C is counted and answered, from the handler or from the watcher."""
    if signum == signal.SIGINT:
        if _interrupted.is_set():
            _second_interrupt()
            return
        _interrupted.set()
        logging.warning("Ctrl-C: saving a checkpoint at the current step, then exiting (the same command resumes); "
                        "Ctrl-C again stops at once.")
    else:
        logging.warning("SIGTERM received: saving a checkpoint at the next step all processes agree on, then "
                        "exiting.")
    _stop_requested.set()


class _Watcher:
    """Reads the signal numbers that Python's C-level handler writes to the wakeup pipe, in its own thread, so a
    signal is answered while the main thread is stuck in C++ (module docstring). Each number is taken once, by
    whichever of the watcher and the main thread's handler reads it first."""

    def __init__(self):
        self._read, self._write = os.pipe()
        for fd in (self._read, self._write):
            os.set_blocking(fd, False)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self.previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._watch, name="genscl_jax-signals", daemon=True)
        self._thread.start()

    def drain(self, wait: bool = True) -> None:
        """Takes every signal number waiting in the pipe. The main thread's handler does not wait (`wait=False`):
        a watcher that holds the lock is taking them, and may be waiting for a lock (logging's) that the main thread
        holds, interrupted by this handler."""
        if not self._lock.acquire(blocking=wait):
            return
        try:
            try:
                numbers = os.read(self._read, 512)
            except OSError:  # BlockingIOError: nothing waiting
                numbers = b""
            for signum in numbers:
                if signum in _SIGNALS:
                    _take_signal(signum)
        finally:
            self._lock.release()

    def _watch(self) -> None:
        while not self._closed.is_set():
            ready, _, _ = select.select([self._read], [], [], 0.5)
            if self._closed.is_set():
                return
            if ready:
                self.drain()
            if _stop_requested.is_set():
                self._act_alone_if_idle()

    def _act_alone_if_idle(self) -> None:
        """Ends the process when the request has waited GRACE_SECONDS for the main thread and ending it loses
        nothing (one process, no unsaved progress, a command line's exit handler)."""
        deadline = time.monotonic() + GRACE_SECONDS
        while time.monotonic() < deadline and not self._closed.is_set():
            if _taken.is_set() or not _stop_requested.is_set():
                return
            time.sleep(0.05)
        if (_exit_handler is not None and _stop_requested.is_set() and not _taken.is_set() and not _unsaved.is_set()
                and not self._closed.is_set() and distributed.global_state.client is None):
            _exit_handler("interrupted" if _interrupted.is_set() else "terminated")

    def close(self) -> None:
        self._closed.set()
        signal.set_wakeup_fd(self.previous_fd)
        self._thread.join()
        for fd in (self._read, self._write):
            os.close(fd)


_watcher: _Watcher | None = None
# The command line's way to end the process from the watcher: exit_handler(why), why one of "interrupted",
# "terminated" (a request acted on where nothing is unsaved) or "second interrupt". None: a library caller (a
# notebook) keeps its process, has no watcher, and a second Ctrl-C raises KeyboardInterrupt there, as before.
_exit_handler: Callable[[str], None] | None = None


def set_exit_handler(handler: Callable[[str], None] | None) -> None:
    """Lets the watcher end the process with `handler(why)` (it must not return); main.py sets it."""
    global _exit_handler
    _exit_handler = handler


def _second_interrupt() -> None:
    if _exit_handler is not None:
        _exit_handler("second interrupt")
    raise KeyboardInterrupt  # the second Ctrl-C (in the main thread): stop now, whatever is in flight


def _handle(signum, frame):
    if _watcher is None:
        _take_signal(signum)
    else:
        _watcher.drain(wait=False)  # the number may still be in the pipe: take it, unless the watcher is taking it


def listen() -> None:
    """From now on SIGTERM and Ctrl-C ask the training loop to stop instead of ending the process (main thread only);
    a request left over from an earlier run in this process is forgotten. `stop_listening` undoes it."""
    global _watcher
    _stop_requested.clear()
    _interrupted.clear()
    _taken.clear()
    _unsaved.clear()
    if threading.current_thread() is threading.main_thread():
        for signum in _signals_to_take():
            _previous_handlers.setdefault(signum, signal.signal(signum, _handle))
        if _watcher is None and _exit_handler is not None:
            _watcher = _Watcher()


def _signals_to_take() -> tuple[int, ...]:
    """SIGTERM, and SIGINT unless it is ignored (nohup, a background job of a script): ignored stays ignored."""
    return tuple(s for s in _SIGNALS if s != signal.SIGINT or signal.getsignal(s) is not signal.SIG_IGN)


def stop_listening() -> None:
    """Gives SIGTERM and Ctrl-C back their handlers from before `listen` (a notebook's Ctrl-C interrupts again)."""
    global _watcher
    if threading.current_thread() is threading.main_thread():
        if _watcher is not None:
            _watcher.close()
            _watcher = None
        for signum, previous in list(_previous_handlers.items()):
            if previous is not None:  # None: a handler installed outside Python; ours stays then
                signal.signal(signum, previous)
            del _previous_handlers[signum]


def unsaved_progress(unsaved: bool) -> None:
    """train_loop says whether it holds trained steps that no checkpoint has: while it does, only the main thread
    may end the run (it saves first)."""
    if unsaved:
        _unsaved.set()
    else:
        _unsaved.clear()


T = TypeVar("T")


def poll_batches(batches: Iterable[T]) -> Iterator[T]:
    """`batches`, raising StopRequested before the next one once SIGTERM or Ctrl-C asked to stop, so an evaluation
    or a feature extraction is abandoned within a batch. With several processes it never raises: they must stop at
    one agreed step (StopAgreement), and an evaluation is collective."""
    for batch in batches:
        if _stop_requested.is_set() and jax.process_count() == 1:
            _taken.set()  # the main thread answers it: the watcher leaves the exit to the run
            raise StopRequested
        yield batch


def was_interrupted() -> bool:
    """Whether the stop request of this run came from Ctrl-C (rather than SIGTERM)."""
    return _interrupted.is_set()


class StopAgreement:
    """`with StopAgreement(every_steps) as stop:` ... `if stop.should_stop(step):` save and return."""

    def __init__(self, every_steps: int = 1):
        if every_steps < 1:
            raise ValueError(f"every_steps={every_steps}: must be at least 1")
        self.every_steps = every_steps
        self.stopped = False
        self._previous = None
        self._loop = next(_loops)

    def __enter__(self):
        if not _stop_requested.is_set():
            _interrupted.clear()  # a Ctrl-C an earlier loop answered: the next one is again a first
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, _handle) for signum in _signals_to_take()}
        return self

    def __exit__(self, *exc):
        for signum, previous in (self._previous or {}).items():
            if previous is not None:  # None: a handler installed outside Python; ours stays then
                signal.signal(signum, previous)
        if self.stopped:
            _stop_requested.clear()  # answered
            _taken.clear()

    @property
    def requested(self) -> bool:
        """This process received SIGTERM or Ctrl-C."""
        return _stop_requested.is_set()

    def should_stop(self, step: int) -> bool:
        """Whether to stop before training step `step + 1`; the same answer on every process."""
        if jax.process_count() == 1:
            self.stopped = self.requested
            if self.stopped:
                _taken.set()
        elif step % self.every_steps == 0:
            self.stopped = self._agree(step)
            if self.stopped:
                _taken.set()
            if self.stopped and not self.requested:
                logging.warning("Another process received SIGTERM: saving a checkpoint at step %d, then exiting.",
                                step)
        return self.stopped

    def _agree(self, step: int) -> bool:
        client = distributed.global_state.client
        if client is None:
            raise RuntimeError("several JAX processes but no jax.distributed client: start them with "
                               "jax.distributed.initialize (parallel.initialize_distributed does)")
        prefix = f"genscl_jax/preemption/{self._loop}/{step}/"
        if self.requested:
            client.key_value_set(prefix + str(jax.process_index()), "SIGTERM")
        # One barrier name per loop, reused at each check (the coordination service counts its rounds).
        client.wait_at_barrier(f"genscl_jax_preemption_{self._loop}", _BARRIER_TIMEOUT_MS)
        return bool(client.key_value_dir_get(prefix))
