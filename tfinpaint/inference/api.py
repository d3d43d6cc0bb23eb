"""Python inference API: ``tfinpaint.load(ckpt_dir)`` and ``tfinpaint.inpaint(image, mask, model=...)``.

Any image size works, and the known pixels of every output are the input's own bytes. Everything between the
uint8 photo and the uint8 result (padding, the high-resolution strategy, pasting the prediction into the holes) is
one TensorFlow graph, ``tfinpaint.inference.pipeline.InpaintingPipeline``, which the SavedModel export runs too.

High-resolution strategies (``hd_strategy``; each model declares its default and its working size):

* ``crop`` (GLCIC, DeepFill v1/v2, PConv): each group of holes is cut out with ``hd_crop_margin`` pixels of
  context; a crop larger than the model's working size is downscaled to it, so the holes reach the network at about
  the scale it was trained on, and the prediction is upscaled back into the hole pixels;
* ``resize``: the whole image downscaled to ``hd_resize_limit`` on its long side;
* ``original``: the whole image at full resolution (DeepFill's row tiling and chunked attention bound its memory);
* ``cra`` (CRA/HiFill): the network at its working size, the high-frequency residual aggregated at full resolution.

``crop`` and ``resize`` apply above ``hd_trigger_size`` (long side); smaller photos run ``original``.
"""
from __future__ import annotations

import dataclasses
import os
import warnings

import cv2
import numpy as np
import tensorflow as tf

from tfinpaint import imageio, models
from tfinpaint.checkpoints import read_model_config, restore_generator
from tfinpaint.inference.pipeline import STRATEGIES, HDSettings, InpaintingPipeline
from tfinpaint.models import registry


def _as_image(image) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        return imageio.read_image(image)
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(f"image must be H x W x 3 (got shape {array.shape})")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    array = array[:, :, :3]
    if array.dtype != np.uint8:
        array = imageio.to_uint8(array)
    return np.ascontiguousarray(array)


