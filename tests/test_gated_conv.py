"""GatedConv2D / GatedUpsample2D against NumPy references written from the gating formulas
(docs/architectures.md §2.1, §5.1)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.numpy_reference import (
    conv2d_nhwc,
    elu,
    relu,
    sigmoid,
    upsample_bilinear_x2_tf1,
    upsample_nearest_x2,
    upsample_nearest_x2_align_corners,
)
from tfinpaint.layers.gated_conv import GatedConv2D, GatedUpsample2D

NUMPY_ACTIVATIONS = {None: lambda z: z, "elu": elu, "relu": relu}


def randomise_weights(layer, seed=0, scale=0.3):
    """Random kernels and non-zero biases, so that a wrong split or a missing bias shows in the output."""
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        weight.assign(rng.normal(0.0, scale, weight.shape).astype(np.float32))


def numpy_gated_conv(layer, x, activation, strides, dilation, padding="SAME"):
    """out = act(F) * sigmoid(G) from the layer's weights, for each gate type of docs/architectures.md §2.1, §5.1."""
    act = NUMPY_ACTIVATIONS[activation]
    if layer.gate_type == "full":
        kernel, bias = (w.numpy() for w in layer.conv.weights)
        raw = conv2d_nhwc(x, kernel, bias, strides, dilation, padding)
        features, gates = raw[..., : layer.filters], raw[..., layer.filters:]
    else:
        kernel, bias = (w.numpy() for w in layer.feature_conv.weights)
        features = conv2d_nhwc(x, kernel, bias, strides, dilation, padding)
        gate_kernel, gate_bias = (w.numpy() for w in layer.gate_conv.weights)
        if layer.gate_type == "single_channel":
            assert gate_kernel.shape[-1] == 1
            gates = conv2d_nhwc(x, gate_kernel, gate_bias, strides, dilation, padding)
        else:
            assert gate_kernel.shape[:2] == (1, 1) and gate_kernel.shape[-1] == layer.filters
            gates = conv2d_nhwc(x, gate_kernel, gate_bias, strides, 1, padding)
    return act(features) * sigmoid(gates)


# (gate_type, kernel, stride, dilation, padding); the odd input sizes make stride-2 SAME padding asymmetric.
# The pointwise gate only exists with SAME padding (test_bad_arguments_raise).
CONV_CASES = [
    (gate_type, *geometry)
    for gate_type in ("full", "single_channel", "pointwise")
    for geometry in [(3, 1, 1, "same"), (5, 2, 1, "same"), (3, 2, 1, "same"), (3, 1, 2, "same"), (3, 1, 1, "valid")]
    if not (gate_type == "pointwise" and geometry[-1] == "valid")
]


@pytest.mark.parametrize("activation", [None, "elu", "relu"])
@pytest.mark.parametrize("gate_type,kernel_size,strides,dilation,padding", CONV_CASES)
def test_gated_conv_matches_numpy(gate_type, activation, kernel_size, strides, dilation, padding):
    x = np.random.default_rng(1).normal(size=(2, 7, 6, 3)).astype(np.float32)
    layer = GatedConv2D(
        4, kernel_size, strides=strides, dilation_rate=dilation, activation=activation, gate_type=gate_type,
        padding=padding,
    )
    layer.build(x.shape)
    randomise_weights(layer)
    expected = numpy_gated_conv(layer, x, activation, strides, dilation, padding.upper())
    out = layer(x).numpy()
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "interpolation,align_corners,numpy_upsample",
    [
        ("nearest", False, upsample_nearest_x2),
        ("nearest", True, upsample_nearest_x2_align_corners),
        ("bilinear", False, upsample_bilinear_x2_tf1),
    ],
)
@pytest.mark.parametrize("gate_type", ["full", "single_channel", "pointwise"])
def test_gated_upsample_matches_numpy(interpolation, align_corners, numpy_upsample, gate_type):
    x = np.random.default_rng(2).normal(size=(2, 3, 5, 3)).astype(np.float32)
    layer = GatedUpsample2D(4, interpolation=interpolation, align_corners=align_corners, gate_type=gate_type)
    layer.build(x.shape)
    randomise_weights(layer)
    expected = numpy_gated_conv(layer.gated_conv, numpy_upsample(x), "elu", 1, 1)
    out = layer(x).numpy()
    assert out.shape == (2, 6, 10, 4)
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)


