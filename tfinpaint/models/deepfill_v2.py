"""DeepFill v2 (Yu et al., ICCV 2019): gated-convolution coarse-to-fine generator with contextual attention and an
SN-PatchGAN discriminator trained with the hinge loss (docs/architectures.md §2).

Layout follows the official TF1 code (``inpaint_model.py`` of JiahuiYu/generative_inpainting v2): stage 1 is a gated
encoder / dilated / decoder network on ``[image * (1 - mask), ones, mask]``; stage 2 runs a dilated branch and a
contextual-attention branch on the 3-channel composite of stage 1 and merges them. Inside, images are in [-1, 1]
(optionally BGR for official-weight parity); the public interface is RGB [0, 1] and masks with 1 = hole.

Input sides must be multiples of 8 (two stride-2 downsamplings, then contextual attention at rate 2).
``DeepFillV2Config`` holds the options (presets "paper" and "tiny"); the training recipe is
``tfinpaint.training.recipes.deepfill_v2``.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import keras
import tensorflow as tf

from tfinpaint.layers.contextual_attention import DEFAULT_MEMORY_BUDGET_MB, ContextualAttention
from tfinpaint.layers.gated_conv import GatedConv2D, GatedUpsample2D
from tfinpaint.layers.row_tiling import Downsample, Local, Upsample
from tfinpaint.layers.spectral_norm import SpectralNorm
from tfinpaint.models.base import InpaintingGenerator, ModelConfig, check_positive_int
from tfinpaint.models.common import (
    DEFAULT_TILE_PIXELS,
    check_tile_pixels,
    from_internal,
    inference_tile_rows,
    map_full_resolution_end,
    to_internal,
)

_DILATIONS = (2, 4, 8, 16)


@dataclasses.dataclass(frozen=True)
class DeepFillV2Config(ModelConfig):
    """DeepFill v2 options.

    cnum: the official base width (raw filters of the first conv; gated outputs have ``cnum // 2`` channels); a
        multiple of 4. dnum: SN-PatchGAN base width.
    bgr: feed the network BGR instead of RGB (official checkpoints were trained on cv2-loaded BGR images).
    align_corners: use neuralgym's nearest resizes with ``align_corners=True`` (x2 upsampling, the mask
        downscaling and the attention's grid downscaling), for parity with official checkpoints. The default
        (False) repeats pixels on upsampling and subsamples on downscaling: the natural choice for training
        from scratch (align_corners=True samples a 64 -> 32 grid unevenly, spec 0.3).
    image_size: the training crop side (both networks are fully convolutional).
    """

    MODEL: ClassVar[str] = "deepfill_v2"
    LOAD_OPTIONS: ClassVar[tuple] = ("tile_pixels", "attention_memory_budget_mb")
    PRESETS: ClassVar[dict] = {"paper": {}, "tiny": {"cnum": 8, "dnum": 8, "image_size": 64}}

    cnum: int = 48
    dnum: int = 64
    bgr: bool = False
    align_corners: bool = False
    image_size: int = 256

    def __post_init__(self):
        self._set("cnum", check_positive_int("deepfill_v2", "cnum", self.cnum, multiple=4, minimum=4))
        self._set("dnum", check_positive_int("deepfill_v2", "dnum", self.dnum))
        self._set("image_size", check_positive_int("deepfill_v2", "image_size", self.image_size,
                                                   multiple=self.size_factor, minimum=self.size_factor))
        self._set("bgr", bool(self.bgr))
        self._set("align_corners", bool(self.align_corners))

    @property
    def size_factor(self) -> int:
        """Height and width must be multiples of 8 (1/4-resolution features, attention matched at 1/8)."""
        return 8


@keras.saving.register_keras_serializable(package="tfinpaint")
class DeepFillV2Generator(InpaintingGenerator):
    """DeepFill v2 generator: exactly 4,052,478 trainable parameters at ``cnum=48``.

    Args:
        config: a ``DeepFillV2Config`` (or its options as keywords).
    Load-time options (not saved with the config):
        attention_memory_budget_mb: score-matrix budget of the contextual attention before it chunks (large images).
        tile_pixels: at inference, the full-resolution ends (the convolutions down to 1/4 resolution and the
            decoder back up from it) run in bands of about this many full-resolution pixels, which bounds peak
            memory at high resolution with identical results (``tfinpaint.layers.row_tiling``); 0 turns it off.
            Training always runs untiled.

    ``call(image, mask)`` returns float32 [0, 1] tensors: ``"output"`` (composited), ``"raw"`` (stage 2),
    ``"coarse"`` (stage 1) and ``"flow"`` (colour-coded attention offsets, input resolution, visualisation only).
    """

    CONFIG = DeepFillV2Config
    _BUILD_SIDE = 32

    def __init__(self, config=None, **kwargs):
        # No input autocast under mixed precision: the float32 image must reach the final composite untouched,
        # so that known pixels stay bit-exact. The layers inside still compute in the policy's compute dtype.
        kwargs.setdefault("autocast", False)
        self._tile_pixels = DEFAULT_TILE_PIXELS
        super().__init__(config, **kwargs)
        self.bgr = self.config.bgr
        self.align_corners = self.config.align_corners
        c = self.config.cnum

        def gated(name, filters, kernel=3, strides=1, dilation=1, activation="elu"):
            # The official `gen_conv(cnum)` convolves to `cnum` channels and gates half of them, so the
            # layer's `filters` (channels after gating) are half of the official numbers.
            return GatedConv2D(filters, kernel, strides=strides, dilation_rate=dilation, activation=activation,
                               gate_type="full", name=name)

        def upsample(name, filters):
            return GatedUpsample2D(filters, 3, interpolation="nearest", align_corners=self.align_corners,
                                   gate_type="full", name=name)

        # Stage 1 (coarse).
        self.stage1 = [
            gated("conv1", c // 2, 5),
            gated("conv2_downsample", c, 3, 2),
            gated("conv3", c),
            gated("conv4_downsample", 2 * c, 3, 2),
            gated("conv5", 2 * c),
            gated("conv6", 2 * c),
            *[gated(f"conv{7 + i}_atrous", 2 * c, dilation=d) for i, d in enumerate(_DILATIONS)],
            gated("conv11", 2 * c),
            gated("conv12", 2 * c),
            upsample("conv13_upsample", c),
            gated("conv14", c),
            upsample("conv15_upsample", c // 2),
            gated("conv16", c // 4),
        ]
        self.conv17 = keras.layers.Conv2D(3, 3, padding="same", name="conv17")

        # Stage 2, dilated ("hallucination") branch.
        self.xconv = [
            gated("xconv1", c // 2, 5),
            gated("xconv2_downsample", c // 2, 3, 2),
            gated("xconv3", c),
            gated("xconv4_downsample", c, 3, 2),
            gated("xconv5", 2 * c),
            gated("xconv6", 2 * c),
            *[gated(f"xconv{7 + i}_atrous", 2 * c, dilation=d) for i, d in enumerate(_DILATIONS)],
        ]
        # Stage 2, contextual-attention branch.
        self.pmconv = [
            gated("pmconv1", c // 2, 5),
            gated("pmconv2_downsample", c // 2, 3, 2),
            gated("pmconv3", c),
            gated("pmconv4_downsample", 2 * c, 3, 2),
            gated("pmconv5", 2 * c),
            gated("pmconv6", 2 * c, activation="relu"),
        ]
        self.attention = ContextualAttention(ksize=3, stride=1, rate=2, fuse_k=3, softmax_scale=10.0, fuse=True,
                                             mode="deepfill", return_flow=True, align_corners=self.align_corners,
                                             memory_budget_mb=DEFAULT_MEMORY_BUDGET_MB, name="contextual_attention")
        self.pmconv_after = [gated("pmconv9", 2 * c), gated("pmconv10", 2 * c)]
        self.allconv = [
            gated("allconv11", 2 * c),
            gated("allconv12", 2 * c),
            upsample("allconv13_upsample", c),
            gated("allconv14", c),
            upsample("allconv15_upsample", c // 2),
            gated("allconv16", c // 4),
        ]
        self.allconv17 = keras.layers.Conv2D(3, 3, padding="same", name="allconv17")
        self.apply_initial_load_options()

    @property
    def tile_pixels(self) -> int:
        return self._tile_pixels

    @tile_pixels.setter
    def tile_pixels(self, value):
        self._tile_pixels = check_tile_pixels("deepfill_v2", value)

    @property
    def attention_memory_budget_mb(self) -> float:
        return self.attention.memory_budget_mb

    @attention_memory_budget_mb.setter
    def attention_memory_budget_mb(self, value):
        if not float(value) > 0:
            raise ValueError(f"deepfill_v2: `attention_memory_budget_mb` must be > 0, got {value!r}")
        self.attention.memory_budget_mb = float(value)

    def call(self, image, mask, training=None):
        image = tf.convert_to_tensor(image)
        mask = tf.convert_to_tensor(mask)
        self.check_inputs(image, mask, hint="; pad the input (tfinpaint's inference API reflect-pads automatically)")
        image = tf.cast(image, tf.float32)
        mask = tf.cast(mask, tf.float32)
        dtype = self.compute_dtype
        tile_rows = inference_tile_rows(image, self.tile_pixels, training)

        def encoder_head(layers, x):
            """The first four layers: full resolution down to 1/4 (row-tiled at inference on large images)."""
            if tile_rows is None:
                for layer in layers:
                    x = layer(x, training=training)
                return x
            steps = [Local(layers[0]), Downsample(layers[1]), Local(layers[2]), Downsample(layers[3])]
            return map_full_resolution_end(x, steps, tile_rows, head=True, dtype=dtype)

        def decoder_tail(layers, output_conv, x):
            """upsample, conv, upsample, conv, output conv + tanh: 1/4 back to full resolution."""
            if tile_rows is None:
                for layer in layers:
                    x = layer(x, training=training)
                return tf.tanh(output_conv(x))
            up1, conv1, up2, conv2 = layers
            steps = [Upsample(up1.resize), Local(up1.gated_conv), Local(conv1), Upsample(up2.resize),
                     Local(up2.gated_conv), Local(conv2), Local(lambda y: tf.tanh(output_conv(y)))]
            return map_full_resolution_end(x, steps, tile_rows, head=False, dtype=dtype)

        x_full = to_internal(image, self.bgr)
        hole = tf.cast(mask, dtype)
        x_in = tf.cast(x_full, dtype) * (1.0 - hole)

        # Stage 1 input: [incomplete image, ones, mask] (5 channels, official).
        x = encoder_head(self.stage1[:4], tf.concat([x_in, tf.ones_like(hole), hole], axis=-1))
        for layer in self.stage1[4:-4]:
            x = layer(x, training=training)
        x_stage1 = decoder_tail(self.stage1[-4:], self.conv17, x)

        # Stage 2 input: the 3-channel composite of stage 1 (the official code drops the mask channels here).
        x_now = x_stage1 * hole + x_in * (1.0 - hole)
        x = encoder_head(self.xconv[:4], x_now)
        for layer in self.xconv[4:]:
            x = layer(x, training=training)
        x_hallu = x

        # Run the attention branch after the dilated one: TensorFlow would otherwise run both full-resolution
        # branches at once, which holds both sets of temporaries (about +300 MB at 1024 x 1024).
        with tf.control_dependencies([x_hallu]):
            x = tf.identity(x_now)
        x = encoder_head(self.pmconv[:4], x)
        for layer in self.pmconv[4:]:
            x = layer(x, training=training)
        # The mask at the 1/4 feature size (official `resize_mask_like`: nearest, align_corners=True).
        quarter = tf.shape(x)[1:3]
        if self.align_corners:
            mask_quarter = tf.raw_ops.ResizeNearestNeighbor(images=mask, size=quarter, align_corners=True,
                                                            half_pixel_centers=False)
        else:
            mask_quarter = tf.image.resize(mask, quarter, method="nearest")
        x, flow = self.attention([x, x, tf.cast(mask_quarter, dtype)], training=training)
        for layer in self.pmconv_after:
            x = layer(x, training=training)
        x = tf.concat([x_hallu, x], axis=-1)
        for layer in self.allconv[:2]:
            x = layer(x, training=training)
        x_stage2 = decoder_tail(self.allconv[2:], self.allconv17, x)

        raw = from_internal(x_stage2, self.bgr)
        height_width = tf.shape(image)[1:3]
        flow = tf.image.resize(tf.cast(flow, tf.float32), height_width, method="bilinear")
        return {
            # Compositing in float32 with the caller's own image keeps known pixels bit-exact.
            "output": self.composite(raw, image, mask),
            "raw": raw,
            "coarse": from_internal(x_stage1, self.bgr),
            "flow": tf.stop_gradient(tf.clip_by_value(flow, 0.0, 1.0)),
        }


@keras.saving.register_keras_serializable(package="tfinpaint")
class SNPatchGANDiscriminator(keras.Model):
    """SN-PatchGAN (docs/architectures.md §2.3): six spectrally normalised 5x5 stride-2 convs, LeakyReLU(0.2) after
    every one
    (the last included, official), flattened to (H/64)*(W/64)*4*dnum scores per image.

    Input: one tensor [B, H, W, 4] = concat[image in the generator's internal range ([-1, 1]), hole mask].
    5,946,816 trainable parameters at ``dnum=64`` plus 1,216 non-trainable power-iteration vectors ``u``.
    """

    def __init__(self, dnum=64, **kwargs):
        super().__init__(**kwargs)
        if int(dnum) != dnum or dnum < 1:
            raise ValueError(f"deepfill_v2: dnum must be a positive integer, got {dnum}")
        self.dnum = int(dnum)
        widths = (dnum, 2 * dnum, 4 * dnum, 4 * dnum, 4 * dnum, 4 * dnum)
        self.convs = [
            SpectralNorm(keras.layers.Conv2D(width, 5, strides=2, padding="same", name=f"conv{i + 1}"),
                         name=f"sn_conv{i + 1}")
            for i, width in enumerate(widths)
        ]
        self.activation = keras.layers.LeakyReLU(negative_slope=0.2)

    def call(self, inputs, training=None):
        inputs = tf.convert_to_tensor(inputs)
        if inputs.shape.rank != 4 or inputs.shape[-1] != 4:
            raise ValueError("SNPatchGANDiscriminator: input must be [B, H, W, 4] = concat[image in [-1, 1], mask], "
                             f"got shape {inputs.shape}")
        x = tf.cast(inputs, self.compute_dtype)
        for conv in self.convs:
            x = self.activation(conv(x, training=training))
        return tf.cast(tf.reshape(x, [tf.shape(x)[0], -1]), tf.float32)

    def get_config(self):
        config = super().get_config()
        config.update(dnum=self.dnum)
        return config


def build_generator(config: DeepFillV2Config) -> DeepFillV2Generator:
    """The registry's generator builder: a DeepFill v2 generator with its variables created."""
    generator = DeepFillV2Generator(config, name="deepfill_v2_generator")
    generator.create_variables()
    return generator


def build_discriminators(config: DeepFillV2Config) -> dict:
    """The registry's discriminators builder: ``{"sn_patch_gan": SNPatchGANDiscriminator}``, built."""
    discriminator = SNPatchGANDiscriminator(dnum=config.dnum, name="sn_patch_gan")
    factor = config.size_factor
    discriminator(tf.zeros([1, factor, factor, 4]))
    return {"sn_patch_gan": discriminator}
