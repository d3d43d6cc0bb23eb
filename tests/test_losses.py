"""Reconstruction and adversarial losses against NumPy references written from the papers' formulas and
hand-computed cases (docs/architectures.md §1.6, §2.4, §3.3, §4.4, §5.9)."""
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.numpy_reference import tv_over_dilated_hole
from tfinpaint import losses

GAMMA = 0.9


def _masks(batch, height, width, rng):
    """[B, H, W, 1] hand-made masks: a random one, an all-hole one and an all-known one (1 = hole)."""
    random_mask = (rng.random((height, width)) > 0.6).astype(np.float32)
    all_hole = np.ones((height, width), np.float32)
    all_known = np.zeros((height, width), np.float32)
    stack = [random_mask, all_hole, all_known]
    return np.stack([stack[i % 3] for i in range(batch)])[..., None]


@pytest.fixture
def data():
    rng = np.random.default_rng(1)
    x = rng.random((3, 5, 6, 3)).astype(np.float32)
    y = rng.random((3, 5, 6, 3)).astype(np.float32)
    return x, y, _masks(3, 5, 6, rng)


# --------------------------------------------------------------------------------------------------------
# Pixel losses


def test_l1_plain_and_weighted(data):
    x, y, mask = data
    np.testing.assert_allclose(losses.l1(x, y).numpy(), np.abs(x - y).mean(), rtol=1e-6)
    weight = np.linspace(0.0, 2.0, 6, dtype=np.float32)[None, None, :, None]
    np.testing.assert_allclose(losses.l1(x, y, weight).numpy(), (np.abs(x - y) * weight).mean(), rtol=1e-6)


def test_masked_l1_normalised_by_all_elements(data):
    x, y, mask = data
    hole, valid = losses.masked_l1(x, y, mask)
    diff = np.abs(x - y)
    count = diff.size
    np.testing.assert_allclose(hole.numpy(), (diff * mask).sum() / count, rtol=1e-6)
    np.testing.assert_allclose(valid.numpy(), (diff * (1 - mask)).sum() / count, rtol=1e-6)
    # The two regions partition the plain L1.
    np.testing.assert_allclose((hole + valid).numpy(), diff.mean(), rtol=1e-6)


@pytest.mark.parametrize("which", ["all_hole", "all_known"])
def test_masked_l1_degenerate_masks(data, which):
    x, y, _ = data
    mask = np.ones_like(x[..., :1]) if which == "all_hole" else np.zeros_like(x[..., :1])
    hole, valid = losses.masked_l1(x, y, mask)
    full = np.abs(x - y).mean()
    expected = (full, 0.0) if which == "all_hole" else (0.0, full)
    np.testing.assert_allclose([hole.numpy(), valid.numpy()], expected, rtol=1e-6, atol=0)


def test_masked_mse(data):
    x, y, mask = data
    expected = np.mean(((x - y) * mask) ** 2)
    np.testing.assert_allclose(losses.masked_mse(x, y, mask).numpy(), expected, rtol=1e-6)
    assert losses.masked_mse(x, y, np.zeros_like(mask)).numpy() == 0.0
    np.testing.assert_allclose(losses.masked_mse(x, y, np.ones_like(mask)).numpy(), np.mean((x - y) ** 2), rtol=1e-6)


def test_losses_return_float32_from_bfloat16(data):
    x, y, mask = data
    x16 = tf.cast(x, tf.bfloat16)
    y16 = tf.cast(y, tf.bfloat16)
    m16 = tf.cast(mask, tf.bfloat16)
    reference = np.abs(tf.cast(x16, tf.float32).numpy() - tf.cast(y16, tf.float32).numpy())
    for value in [losses.l1(x16, y16), *losses.masked_l1(x16, y16, m16), losses.discounted_l1(x16, y16, m16),
                  losses.masked_mse(x16, y16, m16), losses.total_variation_hole(x16, m16)]:
        assert value.dtype == tf.float32 and value.shape == ()
    np.testing.assert_allclose(losses.l1(x16, y16).numpy(), reference.mean(), rtol=1e-6)


