"""Per-model training recipes: what one generic training loop needs to train any model of the zoo.

A recipe never contains a loop. The trainer (``tfinpaint.training.trainer``) runs, for every phase, at each
step: ``critic_steps`` discriminator updates (each on a fresh batch) and then one generator update, calling the
recipe's loss functions inside its ``tf.function`` steps.

Loss-function contract (both functions):

    fn(models: ModelSet, batch: dict, weights: dict[str, float], training: bool) -> dict[str, tf.Tensor]

* ``batch["image"]``: float32 [B, H, W, 3], RGB in [0, 1] (the library's public range).
* ``batch["mask"]``: float32 [B, H, W, 1], 1 = hole, 0 = known.
* ``weights``: the recipe's ``loss_weights`` merged with the user's and then the phase's overrides
  (``--__lambda_l1__`` -> "l1", ``--__lambda_perceptual__`` -> "perceptual", ``--__lambda_gan__`` -> "gan").
  Weights are plain Python floats, so a term whose weight is 0 can be skipped at trace time.
* Returns scalar float32 tensors: key ``"total"`` is what the optimizer minimises; the other keys are logged.
  Each value is the mean over the *local* (per-replica) batch; the trainer rescales for the global batch.
* The generator loss calls ``models.generator(batch["image"], batch["mask"], training=training)`` itself, so it
  decides which intermediate outputs it needs.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

LossFn = Callable[..., dict]


class ModelSet(NamedTuple):
    """The networks of one model: its generator and its named discriminators (possibly none)."""

    generator: Any
    discriminators: dict


@dataclasses.dataclass
class Phase:
    """One training phase (GLCIC has three, PConv two, the GAN models one).

    steps: nominal length of the phase in generator iterations; ``None`` means "until max_steps".
        The trainer scales nominal lengths down proportionally when ``--max_steps`` is smaller than their sum.
    train_generator / train_discriminator: which networks are updated in this phase.
    critic_steps: discriminator updates per generator update (each on a fresh batch and mask).
    loss_weights: overrides merged on top of ``Recipe.loss_weights`` during this phase.
    g_learning_rate / d_learning_rate: learning-rate overrides for this phase (``None`` keeps the current one).
    on_start: optional hook ``fn(models: ModelSet) -> None`` run when the phase starts (and again when a run is
        resumed inside it), e.g. freezing PConv's encoder batch norm.
    """

    name: str
    steps: int | None = None
    train_generator: bool = True
    train_discriminator: bool = True
    critic_steps: int = 1
    loss_weights: dict = dataclasses.field(default_factory=dict)
    g_learning_rate: float | None = None
    d_learning_rate: float | None = None
    on_start: Callable[[ModelSet], None] | None = None


@dataclasses.dataclass
class Recipe:
    """Everything model-specific about training.

    g_optimizer / d_optimizer: Keras optimizer configs such as
        ``{"class_name": "Adam", "learning_rate": 1e-4, "beta_1": 0.5, "beta_2": 0.9}``
        (built with ``tfinpaint.training.recipe.make_optimizer``). ``d_optimizer`` is ``None`` without discriminator.
    image_size: default training crop size (square side); the generator's ``size_factor`` constrains it.
    override_aliases: user override keys that the loss functions map onto their own weights (GLCIC reads
        ``--__lambda_l1__`` as the weight of its masked MSE), so the trainer does not call them unknown.
    """

    generator_loss: LossFn
    discriminator_loss: LossFn | None
    loss_weights: dict
    g_optimizer: dict
    d_optimizer: dict | None
    phases: list
    image_size: int = 256
    batch_size: int = 16
    override_aliases: tuple = ()

    def weights_for(self, phase: Phase, overrides: dict | None = None) -> dict:
        """Loss weights in force during ``phase``: recipe defaults < user overrides < phase overrides.

        A phase's weights are part of the method (GLCIC's completion phase switches the adversarial term off
        while the discriminator is untrained), so a user's ``--__lambda_gan__`` changes the weight of the
        phases that use the adversarial loss, never switches it on where the phase has it off.
        """
        merged = dict(self.loss_weights)
        for key, value in (overrides or {}).items():
            if value is not None:
                merged[key] = float(value)
        merged.update(phase.loss_weights)
        return merged


def make_optimizer(config: dict, learning_rate: float | None = None):
    """Builds a Keras optimizer from a recipe config, optionally overriding its learning rate."""
    import keras

    config = dict(config)
    class_name = config.pop("class_name")
    if learning_rate is not None:
        config["learning_rate"] = learning_rate
    return keras.optimizers.get({"class_name": class_name, "config": config})
