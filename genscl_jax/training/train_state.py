"""The train state: one pytree of arrays that every trainer updates and checkpointing saves whole.

Fields a trainer does not use stay None (e.g. no EMA encoder or queue without MoCo). The optimizer and the
model are not in the state: they are static parts of the compiled step, so the state is pure data.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import optax
from flax import struct
from jax.sharding import Mesh

from genscl_jax.runtime import compile_options, parallel


@struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array
    # MoCo: the EMA key encoder ({"params", "batch_stats"}) and the key queue (see momentum_encoder.py).
    ema: Any = None
    queue: Any = None
    # The online linear probe's {"params", "opt_state"} (trainers/online_probe.py), checkpointed with the rest.
    probe: Any = None

    def apply_gradients(self, grads: Any, tx: optax.GradientTransformation, **fields: Any) -> TrainState:
        """The state one optimizer step later: `grads` through `tx`, step + 1, and `fields` (e.g. the new
        batch_stats) replaced. Every trainer's step ends here."""
        updates, opt_state = tx.update(grads, self.opt_state, self.params)
        return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                            opt_state=opt_state, **fields)


_PROBE_KEY = 0x9b0be  # folded into the seed key for the online probe's initialisation


def train_state_initializer(init_variables: Callable[[jax.Array], dict], tx: optax.GradientTransformation, *,
                            with_ema: bool = False, make_queue: Callable[[], Any] | None = None,
                            make_probe: Callable[[jax.Array], Any] | None = None
                            ) -> Callable[[jax.Array], TrainState]:
    """The pure function seed key -> initial TrainState (jit it, or jax.eval_shape it for the state's shapes).

    `make_probe(key)` makes the probe's state from a key folded from the seed, so the model's own initialisation
    is the same with the probe on and off."""

    def init(seed_key):
        init_key, state_key = jax.random.split(seed_key)
        variables = init_variables(init_key)
        params, batch_stats = variables["params"], variables.get("batch_stats", {})
        ema = {"params": params, "batch_stats": batch_stats} if with_ema else None
        return TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=params, batch_stats=batch_stats,
                          opt_state=tx.init(params), rng=state_key, ema=ema,
                          queue=make_queue() if make_queue else None,
                          probe=make_probe(jax.random.fold_in(seed_key, _PROBE_KEY)) if make_probe else None)

    return init


def create_train_state(init_variables: Callable[[jax.Array], dict], tx: optax.GradientTransformation,
                       seed: int, mesh: Mesh, *, with_ema: bool = False,
                       make_queue: Callable[[], Any] | None = None) -> TrainState:
    """Initialises the state on device, replicated over the mesh, with no host round trip.

    `init_variables(rng)` returns the model's {"params", "batch_stats"}; it runs inside jit so even a
    ResNet-200's initialisation is one compiled program, compiled cheaply since it runs once.
    """
    init = train_state_initializer(init_variables, tx, with_ema=with_ema, make_queue=make_queue)
    return compile_options.run_once(init, jax.random.PRNGKey(seed), out_shardings=parallel.replicated(mesh))
