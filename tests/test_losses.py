"""The GenSCL loss against docs/method.md's formula, written independently in float64 NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genscl_jax.objectives import loss_chunked, losses
from helpers import random_loss_inputs


def reference_loss(z, y, zc=None, yc=None, tau=0.1, tau_base=0.07, normalization="label_sum", exclude_own=False):
    """docs/method.md's definition ("The loss"), one anchor at a time, in float64; `exclude_own`: contrast i is
    anchor i's own key."""
    z, y = np.asarray(z, np.float64), np.asarray(y, np.float64)
    self_contrast = zc is None or exclude_own
    zc = z if zc is None else np.asarray(zc, np.float64)
    yc = y if yc is None else np.asarray(yc, np.float64)
    rows = []
    for i in range(len(z)):
        others = [j for j in range(len(zc)) if not (self_contrast and j == i)]
        logits = np.array([z[i] @ zc[j] / tau for j in others])
        log_p = logits - np.log(np.sum(np.exp(logits)))
        s = np.array([y[i] @ yc[j] / (np.linalg.norm(y[i]) * np.linalg.norm(yc[j])) for j in others])
        norm = s.sum() + 1e-8 if normalization == "label_sum" else len(others)
        rows.append(-(s * log_p).sum() / norm)
    return tau / tau_base * np.mean(rows)


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def random_problem(seed, n=12, d=8, c=5, m=None):
    rng = np.random.default_rng(seed)
    z = unit(rng.normal(size=(n, d))).astype(np.float32)
    y = rng.dirichlet(np.ones(c) * 0.5, size=n).astype(np.float32)
    if m is None:
        return z, y
    zc = unit(rng.normal(size=(m, d))).astype(np.float32)
    yc = rng.dirichlet(np.ones(c) * 0.5, size=m).astype(np.float32)
    return z, y, zc, yc


@pytest.mark.parametrize("normalization", losses.NORMALIZATIONS)
@pytest.mark.parametrize("tau", [0.05, 0.1, 0.5])
def test_matches_reference_all_vs_all(normalization, tau):
    z, y = random_problem(0)
    got = losses.generalized_supcon_loss(z, y, temperature=tau, normalization=normalization)
    want = reference_loss(z, y, tau=tau, normalization=normalization)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


@pytest.mark.parametrize("normalization", losses.NORMALIZATIONS)
def test_matches_reference_with_separate_contrasts(normalization):
    z, y, zc, yc = random_problem(1, n=6, m=20)
    got = losses.generalized_supcon_loss(z, y, contrast_features=zc, contrast_labels=yc,
                                         normalization=normalization)
    want = reference_loss(z, y, zc, yc, normalization=normalization)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)


@pytest.mark.parametrize("normalization", losses.NORMALIZATIONS)
def test_own_key_is_excluded_from_the_contrasts(normalization):
    """MoCo: contrasts are the anchors' EMA keys, then a queue; anchor i never meets its own key i."""
    z, y, zc, yc = random_problem(4, n=6, m=20)
    got = losses.generalized_supcon_loss(z, y, contrast_features=zc, contrast_labels=yc, exclude_self=True,
                                         normalization=normalization)
    want = reference_loss(z, y, zc, yc, normalization=normalization, exclude_own=True)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    kept = losses.generalized_supcon_loss(z, y, contrast_features=zc, contrast_labels=yc,
                                          normalization=normalization)
    assert abs(float(kept) - want) > 1e-3  # the mask changes the loss: the test can tell the two apart


def test_keys_equal_to_queries_with_an_empty_queue_give_the_in_batch_loss():
    """At step 0 the EMA keys equal the queries and the queue is empty: MoCo's loss is the in-batch loss."""
    z, y, queue, queue_labels = random_problem(5, n=10, m=16)
    in_batch = losses.generalized_supcon_loss(z, y)
    moco = losses.generalized_supcon_loss(
        z, y, contrast_features=np.concatenate([z, queue]), contrast_labels=np.concatenate([y, queue_labels]),
        contrast_mask=np.arange(26) < 10, exclude_self=True)
    np.testing.assert_allclose(float(moco), float(in_batch), rtol=1e-6)


def test_exclude_self_needs_the_anchors_among_the_contrasts():
    z, y, zc, yc = random_problem(6, n=6, m=4)
    with pytest.raises(ValueError, match="first 6 contrasts"):
        losses.generalized_supcon_loss(z, y, contrast_features=zc, contrast_labels=yc, exclude_self=True)