def test_tf1_bilinear_reference_differs_from_tf2_half_pixel_resize():
    """The bilinear upsample test above can tell TF1 resize_bilinear (HiFill) from TF2's half-pixel resize."""
    x = np.random.default_rng(3).normal(size=(1, 4, 4, 1)).astype(np.float32)
    half_pixel = tf.image.resize(x, (8, 8), method="bilinear").numpy()
    assert np.abs(half_pixel - upsample_bilinear_x2_tf1(x)).max() > 0.05


@pytest.mark.parametrize(
    "layer_kwargs,in_channels,expected_params",
    [
        # DeepFill v2 (docs/architectures.md §2.2): filters = channels after gating, raw = 2 * filters.
        (dict(cls=GatedConv2D, filters=24, kernel_size=5), 5, 6_048),  # conv1
        (dict(cls=GatedConv2D, filters=48, kernel_size=3, strides=2), 24, 20_832),  # conv2_downsample
        (dict(cls=GatedConv2D, filters=96, kernel_size=3, dilation_rate=16), 96, 166_080),  # conv10_atrous
        (dict(cls=GatedUpsample2D, filters=48), 96, 83_040),  # conv13_upsample
        # HiFill coarse, LWGC_sc (docs/architectures.md §5.3).
        (dict(cls=GatedConv2D, filters=32, kernel_size=5, strides=2, gate_type="single_channel"), 4, 3_333),
        (dict(cls=GatedConv2D, filters=32, kernel_size=3, gate_type="single_channel"), 32, 9_537),
        (dict(cls=GatedUpsample2D, filters=3, interpolation="bilinear", gate_type="single_channel"), 32, 1_156),
        # HiFill refine, pointwise gate (docs/architectures.md §5.4).
        (dict(cls=GatedConv2D, filters=32, kernel_size=3, strides=2, gate_type="pointwise"), 4, 1_344),
        (dict(cls=GatedConv2D, filters=128, kernel_size=3, gate_type="pointwise"), 256, 327_936),  # att3
        (dict(cls=GatedUpsample2D, filters=3, interpolation="bilinear", gate_type="pointwise"), 64, 1_926),
    ],
)
def test_parameter_counts_match_spec(layer_kwargs, in_channels, expected_params):
    kwargs = dict(layer_kwargs)
    layer = kwargs.pop("cls")(**kwargs)
    layer.build((None, None, None, in_channels))
    assert layer.count_params() == expected_params
    assert all(w.trainable for w in layer.weights)


def _layers_for_io_tests():
    return [
        GatedConv2D(4, 3, gate_type="full"),
        GatedConv2D(4, 3, strides=2, activation="relu", gate_type="single_channel"),
        GatedConv2D(4, 3, dilation_rate=2, activation=None, gate_type="pointwise"),
        GatedUpsample2D(4, interpolation="nearest", align_corners=True),
        GatedUpsample2D(4, interpolation="bilinear", gate_type="pointwise"),
    ]


@pytest.mark.parametrize("index", range(5))
def test_config_round_trip(index):
    layer = _layers_for_io_tests()[index]
    x = np.random.default_rng(4).normal(size=(1, 6, 6, 3)).astype(np.float32)
    layer.build(x.shape)
    randomise_weights(layer)
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(x).numpy(), layer(x).numpy())


@pytest.mark.parametrize("index", range(5))
def test_keras_file_round_trip(index, tmp_path):
    layer = _layers_for_io_tests()[index]
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, layer(inputs))
    randomise_weights(layer)
    x = np.random.default_rng(5).normal(size=(2, 6, 8, 3)).astype(np.float32)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.layers[-1]) is type(layer)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


@pytest.mark.parametrize("index", range(5))
def test_dynamic_height_width_in_graph_mode(index):
    layer = _layers_for_io_tests()[index]
    layer.build((None, None, None, 3))
    randomise_weights(layer)
    graph_call = tf.function(layer.__call__, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    scale = 2 if isinstance(layer, GatedUpsample2D) else 1
    for height, width in [(6, 8), (5, 7)]:
        x = np.random.default_rng(height).normal(size=(1, height, width, 3)).astype(np.float32)
        out = graph_call(tf.constant(x)).numpy()
        np.testing.assert_allclose(out, layer(x).numpy(), atol=1e-6)
        if scale == 2:
            assert out.shape[1:3] == (2 * height, 2 * width)


@pytest.mark.parametrize("index", range(5))
def test_mixed_bfloat16(index):
    x = np.random.default_rng(6).normal(size=(1, 6, 6, 3)).astype(np.float32)
    reference_layer = _layers_for_io_tests()[index]
    reference_layer.build(x.shape)
    randomise_weights(reference_layer)
    expected = reference_layer(x).numpy()

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    layer = _layers_for_io_tests()[index]
    layer.build(x.shape)
    layer.set_weights(reference_layer.get_weights())
    out = layer(x)
    assert out.dtype == tf.bfloat16
    assert all(w.dtype == "float32" for w in layer.weights)
    out = tf.cast(out, tf.float32).numpy()
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, expected, atol=0.1)


