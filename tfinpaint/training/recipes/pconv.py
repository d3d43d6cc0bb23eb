"""Partial Convolutions' training recipe (docs/architectures.md §3.3, §3.4): the paper's valid / hole / perceptual /
style / TV
losses, trained with batch norm everywhere and then fine-tuned with the encoder's batch norm frozen."""
from __future__ import annotations

import tensorflow as tf

from tfinpaint.losses.perceptual import DEFAULT_PCONV_WEIGHTS, load_vgg16_features, pconv_loss
from tfinpaint.training.recipe import ModelSet, Phase, Recipe

__all__ = ["make_recipe"]

# Paper loss weights; a user "l1" weight sets L_valid's weight and keeps L_hole at this multiple of it.
_HOLE_TO_VALID = DEFAULT_PCONV_WEIGHTS["hole"] / DEFAULT_PCONV_WEIGHTS["valid"]


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


def make_recipe(config=None) -> Recipe:
    """Paper schedule: Adam lr 2e-4 with BN everywhere, then fine-tuning at 5e-5 with the encoder BN frozen.
    Batch 6 at 512 px. The phase lengths are nominal (the paper trains by wall-clock time; [NAO] runs 1e6
    iterations before fine-tuning); the trainer scales them to ``--max_steps``. ``config``: the model's
    ``PConvConfig`` (its ``image_size`` and VGG16 file); None: the paper's."""
    if config is None:
        vgg, image_size = _LazyVGG(None, "caffe"), 512
    else:
        vgg, image_size = _LazyVGG(config.vgg_weights, config.vgg_preprocessing), config.image_size

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
        batch_size=6,
        override_aliases=("l1",),  # --__lambda_l1__ sets L_valid's weight, L_hole keeps 6x it
    )
