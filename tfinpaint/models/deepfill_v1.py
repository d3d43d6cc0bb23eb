"""DeepFill v1: "Generative Image Inpainting with Contextual Attention" (Yu et al., CVPR 2018).

Spec: ``shared/spec/architectures.md`` §1, decisions in ``decisions.md``.

* ``DeepFillV1Generator``: coarse network + refinement network with a dilated branch and a contextual-attention
  branch (spec §1.3). Zero 'SAME' padding (official code default), ELU, no normalisation, both stages clipped
  to [-1, 1]. 3,601,542 trainable parameters at ``cnum=32``. Sides must be multiples of 8 (two stride-2 convs,
  then contextual attention matches on a further x1/2 grid).
* ``DeepFillV1Critic``: the WGAN-GP critics (spec §1.5): local (on the hole-centred H/2 x W/2 patch) and global
  (whole image), 7,072,770 trainable parameters together at ``dnum=64``.
* ``build`` / ``size_factor``: registry entry points. The recipe is the official one (spec §1.6-1.7), with the
  spatial discount measured to the nearest known pixel (decisions.md).

Internally the networks work in [-1, 1] (and BGR with ``bgr=True``, for official weights); the public API is
RGB in [0, 1]. The critics take images in that internal space, so the gradient penalty is measured on the same
scale as in the paper.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from tfinpaint.layers.contextual_attention import DEFAULT_MEMORY_BUDGET_MB, ContextualAttention
from tfinpaint.layers.row_tiling import Downsample, Local, Upsample
from tfinpaint.losses import gradient_penalty, l1, spatial_discount, wgan_discriminator_loss, wgan_generator_loss
from tfinpaint.models.common import (
    DEFAULT_TILE_PIXELS,
    check_image_and_mask,
    check_tile_pixels,
    composite,
    crop_patches,
    from_internal,
    hole_bbox_offsets,
    inference_tile_rows,
    map_full_resolution_end,
    to_internal,
    to_signed,
)
from tfinpaint.models.registry import ModelBundle
from tfinpaint.training.recipe import Phase, Recipe

__all__ = [
    "DeepFillV1Generator",
    "DeepFillV1Critic",
    "NearestUpsample2D",
    "build",
    "size_factor",
    "make_recipe",
]

SIZE_FACTOR = 8
_DILATIONS = (2, 4, 8, 16)


def _resize_nearest(x, size, align_corners):
    """Nearest resize; ``align_corners=True`` is neuralgym's ``resize`` (official DeepFill, spec §0.3.2)."""
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
class DeepFillV1Generator(keras.Model):
    """DeepFill v1 coarse-to-fine generator (spec §1.3).

    ``call(image, mask, training=None)``: image float [B, H, W, 3] RGB in [0, 1], mask [B, H, W, 1] with
    1 = hole; H and W multiples of 8. Returns float32 tensors in [0, 1]: ``"output"`` (composited),
    ``"raw"`` (refined prediction), ``"coarse"`` (stage-1 prediction) and ``"flow"`` (contextual-attention
    flow image at input resolution, visualisation only).

    cnum: base width (32 official). bgr: the networks see BGR (official weights were trained on cv2 images).
    align_corners: official neuralgym nearest resizes (x2 upsampling, mask downscale) for weight parity; the
        default pixel-repeat upsampling is the natural choice for training from scratch.
    attention_memory_budget_mb: passed to ``ContextualAttention`` (chunking of the score matrix).
    tile_pixels: at inference, the full-resolution ends (the convolutions down to 1/4 resolution and the decoders
        back up from it) run in bands of about this many full-resolution pixels, which bounds peak memory at high
        resolution with identical results (``tfinpaint.layers.row_tiling``); 0 turns it off. Training always
        runs untiled.
    """

    def __init__(self, cnum=32, bgr=False, align_corners=False,
                 attention_memory_budget_mb=DEFAULT_MEMORY_BUDGET_MB, tile_pixels=DEFAULT_TILE_PIXELS, **kwargs):
        # The wrapper itself runs in float32 so Keras does not cast the inputs down under a mixed policy (the
        # known pixels must come back bit-exact); the sub-networks follow the global policy.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if int(cnum) < 2:
            raise ValueError(f"DeepFillV1Generator: `cnum` must be >= 2, got {cnum}")
        self.cnum = c = int(cnum)
        self.bgr = bool(bgr)
        self.align_corners = bool(align_corners)
        self.attention_memory_budget_mb = float(attention_memory_budget_mb)
        self.tile_pixels = check_tile_pixels("DeepFillV1Generator", tile_pixels)

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
            return_flow=True, memory_budget_mb=self.attention_memory_budget_mb, name="contextual_attention",
        )
        self.attention_decoder = keras.Sequential(
            [_conv("pmconv9", 4 * c), _conv("pmconv10", 4 * c)], name="attention_decoder"
        )
        self.refine_decoder = keras.Sequential(decoder("all"), name="refine_decoder")

    def build(self, image_shape):
        del image_shape  # fully convolutional: the weights do not depend on the size
        c = self.cnum
        five_channels = (None, None, None, 5)  # [image, ones, mask]
        self.coarse.build(five_channels)
        self.hallucination.build(five_channels)
        self.attention_encoder.build(five_channels)
        self.attention_decoder.build((None, None, None, 4 * c))
        self.refine_decoder.build((None, None, None, 8 * c))

    def call(self, image, mask, training=None):
        image = tf.cast(image, tf.float32)
        mask = tf.cast(mask, tf.float32)
        check_image_and_mask("DeepFillV1Generator", image, mask, SIZE_FACTOR)
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
            "output": composite(raw, image, mask),
            "raw": raw,
            "coarse": from_internal(coarse, self.bgr),
            "flow": tf.stop_gradient(flow),
        }

    def get_config(self):
        config = super().get_config()
        config.update({
            "cnum": self.cnum,
            "bgr": self.bgr,
            "align_corners": self.align_corners,
            "attention_memory_budget_mb": self.attention_memory_budget_mb,
            "tile_pixels": self.tile_pixels,
        })
        return config


