"""Gated convolutions: DeepFill v2 `gen_conv` / `gen_deconv` and HiFill's light-weight gated convolutions.

See docs/architectures.md §2.1 (DeepFill v2), §5.1 (HiFill LWGC), §7.18 (HiFill refine gate), §0.3 (resizes).
All layers are NHWC and use TF "SAME" padding by default, like the official TF1 code.
"""
import keras
import tensorflow as tf
from keras import ops

GATE_TYPES = ("full", "single_channel", "pointwise")
INTERPOLATIONS = ("nearest", "bilinear")
PADDINGS = ("same", "valid")


def _int_pair(value, argument, layer_name):
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise ValueError(f"{layer_name}: `{argument}` must be a positive int or a pair of them, got {value!r}")
    return pair


def _check_nhwc(layer, input_shape, expected_channels=None):
    """One-line ValueError for a wrong rank or a channel count that differs from the built one."""
    if len(input_shape) != 4:
        raise ValueError(
            f"{type(layer).__name__} '{layer.name}' (tfinpaint/layers/gated_conv.py) expects a 4-D NHWC input "
            f"[batch, height, width, channels], got shape {tuple(input_shape)}"
        )
    channels = input_shape[-1]
    if channels is None:
        raise ValueError(f"{type(layer).__name__} '{layer.name}': the channel dimension must be known, got None")
    if expected_channels is not None and channels != expected_channels:
        raise ValueError(
            f"{type(layer).__name__} '{layer.name}': built for {expected_channels} input channels, got {channels}"
        )


