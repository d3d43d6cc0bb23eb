"""GLCIC's training recipe (paper §3.3): masked MSE, then the context discriminators, then both jointly."""
from __future__ import annotations

import tensorflow as tf

from tfinpaint.losses import bce_discriminator_loss, bce_generator_loss, masked_mse
from tfinpaint.training.recipe import Phase, Recipe

__all__ = ["generator_loss", "discriminator_loss", "make_recipe"]


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


def make_recipe(config=None, batch_size=96) -> Recipe:
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
        image_size=256 if config is None else config.image_size,
        batch_size=batch_size,
        override_aliases=("l1",),  # --__lambda_l1__ weights the masked MSE
    )
