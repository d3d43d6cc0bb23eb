"""Row-tiled inference (tfinpaint/layers/row_tiling.py): the banded evaluation of a chain of local layers equals
the whole-image evaluation, for a hand-built conv chain and for DeepFill v1/v2's full-resolution ends."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinpaint import models
from tfinpaint.layers.row_tiling import Downsample, Local, Upsample, map_row_tiles, nearest_source_rows
from tfinpaint.layers.static_trace import unrolled_loops


def _repeat_resize(x, size):
    return tf.image.resize(x, size, method="nearest")


def _align_corners_resize(x, size):
    return tf.raw_ops.ResizeNearestNeighbor(images=x, size=size, align_corners=True, half_pixel_centers=False)


@pytest.mark.parametrize("in_rows", [1, 5, 37])
def test_nearest_source_rows_match_the_resize_formulas(in_rows):
    out_rows = 2 * in_rows
    y = np.arange(out_rows)
    # Pixel repeat: output row y copies row y // 2. align_corners: round(y * (in - 1) / (out - 1)).
    np.testing.assert_array_equal(nearest_source_rows(_repeat_resize, in_rows, out_rows).numpy(), y // 2)
    scale = (in_rows - 1) / (out_rows - 1)
    expected = np.minimum(np.floor(y * scale + 0.5), in_rows - 1).astype(int)
    np.testing.assert_array_equal(nearest_source_rows(_align_corners_resize, in_rows, out_rows).numpy(), expected)


def _conv(filters, kernel, strides=1, dilation=1, seed=0):
    layer = keras.layers.Conv2D(filters, kernel, strides=strides, dilation_rate=dilation, padding="same",
                                activation="elu", kernel_initializer=keras.initializers.GlorotUniform(seed),
                                bias_initializer=keras.initializers.RandomUniform(-0.5, 0.5, seed=seed))
    return layer


def _chain(resize):
    """A small encoder-decoder end to end: 5x5, stride 2, dilated 3x3, stride 2, up, 3x3, up, 3x3.
    Receptive field in output rows: about 2 (head) + 2 (middle, at 1/4) * 4 + 3 (tail) = 13."""
    convs = [_conv(6, 5, seed=1), _conv(8, 3, 2, seed=2), _conv(8, 3, dilation=2, seed=3), _conv(8, 3, 2, seed=4),
             _conv(6, 3, seed=5), _conv(3, 3, seed=6)]
    steps = [Local(convs[0]), Downsample(convs[1]), Local(convs[2]), Downsample(convs[3]),
             Upsample(resize), Local(convs[4]), Upsample(resize), Local(convs[5])]

    def whole(x):
        for step in steps:
            if isinstance(step, Upsample):
                x = step.resize(x, tf.shape(x)[1:3] * 2)
            else:
                x = step.fn(x)
        return x

    return steps, whole


@pytest.mark.parametrize("resize", [_repeat_resize, _align_corners_resize], ids=["repeat", "align_corners"])
def test_tiled_chain_equals_whole_image_and_a_short_halo_does_not(resize):
    steps, whole = _chain(resize)
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 44, 20, 4)), tf.float32)  # 11 bands of 4 rows
    expected = whole(x).numpy()
    tiled = map_row_tiles(x, steps, tile_rows=4, halo_rows=16)
    assert tiled.shape == expected.shape and tiled.shape[-1] == 3
    np.testing.assert_allclose(tiled.numpy(), expected, rtol=0, atol=1e-5)
    # Graph mode with unknown height and width, the way the inference API runs.
    graph = tf.function(lambda t: map_row_tiles(t, steps, 4, 16), input_signature=[tf.TensorSpec([2, None, None, 4])])
    np.testing.assert_allclose(graph(x).numpy(), expected, rtol=0, atol=1e-5)
    # One band larger than the image is the whole image.
    np.testing.assert_allclose(map_row_tiles(x, steps, 1000, 0).numpy(), expected, rtol=0, atol=1e-5)
    # A halo shorter than the receptive field sees the bands' zero padding: the check above can fail.
    short = map_row_tiles(x, steps, tile_rows=4, halo_rows=2).numpy()
    assert np.abs(short - expected).max() > 1e-3


@pytest.mark.parametrize("resize", [_repeat_resize, _align_corners_resize], ids=["repeat", "align_corners"])
def test_unrolled_bands_of_a_fixed_size_trace_equal_the_whole_image_without_a_loop(resize):
    # Fixed-size export traces (static_trace.unrolled_loops) emit the bands as straight-line ops: no While and
    # no TensorArray in the graph, the same numbers as the whole image, uneven last band included.
    steps, whole = _chain(resize)
    x = tf.constant(np.random.default_rng(1).normal(size=(1, 44, 20, 4)), tf.float32)  # bands of 12, 12, 12, 8
    expected = whole(x).numpy()
    with unrolled_loops():
        concrete = tf.function(lambda t: map_row_tiles(t, steps, 12, 16)).get_concrete_function(
            tf.TensorSpec(x.shape, tf.float32))
    ops = {node.op for node in concrete.graph.as_graph_def().node}
    assert not any("While" in op or "TensorArray" in op for op in ops), ops
    assert concrete.outputs[0].shape == expected.shape
    np.testing.assert_allclose(concrete(x).numpy(), expected, rtol=0, atol=1e-5)


def test_map_row_tiles_rejects_unknown_steps_and_negative_halo():
    x = tf.zeros([1, 8, 8, 1])
    with pytest.raises(TypeError, match="Local, Downsample or Upsample"):
        map_row_tiles(x, [tf.identity], 4, 1)
    with pytest.raises(ValueError, match="halo_rows"):
        map_row_tiles(x, [Local(tf.identity)], 4, -1)


@pytest.mark.parametrize("name", ["deepfill_v1", "deepfill_v2"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_deepfill_row_tiled_inference_equals_untiled(name, align_corners):
    generator = models.create(name, cnum=8, dnum=8, align_corners=align_corners, tile_pixels=0).generator
    rng = np.random.default_rng(1)
    # 5 bands of 32 rows (the smallest band) at full resolution and 5 of 8 at 1/4, where the 40 rows are more than
    # a band: the layers in between (dilated convs reaching 30 rows) must see the whole 1/4-resolution map.
    height, width = 160, 40
    image = tf.constant(rng.uniform(size=(2, height, width, 3)), tf.float32)
    mask = np.zeros((2, height, width, 1), np.float32)
    mask[0, 20:110, 8:30] = 1.0
    mask[1, 50:150, 4:36] = 1.0
    mask = tf.constant(mask)
    expected = generator(image, mask, training=False)
    generator.tile_pixels = width * 32
    tiled = generator(image, mask, training=False)
    run = tf.function(lambda i, m: generator(i, m, training=False),
                      input_signature=[tf.TensorSpec([None, None, None, 3]), tf.TensorSpec([None, None, None, 1])])
    graph = run(image, mask)
    for key in ("raw", "coarse", "output"):
        np.testing.assert_allclose(tiled[key].numpy(), expected[key].numpy(), rtol=0, atol=1e-5, err_msg=key)
        np.testing.assert_allclose(graph[key].numpy(), expected[key].numpy(), rtol=0, atol=1e-5, err_msg=key)
    # A load-time option: it changes how the generator runs, never its saved config.
    assert generator.tile_pixels == width * 32 and "tile_pixels" not in generator.get_config()


@pytest.mark.parametrize("name", ["deepfill_v1", "deepfill_v2"])
def test_row_tiled_inference_under_bfloat16(name):
    from tfinpaint.inference.api import build_generator

    generator = build_generator(name, {"cnum": 8, "tile_pixels": 0}, precision="bfloat16")
    rng = np.random.default_rng(2)
    image = tf.constant(rng.uniform(size=(1, 96, 32, 3)), tf.float32)
    mask = np.zeros((1, 96, 32, 1), np.float32)
    mask[0, 30:80, 6:26] = 1.0
    expected = generator(image, mask, training=False)["raw"].numpy()
    generator.tile_pixels = 32 * 32
    tiled = generator(image, mask, training=False)["raw"]
    assert tiled.dtype == tf.float32
    np.testing.assert_allclose(tiled.numpy(), expected, rtol=0, atol=1e-2)


@pytest.mark.parametrize("name", ["deepfill_v1", "deepfill_v2"])
@pytest.mark.parametrize("bad", [-1, 2.5])
def test_deepfill_rejects_a_bad_tile_pixels(name, bad):
    with pytest.raises(ValueError, match="tile_pixels"):
        models.create(name, cnum=8, dnum=8, tile_pixels=bad)
