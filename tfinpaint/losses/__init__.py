"""Losses of the five inpainting papers (masks: 1 = hole).

Reconstruction and adversarial losses are imported eagerly. The VGG16-based PConv losses live in
``tfinpaint.losses.perceptual`` and are imported on first access, so importing this package never pulls in
``keras.applications`` or builds a VGG model.
"""
import importlib

from tfinpaint.losses.adversarial import (
    bce_discriminator_loss,
    bce_generator_loss,
    gradient_penalty,
    hinge_discriminator_loss,
    hinge_generator_loss,
    wgan_discriminator_loss,
    wgan_generator_loss,
)
from tfinpaint.losses.reconstruction import (
    discounted_l1,
    l1,
    masked_l1,
    masked_mse,
    spatial_discount,
    total_variation_hole,
)

_PERCEPTUAL_NAMES = ("load_vgg16_features", "gram_matrix", "pconv_loss")

__all__ = [
    "l1",
    "masked_l1",
    "spatial_discount",
    "discounted_l1",
    "masked_mse",
    "total_variation_hole",
    "wgan_generator_loss",
    "wgan_discriminator_loss",
    "gradient_penalty",
    "hinge_generator_loss",
    "hinge_discriminator_loss",
    "bce_generator_loss",
    "bce_discriminator_loss",
    *_PERCEPTUAL_NAMES,
]


def __getattr__(name):
    if name in _PERCEPTUAL_NAMES:
        perceptual = importlib.import_module("tfinpaint.losses.perceptual")
        value = getattr(perceptual, name)
        globals()[name] = value  # later accesses skip this hook
        return value
    raise AttributeError(f"module 'tfinpaint.losses' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
