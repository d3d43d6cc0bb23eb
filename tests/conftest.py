"""Shared test set-up: quiet TensorFlow, two logical CPU devices for MirroredStrategy tests, fixed seeds."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Split the CPU into two logical devices before TensorFlow initialises them, so that tests can run a
# 2-replica tf.distribute.MirroredStrategy on a CPU-only machine.
_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
except RuntimeError:  # already initialised (e.g. a plugin touched the devices first)
    pass


@pytest.fixture(autouse=True)
def _seed_and_reset_policy():
    import keras

    np.random.seed(0)
    tf.random.set_seed(0)
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture
def two_cpu_strategy():
    """A 2-replica MirroredStrategy over the two logical CPUs. Reduction goes through one device rather than
    collective ops: collective instance keys of several strategies in one process can collide in TF 2.21
    ("Shape mismatch in the collective instance"), which would make these tests depend on their order."""
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())


def _numpy(value):
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


class ModelChecks:
    """Assertions shared by the model tests (the generator contract of ``tfinpaint.models.base``): outputs float32
    in [0, 1], known pixels copied bit-exactly, holes filled from "raw", hole pixels of the input never seen,
    gradients reaching every weight, bit-exact ``.keras`` round trips."""

    @staticmethod
    def assert_known_pixels_bit_exact(outputs, image, mask):
        """``output`` equals the input image, bit for bit, wherever the mask is 0 (known)."""
        known = _numpy(mask)[..., 0] == 0
        np.testing.assert_array_equal(_numpy(outputs["output"])[known], _numpy(image)[known])

    @staticmethod
    def assert_forward_outputs(outputs, image, mask, keys, image_keys=None):
        """The output dict has exactly ``keys``; each of ``image_keys`` (default: all) is a finite float32 tensor
        of the image's shape within [0, 1]; ``output`` is the image on known pixels (bit-exact), ``raw`` in the
        holes."""
        assert set(outputs) == set(keys)
        image, mask = _numpy(image), _numpy(mask)
        for key in keys if image_keys is None else image_keys:
            value = outputs[key]
            assert value.shape == image.shape and value.dtype == tf.float32, key
            array = value.numpy()
            assert np.all(np.isfinite(array)) and array.min() >= 0.0 and array.max() <= 1.0, key
        ModelChecks.assert_known_pixels_bit_exact(outputs, image, mask)
        hole = mask[..., 0] != 0
        np.testing.assert_array_equal(outputs["output"].numpy()[hole], outputs["raw"].numpy()[hole])

    @staticmethod
    def assert_hole_pixels_ignored(generator, image, mask, keys, fill=0.9):
        """Overwriting the input's hole pixels with ``fill`` changes none of ``keys`` (bit-exact)."""
        scribbled = image * (1.0 - mask) + fill * mask
        first = generator(image, mask, training=False)
        second = generator(scribbled, mask, training=False)
        for key in keys:
            np.testing.assert_array_equal(first[key].numpy(), second[key].numpy(), err_msg=key)

    @staticmethod
    def assert_gradients_reach(weights, gradients, must_be_nonzero=lambda weight: True):
        """One gradient per weight, none missing, all finite, and non-zero for every weight ``must_be_nonzero``
        selects (the default: all of them)."""
        assert len(gradients) == len(weights) > 0
        for weight, gradient in zip(weights, gradients):
            assert gradient is not None, weight.path
            value = gradient.numpy()
            assert np.all(np.isfinite(value)), weight.path
            if must_be_nonzero(weight):
                assert np.any(value != 0), weight.path

    @staticmethod
    def assert_keras_round_trip(model, path, run, check_weight_paths=True):
        """Saves ``model`` to ``path`` (.keras) and loads it back: the same weight values in the same order (and
        the same weight paths when ``check_weight_paths``), and ``run(restored)`` equals ``run(model)``
        bit-exactly (key by key for dict outputs). Returns the restored model."""
        import keras

        expected = run(model)
        model.save(path)
        restored = keras.models.load_model(path)
        if check_weight_paths:
            assert [w.path for w in restored.weights] == [w.path for w in model.weights]
        assert len(restored.weights) == len(model.weights)
        for saved, loaded in zip(model.weights, restored.weights):
            np.testing.assert_array_equal(saved.numpy(), loaded.numpy(), err_msg=saved.path)
        actual = run(restored)
        if isinstance(expected, dict):
            assert set(actual) == set(expected)
            for key in expected:
                np.testing.assert_array_equal(actual[key].numpy(), expected[key].numpy(), err_msg=key)
        else:
            np.testing.assert_array_equal(actual.numpy(), expected.numpy())
        return restored


@pytest.fixture
def checks():
    """The shared model assertions (``ModelChecks``)."""
    return ModelChecks
