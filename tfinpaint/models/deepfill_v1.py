"""DeepFill v1: "Generative Image Inpainting with Contextual Attention" (Yu et al., CVPR 2018).

Spec: ``docs/architectures.md`` §1, decisions in ``decisions.md``.

* ``DeepFillV1Generator``: coarse network + refinement network with a dilated branch and a contextual-attention
  branch (docs/architectures.md §1.3). Zero 'SAME' padding (official code default), ELU, no normalisation, both
  stages clipped
  to [-1, 1]. 3,601,542 trainable parameters at ``cnum=32``. Sides must be multiples of 8 (two stride-2 convs,
  then contextual attention matches on a further x1/2 grid).
* ``DeepFillV1Critic``: the WGAN-GP critics (docs/architectures.md §1.5): local (on the hole-centred H/2 x W/2 patch)
  and global
  (whole image), 7,072,770 trainable parameters together at ``dnum=64``.
* ``DeepFillV1Config``: the options (presets "paper" and "tiny"); ``build_generator`` / ``build_discriminators``:
  the registry's builders. The recipe (``tfinpaint.training.recipes.deepfill_v1``) is the official one
  (docs/architectures.md §1.6-1.7), with the spatial discount measured to the nearest known pixel (decisions.md).

Internally the networks work in [-1, 1] (and BGR with ``bgr=True``, for official weights); the public API is
RGB in [0, 1]. The critics take images in that internal space, so the gradient penalty is measured on the same
scale as in the paper.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import keras
import tensorflow as tf

from tfinpaint.layers.contextual_attention import DEFAULT_MEMORY_BUDGET_MB, ContextualAttention
from tfinpaint.layers.row_tiling import Downsample, Local, Upsample
from tfinpaint.models.base import InpaintingGenerator, ModelConfig, check_positive_int
from tfinpaint.models.common import (
    DEFAULT_TILE_PIXELS,
    check_tile_pixels,
    composite,
    from_internal,
    inference_tile_rows,
    map_full_resolution_end,
    to_internal,
)

__all__ = [
    "DeepFillV1Config",
    "DeepFillV1Generator",
    "DeepFillV1Critic",
    "NearestUpsample2D",
    "build_generator",
    "build_discriminators",
]

_DILATIONS = (2, 4, 8, 16)


@dataclasses.dataclass(frozen=True)
class DeepFillV1Config(ModelConfig):
    """DeepFill v1 options.

    cnum / dnum: generator / critic base widths (32 and 64 official). bgr: the networks see BGR (official
    weights were trained on cv2 images). align_corners: official neuralgym nearest resizes (x2 upsampling, mask
    downscale) for weight parity; the default pixel-repeat upsampling is the natural choice for training from
    scratch. image_size: training crop side (a multiple of 32); it fixes the critics' Dense input sizes (the
    global critic works at image_size, the local one at image_size / 2).
    """

    MODEL: ClassVar[str] = "deepfill_v1"
    LOAD_OPTIONS: ClassVar[tuple] = ("tile_pixels", "attention_memory_budget_mb")
    PRESETS: ClassVar[dict] = {"paper": {}, "tiny": {"cnum": 8, "dnum": 4, "image_size": 32}}

    cnum: int = 32
    dnum: int = 64
    bgr: bool = False
    align_corners: bool = False
    image_size: int = 256

    def __post_init__(self):
        self._set("cnum", check_positive_int("deepfill_v1", "cnum", self.cnum, minimum=2))
        self._set("dnum", check_positive_int("deepfill_v1", "dnum", self.dnum))
        self._set("image_size", check_positive_int("deepfill_v1", "image_size", self.image_size, multiple=32,
                                                   minimum=32))
        self._set("bgr", bool(self.bgr))
        self._set("align_corners", bool(self.align_corners))

    @property
    def size_factor(self) -> int:
        """Sides must be multiples of 8: two stride-2 convs, then attention matches on a x1/2 grid."""
        return 8


def _resize_nearest(x, size, align_corners):
    """Nearest resize; ``align_corners=True`` is neuralgym's ``resize`` (official DeepFill, docs/architectures.md
    §0.3.2)."""
    if align_corners:
        return tf.raw_ops.ResizeNearestNeighbor(images=x, size=size, align_corners=True, half_pixel_centers=False)
    return tf.image.resize(x, size, method="nearest")


@keras.saving.register_keras_serializable(package="tfinpaint")
class NearestUpsample2D(keras.layers.Layer):
    """x2 nearest-neighbour upsampling (the resize half of DeepFill's ``gen_deconv``).

    align_corners=False: plain pixel repeat. True: ``resize_nearest_neighbor(align_corners=True)`` like the
    official code, for parity with converted official weights.
    """

    def __init__(self, align_corners=False, **kwargs):
        super().__init__(**kwargs)
        self.align_corners = bool(align_corners)

    def resize(self, inputs, size):
        """The layer's resize to ``size`` = [height, width] (row-tiled inference resizes bands with it)."""
        return _resize_nearest(inputs, size, self.align_corners)

    def call(self, inputs):
        return self.resize(inputs, tf.shape(inputs)[1:3] * 2)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        return (batch, None if height is None else 2 * height, None if width is None else 2 * width, channels)

    def get_config(self):
        config = super().get_config()
        config.update({"align_corners": self.align_corners})
        return config


def _row_tiling_steps(layers):
    """Row-tiling steps (tfinpaint.layers.row_tiling) of consecutive layers: stride-2 convs halve the height,
    NearestUpsample2D doubles it, the rest keep it."""
    steps = []
    for layer in layers:
        if isinstance(layer, NearestUpsample2D):
            steps.append(Upsample(layer.resize))
        elif tuple(getattr(layer, "strides", (1, 1))) == (2, 2):
            steps.append(Downsample(layer))
        else:
            steps.append(Local(layer))
    return steps


def _conv(name, filters, kernel_size=3, strides=1, dilation_rate=1, activation="elu"):
    """``gen_conv``: Conv2D with TF 'SAME' zero padding and bias, ELU by default."""
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, dilation_rate=dilation_rate, padding="same",
        activation=activation, name=name,
    )