_CRITIC_KINDS = ("local", "global")


@keras.saving.register_keras_serializable(package="tfinpaint")
class DeepFillV1Critic(keras.Model):
    """WGAN-GP critic of DeepFill v1 (spec §1.5): 5x5 stride-2 'SAME' convs with LeakyReLU(0.2), then
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


# ---------------------------------------------------------------------------------------------------------
# Training recipe (spec §1.6-1.7)


def _local_window(mask, owner):
    """Offsets and size of the H/2 x W/2 window centred on each sample's hole bounding box."""
    height, width = mask.shape[1], mask.shape[2]
    if height is None or width is None:
        # tfinpaint.models.common.hole_bbox_offsets takes the window size as Python ints.
        raise ValueError(f"{owner}: the local patch needs a static image height and width, got {mask.shape}")
    size = (height // 2, width // 2)
    return hole_bbox_offsets(mask, *size), size


def make_losses(bgr=False):
    """The generator and critic losses; ``bgr`` must match the generator's (the critics see its space)."""

    def generator_loss(models, batch, weights, training):
        """``l1 * L1_local + ae * AE + gan * (global_gan * g_global + g_local)`` in [-1, 1] (official v1):

        L1_local = coarse_l1 * mean(|x - x1| D) + mean(|x - x2| D) on the local patch, D the spatial discount
        (gamma 0.9, distance to the nearest known pixel, measured in the whole image and then cropped);
        AE = [coarse_l1 * mean(|x - x1| (1 - M)) + mean(|x - x2| (1 - M))] / mean(1 - M);
        g = -mean(critic(completed)). The critics are skipped when ``gan`` is 0.
        """
        image, mask = batch["image"], batch["mask"]
        outputs = models.generator(image, mask, training=training)
        offsets, (patch_h, patch_w) = _local_window(mask, "deepfill_v1.generator_loss")

        def crop(tensor):
            return crop_patches(tensor, offsets, patch_h, patch_w)

        # L1 is blind to the channel order, so these terms use RGB; the critics get the internal order.
        real = to_signed(image)
        coarse = to_signed(outputs["coarse"])
        refined = to_signed(outputs["raw"])
        discount = crop(spatial_discount(mask, gamma=0.9))
        local_real = crop(real)
        l1_local = (weights["coarse_l1"] * l1(local_real, crop(coarse), weight=discount)
                    + l1(local_real, crop(refined), weight=discount))
        valid = 1.0 - tf.cast(mask, tf.float32)
        ae = tf.math.divide_no_nan(
            weights["coarse_l1"] * l1(real, coarse, weight=valid) + l1(real, refined, weight=valid),
            tf.reduce_mean(valid),
        )
        losses = {"l1": l1_local, "ae": ae}
        total = weights["l1"] * l1_local + weights["ae"] * ae
        if weights["gan"] != 0.0:
            completed = to_internal(outputs["output"], bgr)
            gan_local = wgan_generator_loss(models.discriminators["local"](crop(completed), training=training))
            gan_global = wgan_generator_loss(models.discriminators["global"](completed, training=training))
            losses.update(gan_local=gan_local, gan_global=gan_global)
            total = total + weights["gan"] * (weights["global_gan"] * gan_global + gan_local)
        losses["total"] = total
        return losses

    def discriminator_loss(models, batch, weights, training):
        """``d_local + d_global + gp * (gp_local + gp_global)``, d = mean(D(fake)) - mean(D(real)); the
        gradient penalty's norm runs over hole pixels only (the local critic uses the cropped mask)."""
        image, mask = batch["image"], batch["mask"]
        completed = tf.stop_gradient(to_internal(models.generator(image, mask, training=training)["output"], bgr))
        real = to_internal(image, bgr)
        offsets, (patch_h, patch_w) = _local_window(mask, "deepfill_v1.discriminator_loss")

        def crop(tensor):
            return crop_patches(tensor, offsets, patch_h, patch_w)

        local_critic = models.discriminators["local"]
        global_critic = models.discriminators["global"]
        local_real, local_fake, local_mask = crop(real), crop(completed), crop(tf.cast(mask, tf.float32))
        wgan_local = wgan_discriminator_loss(local_critic(local_real, training=training),
                                             local_critic(local_fake, training=training))
        wgan_global = wgan_discriminator_loss(global_critic(real, training=training),
                                              global_critic(completed, training=training))
        gp_local = gradient_penalty(local_critic, local_real, local_fake, mask=local_mask, training=training)
        gp_global = gradient_penalty(global_critic, real, completed, mask=mask, training=training)
        total = wgan_local + wgan_global + weights["gp"] * (gp_local + gp_global)
        return {
            "wgan_local": wgan_local,
            "wgan_global": wgan_global,
            "gp_local": gp_local,
            "gp_global": gp_global,
            "total": total,
        }

    return generator_loss, discriminator_loss


def make_recipe(bgr=False, image_size=256, batch_size=16):
    """Official v1 schedule: one phase, 5 critic steps per generator step, Adam 1e-4 (0.5, 0.9) for G and D."""
    generator_loss, discriminator_loss = make_losses(bgr)
    adam = {"class_name": "Adam", "learning_rate": 1e-4, "beta_1": 0.5, "beta_2": 0.9}
    return Recipe(
        generator_loss=generator_loss,
        discriminator_loss=discriminator_loss,
        # coarse_l1 multiplies the stage-1 terms inside l1 and ae (official COARSE_L1_ALPHA).
        loss_weights={"l1": 1.2, "ae": 1.2, "coarse_l1": 1.2, "gan": 0.001, "global_gan": 1.0, "gp": 10.0},
        g_optimizer=dict(adam),
        d_optimizer=dict(adam),
        phases=[Phase("wgan_gp", steps=None, train_generator=True, train_discriminator=True, critic_steps=5)],
        image_size=image_size,
        size_factor=SIZE_FACTOR,
        batch_size=batch_size,
    )


_OPTIONS = ("cnum", "dnum", "bgr", "align_corners", "attention_memory_budget_mb", "image_size", "tile_pixels")


def build(cnum=32, dnum=64, bgr=False, align_corners=False, attention_memory_budget_mb=DEFAULT_MEMORY_BUDGET_MB,
          image_size=256, tile_pixels=DEFAULT_TILE_PIXELS, **unknown):
    """Registry entry: ``(DeepFillV1Generator, {"local": critic, "global": critic}, recipe)``.

    image_size: training crop side (multiple of 32); it fixes the critics' Dense input sizes (the global critic
    works at image_size, the local one at image_size / 2).
    """
    if unknown:
        raise ValueError(
            f"deepfill_v1.build: unknown option(s) {sorted(unknown)}; valid options: {', '.join(_OPTIONS)}"
        )
    image_size = int(image_size)
    if image_size < 32 or image_size % 32:
        raise ValueError(f"deepfill_v1.build: `image_size` must be a positive multiple of 32, got {image_size}")
    generator = DeepFillV1Generator(cnum=cnum, bgr=bgr, align_corners=align_corners,
                                    attention_memory_budget_mb=attention_memory_budget_mb, tile_pixels=tile_pixels,
                                    name="deepfill_v1_generator")
    critics = {
        "local": DeepFillV1Critic("local", dnum=dnum, input_size=image_size // 2, name="deepfill_v1_local_critic"),
        "global": DeepFillV1Critic("global", dnum=dnum, input_size=image_size, name="deepfill_v1_global_critic"),
    }
    return ModelBundle(generator, critics, make_recipe(bool(bgr), image_size))


def size_factor(**options):
    """Sides must be multiples of 8: two stride-2 convs, then attention matches on a x1/2 grid."""
    del options
    return SIZE_FACTOR
