"""CRA / HiFill (docs/architectures.md §5): the paper-specific parts (attention masking, critic, recipe losses against a
NumPy computation, the high-resolution residual aggregation against a NumPy reference); the generator contract is
checked for every model in test_model_contract.py."""
import cv2
import numpy as np
import pytest
import tensorflow as tf

from tfinpaint import models
from tfinpaint.inference.pipeline import HDSettings, InpaintingPipeline
from tfinpaint.models import cra
from tfinpaint.training.recipe import ModelSet
from tfinpaint.training.recipes import cra as cra_recipe

# Non-square multiples of the size factor 16 giving a 3 x 4 attention grid: large enough that the holes, dilated by
# one cell, leave valid source cells (on a 2 x 2 grid any hole invalidates every cell and the attention is 0).
HEIGHT, WIDTH = 48, 64
TRAIN = 64  # square training size of the small critic


def _count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def _batch(height=HEIGHT, width=WIDTH, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.uniform(size=(batch, height, width, 3)).astype(np.float32)
    mask = np.zeros((batch, height, width, 1), np.float32)
    mask[0, 3:14, 5:14] = 1.0  # a different hole per sample, each inside one 16 x 16 grid cell
    mask[1, 34:46, 50:62] = 1.0
    return {"image": tf.constant(image), "mask": tf.constant(mask)}


@pytest.fixture(scope="module")
def small():
    return models.create("cra", preset="tiny")


def test_critic_dense_follows_the_training_size():
    critics = {}
    for size in (512, 256):
        critics[size] = cra.CRACritic(input_size=size)
        critics[size].build((None, size, size, 3))
    # 8 x 8 x 256 + 1 Dense weights at 512, 4 x 4 x 256 + 1 at 256 (5,961,601 in all at 512: README).
    assert _count(critics[512].trainable_weights) == 5_961_601
    assert _count(critics[256].trainable_weights) == 5_961_601 - 16_385 + 4_097


def test_attention_never_uses_hole_cells(small):
    generator, _, _ = small
    batch = _batch()
    outputs = generator(batch["image"], batch["mask"], training=False)
    assert set(outputs) == {"output", "raw", "coarse", "attention", "flow"}
    attention = outputs["attention"].numpy()
    grid_h, grid_w = HEIGHT // 16, WIDTH // 16
    assert attention.shape == (2, grid_h * grid_w, grid_h * grid_w)
    assert attention.min() >= 0.0 and np.all(attention.sum(-1) <= 1.0 + 1e-5)
    # HiFill masking: a 16 x 16 cell with any hole pixel, dilated by one cell, is never a source.
    for sample, (row, col) in enumerate([(0, 0), (2, 3)]):
        invalid = np.zeros((grid_h, grid_w), bool)
        invalid[max(row - 1, 0):row + 2, max(col - 1, 0):col + 2] = True
        np.testing.assert_array_equal(attention[sample][:, invalid.ravel()], 0.0)
        assert np.all(attention[sample][:, ~invalid.ravel()].sum(-1) > 0)
    no_flow = cra.CRAGenerator(cnum=8, return_flow=False)
    assert "flow" not in no_flow(batch["image"], batch["mask"])


def test_network_never_sees_hole_pixels(small, checks):
    generator, _, _ = small
    batch = _batch()
    checks.assert_hole_pixels_ignored(generator, batch["image"], batch["mask"], ("raw", "coarse", "attention"),
                                      fill=0.9)


def _well_scaled_kernels(model, seed=0):
    """Redraws every kernel with variance 4 / fan_in. The official init (truncated normal, stddev 0.05) shrinks
    activations through the 25 gated coarse layers of a narrow test network until some gradients underflow
    to exactly 0 in float32; connectivity is what the gradient test checks, so it uses a scale that keeps
    the signal alive."""
    rng = np.random.default_rng(seed)
    for weight in model.trainable_weights:
        if weight.path.endswith("kernel"):
            fan_in = int(np.prod(weight.shape[:-1]))
            weight.assign(rng.normal(scale=np.sqrt(4.0 / fan_in), size=weight.shape).astype(np.float32))


def test_recipe_losses_match_numpy(checks):
    generator, discriminators, recipe = models.create("cra", preset="tiny")
    _well_scaled_kernels(generator)
    model_set = ModelSet(generator, discriminators)
    batch = _batch(TRAIN, TRAIN)
    weights = recipe.weights_for(recipe.phases[0])
    assert weights == {"l1": 1.2, "ae": 1.2, "coarse": 1.2, "gan": 0.001, "gp": 10.0}

    # Reconstruction part against NumPy (official: hole L1 not area-normalised, valid L1 normalised).
    no_gan = recipe.generator_loss(model_set, batch, dict(weights, gan=0.0), False)
    outputs = generator(batch["image"], batch["mask"], training=False)
    image, mask = batch["image"].numpy(), batch["mask"].numpy()
    diff = {key: np.abs(2 * image - 2 * outputs[key].numpy()) for key in ("coarse", "raw")}
    hole = 1.2 * np.mean(diff["coarse"] * mask) + np.mean(diff["raw"] * mask)
    valid = (1.2 * np.mean(diff["coarse"] * (1 - mask)) + np.mean(diff["raw"] * (1 - mask))) / np.mean(1 - mask)
    np.testing.assert_allclose(no_gan["total"].numpy(), 1.2 * hole + 1.2 * valid, rtol=1e-5)

    g_losses = recipe.generator_loss(model_set, batch, weights, False)
    assert all(np.isfinite(v.numpy()) for v in g_losses.values())

    critic = discriminators["critic"]
    with tf.GradientTape() as tape:
        d_losses = recipe.discriminator_loss(model_set, batch, weights, True)
    grads = tape.gradient(d_losses["total"], critic.trainable_variables)
    assert set(d_losses) == {"total", "wgan", "gp"}
    assert all(np.isfinite(v.numpy()) for v in d_losses.values())
    checks.assert_gradients_reach(critic.trainable_variables, grads,
                                  must_be_nonzero=lambda v: v is not critic.dense.bias)
    # WGAN-GP is invariant to a constant offset of the critic: mean(fake) - mean(real) cancels it.
    bias_grad = next(grad for v, grad in zip(critic.trainable_variables, grads) if v is critic.dense.bias)
    np.testing.assert_array_equal(bias_grad.numpy(), 0.0)
    real = critic(2 * batch["image"] - 1).numpy()
    fake = critic(2 * outputs["output"] - 1).numpy()
    np.testing.assert_allclose(d_losses["wgan"].numpy(), fake.mean() - real.mean(), rtol=1e-4, atol=1e-6)

    all_hole = dict(batch, mask=tf.ones_like(batch["mask"]))
    assert np.isfinite(recipe.generator_loss(model_set, all_hole, weights, False)["total"].numpy())


def test_recipe_settings_follow_spec(small):
    recipe = small.recipe
    assert recipe.g_optimizer == recipe.d_optimizer == {
        "class_name": "Adam", "learning_rate": 1e-4, "beta_1": 0.5, "beta_2": 0.9}
    assert [phase.critic_steps for phase in recipe.phases] == [3]
    assert recipe.batch_size == 8 and recipe.image_size == TRAIN
    assert cra_recipe.make_recipe(models.config("cra")).image_size == 512


def test_critic_keras_round_trip(small, tmp_path, checks):
    _, discriminators, _ = small
    images = 2 * _batch(TRAIN, TRAIN)["image"] - 1
    checks.assert_keras_round_trip(discriminators["critic"], tmp_path / "critic.keras", lambda model: model(images))


def test_bad_inputs_raise_clear_errors(small):
    generator, discriminators, _ = small
    with pytest.raises(ValueError, match="multiple of 16"):
        generator(tf.zeros([1, 24, 32, 3]), tf.zeros([1, 24, 32, 1]))
    with pytest.raises(ValueError, match="image_size=32"):
        discriminators["critic"](tf.zeros([1, 32, 32, 3]))
    with pytest.raises(ValueError, match="working_size must be a multiple of 16"):
        _high_res(generator, working_size=40)


def _high_res(generator, working_size, stages=()):
    """The pipeline's cra strategy (network at ``working_size``, residual aggregated at full resolution)."""
    return InpaintingPipeline(generator, 16, HDSettings("cra", working_size=working_size), attention_cell=16).function(
        stages)


@pytest.mark.parametrize("height,width,working,network", [(4320, 7680, 512, (288, 512)), (300, 200, 64, (64, 48)),
                                                          (1000, 10, 64, (64, 16))])
def test_network_input_keeps_the_aspect_ratio(height, width, working, network):
    """The long side becomes the working size, the short side the nearest multiple of 16 (never below 16)."""
    seen = []

    class Spy(_FixedGenerator):
        def __call__(self, image, mask, training=False):
            seen.append(tuple(image.shape[1:3]))
            return super().__call__(image, mask, training)

    cells = network[0] // 16 * (network[1] // 16)
    spy = Spy(np.eye(cells, dtype=np.float32), fill=np.float32(0.5))
    pipeline = InpaintingPipeline(spy, 16, HDSettings("cra", working_size=working), attention_cell=16)
    hole = np.zeros((height, width), bool)
    hole[height // 2, width // 2] = True
    pipeline.inpaint(tf.zeros([height, width, 3], tf.uint8), tf.constant(hole))
    assert seen == [network]


def test_high_res_keeps_known_pixels_and_shape(small):
    generator = small.generator
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(200, 300, 3), dtype=np.uint8)
    mask = np.zeros((200, 300), np.uint8)
    mask[50:120, 90:200] = 255
    result, stages = _high_res(generator, 64, ("coarse",))(tf.constant(image), tf.constant(mask > 0))
    result = result.numpy()
    assert result.shape == image.shape and result.dtype == np.uint8
    known = mask == 0
    np.testing.assert_array_equal(result[known], image[known])
    assert stages["coarse"].shape == (48, 64, 3)


class _FixedGenerator:
    """A stand-in network with a known output and attention matrix, to check the aggregation arithmetic."""

    size_factor = 16
    attention_cell = 16
    variables = []

    def __init__(self, attention, fill):
        self.attention = attention
        self.fill = fill

    def __call__(self, image, mask, training=False):
        output = image * (1 - mask) + self.fill * mask
        return {"output": output, "raw": output, "attention": tf.constant(self.attention[None])}


def test_high_res_residual_aggregation_matches_numpy():
    rng = np.random.default_rng(4)
    height, width, working = 64, 128, 64  # network input 32 x 64, a 2 x 4 grid of 32 x 32 full-res cells
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    hole = np.zeros((height, width), bool)
    hole[36:60, 70:90] = True  # inside cells (1, 2) and neighbours of the grid row 1
    attention = rng.uniform(size=(8, 8)).astype(np.float32)
    attention[:, [5, 6]] = 0.0  # source cells touching the hole carry no weight (as the network masks them)
    attention /= attention.sum(1, keepdims=True)
    fake = _FixedGenerator(attention, fill=np.float32(0.25))
    result = _high_res(fake, working)(tf.constant(image), tf.constant(hole))[0].numpy()

    # NumPy reference of spec 5.7 (integer factor 2: area = 2 x 2 block average, bilinear = cv2 INTER_LINEAR).
    large = image.astype(np.float32) / 255
    small = large.reshape(32, 2, 64, 2, 3).mean((1, 3))
    small_hole = hole.reshape(32, 2, 64, 2).any((1, 3))[..., None]
    small_out = small * (1 - small_hole) + 0.25 * small_hole
    base = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    residual = (large - base) * (~hole)[..., None]
    cells = residual.reshape(2, 32, 4, 32, 3).transpose(0, 2, 1, 3, 4).reshape(8, -1)
    aggregated = (attention @ cells).reshape(2, 4, 32, 32, 3).transpose(0, 2, 1, 3, 4).reshape(height, width, 3)
    filled = np.clip(cv2.resize(small_out.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
                     + aggregated, 0, 1)
    expected = np.where(hole[..., None], np.round(filled * 255).astype(np.uint8), image)
    assert np.abs(result.astype(int) - expected.astype(int)).max() <= 1
    np.testing.assert_array_equal(result[~hole], image[~hole])