def test_bad_inputs_raise_clear_errors(data):
    x, y, mask = data
    with pytest.raises(ValueError, match="l1.*do not broadcast"):
        losses.l1(x, y[:, :4])
    with pytest.raises(ValueError, match="spatial_discount: `mask` must be rank 4"):
        losses.spatial_discount(mask[0])
    with pytest.raises(ValueError, match="spatial_discount: `mask` must have 1 channel"):
        losses.spatial_discount(np.concatenate([mask, mask], -1))
    with pytest.raises(ValueError, match="total_variation_hole: `mask` must have 1 or 3 channel"):
        losses.total_variation_hole(x, np.concatenate([mask, mask], -1))
    with pytest.raises(TypeError, match="hinge_generator_loss: `d_fake` must be a float tensor"):
        losses.hinge_generator_loss(np.ones(3, np.int32))


# --------------------------------------------------------------------------------------------------------
# Spatial discounting


def _chebyshev_reference(hole):
    """Brute force: distance of every hole pixel to the nearest known pixel (one [H, W] sample)."""
    height, width = hole.shape
    known = np.argwhere(hole == 0)
    distance = np.zeros((height, width))
    for i, j in np.argwhere(hole == 1):
        distance[i, j] = np.max(np.abs(known - [i, j]), axis=1).min()
    return distance


def test_spatial_discount_hand_computed_5x5_hole_in_7x7():
    mask = np.zeros((1, 7, 7, 1), np.float32)
    mask[0, 1:6, 1:6, 0] = 1.0
    g1, g2, g3 = GAMMA, GAMMA**2, GAMMA**3
    expected = np.array(
        [
            [1, 1, 1, 1, 1, 1, 1],
            [1, g1, g1, g1, g1, g1, 1],
            [1, g1, g2, g2, g2, g1, 1],
            [1, g1, g2, g3, g2, g1, 1],
            [1, g1, g2, g2, g2, g1, 1],
            [1, g1, g1, g1, g1, g1, 1],
            [1, 1, 1, 1, 1, 1, 1],
        ]
    )
    result = losses.spatial_discount(mask, gamma=GAMMA)
    assert result.shape == (1, 7, 7, 1) and result.dtype == tf.float32
    np.testing.assert_allclose(result.numpy()[0, :, :, 0], expected, rtol=1e-6)


