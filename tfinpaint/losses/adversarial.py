"""GAN losses: WGAN-GP (DeepFill v1, HiFill), hinge (SN-PatchGAN, DeepFill v2) and BCE on logits (GLCIC).

Scores and logits may be any float dtype and any shape ``[B, ...]``; every loss is computed in float32 and
returns a scalar float32 mean over the local batch and all score positions.
"""
from __future__ import annotations

import inspect

import tensorflow as tf

from tfinpaint.losses._inputs import as_float32

__all__ = [
    "wgan_generator_loss",
    "wgan_discriminator_loss",
    "gradient_penalty",
    "hinge_generator_loss",
    "hinge_discriminator_loss",
    "bce_generator_loss",
    "bce_discriminator_loss",
]


def _scores(value, function, argument):
    return as_float32(value, function, argument, floating_only=True)


def wgan_generator_loss(d_fake):
    """``-mean(D(fake))``."""
    return -tf.reduce_mean(_scores(d_fake, "wgan_generator_loss", "d_fake"))


def wgan_discriminator_loss(d_real, d_fake):
    """Critic loss ``mean(D(fake)) - mean(D(real))`` (without the gradient penalty)."""
    d_real = _scores(d_real, "wgan_discriminator_loss", "d_real")
    d_fake = _scores(d_fake, "wgan_discriminator_loss", "d_fake")
    return tf.reduce_mean(d_fake) - tf.reduce_mean(d_real)


def _accepts_training(critic):
    """Keras layers/models (and functions with a ``training`` or ``**kwargs`` parameter) get ``training``;
    plain callables such as ``lambda x: ...`` are called with the input only."""
    try:
        parameters = inspect.signature(critic).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "training" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def gradient_penalty(critic, real, fake, mask=None, training=True, eps=None):
    """WGAN-GP penalty ``mean((||grad_x D(x_hat) * mask||_2 - 1) ** 2)`` (docs/architectures.md §1.6 / §5.9).

    ``x_hat = real + eps * (fake - real)`` with ``eps ~ U[0, 1]`` drawn per sample (shape ``[B, 1, 1, 1]``)
    unless ``eps`` is given (any shape broadcasting against ``real``, e.g. for tests). The gradient is that of
    ``sum(D(x_hat))``, i.e. per-sample gradients for a critic that scores samples independently. With
    ``mask`` (1 = hole, broadcasting against ``real``; DeepFill v1) the norm runs over hole pixels only;
    ``mask=None`` takes the whole image (HiFill, whose code ignores the mask).

    The inner ``tf.GradientTape`` is recorded by any enclosing tape, so the result can be differentiated
    again with respect to the critic's weights (second-order gradients). Where the masked gradient is exactly
    zero (e.g. a sample without hole pixels) the norm is 0, the penalty 1 and its gradient 0 (no NaN from
    ``sqrt'(0)``).

    critic: a callable mapping ``[B, H, W, C]`` to scores ``[B, ...]``; receives ``training`` when it
    accepts it (Keras layers and models do).
    """
    real = _scores(real, "gradient_penalty", "real")
    fake = _scores(fake, "gradient_penalty", "fake")
    if real.shape.rank is not None and real.shape.rank < 2:
        raise ValueError(f"tfinpaint.losses.gradient_penalty: `real` must be batched [B, ...], got {real.shape}")
    try:
        tf.broadcast_static_shape(real.shape, fake.shape)
    except ValueError:
        raise ValueError(
            f"tfinpaint.losses.gradient_penalty: `real` {real.shape} and `fake` {fake.shape} differ"
        ) from None
    if not callable(critic):
        raise TypeError(f"tfinpaint.losses.gradient_penalty: `critic` must be callable, got {type(critic).__name__}")

    if eps is None:
        eps_shape = tf.concat([tf.shape(real)[:1], tf.ones([tf.rank(real) - 1], tf.int32)], axis=0)
        eps = tf.random.uniform(eps_shape, 0.0, 1.0, dtype=tf.float32)
    else:
        eps = _scores(eps, "gradient_penalty", "eps")
    interpolated = real + eps * (fake - real)

    pass_training = _accepts_training(critic)
    with tf.GradientTape() as tape:
        tape.watch(interpolated)
        scores = critic(interpolated, training=training) if pass_training else critic(interpolated)
        total = tf.reduce_sum(tf.cast(scores, tf.float32))
    gradients = tape.gradient(total, interpolated)
    if gradients is None:
        raise ValueError("tfinpaint.losses.gradient_penalty: the critic's output does not depend on its input")

    if mask is not None:
        mask = _scores(mask, "gradient_penalty", "mask")
        try:
            tf.broadcast_static_shape(gradients.shape, mask.shape)
        except ValueError:
            raise ValueError(
                f"tfinpaint.losses.gradient_penalty: `mask` {mask.shape} does not broadcast against `real` "
                f"{real.shape}"
            ) from None
        gradients = gradients * mask
    squared_norm = tf.reduce_sum(tf.square(gradients), axis=tf.range(1, tf.rank(gradients)))
    positive = squared_norm > 0.0
    norm = tf.where(positive, tf.sqrt(tf.where(positive, squared_norm, 1.0)), 0.0)
    return tf.reduce_mean(tf.square(norm - 1.0))


def hinge_generator_loss(d_fake):
    """SN-PatchGAN generator loss ``-mean(D(fake))`` over all output positions and the batch
    (docs/architectures.md §2.4)."""
    return -tf.reduce_mean(_scores(d_fake, "hinge_generator_loss", "d_fake"))


def hinge_discriminator_loss(d_real, d_fake):
    """Official SN-PatchGAN: ``0.5 * mean(relu(1 - D(real))) + 0.5 * mean(relu(1 + D(fake)))``
    (docs/architectures.md §2.4)."""
    d_real = _scores(d_real, "hinge_discriminator_loss", "d_real")
    d_fake = _scores(d_fake, "hinge_discriminator_loss", "d_fake")
    return 0.5 * tf.reduce_mean(tf.nn.relu(1.0 - d_real)) + 0.5 * tf.reduce_mean(tf.nn.relu(1.0 + d_fake))


def bce_generator_loss(fake_logits):
    """GLCIC generator GAN term: ``mean(BCE(sigmoid(fake_logits), 1))``, computed from logits for stability."""
    fake_logits = _scores(fake_logits, "bce_generator_loss", "fake_logits")
    return tf.reduce_mean(
        tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.ones_like(fake_logits), logits=fake_logits)
    )


def bce_discriminator_loss(real_logits, fake_logits):
    """GLCIC discriminator loss ``mean(BCE(real, 1)) + mean(BCE(fake, 0))`` on logits (docs/architectures.md §4.4;
    the paper's alpha and GLCIC-PyTorch's 1/2 are the recipe's weights, not part of this function)."""
    real_logits = _scores(real_logits, "bce_discriminator_loss", "real_logits")
    fake_logits = _scores(fake_logits, "bce_discriminator_loss", "fake_logits")
    real_term = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.ones_like(real_logits), logits=real_logits)
    fake_term = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.zeros_like(fake_logits), logits=fake_logits)
    return tf.reduce_mean(real_term) + tf.reduce_mean(fake_term)
