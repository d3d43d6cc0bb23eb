"""CRA / HiFill (Yi et al., CVPR 2020): Contextual Residual Aggregation for ultra high-resolution inpainting
(docs/architectures.md §5), in its checkpoint-exact form (2,722,791 generator parameters at ``cnum=32``).

* Coarse network: light-weight gated convs with a single-channel gate (LWGC_sc) on the 2x-downsampled input.
* Refine network: U-Net-like, convs gated by a 1x1 ("pointwise") conv as in the released checkpoint; contextual
  attention (HiFill variant) at 1/8 resolution computes the attention matrix, which is also transferred to the
  1/4 and 1/2 decoder levels (attention transfer) and, at inference, to the full-resolution residual.
* Up-sampling blocks resize bilinearly with TF1 semantics (``align_corners=False``, ``half_pixel_centers=False``),
  the resize the official weights were trained with.

The network is trained and run at 512 x 512 by default, but takes any height and width that are multiples of 16
(three stride-2 levels, then attention matched on a stride-2 grid: the matching grid is H/16 x W/16).
The inference pipeline's ``cra`` strategy (``tfinpaint.inference.pipeline``) runs it on images of any size (8K
and beyond) with contextual residual aggregation, using ``attention_cell``.
``CRAConfig`` holds the options (presets "paper" and "tiny"); the training recipe is
``tfinpaint.training.recipes.cra``.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import keras
import numpy as np
import tensorflow as tf

from tfinpaint.layers.attention_transfer import AttentionTransfer
from tfinpaint.layers.contextual_attention import DEFAULT_MEMORY_BUDGET_MB, ContextualAttention
from tfinpaint.layers.gated_conv import GatedConv2D, GatedUpsample2D
from tfinpaint.models.base import InpaintingGenerator, ModelConfig, check_positive_int
from tfinpaint.models.common import from_internal, to_internal

# Side of one attention-grid cell in input pixels: 8 (bottleneck) x 2 (attention rate); also the size factor.
ATTENTION_CELL = 16
# The long side the network runs at on larger images (its training size in the paper).
WORKING_SIZE = 512
_COARSE_DILATIONS = (1, 1, 1, 2, 2, 2, 2, 2, 4, 4, 4, 4, 8, 8)
_REFINE_DILATIONS = (1, 2, 4, 8, 16)


@dataclasses.dataclass(frozen=True)
class CRAConfig(ModelConfig):
    """CRA / HiFill options.

    cnum: generator base width (``GEN_NC``), an even number. dnum: critic base width.
    bgr: feed the network BGR instead of RGB (the official checkpoint saw cv2-loaded BGR images).
    return_flow: the generator also returns ``"flow"``, the colour-coded argmax offsets of the attention.
    image_size: the training size (square, a multiple of 16): it sizes the critic's Dense layer and the crops.
    coarse_size: side of the square the coarse stage works at (the official code: 256 whatever the input; converted
        official weights record 256); None uses half the input's height and width. Both agree at 512 x 512.
    """

    MODEL: ClassVar[str] = "cra"
    LOAD_OPTIONS: ClassVar[tuple] = ("attention_memory_budget_mb",)
    PRESETS: ClassVar[dict] = {"paper": {}, "tiny": {"cnum": 8, "dnum": 8, "image_size": 64}}

    cnum: int = 32
    dnum: int = 64
    bgr: bool = False
    return_flow: bool = True
    image_size: int = 512
    coarse_size: int | None = None

    def __post_init__(self):
        self._set("cnum", check_positive_int("cra", "cnum", self.cnum, multiple=2, minimum=2))
        self._set("dnum", check_positive_int("cra", "dnum", self.dnum))
        self._set("image_size", check_positive_int("cra", "image_size", self.image_size, multiple=self.size_factor,
                                                   minimum=self.size_factor))
        self._set("bgr", bool(self.bgr))
        self._set("return_flow", bool(self.return_flow))
        if self.coarse_size is not None:
            self._set("coarse_size", check_positive_int("cra", "coarse_size", self.coarse_size, multiple=4, minimum=4))

    @property
    def size_factor(self) -> int:
        """Height and width must be multiples of 16."""
        return ATTENTION_CELL


def _hifill_init():
    # Official `ops.conv2d`: truncated normal, stddev 0.05 (a fresh instance per layer: independent draws).
    return keras.initializers.TruncatedNormal(stddev=0.05)


def _resize_bilinear_tf1(x, size):
    """TF1 ``resize_bilinear`` (align_corners=False, half_pixel_centers=False), as in the official code; the
    kernel returns float32, so the result is cast back to the input's dtype (mixed precision)."""
    resized = tf.raw_ops.ResizeBilinear(images=x, size=size, align_corners=False, half_pixel_centers=False)
    return tf.cast(resized, x.dtype)


