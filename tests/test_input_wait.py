"""The input-wait share: its arithmetic on a fake clock, and the loop's figure with a slow and a prefetched input."""

import time

import jax
import jax.numpy as jnp
import pytest

from genscl_jax.training import train_loop
from genscl_jax.training.input_wait import InputWait


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_share_is_waited_over_elapsed_per_window_and_over_the_run():
    clock = FakeClock()
    wait = InputWait(clock)
    assert wait.close_window() == {} and wait.run_share() is None  # no window opened yet

    def slow_batches(seconds):
        while True:
            clock.now += seconds
            yield None

    wait.restart()
    batches = slow_batches(3.0)
    wait.next_batch(batches)
    clock.now += 1.0  # the step's own time, seen where the loop blocks
    assert wait.close_window() == {"input_wait_share": 0.75}
    wait.restart()
    assert wait.close_window() == {}  # a window without a batch says nothing
    wait.restart()
    wait.next_batch(slow_batches(0.0))
    clock.now += 4.0
    assert wait.close_window() == {"input_wait_share": 0.0}
    assert wait.run_share() == pytest.approx(3.0 / 8.0)


def run_loop(tmp_path, batches, num_steps=12):
    """The real loop around a small compiled step (a few matmuls), logging every 4 steps."""
    @jax.jit
    def step(state, batch):
        x = batch
        for _ in range(8):
            x = jnp.tanh(x @ x.T / x.shape[0])
        return {"sum": state["sum"] + jnp.mean(x)}, {"loss": jnp.mean(x)}

    trainer = train_loop.Trainer(name="wait", state={"sum": jnp.zeros(())}, train_step=step, batches=batches,
                                 total_steps=num_steps, examples_per_step=1)
    logged = []

    class Writer:
        def write_scalars(self, step, scalars):
            logged.append((step, scalars.get("input_wait_share")))

    result = train_loop.run(trainer, str(tmp_path), checkpoint_every_steps=1000, log_every_steps=4, writer=Writer())
    return result, logged


@pytest.mark.slow
def test_a_slow_input_pipeline_reads_near_one(tmp_path):
    def slow(start):
        batch = jnp.ones((64, 64))
        while True:
            time.sleep(0.1)  # the host reads and augments while the device idles
            yield batch

    result, logged = run_loop(tmp_path, slow)
    shares = [share for _, share in logged]
    assert shares[0] is not None and min(shares) > 0.9, logged
    assert result.input_wait_share > 0.9


@pytest.mark.slow
def test_a_prefetched_input_pipeline_reads_near_zero(tmp_path):
    ready = [jax.block_until_ready(jnp.full((256, 256), 0.01 * i)) for i in range(12)]
    result, logged = run_loop(tmp_path, lambda start: iter(ready[start:]))
    shares = [share for _, share in logged]
    assert max(shares) < 0.1, logged
    assert result.input_wait_share < 0.1
