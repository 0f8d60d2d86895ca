"""Tests for genscl_jax.objectives.mixing: labels must describe the pixels that were actually mixed."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genscl_jax.objectives.mixing import MIX_KINDS, mix_batch, mix_views, one_hot_labels, partner_shift

B, H, W, C = 6, 8, 8, 3


def _random_batch(seed=0, batch=B, num_classes=5):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    images = jax.random.uniform(k1, (batch, H, W, C))
    class_ids = jax.random.randint(k2, (batch,), 0, num_classes)
    return images, class_ids


def _constant_images(batch=B):
    """Image i is filled with the value i + 1, so each pixel tells which source it came from."""
    values = jnp.arange(1, batch + 1, dtype=jnp.float32)
    return jnp.broadcast_to(values[:, None, None, None], (batch, H, W, C))


def _mixup_perm_and_lam(labels):
    """Recover (perm, lam) from mixup labels made with class_ids = arange(B) (ambiguous entries -> -1)."""
    labels = np.asarray(labels)
    lam = None
    perm = np.full(labels.shape[0], -1)
    for i, row in enumerate(labels):
        others = row.copy()
        others[i] = 0.0
        if others.max() > 0:  # perm[i] != i: own class has weight lam, the partner 1 - lam.
            perm[i] = int(others.argmax())
            lam = row[i]
    return perm, lam


@pytest.mark.parametrize("kind", MIX_KINDS)
def test_label_rows_sum_to_one(kind):
    images, class_ids = _random_batch()
    for seed in range(3):
        mixed, labels = mix_batch(jax.random.PRNGKey(seed), images, class_ids, 5, kind=kind)
        assert mixed.shape == images.shape and mixed.dtype == images.dtype
        assert labels.shape == (B, 5) and labels.dtype == jnp.float32
        np.testing.assert_allclose(labels.sum(-1), 1.0, atol=1e-6)
        assert (labels >= 0).all()


def test_cutmix_labels_equal_pixel_fractions():
    # Several sources share a class, so same-class partners must sum their weights.
    class_ids = jnp.array([0, 1, 0, 2, 1, 3])
    images = _constant_images()
    saw_partial = False
    for seed in range(20):
        mixed, labels = mix_batch(jax.random.PRNGKey(seed), images, class_ids, 4, kind="cutmix")
        mixed, labels = np.asarray(mixed), np.asarray(labels)
        assert set(np.unique(mixed)) <= set(range(1, B + 1))  # CutMix copies pixels, never blends.
        for i in range(B):
            fractions = np.array([(mixed[i, ..., 0] == s + 1).mean() for s in range(B)])
            expected = np.zeros(4)
            np.add.at(expected, np.asarray(class_ids), fractions)
            np.testing.assert_allclose(labels[i], expected, atol=1e-6)
            assert (mixed[i] == mixed[i, ..., :1]).all()  # The box covers all channels.
        # The box is shared by the batch and no image is its own partner: every row keeps the same fraction
        # of its own pixels, and the rest comes from image i + 1.
        own = [(mixed[i] == i + 1).mean() for i in range(B)]
        np.testing.assert_allclose(own, own[0])
        if own[0] < 1.0:
            saw_partial = True
            assert all(set(np.unique(mixed[i])) == {i + 1, (i + 1) % B + 1} for i in range(B))
    assert saw_partial


def test_cutmix_box_is_a_rectangle():
    images = _constant_images()
    for seed in range(5):
        mixed, _ = mix_batch(jax.random.PRNGKey(seed), images, jnp.arange(B), B, kind="cutmix")
        for i in range(B):
            pasted = np.asarray(mixed[i, ..., 0] != i + 1)
            if pasted.any():
                rows, cols = np.nonzero(pasted)
                assert pasted[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1].all()


def test_mixup_images_match_labels():
    images, _ = _random_batch(seed=1)
    class_ids = jnp.arange(B)  # Unique classes so the labels reveal perm and lam.
    checked = 0
    for seed in range(5):
        mixed, labels = mix_batch(jax.random.PRNGKey(seed), images, class_ids, B, kind="mixup")
        perm, lam = _mixup_perm_and_lam(labels)
        if lam is None:
            continue
        # One lam per call: every label row is lam * own + (1 - lam) * partner.
        perm_full = np.where(perm < 0, np.arange(B), perm)
        np.testing.assert_allclose(labels, one_hot_labels(class_ids, B) * lam
                                   + one_hot_labels(class_ids[perm_full], B) * (1 - lam), atol=1e-6)
        x = np.asarray(images)
        np.testing.assert_allclose(mixed, lam * x + (1 - lam) * x[perm_full], atol=1e-5)
        checked += 1
    assert checked >= 3


def test_alpha_other_than_one_uses_beta():
    # alpha = 1 samples U(0, 1) directly; other alphas go through jax.random.beta and must still work.
    images, _ = _random_batch(seed=4)
    lams = []
    for seed in range(4):
        mixed, labels = mix_batch(jax.random.PRNGKey(seed), images, jnp.arange(B), B, kind="mixup",
                                  alpha=0.4)
        perm, lam = _mixup_perm_and_lam(labels)
        np.testing.assert_allclose(labels.sum(-1), 1.0, atol=1e-6)
        if lam is not None:
            perm_full = np.where(perm < 0, np.arange(B), perm)
            x = np.asarray(images)
            np.testing.assert_allclose(mixed, lam * x + (1 - lam) * x[perm_full], atol=1e-5)
            lams.append(lam)
    assert len(set(lams)) >= 2 and all(0.0 <= lam <= 1.0 for lam in lams)


def test_mixup_keeps_bfloat16():
    images, class_ids = _random_batch()
    mixed, labels = mix_batch(jax.random.PRNGKey(0), images.astype(jnp.bfloat16), class_ids, 5,
                              kind="mixup")
    assert mixed.dtype == jnp.bfloat16 and labels.dtype == jnp.float32


def test_none_returns_inputs_and_one_hot():
    images, class_ids = _random_batch()
    mixed, labels = mix_batch(jax.random.PRNGKey(0), images, class_ids, 5, kind="none")
    np.testing.assert_array_equal(mixed, images)
    np.testing.assert_array_equal(labels, np.eye(5)[np.asarray(class_ids)])


# "mixup_cutmix" runs both branches' code (and lax.cond turns into a select under vmap); compiles are slow
# on CPU, so only it and the trivial kind are checked here.
@pytest.mark.parametrize("kind", ["none", "mixup_cutmix"])
def test_jit_and_vmap_match_eager(kind):
    images, class_ids = _random_batch()
    fn = functools.partial(mix_batch, num_classes=5, kind=kind)
    n = 4
    keys = jax.random.split(jax.random.PRNGKey(7), n)
    batches = jnp.stack([images + k for k in range(n)])
    ids = jnp.stack([class_ids] * n)
    vm_images, vm_labels = jax.jit(jax.vmap(fn))(keys, batches, ids)
    assert vm_images.shape == (n, B, H, W, C) and vm_labels.shape == (n, B, 5)
    jitted = jax.jit(fn)
    for k in range(n):
        eager_images, eager_labels = fn(keys[k], batches[k], ids[k])
        for images_k, labels_k in (jitted(keys[k], batches[k], ids[k]), (vm_images[k], vm_labels[k])):
            np.testing.assert_allclose(images_k, eager_images, atol=1e-5)
            np.testing.assert_allclose(labels_k, eager_labels, atol=1e-6)


def test_mix_views_mixes_each_view_independently():
    images, _ = _random_batch(seed=2)
    views = jnp.stack([images, images[::-1]], axis=1)  # [B, V=2, H, W, C]
    class_ids = jnp.arange(B)
    mix = jax.jit(functools.partial(mix_views, num_classes=B, kind="mixup"))
    differ = False
    for seed in range(4):
        rng = jax.random.PRNGKey(seed)
        mixed, labels = mix(rng, views, class_ids)
        assert mixed.shape == views.shape and labels.shape == (B, 2, B)
        # View v is exactly mix_batch with the v-th split key.
        for v, key in enumerate(jax.random.split(rng, 2)):
            ref_images, ref_labels = mix_batch(key, views[:, v], class_ids, B, kind="mixup",
                                               shift=partner_shift(B, v))
            np.testing.assert_allclose(mixed[:, v], ref_images, atol=1e-5)
            np.testing.assert_allclose(labels[:, v], ref_labels, atol=1e-6)
        (perm0, lam0), (perm1, lam1) = (_mixup_perm_and_lam(labels[:, v]) for v in range(2))
        differ |= (perm0 != perm1).any() and lam0 is not None and lam1 is not None and lam0 != lam1
    assert differ


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_each_view_has_its_own_partner_never_itself(kind):
    """View v mixes image i with image (i + 1 + v) mod B: the labels of unique classes name the partner."""
    images = _constant_images()
    views = jnp.stack([images, images], axis=1)
    seen = 0
    for seed in range(6):
        _, labels = mix_views(jax.random.PRNGKey(seed), views, jnp.arange(B), B, kind=kind)
        for v in range(2):
            partner_weight = np.asarray(labels[:, v])[np.arange(B), (np.arange(B) + 1 + v) % B]
            own_weight = np.asarray(labels[:, v])[np.arange(B), np.arange(B)]
            np.testing.assert_allclose(own_weight + partner_weight, 1.0, atol=1e-6)
            seen += int((partner_weight > 0).all())
    assert seen > 0


def test_partner_shift_is_never_the_image_itself():
    assert [partner_shift(8, v) for v in range(3)] == [1, 2, 3]
    assert [partner_shift(2, v) for v in range(2)] == [1, 1]  # a batch of two has one other image
    assert [partner_shift(3, v) for v in range(3)] == [1, 2, 1]
    assert partner_shift(1) == 0


def test_mixup_cutmix_uses_both_branches():
    images = _constant_images()
    sources = set(range(1, B + 1))
    branches = set()
    for seed in range(16):
        mixed, _ = mix_batch(jax.random.PRNGKey(seed), images, jnp.arange(B), B, kind="mixup_cutmix")
        values = set(np.unique(np.asarray(mixed)).tolist())
        if not values <= sources:
            branches.add("mixup")  # Blending makes values that no source has.
        elif any(len(np.unique(np.asarray(mixed[i]))) == 2 for i in range(B)):
            branches.add("cutmix")  # Two source values side by side in one image.
    assert branches == {"mixup", "cutmix"}


def test_unknown_kind_raises():
    images, class_ids = _random_batch()
    for fn in (mix_batch, mix_views):
        x = images if fn is mix_batch else images[:, None]
        with pytest.raises(ValueError, match="mixup_cutmix"):
            fn(jax.random.PRNGKey(0), x, class_ids, 5, kind="cut_mix")


@pytest.mark.parametrize("kind", ["mixup", "mixup_cutmix"])
def test_prob_zero_is_no_mixing(kind):
    images, _ = _random_batch(seed=3)
    views = jnp.stack([images, images[::-1]], axis=1)
    class_ids = jnp.arange(B)
    for seed in range(3):
        mixed, labels = mix_views(jax.random.PRNGKey(seed), views, class_ids, B, kind=kind, prob=0.0)
        np.testing.assert_array_equal(mixed, views)
        np.testing.assert_array_equal(labels, jnp.stack([one_hot_labels(class_ids, B)] * 2, axis=1))


def test_prob_one_is_the_mix_of_every_view_with_the_same_keys():
    """prob = 1 draws no coin: view v is lam * x + (1 - lam) * partner with lam from the v-th key's first split, the
    keys a mix without `prob` uses, so runs with mix.prob = 1 repeat earlier runs exactly."""
    images, _ = _random_batch(seed=4)
    views = jnp.stack([images, images[::-1]], axis=1)
    rng = jax.random.PRNGKey(5)
    mixed, labels = mix_views(rng, views, jnp.arange(B), B, kind="mixup", prob=1.0)
    for v, key in enumerate(jax.random.split(rng, 2)):
        lam = jax.random.uniform(jax.random.split(key, 3)[0], (), jnp.float32)
        shift = partner_shift(B, v)
        np.testing.assert_allclose(mixed[:, v], lam * views[:, v] + (1 - lam) * jnp.roll(views[:, v], -shift, 0),
                                   rtol=1e-6)
        expected = lam * jnp.eye(B) + (1 - lam) * jnp.roll(jnp.eye(B), -shift, 0)
        np.testing.assert_allclose(labels[:, v], expected, rtol=1e-6)


@pytest.mark.parametrize("prob", [0.25, 0.5])
def test_prob_is_the_fraction_of_mixed_views_each_view_its_own_coin(prob):
    """Under jit (static shapes): a view is either mixed whole or left exactly as it was, with one-hot labels; over
    many steps the mixed share is prob, and the two views' coins are independent."""
    images = _constant_images()
    views = jnp.stack([images, images], axis=1)
    class_ids = jnp.arange(B)
    mix = jax.jit(jax.vmap(functools.partial(mix_views, class_ids=class_ids, num_classes=B, kind="mixup", prob=prob)))
    steps = 600
    mixed, labels = mix(jax.random.split(jax.random.PRNGKey(0), steps), jnp.broadcast_to(views, (steps,) + views.shape))
    untouched_images = np.all(np.asarray(mixed) == np.asarray(views)[None], axis=(1, 3, 4, 5))  # [steps, V]
    one_hot = np.all(np.asarray(labels) == np.eye(B)[None, :, None], axis=(1, 3))  # [steps, V]
    np.testing.assert_array_equal(untouched_images, one_hot)  # images and labels agree view by view
    is_mixed = ~one_hot
    tolerance = 4 * np.sqrt(prob * (1 - prob) / is_mixed.size)  # 4 binomial standard deviations
    assert abs(is_mixed.mean() - prob) < tolerance, is_mixed.mean()
    both = (is_mixed[:, 0] & is_mixed[:, 1]).mean()
    assert abs(both - prob ** 2) < 4 * np.sqrt(prob ** 2 * (1 - prob ** 2) / steps), both
