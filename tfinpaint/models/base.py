"""What every model of the zoo provides: a frozen config of its options (with named presets) and a generator
that follows one contract.

The generator contract (``InpaintingGenerator``):

* ``call(image, mask, training=None)``: image float [B, H, W, 3] RGB in [0, 1], mask [B, H, W, 1] with
  1 = hole; H and W multiples of ``size_factor``. Returns a dict of float32 tensors, at least ``"output"``
  (the composite: the input's known pixels bit-exact, the prediction in the holes) and ``"raw"`` (the
  prediction), both in [0, 1].
* ``config``: the frozen ``ModelConfig`` it was built from; ``size_factor`` is derived from it.
* What the inference pipeline (``tfinpaint.inference.pipeline``) needs, declared by the model: ``training_size``,
  ``working_size`` (the longest side at which a crop reaches the network; larger crops are downscaled to it, so
  holes arrive at about the scale the model was trained on) and ``default_hd_strategy`` ("original", "crop",
  "resize", or "cra" for CRA's contextual residual aggregation, which needs ``attention_cell``).
* Load-time options (memory knobs that change neither the weights nor the results), listed in the config
  class's ``LOAD_OPTIONS``: settable with ``set_load_options`` and never saved with the config.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import keras
import tensorflow as tf

HD_STRATEGIES = ("original", "crop", "resize", "cra")


class ModelConfig:
    """Base of each model's frozen dataclass of options: one field per option, validated in ``__post_init__``.

    ``PRESETS`` maps preset names to the fields they change from the defaults; "paper" is the defaults.
    """

    MODEL: ClassVar[str] = "model"
    PRESETS: ClassVar[dict] = {"paper": {}}
    # Load-time options of the model's generator (memory knobs that change neither weights nor results).
    LOAD_OPTIONS: ClassVar[tuple] = ()

    @classmethod
    def option_names(cls) -> tuple:
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def preset_names(cls) -> tuple:
        return tuple(cls.PRESETS)

    @classmethod
    def split_options(cls, options: dict | None) -> tuple:
        """(config options, load-time options) of ``options``; a one-line error names any other key."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(cls.option_names()) - set(cls.LOAD_OPTIONS))
        if unknown:
            raise ValueError(f"{cls.MODEL}: unknown option(s) {', '.join(unknown)}; valid options: "
                             f"{', '.join(cls.option_names())}; load-time options: "
                             f"{', '.join(cls.LOAD_OPTIONS) or 'none'}")
        return ({key: value for key, value in options.items() if key not in cls.LOAD_OPTIONS},
                {key: value for key, value in options.items() if key in cls.LOAD_OPTIONS})

    @classmethod
    def from_options(cls, options: dict | None = None, preset: str = "paper"):
        """The config of ``preset`` with ``options`` changed; one-line errors for unknown presets and options."""
        if preset not in cls.PRESETS:
            raise ValueError(f"{cls.MODEL}: unknown preset {preset!r}; valid presets: {', '.join(cls.PRESETS)}")
        options = dict(options or {})
        unknown = sorted(set(options) - set(cls.option_names()))
        if unknown:
            raise ValueError(f"{cls.MODEL}: unknown option(s) {', '.join(unknown)}; "
                             f"valid options: {', '.join(cls.option_names())}")
        return cls(**{**cls.PRESETS[preset], **options})

    def replace(self, **changes):
        return type(self).from_options({**self.to_options(), **changes})

    def to_options(self) -> dict:
        """The fields as JSON values (``model.json``, ``get_config``)."""
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(self).items()}

    @property
    def size_factor(self) -> int:
        """Input height and width must be multiples of this."""
        raise NotImplementedError

    def _set(self, name, value):
        """Normalises a field inside ``__post_init__`` (the dataclass is frozen)."""
        object.__setattr__(self, name, value)


def check_positive_int(owner, name, value, multiple=1, minimum=1) -> int:
    """``value`` as an int that is >= ``minimum`` and a multiple of ``multiple``, or a one-line ValueError."""
    if isinstance(value, bool) or int(value) != value or value < minimum or int(value) % multiple:
        what = f"a multiple of {multiple} >= {minimum}" if multiple > 1 else f"an integer >= {minimum}"
        raise ValueError(f"{owner}: `{name}` must be {what}, got {value!r}")
    return int(value)


