"""GLCIC (docs/architectures.md §4): the paper-specific parts (stored mean, discriminator, recipe, post-process); the
generator
contract is checked for every model in test_model_contract.py."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinpaint import models
from tfinpaint.models import glcic
from tfinpaint.training.recipe import ModelSet, make_optimizer

HEIGHT, WIDTH = 32, 48  # smallest handy non-square size; the discriminator resizes to its image_size


def _small(**options):
    return models.create("glcic", preset="tiny", **options)


def _batch(batch=2, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.uniform(size=(batch, HEIGHT, WIDTH, 3)).astype(np.float32)
    mask = np.zeros((batch, HEIGHT, WIDTH, 1), np.float32)
    mask[0, 4:20, 6:30] = 1.0
    mask[1, 10:30, 20:44] = 1.0
    return {"image": tf.constant(image), "mask": tf.constant(mask)}


def test_discriminator_logits_at_any_input_size():
    generator, discriminators, _ = _small()
    batch = _batch()
    outputs = generator(batch["image"], batch["mask"], training=False)
    assert set(outputs) == {"output", "raw"}
    logits = discriminators["context"](outputs["output"], batch["mask"], training=False)
    assert logits.shape == (2, 1) and np.all(np.isfinite(logits.numpy()))


def test_generator_uses_the_stored_mean():
    generator, _, _ = _small(mean=(0.1, 0.2, 0.3))
    batch = _batch()
    mask = batch["mask"]
    first = generator(batch["image"], mask, training=False)["raw"]
    mean_weights = [w for w in generator.non_trainable_weights if w.path.endswith("/mean")]
    assert len(mean_weights) == 1
    np.testing.assert_allclose(mean_weights[0].numpy(), [0.1, 0.2, 0.3])
    # The mean matters: shifting it shifts the known-pixel input, hence the prediction.
    mean_weights[0].assign([0.5, 0.5, 0.5])
    third = generator(batch["image"], mask, training=False)["raw"]
    assert np.abs(third.numpy() - first.numpy()).max() > 0


def test_discriminator_keras_round_trip(tmp_path, checks):
    _, discriminators, _ = _small()
    batch = _batch()
    restored = checks.assert_keras_round_trip(discriminators["context"], tmp_path / "d.keras",
                                              lambda model: model(batch["image"], batch["mask"], training=False))
    assert isinstance(restored, glcic.GLCICDiscriminator) and restored.dnum == 4


def test_recipe_schedule_losses_and_weights():
    generator, discriminators, recipe = _small()
    assert [p.name for p in recipe.phases] == ["completion", "discriminator", "joint"]
    assert [p.steps for p in recipe.phases] == [90_000, 10_000, 400_000]
    assert [(p.train_generator, p.train_discriminator) for p in recipe.phases] == [
        (True, False), (False, True), (True, True)
    ]
    assert (recipe.batch_size, recipe.image_size, generator.size_factor) == (96, 64, 4)
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


def test_mixed_bfloat16_forward_is_float32(checks):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    generator, discriminators, _ = _small()
    batch = _batch()
    outputs = generator(batch["image"], batch["mask"], training=False)
    assert outputs["output"].dtype == tf.float32 and np.all(np.isfinite(outputs["output"].numpy()))
    checks.assert_known_pixels_bit_exact(outputs, batch["image"], batch["mask"])
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
    with pytest.raises(ValueError, match="glcic: unknown option"):
        models.create("glcic", cnum=8, widht=3)
    with pytest.raises(ValueError, match="multiple of 64"):
        models.create("glcic", image_size=100)
    assert models.config("glcic").size_factor == 4


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
