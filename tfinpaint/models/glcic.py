"""GLCIC: "Globally and Locally Consistent Image Completion" (Iizuka, Simo-Serra, Ishikawa, SIGGRAPH 2017).

Spec: ``shared/spec/architectures.md`` §4, decisions in ``decisions.md``.

* ``GLCICGenerator``: the completion network (paper Table 1), conv -> BatchNorm -> ReLU on every layer but the
  last (BN before ReLU, decisions.md), sigmoid output in [0, 1]. 6,072,131 trainable parameters at ``cnum=64``.
  Input sides must be multiples of 4.
* ``GLCICDiscriminator``: the global and local context discriminators joined by the concatenation FC
  (paper Table 2), 45,063,681 trainable parameters at ``dnum=64``. It returns **logits**: the paper's final
  sigmoid is folded into the BCE losses (``tfinpaint.losses.bce_*``) for numerical stability.
* ``build`` / ``size_factor``: the registry entry points; the recipe trains in the paper's three phases.
* ``postprocess``: the official optional Telea + Poisson-blending clean-up (spec §4.6).
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfinpaint.losses import bce_discriminator_loss, bce_generator_loss, masked_mse
from tfinpaint.models.common import check_image_and_mask, composite, crop_patches, hole_bbox_offsets
from tfinpaint.models.registry import ModelBundle
from tfinpaint.training.recipe import Phase, Recipe

__all__ = [
    "DEFAULT_MEAN",
    "GLCICGenerator",
    "GLCICDiscriminator",
    "local_patch",
    "build",
    "size_factor",
    "generator_loss",
    "discriminator_loss",
    "postprocess",
]

SIZE_FACTOR = 4
# The official model stores its training set's per-channel mean, which the paper does not publish; the
# ImageNet RGB mean is the usual stand-in for natural photos. Set `mean` to your data set's mean for training.
DEFAULT_MEAN = (0.485, 0.456, 0.406)
# Torch7 BatchNorm defaults (the official model is Torch7): running average weight 0.1, epsilon 1e-5.
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


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
class GLCICGenerator(keras.Model):
    """GLCIC completion network (spec §4.2).

    ``call(image, mask, training=None)``: image float [B, H, W, 3] RGB in [0, 1], mask [B, H, W, 1] with
    1 = hole; H and W multiples of 4. The network sees ``concat[(image - mean) * (1 - mask), mask]`` (holes
    filled with the mean colour) and returns ``{"output": composited, "raw": network prediction}``, float32
    in [0, 1].

    cnum: base width (64 in the paper). mean: per-channel mean of the training images in [0, 1], stored in the
        non-trainable weight ``mean`` (so it travels with checkpoints and ``.keras`` files).
    """

    def __init__(self, cnum=64, mean=DEFAULT_MEAN, **kwargs):
        # The wrapper itself runs in float32 so Keras does not cast the inputs down under a mixed policy (the
        # known pixels must come back bit-exact); the sub-networks follow the global policy.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if int(cnum) < 2:
            raise ValueError(f"GLCICGenerator: `cnum` must be >= 2, got {cnum}")
        mean = [float(value) for value in np.asarray(mean, dtype=np.float64).reshape(-1)]
        if len(mean) != 3:
            raise ValueError(f"GLCICGenerator: `mean` must have 3 values (R, G, B), got {len(mean)}")
        self.cnum = int(cnum)
        self.initial_mean = mean
        c = self.cnum
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
            initializer=keras.initializers.Constant(self.initial_mean),
            trainable=False,
        )
        self.body.build((None, None, None, 4))

    def call(self, image, mask, training=None):
        image = tf.cast(image, tf.float32)
        mask = tf.cast(mask, tf.float32)
        check_image_and_mask("GLCICGenerator", image, mask, SIZE_FACTOR)
        centred = (image - tf.cast(self.mean, tf.float32)) * (1.0 - mask)
        net_input = tf.concat([centred, mask], axis=-1)
        raw = tf.cast(tf.sigmoid(self.body(net_input, training=training)), tf.float32)
        return {"output": composite(raw, image, mask), "raw": raw}

    def get_config(self):
        config = super().get_config()
        config.update({"cnum": self.cnum, "mean": list(self.initial_mean)})
        return config


@keras.saving.register_keras_serializable(package="tfinpaint")
class GLCICDiscriminator(keras.Model):
    """Global + local context discriminators with the concatenation FC (spec §4.3); returns logits [B, 1].

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


