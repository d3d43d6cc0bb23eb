"""DeepFill v2's training recipe (docs/architectures.md §2.4, 2.6): L1 on both stages plus the SN-PatchGAN hinge
loss."""
from __future__ import annotations

import tensorflow as tf

from tfinpaint import losses
from tfinpaint.models.common import to_internal
from tfinpaint.training.recipe import ModelSet, Phase, Recipe

__all__ = ["make_losses", "make_recipe"]


def make_losses(bgr=False):
    """The official v2 objective: plain L1 over the whole image on both stages plus the hinge GAN
    (docs/architectures.md §2.4)."""
    def discriminator_input(image, mask):
        return tf.concat([to_internal(image, bgr), mask], axis=-1)

    def generator_loss(models: ModelSet, batch, weights, training):
        image, mask = batch["image"], batch["mask"]
        out = models.generator(image, mask, training=training)
        real = to_internal(image, bgr)
        l1_weight = weights.get("l1", 1.0)
        l1_coarse = losses.l1(real, to_internal(out["coarse"], bgr))
        l1_fine = losses.l1(real, to_internal(out["raw"], bgr))
        result = {"l1_coarse": l1_coarse, "l1_fine": l1_fine}
        total = l1_weight * (l1_coarse + l1_fine)
        gan_weight = weights.get("gan", 1.0)
        if gan_weight:
            d_fake = models.discriminators["sn_patch_gan"](discriminator_input(out["output"], mask), training=training)
            result["gan"] = losses.hinge_generator_loss(d_fake)
            total = total + gan_weight * result["gan"]
        result["total"] = total
        return result

    def discriminator_loss(models: ModelSet, batch, weights, training):
        del weights
        image, mask = batch["image"], batch["mask"]
        fake = tf.stop_gradient(models.generator(image, mask, training=training)["output"])
        # Real and fake go through one call, as in the official graph, so spectral norm makes one power iteration.
        both = tf.concat([discriminator_input(image, mask), discriminator_input(fake, mask)], axis=0)
        d_real, d_fake = tf.split(models.discriminators["sn_patch_gan"](both, training=training), 2, axis=0)
        hinge = losses.hinge_discriminator_loss(d_real, d_fake)
        return {"total": hinge, "hinge": hinge, "d_real": tf.reduce_mean(d_real), "d_fake": tf.reduce_mean(d_fake)}

    return generator_loss, discriminator_loss


def make_recipe(config=None) -> Recipe:
    """Spec 2.4 and 2.6: hinge loss 1:1 with L1, Adam 1e-4 (0.5, 0.999) for G and D, one D step per G step.
    ``config``: the model's ``DeepFillV2Config`` (its ``bgr`` and ``image_size``); None: the paper's."""
    bgr, image_size = (False, 256) if config is None else (config.bgr, config.image_size)
    generator_loss, discriminator_loss = make_losses(bgr)
    adam = {"class_name": "Adam", "learning_rate": 1e-4, "beta_1": 0.5, "beta_2": 0.999}
    return Recipe(
        generator_loss=generator_loss,
        discriminator_loss=discriminator_loss,
        loss_weights={"l1": 1.0, "gan": 1.0},
        g_optimizer=dict(adam),
        d_optimizer=dict(adam),
        phases=[Phase(name="adversarial", critic_steps=1)],
        image_size=image_size,
        batch_size=16,
    )
