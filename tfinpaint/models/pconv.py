"""Partial Convolutions: "Image Inpainting for Irregular Holes Using Partial Convolutions" (Liu et al., ECCV 2018).

Spec: ``shared/spec/architectures.md`` §3, decisions in ``decisions.md``.

* ``PConvUNet``: the paper's U-Net of partial convolutions (512 input, 8 stride-2 levels down, 8 up).
  32,865,236 trainable parameters at ``levels=8, cnum=64`` (biases on every layer) plus 10,880 non-trainable
  batch-norm statistics. Input sides must be multiples of ``2 ** levels``.
* Output ranges: ``"raw"`` is the network's linear output clipped to [0, 1], ``"output"`` composites it with the
  known pixels. The unclipped prediction (what the paper's losses see, so that out-of-range pixels still get
  gradients) is returned under ``"linear"`` only when the call passes ``return_linear=True``.
* ``build`` / ``size_factor``: the registry entry points. No discriminator; the VGG16 losses of
  ``tfinpaint.losses.perceptual`` need a local VGG16 weights file (option ``vgg_weights``), read only when a
  loss is first needed, so building the model for inference never needs it.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from tfinpaint.layers.partial_conv import PConv2D
from tfinpaint.losses.perceptual import DEFAULT_PCONV_WEIGHTS, load_vgg16_features, pconv_loss
from tfinpaint.models.common import check_image_and_mask, composite
from tfinpaint.models.registry import ModelBundle
from tfinpaint.training.recipe import ModelSet, Phase, Recipe

__all__ = ["PConvUNet", "build", "size_factor", "make_recipe", "MAX_LEVELS"]

MAX_LEVELS = 8
# Paper table (spec §3.2): kernel size and width multiple of each encoder level, shallowest first.
_ENCODER_KERNELS = (7, 5, 5, 3, 3, 3, 3, 3)
_ENCODER_WIDTHS = (1, 2, 4, 8, 8, 8, 8, 8)
# PyTorch BatchNorm2d defaults (all PConv implementations are PyTorch): running-average weight 0.1, eps 1e-5.
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5
_DECODER_LEAK = 0.2
# Paper loss weights; a user "l1" weight sets L_valid's weight and keeps L_hole at this multiple of it.
_HOLE_TO_VALID = DEFAULT_PCONV_WEIGHTS["hole"] / DEFAULT_PCONV_WEIGHTS["valid"]


def _check_levels(levels, owner):
    if int(levels) != levels or not 1 <= int(levels) <= MAX_LEVELS:
        raise ValueError(f"{owner}: `levels` must be an integer in 1..{MAX_LEVELS}, got {levels!r}")
    return int(levels)


def _upsample_x2(x):
    """Nearest-neighbour x2 (each pixel repeated into a 2x2 block), for features and masks alike.

    One broadcast + reshape: cheaper to trace and run than two ``tf.repeat`` calls."""
    shape = tf.shape(x)
    channels = x.shape[-1] if x.shape[-1] is not None else shape[3]
    blocks = tf.broadcast_to(x[:, :, None, :, None, :], [shape[0], shape[1], 2, shape[2], 2, channels])
    return tf.reshape(blocks, [shape[0], 2 * shape[1], 2 * shape[2], channels])


@keras.saving.register_keras_serializable(package="tfinpaint")
class PConvUNet(keras.Model):
    """PConv U-Net (spec §3.2).

    Encoder level i: PConv (stride 2) -> BN (not on level 1) -> ReLU. Decoder: nearest x2 upsampling of the
    features and of the mask, channel concat ``[upsampled, skip]`` for both (the [NAO] order), PConv (stride 1)
    -> BN -> LeakyReLU(0.2); the last layer concatenates the input image and its mask and has neither BN nor
    activation. Symmetric zero padding everywhere (PConv2D).

    ``call(image, mask, training=None, return_linear=False)``: image [B, H, W, 3] RGB in [0, 1], mask
    [B, H, W, 1] with 1 = hole; H and W multiples of ``2 ** levels``. Internally the mask becomes NVIDIA's
    1 = valid, repeated over the 3 image channels. Returns float32 ``{"output", "raw"}`` (+ ``"linear"``).

    levels: U-Net depth (8 in the paper at 512 px; 7 is the common 256-px variant); cnum: base width (64).
    """

    def __init__(self, levels=MAX_LEVELS, cnum=64, **kwargs):
        # The wrapper runs in float32 so Keras does not cast the image down under a mixed policy (known pixels
        # must come back bit-exact); the layers inside follow the global policy.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.levels = _check_levels(levels, "PConvUNet")
        if int(cnum) != cnum or int(cnum) < 1:
            raise ValueError(f"PConvUNet: `cnum` must be a positive integer, got {cnum!r}")
        self.cnum = int(cnum)
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

    def freeze_encoder_batchnorm(self):
        """Fine-tuning stage of the paper: encoder BN layers stop learning and use their moving statistics
        (``trainable=False`` in Keras does both). Decoder BN layers keep training. Retrace any compiled training
        step afterwards."""
        for norm in self.encoder_norms:
            norm.trainable = False

    def call(self, image, mask, training=None, return_linear=False):
        image = tf.cast(tf.convert_to_tensor(image), tf.float32)
        mask = tf.cast(tf.convert_to_tensor(mask), tf.float32)
        check_image_and_mask("PConvUNet", image, mask, 2**self.levels)
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
        outputs = {"output": composite(raw, image, mask), "raw": raw}
        if return_linear:
            outputs["linear"] = linear
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update({"levels": self.levels, "cnum": self.cnum})
        return config


# ---------------------------------------------------------------------------------------------------------
# Training recipe (spec §3.3, §3.4)


class _LazyVGG:
    """Loads the VGG16 feature model once, when a loss first needs it (or when a training phase starts)."""

    def __init__(self, weights_path, preprocessing):
        self.weights_path = weights_path
        self.preprocessing = preprocessing
        self.model = None

    @tf.autograph.experimental.do_not_convert  # plain Python file loading, also when reached inside a trace
    def get(self):
        if self.model is None:
            # Build and read the file eagerly even when first reached while tracing a tf.function.
            with tf.init_scope():
                self.model = load_vgg16_features(self.weights_path, preprocessing=self.preprocessing)
        return self.model

    def preload(self):
        """Loads eagerly at phase start (outside any replica context); a missing file is reported by the loss
        only if the perceptual or style term is actually used."""
        try:
            self.get()
        except FileNotFoundError:
            pass


def _pconv_weights(weights):
    """Trainer weights -> ``pconv_loss`` weights. The generic "l1" override sets L_valid's weight and L_hole's
    to 6x it; "perceptual" is PConv's own key; "gan" has no meaning here (no discriminator)."""
    mapped = {key: weights[key] for key in DEFAULT_PCONV_WEIGHTS if key in weights}
    unknown = sorted(set(weights) - set(DEFAULT_PCONV_WEIGHTS) - {"l1", "gan"})
    if unknown:
        raise ValueError(f"pconv: unknown loss weight(s) {unknown}; valid: {sorted(DEFAULT_PCONV_WEIGHTS)} and l1")
    if weights.get("l1") is not None:
        mapped["valid"] = weights["l1"]
        mapped["hole"] = _HOLE_TO_VALID * weights["l1"]
    return mapped


