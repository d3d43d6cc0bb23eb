"""PConv2D against a NumPy reference written from NVIDIA's partial-convolution formula."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinpaint.layers.partial_conv import PConv2D


def reference_pconv(x, mask, kernel, bias, stride, dilation):
    """Direct window loop of the NVIDIA rule (mask 1 = valid), symmetric zero padding (k-1)//2*dilation.

    out = sum(W . X . M) * (C_mask*k*k) / sum(M) + b where sum(M) > 0, else 0; new mask = clip(sum(M), 0, 1).
    """
    batch, height, width, _ = x.shape
    kh, kw, _, filters = kernel.shape
    pad_h, pad_w = (kh - 1) // 2 * dilation, (kw - 1) // 2 * dilation
    xp = np.pad(x * mask, [(0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0)])  # mask broadcasts in 1-channel mode
    mp = np.pad(mask, [(0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0)])
    out_h = (height + 2 * pad_h - dilation * (kh - 1) - 1) // stride + 1
    out_w = (width + 2 * pad_w - dilation * (kw - 1) - 1) // stride + 1
    window_size = kh * kw * mask.shape[-1]
    out = np.zeros((batch, out_h, out_w, filters), np.float64)
    new_mask = np.zeros((batch, out_h, out_w, filters), np.float64)
    for b in range(batch):
        for i in range(out_h):
            for j in range(out_w):
                rows = i * stride + dilation * np.arange(kh)
                cols = j * stride + dilation * np.arange(kw)
                x_win = xp[b][np.ix_(rows, cols)]  # [kh, kw, Cin]
                m_sum = mp[b][np.ix_(rows, cols)].sum()
                if m_sum > 0:
                    conv = np.einsum("hwc,hwcf->f", x_win, kernel)
                    out[b, i, j] = conv * window_size / m_sum + bias
                    new_mask[b, i, j] = min(m_sum, 1.0)
    return out, new_mask


def _mask(kind, shape, rng):
    if kind == "random":
        return (rng.random(shape) > 0.4).astype(np.float32)
    if kind == "all_hole":
        return np.zeros(shape, np.float32)
    if kind == "all_known":
        return np.ones(shape, np.float32)
    if kind == "block":  # one square hole larger than the kernel, identical over channels
        mask = np.ones(shape, np.float32)
        mask[:, 1:6, 2:7, :] = 0.0
        return mask
    raise ValueError(kind)


def _layer_with_random_bias(filters, kernel_size, in_channels, **kwargs):
    layer = PConv2D(filters, kernel_size, **kwargs)
    layer.build([(None, None, None, in_channels), (None, None, None, in_channels if layer.multi_channel else 1)])
    # Non-zero bias, so zeroing it where a window has no valid input is visible.
    layer.bias.assign(np.linspace(-1.0, 2.0, filters).astype(np.float32))
    return layer


@pytest.mark.parametrize("mask_kind", ["random", "all_hole", "all_known", "block"])
@pytest.mark.parametrize(
    "kernel_size, stride, dilation", [(3, 1, 1), (5, 2, 1), (7, 2, 1), (3, 1, 2), (4, 1, 1)]
)
def test_matches_numpy_reference(mask_kind, kernel_size, stride, dilation):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 9, 8, 3)).astype(np.float32)
    mask = _mask(mask_kind, x.shape, rng)
    layer = _layer_with_random_bias(4, kernel_size, 3, strides=stride, dilation_rate=dilation)
    out, new_mask = layer([x, mask])
    ref_out, ref_mask = reference_pconv(x, mask, layer.kernel.numpy(), layer.bias.numpy(), stride, dilation)
    assert out.shape == ref_out.shape and new_mask.shape == ref_mask.shape
    np.testing.assert_allclose(out.numpy(), ref_out, atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(new_mask.numpy(), ref_mask)


def test_single_channel_mask_mode_matches_reference():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 7, 6, 5)).astype(np.float32)
    mask = (rng.random((1, 7, 6, 1)) > 0.5).astype(np.float32)
    layer = _layer_with_random_bias(3, 3, 5, multi_channel=False)
    out, new_mask = layer([x, mask])
    ref_out, ref_mask = reference_pconv(x, mask, layer.kernel.numpy(), layer.bias.numpy(), 1, 1)
    np.testing.assert_allclose(out.numpy(), ref_out, atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(new_mask.numpy(), ref_mask)


def test_hand_computed_single_valid_pixel():
    # One input channel, 3x3 kernel, a single valid pixel at the centre of a 3x3 image: at the centre output
    # the window holds 1 valid of 9 positions, so out = w_centre * x * 9 / 1 + b.
    layer = PConv2D(1, 3)
    layer.build([(None, 3, 3, 1), (None, 3, 3, 1)])
    kernel = np.arange(9, dtype=np.float32).reshape(3, 3, 1, 1) / 10.0
    layer.kernel.assign(kernel)
    layer.bias.assign([0.5])
    x = np.full((1, 3, 3, 1), 2.0, np.float32)
    mask = np.zeros((1, 3, 3, 1), np.float32)
    mask[0, 1, 1, 0] = 1.0
    out, new_mask = layer([x, mask])
    assert out.numpy()[0, 1, 1, 0] == pytest.approx(0.4 * 2.0 * 9 + 0.5, abs=1e-5)
    # Every output window of a 3x3 image with SAME-size padding covers the centre pixel.
    np.testing.assert_array_equal(new_mask.numpy(), np.ones((1, 3, 3, 1)))
    # Top-left output sees the valid pixel through the bottom-right kernel tap (index 8).
    assert out.numpy()[0, 0, 0, 0] == pytest.approx(0.8 * 2.0 * 9 + 0.5, abs=1e-5)


def test_bias_zeroed_where_no_valid_input_and_stride_two_halves_even_sizes():
    layer = _layer_with_random_bias(4, 3, 2, strides=2)
    x = np.ones((1, 8, 6, 2), np.float32)
    mask = np.ones_like(x)
    mask[:, :5] = 0.0  # rows 0-4 are hole: output rows 0 and 1 see no valid input
    out, new_mask = layer([x, mask])
    assert out.shape == (1, 4, 3, 4)
    np.testing.assert_array_equal(out.numpy()[:, :2], 0.0)
    np.testing.assert_array_equal(new_mask.numpy()[:, :2], 0.0)
    np.testing.assert_array_equal(new_mask.numpy()[:, 2:], 1.0)
    assert np.all(out.numpy()[:, 2:] != 0.0)


def test_no_gradient_through_mask_but_gradients_reach_kernel_and_bias():
    rng = np.random.default_rng(3)
    layer = _layer_with_random_bias(3, 3, 2)
    x = tf.constant(rng.normal(size=(1, 6, 5, 2)).astype(np.float32))
    mask = tf.constant((rng.random((1, 6, 5, 2)) > 0.3).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(mask)
        tape.watch(x)
        out, new_mask = layer([x, mask])
        loss = tf.reduce_sum(out**2) + tf.reduce_sum(new_mask)
    mask_grad = tape.gradient(loss, mask)
    assert mask_grad is None or not np.any(mask_grad.numpy())
    for variable in layer.trainable_variables:
        grad = tape.gradient(loss, variable)
        assert grad is not None and np.any(grad.numpy() != 0.0), variable.name
    # Hole pixels of x must not influence the output.
    x_grad = tape.gradient(loss, x).numpy()
    np.testing.assert_array_equal(x_grad[mask.numpy() == 0], 0.0)


def test_get_config_and_keras_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    layer = PConv2D(5, (3, 5), strides=1, dilation_rate=(2, 1), use_bias=False, eps=1e-6, name="pc")
    clone = PConv2D.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()

    x_in = keras.Input((None, None, 3))
    m_in = keras.Input((None, None, 3))
    model = keras.Model([x_in, m_in], list(layer([x_in, m_in])))
    x = rng.normal(size=(2, 7, 9, 3)).astype(np.float32)
    mask = (rng.random((2, 7, 9, 3)) > 0.5).astype(np.float32)
    expected = model([x, mask])
    path = tmp_path / "pconv.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    got = restored([x, mask])
    for a, b in zip(expected, got):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_dynamic_height_width_in_graph_mode():
    rng = np.random.default_rng(5)
    layer = _layer_with_random_bias(4, 3, 3, strides=2)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3])] * 2)
    def run(x, mask):
        return layer([x, mask])

    for height, width in [(6, 10), (9, 4)]:
        x = rng.normal(size=(1, height, width, 3)).astype(np.float32)
        mask = (rng.random(x.shape) > 0.5).astype(np.float32)
        out, new_mask = run(x, mask)
        ref_out, ref_mask = reference_pconv(x, mask, layer.kernel.numpy(), layer.bias.numpy(), 2, 1)
        np.testing.assert_allclose(out.numpy(), ref_out, atol=1e-5, rtol=1e-5)
        np.testing.assert_array_equal(new_mask.numpy(), ref_mask)


def test_mixed_bfloat16_policy():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    rng = np.random.default_rng(6)
    layer = _layer_with_random_bias(4, 3, 3)
    assert layer.kernel.dtype == "float32"
    x = rng.uniform(size=(1, 8, 8, 3)).astype(np.float32)
    mask = (rng.random(x.shape) > 0.5).astype(np.float32)
    out, new_mask = layer([x, mask])
    assert out.dtype == tf.bfloat16
    ref_out, ref_mask = reference_pconv(x, mask, layer.kernel.numpy(), layer.bias.numpy(), 1, 1)
    np.testing.assert_array_equal(new_mask.numpy().astype(np.float32), ref_mask)
    np.testing.assert_allclose(out.numpy().astype(np.float32), ref_out, atol=0.05 * np.abs(ref_out).max())


def test_clear_errors_on_bad_inputs():
    layer = PConv2D(4, 3)
    with pytest.raises(ValueError, match="rank-4"):
        layer([tf.zeros((8, 8, 3)), tf.zeros((8, 8, 3))])
    with pytest.raises(ValueError, match="mask must have 3 channel"):
        PConv2D(4, 3)([tf.zeros((1, 8, 8, 3)), tf.zeros((1, 8, 8, 1))])
    with pytest.raises(ValueError, match=r"\[x, mask\]"):
        PConv2D(4, 3)(tf.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match="dilation_rate"):
        PConv2D(4, 3, strides=2, dilation_rate=2)