def test_spatial_discount_non_rectangular_hole():
    # An L-shaped hole touching the top image border: the image border is not known context, so the
    # top-left arm is discounted only by its distance to real known pixels.
    hole = np.array(
        [
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
        ],
        np.float32,
    )
    expected_distance = np.array(
        [
            [3, 3, 2, 1, 0, 0],
            [2, 2, 2, 1, 0, 0],
            [2, 1, 1, 1, 0, 0],
            [2, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
        ]
    )
    np.testing.assert_array_equal(_chebyshev_reference(hole), expected_distance)
    result = losses.spatial_discount(hole[None, :, :, None], gamma=GAMMA).numpy()[0, :, :, 0]
    np.testing.assert_allclose(result, GAMMA**expected_distance, rtol=1e-6)


def test_spatial_discount_random_masks_against_brute_force():
    rng = np.random.default_rng(3)
    masks = (rng.random((4, 9, 11)) > 0.3).astype(np.float32)
    masks[0] = 1.0
    masks[0, 4, 5] = 0.0  # a single known pixel: distances up to 5 (left columns)
    result = losses.spatial_discount(masks[..., None], gamma=0.8).numpy()[..., 0]
    for sample, weights in zip(masks, result):
        np.testing.assert_allclose(weights, 0.8 ** _chebyshev_reference(sample), rtol=1e-5)


def test_spatial_discount_all_known_and_all_hole_per_sample():
    height, width = 5, 8
    masks = np.zeros((3, height, width, 1), np.float32)
    masks[1] = 1.0  # all hole
    masks[2, 2, 3] = 1.0  # one hole pixel
    result = losses.spatial_discount(masks, gamma=GAMMA).numpy()[..., 0]
    np.testing.assert_array_equal(result[0], np.ones((height, width)))
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    border_distance = np.minimum.reduce([rows + 1, height - rows, cols + 1, width - cols])
    np.testing.assert_allclose(result[1], GAMMA**border_distance, rtol=1e-6)
    expected_single = np.ones((height, width))
    expected_single[2, 3] = GAMMA
    np.testing.assert_allclose(result[2], expected_single, rtol=1e-6)


def test_spatial_discount_relation_to_official_crop_border_map():
    # Official v1 map for an H x W crop: max(gamma**min(i, H-i), gamma**min(j, W-j)). For a hole filling the
    # crop ours equals it where a bottom/right term attains the minimum, and is one gamma power lower where
    # only the top/left terms do (documented in spatial_discount).
    height, width = 6, 9
    official = np.array(
        [[max(GAMMA ** min(i, height - i), GAMMA ** min(j, width - j)) for j in range(width)] for i in range(height)]
    )
    ours = losses.spatial_discount(np.ones((1, height, width, 1), np.float32), GAMMA).numpy()[0, :, :, 0]
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    only_top_left = np.minimum(rows, cols) < np.minimum(height - rows, width - cols)
    np.testing.assert_allclose(ours[~only_top_left], official[~only_top_left], rtol=1e-6)
    np.testing.assert_allclose(ours[only_top_left], GAMMA * official[only_top_left], rtol=1e-6)


def test_spatial_discount_tf_function_dynamic_shapes_and_distributed(two_cpu_strategy):
    compiled = tf.function(
        losses.spatial_discount, input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32)]
    )
    rng = np.random.default_rng(5)
    for shape in [(2, 7, 5), (1, 4, 12)]:
        masks = (rng.random(shape) > 0.5).astype(np.float32)
        expected = np.stack([GAMMA ** _chebyshev_reference(m) for m in masks])
        np.testing.assert_allclose(compiled(masks[..., None]).numpy()[..., 0], expected, rtol=1e-6)

    strategy = two_cpu_strategy
    masks = (rng.random((4, 6, 6, 1)) > 0.5).astype(np.float32)
    dataset = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices(masks).batch(4))

    @tf.function
    def per_replica_sum(batch):
        return strategy.run(lambda m: tf.reduce_sum(losses.spatial_discount(m)), args=(batch,))

    total = strategy.reduce("SUM", per_replica_sum(next(iter(dataset))), axis=None)
    expected = sum((GAMMA ** _chebyshev_reference(m[..., 0])).sum() for m in masks)
    np.testing.assert_allclose(total.numpy(), expected, rtol=1e-5)


def test_discounted_l1(data):
    x, y, mask = data  # samples: random mask, all hole, all known
    height, width = mask.shape[1:3]
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    border_distance = np.minimum.reduce([rows + 1, height - rows, cols + 1, width - cols])
    weights = np.stack(
        [GAMMA ** _chebyshev_reference(mask[0, ..., 0]), GAMMA**border_distance, np.ones((height, width))]
    )[..., None]
    expected = np.mean(np.abs(x - y) * weights)
    np.testing.assert_allclose(losses.discounted_l1(x, y, mask, gamma=GAMMA).numpy(), expected, rtol=1e-6)


# --------------------------------------------------------------------------------------------------------
# Total variation over the dilated hole


def test_total_variation_hole_against_pair_loop(data):
    x, _, mask = data
    np.testing.assert_allclose(losses.total_variation_hole(x, mask).numpy(), tv_over_dilated_hole(x, mask), rtol=1e-5)
    # All known: the region is empty. A single hole pixel: P is its 3x3 neighbourhood (12 pairs).
    assert losses.total_variation_hole(x, np.zeros_like(mask)).numpy() == 0.0
    single = np.zeros_like(mask)
    single[0, 2, 2, 0] = 1.0
    patch = x[0, 1:4, 1:4]
    by_hand = np.abs(np.diff(patch, axis=0)).sum() + np.abs(np.diff(patch, axis=1)).sum()
    np.testing.assert_allclose(losses.total_variation_hole(x, single).numpy(), by_hand / x.size, rtol=1e-5)


def test_total_variation_hole_per_channel_mask(data):
    x, _, mask = data
    per_channel = np.repeat(mask, 3, axis=-1)
    np.testing.assert_allclose(
        losses.total_variation_hole(x, per_channel).numpy(), losses.total_variation_hole(x, mask).numpy(), rtol=1e-6
    )


