"""PConv VGG16 losses: the weights-loading path and every loss term against NumPy references (mask 1 = hole)."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.numpy_reference import tv_over_dilated_hole
from tfinpaint.losses import perceptual
from tfinpaint.losses.perceptual import VGGPreprocess, gram_matrix, load_vgg16_features, pconv_loss

CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68], np.float32)


# ----------------------------------------------------------------------------------------------- VGG16 loading
@pytest.fixture(scope="module")
def random_vgg_files(tmp_path_factory):
    """A randomly initialised VGG16 (include_top=False) saved in both Keras weight formats, plus its pool1-3."""
    folder = tmp_path_factory.mktemp("vgg")
    backbone = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    weights_h5 = folder / "vgg16.weights.h5"
    legacy_h5 = folder / "vgg16_legacy.h5"
    backbone.save_weights(weights_h5)
    backbone.save(legacy_h5)  # the format of Keras' own cache file
    pools = keras.Model(backbone.input, [backbone.get_layer(f"block{i}_pool").output for i in (1, 2, 3)])
    images = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
    caffe_input = images[..., ::-1] * 255.0 - CAFFE_BGR_MEAN  # keras.applications.vgg16.preprocess_input
    expected = [p.numpy() for p in pools(caffe_input)]
    return {"weights_h5": weights_h5, "legacy_h5": legacy_h5, "images": images, "expected": expected}


@pytest.mark.parametrize("file_key", ["weights_h5", "legacy_h5"])
def test_load_vgg16_features_from_path(random_vgg_files, file_key):
    vgg = load_vgg16_features(str(random_vgg_files[file_key]))
    assert not vgg.trainable_weights
    features = vgg(random_vgg_files["images"])
    assert [f.shape for f in features] == [(2, 16, 16, 64), (2, 8, 8, 128), (2, 4, 4, 256)]
    for got, want in zip(features, random_vgg_files["expected"]):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-4)


def test_load_vgg16_features_from_keras_cache(random_vgg_files, tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    os.symlink(random_vgg_files["legacy_h5"], tmp_path / "models" / perceptual.VGG_CACHE_FILENAME)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    features = load_vgg16_features()(random_vgg_files["images"])
    np.testing.assert_allclose(features[2].numpy(), random_vgg_files["expected"][2], rtol=1e-5, atol=1e-4)


def test_missing_weights_give_one_line_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as error:
        load_vgg16_features()
    message = str(error.value)
    assert "\n" not in message and "give vgg_weights PATH" in message
    assert str(tmp_path / "models" / perceptual.VGG_CACHE_FILENAME) in message
    with pytest.raises(FileNotFoundError, match="not found: .*nowhere.weights.h5"):
        load_vgg16_features(str(tmp_path / "nowhere.weights.h5"))


def test_unreadable_weights_file_names_the_file(tmp_path):
    broken = tmp_path / "broken.weights.h5"
    broken.write_bytes(b"not an hdf5 file")
    with pytest.raises(ValueError, match="broken.weights.h5") as error:
        load_vgg16_features(str(broken))
    assert "\n" not in str(error.value)


def test_vgg_preprocessing_modes():
    images = np.random.default_rng(1).uniform(size=(1, 2, 3, 3)).astype(np.float32)
    caffe = VGGPreprocess("caffe")(images).numpy()
    np.testing.assert_allclose(caffe, images[..., ::-1] * 255.0 - CAFFE_BGR_MEAN, rtol=1e-6, atol=1e-4)
    torch = VGGPreprocess("torch")(images).numpy()
    expected = (images - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(torch, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="caffe"):
        VGGPreprocess("bgr")


# ------------------------------------------------------------------------------------------- NumPy references
def np_gram(features):
    _, height, width, channels = features.shape
    flat = features.reshape(features.shape[0], height * width, channels).astype(np.float64)
    return np.einsum("bnc,bnd->bcd", flat, flat) / (channels * height * width)


def np_pconv_loss(output, target, hole, feature_fn, weights):
    """Paper eqs. 1-7 with M = 1 - hole (1 = valid)."""
    valid_mask = 1.0 - hole
    count = output.size
    losses = {
        "valid": np.abs(valid_mask * (output - target)).sum() / count,
        "hole": np.abs(hole * (output - target)).sum() / count,
    }
    composite = valid_mask * target + hole * output
    feats = [feature_fn(image) for image in (output, composite, target)]
    losses["perceptual"] = sum(
        np.abs(fo - fg).mean() + np.abs(fc - fg).mean() for fo, fc, fg in zip(*feats)
    )
    losses["style_out"] = sum(np.abs(np_gram(fo) - np_gram(fg)).mean() for fo, fg in zip(feats[0], feats[2]))
    losses["style_comp"] = sum(np.abs(np_gram(fc) - np_gram(fg)).mean() for fc, fg in zip(feats[1], feats[2]))
    losses["tv"] = tv_over_dilated_hole(composite, hole)
    losses["total"] = (
        weights["valid"] * losses["valid"]
        + weights["hole"] * losses["hole"]
        + weights["perceptual"] * losses["perceptual"]
        + weights["style"] * (losses["style_out"] + losses["style_comp"])
        + weights["tv"] * losses["tv"]
    )
    return losses


FIXED_PROJECTION = np.random.default_rng(7).normal(size=(3, 5)).astype(np.float32)


def tiny_feature_model():
    """A stand-in for VGG with a trivial NumPy twin: three 'levels' of known features."""
    images = keras.Input((None, None, 3))
    level1 = keras.layers.Rescaling(2.0, offset=-1.0)(images)
    level2 = keras.layers.AveragePooling2D(2)(images)
    level3 = keras.layers.Dense(5, use_bias=False, trainable=False)
    out3 = level3(keras.layers.MaxPooling2D(2)(images))
    level3.set_weights([FIXED_PROJECTION])
    return keras.Model(images, [level1, level2, out3])


def tiny_feature_numpy(image):
    batch, height, width, channels = image.shape
    blocks = image.reshape(batch, height // 2, 2, width // 2, 2, channels)
    return [image * 2.0 - 1.0, blocks.mean(axis=(2, 4)), blocks.max(axis=(2, 4)) @ FIXED_PROJECTION]


def _hole_masks(batch, height, width):
    block = np.zeros((batch, height, width, 1), np.float32)
    block[0, 3:9, 2:7] = 1.0
    block[1, 0:4, 10:16] = 1.0  # touches the image border
    return {
        "block": block,
        "all_hole": np.ones_like(block),
        "all_known": np.zeros_like(block),
    }


@pytest.mark.parametrize("mask_kind", ["block", "all_hole", "all_known"])
def test_pconv_loss_matches_numpy_reference(mask_kind):
    rng = np.random.default_rng(2)
    output = rng.normal(0.5, 0.4, size=(2, 12, 16, 3)).astype(np.float32)  # unclipped, like the raw prediction
    target = rng.uniform(size=output.shape).astype(np.float32)
    hole = _hole_masks(2, 12, 16)[mask_kind]
    weights = dict(perceptual.DEFAULT_PCONV_WEIGHTS)
    got = pconv_loss(output, target, hole, tiny_feature_model(), None)
    want = np_pconv_loss(output, target, hole, tiny_feature_numpy, weights)
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_allclose(got[key].numpy(), want[key], rtol=2e-5, atol=1e-6, err_msg=key)
    if mask_kind == "all_known":
        for key in ("hole", "style_comp", "tv"):
            assert got[key].numpy() == 0.0
    if mask_kind == "all_hole":
        assert got["valid"].numpy() == 0.0
        np.testing.assert_allclose(got["style_out"].numpy(), got["style_comp"].numpy(), rtol=1e-6)


def test_pconv_loss_with_random_vgg_matches_per_image_reference(random_vgg_files):
    vgg = load_vgg16_features(str(random_vgg_files["weights_h5"]))
    rng = np.random.default_rng(3)
    target = random_vgg_files["images"]
    output = rng.uniform(size=target.shape).astype(np.float32)
    hole = np.zeros((2, 32, 32, 1), np.float32)
    hole[:, 8:20, 5:25] = 1.0

    def vgg_numpy(image):  # separate VGG passes, so the stacked single pass inside the loss is checked
        return [f.numpy().astype(np.float64) for f in vgg(image)]

    weights = {"perceptual": 0.5, "style": 7.0, "tv": 0.0}
    got = pconv_loss(output, target, hole, vgg, weights)
    want = np_pconv_loss(output, target, hole, vgg_numpy, {**perceptual.DEFAULT_PCONV_WEIGHTS, **weights})
    assert got["tv"].numpy() == 0.0  # weight 0: not computed
    for key in ("valid", "hole", "perceptual", "style_out", "style_comp"):
        np.testing.assert_allclose(got[key].numpy(), want[key], rtol=1e-4, err_msg=key)
    np.testing.assert_allclose(got["total"].numpy(), want["total"], rtol=1e-4)


def test_gram_matrix_matches_numpy():
    features = np.random.default_rng(4).normal(size=(2, 3, 5, 4)).astype(np.float32)
    np.testing.assert_allclose(gram_matrix(features).numpy(), np_gram(features), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="rank 4"):
        gram_matrix(features[0])


def test_zero_feature_weights_need_no_vgg_and_bad_arguments_fail_clearly():
    rng = np.random.default_rng(5)
    output = rng.uniform(size=(1, 8, 8, 3)).astype(np.float32)
    target = rng.uniform(size=(1, 8, 8, 3)).astype(np.float32)
    hole = _hole_masks(2, 8, 16)["block"][:1, :, :8]
    losses = pconv_loss(output, target, hole, None, {"perceptual": 0.0, "style": 0.0})
    want = np_pconv_loss(output, target, hole, lambda image: [], perceptual.DEFAULT_PCONV_WEIGHTS)
    np.testing.assert_allclose(losses["total"].numpy(), want["valid"] + 6 * want["hole"] + 0.1 * want["tv"], rtol=1e-5)
    with pytest.raises(ValueError, match="VGG16 feature model is required"):
        pconv_loss(output, target, hole, None, None)
    with pytest.raises(ValueError, match="unknown weight key"):
        pconv_loss(output, target, hole, None, {"l1": 1.0})
    with pytest.raises(ValueError, match="`mask` must be"):
        pconv_loss(output, target, np.ones((1, 8, 8), np.float32), None, {"perceptual": 0.0, "style": 0.0})


def test_gradients_flow_to_the_output_in_graph_mode_with_dynamic_shapes():
    features = tiny_feature_model()

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3])] * 2 + [tf.TensorSpec([None, None, None, 1])])
    def loss_and_grad(output, target, hole):
        with tf.GradientTape() as tape:
            tape.watch(output)
            total = pconv_loss(output, target, hole, features)["total"]
        return total, tape.gradient(total, output)

    rng = np.random.default_rng(6)
    output = rng.uniform(size=(2, 12, 16, 3)).astype(np.float32)
    target = rng.uniform(size=output.shape).astype(np.float32)
    total, grad = loss_and_grad(output, target, _hole_masks(2, 12, 16)["block"])
    assert np.isfinite(total.numpy()) and np.all(np.isfinite(grad.numpy())) and np.any(grad.numpy() != 0)


def test_bfloat16_inputs_give_float32_losses():
    rng = np.random.default_rng(8)
    output = tf.cast(rng.uniform(size=(1, 8, 8, 3)), tf.bfloat16)
    target = rng.uniform(size=(1, 8, 8, 3)).astype(np.float32)
    hole = _hole_masks(2, 8, 16)["block"][:1, :, :8]
    losses = pconv_loss(output, target, hole, tiny_feature_model())
    assert all(value.dtype == tf.float32 for value in losses.values())
    want = np_pconv_loss(output.numpy().astype(np.float32), target, hole, tiny_feature_numpy,
                         perceptual.DEFAULT_PCONV_WEIGHTS)
    np.testing.assert_allclose(losses["total"].numpy(), want["total"], rtol=1e-4)