def test_one_hot_labels_give_supcon():
    rng = np.random.default_rng(2)
    z = unit(rng.normal(size=(16, 8))).astype(np.float32)
    ids = rng.integers(0, 4, size=16)
    one_hot = np.eye(4, dtype=np.float32)[ids]
    gen = losses.generalized_supcon_loss(z, one_hot)
    sup = losses.supcon_loss(z, jnp.asarray(ids))
    np.testing.assert_allclose(float(gen), float(sup), rtol=1e-6)
    # And SupCon itself against the reference (where label cosine is the same-class indicator).
    np.testing.assert_allclose(float(sup), reference_loss(z, one_hot), rtol=1e-5)


def test_supcon_with_contrasts_matches_generalized():
    z, _, zc, _ = random_problem(3, n=6, m=10)
    rng = np.random.default_rng(3)
    ids, cids = rng.integers(0, 3, size=6), rng.integers(0, 3, size=10)
    eye = np.eye(3, dtype=np.float32)
    sup = losses.supcon_loss(z, ids, contrast_features=zc, contrast_class_ids=cids)
    gen = losses.generalized_supcon_loss(z, eye[ids], contrast_features=zc, contrast_labels=eye[cids])
    np.testing.assert_allclose(float(sup), float(gen), rtol=1e-6)


def test_simclr_treats_views_of_one_image_as_the_only_positives():
    z, _ = random_problem(4, n=10)
    one_hot_per_image = np.tile(np.eye(5, dtype=np.float32), (2, 1))
    np.testing.assert_allclose(float(losses.simclr_loss(z)), reference_loss(z, one_hot_per_image), rtol=1e-5)


def test_permutation_invariance():
    z, y = random_problem(5, n=14)
    perm = np.random.default_rng(5).permutation(14)
    a = losses.generalized_supcon_loss(z, y)
    b = losses.generalized_supcon_loss(z[perm], y[perm])
    np.testing.assert_allclose(float(a), float(b), rtol=1e-6)


def test_gradient_matches_finite_differences():
    # The float32 production gradient against central differences of the formula in float64.
    z, y = random_problem(6, n=6, d=4, c=3)
    z64, y64 = z.astype(np.float64), y.astype(np.float64)
    eps = 1e-6
    numeric = np.zeros_like(z64)
    with jax.enable_x64(True):
        loss64 = jax.jit(_float64_loss)  # one compile for the 48 evaluations
        for idx in np.ndindex(z64.shape):
            plus, minus = z64.copy(), z64.copy()
            plus[idx] += eps
            minus[idx] -= eps
            numeric[idx] = (float(loss64(plus, y64)) - float(loss64(minus, y64))) / (2 * eps)
    grad = jax.grad(lambda f: losses.generalized_supcon_loss(f, y))(jnp.asarray(z))
    np.testing.assert_allclose(np.asarray(grad), numeric, rtol=1e-3, atol=1e-5)


def _float64_loss(z, y, tau=0.1, tau_base=0.07):
    """The formula in jnp float64 (used only to check gradients)."""
    z, y = jnp.asarray(z), jnp.asarray(y)
    yn = y / jnp.linalg.norm(y, axis=1, keepdims=True)
    n = z.shape[0]
    off = ~jnp.eye(n, dtype=bool)
    s = jnp.where(off, yn @ yn.T, 0.0)
    logits = z @ z.T / tau
    lse = jax.nn.logsumexp(jnp.where(off, logits, -jnp.inf), axis=1, keepdims=True)
    log_p = jnp.where(off, logits - lse, 0.0)
    return tau / tau_base * jnp.mean(-(s * log_p).sum(1) / (s.sum(1) + 1e-8))


def test_bfloat16_inputs_compute_in_float32():
    z, y = random_problem(7, n=16)
    z16 = jnp.asarray(z, jnp.bfloat16)
    got = losses.generalized_supcon_loss(z16, jnp.asarray(y, jnp.bfloat16))
    assert got.dtype == jnp.float32
    # Only the rounding of the inputs to bf16 separates the two.
    want = reference_loss(np.asarray(z16, np.float32), np.asarray(jnp.asarray(y, jnp.bfloat16), np.float32))
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    grad = jax.grad(lambda f: losses.generalized_supcon_loss(f, y))(z16)
    assert grad.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(grad, np.float32)))