def check_image_and_mask(owner, image, mask=None, size_factor=None, hint=""):
    """Static layout checks of a model's inputs, with one-line errors naming the model (``owner``) and the argument.

    image: [B, H, W, 3]; mask (when given): [B, H, W, 1] with the image's H and W; H and W multiples of
    ``size_factor`` (when given). Sides unknown at trace time (None) are not checked. ``hint`` ends the
    size-factor error (e.g. how to pad).
    """
    if image.shape.rank != 4 or image.shape[-1] != 3:
        raise ValueError(f"{owner}: `image` must be [B, H, W, 3] RGB, got shape {image.shape}")
    if mask is not None and (mask.shape.rank != 4 or mask.shape[-1] != 1):
        raise ValueError(f"{owner}: `mask` must be [B, H, W, 1] (1 = hole), got shape {mask.shape}")
    for axis, name in ((1, "height"), (2, "width")):
        side = image.shape[axis]
        if side is None:
            continue
        if size_factor and side % size_factor:
            raise ValueError(f"{owner}: image height and width must be multiples of {size_factor}, but {name} {side} "
                             f"is not a multiple of {size_factor} (shape {image.shape}){hint}")
        if mask is not None and mask.shape[axis] is not None and mask.shape[axis] != side:
            raise ValueError(f"{owner}: `image` and `mask` differ in {name}: {image.shape} vs {mask.shape}")


def composite(prediction, image, mask):
    """Known pixels from ``image``, hole pixels from ``prediction`` (mask: 1 = hole)."""
    mask = tf.cast(mask, prediction.dtype)
    image = tf.cast(image, prediction.dtype)
    return prediction * mask + image * (1.0 - mask)


class InpaintingGenerator(keras.Model):
    """Base class of the zoo's generators (see the module docstring for the contract).

    Subclasses set ``CONFIG`` (their ``ModelConfig`` class) and the inference declarations, and build their
    layers from ``self.config``. ``__init__`` takes a config (object or dict), or options as keywords
    (``cnum=8``), and load-time options (the config's ``LOAD_OPTIONS``) as keywords (applied when the subclass
    calls ``apply_initial_load_options`` at the end of its ``__init__``).
    """

    CONFIG: ClassVar[type] = ModelConfig
    default_hd_strategy: ClassVar[str] = "crop"
    # Side of the zero batch that creates the variables (at least the size factor).
    _BUILD_SIDE: ClassVar[int] = 0

    def __init__(self, config=None, **kwargs):
        options = {key: kwargs.pop(key) for key in list(kwargs) if key in self.CONFIG.option_names()}
        load_options = {key: kwargs.pop(key) for key in list(kwargs) if key in self.CONFIG.LOAD_OPTIONS}
        if isinstance(config, ModelConfig):
            config = config.replace(**options) if options else config
        else:
            config = self.CONFIG.from_options({**(config or {}), **options})
        super().__init__(**kwargs)
        self._model_config = config
        # Applied by the subclass once its layers exist (``apply_initial_load_options``).
        self._initial_load_options = tuple(load_options.items())

    def apply_initial_load_options(self):
        """Subclasses whose config has ``LOAD_OPTIONS`` call this at the end of ``__init__``."""
        self.set_load_options(**dict(self._initial_load_options))

    @property
    def config(self):
        """The frozen ``ModelConfig`` this generator was built from."""
        return self._model_config

    @property
    def size_factor(self) -> int:
        return self.config.size_factor

    @property
    def training_size(self) -> int:
        """Side of the square crops the model trains on by default."""
        return int(getattr(self.config, "image_size", 256))

    @property
    def working_size(self) -> int:
        """Twice the training crop: training holes are at most about half the crop, so a crop of a hole with its
        context at this size shows the network holes at about the scale it learnt (DeepFill and GLCIC: 512)."""
        return 2 * self.training_size

    def set_load_options(self, **options):
        """Sets load-time options (e.g. ``tile_pixels``); they take effect on the next trace of ``call``."""
        config_options, options = self.CONFIG.split_options(options)
        if config_options:
            raise ValueError(f"{self.CONFIG.MODEL}: {', '.join(sorted(config_options))} can only be set when building "
                             "the model (they are part of its config)")
        for key, value in options.items():
            if value is not None:
                setattr(self, key, value)

    def check_inputs(self, image, mask, hint=""):
        """One-line errors for a bad layout or sides that are not multiples of ``size_factor``."""
        check_image_and_mask(type(self).__name__, image, mask, self.size_factor, hint)

    @staticmethod
    def composite(prediction, image, mask):
        """float32 composite: known pixels are the caller's own values, bit for bit."""
        return composite(tf.cast(prediction, tf.float32), tf.cast(image, tf.float32), mask)

    def create_variables(self):
        """Creates the variables with one forward pass on a small zero batch (Keras cannot build a model whose
        ``call`` takes two tensors from recorded shapes)."""
        side = max(self.size_factor, self._BUILD_SIDE)
        self(tf.zeros([1, side, side, 3]), tf.zeros([1, side, side, 1]), training=False)

    def build_from_config(self, config):
        # Called by keras.models.load_model before the weights are restored.
        if config:
            self.create_variables()

    def get_config(self):
        # The config's fields at the top level, as Keras passes them back to ``__init__`` as keywords (the layout
        # of earlier releases, so their .keras files load; load-time options found there are applied, not saved).
        base = super().get_config()
        base.update(self.config.to_options())
        return base
