"""GLCIC (spec §4): parameter counts, forward pass invariants, gradients, serialization, recipe, post-process."""
import numpy as np
import pytest
import tensorflow as tf
import keras

from tests.model_checks import (
    assert_forward_outputs,
    assert_gradients_reach,
    assert_hole_pixels_ignored,
    assert_keras_round_trip,
    assert_known_pixels_bit_exact,
)
from tfinpaint import models
from tfinpaint.models import glcic
from tfinpaint.training.recipe import ModelSet, make_optimizer

HEIGHT, WIDTH = 32, 48  # smallest handy non-square size; the discriminator resizes to its image_size


def _count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def _small(**options):
    return models.create("glcic", cnum=8, dnum=4, image_size=64, **options)


def _batch(batch=2, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.uniform(size=(batch, HEIGHT, WIDTH, 3)).astype(np.float32)
    mask = np.zeros((batch, HEIGHT, WIDTH, 1), np.float32)
    mask[0, 4:20, 6:30] = 1.0
    mask[1, 10:30, 20:44] = 1.0
    return {"image": tf.constant(image), "mask": tf.constant(mask)}


def test_parameter_counts_match_spec():
    generator, discriminators, _ = models.create("glcic")
    generator.build((None, None, None, 3))
    discriminator = discriminators["context"]
    discriminator.build((None, 256, 256, 3))
    assert _count(generator.trainable_weights) == 6_072_131
    # 5,952 BN moving statistics + the 3-value `mean`.
    assert _count(generator.non_trainable_weights) == 5_952 + 3
    assert _count(discriminator.trainable_weights) == 45_063_681
    assert _count(discriminator.local_branch.trainable_weights) == 19_253_248
    assert _count(discriminator.global_branch.trainable_weights) == 25_808_384
    assert _count(discriminator.concat_fc.trainable_weights) == 2_049


def test_forward_shapes_known_pixels_and_range():
    generator, discriminators, _ = _small()
    batch = _batch()
    outputs = generator(batch["image"], batch["mask"], training=False)
    assert batch["image"].shape == (2, HEIGHT, WIDTH, 3)
    assert_forward_outputs(outputs, batch["image"], batch["mask"], keys=("output", "raw"))
    logits = discriminators["context"](outputs["output"], batch["mask"], training=False)
    assert logits.shape == (2, 1) and np.all(np.isfinite(logits.numpy()))


def test_network_never_sees_hole_pixels_and_uses_stored_mean():
    generator, _, _ = _small(mean=(0.1, 0.2, 0.3))
    batch = _batch()
    mask = batch["mask"]
    assert_hole_pixels_ignored(generator, batch["image"], mask, ("raw",), fill=0.77)
    first = generator(batch["image"], mask, training=False)["raw"]
    mean_weights = [w for w in generator.non_trainable_weights if w.path.endswith("/mean")]
    assert len(mean_weights) == 1
    np.testing.assert_allclose(mean_weights[0].numpy(), [0.1, 0.2, 0.3])
    # The mean matters: shifting it shifts the known-pixel input, hence the prediction.
    mean_weights[0].assign([0.5, 0.5, 0.5])
    third = generator(batch["image"], mask, training=False)["raw"]
    assert np.abs(third.numpy() - first.numpy()).max() > 0


def _is_kernel(weight):
    return weight.path.endswith("kernel")


def test_gradients_reach_every_trainable_weight():
    generator, discriminators, recipe = _small()
    model_set = ModelSet(generator, discriminators)
    batch = _batch()
    joint = recipe.weights_for(recipe.phases[2])
    with tf.GradientTape() as tape:
        losses = recipe.generator_loss(model_set, batch, joint, True)
    gradients = tape.gradient(losses["total"], generator.trainable_weights)
    assert_gradients_reach(generator.trainable_weights, gradients, must_be_nonzero=_is_kernel)

    discriminator = discriminators["context"]
    with tf.GradientTape() as tape:
        losses = recipe.discriminator_loss(model_set, batch, joint, True)
    gradients = tape.gradient(losses["total"], discriminator.trainable_weights)
    assert_gradients_reach(discriminator.trainable_weights, gradients, must_be_nonzero=_is_kernel)


def test_keras_save_load_round_trip(tmp_path):
    generator, discriminators, _ = _small()
    batch = _batch()

    def run(model):
        return model(batch["image"], batch["mask"], training=False)

    restored = assert_keras_round_trip(generator, tmp_path / "g.keras", run)
    assert isinstance(restored, glcic.GLCICGenerator) and restored.cnum == 8
    assert_keras_round_trip(discriminators["context"], tmp_path / "d.keras", run)


def test_recipe_schedule_losses_and_weights():
    generator, discriminators, recipe = _small()
    assert [p.name for p in recipe.phases] == ["completion", "discriminator", "joint"]
    assert [p.steps for p in recipe.phases] == [90_000, 10_000, 400_000]
    assert [(p.train_generator, p.train_discriminator) for p in recipe.phases] == [
        (True, False), (False, True), (True, True)
    ]
    assert (recipe.batch_size, recipe.image_size, recipe.size_factor) == (96, 64, 4)
    optimizer = make_optimizer(recipe.g_optimizer)
    assert isinstance(optimizer, keras.optimizers.Adadelta)
    assert (float(optimizer.learning_rate), optimizer.rho, optimizer.epsilon) == (1.0, 0.9, 1e-6)

    model_set = ModelSet(generator, discriminators)
    batch = _batch()
    completion = recipe.generator_loss(model_set, batch, recipe.weights_for(recipe.phases[0]), False)
    assert set(completion) == {"mse", "total"}  # phase 1 never runs the discriminator
    joint = recipe.generator_loss(model_set, batch, recipe.weights_for(recipe.phases[2]), False)
    assert set(joint) == {"mse", "gan", "total"}
    np.testing.assert_allclose(joint["total"], joint["mse"] + 0.0004 * joint["gan"], rtol=1e-6)
    # MSE against a NumPy reference of the paper's hole-only squared error.
    raw = generator(batch["image"], batch["mask"], training=False)["raw"].numpy()
    reference = np.mean(((raw - batch["image"].numpy()) * batch["mask"].numpy()) ** 2)
    np.testing.assert_allclose(joint["mse"], reference, rtol=1e-5)
    # --__lambda_l1__ (key "l1") scales the MSE term.
    scaled = recipe.generator_loss(model_set, batch, recipe.weights_for(recipe.phases[0], {"l1": 3.0}), False)
    np.testing.assert_allclose(scaled["total"], 3.0 * scaled["mse"], rtol=1e-6)
    d_losses = recipe.discriminator_loss(model_set, batch, recipe.weights_for(recipe.phases[1]), False)
    np.testing.assert_allclose(d_losses["total"], 0.0004 * d_losses["bce"], rtol=1e-6)
    for value in [*completion.values(), *joint.values(), *d_losses.values()]:
        assert np.isfinite(value.numpy())


def test_mixed_bfloat16_forward_is_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    generator, discriminators, _ = _small()
    batch = _batch()
    outputs = generator(batch["image"], batch["mask"], training=False)
    assert outputs["output"].dtype == tf.float32 and np.all(np.isfinite(outputs["output"].numpy()))
    assert_known_pixels_bit_exact(outputs, batch["image"], batch["mask"])
    logits = discriminators["context"](outputs["output"], batch["mask"])
    assert logits.dtype == tf.float32
    assert generator.body.compute_dtype == "bfloat16"  # the network itself runs in bf16
    assert all(w.dtype == "float32" for w in generator.weights)


def test_bad_inputs_raise_clear_errors():
    generator, _, _ = _small()
    with pytest.raises(ValueError, match="GLCICGenerator.*multiples of 4"):
        generator(tf.zeros((1, 30, 48, 3)), tf.zeros((1, 30, 48, 1)))
    with pytest.raises(ValueError, match="GLCICGenerator.*`mask`"):
        generator(tf.zeros((1, 32, 48, 3)), tf.zeros((1, 32, 48, 3)))
    with pytest.raises(ValueError, match="glcic.build: unknown option"):
        models.create("glcic", cnum=8, widht=3)
    with pytest.raises(ValueError, match="multiple of 64"):
        models.create("glcic", image_size=100)
    assert models.size_factor("glcic") == 4


def _smooth_image(height=64, width=80):
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.stack([rows * 2.0, cols * 2.0, 120 + 0 * rows], axis=-1) + 20
    return np.clip(image, 0, 255).astype(np.uint8)


def test_postprocess_keeps_known_pixels_and_removes_colour_seams():
    image = _smooth_image()
    assert image.max() <= 255 - 40
    mask = np.zeros(image.shape[:2], np.float32)
    mask[20:44, 25:60] = 1.0
    hole, known = mask > 0, mask == 0
    rng = np.random.default_rng(1)
    noisy = rng.integers(0, 256, size=image.shape, dtype=np.uint8)
    result = glcic.postprocess(image, noisy, mask)
    assert result.dtype == np.uint8 and result.shape == image.shape
    np.testing.assert_array_equal(result[known], image[known])
    # Poisson blending keeps only the gradients of the completion: a completion that is right up to a constant
    # colour offset (a visible seam) blends to the same result as the exact completion, close to the truth.
    offset = glcic.postprocess(image, image + np.uint8(40), mask[..., None])
    exact = glcic.postprocess(image, image, mask)
    np.testing.assert_array_equal(offset, exact)
    np.testing.assert_array_equal(offset[known], image[known])
    assert np.abs(offset[hole].astype(int) - image[hole]).mean() < 3.0
    # A hole touching the border and an empty mask both work.
    border = np.zeros_like(mask)
    border[0:10, 0:15] = 1
    np.testing.assert_array_equal(glcic.postprocess(image, noisy, border)[border == 0], image[border == 0])
    np.testing.assert_array_equal(glcic.postprocess(image, noisy, np.zeros_like(mask)), image)


def test_graph_mode_with_unknown_height_and_width_matches_eager():
    generator, _, _ = _small()
    batch = _batch()
    signature = [tf.TensorSpec([None, None, None, 3]), tf.TensorSpec([None, None, None, 1])]
    graph_call = tf.function(lambda image, mask: generator(image, mask), input_signature=signature)
    graph_outputs = graph_call(batch["image"], batch["mask"])
    eager_outputs = generator(batch["image"], batch["mask"])
    for key, value in eager_outputs.items():
        np.testing.assert_allclose(graph_outputs[key].numpy(), value.numpy(), atol=1e-5)