def _as_hole_mask(mask, shape, polarity: str = "hole", name: str = "mask", as_bool: bool = False) -> np.ndarray:
    """Mask as float32 [H, W] with 1 = hole (bool with ``as_bool``: a quarter of the memory for a 100 MP photo),
    resized (nearest, with a warning) to ``shape``."""
    from tfinpaint import masks

    if isinstance(mask, (str, os.PathLike)):
        hole = masks.read_mask(mask, size=shape, polarity=polarity)
        return hole > 0.5 if as_bool else hole
    array = np.asarray(mask)
    if array.ndim == 3:
        array = array.max(axis=2)
    if array.ndim != 2:
        raise ValueError(f"{name} must be H x W (got shape {array.shape})")
    if array.dtype == np.bool_:
        hole = array
    elif array.dtype == np.uint8 or array.max(initial=0) > 1:
        hole = array > 127
    else:
        hole = array > 0.5
    if polarity == "valid":
        hole = ~hole
    elif polarity != "hole":
        raise ValueError(f"mask polarity must be 'hole' or 'valid' (got {polarity!r})")
    if hole.shape != tuple(shape):
        warnings.warn(f"{name}: size {hole.shape[1]}x{hole.shape[0]} differs from the image "
                      f"{shape[1]}x{shape[0]}; resized with nearest neighbour", stacklevel=3)
        hole = cv2.resize(hole.view(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    return hole if as_bool else hole.astype(np.float32)


def hd_settings_for(generator, hd_strategy=None, hd_crop_margin=None, hd_resize_limit=None,
                    hd_trigger_size=None) -> HDSettings:
    """The generator's declared high-resolution defaults (its ``default_hd_strategy`` and ``working_size``; the
    margin a quarter of the working size, the resize limit and trigger twice it), with the given options instead."""
    working = int(generator.working_size)
    defaults = HDSettings(generator.default_hd_strategy, working_size=working, crop_margin=working // 4,
                          resize_limit=2 * working, trigger_size=2 * working)
    given = {"strategy": hd_strategy, "crop_margin": hd_crop_margin, "resize_limit": hd_resize_limit,
             "trigger_size": hd_trigger_size}
    return dataclasses.replace(defaults, **{key: value for key, value in given.items() if value is not None})


class Inpainter:
    """A generator wrapped for inference on single images of any size.

    ``inpainter(image, mask)`` returns the completed RGB ``uint8`` image; with ``return_steps=True`` it also
    returns the intermediate stages (dict of RGB ``uint8`` images: "masked" and "output" at the image's size,
    "coarse" and "flow" where the model has them, at the size the network saw in its first run).

    ``mask_polarity`` is how this inpainter reads the masks it is given (files and arrays alike) unless a call
    names its own: the polarity is applied exactly once, by the call that receives the user's mask. ``hd_*``:
    the high-resolution strategy and its settings (``hd_settings_for``); a call may name another strategy.
    """

    def __init__(self, generator, model_name: str, options: dict | None = None, mask_polarity: str = "hole",
                 hd_strategy: str | None = None, hd_crop_margin: int | None = None,
                 hd_resize_limit: int | None = None, hd_trigger_size: int | None = None):
        self.generator = generator
        self.model_name = model_name
        self.options = dict(options or {})
        # The generator's own declarations (tfinpaint.models.base.InpaintingGenerator).
        self.size_factor = int(generator.size_factor)
        self.attention_cell = getattr(generator, "attention_cell", None)
        self.hd_settings = hd_settings_for(generator, hd_strategy, hd_crop_margin, hd_resize_limit,
                                           hd_trigger_size)
        if self.hd_settings.strategy not in self.hd_strategies:
            raise ValueError(f"hd_strategy {self.hd_settings.strategy!r} is not available for {model_name} "
                             f"(choose one of {', '.join(self.hd_strategies)})")
        self.mask_polarity = mask_polarity
        self._pipelines = {}

    @property
    def hd_strategies(self) -> tuple:
        """The strategies this model can run (``cra`` needs CRA's attention)."""
        return STRATEGIES if self.attention_cell else tuple(name for name in STRATEGIES if name != "cra")

    def pipeline(self, hd_strategy: str | None = None) -> InpaintingPipeline:
        """The compiled pipeline of this inpainter's settings, or of another ``hd_strategy`` with the same ones."""
        settings = self.hd_settings if hd_strategy in (None, self.hd_settings.strategy) else \
            dataclasses.replace(self.hd_settings, strategy=hd_strategy)
        if settings.strategy not in self.hd_strategies:
            raise ValueError(f"hd_strategy {settings.strategy!r} is not available for {self.model_name} "
                             f"(choose one of {', '.join(self.hd_strategies)})")
        if settings not in self._pipelines:
            self._pipelines[settings] = InpaintingPipeline(self.generator, self.size_factor, settings,
                                                           attention_cell=self.attention_cell)
        return self._pipelines[settings]

    @property
    def traces(self) -> int:
        """Graphs compiled so far (one per strategy and set of stages, whatever the image sizes)."""
        return sum(pipeline.traces for pipeline in self._pipelines.values())

    def __call__(self, image, mask, return_steps: bool = False, mask_polarity: str | None = None,
                 hd_strategy: str | None = None):
        """``mask_polarity``: how to read ``mask`` ("hole": white / 1 = hole; "valid": white / 1 = known);
        ``None`` uses the polarity this inpainter was loaded with. ``hd_strategy``: this call's strategy."""
        image = _as_image(image)
        hole = _as_hole_mask(mask, image.shape[:2], mask_polarity or self.mask_polarity, as_bool=True)
        pipeline = self.pipeline(hd_strategy)
        if not hole.any():
            result = image.copy()
            return (result, {"masked": image.copy(), "output": result}) if return_steps else result
        stages = ("coarse", "flow") if return_steps else ()
        output, stage_values = pipeline(tf.constant(image), tf.constant(hole), stages)
        result = output.numpy()
        if not return_steps:
            return result
        steps = {"masked": _masked_view(image, hole)}
        for key, value in stage_values.items():
            value = value.numpy()
            if value.size:
                steps[key] = np.clip(np.rint(value * 255.0), 0, 255).astype(np.uint8)
        steps["output"] = result
        return result, steps


def _masked_view(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The input as the network sees it: holes painted white."""
    view = image.copy()
    view[hole > 0.5] = 255
    return view


PRECISIONS = ("float32", "bfloat16")


def build_generator(model_name, options: dict, precision: str = "float32"):
    """Builds the generator of ``model_name`` (a name, an alias or a ``"module:attribute"`` spec path; see
    ``tfinpaint.models.get``) with its variables, from config ``options`` and load-time options (such as
    ``tile_pixels``) mixed in one dict.

    precision "bfloat16" computes in bfloat16 (``mixed_bfloat16`` policy; variables stay float32, so the same
    checkpoints restore): lower peak memory on CPUs with bf16 support (DeepFill at 1024 x 1024: 1103 MB instead of
    about 1140 MB).
    Known pixels stay bit-exact either way (compositing is done on the uint8 input).
    """
    import keras

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    spec = models.get(model_name)
    config_options, load_options = registry.split_options(spec, options)
    model_config = spec.make_config(**config_options)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    try:
        generator = spec.build_generator(model_config)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    generator.set_load_options(**load_options)
    return generator


def load(ckpt_dir, model: str | None = None, mask_polarity: str = "hole", precision: str = "float32",
         hd_strategy: str | None = None, hd_crop_margin: int | None = None,
         hd_resize_limit: int | None = None, hd_trigger_size: int | None = None, **options) -> Inpainter:
    """Loads a reusable ``Inpainter`` from a checkpoint folder.

    The model type and its config are read from the folder's ``model.json``; ``model`` (and extra config
    ``options``) override them. Load-time options such as ``tile_pixels`` or ``attention_memory_budget_mb``
    go to the generator (a ``model.json`` of an older release that still stores them is read the same way).
    ``precision``: "float32" or "bfloat16" (see ``build_generator``). ``hd_*``: the high-resolution strategy and
    its settings (see ``Inpainter``).
    """
    config = {}
    if model is None or not options:
        try:
            config = read_model_config(ckpt_dir)
        except ValueError:
            if model is None:
                raise
    name = model or config["model"]
    build_options = dict(config.get("options", {})) if (model is None or model == config.get("model")) else {}
    build_options.update(options)
    generator = build_generator(name, build_options, precision)
    restore_generator(generator, ckpt_dir)
    return Inpainter(generator, name, generator.config.to_options(), mask_polarity=mask_polarity,
                     hd_strategy=hd_strategy,
                     hd_crop_margin=hd_crop_margin, hd_resize_limit=hd_resize_limit, hd_trigger_size=hd_trigger_size)


def inpaint(image, mask, model=None, mask_polarity: str | None = None, return_steps: bool = False, **kwargs):
    """Inpaints one image.

    image: H x W x 3 ``uint8`` RGB array (grayscale / RGBA / 16-bit accepted) or a file path.
    mask: H x W array (1 / True / >127 = hole) or a mask file path (white = hole; ``mask_polarity="valid"``
        reads white = known).
    model: an ``Inpainter`` (fastest for several images) or a checkpoint folder.
    mask_polarity: how to read ``mask``; ``None`` means the given ``Inpainter``'s own polarity ("hole" for a
        checkpoint folder). It is applied once, to ``mask`` as given.
    Returns the completed H x W x 3 ``uint8`` RGB image.
    """
    if model is None:
        raise ValueError("inpaint: pass model=<checkpoint folder> or model=tfinpaint.load(<checkpoint folder>)")
    if isinstance(model, Inpainter):
        return model(image, mask, return_steps=return_steps, mask_polarity=mask_polarity)
    inpainter = load(model, mask_polarity=mask_polarity or "hole", **kwargs)
    return inpainter(image, mask, return_steps=return_steps)
