"""The loss benchmark: the generalized SupCon loss alone (forward and backward), dense or in blocks of anchor
rows (loss_chunked), over a grid of anchor counts N, label dims C and a queue of M - N contrasts; each size's
compiled memory plan is checked against the device (or a share of host RAM) before it is run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp

from genscl_jax.objectives import loss_chunked, losses
from genscl_jax.tools import measure

LOSS_IMPLS = ("dense", "chunked")


def csv_values(text: str, kind: type) -> list[Any]:
    """A comma-separated flag of the loss grid as values: "1024,4096" -> [1024, 4096]."""
    return [kind(x) for x in str(text).split(",") if x.strip()]


def _loss_inputs(key, num_anchors: int, num_contrasts: int, num_classes: int, dim: int):
    """Unit features and mixup-like label distributions (two classes per row) for anchors and contrasts."""
    keys = jax.random.split(key, 6)

    def unit(k, n):
        x = jax.random.normal(k, (n, dim), jnp.float32)
        return x / jnp.linalg.norm(x, axis=1, keepdims=True)

    def labels(k, n):
        ka, kb, kl = jax.random.split(k, 3)
        lam = jax.random.uniform(kl, (n, 1))
        return (lam * jax.nn.one_hot(jax.random.randint(ka, (n,), 0, num_classes), num_classes)
                + (1 - lam) * jax.nn.one_hot(jax.random.randint(kb, (n,), 0, num_classes), num_classes))

    return unit(keys[0], num_anchors), labels(keys[1], num_anchors), unit(keys[2], num_contrasts), \
        labels(keys[3], num_contrasts)


def loss_function(impl: str, *, with_queue: bool, block_size: int):
    """(anchors, labels, contrasts, contrast_labels) -> loss, differentiated w.r.t. the anchors.

    With a queue the contrasts are stop-gradient keys, as in the MoCo step; without one the anchors are their
    own contrasts (all-vs-all) and the gradient flows through both sides.
    """
    if impl == "dense":
        loss = losses.generalized_supcon_loss
    elif impl == "chunked":
        def loss(*a, **kw):
            return loss_chunked.generalized_supcon_loss_chunked(*a, block_size=block_size, **kw)
    else:
        raise ValueError(f"--loss-impl must be one of {LOSS_IMPLS}, got {impl!r}")

    def fn(anchors, labels, contrasts, contrast_labels):
        if not with_queue:
            return loss(anchors, labels)
        return loss(anchors, labels, contrast_features=contrasts, contrast_labels=contrast_labels,
                    contrast_mask=jnp.ones(contrasts.shape[0], bool))

    return jax.value_and_grad(fn)


def bench_loss_case(args: argparse.Namespace, num_anchors: int, num_classes: int, impl: str,
                    memory_cap: int) -> dict[str, Any]:
    with_queue = args.queue > 0
    num_contrasts = num_anchors + args.queue if with_queue else num_anchors
    case = {"mode": "loss", "impl": impl, "anchors": num_anchors, "contrasts": num_contrasts,
            "classes": num_classes, "dim": args.head_dim, "block_size": args.loss_block if impl == "chunked" else None}
    inputs = jax.jit(_loss_inputs, static_argnums=(1, 2, 3, 4))(
        jax.random.PRNGKey(args.seed), num_anchors, num_contrasts if with_queue else 1, num_classes, args.head_dim)
    fn = jax.jit(loss_function(impl, with_queue=with_queue, block_size=args.loss_block))
    t0 = time.perf_counter()
    options = measure.parse_compiler_options(args.compiler_option)
    compiled = fn.lower(*inputs).compile(compiler_options=options or None)
    case["compile_s"] = round(time.perf_counter() - t0, 3)
    # XLA's cost analysis counts a loop body once, not once per block: the chunked loss's count would be too low.
    looped = impl == "chunked" and num_anchors > args.loss_block
    case["flops"] = None if looped else measure.compiled_flops(compiled)
    need = measure.planned_bytes(compiled)
    case["planned_bytes"] = need
    case["planned_gib"] = measure.gib(need)
    case["fits_budget"] = None if need is None else need <= args.memory_budget_gb * measure.GIB
    case["memory_budget_gib"] = args.memory_budget_gb
    if need is not None and need > memory_cap:
        case["skipped"] = (f"needs {need / measure.GIB:.1f} GiB, more than the {memory_cap / measure.GIB:.1f} GiB "
                           "this device has")
        return case
    if args.plan_only:
        case["skipped"] = "--plan-only"
        return case
    value, grad = jax.block_until_ready(compiled(*inputs))
    case["loss"] = float(value)
    case["grad_finite"] = bool(jnp.all(jnp.isfinite(grad)))
    times = measure.time_loop(lambda n: [compiled(*inputs) for _ in range(n)][-1], repeats=args.repeats,
                      steps=args.loss_steps)
    case["ms"] = round(statistics.median(times) * 1e3, 3)
    case["ms_repeats"] = [round(t * 1e3, 3) for t in times]
    case["peak_device_bytes"] = measure.device_peak_bytes()
    flops = case["flops"]
    case["tflops_per_s"] = round(flops / statistics.median(times) / 1e12, 4) if flops else None
    return case


def bench_loss(args: argparse.Namespace, report: Callable[[dict[str, Any]], None] = lambda case: None
               ) -> dict[str, Any]:
    """Every case of the grid, `report(case)` called as each one finishes (the command line prints it)."""
    memory_cap = measure.device_memory_limit() or int(args.host_memory_fraction * measure.host_memory_bytes())
    cases = []
    for impl in csv_values(args.loss_impl, str):
        for num_classes in csv_values(args.classes, int):
            for num_anchors in csv_values(args.anchors, int):
                case = bench_loss_case(args, num_anchors, num_classes, impl, memory_cap)
                cases.append(case)
                report(case)
    return {"mode": "loss", "queue": args.queue, "memory_cap_bytes": memory_cap, "cases": cases}