def make_recipe(vgg_weights=None, vgg_preprocessing="caffe", image_size=512, levels=MAX_LEVELS):
    """Paper schedule: Adam lr 2e-4 with BN everywhere, then fine-tuning at 5e-5 with the encoder BN frozen.
    Batch 6 at 512 px. The phase lengths are nominal (the paper trains by wall-clock time; [NAO] runs 1e6
    iterations before fine-tuning); the trainer scales them to ``--max_steps``."""
    vgg = _LazyVGG(vgg_weights, vgg_preprocessing)

    def generator_loss(models, batch, weights, training):
        image, mask = batch["image"], batch["mask"]
        outputs = models.generator(image, mask, training=training, return_linear=True)
        loss_weights = _pconv_weights(weights)
        merged = {**DEFAULT_PCONV_WEIGHTS, **loss_weights}
        needs_vgg = merged["perceptual"] != 0 or merged["style"] != 0
        return pconv_loss(outputs["linear"], image, mask, vgg.get() if needs_vgg else None, loss_weights)

    def start_initial(models: ModelSet):
        vgg.preload()

    def start_finetune(models: ModelSet):
        models.generator.freeze_encoder_batchnorm()
        vgg.preload()

    return Recipe(
        generator_loss=generator_loss,
        discriminator_loss=None,
        loss_weights=dict(DEFAULT_PCONV_WEIGHTS),
        g_optimizer={"class_name": "Adam", "learning_rate": 2e-4},
        d_optimizer=None,
        phases=[
            Phase("initial", steps=1_000_000, train_discriminator=False, g_learning_rate=2e-4,
                  on_start=start_initial),
            Phase("finetune", steps=500_000, train_discriminator=False, g_learning_rate=5e-5,
                  on_start=start_finetune),
        ],
        image_size=image_size,
        size_factor=size_factor(levels=levels),
        batch_size=6,
        override_aliases=("l1",),  # --__lambda_l1__ sets L_valid's weight, L_hole keeps 6x it
    )


_OPTIONS = ("levels", "cnum", "image_size", "vgg_weights", "vgg_preprocessing")


def build(levels=MAX_LEVELS, cnum=64, image_size=512, vgg_weights=None, vgg_preprocessing="caffe", **unknown):
    """Registry entry: ``(PConvUNet, {}, recipe)``; the generator's weights are created (no forward pass).

    vgg_weights: local Keras VGG16 include_top=False weights file for the perceptual/style losses (default: the
        Keras cache file); read only when the loss first needs it. vgg_preprocessing: "caffe" for Keras' VGG16
        weights, "torch" for weights converted from torchvision (see ``load_vgg16_features``).
    """
    if unknown:
        raise ValueError(f"pconv.build: unknown option(s) {sorted(unknown)}; valid options: {', '.join(_OPTIONS)}")
    levels = _check_levels(levels, "pconv.build")
    factor = size_factor(levels=levels)
    if int(image_size) != image_size or image_size % factor:
        raise ValueError(f"pconv.build: image_size must be a multiple of {factor}, got {image_size!r}")
    if vgg_preprocessing not in ("caffe", "torch"):
        raise ValueError(f"pconv.build: vgg_preprocessing must be 'caffe' or 'torch', got {vgg_preprocessing!r}")
    generator = PConvUNet(levels=levels, cnum=cnum, name="pconv_unet")
    generator.build((None, None, None, 3))
    recipe = make_recipe(vgg_weights=vgg_weights, vgg_preprocessing=vgg_preprocessing, image_size=int(image_size),
                         levels=levels)
    return ModelBundle(generator, {}, recipe)


def size_factor(levels=MAX_LEVELS, **options):
    """Sides must be multiples of 2 ** levels (256 for the paper's 8 stride-2 levels)."""
    del options
    return 2 ** _check_levels(levels, "pconv.size_factor")
