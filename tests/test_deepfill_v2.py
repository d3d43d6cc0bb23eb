"""DeepFill v2 (docs/architectures.md §2): the paper-specific parts (BGR option, SN-PatchGAN, recipe losses against a
NumPy
computation, mixed precision); the generator contract is checked for every model in test_model_contract.py."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinpaint import models
from tfinpaint.models import deepfill_v2
from tfinpaint.training.recipe import ModelSet

HEIGHT, WIDTH = 16, 24  # non-square multiples of the size factor 8


def _batch(batch=2, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.uniform(size=(batch, HEIGHT, WIDTH, 3)).astype(np.float32)
    mask = np.zeros((batch, HEIGHT, WIDTH, 1), np.float32)
    mask[0, 2:9, 3:14] = 1.0  # a different hole per sample
    mask[1, 6:16, 12:22] = 1.0
    return {"image": tf.constant(image), "mask": tf.constant(mask)}


@pytest.fixture(scope="module")
def small():
    return models.create("deepfill_v2", preset="tiny")


def test_sn_patchgan_scores_per_cell(small):
    generator, discriminators, _ = small
    batch = _batch()
    outputs = generator(batch["image"], batch["mask"], training=False)
    assert set(outputs) == {"output", "raw", "coarse", "flow"}
    scores = discriminators["sn_patch_gan"](tf.concat([outputs["output"], batch["mask"]], -1), training=False)
    # Six stride-2 SAME convs: ceil(16/64) * ceil(24/64) cells of 4 * dnum scores, flattened.
    assert scores.shape == (2, 1 * 1 * 32) and np.all(np.isfinite(scores.numpy()))


def test_bgr_option_flips_channels_inside(small):
    rgb = small.generator
    bgr = deepfill_v2.DeepFillV2Generator.from_config(dict(rgb.get_config(), bgr=True))
    bgr.create_variables()
    bgr.set_weights(rgb.get_weights())
    batch = _batch()
    out_rgb = rgb(batch["image"], batch["mask"])["raw"].numpy()
    out_bgr = bgr(batch["image"][..., ::-1], batch["mask"])["raw"].numpy()
    np.testing.assert_allclose(out_bgr[..., ::-1], out_rgb, atol=1e-6)


def test_recipe_losses_match_numpy(small, checks):
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

    g_losses = recipe.generator_loss(model_set, batch, weights, False)
    assert all(np.isfinite(v.numpy()) for v in g_losses.values())

    discriminator = discriminators["sn_patch_gan"]
    with tf.GradientTape() as tape:
        d_losses = recipe.discriminator_loss(model_set, batch, weights, True)
    grads = tape.gradient(d_losses["total"], discriminator.trainable_variables)
    assert all(np.isfinite(v.numpy()) for v in d_losses.values())
    checks.assert_gradients_reach(discriminator.trainable_variables, grads)

    # Hinge loss against NumPy with inference-mode scores (the u vectors stay fixed).
    d_eval = recipe.discriminator_loss(model_set, batch, weights, False)
    mask = batch["mask"]
    real = discriminator(tf.concat([2 * batch["image"] - 1, mask], -1)).numpy()
    fake = discriminator(tf.concat([2 * outputs["output"] - 1, mask], -1)).numpy()
    hinge = 0.5 * np.mean(np.maximum(1 - real, 0)) + 0.5 * np.mean(np.maximum(1 + fake, 0))
    np.testing.assert_allclose(d_eval["total"].numpy(), hinge, rtol=1e-5)


def test_recipe_settings_follow_spec():
    recipe = models.get("deepfill_v2").make_recipe(models.config("deepfill_v2"))  # the paper preset
    assert recipe.g_optimizer == recipe.d_optimizer == {
        "class_name": "Adam", "learning_rate": 1e-4, "beta_1": 0.5, "beta_2": 0.999}
    assert [phase.critic_steps for phase in recipe.phases] == [1]
    assert (recipe.batch_size, recipe.image_size) == (16, 256)


def test_discriminator_keras_round_trip(small, tmp_path, checks):
    _, discriminators, _ = small
    batch = _batch(seed=1)
    inputs = tf.concat([batch["image"], batch["mask"]], -1)
    # A loaded SN-PatchGAN names its variables without the model prefix ("sn_conv1/u", not
    # "sn_patch_gan/sn_conv1/u"), so only their values and order are compared.
    checks.assert_keras_round_trip(discriminators["sn_patch_gan"], tmp_path / "discriminator.keras",
                                   lambda model: model(inputs), check_weight_paths=False)


def test_mixed_bfloat16_outputs_float32_and_keeps_known_pixels(checks):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    generator = models.get("deepfill_v2").build_generator(models.config("deepfill_v2", "tiny"))
    batch = _batch()
    outputs = generator(batch["image"], batch["mask"])
    assert all(value.dtype == tf.float32 for value in outputs.values())
    checks.assert_known_pixels_bit_exact(outputs, batch["image"], batch["mask"])
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
        models.create("deepfill_v2", cnum=10)
    with pytest.raises(ValueError, match="unknown option"):
        models.create("deepfill_v2", cnm=8)
