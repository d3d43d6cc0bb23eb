"""Spectral normalisation with the official DeepFill v2 semantics (neuralgym `kernel_spectral_norm`).

See docs/architectures.md §2.5, §7.9; docs/decisions.md "SpectralNorm". Unlike `keras.layers.SpectralNormalization`
(and the old TFA wrapper), the raw kernel variable is never overwritten: the wrapped layer runs with
K / sigma computed on the fly, gradients flow through sigma, and `u` starts from N(0, 1), not N(0, 0.02).
"""
import keras
from keras import ops

# Keras exposes no public way to read another layer's variable without autocasting it to the compute dtype
# under mixed precision; Layer.__call__ itself uses this scope. See SpectralNorm._power_iteration.
from keras.src.backend import AutocastScope


def _l2_normalize(z, eps):
    # neuralgym's l2 normalisation: z / (||z|| + eps), not z / max(||z||, eps).
    return z / (ops.sqrt(ops.sum(ops.square(z))) + eps)


@keras.saving.register_keras_serializable(package="tfinpaint")
class SpectralNorm(keras.layers.Wrapper):
    """Wraps a Conv2D or Dense layer so that it uses `kernel / sigma(kernel)`.

    W = reshape(kernel, [-1, C_out]); `u` [1, C_out] is a persistent non-trainable weight. Each call runs
    `power_iterations` power iterations from `u`:
        v = l2n(u W^T),  u' = l2n(v W),  sigma = v W u'^T
    and applies the wrapped layer's own convolution / matmul with kernel / sigma, then its bias and
    activation. No stop_gradient on v, u' or sigma, so gradients flow through sigma (official behaviour).

    Training calls (`training=True`) then store u' in `u`. Inference calls (training False/None) run the
    same computation from the stored `u` but leave it unchanged: their output is exactly what the
    official graph computes for one forward pass from that state (it would also advance `u`).
    """

    def __init__(self, layer, power_iterations=1, eps=1e-12, **kwargs):
        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            raise ValueError(
                "SpectralNorm (tfinpaint/layers/spectral_norm.py): `layer` must be a keras.layers.Conv2D or "
                f"keras.layers.Dense, got {type(layer).__name__}"
            )
        if not isinstance(power_iterations, int) or power_iterations < 1:
            raise ValueError(f"SpectralNorm: `power_iterations` must be an int >= 1, got {power_iterations!r}")
        if not eps > 0:
            raise ValueError(f"SpectralNorm: `eps` must be > 0, got {eps!r}")
        super().__init__(layer, **kwargs)
        self.power_iterations = power_iterations
        self.eps = float(eps)

    def _check_input(self, input_shape):
        is_conv = isinstance(self.layer, keras.layers.Conv2D)
        if (is_conv and len(input_shape) != 4) or (not is_conv and len(input_shape) < 2):
            expected = "a 4-D input" if is_conv else "an input of rank >= 2"
            raise ValueError(
                f"SpectralNorm '{self.name}' (tfinpaint/layers/spectral_norm.py) around "
                f"{type(self.layer).__name__} expects {expected}, got shape {tuple(input_shape)}"
            )
        if self.built:
            kernel = self.layer.kernel
            expected_channels = kernel.shape[0] if not is_conv else self._conv_input_channels()
            channel_axis = -1 if not is_conv or self.layer.data_format == "channels_last" else 1
            if input_shape[channel_axis] is not None and input_shape[channel_axis] != expected_channels:
                raise ValueError(
                    f"SpectralNorm '{self.name}': built for {expected_channels} input channels, "
                    f"got {input_shape[channel_axis]}"
                )

    def _conv_input_channels(self):
        return self.layer.kernel.shape[-2] * self.layer.groups

    def build(self, input_shape):
        self._check_input(input_shape)
        super().build(input_shape)
        # aggregation="only_first_replica": under tf.distribute, `u` is a mirrored variable assigned in replica
        # context, and every copy receives the first replica's u', so the copies cannot drift apart. That is
        # exact: u' depends only on the (mirrored) kernel and `u`, never on the per-replica batch.
        self.u = self.add_weight(
            name="u",
            shape=(1, self.layer.kernel.shape[-1]),
            initializer=keras.initializers.TruncatedNormal(mean=0.0, stddev=1.0),
            trainable=False,
            autocast=False,
            aggregation="only_first_replica",
        )

    def _power_iteration(self):
        """Returns (kernel, sigma, u') from the stored u; sigma and u' stay differentiable w.r.t. the kernel.

        Everything runs on the float32 variables, also under mixed precision: a bfloat16 power iteration
        would store a u' with an 8-bit mantissa every training step.
        """
        with AutocastScope(None):
            kernel = self.layer.kernel.value
        w = ops.reshape(kernel, (-1, kernel.shape[-1]))
        u = ops.convert_to_tensor(self.u)
        for _ in range(self.power_iterations):
            v = _l2_normalize(ops.matmul(u, ops.transpose(w)), self.eps)
            u = _l2_normalize(ops.matmul(v, w), self.eps)
        sigma = ops.sum(ops.matmul(v, w) * u)
        return kernel, sigma, u

    def call(self, inputs, training=None):
        self._check_input(inputs.shape)
        kernel, sigma, u_next = self._power_iteration()
        if training:
            self.u.assign(ops.stop_gradient(u_next))
        kernel = ops.cast(kernel / sigma, self.compute_dtype)
        layer = self.layer
        if isinstance(layer, keras.layers.Conv2D):
            outputs = layer.convolution_op(inputs, kernel)
            bias_shape = (1, 1, 1, layer.filters) if layer.data_format == "channels_last" else (1, layer.filters, 1, 1)
        else:
            outputs = ops.matmul(inputs, kernel)
            bias_shape = (layer.units,)
        if layer.use_bias:
            outputs = outputs + ops.reshape(ops.cast(layer.bias, self.compute_dtype), bias_shape)
        if layer.activation is not None:
            outputs = layer.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(power_iterations=self.power_iterations, eps=self.eps)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # keras.layers.Wrapper.from_config pops "layer" from the caller's dict; work on a copy.
        return super().from_config(dict(config), custom_objects=custom_objects)
