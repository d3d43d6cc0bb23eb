"""Partial Convolutions: "Image Inpainting for Irregular Holes Using Partial Convolutions" (Liu et al., ECCV 2018).

Spec: ``docs/architectures.md`` §3, decisions in ``decisions.md``.

* ``PConvUNet``: the paper's U-Net of partial convolutions (512 input, 8 stride-2 levels down, 8 up).
  32,865,236 trainable parameters at ``levels=8, cnum=64`` (biases on every layer) plus 10,880 non-trainable
  batch-norm statistics. Input sides must be multiples of ``2 ** levels``.
* Output ranges: ``"raw"`` is the network's linear output clipped to [0, 1], ``"output"`` composites it with the
  known pixels. The unclipped prediction (what the paper's losses see, so that out-of-range pixels still get
  gradients) is returned under ``"linear"`` only when the call passes ``return_linear=True``.
* ``PConvConfig``: the options (presets "paper" and "tiny"); ``build_generator``: the registry's builder. No
  discriminator; the VGG16 losses of the recipe (``tfinpaint.training.recipes.pconv``) need a local VGG16
  weights file (option ``vgg_weights``), read only when a loss is first needed, so building the model for
  inference never needs it.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import keras
import tensorflow as tf

from tfinpaint.layers.partial_conv import PConv2D
from tfinpaint.models.base import InpaintingGenerator, ModelConfig, check_positive_int

__all__ = ["PConvConfig", "PConvUNet", "build_generator", "build_discriminators", "MAX_LEVELS"]

MAX_LEVELS = 8
# Paper table (docs/architectures.md §3.2): kernel size and width multiple of each encoder level, shallowest first.
_ENCODER_KERNELS = (7, 5, 5, 3, 3, 3, 3, 3)
_ENCODER_WIDTHS = (1, 2, 4, 8, 8, 8, 8, 8)
# PyTorch BatchNorm2d defaults (all PConv implementations are PyTorch): running-average weight 0.1, eps 1e-5.
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5
_DECODER_LEAK = 0.2


@dataclasses.dataclass(frozen=True)
class PConvConfig(ModelConfig):
    """Partial Convolutions options.

    levels: U-Net depth (8 in the paper at 512 px; 7 is the common 256-px variant); cnum: base width (64).
    image_size: training crop side (a multiple of ``2 ** levels``).
    vgg_weights / vgg_preprocessing (training only, read by the recipe's VGG16 losses): a local Keras VGG16
        include_top=False weights file (default: the Keras cache file), read only when the loss first needs it;
        "caffe" for Keras' VGG16 weights, "torch" for weights converted from torchvision.
    """

    MODEL: ClassVar[str] = "pconv"
    PRESETS: ClassVar[dict] = {"paper": {}, "tiny": {"levels": 3, "cnum": 4, "image_size": 32}}

    levels: int = MAX_LEVELS
    cnum: int = 64
    image_size: int = 512
    vgg_weights: str | None = None
    vgg_preprocessing: str = "caffe"

    def __post_init__(self):
        if isinstance(self.levels, bool) or int(self.levels) != self.levels or not 1 <= self.levels <= MAX_LEVELS:
            raise ValueError(f"pconv: `levels` must be an integer in 1..{MAX_LEVELS}, got {self.levels!r}")
        self._set("levels", int(self.levels))
        self._set("cnum", check_positive_int("pconv", "cnum", self.cnum))
        self._set("image_size", check_positive_int("pconv", "image_size", self.image_size,
                                                   multiple=self.size_factor, minimum=self.size_factor))
        if self.vgg_preprocessing not in ("caffe", "torch"):
            raise ValueError(f"pconv: `vgg_preprocessing` must be 'caffe' or 'torch', got {self.vgg_preprocessing!r}")

    @property
    def size_factor(self) -> int:
        """Sides must be multiples of 2 ** levels (256 for the paper's 8 stride-2 levels)."""
        return 2 ** self.levels


def _upsample_x2(x):
    """Nearest-neighbour x2 (each pixel repeated into a 2x2 block), for features and masks alike.

    One broadcast + reshape: cheaper to trace and run than two ``tf.repeat`` calls."""
    shape = tf.shape(x)
    channels = x.shape[-1] if x.shape[-1] is not None else shape[3]
    blocks = tf.broadcast_to(x[:, :, None, :, None, :], [shape[0], shape[1], 2, shape[2], 2, channels])
    return tf.reshape(blocks, [shape[0], 2 * shape[1], 2 * shape[2], channels])


@keras.saving.register_keras_serializable(package="tfinpaint")
class PConvUNet(InpaintingGenerator):
    """PConv U-Net (docs/architectures.md §3.2).

    Encoder level i: PConv (stride 2) -> BN (not on level 1) -> ReLU. Decoder: nearest x2 upsampling of the
    features and of the mask, channel concat ``[upsampled, skip]`` for both (the [NAO] order), PConv (stride 1)
    -> BN -> LeakyReLU(0.2); the last layer concatenates the input image and its mask and has neither BN nor
    activation. Symmetric zero padding everywhere (PConv2D).

    ``call(image, mask, training=None, return_linear=False)``: image [B, H, W, 3] RGB in [0, 1], mask
    [B, H, W, 1] with 1 = hole; H and W multiples of ``2 ** levels``. Internally the mask becomes NVIDIA's
    1 = valid, repeated over the 3 image channels. Returns float32 ``{"output", "raw"}`` (+ ``"linear"``).

    config: a ``PConvConfig`` (or its options as keywords, e.g. ``levels=7``).
    """

    CONFIG = PConvConfig

    @property
    def working_size(self) -> int:
        """The training crop itself: PConv's training masks cover up to about 60 % of the crop, so crops at this
        size already show it holes at the scale it learnt (and its full-resolution skips stay small)."""
        return self.training_size

    def __init__(self, config=None, **kwargs):
        # The wrapper runs in float32 so Keras does not cast the image down under a mixed policy (known pixels
        # must come back bit-exact); the layers inside follow the global policy.
        kwargs.setdefault("dtype", "float32")
        super().__init__(config, **kwargs)
        self.levels = self.config.levels
        self.cnum = self.config.cnum
        self.encoder_widths = [self.cnum * multiple for multiple in _ENCODER_WIDTHS[: self.levels]]

        self.encoder_convs = [
            PConv2D(width, kernel, strides=2, name=f"pconv{index + 1}")
            for index, (width, kernel) in enumerate(zip(self.encoder_widths, _ENCODER_KERNELS))
        ]
        self.encoder_norms = [
            keras.layers.BatchNormalization(momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=f"pconv{index + 1}_bn")
            for index in range(1, self.levels)
        ]
        # Decoder layer d joins the upsampled features with encoder level levels-1-d (the image for the last one)
        # and outputs that level's width (3 channels for the last one).
        self.decoder_widths = list(reversed(self.encoder_widths[:-1])) + [3]
        self.decoder_convs = [
            PConv2D(width, 3, strides=1, name=f"pconv{self.levels + index + 1}")
            for index, width in enumerate(self.decoder_widths)
        ]
        self.decoder_norms = [
            keras.layers.BatchNormalization(
                momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=f"pconv{self.levels + index + 1}_bn"
            )
            for index in range(self.levels - 1)
        ]

    def build(self, image_shape):
        # Every layer needs only channel counts, so the whole model builds without a forward pass (Keras passes
        # only the image shape: it never treats an argument named `mask` as an input shape).
        def channels_only(channels):
            return (None, None, None, channels)

        in_channels = 3
        for index, conv in enumerate(self.encoder_convs):
            conv.build([channels_only(in_channels)] * 2)
            if index > 0:
                self.encoder_norms[index - 1].build(channels_only(self.encoder_widths[index]))
            in_channels = self.encoder_widths[index]
        skip_widths = list(reversed(self.encoder_widths[:-1])) + [3]
        for index, conv in enumerate(self.decoder_convs):
            joined = in_channels + skip_widths[index]
            conv.build([channels_only(joined)] * 2)
            in_channels = self.decoder_widths[index]
            if index < len(self.decoder_norms):
                self.decoder_norms[index].build(channels_only(in_channels))
        self.built = True

    def create_variables(self):
        self.build((None, None, None, 3))

    def freeze_encoder_batchnorm(self):
        """Fine-tuning stage of the paper: encoder BN layers stop learning and use their moving statistics
        (``trainable=False`` in Keras does both). Decoder BN layers keep training. Retrace any compiled training
        step afterwards."""
        for norm in self.encoder_norms:
            norm.trainable = False

    def call(self, image, mask, training=None, return_linear=False):
        image = tf.cast(tf.convert_to_tensor(image), tf.float32)
        mask = tf.cast(tf.convert_to_tensor(mask), tf.float32)
        self.check_inputs(image, mask)
        dtype = self.encoder_convs[0].compute_dtype
        features = tf.cast(image, dtype)
        valid = tf.cast(tf.tile(1.0 - mask, [1, 1, 1, 3]), dtype)  # NVIDIA: 1 = valid, one channel per input

        skips = [(features, valid)]
        x, m = features, valid
        for index, conv in enumerate(self.encoder_convs):
            x, m = conv([x, m])
            if index > 0:
                x = self.encoder_norms[index - 1](x, training=training)
            x = tf.nn.relu(x)
            skips.append((x, m))
        skips.pop()  # the bottleneck is the decoder's input, not a skip

        last = len(self.decoder_convs) - 1
        for index, conv in enumerate(self.decoder_convs):
            skip_x, skip_m = skips.pop()
            x = tf.concat([_upsample_x2(x), tf.cast(skip_x, x.dtype)], axis=-1)
            m = tf.concat([_upsample_x2(m), tf.cast(skip_m, m.dtype)], axis=-1)
            x, m = conv([x, m])
            if index < last:
                x = tf.nn.leaky_relu(self.decoder_norms[index](x, training=training), alpha=_DECODER_LEAK)

        linear = tf.cast(x, tf.float32)
        raw = tf.clip_by_value(linear, 0.0, 1.0)
        outputs = {"output": self.composite(raw, image, mask), "raw": raw}
        if return_linear:
            outputs["linear"] = linear
        return outputs


def build_generator(config: PConvConfig) -> PConvUNet:
    """The registry's generator builder: a PConv U-Net with its variables created (no forward pass)."""
    generator = PConvUNet(config, name="pconv_unet")
    generator.create_variables()
    return generator


def build_discriminators(config: PConvConfig) -> dict:
    """PConv trains without a discriminator."""
    del config
    return {}