# --------------------------------------------------------------------------------------------------------
# GAN losses


def test_wgan_hinge_bce_against_numpy():
    rng = np.random.default_rng(7)
    d_real = rng.normal(size=(3, 4, 4, 1)).astype(np.float32) * 2
    d_fake = rng.normal(size=(3, 4, 4, 1)).astype(np.float32) * 2
    np.testing.assert_allclose(losses.wgan_generator_loss(d_fake).numpy(), -d_fake.mean(), rtol=1e-6)
    np.testing.assert_allclose(
        losses.wgan_discriminator_loss(d_real, d_fake).numpy(), d_fake.mean() - d_real.mean(), rtol=1e-5
    )
    np.testing.assert_allclose(losses.hinge_generator_loss(d_fake).numpy(), -d_fake.mean(), rtol=1e-6)
    hinge_d = 0.5 * np.maximum(0, 1 - d_real).mean() + 0.5 * np.maximum(0, 1 + d_fake).mean()
    np.testing.assert_allclose(losses.hinge_discriminator_loss(d_real, d_fake).numpy(), hinge_d, rtol=1e-6)

    # BCE from logits, including saturated logits where sigmoid-then-log would overflow.
    real_logits = np.array([[3.0], [-2.0], [150.0], [-150.0]], np.float32)
    fake_logits = np.array([[-1.0], [0.5], [-120.0], [120.0]], np.float32)

    def bce(logits, label):
        logits = logits.astype(np.float64)
        return np.maximum(logits, 0) - logits * label + np.log1p(np.exp(-np.abs(logits)))

    np.testing.assert_allclose(losses.bce_generator_loss(fake_logits).numpy(), bce(fake_logits, 1).mean(), rtol=1e-6)
    expected_d = bce(real_logits, 1).mean() + bce(fake_logits, 0).mean()
    np.testing.assert_allclose(losses.bce_discriminator_loss(real_logits, fake_logits).numpy(), expected_d, rtol=1e-6)
    # Moderate logits: compare with the probability-space definition too.
    p = 1 / (1 + np.exp(-real_logits[:2].astype(np.float64)))
    np.testing.assert_allclose(losses.bce_generator_loss(real_logits[:2]).numpy(), -np.log(p).mean(), rtol=1e-6)


def _gp_data():
    rng = np.random.default_rng(11)
    real = rng.random((3, 4, 5, 2)).astype(np.float32)
    fake = rng.random((3, 4, 5, 2)).astype(np.float32)
    mask = _masks(3, 4, 5, rng)
    weight = tf.Variable(rng.normal(size=(1, 4, 5, 2)).astype(np.float32) * 0.5)
    return real, fake, mask, weight


def test_gradient_penalty_linear_critic_and_second_order_gradient():
    real, fake, mask, weight = _gp_data()
    eps = np.array([0.2, 0.5, 0.9], np.float32)[:, None, None, None]

    def critic(x):  # D(x) = sum(w * x) per sample, so grad_x D = w everywhere
        return tf.reduce_sum(weight * x, axis=[1, 2, 3])

    with tf.GradientTape() as outer:
        gp = losses.gradient_penalty(critic, real, fake, mask=mask, eps=eps)
    w = weight.numpy()
    norms = np.sqrt(((w * mask) ** 2).sum(axis=(1, 2, 3)))  # [3]; the all-known sample has norm 0
    np.testing.assert_allclose(gp.numpy(), np.mean((norms - 1) ** 2), rtol=1e-5)

    # Second order: d gp / d w = mean_b 2 (n_b - 1) w m_b^2 / n_b (a zero-norm sample contributes 0).
    grad_w = outer.gradient(gp, weight)
    assert grad_w is not None
    safe = np.where(norms > 0, norms, 1.0)[:, None, None, None]
    per_sample = 2 * (norms[:, None, None, None] - 1) * w * mask**2 / safe
    np.testing.assert_allclose(grad_w.numpy(), per_sample.mean(axis=0, keepdims=True), rtol=1e-4, atol=1e-6)
    assert np.abs(grad_w.numpy()).max() > 0

    # Without a mask the norm covers the whole image (HiFill).
    full = losses.gradient_penalty(critic, real, fake, eps=eps)
    np.testing.assert_allclose(full.numpy(), (np.sqrt((w**2).sum()) - 1) ** 2, rtol=1e-5)