# ---------------------------------------------------------------------------------------------------------
# Training recipe (spec §4.4)


def _reconstruction_weight(weights):
    # The trainer maps --__lambda_l1__ to "l1"; GLCIC's reconstruction term is its masked MSE, so a user "l1"
    # weight scales that term.
    return weights.get("l1", weights["mse"])


def generator_loss(models, batch, weights, training):
    """``mse * masked_mse(raw, image, mask) + gan * BCE(D(completed), real)`` (paper: MSE + alpha * GAN).

    The adversarial term (and the discriminator forward pass) is skipped when its weight is 0 (phase 1).
    """
    image, mask = batch["image"], batch["mask"]
    outputs = models.generator(image, mask, training=training)
    mse = masked_mse(outputs["raw"], image, mask)
    losses = {"mse": mse}
    total = _reconstruction_weight(weights) * mse
    if weights["gan"] != 0.0:
        logits = models.discriminators["context"](outputs["output"], mask, training=training)
        gan = bce_generator_loss(logits)
        losses["gan"] = gan
        total = total + weights["gan"] * gan
    losses["total"] = total
    return losses


def discriminator_loss(models, batch, weights, training):
    """``gan * (BCE(D(real), 1) + BCE(D(completed), 0))``: the paper's objective maximised over D, whose
    alpha also scales the discriminator side. Real and completed images share the mask that picks the local
    patch (the paper draws a separate random M_d for the real patch; the discriminator sees only the patch,
    so its location carries no signal either way)."""
    image, mask = batch["image"], batch["mask"]
    # `training` also for the generator: its BatchNorm then produces the same fakes the generator step sees.
    completed = tf.stop_gradient(models.generator(image, mask, training=training)["output"])
    discriminator = models.discriminators["context"]
    real_logits = discriminator(image, mask, training=training)
    fake_logits = discriminator(completed, mask, training=training)
    bce = bce_discriminator_loss(real_logits, fake_logits)
    return {"bce": bce, "total": weights["gan"] * bce}


def make_recipe(image_size=256, batch_size=96):
    """Paper schedule: completion network alone with MSE (T_C = 90k), discriminators alone (T_D = 10k), then
    joint training to 500k iterations; ADADELTA (lr 1.0, rho 0.9 = Torch7 default, eps 1e-6), batch 96."""
    adadelta = {"class_name": "Adadelta", "learning_rate": 1.0, "rho": 0.9, "epsilon": 1e-6}
    return Recipe(
        generator_loss=generator_loss,
        discriminator_loss=discriminator_loss,
        loss_weights={"mse": 1.0, "gan": 0.0004},
        g_optimizer=dict(adadelta),
        d_optimizer=dict(adadelta),
        phases=[
            Phase("completion", steps=90_000, train_generator=True, train_discriminator=False,
                  loss_weights={"gan": 0.0}),
            Phase("discriminator", steps=10_000, train_generator=False, train_discriminator=True),
            Phase("joint", steps=400_000, train_generator=True, train_discriminator=True, critic_steps=1),
        ],
        image_size=image_size,
        size_factor=SIZE_FACTOR,
        batch_size=batch_size,
        override_aliases=("l1",),  # --__lambda_l1__ weights the masked MSE
    )


_OPTIONS = ("cnum", "dnum", "image_size", "mean")


def build(cnum=64, dnum=64, image_size=256, mean=DEFAULT_MEAN, **unknown):
    """Registry entry: ``(GLCICGenerator, {"context": GLCICDiscriminator}, recipe)``.

    image_size: training crop side (multiple of 64); it fixes the discriminator's FC input size.
    """
    if unknown:
        raise ValueError(f"glcic.build: unknown option(s) {sorted(unknown)}; valid options: {', '.join(_OPTIONS)}")
    generator = GLCICGenerator(cnum=cnum, mean=mean, name="glcic_generator")
    discriminator = GLCICDiscriminator(dnum=dnum, image_size=image_size, name="glcic_discriminator")
    return ModelBundle(generator, {"context": discriminator}, make_recipe(image_size=int(image_size)))


def size_factor(**options):
    """Sides must be multiples of 4 (two stride-2 convs, two x2 deconvs)."""
    del options
    return SIZE_FACTOR


# ---------------------------------------------------------------------------------------------------------
# Optional post-processing (official `inpaint.lua --postproc`, spec §4.6)


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
        raise ValueError(f"glcic.postprocess: `mask` must be [H, W] matching the image {image.shape[:2]}, got {hole.shape}")
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