def test_zero_similarity_row_contributes_zero_not_nan():
    z, _ = random_problem(8, n=6)
    # Anchor 0's label is orthogonal to every other label; anchor 5 is an all-zero (padding) label.
    y = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [0, 0, 0]], np.float32)
    loss = losses.generalized_supcon_loss(z, y)
    grad = jax.grad(lambda f: losses.generalized_supcon_loss(f, y))(z)
    assert np.isfinite(float(loss)) and np.all(np.isfinite(np.asarray(grad)))
    # Rows 0 and 5 add zero to the sum; the mean still divides by all 6 anchors.
    np.testing.assert_allclose(float(loss), _reference_rows_sum(z, y) / 6, rtol=1e-5)


def _reference_rows_sum(z, y):
    """Sum of the per-row reference losses, counting rows with no positive label similarity as zero."""
    total = 0.0
    for i in range(len(z)):
        if np.linalg.norm(y[i]) == 0:
            continue
        others = [j for j in range(len(z)) if j != i]
        logits = z[i] @ z[others].T / 0.1
        log_p = logits - np.log(np.exp(logits).sum())
        yn = lambda v: v / max(np.linalg.norm(v), 1e-12)  # noqa: E731
        s = np.array([yn(y[i]) @ yn(y[j]) for j in others])
        total += -(s * log_p).sum() / (s.sum() + 1e-8)
    return 0.1 / 0.07 * total


def test_large_batch_low_temperature_is_finite():
    rng = np.random.default_rng(9)
    # At tau=0.012 a row's logits reach 83: summed over 4k anchors exp() overflows float32 (6.7e39 > 3.4e38)
    # without the row-max shift, and the loss must stay finite.
    n = 4096
    z = unit(rng.normal(size=(n, 16))).astype(np.float32)
    ids = rng.integers(0, 100, size=n)
    assert n * np.exp(np.float64(1 / 0.012)) > np.finfo(np.float32).max
    loss = jax.jit(lambda f, i: losses.supcon_loss(f, i, temperature=0.012))(z, ids)
    assert np.isfinite(float(loss)) and float(loss) > 0


def test_large_logits_are_stable():
    # A temperature small enough that exp(logit) overflows float32 without the row-max shift.
    z, y = random_problem(10, n=8)
    got = losses.generalized_supcon_loss(z, y, temperature=0.01, base_temperature=0.01)
    want = reference_loss(z, y, tau=0.01, tau_base=0.01)
    assert np.isfinite(float(got))
    np.testing.assert_allclose(float(got), want, rtol=1e-4)


def test_bad_arguments_raise_clear_errors():
    z, y = random_problem(11)
    with pytest.raises(ValueError, match="normalization"):
        losses.generalized_supcon_loss(z, y, normalization="mean")
    with pytest.raises(ValueError, match="together"):
        losses.generalized_supcon_loss(z, y, contrast_features=z)


@pytest.mark.parametrize("normalization", losses.NORMALIZATIONS)
def test_contrast_mask_equals_dropping_those_contrasts(normalization):
    z, y, zc, yc = random_problem(12, n=6, m=16)
    mask = np.arange(16) < 9
    masked = losses.generalized_supcon_loss(z, y, contrast_features=zc, contrast_labels=yc, contrast_mask=mask,
                                            normalization=normalization)
    dropped = reference_loss(z, y, zc[:9], yc[:9], normalization=normalization)
    np.testing.assert_allclose(float(masked), dropped, rtol=1e-5)


# The blocked loss (loss_chunked): the same function as the dense one, in bounded memory.


@pytest.mark.parametrize("contrasts,normalization", [("self", "label_sum"), ("queue", "count"),
                                                     ("masked_queue", "label_sum"), ("own_keys_queue", "label_sum")])
def test_chunked_loss_equals_dense_loss_and_gradients(contrasts, normalization):
    x = random_loss_inputs(0, 50, 90)
    queue = ["contrast_features", "contrast_labels", "contrast_mask"]
    extra = {"self": [], "queue": queue[:2], "masked_queue": queue, "own_keys_queue": queue}[contrasts]
    # MoCo: the first 50 contrasts are the anchors' own keys, excluded like SupCon's diagonal.
    own = {"exclude_self": True} if contrasts == "own_keys_queue" else {}

    def make(loss_fn, **kw):
        def f(features, contrast_features):
            args = {"contrast_features": contrast_features, **{k: x[k] for k in extra if k != "contrast_features"}}
            return loss_fn(features, x["labels"], normalization=normalization,
                           **{k: v for k, v in args.items() if k in extra}, **own, **kw)
        return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))

    dense_value, dense_grads = make(losses.generalized_supcon_loss)(x["features"], x["contrast_features"])
    for block in (16, 50):  # uneven blocks (the last one padded), one block
        value, grads = make(loss_chunked.generalized_supcon_loss_chunked, block_size=block)(
            x["features"], x["contrast_features"])
        np.testing.assert_allclose(value, dense_value, rtol=1e-6)
        for g, d in zip(grads, dense_grads):
            np.testing.assert_allclose(g, d, rtol=1e-5, atol=1e-6 * float(jnp.abs(d).max()) + 1e-12)


