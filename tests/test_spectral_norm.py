"""SpectralNorm with official DeepFill semantics (docs/architectures.md §2.5) against a NumPy power iteration and
np.linalg.svd."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.numpy_reference import conv2d_nhwc
from tfinpaint.layers.spectral_norm import SpectralNorm


def l2n(z):
    return z / (np.linalg.norm(z) + 1e-12)


def numpy_power_iteration(kernel, u):
    """One official iteration: v = l2n(u W^T), u' = l2n(v W), sigma = v W u'^T, W = reshape(K, [-1, Cout])."""
    w = np.asarray(kernel, np.float64).reshape(-1, kernel.shape[-1])
    v = l2n(np.asarray(u, np.float64) @ w.T)
    u_next = l2n(v @ w)
    return (v @ w @ u_next.T).item(), u_next


def leaky_relu(z):
    return np.where(z > 0, z, 0.2 * z)


def make_conv_sn(input_shape=(2, 7, 6, 3), seed=0, **conv_kwargs):
    """SN-PatchGAN-like conv (stride 2, SAME, LeakyReLU 0.2) with NumPy-chosen kernel, bias and u."""
    conv_kwargs = {"strides": 2, "padding": "same", "activation": "leaky_relu", **conv_kwargs}
    layer = SpectralNorm(keras.layers.Conv2D(5, 3, **conv_kwargs))
    layer.build(input_shape)
    rng = np.random.default_rng(seed)
    layer.layer.kernel.assign(rng.normal(0, 0.3, layer.layer.kernel.shape).astype(np.float32))
    layer.layer.bias.assign(rng.normal(0, 0.3, layer.layer.bias.shape).astype(np.float32))
    layer.u.assign(rng.normal(0, 1.0, layer.u.shape).astype(np.float32))
    return layer


def numpy_conv_sn(layer, x, sigma):
    out = conv2d_nhwc(x, layer.layer.kernel.numpy() / sigma, layer.layer.bias.numpy(), 2, 1, "SAME")
    return leaky_relu(out)


def random_input(shape=(2, 7, 6, 3), seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_u_is_a_non_trainable_weight_with_unit_normal_init():
    layer = SpectralNorm(keras.layers.Conv2D(64, 5))
    layer.build((None, None, None, 4))
    assert layer.u.shape == (1, 64) and not layer.u.trainable
    assert [w.path for w in layer.trainable_weights] == [layer.layer.kernel.path, layer.layer.bias.path]
    # N(0, 1) (truncated at 2 std), not the N(0, 0.02) of the Keras / TFA wrapper.
    assert 0.5 < np.std(layer.u.numpy()) < 1.5
    assert layer.count_params() == 6_464 + 64  # SN-PatchGAN conv1 (docs/architectures.md §2.3) plus its 64 `u` entries


def test_training_call_matches_numpy_and_updates_u():
    x = random_input()
    layer = make_conv_sn()
    u0 = layer.u.numpy()
    sigma, u1 = numpy_power_iteration(layer.layer.kernel.numpy(), u0)
    out = layer(x, training=True).numpy()
    np.testing.assert_allclose(out, numpy_conv_sn(layer, x, sigma), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(layer.u.numpy(), u1, atol=1e-6)


def test_dense_training_call_matches_numpy():
    x = random_input((3, 6))
    layer = SpectralNorm(keras.layers.Dense(4, activation="tanh"))
    layer.build(x.shape)
    rng = np.random.default_rng(2)
    for weight in (layer.layer.kernel, layer.layer.bias, layer.u):
        weight.assign(rng.normal(0, 1.0, weight.shape).astype(np.float32))
    kernel, bias = layer.layer.kernel.numpy(), layer.layer.bias.numpy()
    sigma, u1 = numpy_power_iteration(kernel, layer.u.numpy())
    out = layer(x, training=True).numpy()
    np.testing.assert_allclose(out, np.tanh(x @ (kernel / sigma) + bias), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(layer.u.numpy(), u1, atol=1e-6)


def test_inference_calls_leave_u_unchanged():
    x = random_input()
    layer = make_conv_sn()
    u0 = layer.u.numpy()
    sigma, _ = numpy_power_iteration(layer.layer.kernel.numpy(), u0)
    for training in (None, False):
        out = layer(x, training=training).numpy()
        np.testing.assert_array_equal(layer.u.numpy(), u0)
        np.testing.assert_allclose(out, numpy_conv_sn(layer, x, sigma), atol=1e-5, rtol=1e-5)


def test_sigma_converges_to_largest_singular_value_and_kernel_is_never_overwritten():
    x = random_input()
    layer = make_conv_sn()
    kernel = layer.layer.kernel.numpy()
    largest = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0]
    first_sigma, _ = numpy_power_iteration(kernel, layer.u.numpy())
    assert abs(first_sigma - largest) / largest > 1e-2  # one iteration from random u is not there yet

    train_call = tf.function(lambda inputs: layer(inputs, training=True))
    for _ in range(50):
        train_call(tf.constant(x))
    np.testing.assert_array_equal(layer.layer.kernel.numpy(), kernel)
    sigma, _ = numpy_power_iteration(kernel, layer.u.numpy())
    np.testing.assert_allclose(sigma, largest, rtol=1e-3)
    # The layer's own output uses that sigma: compare with the SVD-normalised kernel.
    np.testing.assert_allclose(layer(x).numpy(), numpy_conv_sn(layer, x, largest), rtol=1e-3, atol=1e-4)


def test_gradient_flows_through_sigma():
    """d/dK of sum(r * SN(x)) against central differences of the NumPy forward (float64), with and without
    sigma's own dependence on K: the layer must match the former and clearly differ from the latter."""
    x = random_input()
    layer = make_conv_sn(activation=None)
    kernel, bias, u0 = layer.layer.kernel.numpy(), layer.layer.bias.numpy(), layer.u.numpy()
    weights = np.random.default_rng(3).normal(size=layer(x).shape)

    def objective(k, sigma=None):
        sigma = numpy_power_iteration(k, u0)[0] if sigma is None else sigma
        return float(np.sum(weights * conv2d_nhwc(x, k / sigma, bias, 2, 1, "SAME")))

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.constant(weights, tf.float32) * layer(x, training=False))
    grad = tape.gradient(loss, layer.layer.kernel).numpy()

    sigma0 = numpy_power_iteration(kernel, u0)[0]
    step = 1e-5
    indices = [(0, 0, 0, 0), (1, 2, 1, 3), (2, 1, 2, 4), (1, 1, 0, 1), (2, 2, 2, 2), (0, 2, 1, 0)]
    full, fixed_sigma, analytic = [], [], []
    for index in indices:
        delta = np.zeros_like(kernel, dtype=np.float64)
        delta[index] = step
        k = kernel.astype(np.float64)
        full.append((objective(k + delta) - objective(k - delta)) / (2 * step))
        fixed_sigma.append((objective(k + delta, sigma0) - objective(k - delta, sigma0)) / (2 * step))
        analytic.append(grad[index])
    scale = np.abs(full).max()
    np.testing.assert_allclose(analytic, full, atol=1e-4 * scale)
    assert np.abs(np.array(analytic) - np.array(fixed_sigma)).max() > 1e-2 * scale