@keras.saving.register_keras_serializable(package="tfinpaint")
class DeepFillV1Generator(InpaintingGenerator):
    """DeepFill v1 coarse-to-fine generator (docs/architectures.md §1.3).

    ``call(image, mask, training=None)``: image float [B, H, W, 3] RGB in [0, 1], mask [B, H, W, 1] with
    1 = hole; H and W multiples of 8. Returns float32 tensors in [0, 1]: ``"output"`` (composited),
    ``"raw"`` (refined prediction), ``"coarse"`` (stage-1 prediction) and ``"flow"`` (contextual-attention
    flow image at input resolution, visualisation only).

    config: a ``DeepFillV1Config`` (or its options as keywords). Load-time options (not saved with the config):
    attention_memory_budget_mb: passed to ``ContextualAttention`` (chunking of the score matrix).
    tile_pixels: at inference, the full-resolution ends (the convolutions down to 1/4 resolution and the decoders
        back up from it) run in bands of about this many full-resolution pixels, which bounds peak memory at high
        resolution with identical results (``tfinpaint.layers.row_tiling``); 0 turns it off. Training always
        runs untiled.
    """

    CONFIG = DeepFillV1Config

    def __init__(self, config=None, **kwargs):
        # The wrapper itself runs in float32 so Keras does not cast the inputs down under a mixed policy (the
        # known pixels must come back bit-exact); the sub-networks follow the global policy.
        kwargs.setdefault("dtype", "float32")
        self._tile_pixels = DEFAULT_TILE_PIXELS
        super().__init__(config, **kwargs)
        c = self.config.cnum
        self.bgr = self.config.bgr
        self.align_corners = self.config.align_corners

        def up(name, filters):
            return [NearestUpsample2D(self.align_corners, name=f"{name}_resize"), _conv(name, filters)]

        def decoder(prefix):
            # Layers 11-17 of either stage: back from 1/4 to full resolution, linear output layer.
            return [
                _conv(f"{prefix}conv11", 4 * c),
                _conv(f"{prefix}conv12", 4 * c),
                *up(f"{prefix}conv13_upsample", 2 * c),
                _conv(f"{prefix}conv14", 2 * c),
                *up(f"{prefix}conv15_upsample", c),
                _conv(f"{prefix}conv16", c // 2),
                _conv(f"{prefix}conv17", 3, activation=None),
            ]

        self.coarse = keras.Sequential(
            [
                _conv("conv1", c, 5),
                _conv("conv2_downsample", 2 * c, strides=2),
                _conv("conv3", 2 * c),
                _conv("conv4_downsample", 4 * c, strides=2),
                _conv("conv5", 4 * c),
                _conv("conv6", 4 * c),
                *[_conv(f"conv{7 + i}_atrous", 4 * c, dilation_rate=d) for i, d in enumerate(_DILATIONS)],
                *decoder(""),
            ],
            name="coarse",
        )
        self.hallucination = keras.Sequential(
            [
                _conv("xconv1", c, 5),
                _conv("xconv2_downsample", c, strides=2),
                _conv("xconv3", 2 * c),
                _conv("xconv4_downsample", 2 * c, strides=2),
                _conv("xconv5", 4 * c),
                _conv("xconv6", 4 * c),
                *[_conv(f"xconv{7 + i}_atrous", 4 * c, dilation_rate=d) for i, d in enumerate(_DILATIONS)],
            ],
            name="hallucination",
        )
        self.attention_encoder = keras.Sequential(
            [
                _conv("pmconv1", c, 5),
                _conv("pmconv2_downsample", c, strides=2),
                _conv("pmconv3", 2 * c),
                _conv("pmconv4_downsample", 4 * c, strides=2),
                _conv("pmconv5", 4 * c),
                _conv("pmconv6", 4 * c, activation="relu"),
            ],
            name="attention_encoder",
        )
        self.contextual_attention = ContextualAttention(
            ksize=3, stride=1, rate=2, fuse_k=3, softmax_scale=10.0, fuse=True, mode="deepfill",
            return_flow=True, memory_budget_mb=DEFAULT_MEMORY_BUDGET_MB, name="contextual_attention",
        )
        self.attention_decoder = keras.Sequential(
            [_conv("pmconv9", 4 * c), _conv("pmconv10", 4 * c)], name="attention_decoder"
        )
        self.refine_decoder = keras.Sequential(decoder("all"), name="refine_decoder")
        self.apply_initial_load_options()

    @property
    def tile_pixels(self) -> int:
        return self._tile_pixels

    @tile_pixels.setter
    def tile_pixels(self, value):
        self._tile_pixels = check_tile_pixels("DeepFillV1Generator", value)

    @property
    def attention_memory_budget_mb(self) -> float:
        return self.contextual_attention.memory_budget_mb

    @attention_memory_budget_mb.setter
    def attention_memory_budget_mb(self, value):
        if not float(value) > 0:
            raise ValueError(f"deepfill_v1: `attention_memory_budget_mb` must be > 0, got {value!r}")
        self.contextual_attention.memory_budget_mb = float(value)

    def build(self, image_shape):
        del image_shape  # fully convolutional: the weights do not depend on the size
        c = self.config.cnum
        five_channels = (None, None, None, 5)  # [image, ones, mask]
        self.coarse.build(five_channels)
        self.hallucination.build(five_channels)
        self.attention_encoder.build(five_channels)
        self.attention_decoder.build((None, None, None, 4 * c))
        self.refine_decoder.build((None, None, None, 8 * c))

    def create_variables(self):
        self.build((None, None, None, 3))  # fully convolutional: channel counts fix every weight

    def call(self, image, mask, training=None):
        image = tf.cast(image, tf.float32)
        mask = tf.cast(mask, tf.float32)
        self.check_inputs(image, mask)
        tile_rows = inference_tile_rows(image, self.tile_pixels, training)

        def run(layers, x):
            for layer in layers:
                x = layer(x, training=training)
            return x

        def run_full_resolution(layers, x, head):
            """Layers 1-4 (``head``: full resolution down to 1/4) or 13-17 (the last 7 layers: back up from 1/4),
            row-tiled at inference on large images. The layers in between see the whole 1/4-resolution map."""
            if tile_rows is None:
                return run(layers, x)
            return map_full_resolution_end(x, _row_tiling_steps(layers), tile_rows, head, layers[-1].compute_dtype)

        ones = tf.ones_like(mask)
        x_in = to_internal(image, self.bgr) * (1.0 - mask)

        coarse_layers = self.coarse.layers
        coarse = run_full_resolution(coarse_layers[:4], tf.concat([x_in, ones, mask], axis=-1), head=True)
        coarse = run(coarse_layers[4:-7], coarse)
        coarse = run_full_resolution(coarse_layers[-7:], coarse, head=False)
        coarse = tf.clip_by_value(tf.cast(coarse, tf.float32), -1.0, 1.0)

        refine_input = tf.concat([composite(coarse, x_in, mask), ones, mask], axis=-1)
        hallucinated = run_full_resolution(self.hallucination.layers[:4], refine_input, head=True)
        hallucinated = run(self.hallucination.layers[4:], hallucinated)
        # Run the attention branch after the dilated one: TensorFlow would otherwise run both full-resolution
        # branches at once, which holds both sets of temporaries (about +300 MB at 1024 x 1024).
        with tf.control_dependencies([hallucinated]):
            refine_input = tf.identity(refine_input)
        features = run_full_resolution(self.attention_encoder.layers[:4], refine_input, head=True)
        features = run(self.attention_encoder.layers[4:], features)
        # The hole mask at the feature resolution (1/4), per sample.
        mask_quarter = _resize_nearest(mask, tf.shape(features)[1:3], self.align_corners)
        attended, flow = self.contextual_attention(
            [features, features, tf.cast(mask_quarter, features.dtype)], training=training
        )
        attended = self.attention_decoder(attended, training=training)
        decoder_layers = self.refine_decoder.layers
        refined = run(decoder_layers[:-7], tf.concat([hallucinated, attended], axis=-1))
        refined = run_full_resolution(decoder_layers[-7:], refined, head=False)
        refined = tf.clip_by_value(tf.cast(refined, tf.float32), -1.0, 1.0)

        raw = from_internal(refined, self.bgr)
        flow = tf.image.resize(tf.cast(flow, tf.float32), tf.shape(image)[1:3], method="nearest")
        return {
            # Compositing in float32 with the caller's own image keeps the known pixels bit-exact.
            "output": self.composite(raw, image, mask),
            "raw": raw,
            "coarse": from_internal(coarse, self.bgr),
            "flow": tf.stop_gradient(flow),
        }


_CRITIC_KINDS = ("local", "global")


@keras.saving.register_keras_serializable(package="tfinpaint")
class DeepFillV1Critic(keras.Model):
    """WGAN-GP critic of DeepFill v1 (docs/architectures.md §1.5): 5x5 stride-2 'SAME' convs with LeakyReLU(0.2), then
    flatten -> Dense(1) (a score, no activation). No mask input (official ``GAN_WITH_MASK: False``).

    ``call(image, training=None)``: image [B, H, W, 3] in the generator's internal space ([-1, 1], BGR when the
    generator uses ``bgr=True``) -> scores [B, 1] float32.

    kind: ``"local"`` (widths d, 2d, 4d, 8d; sees the hole-centred patch) or ``"global"`` (d, 2d, 4d, 4d; sees
        the whole image). input_size: the side the critic works at; the Dense layer's input size depends on it,
        so inputs are resized to ``input_size`` x ``input_size`` (the identity at the training size: 256 for
        the global critic and 128 for the local one in the paper). Must be a multiple of 16.
    """

    def __init__(self, kind="global", dnum=64, input_size=256, **kwargs):
        kwargs.setdefault("dtype", "float32")  # float32 wrapper, sub-networks follow the global policy
        super().__init__(**kwargs)
        if kind not in _CRITIC_KINDS:
            raise ValueError(f"DeepFillV1Critic: `kind` must be one of {_CRITIC_KINDS}, got {kind!r}")
        if int(dnum) < 1:
            raise ValueError(f"DeepFillV1Critic: `dnum` must be >= 1, got {dnum}")
        if int(input_size) < 16 or int(input_size) % 16:
            raise ValueError(f"DeepFillV1Critic: `input_size` must be a positive multiple of 16, got {input_size}")
        self.kind = kind
        self.dnum = d = int(dnum)
        self.input_size = int(input_size)
        widths = (d, 2 * d, 4 * d, 8 * d) if kind == "local" else (d, 2 * d, 4 * d, 4 * d)
        layers = []
        for index, filters in enumerate(widths, start=1):
            layers += [
                keras.layers.Conv2D(filters, 5, strides=2, padding="same", name=f"conv{index}"),
                keras.layers.LeakyReLU(0.2),
            ]
        layers += [keras.layers.Flatten(), keras.layers.Dense(1, name="score")]
        self.body = keras.Sequential(layers, name=f"{kind}_critic")

    def build(self, image_shape):
        del image_shape  # inputs are resized to input_size
        self.body.build((None, self.input_size, self.input_size, 3))

    def call(self, image, training=None):
        image = tf.cast(image, tf.float32)
        if image.shape.rank != 4 or image.shape[-1] != 3:
            raise ValueError(f"DeepFillV1Critic ({self.kind}): `image` must be [B, H, W, 3], got {image.shape}")
        # Bilinear resize with half-pixel centres is exactly the identity at the training size.
        image = tf.image.resize(image, (self.input_size, self.input_size))
        return tf.cast(self.body(image, training=training), tf.float32)

    def get_config(self):
        config = super().get_config()
        config.update({"kind": self.kind, "dnum": self.dnum, "input_size": self.input_size})
        return config


def build_generator(config: DeepFillV1Config) -> DeepFillV1Generator:
    """The registry's generator builder: a DeepFill v1 generator with its variables created."""
    generator = DeepFillV1Generator(config, name="deepfill_v1_generator")
    generator.create_variables()
    return generator


def build_discriminators(config: DeepFillV1Config) -> dict:
    """The registry's discriminators builder: the local critic (on the H/2 x W/2 hole-centred patch) and the
    global one, at the training size."""
    size = config.image_size
    critics = {
        "local": DeepFillV1Critic("local", dnum=config.dnum, input_size=size // 2, name="deepfill_v1_local_critic"),
        "global": DeepFillV1Critic("global", dnum=config.dnum, input_size=size, name="deepfill_v1_global_critic"),
    }
    for critic in critics.values():
        critic.build((None, critic.input_size, critic.input_size, 3))
    return critics