def test_chunked_loss_never_materialises_the_full_matrix():
    """The compiled backward of the chunked loss needs far less memory than the dense one at N=M=1024."""
    x = random_loss_inputs(1, 1024, 1024, dim=8, classes=4)
    planned = {}
    for name, fn in (("dense", losses.generalized_supcon_loss),
                     ("chunked", lambda *a, **k: loss_chunked.generalized_supcon_loss_chunked(*a, block_size=64, **k))):
        compiled = jax.jit(jax.grad(lambda f, fn=fn: fn(f, x["labels"]))).lower(x["features"]).compile()
        plan = compiled.memory_analysis()  # the bench's planned bytes: arguments + outputs + temporaries - aliased
        planned[name] = (plan.argument_size_in_bytes + plan.output_size_in_bytes + plan.temp_size_in_bytes
                         - plan.alias_size_in_bytes)
    assert planned["chunked"] * 4 < planned["dense"], planned


def test_integer_class_ids_are_one_hot_labels():
    # SupContrast's call: integer labels [N] give the loss of their one-hot rows, with or without contrasts.
    z, _, zc, _ = random_problem(20, n=16, m=10)
    class_ids, contrast_ids = np.arange(16) % 4, np.arange(10) % 4
    one_hot, contrast_one_hot = np.eye(4)[class_ids], np.eye(4)[contrast_ids]
    np.testing.assert_allclose(float(losses.generalized_supcon_loss(z, jnp.asarray(class_ids))),
                               float(losses.generalized_supcon_loss(z, one_hot)), rtol=1e-6)
    got = losses.generalized_supcon_loss(z, class_ids, contrast_features=zc, contrast_labels=contrast_ids)
    want = losses.generalized_supcon_loss(z, one_hot, contrast_features=zc, contrast_labels=contrast_one_hot)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-6)


@pytest.mark.parametrize("label_kind", ["class_ids", "distributions"])
def test_supcontrast_batch_views_dim_form_equals_the_2d_form(label_kind):
    # SupConLoss(features [B, V, D], labels [B]): views flattened view-major, labels repeated per view.
    rng = np.random.default_rng(21)
    batch, views = 6, 3
    features = unit(rng.normal(size=(batch, views, 8))).astype(np.float32)
    labels = np.arange(batch) % 3 if label_kind == "class_ids" else rng.dirichlet(np.ones(3), size=batch)
    flat = np.concatenate([features[:, v] for v in range(views)])
    got = losses.generalized_supcon_loss(jnp.asarray(features), jnp.asarray(labels))
    want = reference_loss(flat, np.eye(3)[np.tile(labels, views)] if label_kind == "class_ids"
                          else np.tile(labels, (views, 1)))
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    np.testing.assert_allclose(float(got), float(losses.generalized_supcon_loss(
        flat, np.concatenate([labels] * views))), rtol=1e-6)


def test_mismatched_shapes_are_one_error_naming_both():
    z, y = random_problem(22, n=8)
    with pytest.raises(ValueError, match=r"features \(8, 8\) and labels \(6, 5\)"):
        losses.generalized_supcon_loss(z, y[:6])
    with pytest.raises(ValueError, match=r"features \(4, 2, 8\).*labels \(8,\)"):
        losses.generalized_supcon_loss(z.reshape(4, 2, 8), jnp.arange(8))
    with pytest.raises(ValueError, match="must be integers"):
        losses.generalized_supcon_loss(z, jnp.arange(8.0))
    with pytest.raises(ValueError, match="both as integer class ids"):
        losses.generalized_supcon_loss(z, jnp.arange(8), contrast_features=z, contrast_labels=np.eye(8))


@pytest.mark.slow
def test_package_level_import_of_the_losses_does_not_import_tensorflow():
    import subprocess
    import sys

    probe = ("import sys; from genscl_jax import losses, mixing; import jax.numpy as jnp; "
             "z = jnp.eye(16, 8); print(float(losses.generalized_supcon_loss(z, jnp.arange(16) % 4))); "
             "print(mixing.__name__, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert np.isfinite(float(out[0]))
    assert out[1:] == ["genscl_jax.objectives.mixing", "False"]
