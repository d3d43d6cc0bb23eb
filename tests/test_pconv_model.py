"""PConv U-Net: the paper-specific parts (parameter counts with and without the pre-BN biases, the linear output,
frozen encoder batch norm, the training recipe); the generator contract is checked for every model in
test_model_contract.py."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinpaint import models as zoo
from tfinpaint.losses.perceptual import DEFAULT_PCONV_WEIGHTS, load_vgg16_features, pconv_loss
from tfinpaint.models import pconv
from tfinpaint.training.recipe import ModelSet


def _count(variables):
    return int(sum(np.prod(v.shape) for v in variables))


def _conv_biases_except_last(model):
    return _count([conv.bias for conv in model.encoder_convs + model.decoder_convs[:-1]])


def test_parameter_counts_match_the_spec():
    generator, discriminators, recipe = zoo.create("pconv")
    assert discriminators == {}
    # docs/architectures.md §3.2 / §6.1: biases on every layer, 512 input, 8 down / 8 up.
    assert _count(generator.trainable_weights) == 32_865_236
    assert _count(generator.non_trainable_weights) == 10_880
    # Without the biases that precede BN (the [NAO] style) the spec gives 32,859,732.
    assert _count(generator.trainable_weights) - _conv_biases_except_last(generator) == 32_859_732
    assert generator.size_factor == 256
    assert recipe.image_size == 512 and recipe.batch_size == 6
    del generator
    # The 7-level (256 px) [NAO] variant of the spec: 25,779,796 without the pre-BN biases.
    seven = pconv.PConvUNet(levels=7)
    seven.build((None, None, None, 3))
    assert _count(seven.trainable_weights) - _conv_biases_except_last(seven) == 25_779_796


def _batch(height=32, width=48):
    rng = np.random.default_rng(0)
    image = rng.uniform(size=(3, height, width, 3)).astype(np.float32)
    mask = np.zeros((3, height, width, 1), np.float32)
    mask[0, 5:20, 10:30] = 1.0  # a block hole
    mask[1] = 1.0  # all hole
    # sample 2: all known
    return image, mask


def _small(**kwargs):
    model = pconv.PConvUNet(levels=4, cnum=8, **kwargs)
    model.build((None, None, None, 3))
    return model


def test_raw_is_the_clipped_linear_output():
    model = _small()
    image, mask = _batch()
    outputs = model(image, mask, training=False)
    assert set(outputs) == {"output", "raw"}
    linear = model(image, mask, training=False, return_linear=True)["linear"].numpy()
    np.testing.assert_array_equal(np.clip(linear, 0.0, 1.0), outputs["raw"].numpy())


def test_freeze_encoder_batchnorm():
    model = _small()
    before = _count(model.trainable_weights)
    encoder_bn_channels = sum(model.encoder_widths[1:])
    model.freeze_encoder_batchnorm()
    assert before - _count(model.trainable_weights) == 2 * encoder_bn_channels
    # Frozen BN runs on its moving statistics, so a training call no longer updates them; decoder BN still does.
    encoder_stats = [v.numpy().copy() for bn in model.encoder_norms for v in bn.non_trainable_weights]
    decoder_stats = [v.numpy().copy() for bn in model.decoder_norms for v in bn.non_trainable_weights]
    image, mask = _batch()
    model(image, mask, training=True)
    for old, bn_var in zip(encoder_stats, [v for bn in model.encoder_norms for v in bn.non_trainable_weights]):
        np.testing.assert_array_equal(old, bn_var.numpy())
    changed = [not np.array_equal(old, v.numpy())
               for old, v in zip(decoder_stats, [v for bn in model.decoder_norms for v in bn.non_trainable_weights])]
    assert all(changed)


def test_dynamic_sizes_in_graph_mode_and_size_errors():
    model = _small()

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3]), tf.TensorSpec([None, None, None, 1])])
    def run(image, mask):
        return model(image, mask, training=False)["output"]

    for height, width in [(16, 32), (48, 16)]:
        image, mask = _batch(height, width)
        np.testing.assert_allclose(run(image, mask).numpy(), model(image, mask)["output"].numpy(), atol=1e-5)
    image, mask = _batch(24, 32)
    with pytest.raises(ValueError, match="multiple of 16"):
        model(image, mask)
    with pytest.raises(ValueError, match=r"`mask` must be \[B, H, W, 1\]"):
        model(image, np.repeat(mask, 3, axis=-1))
    with pytest.raises(ValueError, match="levels"):
        pconv.PConvUNet(levels=9)
    with pytest.raises(ValueError, match="unknown option"):
        zoo.create("pconv", width=3)


def test_mixed_bfloat16_forward_keeps_known_pixels():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = _small()
    assert model.encoder_convs[0].compute_dtype == "bfloat16"
    assert all(v.dtype == "float32" for v in model.weights)
    image, mask = _batch()
    out = model(image, mask, training=True)["output"]
    assert out.dtype == tf.float32 and np.all(np.isfinite(out.numpy()))
    known = mask[..., 0] == 0
    np.testing.assert_array_equal(out.numpy()[known], image[known])


# ------------------------------------------------------------------------------------------------------ recipe
@pytest.fixture(scope="module")
def random_vgg_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("vgg") / "vgg16_random.weights.h5"
    keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3)).save_weights(path)
    return str(path)


def test_recipe_without_vgg_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no cache file: building must still work
    generator, _, recipe = zoo.create("pconv", levels=4, cnum=8, image_size=64)
    assert recipe.discriminator_loss is None and recipe.d_optimizer is None
    assert recipe.loss_weights == {"valid": 1.0, "hole": 6.0, "perceptual": 0.05, "style": 120.0, "tv": 0.1}
    assert recipe.g_optimizer["learning_rate"] == 2e-4
    assert [(p.name, p.g_learning_rate) for p in recipe.phases] == [("initial", 2e-4), ("finetune", 5e-5)]
    models = ModelSet(generator, {})
    recipe.phases[0].on_start(models)  # a missing VGG file is not an error until the loss needs it
    image, mask = _batch()
    batch = {"image": image, "mask": mask}
    with pytest.raises(FileNotFoundError, match="give vgg_weights PATH"):
        recipe.generator_loss(models, batch, recipe.weights_for(recipe.phases[0]), True)
    # Without the VGG terms, a user "l1" weight sets valid to l1 and hole to 6 * l1.
    weights = recipe.weights_for(recipe.phases[0], {"l1": 2.0, "perceptual": 0.0, "gan": 0.5})
    weights["style"] = 0.0
    losses = recipe.generator_loss(models, batch, weights, False)
    np.testing.assert_allclose(
        losses["total"].numpy(),
        2.0 * losses["valid"].numpy() + 12.0 * losses["hole"].numpy() + 0.1 * losses["tv"].numpy(),
        rtol=1e-6,
    )
    recipe.phases[1].on_start(models)
    assert not any(bn.trainable for bn in generator.encoder_norms)
    assert all(bn.trainable for bn in generator.decoder_norms)


def test_recipe_loss_with_vgg_weights_in_graph_mode(random_vgg_weights):
    generator, _, recipe = zoo.create("pconv", levels=2, cnum=4, image_size=64, vgg_weights=random_vgg_weights)
    models = ModelSet(generator, {})
    image, mask = _batch(16, 16)
    mask[0, 2:9, 4:12] = 1.0
    batch = {"image": image, "mask": mask}
    weights = recipe.weights_for(recipe.phases[0])

    @tf.function  # the VGG model is first loaded while this is traced (so it is traced twice)
    def step(batch):
        return recipe.generator_loss(models, batch, weights, False)

    losses = step(batch)
    linear = generator(image, mask, training=False, return_linear=True)["linear"]
    expected = pconv_loss(linear, image, mask, load_vgg16_features(random_vgg_weights), DEFAULT_PCONV_WEIGHTS)
    for key, value in expected.items():
        np.testing.assert_allclose(losses[key].numpy(), value.numpy(), rtol=1e-4, atol=1e-7, err_msg=key)
    assert losses["perceptual"].numpy() > 0 and losses["style_out"].numpy() > 0
