"""EMA arithmetic and the key queue's wrap-around."""

import jax.numpy as jnp
import numpy as np

from genscl_jax.objectives import momentum_encoder as me


def test_ema_update_is_the_convex_combination():
    ema = {"w": jnp.full((3,), 2.0), "b": jnp.zeros((2,), jnp.bfloat16)}
    online = {"w": jnp.full((3,), 4.0), "b": jnp.ones((2,), jnp.bfloat16)}
    out = me.ema_update(ema, online, jnp.float32(0.75))
    np.testing.assert_allclose(out["w"], 0.75 * 2 + 0.25 * 4)
    assert out["b"].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out["b"], np.float32), 0.25)


def test_cosine_momentum_ramps_from_base_to_one():
    assert float(me.ema_momentum(jnp.int32(0), 100, 0.99, cosine=True)) == np.float32(0.99)
    np.testing.assert_allclose(float(me.ema_momentum(jnp.int32(50), 100, 0.99, cosine=True)), 0.995, rtol=1e-6)
    assert float(me.ema_momentum(jnp.int32(100), 100, 0.99, cosine=True)) == 1.0
    assert float(me.ema_momentum(jnp.int32(70), 100, 0.99, cosine=False)) == np.float32(0.99)


def test_queue_fills_in_order_then_overwrites_the_oldest():
    queue = me.empty_queue(size=6, dim=2, num_classes=3, with_teacher_labels=True)
    assert not np.any(me.filled_mask(queue))
    written = []
    for step in range(4):  # 4 writes of 4 keys into 6 slots: wraps around twice
        keys = jnp.full((4, 2), float(step + 1)) + jnp.arange(4)[:, None] / 10
        labels = jnp.eye(3)[jnp.full((4,), step % 3)]
        queue = me.enqueue(queue, {"keys": keys, "labels": labels, "teacher_labels": labels * 0.5})
        written.extend(np.asarray(keys))
        newest = np.array(written[-6:])  # what a FIFO of 6 holds, in write order
        slots = (np.arange(len(written) - len(newest), len(written))) % 6
        np.testing.assert_allclose(np.asarray(queue["keys"])[slots], newest)
        assert int(queue["count"]) == min(len(written), 6)
        assert int(queue["pointer"]) == len(written) % 6
    np.testing.assert_allclose(queue["teacher_labels"], queue["labels"] * 0.5)
    assert np.all(me.filled_mask(queue))


def test_partially_filled_mask():
    queue = me.empty_queue(size=8, dim=2, num_classes=2, with_teacher_labels=False)
    queue = me.enqueue(queue, {"keys": jnp.ones((3, 2)), "labels": jnp.ones((3, 2))})
    np.testing.assert_array_equal(me.filled_mask(queue), [1, 1, 1, 0, 0, 0, 0, 0])
    assert "teacher_labels" not in queue
