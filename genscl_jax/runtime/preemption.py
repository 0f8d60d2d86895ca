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
"""

from __future__ import annotations

import itertools
import signal
import threading

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
_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_previous_handlers: dict[int, object] = {}  # what `listen` replaced, for `stop_listening`


def _handle(signum, frame):
    if signum == signal.SIGINT:
        if _interrupted.is_set():
            raise KeyboardInterrupt  # the second Ctrl-C: stop now, whatever is in flight
        _interrupted.set()
        logging.warning("Ctrl-C: saving a checkpoint at the current step, then exiting (the same command resumes); "
                        "Ctrl-C again stops at once.")
    else:
        logging.warning("SIGTERM received: saving a checkpoint at the next step all processes agree on, then "
                        "exiting.")
    _stop_requested.set()


def listen() -> None:
    """From now on SIGTERM and Ctrl-C ask the training loop to stop instead of ending the process (main thread only);
    a request left over from an earlier run in this process is forgotten. `stop_listening` undoes it."""
    _stop_requested.clear()
    _interrupted.clear()
    if threading.current_thread() is threading.main_thread():
        for signum in _signals_to_take():
            _previous_handlers.setdefault(signum, signal.signal(signum, _handle))


def _signals_to_take() -> tuple[int, ...]:
    """SIGTERM, and SIGINT unless it is ignored (nohup, a background job of a script): ignored stays ignored."""
    return tuple(s for s in _SIGNALS if s != signal.SIGINT or signal.getsignal(s) is not signal.SIG_IGN)


def stop_listening() -> None:
    """Gives SIGTERM and Ctrl-C back their handlers from before `listen` (a notebook's Ctrl-C interrupts again)."""
    if threading.current_thread() is threading.main_thread():
        for signum, previous in list(_previous_handlers.items()):
            if previous is not None:  # None: a handler installed outside Python; ours stays then
                signal.signal(signum, previous)
            del _previous_handlers[signum]


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

    @property
    def requested(self) -> bool:
        """This process received SIGTERM or Ctrl-C."""
        return _stop_requested.is_set()

    def should_stop(self, step: int) -> bool:
        """Whether to stop before training step `step + 1`; the same answer on every process."""
        if jax.process_count() == 1:
            self.stopped = self.requested
        elif step % self.every_steps == 0:
            self.stopped = self._agree(step)
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