@keras.saving.register_keras_serializable(package="tfinpaint")
class GatedConv2D(keras.layers.Layer):
    """Gated convolution: `out = activation(features) * sigmoid(gates)` with `filters` output channels.

    gate_type:
      - "full" (DeepFill v2 `gen_conv`): one Conv2D with 2*filters channels; the first half are the
        features, the second half the gates (the official kernel layout, so converted weights load as-is).
      - "single_channel" (HiFill LWGC_sc, coarse net): feature Conv2D(filters, k) and a gate
        Conv2D(1, k) with the same stride and dilation; the one gate channel is broadcast.
      - "pointwise" (HiFill refine, checkpoint-exact, §7.18): feature Conv2D(filters, k) and a gate
        Conv2D(filters, 1x1) with the same stride (computed as a stride-1 1x1 conv of the subsampled input).
    activation=None means identity on the features; the output is still gated. Layers that the official
    code leaves ungated (DeepFill's output conv) should be plain Conv2D layers instead.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        dilation_rate=1,
        activation="elu",
        gate_type="full",
        padding="same",
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(filters, int) or filters < 1:
            raise ValueError(f"GatedConv2D '{self.name}': `filters` must be a positive int, got {filters!r}")
        if gate_type not in GATE_TYPES:
            raise ValueError(f"GatedConv2D '{self.name}': `gate_type` must be one of {GATE_TYPES}, got {gate_type!r}")
        if str(padding).lower() not in PADDINGS:
            raise ValueError(f"GatedConv2D '{self.name}': `padding` must be one of {PADDINGS}, got {padding!r}")
        if gate_type == "pointwise" and str(padding).lower() == "valid":
            # A 1x1 gate would keep the full size while the k x k features shrink; HiFill only uses SAME.
            raise ValueError(f"GatedConv2D '{self.name}': gate_type='pointwise' requires padding='same'")
        self.filters = filters
        self.kernel_size = _int_pair(kernel_size, "kernel_size", f"GatedConv2D '{self.name}'")
        self.strides = _int_pair(strides, "strides", f"GatedConv2D '{self.name}'")
        self.dilation_rate = _int_pair(dilation_rate, "dilation_rate", f"GatedConv2D '{self.name}'")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            # tf.nn.conv2d cannot combine them; fail here rather than deep inside the first call.
            raise ValueError(
                f"GatedConv2D '{self.name}': `strides` > 1 and `dilation_rate` > 1 cannot be combined, "
                f"got strides={self.strides}, dilation_rate={self.dilation_rate}"
            )
        self.activation = keras.activations.get(activation)
        self.gate_type = gate_type
        self.padding = str(padding).lower()
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

        def conv(channels, kernel_size, dilation_rate, name, strides=self.strides):
            # Each conv gets its own initializer instance (a seeded instance shared by two convs of the same
            # shape would give them identical weights).
            return keras.layers.Conv2D(
                channels,
                kernel_size,
                strides=strides,
                dilation_rate=dilation_rate,
                padding=self.padding,
                kernel_initializer=keras.initializers.get(keras.initializers.serialize(self.kernel_initializer)),
                dtype=self.dtype_policy,
                name=name,
            )

        if gate_type == "full":
            self.conv = conv(2 * filters, self.kernel_size, self.dilation_rate, "conv")
        else:
            self.feature_conv = conv(filters, self.kernel_size, self.dilation_rate, "feature_conv")
            if gate_type == "single_channel":
                self.gate_conv = conv(1, self.kernel_size, self.dilation_rate, "gate_conv")
            else:
                # Stride 1: a strided gate is computed on the subsampled input instead (see `call`).
                self.gate_conv = conv(filters, (1, 1), (1, 1), "gate_conv", strides=(1, 1))
        self._input_channels = None

    def _convs(self):
        return [self.conv] if self.gate_type == "full" else [self.feature_conv, self.gate_conv]

    def build(self, input_shape):
        _check_nhwc(self, input_shape)
        for layer in self._convs():
            layer.build(input_shape)
        self._input_channels = input_shape[-1]

    def call(self, inputs):
        _check_nhwc(self, inputs.shape, self._input_channels)
        if self.gate_type == "full":
            features, gates = ops.split(self.conv(inputs), 2, axis=-1)
        else:
            features = self.feature_conv(inputs)
            gate_inputs = inputs
            if self.gate_type == "pointwise" and max(self.strides) > 1:
                # A SAME 1x1 kernel with stride s reads pixels 0, s, 2s, ... (no padding), so subsampling and then
                # a stride-1 1x1 conv gives the same numbers with the same variables. It avoids strided 1x1
                # convolutions, whose TF 2.21 oneDNN backward (Conv2DBackpropFilter) corrupts the heap
                # (segfault / "free(): invalid size") on e.g. 512 x 512 x 4 -> 32, HiFill's first refine layer.
                gate_inputs = inputs[:, :: self.strides[0], :: self.strides[1], :]
            gates = self.gate_conv(gate_inputs)
        return self.activation(features) * ops.sigmoid(gates)

    def compute_output_shape(self, input_shape):
        _check_nhwc(self, input_shape)
        shape = self._convs()[0].compute_output_shape(input_shape)
        return tuple(shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            dilation_rate=self.dilation_rate,
            activation=keras.activations.serialize(self.activation),
            gate_type=self.gate_type,
            padding=self.padding,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="tfinpaint")
class GatedUpsample2D(keras.layers.Layer):
    """x2 resize followed by a stride-1 GatedConv2D (DeepFill v2 `gen_deconv`, HiFill up-sampling block).

    interpolation:
      - "nearest" (DeepFill): with align_corners=False it is the plain pixel-repeat x2 (TF2 resize, fine for
        training from scratch); align_corners=True reproduces neuralgym's
        `resize_nearest_neighbor(align_corners=True)` for parity with official DeepFill weights (§0.3.2).
      - "bilinear" (HiFill): TF1 `resize_bilinear` semantics (half_pixel_centers=False, as in
        `tf.compat.v1.image.resize_bilinear`), which TF2's `tf.image.resize` cannot express: it always
        uses half-pixel centres, which would shift every HiFill up-sampling by a quarter pixel (§0.3.3).
    The remaining arguments configure the GatedConv2D (its strides are always 1).
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        interpolation="nearest",
        align_corners=False,
        activation="elu",
        gate_type="full",
        dilation_rate=1,
        padding="same",
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"GatedUpsample2D '{self.name}': `interpolation` must be one of {INTERPOLATIONS}, got {interpolation!r}"
            )
        if not isinstance(align_corners, bool):
            raise ValueError(f"GatedUpsample2D '{self.name}': `align_corners` must be a bool, got {align_corners!r}")
        self.interpolation = interpolation
        self.align_corners = align_corners
        self._input_channels = None
        self.gated_conv = GatedConv2D(
            filters,
            kernel_size,
            strides=1,
            dilation_rate=dilation_rate,
            activation=activation,
            gate_type=gate_type,
            padding=padding,
            kernel_initializer=kernel_initializer,
            dtype=self.dtype_policy,
            name="gated_conv",
        )

    @staticmethod
    def _upsampled_shape(input_shape):
        return (input_shape[0],) + tuple(None if d is None else 2 * d for d in input_shape[1:3]) + (input_shape[3],)

    def build(self, input_shape):
        _check_nhwc(self, input_shape)
        self.gated_conv.build(self._upsampled_shape(input_shape))
        self._input_channels = input_shape[-1]

    def resize(self, inputs, size=None):
        """The layer's resize: x2 by default, or to ``size`` = [height, width] (row-tiled inference resizes the
        width of a band of rows with it, see ``tfinpaint.layers.row_tiling``)."""
        static_hw = inputs.shape[1:3]
        if size is None and None in static_hw:
            size = tf.shape(inputs)[1:3] * 2
        elif size is None:  # static sizes keep static output shapes in graph mode
            size = [2 * static_hw[0], 2 * static_hw[1]]
        # The raw ops are what tf.compat.v1.image.resize_bilinear / resize_nearest_neighbor run, with the TF1
        # flags spelled out and without their deprecation warnings.
        if self.interpolation == "bilinear":
            resized = tf.raw_ops.ResizeBilinear(
                images=inputs, size=size, align_corners=self.align_corners, half_pixel_centers=False
            )
        elif self.align_corners:
            resized = tf.raw_ops.ResizeNearestNeighbor(
                images=inputs, size=size, align_corners=True, half_pixel_centers=False
            )
        else:
            resized = tf.image.resize(inputs, size, method="nearest")
        # Bilinear resizes always return float32; keep the layer's compute dtype (mixed precision).
        return tf.cast(resized, inputs.dtype)

    def call(self, inputs):
        _check_nhwc(self, inputs.shape, self._input_channels)
        return self.gated_conv(self.resize(inputs))

    def compute_output_shape(self, input_shape):
        _check_nhwc(self, input_shape)
        return self.gated_conv.compute_output_shape(self._upsampled_shape(input_shape))

    def get_config(self):
        config = super().get_config()
        gated = self.gated_conv.get_config()
        config.update(
            filters=gated["filters"],
            kernel_size=gated["kernel_size"],
            interpolation=self.interpolation,
            align_corners=self.align_corners,
            activation=gated["activation"],
            gate_type=gated["gate_type"],
            dilation_rate=gated["dilation_rate"],
            padding=gated["padding"],
            kernel_initializer=gated["kernel_initializer"],
        )
        return config