def test_gradients_reach_every_trainable_weight():
    layer = make_conv_sn()
    x = tf.constant(random_input())
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(layer(x, training=True)))
    grads = tape.gradient(loss, layer.trainable_weights)
    assert len(grads) == 2
    for weight, grad in zip(layer.trainable_weights, grads):
        assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0, weight.path


def test_u_survives_checkpoint_round_trip(tmp_path):
    x = random_input()
    layer = make_conv_sn()
    for _ in range(3):
        layer(x, training=True)
    path = tf.train.Checkpoint(layer=layer).write(str(tmp_path / "ckpt"))

    restored = make_conv_sn(seed=7)
    assert not np.allclose(restored.u.numpy(), layer.u.numpy())
    tf.train.Checkpoint(layer=restored).read(path).assert_existing_objects_matched()
    np.testing.assert_array_equal(restored.u.numpy(), layer.u.numpy())
    np.testing.assert_array_equal(restored(x).numpy(), layer(x).numpy())


def test_mirrored_strategy_training_step_updates_u(two_cpu_strategy):
    strategy = two_cpu_strategy
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        layer = make_conv_sn()
        optimizer = keras.optimizers.SGD(learning_rate=0.1)
        optimizer.build(layer.trainable_variables)
    kernel0, u0 = layer.layer.kernel.numpy(), layer.u.numpy()
    _, expected_u = numpy_power_iteration(kernel0, u0)

    dataset = tf.data.Dataset.from_tensor_slices(random_input((4, 7, 6, 3))).batch(4)
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))

    @tf.function
    def train_step(images):
        def replica_step(replica_images):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(layer(replica_images, training=True)))
            grads = tape.gradient(loss, layer.trainable_variables)
            optimizer.apply_gradients(zip(grads, layer.trainable_variables))
            return loss

        return strategy.reduce("MEAN", strategy.run(replica_step, args=(images,)), axis=None)

    loss = float(train_step(batch))
    assert np.isfinite(loss)
    assert not np.allclose(layer.layer.kernel.numpy(), kernel0)  # the optimizer step ran
    replica_u = [value.numpy() for value in strategy.experimental_local_results(layer.u.value)]
    assert len(replica_u) == 2
    for value in replica_u:
        np.testing.assert_allclose(value, expected_u, atol=1e-6)


