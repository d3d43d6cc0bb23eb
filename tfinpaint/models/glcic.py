"""GLCIC: "Globally and Locally Consistent Image Completion" (Iizuka, Simo-Serra, Ishikawa, SIGGRAPH 2017).

Spec: ``docs/architectures.md`` §4, decisions in ``decisions.md``.

* ``GLCICGenerator``: the completion network (paper Table 1), conv -> BatchNorm -> ReLU on every layer but the
  last (BN before ReLU, decisions.md), sigmoid output in [0, 1]. 6,072,131 trainable parameters at ``cnum=64``.
  Input sides must be multiples of 4.
* ``GLCICDiscriminator``: the global and local context discriminators joined by the concatenation FC
  (paper Table 2), 45,063,681 trainable parameters at ``dnum=64``. It returns **logits**: the paper's final
  sigmoid is folded into the BCE losses (``tfinpaint.losses.bce_*``) for numerical stability.
* ``GLCICConfig``: the options, with the presets "paper" and "tiny"; ``build_generator`` /
  ``build_discriminators``: the registry's builders (the training recipe is ``tfinpaint.training.recipes.glcic``).
* ``postprocess``: the official optional Telea + Poisson-blending clean-up (docs/architectures.md §4.6).
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import keras
import numpy as np
import tensorflow as tf

from tfinpaint.models.base import InpaintingGenerator, ModelConfig, check_image_and_mask, check_positive_int
from tfinpaint.models.common import crop_patches, hole_bbox_offsets

__all__ = [
    "DEFAULT_MEAN",
    "GLCICConfig",
    "GLCICGenerator",
    "GLCICDiscriminator",
    "local_patch",
    "build_generator",
    "build_discriminators",
    "postprocess",
]

# The official model stores its training set's per-channel mean, which the paper does not publish; the
# ImageNet RGB mean is the usual stand-in for natural photos. Set `mean` to your data set's mean for training.
DEFAULT_MEAN = (0.485, 0.456, 0.406)
# Torch7 BatchNorm defaults (the official model is Torch7): running average weight 0.1, epsilon 1e-5.
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


@dataclasses.dataclass(frozen=True)
class GLCICConfig(ModelConfig):
    """GLCIC options. cnum / dnum: generator / discriminator base widths (64 in the paper). image_size: the
    training crop side (a multiple of 64); it fixes the discriminator's FC input size. mean: per-channel mean
    of the training images in [0, 1] (stored in the generator's weight ``mean``)."""

    MODEL: ClassVar[str] = "glcic"
    PRESETS: ClassVar[dict] = {"paper": {}, "tiny": {"cnum": 8, "dnum": 4, "image_size": 64}}

    cnum: int = 64
    dnum: int = 64
    image_size: int = 256
    mean: tuple = DEFAULT_MEAN

    def __post_init__(self):
        self._set("cnum", check_positive_int("glcic", "cnum", self.cnum, minimum=2))
        self._set("dnum", check_positive_int("glcic", "dnum", self.dnum))
        self._set("image_size", check_positive_int("glcic", "image_size", self.image_size, multiple=64, minimum=64))
        mean = tuple(float(value) for value in np.asarray(self.mean, dtype=np.float64).reshape(-1))
        if len(mean) != 3:
            raise ValueError(f"glcic: `mean` must have 3 values (R, G, B), got {len(mean)}")
        self._set("mean", mean)

    @property
    def size_factor(self) -> int:
        """Sides must be multiples of 4 (two stride-2 convs, two x2 deconvs)."""
        return 4


def _conv_bn_relu(filters, kernel_size, strides=1, dilation_rate=1, name=None):
    """Conv -> BN -> ReLU. Zero padding is symmetric, (k - 1) / 2 * dilation, like the Torch7 original, so a
    stride-2 conv halves even sides exactly (Keras 'same' would pad only bottom/right there)."""
    pad = (kernel_size - 1) // 2 * dilation_rate
    return [
        keras.layers.ZeroPadding2D(pad, name=None if name is None else f"{name}_pad"),
        keras.layers.Conv2D(filters, kernel_size, strides=strides, dilation_rate=dilation_rate, name=name),
        keras.layers.BatchNormalization(
            momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=None if name is None else f"{name}_bn"
        ),
        keras.layers.ReLU(),
    ]


def _deconv_bn_relu(filters, name):
    """x2 transposed conv (4x4, stride 2, pad 1 in Torch terms = Keras 'same') -> BN -> ReLU."""
    return [
        keras.layers.Conv2DTranspose(filters, 4, strides=2, padding="same", name=name),
        keras.layers.BatchNormalization(momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=f"{name}_bn"),
        keras.layers.ReLU(),
    ]


@keras.saving.register_keras_serializable(package="tfinpaint")
class GLCICGenerator(InpaintingGenerator):
    """GLCIC completion network (docs/architectures.md §4.2).

    ``call(image, mask, training=None)``: image float [B, H, W, 3] RGB in [0, 1], mask [B, H, W, 1] with
    1 = hole; H and W multiples of 4. The network sees ``concat[(image - mean) * (1 - mask), mask]`` (holes
    filled with the mean colour) and returns ``{"output": composited, "raw": network prediction}``, float32
    in [0, 1].

    config: a ``GLCICConfig``; its ``mean`` is stored in the non-trainable weight ``mean`` (so it travels with
        checkpoints and ``.keras`` files).
    """

    CONFIG = GLCICConfig

    def __init__(self, config=None, **kwargs):
        # The wrapper itself runs in float32 so Keras does not cast the inputs down under a mixed policy (the
        # known pixels must come back bit-exact); the sub-networks follow the global policy.
        kwargs.setdefault("dtype", "float32")
        super().__init__(config, **kwargs)
        c = self.config.cnum
        layers = []
        layers += _conv_bn_relu(c, 5, name="conv1")
        layers += _conv_bn_relu(2 * c, 3, strides=2, name="conv2")
        layers += _conv_bn_relu(2 * c, 3, name="conv3")
        layers += _conv_bn_relu(4 * c, 3, strides=2, name="conv4")
        layers += _conv_bn_relu(4 * c, 3, name="conv5")
        layers += _conv_bn_relu(4 * c, 3, name="conv6")
        for index, rate in enumerate((2, 4, 8, 16), start=7):
            layers += _conv_bn_relu(4 * c, 3, dilation_rate=rate, name=f"conv{index}_dilated")
        layers += _conv_bn_relu(4 * c, 3, name="conv11")
        layers += _conv_bn_relu(4 * c, 3, name="conv12")
        layers += _deconv_bn_relu(2 * c, name="deconv13")
        layers += _conv_bn_relu(2 * c, 3, name="conv14")
        layers += _deconv_bn_relu(c, name="deconv15")
        layers += _conv_bn_relu(c // 2, 3, name="conv16")
        layers += [keras.layers.Conv2D(3, 3, padding="same", name="conv17_output")]
        self.body = keras.Sequential(layers, name="completion")

    def build(self, image_shape):
        # Keras passes only the image shape (it never treats an argument named `mask` as an input shape).
        self.mean = self.add_weight(
            name="mean",
            shape=(3,),
            initializer=keras.initializers.Constant(list(self.config.mean)),
            trainable=False,
        )
        self.body.build((None, None, None, 4))

    def create_variables(self):
        self.build((None, None, None, 3))  # every weight's shape is known from the channel counts

    def call(self, image, mask, training=None):
        image = tf.cast(image, tf.float32)
        mask = tf.cast(mask, tf.float32)
        self.check_inputs(image, mask)
        centred = (image - tf.cast(self.mean, tf.float32)) * (1.0 - mask)
        net_input = tf.concat([centred, mask], axis=-1)
        raw = tf.cast(tf.sigmoid(self.body(net_input, training=training)), tf.float32)
        return {"output": self.composite(raw, image, mask), "raw": raw}


@keras.saving.register_keras_serializable(package="tfinpaint")
class GLCICDiscriminator(keras.Model):
    """Global + local context discriminators with the concatenation FC (docs/architectures.md §4.3); returns logits
    [B, 1].

    ``call(image, mask, training=None)``: image [B, H, W, 3] in [0, 1] (real or completed), mask [B, H, W, 1]
    (1 = hole) selecting the local patch: the H/2 x W/2 window centred on each sample's hole bounding box
    (128 x 128 for the paper's 256 x 256 crops).

    The FC layers need a fixed feature-map size, so the branches work at the configured ``image_size`` (the
    training crop side): the global branch sees the image resized to ``image_size`` x ``image_size`` (the
    paper: "full image rescaled to 256 x 256") and the local branch the patch resized to half that. At the
    training size the resize is the identity. ``image_size`` must be a multiple of 64 (six stride-2 convs).
    """

    def __init__(self, dnum=64, image_size=256, **kwargs):
        kwargs.setdefault("dtype", "float32")  # float32 wrapper, sub-networks follow the global policy
        super().__init__(**kwargs)
        if int(dnum) < 1:
            raise ValueError(f"GLCICDiscriminator: `dnum` must be >= 1, got {dnum}")
        if int(image_size) < 64 or int(image_size) % 64:
            raise ValueError(f"GLCICDiscriminator: `image_size` must be a positive multiple of 64, got {image_size}")
        self.dnum = int(dnum)
        self.image_size = int(image_size)
        d = self.dnum
        fc_width = 16 * d  # 1024 in the paper

        def branch(widths, name):
            layers = []
            for index, filters in enumerate(widths, start=1):
                layers += _conv_bn_relu(filters, 5, strides=2, name=f"{name}_conv{index}")
            layers += [keras.layers.Flatten(), keras.layers.Dense(fc_width, activation="relu", name=f"{name}_fc")]
            return keras.Sequential(layers, name=name)

        self.local_branch = branch((d, 2 * d, 4 * d, 8 * d, 8 * d), "local")
        self.global_branch = branch((d, 2 * d, 4 * d, 8 * d, 8 * d, 8 * d), "global")
        self.concat_fc = keras.layers.Dense(1, name="concat_fc")

    def build(self, image_shape):
        del image_shape  # the branches work at the configured size whatever the input size
        size, half = self.image_size, self.image_size // 2
        self.global_branch.build((None, size, size, 3))
        self.local_branch.build((None, half, half, 3))
        self.concat_fc.build((None, 2 * 16 * self.dnum))

    def call(self, image, mask, training=None):
        image = tf.cast(image, tf.float32)
        mask = tf.cast(mask, tf.float32)
        check_image_and_mask("GLCICDiscriminator", image, mask)
        patch = local_patch(image, mask, "GLCICDiscriminator")
        size, half = self.image_size, self.image_size // 2
        # Bilinear resize with half-pixel centres is exactly the identity at the training size.
        global_input = tf.image.resize(image, (size, size))
        local_input = tf.image.resize(patch, (half, half))
        features = tf.concat(
            [self.global_branch(global_input, training=training), self.local_branch(local_input, training=training)],
            axis=-1,
        )
        return tf.cast(self.concat_fc(features), tf.float32)

    def get_config(self):
        config = super().get_config()
        config.update({"dnum": self.dnum, "image_size": self.image_size})
        return config


def local_patch(image, mask, owner="glcic.local_patch"):
    """The H/2 x W/2 window of ``image`` centred on each sample's hole bounding box (clamped inside)."""
    height, width = image.shape[1], image.shape[2]
    if height is None or width is None:
        # tfinpaint.models.common.hole_bbox_offsets takes the window size as Python ints.
        raise ValueError(f"{owner}: the local patch needs a static image height and width, got {image.shape}")
    offsets = hole_bbox_offsets(mask, height // 2, width // 2)
    return crop_patches(image, offsets, height // 2, width // 2)


def build_generator(config: GLCICConfig) -> GLCICGenerator:
    """The registry's generator builder: a GLCIC generator with its variables created."""
    generator = GLCICGenerator(config, name="glcic_generator")
    generator.create_variables()
    return generator


def build_discriminators(config: GLCICConfig) -> dict:
    """The registry's discriminators builder: ``{"context": GLCICDiscriminator}`` at the training size, built."""
    discriminator = GLCICDiscriminator(dnum=config.dnum, image_size=config.image_size, name="glcic_discriminator")
    discriminator.build((None, config.image_size, config.image_size, 3))
    return {"context": discriminator}


# ---------------------------------------------------------------------------------------------------------
# Optional post-processing (official `inpaint.lua --postproc`, docs/architectures.md §4.6)


def postprocess(image_uint8, output_uint8, mask):
    """Fast-marching (Telea, radius 1) fill followed by Poisson blending (``cv2.seamlessClone``, NORMAL_CLONE)
    of the completed image into it over the hole's bounding box, as the official code does.

    image_uint8 / output_uint8: [H, W, 3] uint8 (the input and the network's completed image; any channel
    order, both the same). mask: [H, W] or [H, W, 1], > 0.5 = hole. Returns [H, W, 3] uint8 whose known pixels
    equal ``image_uint8`` exactly (Poisson blending may nudge pixels around the hole, so the result is
    re-composited).
    """
    import cv2

    image = np.asarray(image_uint8)
    output = np.asarray(output_uint8)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"glcic.postprocess: `image_uint8` must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    if output.dtype != np.uint8 or output.shape != image.shape:
        raise ValueError(
            f"glcic.postprocess: `output_uint8` must be uint8 {image.shape}, got {output.dtype} {output.shape}"
        )
    hole = np.asarray(mask)
    if hole.ndim == 3 and hole.shape[-1] == 1:
        hole = hole[..., 0]
    if hole.shape != image.shape[:2]:
        raise ValueError(f"glcic.postprocess: `mask` must be [H, W] matching the image {image.shape[:2]}, "
                         f"got {hole.shape}")
    hole = hole > 0.5

    completed = np.where(hole[..., None], output, image)
    if not hole.any():
        return completed
    hole_u8 = hole.astype(np.uint8) * 255
    filled = cv2.inpaint(completed, hole_u8, 1, cv2.INPAINT_TELEA)

    # seamlessClone ignores mask pixels on the image border and pastes the mask's bounding box centred at
    # `centre`; clearing the border first and centring on that box puts the blend exactly in place.
    clone_mask = hole_u8.copy()
    clone_mask[0, :] = clone_mask[-1, :] = 0
    clone_mask[:, 0] = clone_mask[:, -1] = 0
    if clone_mask.any():
        x, y, box_width, box_height = cv2.boundingRect(clone_mask)
        centre = (x + box_width // 2, y + box_height // 2)
        filled = cv2.seamlessClone(completed, filled, clone_mask, centre, cv2.NORMAL_CLONE)
    return np.where(hole[..., None], filled, image)