@pytest.mark.parametrize("index", range(5))
def test_gradients_reach_every_trainable_weight(index):
    layer = _layers_for_io_tests()[index]
    x = tf.constant(np.random.default_rng(7).normal(size=(2, 6, 6, 3)).astype(np.float32))
    layer.build(x.shape)
    randomise_weights(layer)
    with tf.GradientTape() as tape:
        out = layer(x)
        loss = tf.reduce_sum(out * tf.random.normal(tf.shape(out), seed=1))
    grads = tape.gradient(loss, layer.trainable_weights)
    assert len(grads) == len(layer.weights) > 0
    for weight, grad in zip(layer.trainable_weights, grads):
        assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0, weight.path


def test_strided_pointwise_gate_forward_and_backward_at_the_crashing_shape():
    # HiFill's first refine layer at training size (512 x 512 x 4 -> 32, stride 2). A strided 1x1 conv's backward
    # crashes TF 2.21's oneDNN kernel at this shape, so the layer must compute the gate without one; output and
    # gate-kernel gradient are checked against NumPy (strided SAME 1x1 conv, chain rule of act(F) * sigmoid(G)).
    x = np.random.default_rng(3).normal(size=(1, 512, 512, 4)).astype(np.float32)
    upstream = np.random.default_rng(4).normal(size=(1, 256, 256, 32)).astype(np.float32)
    layer = GatedConv2D(32, 3, strides=2, activation="elu", gate_type="pointwise")
    layer.build(x.shape)
    randomise_weights(layer)
    inputs = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        out = layer(inputs)
        loss = tf.reduce_sum(out * upstream)
    grads = tape.gradient(loss, layer.trainable_weights + [inputs])
    np.testing.assert_allclose(out.numpy(), numpy_gated_conv(layer, x, "elu", 2, 1), atol=1e-4, rtol=1e-4)

    kernel, bias = (w.numpy() for w in layer.feature_conv.weights)
    features = conv2d_nhwc(x, kernel, bias, 2, 1, "SAME")
    gate_kernel, gate_bias = (w.numpy() for w in layer.gate_conv.weights)
    gates = sigmoid(conv2d_nhwc(x, gate_kernel, gate_bias, 2, 1, "SAME"))
    gate_upstream = upstream * elu(features) * gates * (1.0 - gates)
    expected_gate_kernel_grad = np.einsum("bijc,bijo->co", x[:, ::2, ::2, :], gate_upstream)[None, None]
    gate_kernel_grad = dict(zip([w.path for w in layer.trainable_weights], grads))[layer.gate_conv.kernel.path]
    np.testing.assert_allclose(gate_kernel_grad.numpy(), expected_gate_kernel_grad, rtol=1e-3, atol=1e-2)
    for grad in grads:
        assert grad is not None and np.all(np.isfinite(grad.numpy())) and float(tf.reduce_max(tf.abs(grad))) > 0


@pytest.mark.parametrize("layer_factory", [lambda: GatedConv2D(4, 3), lambda: GatedUpsample2D(4)])
def test_wrong_rank_and_channel_mismatch_raise(layer_factory):
    with pytest.raises(ValueError, match="4-D"):
        layer_factory()(np.zeros((6, 6, 3), np.float32))
    layer = layer_factory()
    layer(np.zeros((1, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="built for 3 input channels, got 5"):
        layer(np.zeros((1, 4, 4, 5), np.float32))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="gate_type"):
        GatedConv2D(4, 3, gate_type="depthwise")
    with pytest.raises(ValueError, match="cannot be combined"):
        GatedConv2D(4, 3, strides=2, dilation_rate=2)
    with pytest.raises(ValueError, match="requires padding='same'"):
        GatedConv2D(4, 3, gate_type="pointwise", padding="valid")
    with pytest.raises(ValueError, match="filters"):
        GatedConv2D(0, 3)
    with pytest.raises(ValueError, match="interpolation"):
        GatedUpsample2D(4, interpolation="bicubic")
