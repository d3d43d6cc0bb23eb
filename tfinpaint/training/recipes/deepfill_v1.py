"""DeepFill v1's training recipe (docs/architectures.md §1.6-1.7): spatially discounted L1 on the local patch, the
valid-pixel
autoencoder term and WGAN-GP with a local and a global critic."""
from __future__ import annotations

import tensorflow as tf

from tfinpaint.losses import gradient_penalty, l1, spatial_discount, wgan_discriminator_loss, wgan_generator_loss
from tfinpaint.models.common import crop_patches, hole_bbox_offsets, to_internal, to_signed
from tfinpaint.training.recipe import Phase, Recipe

__all__ = ["make_losses", "make_recipe"]


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


def make_recipe(config=None, batch_size=16) -> Recipe:
    """Official v1 schedule: one phase, 5 critic steps per generator step, Adam 1e-4 (0.5, 0.9) for G and D.
    ``config``: the model's ``DeepFillV1Config`` (its ``bgr`` and ``image_size``); None: the paper's."""
    bgr, image_size = (False, 256) if config is None else (config.bgr, config.image_size)
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
        batch_size=batch_size,
    )
