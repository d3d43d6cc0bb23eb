"""CRA / HiFill's training recipe (docs/architectures.md §5.9-5.10): hole and valid L1 on both stages plus WGAN-GP."""
from __future__ import annotations

import tensorflow as tf

from tfinpaint import losses
from tfinpaint.models.common import to_internal
from tfinpaint.training.recipe import ModelSet, Phase, Recipe

__all__ = ["make_losses", "make_recipe"]


def make_losses(bgr=False):
    """Official HiFill objective (docs/architectures.md §5.9): hole L1 (not area-normalised) + valid L1 normalised by
    the valid area,
    the coarse terms weighted by ``coarse``, WGAN with a gradient penalty over the whole image."""
    def generator_loss(models: ModelSet, batch, weights, training):
        image, mask = batch["image"], batch["mask"]
        out = models.generator(image, mask, training=training)
        real = to_internal(image, bgr)
        coarse_weight = weights.get("coarse", 1.2)
        hole_coarse, valid_coarse = losses.masked_l1(real, to_internal(out["coarse"], bgr), mask)
        hole_fine, valid_fine = losses.masked_l1(real, to_internal(out["raw"], bgr), mask)
        l1_hole = coarse_weight * hole_coarse + hole_fine
        # Guarded so that an all-hole batch (zero valid area, zero numerator) gives 0 rather than NaN.
        valid_fraction = tf.maximum(tf.reduce_mean(1.0 - tf.cast(mask, tf.float32)), 1e-6)
        ae_valid = (coarse_weight * valid_coarse + valid_fine) / valid_fraction
        total = weights.get("l1", 1.2) * l1_hole + weights.get("ae", 1.2) * ae_valid
        result = {"l1_hole": l1_hole, "ae_valid": ae_valid}
        gan_weight = weights.get("gan", 0.001)
        if gan_weight:
            d_fake = models.discriminators["critic"](to_internal(out["output"], bgr), training=training)
            result["gan"] = losses.wgan_generator_loss(d_fake)
            total = total + gan_weight * result["gan"]
        result["total"] = total
        return result

    def discriminator_loss(models: ModelSet, batch, weights, training):
        image, mask = batch["image"], batch["mask"]
        critic = models.discriminators["critic"]
        real = to_internal(image, bgr)
        fake = tf.stop_gradient(to_internal(models.generator(image, mask, training=training)["output"], bgr))
        d_real, d_fake = tf.split(critic(tf.concat([real, fake], axis=0), training=training), 2, axis=0)
        wgan = losses.wgan_discriminator_loss(d_real, d_fake)
        # The official penalty ignores its mask argument: the gradient norm is over the whole image.
        penalty = losses.gradient_penalty(critic, real, fake, mask=None, training=training)
        return {"total": wgan + weights.get("gp", 10.0) * penalty, "wgan": wgan, "gp": penalty}

    return generator_loss, discriminator_loss


def make_recipe(config=None) -> Recipe:
    """Spec 5.9-5.10: separate Adam 1e-4 (0.5, 0.9), three critic steps per generator step, batch 8 at 512.
    ``config``: the model's ``CRAConfig`` (its ``bgr`` and ``image_size``); None: the paper's."""
    bgr, image_size = (False, 512) if config is None else (config.bgr, config.image_size)
    generator_loss, discriminator_loss = make_losses(bgr)
    adam = {"class_name": "Adam", "learning_rate": 1e-4, "beta_1": 0.5, "beta_2": 0.9}
    return Recipe(
        generator_loss=generator_loss,
        discriminator_loss=discriminator_loss,
        loss_weights={"l1": 1.2, "ae": 1.2, "coarse": 1.2, "gan": 0.001, "gp": 10.0},
        g_optimizer=dict(adam),
        d_optimizer=dict(adam),
        phases=[Phase(name="adversarial", critic_steps=3)],
        image_size=image_size,
        batch_size=8,
    )
