"""DeepFill v2 (spec section 2): parameter counts, forward-pass invariants, gradients, recipe losses against a
NumPy computation, serialization and mixed precision."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.model_checks import (
    assert_forward_outputs,
    assert_gradients_reach,
    assert_hole_pixels_ignored,
    assert_keras_round_trip,
    assert_known_pixels_bit_exact,
)
from tfinpaint import models
from tfinpaint.models import deepfill_v2
from tfinpaint.training.recipe import ModelSet

HEIGHT, WIDTH = 16, 24  # non-square multiples of the size factor 8


def _count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def _batch(batch=2, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.uniform(size=(batch, HEIGHT, WIDTH, 3)).astype(np.float32)
    mask = np.zeros((batch, HEIGHT, WIDTH, 1), np.float32)
    mask[0, 2:9, 3:14] = 1.0  # a different hole per sample
    mask[1, 6:16, 12:22] = 1.0
    return {"image": tf.constant(image), "mask": tf.constant(mask)}


@pytest.fixture(scope="module")
def small():
    return models.create("deepfill_v2", cnum=8, dnum=8)


def test_parameter_counts_match_spec():
    generator, discriminators, recipe = models.create("deepfill_v2")
    assert _count(generator.trainable_weights) == 4_052_478
    assert _count(generator.non_trainable_weights) == 0
    discriminator = discriminators["sn_patch_gan"]
    assert _count(discriminator.trainable_weights) == 5_946_816
    assert _count(discriminator.non_trainable_weights) == 1_216  # the spectral-norm vectors u
    assert models.size_factor("deepfill_v2") == 8 == recipe.size_factor


def test_forward_shapes_known_pixels_and_range(small):
    generator, discriminators, _ = small
    batch = _batch()
    outputs = generator(batch["image"], batch["mask"], training=False)
    assert batch["image"].shape == (2, HEIGHT, WIDTH, 3)
    assert_forward_outputs(outputs, batch["image"], batch["mask"], keys=("output", "raw", "coarse", "flow"))
    scores = discriminators["sn_patch_gan"](tf.concat([outputs["output"], batch["mask"]], -1), training=False)
    # Six stride-2 SAME convs: ceil(16/64) * ceil(24/64) cells of 4 * dnum scores, flattened.
    assert scores.shape == (2, 1 * 1 * 32) and np.all(np.isfinite(scores.numpy()))


def test_network_never_sees_hole_pixels(small):
    generator, _, _ = small
    batch = _batch()
    assert_hole_pixels_ignored(generator, batch["image"], batch["mask"], ("raw", "coarse"), fill=0.9)


def test_bgr_option_flips_channels_inside(small):
    rgb = small.generator
    bgr = deepfill_v2.DeepFillV2Generator.from_config(dict(rgb.get_config(), bgr=True))
    bgr.create_variables()
    bgr.set_weights(rgb.get_weights())
    batch = _batch()
    out_rgb = rgb(batch["image"], batch["mask"])["raw"].numpy()
    out_bgr = bgr(batch["image"][..., ::-1], batch["mask"])["raw"].numpy()
    np.testing.assert_allclose(out_bgr[..., ::-1], out_rgb, atol=1e-6)


def test_recipe_losses_match_numpy_and_reach_every_weight(small):
    generator, discriminators, recipe = small
    model_set = ModelSet(generator, discriminators)
    batch = _batch()
    weights = recipe.weights_for(recipe.phases[0])
    assert weights == {"l1": 1.0, "gan": 1.0}

    # Reconstruction part against NumPy: plain L1 over the whole image in [-1, 1], on both stages.
    no_gan = recipe.generator_loss(model_set, batch, dict(weights, gan=0.0), False)
    outputs = generator(batch["image"], batch["mask"], training=False)
    image = batch["image"].numpy()
    expected = sum(np.mean(np.abs(2 * image - 2 * outputs[key].numpy())) for key in ("coarse", "raw"))
    np.testing.assert_allclose(no_gan["total"].numpy(), expected, rtol=1e-5)

    with tf.GradientTape() as tape:
        g_losses = recipe.generator_loss(model_set, batch, weights, True)
    grads = tape.gradient(g_losses["total"], generator.trainable_variables)
    assert all(np.isfinite(v.numpy()) for v in g_losses.values())
    assert_gradients_reach(generator.trainable_variables, grads)

    discriminator = discriminators["sn_patch_gan"]
    with tf.GradientTape() as tape:
        d_losses = recipe.discriminator_loss(model_set, batch, weights, True)
    grads = tape.gradient(d_losses["total"], discriminator.trainable_variables)
    assert all(np.isfinite(v.numpy()) for v in d_losses.values())
    assert_gradients_reach(discriminator.trainable_variables, grads)

    # Hinge loss against NumPy with inference-mode scores (the u vectors stay fixed).
    d_eval = recipe.discriminator_loss(model_set, batch, weights, False)
    mask = batch["mask"]
    real = discriminator(tf.concat([2 * batch["image"] - 1, mask], -1)).numpy()
    fake = discriminator(tf.concat([2 * outputs["output"] - 1, mask], -1)).numpy()
    hinge = 0.5 * np.mean(np.maximum(1 - real, 0)) + 0.5 * np.mean(np.maximum(1 + fake, 0))
    np.testing.assert_allclose(d_eval["total"].numpy(), hinge, rtol=1e-5)


def test_recipe_settings_follow_spec(small):
    recipe = small.recipe
    assert recipe.g_optimizer == recipe.d_optimizer == {
        "class_name": "Adam", "learning_rate": 1e-4, "beta_1": 0.5, "beta_2": 0.999}
    assert [phase.critic_steps for phase in recipe.phases] == [1]
    assert (recipe.batch_size, recipe.image_size) == (16, 256)


def test_keras_save_load_round_trip(small, tmp_path):
    generator, discriminators, _ = small
    batch = _batch(seed=1)
    assert_keras_round_trip(generator, tmp_path / "generator.keras",
                            lambda model: model(batch["image"], batch["mask"], training=False))
    inputs = tf.concat([batch["image"], batch["mask"]], -1)
    # A loaded SN-PatchGAN names its variables without the model prefix ("sn_conv1/u", not
    # "sn_patch_gan/sn_conv1/u"), so only their values and order are compared.
    assert_keras_round_trip(discriminators["sn_patch_gan"], tmp_path / "discriminator.keras",
                            lambda model: model(inputs), check_weight_paths=False)


def test_mixed_bfloat16_outputs_float32_and_keeps_known_pixels():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    generator = models.create("deepfill_v2", cnum=8, dnum=8).generator
    batch = _batch()
    outputs = generator(batch["image"], batch["mask"])
    assert all(value.dtype == tf.float32 for value in outputs.values())
    assert_known_pixels_bit_exact(outputs, batch["image"], batch["mask"])
    assert np.all(np.isfinite(outputs["raw"].numpy()))


def test_bad_inputs_raise_clear_errors(small):
    generator, discriminators, _ = small
    with pytest.raises(ValueError, match="multiple of 8"):
        generator(tf.zeros([1, 12, 16, 3]), tf.zeros([1, 12, 16, 1]))
    with pytest.raises(ValueError, match="mask"):
        generator(tf.zeros([1, 16, 16, 3]), tf.zeros([1, 16, 16, 3]))
    with pytest.raises(ValueError, match="4"):
        discriminators["sn_patch_gan"](tf.zeros([1, 16, 16, 3]))
    with pytest.raises(ValueError, match="cnum"):
        deepfill_v2.build(cnum=10)
    with pytest.raises(ValueError, match="unknown option"):
        models.create("deepfill_v2", cnm=8)