def test_config_round_trip():
    layer = make_conv_sn()
    config = layer.get_config()
    clone = SpectralNorm.from_config(config)
    assert isinstance(clone.layer, keras.layers.Conv2D)
    assert clone.get_config() == config
    x = random_input()
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(x).numpy(), layer(x).numpy())


def test_keras_file_round_trip(tmp_path):
    inputs = keras.Input((None, None, 3))
    features = SpectralNorm(keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="leaky_relu"))(inputs)
    scores = SpectralNorm(keras.layers.Dense(2))(features)
    model = keras.Model(inputs, scores)
    x = random_input((2, 8, 6, 3))
    for _ in range(2):
        model(x, training=True)  # move u away from its initial value
    path = str(tmp_path / "sn.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    for original, copy in zip(model.layers[1:], loaded.layers[1:]):
        assert isinstance(copy, SpectralNorm)
        np.testing.assert_array_equal(copy.u.numpy(), original.u.numpy())
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


def test_dynamic_height_width_in_graph_mode():
    layer = make_conv_sn()
    graph_call = tf.function(
        lambda inputs: layer(inputs, training=True),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
    )
    for height, width in [(7, 6), (4, 9)]:
        x = random_input((1, height, width, 3), seed=height)
        u0 = layer.u.numpy()
        sigma, u1 = numpy_power_iteration(layer.layer.kernel.numpy(), u0)
        out = graph_call(tf.constant(x)).numpy()
        np.testing.assert_allclose(out, numpy_conv_sn(layer, x, sigma), atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(layer.u.numpy(), u1, atol=1e-6)


def test_mixed_bfloat16_keeps_power_iteration_in_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    x = random_input()
    layer = make_conv_sn()
    assert layer.compute_dtype == "bfloat16"
    u0 = layer.u.numpy()
    sigma, u1 = numpy_power_iteration(layer.layer.kernel.numpy(), u0)
    out = layer(x, training=True)
    assert out.dtype == tf.bfloat16
    out = tf.cast(out, tf.float32).numpy()
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, numpy_conv_sn(layer, x, sigma), atol=0.05)
    assert layer.u.dtype == "float32" and layer.layer.kernel.dtype == "float32"
    # A bfloat16 power iteration would round u' to 8 mantissa bits (~4e-3 relative).
    np.testing.assert_allclose(layer.u.numpy(), u1, atol=1e-6)


def test_wrong_input_and_wrong_layer_raise():
    with pytest.raises(ValueError, match="4-D input"):
        SpectralNorm(keras.layers.Conv2D(4, 3))(np.zeros((6, 6, 3), np.float32))
    with pytest.raises(ValueError, match="rank >= 2"):
        SpectralNorm(keras.layers.Dense(4))(np.zeros((6,), np.float32))
    layer = make_conv_sn()
    with pytest.raises(ValueError, match="built for 3 input channels, got 4"):
        layer(np.zeros((1, 6, 6, 4), np.float32))
    with pytest.raises(ValueError, match="Conv2D or keras.layers.Dense"):
        SpectralNorm(keras.layers.Conv2DTranspose(4, 3))
    with pytest.raises(ValueError, match="power_iterations"):
        SpectralNorm(keras.layers.Conv2D(4, 3), power_iterations=0)
