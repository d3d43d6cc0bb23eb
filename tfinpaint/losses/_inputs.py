"""Input conversion shared by the loss modules, with one-line errors naming the loss function and the argument."""
from __future__ import annotations

import tensorflow as tf


def as_float32(value, function, argument, floating_only=False):
    """Converts ``value`` to a float32 tensor, naming the offending argument when that is impossible.

    Integer and bool inputs are accepted (masks often come as such) unless ``floating_only`` (GAN scores).
    """
    try:
        tensor = tf.convert_to_tensor(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"tfinpaint.losses.{function}: `{argument}` is not a tensor-like value ({error})") from None
    if floating_only and not tensor.dtype.is_floating:
        raise TypeError(f"tfinpaint.losses.{function}: `{argument}` must be a float tensor, got {tensor.dtype.name}")
    if not (tensor.dtype.is_floating or tensor.dtype.is_integer or tensor.dtype == tf.bool):
        raise TypeError(f"tfinpaint.losses.{function}: `{argument}` must be numeric, got dtype {tensor.dtype.name}")
    return tf.cast(tensor, tf.float32)
