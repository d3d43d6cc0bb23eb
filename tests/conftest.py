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
