"""Partial convolution (Liu et al., ECCV 2018) with NVIDIA's update rule.

Inside this layer (and only here) the mask follows NVIDIA's convention: **1 = valid**, 0 = hole.

For a window with mask sum ``S = sum(M)`` and ``window = C_in_mask * kh * kw`` (the ones-kernel sum):

    out      = W * (X . M) * window / S + b     where S > 0
    out      = 0                                where S == 0 (the bias is zeroed there too)
    new_mask = clip(S, 0, 1)                    (one value per position, repeated over ``filters`` channels)

Zero padding is symmetric, ``(k - 1) // 2 * dilation`` on each side (PyTorch origin), so the image border counts as
hole and a stride of 2 halves even sizes exactly.
"""
from __future__ import annotations

import keras
import tensorflow as tf


def _pair(value, name):
    if isinstance(value, int):
        return (value, value)
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"PConv2D: {name} must be an int or a pair of ints, got {value!r}")
    return pair


@keras.saving.register_keras_serializable(package="tfinpaint")
class PConv2D(keras.layers.Layer):
    """Partial 2-D convolution; ``call([x, mask]) -> (features, new_mask)``, mask 1 = valid.

    Args:
        filters: output channels (also the channel count of the returned mask).
        kernel_size, strides, dilation_rate: int or pair. Stride and dilation cannot both exceed 1.
        use_bias: add a bias (zeroed where the window holds no valid input).
        multi_channel: the mask has as many channels as ``x`` (NVIDIA's inpainting mode); otherwise one channel.
        kernel_initializer: He normal by default (paper).
        eps: added to the mask sum before dividing (NVIDIA uses 1e-8; the ratio is computed in float32).
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        dilation_rate=1,
        use_bias=True,
        multi_channel=True,
        kernel_initializer="he_normal",
        eps=1e-8,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(filters) < 1:
            raise ValueError(f"PConv2D: filters must be >= 1, got {filters!r}")
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.dilation_rate = _pair(dilation_rate, "dilation_rate")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError("PConv2D: strides > 1 together with dilation_rate > 1 is not supported")
        self.use_bias = bool(use_bias)
        self.multi_channel = bool(multi_channel)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.eps = float(eps)
        self._padding = [
            ((k - 1) // 2) * d for k, d in zip(self.kernel_size, self.dilation_rate)
        ]

    @staticmethod
    def _split_shapes(input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2 or not all(
            isinstance(s, (list, tuple)) or hasattr(s, "as_list") for s in input_shape
        ):
            raise ValueError(f"PConv2D expects inputs [x, mask], got shape {input_shape!r}")
        x_shape, mask_shape = (tuple(s.as_list() if hasattr(s, "as_list") else s) for s in input_shape)
        return x_shape, mask_shape

    def _check_shapes(self, x_shape, mask_shape):
        if len(x_shape) != 4 or len(mask_shape) != 4:
            raise ValueError(
                f"PConv2D expects rank-4 x and mask [B, H, W, C], got x {x_shape} and mask {mask_shape}"
            )
        in_channels = x_shape[-1]
        if in_channels is None:
            raise ValueError(f"PConv2D: the channel dimension of x must be known, got x {x_shape}")
        expected_mask_channels = in_channels if self.multi_channel else 1
        if mask_shape[-1] is not None and mask_shape[-1] != expected_mask_channels:
            mode = "multi_channel=True" if self.multi_channel else "multi_channel=False"
            raise ValueError(
                f"PConv2D ({mode}): mask must have {expected_mask_channels} channel(s), got x {x_shape} and "
                f"mask {mask_shape}"
            )
        for axis in (1, 2):
            if x_shape[axis] is not None and mask_shape[axis] is not None and x_shape[axis] != mask_shape[axis]:
                raise ValueError(f"PConv2D: x {x_shape} and mask {mask_shape} differ in height/width")

    def build(self, input_shape):
        x_shape, mask_shape = self._split_shapes(input_shape)
        self._check_shapes(x_shape, mask_shape)
        in_channels = x_shape[-1]
        self._mask_channels = in_channels if self.multi_channel else 1
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, in_channels, self.filters),
            initializer=self.kernel_initializer,
            trainable=True,
        )
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros", trainable=True)
        else:
            self.bias = None
        # Sum of the all-ones kernel (k*k*C_in in multi-channel mode): the re-normalisation numerator.
        self._window = float(self.kernel_size[0] * self.kernel_size[1] * self._mask_channels)

    def _pad_and_conv(self, inputs, kernel):
        pad_h, pad_w = self._padding
        padded = tf.pad(inputs, [[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]])
        return tf.nn.conv2d(
            padded, kernel, strides=[1, *self.strides, 1], padding="VALID", dilations=[1, *self.dilation_rate, 1]
        )

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise ValueError("PConv2D expects inputs [x, mask]")
        x, mask = inputs
        self._check_shapes(tuple(x.shape), tuple(mask.shape))
        x = tf.cast(x, self.compute_dtype)

        # Mask path: no gradient, float32 so that mask sums up to C_in*k*k stay exact under bfloat16.
        mask32 = tf.stop_gradient(tf.cast(mask, tf.float32))
        ones = tf.ones((*self.kernel_size, self._mask_channels, 1), tf.float32)
        mask_sum = self._pad_and_conv(mask32, ones)  # [B, H', W', 1]: identical for every output channel
        window_has_valid = tf.clip_by_value(mask_sum, 0.0, 1.0)
        ratio = self._window / (mask_sum + self.eps) * window_has_valid
        ratio = tf.stop_gradient(ratio)
        window_has_valid = tf.stop_gradient(window_has_valid)

        features = self._pad_and_conv(x * tf.cast(mask32, x.dtype), tf.cast(self.kernel, x.dtype))
        features = features * tf.cast(ratio, x.dtype)
        if self.use_bias:
            features = features + tf.cast(self.bias, x.dtype) * tf.cast(window_has_valid, x.dtype)
        new_mask = tf.broadcast_to(tf.cast(window_has_valid, x.dtype), tf.shape(features))
        return features, new_mask

    def compute_output_shape(self, input_shape):
        x_shape, _ = self._split_shapes(input_shape)
        spatial = []
        for size, k, s, d, p in zip(x_shape[1:3], self.kernel_size, self.strides, self.dilation_rate, self._padding):
            spatial.append(None if size is None else (size + 2 * p - d * (k - 1) - 1) // s + 1)
        out_shape = (x_shape[0], *spatial, self.filters)
        return out_shape, out_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "dilation_rate": self.dilation_rate,
                "use_bias": self.use_bias,
                "multi_channel": self.multi_channel,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "eps": self.eps,
            }
        )
        return config