@keras.saving.register_keras_serializable(package="tfinpaint")
class CRAGenerator(InpaintingGenerator):
    """HiFill generator (checkpoint-exact): 2,722,791 trainable parameters at ``cnum=32``
    (coarse 811,489 + refine 1,911,302).

    Args:
        config: a ``CRAConfig`` (or its options as keywords).
    Load-time option (not saved with the config):
        attention_memory_budget_mb: score-matrix budget of the contextual attention before it chunks.

    ``call(image, mask)`` returns float32 tensors: ``"output"`` (composited, [0, 1]), ``"raw"`` (refine output),
    ``"coarse"`` (coarse output upsampled to the input size), ``"attention"`` ([B, L, L] with L = H/16 * W/16,
    rows = query cells, columns = source cells) and, with ``return_flow``, ``"flow"`` (input resolution).
    """

    CONFIG = CRAConfig
    working_size = WORKING_SIZE
    default_hd_strategy = "cra"
    attention_cell = ATTENTION_CELL
    _BUILD_SIDE = 32

    def __init__(self, config=None, **kwargs):
        # No input autocast under mixed precision: the float32 image must reach the final composite untouched,
        # so that known pixels stay bit-exact. The layers inside still compute in the policy's compute dtype.
        kwargs.setdefault("autocast", False)
        super().__init__(config, **kwargs)
        self.bgr = self.config.bgr
        self.return_flow = self.config.return_flow
        self.coarse_size = self.config.coarse_size
        c = self.config.cnum

        def coarse(name, filters, kernel=3, strides=1, dilation=1):
            return GatedConv2D(filters, kernel, strides=strides, dilation_rate=dilation, activation="elu",
                               gate_type="single_channel", kernel_initializer=_hifill_init(), name=name)

        def refine(name, filters, strides=1, dilation=1):
            return GatedConv2D(filters, 3, strides=strides, dilation_rate=dilation, activation="elu",
                               gate_type="pointwise", kernel_initializer=_hifill_init(), name=name)

        def upsample(name, filters, gate_type):
            # x2 TF1-bilinear resize (align_corners=False, half_pixel_centers=False), then a 3x3 gated conv.
            return GatedUpsample2D(filters, 3, interpolation="bilinear", gate_type=gate_type,
                                   kernel_initializer=_hifill_init(), name=name)

        self.coarse_layers = [
            coarse("c_en_down_128", c, 5, 2),
            coarse("c_en_conv_128", c),
            coarse("c_en_down_64", 2 * c, 3, 2),
            *[coarse(f"c_en_conv{i}_64", 2 * c) for i in (1, 2, 3)],
            *[coarse(f"c_dil_d{i + 1}", 2 * c, dilation=d) for i, d in enumerate(_COARSE_DILATIONS)],
            *[coarse(f"c_de_conv{i}_64", 2 * c) for i in (1, 2, 3)],
            upsample("c_de_up_128", c, "single_channel"),
            coarse("c_de_conv_128", c),
            # The official toRGB block keeps the gated ELU (then clips to [-1, 1]).
            upsample("c_de_toRGB", 3, "single_channel"),
        ]

        # Refine encoder: widths start at cnum / 2 and double at each of the three downsamplings
        # (official: nc = max(4, GEN_NC // (IMG / 512)) // 2, then doubled per level, at 512 input).
        self.re_en_down_256 = refine("re_en_down_256", c, strides=2)
        self.re_en_conv_256 = refine("re_en_conv_256", c)
        self.re_en_down_128 = refine("re_en_down_128", 2 * c, strides=2)
        self.re_en_conv_128 = refine("re_en_conv_128", 2 * c)
        self.re_en_down_64 = refine("re_en_down_64", 4 * c, strides=2)
        self.re_en_conv_64 = refine("re_en_conv_64", 4 * c)
        self.re_dil = [refine(f"re_dil_d{d}", 4 * c, dilation=d) for d in _REFINE_DILATIONS]
        self.attention = ContextualAttention(ksize=3, stride=1, rate=2, fuse_k=3, softmax_scale=10.0, fuse=True,
                                             mode="hifill", return_flow=self.return_flow, return_attention=True,
                                             memory_budget_mb=DEFAULT_MEMORY_BUDGET_MB, name="contextual_attention")
        self.re_att_64_att1 = refine("re_att_64_att1", 4 * c)
        self.re_att_64_att3 = refine("re_att_64_att3", 4 * c)
        self.re_de_up_128 = upsample("re_de_up__128", 2 * c, "pointwise")
        self.re_de_conv_128 = refine("re_de_conv_128", 2 * c)
        self.transfer_128 = AttentionTransfer(name="attention_transfer_128")
        self.re_de_att_128 = [refine("re_de_att_128_1", 2 * c), refine("re_de_att_128_2", 2 * c, dilation=2)]
        self.re_de_up_256 = upsample("re_de_up__256", c, "pointwise")
        self.re_de_conv_256 = refine("re_de_conv_256", c)
        self.transfer_256 = AttentionTransfer(name="attention_transfer_256")
        self.re_de_att_256 = [refine("re_de_att_256_1", c), refine("re_de_att_256_2", c, dilation=2)]
        self.re_de_to_rgb = upsample("re_de_toRGB__256", 3, "pointwise")
        self.apply_initial_load_options()

    @property
    def attention_memory_budget_mb(self) -> float:
        return self.attention.memory_budget_mb

    @attention_memory_budget_mb.setter
    def attention_memory_budget_mb(self, value):
        if not float(value) > 0:
            raise ValueError(f"cra: `attention_memory_budget_mb` must be > 0, got {value!r}")
        self.attention.memory_budget_mb = float(value)

    def call(self, image, mask, training=None):
        image = tf.convert_to_tensor(image)
        mask = tf.convert_to_tensor(mask)
        self.check_inputs(image, mask, hint="; pad or resize the input (tfinpaint.load handles any size)")
        image = tf.cast(image, tf.float32)
        mask = tf.cast(mask, tf.float32)
        dtype = self.compute_dtype
        height_width = tf.shape(image)[1:3]

        hole = tf.cast(mask, dtype)
        x_in = tf.cast(to_internal(image, self.bgr), dtype) * (1.0 - hole)

        # Coarse network on the half-resolution [incomplete image, mask] (official: a fixed 256 x 256).
        coarse_hw = height_width // 2 if self.coarse_size is None else [self.coarse_size, self.coarse_size]
        x = _resize_bilinear_tf1(tf.concat([x_in, hole], axis=-1), coarse_hw)
        for layer in self.coarse_layers:
            x = layer(x, training=training)
        x1 = _resize_bilinear_tf1(tf.clip_by_value(x, -1.0, 1.0), height_width)

        # Refine network on [coarse composite, mask].
        x = tf.concat([x1 * hole + x_in * (1.0 - hole), hole], axis=-1)
        x = self.re_en_down_256(x, training=training)
        skip_half = self.re_en_conv_256(x, training=training)
        x = self.re_en_down_128(skip_half, training=training)
        skip_quarter = self.re_en_conv_128(x, training=training)
        x = self.re_en_down_64(skip_quarter, training=training)
        x = self.re_en_conv_64(x, training=training)  # its skip is saved and discarded in the official code
        for layer in self.re_dil:
            x = layer(x, training=training)
        x_hallu = x

        # The attention mask is the full-resolution hole mask: a grid cell is a hole if any of its pixels is.
        attended = self.attention([x, x, hole], training=training)
        if self.return_flow:
            y, flow, attention = attended
        else:
            y, attention = attended
        y = self.re_att_64_att1(y, training=training)
        x = self.re_att_64_att3(tf.concat([x_hallu, y], axis=-1), training=training)

        x = self.re_de_conv_128(self.re_de_up_128(x, training=training), training=training)
        transferred = self.transfer_128([skip_quarter, attention])
        for layer in self.re_de_att_128:
            transferred = layer(transferred, training=training)
        x = tf.concat([transferred, x], axis=-1)

        x = self.re_de_conv_256(self.re_de_up_256(x, training=training), training=training)
        transferred = self.transfer_256([skip_half, attention])
        for layer in self.re_de_att_256:
            transferred = layer(transferred, training=training)
        x = tf.concat([transferred, x], axis=-1)
        x2 = tf.clip_by_value(self.re_de_to_rgb(x, training=training), -1.0, 1.0)

        raw = from_internal(x2, self.bgr)
        outputs = {
            # Compositing in float32 with the caller's own image keeps known pixels bit-exact.
            "output": self.composite(raw, image, mask),
            "raw": raw,
            "coarse": from_internal(x1, self.bgr),
            "attention": tf.cast(attention, tf.float32),
        }
        if self.return_flow:
            flow = tf.image.resize(tf.cast(flow, tf.float32), height_width, method="nearest")
            outputs["flow"] = tf.stop_gradient(tf.clip_by_value(flow, 0.0, 1.0))
        return outputs