def test_gradient_penalty_interpolates_with_given_eps():
    real, fake, mask, weight = _gp_data()
    eps = np.array([0.0, 0.3, 1.0], np.float32)[:, None, None, None]

    def critic(x):  # D(x) = sum(w * x^2): grad = 2 w x_hat, so the result depends on where x_hat lies
        return tf.reduce_sum(weight * tf.square(x), axis=[1, 2, 3])

    gp = losses.gradient_penalty(critic, real, fake, mask=mask, eps=eps)
    x_hat = real + eps * (fake - real)
    norms = np.sqrt(((2 * weight.numpy() * x_hat * mask) ** 2).sum(axis=(1, 2, 3)))
    np.testing.assert_allclose(gp.numpy(), np.mean((norms - 1) ** 2), rtol=1e-5)


def test_gradient_penalty_random_eps_is_per_sample_uniform():
    real, fake, _, _ = _gp_data()
    seen = []

    def critic(x):
        seen.append(x)
        return tf.reduce_sum(x, axis=[1, 2, 3])

    losses.gradient_penalty(critic, real, fake)
    ratio = ((seen[0].numpy() - real) / (fake - real)).reshape(3, -1)
    np.testing.assert_allclose(ratio, np.repeat(ratio[:, :1], ratio.shape[1], axis=1), atol=1e-4)
    assert np.all((ratio >= 0) & (ratio <= 1))
    assert len(np.unique(np.round(ratio[:, 0], 5))) == 3


def test_gradient_penalty_keras_critic_training_flag_and_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")

    class Critic(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="elu")
            self.flatten = keras.layers.Flatten()
            self.dense = keras.layers.Dense(1)
            self.flags = []

        def call(self, x, training=None):
            self.flags.append(training)
            return self.dense(self.flatten(self.conv(x)))

    critic = Critic()
    real, fake, mask, _ = _gp_data()
    critic(real)
    with tf.GradientTape() as outer:
        gp = losses.gradient_penalty(critic, real, fake, mask=mask, training=True)
    assert gp.dtype == tf.float32 and np.isfinite(gp.numpy())
    assert critic.flags[-1] is True
    # The input gradient does not depend on the last layer's bias; every other weight gets a finite,
    # non-zero second-order gradient.
    variables = [v for v in critic.trainable_variables if v is not critic.dense.bias]
    grads = outer.gradient(gp, variables)
    for variable, grad in zip(variables, grads):
        assert grad is not None and np.all(np.isfinite(grad.numpy())), variable.path
        assert np.abs(grad.numpy()).max() > 0, variable.path


def test_gradient_penalty_all_known_mask_is_one_with_zero_gradient():
    real, fake, _, weight = _gp_data()

    def critic(x):
        return tf.reduce_sum(weight * x, axis=[1, 2, 3])

    with tf.GradientTape() as outer:
        gp = losses.gradient_penalty(critic, real, fake, mask=np.zeros_like(real[..., :1]))
    assert gp.numpy() == 1.0
    np.testing.assert_array_equal(outer.gradient(gp, weight).numpy(), 0.0)


# --------------------------------------------------------------------------------------------------------
# Package


def test_package_exports_and_lazy_perceptual_import():
    for name in losses.__all__:
        if name not in ("load_vgg16_features", "gram_matrix", "pconv_loss"):
            assert callable(getattr(losses, name)), name
    code = (
        "import sys, tfinpaint.losses as l; "
        "assert 'tfinpaint.losses.perceptual' not in sys.modules; "
        "assert {'load_vgg16_features', 'gram_matrix', 'pconv_loss'} <= set(dir(l))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_lazy_perceptual_names_resolve_to_the_perceptual_module():
    from tfinpaint.losses import perceptual

    for name in ("load_vgg16_features", "gram_matrix", "pconv_loss"):
        assert getattr(losses, name) is getattr(perceptual, name)
    with pytest.raises(AttributeError, match="no attribute 'not_a_loss'"):
        losses.not_a_loss  # noqa: B018
