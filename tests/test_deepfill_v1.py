"""DeepFill v1 (docs/architectures.md §1): the paper-specific parts (BGR option, critics, the recipe's losses against
a NumPy
reference); the generator contract is checked for every model in test_model_contract.py."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinpaint import models
from tfinpaint.models import deepfill_v1
from tfinpaint.training.recipe import ModelSet, make_optimizer

HEIGHT, WIDTH = 32, 48
# Hand-placed holes and the top-left corners of their H/2 x W/2 (16 x 24) local windows, centred on the hole
# bounding box: sample 0 rows 8..19 / cols 10..29 -> centre (13.5, 19.5) -> corner (6, 8); sample 1 rows 4..27 /
# cols 30..47 -> centre (15.5, 38.5) -> corner (8, 27), clamped to (8, 24).
HOLES = [(slice(8, 20), slice(10, 30)), (slice(4, 28), slice(30, 48))]
WINDOWS = [(6, 8), (8, 24)]


def _small(**options):
    return models.create("deepfill_v1", preset="tiny", **options)


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    image = rng.uniform(size=(2, HEIGHT, WIDTH, 3)).astype(np.float32)
    mask = np.zeros((2, HEIGHT, WIDTH, 1), np.float32)
    for sample, (rows, cols) in enumerate(HOLES):
        mask[sample, rows, cols] = 1.0
    return {"image": tf.constant(image), "mask": tf.constant(mask)}


def test_bgr_option_flips_channels_around_the_same_network():
    rgb_generator, _, _ = _small()
    bgr_generator, _, _ = _small(bgr=True)
    batch = _batch()
    rgb_generator(batch["image"], batch["mask"])
    bgr_generator(batch["image"], batch["mask"])
    bgr_generator.set_weights(rgb_generator.get_weights())
    flipped = batch["image"][..., ::-1]
    expected = rgb_generator(flipped, batch["mask"])
    actual = bgr_generator(batch["image"], batch["mask"])
    for key in ("raw", "coarse"):
        np.testing.assert_allclose(actual[key].numpy(), expected[key].numpy()[..., ::-1], atol=1e-6)


def test_critic_gradients_skip_only_the_score_bias(checks):
    generator, critics, recipe = _small()
    model_set = ModelSet(generator, critics)
    batch = _batch()
    weights = recipe.weights_for(recipe.phases[0])
    assert len(generator.trainable_weights) == 2 * 42  # kernel + bias of 17 coarse, 10 + 6 + 2 + 7 refinement convs
    critic_weights = [w for critic in critics.values() for w in critic.trainable_weights]
    with tf.GradientTape() as tape:
        losses = recipe.discriminator_loss(model_set, batch, weights, True)
    gradients = tape.gradient(losses["total"], critic_weights)
    assert len(critic_weights) == 2 * 10
    # The score bias cancels in mean(D(fake)) - mean(D(real)) and the penalty ignores it: zero gradient.
    checks.assert_gradients_reach(critic_weights, gradients,
                                  must_be_nonzero=lambda w: not w.path.endswith("score/bias"))


def test_critic_keras_round_trip(tmp_path, checks):
    _, critics, _ = _small()
    patch = tf.random.uniform((2, 16, 24, 3), -1.0, 1.0)
    restored = checks.assert_keras_round_trip(critics["local"], tmp_path / "local.keras", lambda model: model(patch))
    assert isinstance(restored, deepfill_v1.DeepFillV1Critic) and restored.kind == "local"


def _chebyshev_distance_to_known(hole):
    """Brute force: for every hole pixel, min over known pixels of max(|dy|, |dx|)."""
    known = np.argwhere(~hole)
    distance = np.zeros(hole.shape)
    for y, x in np.argwhere(hole):
        distance[y, x] = np.min(np.maximum(np.abs(known[:, 0] - y), np.abs(known[:, 1] - x)))
    return distance


def test_recipe_losses_match_numpy_reference():
    generator, critics, recipe = _small()
    assert recipe.loss_weights == {"l1": 1.2, "ae": 1.2, "coarse_l1": 1.2, "gan": 0.001, "global_gan": 1.0,
                                   "gp": 10.0}
    assert len(recipe.phases) == 1 and recipe.phases[0].critic_steps == 5
    assert (recipe.batch_size, recipe.image_size, generator.size_factor) == (16, 32, 8)
    for config in (recipe.g_optimizer, recipe.d_optimizer):
        optimizer = make_optimizer(config)
        assert isinstance(optimizer, keras.optimizers.Adam)
        assert (optimizer.beta_1, optimizer.beta_2) == (0.5, 0.9)
        np.testing.assert_allclose(float(optimizer.learning_rate), 1e-4, rtol=1e-6)  # stored as float32

    model_set = ModelSet(generator, critics)
    batch = _batch()
    weights = recipe.weights_for(recipe.phases[0])
    losses = recipe.generator_loss(model_set, batch, weights, False)
    for value in losses.values():
        assert np.isfinite(value.numpy())

    outputs = generator(batch["image"], batch["mask"])
    x = batch["image"].numpy() * 2 - 1
    x1 = outputs["coarse"].numpy() * 2 - 1
    x2 = outputs["raw"].numpy() * 2 - 1
    hole = batch["mask"].numpy()
    valid = 1.0 - hole
    ae = (1.2 * np.mean(np.abs(x - x1) * valid) + np.mean(np.abs(x - x2) * valid)) / np.mean(valid)
    np.testing.assert_allclose(losses["ae"], ae, rtol=1e-5)
    discount = np.stack([0.9 ** _chebyshev_distance_to_known(h[..., 0] > 0) for h in hole])[..., None]
    local = []
    for i, (top, left) in enumerate(WINDOWS):
        window = (slice(top, top + 16), slice(left, left + 24))
        local.append([a[i][window] for a in (x, x1, x2, discount)])
    xl, x1l, x2l, dl = (np.stack(parts) for parts in zip(*local))
    l1_local = 1.2 * np.mean(np.abs(xl - x1l) * dl) + np.mean(np.abs(xl - x2l) * dl)
    np.testing.assert_allclose(losses["l1"], l1_local, rtol=1e-5)
    gan = losses["gan_global"] + losses["gan_local"]
    np.testing.assert_allclose(losses["total"], 1.2 * l1_local + 1.2 * ae + 0.001 * gan, rtol=1e-5)
    # The official critics' scores on the completed images, with the same local windows.
    completed = outputs["output"].numpy() * 2 - 1
    local_fake = np.stack([completed[i, top:top + 16, left:left + 24] for i, (top, left) in enumerate(WINDOWS)])
    np.testing.assert_allclose(losses["gan_local"], -np.mean(critics["local"](local_fake).numpy()), rtol=1e-5)
    np.testing.assert_allclose(losses["gan_global"], -np.mean(critics["global"](completed).numpy()), rtol=1e-5)

    d_losses = recipe.discriminator_loss(model_set, batch, weights, False)
    for value in d_losses.values():
        assert np.isfinite(value.numpy())
    local_real = np.stack([x[i, top:top + 16, left:left + 24] for i, (top, left) in enumerate(WINDOWS)])
    expected_local = np.mean(critics["local"](local_fake).numpy()) - np.mean(critics["local"](local_real).numpy())
    np.testing.assert_allclose(d_losses["wgan_local"], expected_local, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        d_losses["total"],
        d_losses["wgan_local"] + d_losses["wgan_global"] + 10.0 * (d_losses["gp_local"] + d_losses["gp_global"]),
        rtol=1e-5,
    )


def test_mixed_bfloat16_forward_is_float32(checks):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    generator, _, _ = _small()
    batch = _batch()
    outputs = generator(batch["image"], batch["mask"])
    assert generator.coarse.compute_dtype == "bfloat16"
    checks.assert_known_pixels_bit_exact(outputs, batch["image"], batch["mask"])
    for value in outputs.values():
        assert value.dtype == tf.float32 and np.all(np.isfinite(value.numpy()))


def test_bad_inputs_raise_clear_errors():
    generator, _, _ = _small()
    with pytest.raises(ValueError, match="DeepFillV1Generator.*multiple of 8"):
        generator(tf.zeros((1, 36, 48, 3)), tf.zeros((1, 36, 48, 1)))
    with pytest.raises(ValueError, match="DeepFillV1Generator.*`image`"):
        generator(tf.zeros((1, 32, 48, 4)), tf.zeros((1, 32, 48, 1)))
    with pytest.raises(ValueError, match="deepfill_v1: unknown option"):
        models.create("deepfill_v1", cnum=8, gama=0.9)
    with pytest.raises(ValueError, match="multiple of 32"):
        models.create("deepfill_v1", image_size=100)
    assert generator.size_factor == models.config("deepfill_v1").size_factor == 8


def test_graph_mode_with_unknown_height_and_width_matches_eager():
    generator, _, _ = _small()
    batch = _batch()
    signature = [tf.TensorSpec([None, None, None, 3]), tf.TensorSpec([None, None, None, 1])]
    graph_call = tf.function(lambda image, mask: generator(image, mask), input_signature=signature)
    graph_outputs = graph_call(batch["image"], batch["mask"])
    eager_outputs = generator(batch["image"], batch["mask"])
    for key, value in eager_outputs.items():
        np.testing.assert_allclose(graph_outputs[key].numpy(), value.numpy(), atol=1e-5)