def _as_size(image_size, owner):
    size = (image_size, image_size) if np.ndim(image_size) == 0 else tuple(image_size)
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise ValueError(f"{owner}: image_size must be an int or (height, width), got {image_size!r}")
    return int(size[0]), int(size[1])


@keras.saving.register_keras_serializable(package="tfinpaint")
class CRACritic(keras.Model):
    """HiFill WGAN-GP critic (docs/architectures.md §5.8): six 5x5 stride-2 convs with LeakyReLU(0.2), flatten,
    Dense(1).

    Input: [B, H, W, 3] images in the generator's internal range ([-1, 1]); no mask channel.
    The Dense layer's input size depends on the image size, so the critic is built for one ``input_size``
    ((height, width), default 512 x 512 -> 5,961,601 parameters at ``dnum=64``; 256 x 256 -> 5,949,313).
    """

    def __init__(self, dnum=64, input_size=(512, 512), **kwargs):
        super().__init__(**kwargs)
        if int(dnum) != dnum or dnum < 1:
            raise ValueError(f"cra: dnum must be a positive integer, got {dnum}")
        self.dnum = int(dnum)
        self.input_size = _as_size(input_size, "CRACritic")
        widths = (dnum, 2 * dnum, 4 * dnum, 4 * dnum, 4 * dnum, 4 * dnum)
        self.convs = [
            keras.layers.Conv2D(width, 5, strides=2, padding="same", kernel_initializer=_hifill_init(),
                                name=f"conv{i + 1}")
            for i, width in enumerate(widths)
        ]
        self.activation = keras.layers.LeakyReLU(negative_slope=0.2)
        self.dense = keras.layers.Dense(1, name="linear")
        # Six TF-SAME stride-2 convs: each side becomes ceil(side / 64).
        self._flat_features = (-(-self.input_size[0] // 64)) * (-(-self.input_size[1] // 64)) * widths[-1]

    def build(self, input_shape=None):
        channels = 3
        for conv in self.convs:
            conv.build((None, None, None, channels))
            channels = conv.filters
        self.dense.build((None, self._flat_features))
        self.built = True

    def call(self, images, training=None):
        images = tf.convert_to_tensor(images)
        if images.shape.rank != 4 or images.shape[-1] != 3:
            raise ValueError(f"CRACritic: input must be [B, H, W, 3] images in [-1, 1], got shape {images.shape}")
        static = tuple(images.shape[1:3])
        if None not in static and static != self.input_size:
            hint = (f"tfinpaint.models.create('cra', image_size={static[0]})" if static[0] == static[1]
                    else f"CRACritic(input_size={static})")
            raise ValueError(f"CRACritic was built for {self.input_size[0]}x{self.input_size[1]} images (its Dense "
                             f"layer depends on the size) but got {static[0]}x{static[1]}; build it with {hint}")
        x = tf.cast(images, self.compute_dtype)
        for conv in self.convs:
            x = self.activation(conv(x))
        x = tf.reshape(x, [tf.shape(x)[0], self._flat_features])
        return tf.cast(self.dense(x), tf.float32)

    def get_config(self):
        config = super().get_config()
        config.update(dnum=self.dnum, input_size=list(self.input_size))
        return config


def build_generator(config: CRAConfig) -> CRAGenerator:
    """The registry's generator builder: a CRA generator with its variables created."""
    generator = CRAGenerator(config, name="cra_generator")
    generator.create_variables()
    return generator


def build_discriminators(config: CRAConfig) -> dict:
    """The registry's discriminators builder: ``{"critic": CRACritic}`` built for the training size."""
    size = config.image_size
    critic = CRACritic(dnum=config.dnum, input_size=(size, size), name="critic")
    critic.build((None, size, size, 3))
    return {"critic": critic}
