"""Python inference API: ``tfinpaint.load(ckpt_dir)`` and ``tfinpaint.inpaint(image, mask, model=...)``.

Any image size works. The image is reflect-padded to the model's size multiple and cropped back, and the
known pixels of every output are bit-exact copies of the input (``out = pred * hole + image * (1 - hole)`` at
the input's own resolution).

Large images: each generator declares its ``working_size`` (``max_pixels`` defaults to its square) and its
``default_hd_strategy`` (``tfinpaint.models.base``), so that no model runs out of memory on a 4K photo:

* "crop" (GLCIC and PConv up to 1024 x 1024 pixels, DeepFill v1/v2 up to 2048 x 2048, whose contextual
  attention processes foreground positions in chunks): the whole image up to ``max_pixels``; beyond, the region
  around the holes' bounding box (with as much context around it again), downscaled so that it holds at most
  ``max_pixels``; the prediction is upscaled back and pasted into the hole pixels only.
* "cra" (CRA/HiFill): the network at its working size (512) on the long side plus the high-frequency residual
  at full resolution (contextual residual aggregation, the generator's ``inpaint_high_res``), any aspect ratio.
"""
from __future__ import annotations

import os
import warnings
from typing import Optional

import cv2
import numpy as np
import tensorflow as tf

from tfinpaint import imageio, models
from tfinpaint.checkpoints import read_model_config, restore_generator
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


def _as_hole_mask(mask, shape, polarity: str = "hole", name: str = "mask") -> np.ndarray:
    """Mask as float32 [H, W] with 1 = hole, resized (nearest, with a warning) to ``shape``."""
    from tfinpaint import masks

    if isinstance(mask, (str, os.PathLike)):
        return masks.read_mask(mask, size=shape, polarity=polarity)
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
    hole = hole.astype(np.float32)
    if hole.shape != tuple(shape):
        warnings.warn(f"{name}: size {hole.shape[1]}x{hole.shape[0]} differs from the image "
                      f"{shape[1]}x{shape[0]}; resized with nearest neighbour")
        hole = cv2.resize(hole, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return hole


def _pad_to_multiple(array: np.ndarray, factor: int) -> np.ndarray:
    height, width = array.shape[:2]
    pad_h = (-height) % factor
    pad_w = (-width) % factor
    if not pad_h and not pad_w:
        return array
    pads = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (array.ndim - 2)
    # Reflection needs at least two pixels; a 1-pixel side is repeated instead.
    mode = "reflect" if min(height, width) > 1 else "symmetric"
    return np.pad(array, pads, mode=mode)


def _hole_region(hole: np.ndarray, context: float = 1.0):
    """Bounding box of the holes grown by ``context`` times its size on every side, clipped to the image."""
    rows = np.flatnonzero(hole.any(axis=1))
    cols = np.flatnonzero(hole.any(axis=0))
    top, bottom = rows[0], rows[-1] + 1
    left, right = cols[0], cols[-1] + 1
    grow_y = int(np.ceil((bottom - top) * context)) + 8
    grow_x = int(np.ceil((right - left) * context)) + 8
    height, width = hole.shape
    return (max(0, top - grow_y), min(height, bottom + grow_y), max(0, left - grow_x), min(width, right + grow_x))


# Network outputs an Inpainter can return ("output" is the network's own composite; "raw" is what gets pasted).
STAGES = ("output", "raw", "coarse", "flow")


class Inpainter:
    """A generator wrapped for inference on single images of any size.

    ``inpainter(image, mask)`` returns the completed RGB ``uint8`` image; with ``return_steps=True`` it also
    returns the intermediate stages (dict of RGB ``uint8`` images at the size the network saw).

    ``mask_polarity`` is how this inpainter reads the masks it is given (files and arrays alike) unless a call
    names its own: the polarity is applied exactly once, by the call that receives the user's mask.
    """

    def __init__(self, generator, model_name: str, options: Optional[dict] = None,
                 max_pixels: Optional[int] = None, mask_polarity: str = "hole"):
        self.generator = generator
        self.model_name = model_name
        self.options = dict(options or {})
        # The generator's own declarations (tfinpaint.models.base.InpaintingGenerator).
        self.size_factor = int(generator.size_factor)
        self.working_size = int(generator.working_size)
        self.hd_strategy = generator.default_hd_strategy
        self.max_pixels = int(max_pixels or self.working_size ** 2)
        self.mask_polarity = mask_polarity
        self._runs = {}  # one compiled graph per set of returned stages

    def _compiled(self, stages):
        if stages not in self._runs:
            def forward(image, mask):
                outputs = self.generator(image, mask, training=False)
                return {key: tf.cast(value, tf.float32) for key, value in outputs.items() if key in stages}

            self._runs[stages] = tf.function(forward, input_signature=[
                tf.TensorSpec([1, None, None, 3], tf.float32), tf.TensorSpec([1, None, None, 1], tf.float32)])
        return self._runs[stages]

    def run_network(self, image: np.ndarray, hole: np.ndarray, stages=STAGES) -> dict:
        """Runs the network on an image whose size may be anything: reflect-pads to the size factor and
        crops every stage back. Returns float32 [H, W, 3] ``stages`` (those the model has) in [0, 1]; asking for
        "raw" alone keeps the other full-resolution stages out of memory."""
        height, width = hole.shape
        padded_image = _pad_to_multiple(image, self.size_factor).astype(np.float32) / 255.0
        padded_hole = _pad_to_multiple(hole, self.size_factor)
        run = self._compiled(tuple(stages))
        outputs = run(tf.constant(padded_image[None]), tf.constant(padded_hole[None, :, :, None]))
        return {key: np.clip(value.numpy()[0, :height, :width], 0.0, 1.0) for key, value in outputs.items()}

    def __call__(self, image, mask, return_steps: bool = False, mask_polarity: Optional[str] = None):
        """``mask_polarity``: how to read ``mask`` ("hole": white / 1 = hole; "valid": white / 1 = known);
        ``None`` uses the polarity this inpainter was loaded with."""
        image = _as_image(image)
        hole = _as_hole_mask(mask, image.shape[:2], mask_polarity or self.mask_polarity)
        if not hole.any():
            result = image.copy()
            return (result, {"masked": image.copy(), "output": result}) if return_steps else result
        if self.hd_strategy == "cra" and max(image.shape[:2]) > self.working_size:
            prediction = self.generator.inpaint_high_res(image, hole, working_size=self.working_size)
            region_steps = None
            prediction = prediction.astype(np.float32) / 255.0
            top, left = 0, 0
        else:
            stages = STAGES if return_steps else ("raw",)
            prediction, region_steps, (top, left) = self._predict_region(image, hole, stages)
        result = image.copy()
        region = result[top:top + prediction.shape[0], left:left + prediction.shape[1]]
        region_hole = hole[top:top + prediction.shape[0], left:left + prediction.shape[1]] > 0.5
        predicted = np.clip(np.rint(prediction * 255.0), 0, 255).astype(np.uint8)
        region[region_hole] = predicted[region_hole]
        if not return_steps:
            return result
        steps = {"masked": _masked_view(image, hole)}
        if region_steps:
            for key in ("coarse", "flow"):
                if key in region_steps:
                    steps[key] = np.clip(np.rint(region_steps[key] * 255.0), 0, 255).astype(np.uint8)
        steps["output"] = result
        return result, steps

    def _predict_region(self, image: np.ndarray, hole: np.ndarray, stages=STAGES):
        """Prediction for the working region: the whole image when it is small enough, else the region around
        the holes, downscaled to at most ``max_pixels``. Returns (prediction [h, w, 3] in [0, 1] at the
        region's resolution, stages, (top, left))."""
        height, width = hole.shape
        if height * width <= self.max_pixels:
            outputs = self.run_network(image, hole, stages)
            return outputs["raw"], outputs, (0, 0)
        top, bottom, left, right = _hole_region(hole)
        crop_image = image[top:bottom, left:right]
        crop_hole = hole[top:bottom, left:right]
        crop_h, crop_w = crop_hole.shape
        scale = min(1.0, float(np.sqrt(self.max_pixels / (crop_h * crop_w))))
        if scale < 1.0:
            small_size = (max(1, int(round(crop_w * scale))), max(1, int(round(crop_h * scale))))
            small_image = cv2.resize(crop_image, small_size, interpolation=cv2.INTER_AREA)
            # Any hole pixel inside a downscaled pixel makes it a hole, so no hole pixel is left unpredicted.
            small_hole = (cv2.resize(crop_hole, small_size, interpolation=cv2.INTER_AREA) > 0).astype(np.float32)
            outputs = self.run_network(small_image, small_hole, stages)
            prediction = cv2.resize(outputs["raw"], (crop_w, crop_h), interpolation=cv2.INTER_CUBIC)
        else:
            outputs = self.run_network(crop_image, crop_hole, stages)
            prediction = outputs["raw"]
        return np.clip(prediction, 0.0, 1.0), outputs, (top, left)


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


def load(ckpt_dir, model: Optional[str] = None, max_pixels: Optional[int] = None,
         mask_polarity: str = "hole", precision: str = "float32", **options) -> Inpainter:
    """Loads a reusable ``Inpainter`` from a checkpoint folder.

    The model type and its config are read from the folder's ``model.json``; ``model`` (and extra config
    ``options``) override them. Load-time options such as ``tile_pixels`` or ``attention_memory_budget_mb``
    go to the generator (a ``model.json`` of an older release that still stores them is read the same way).
    ``precision``: "float32" or "bfloat16" (see ``build_generator``).
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
    return Inpainter(generator, name, generator.config.to_options(), max_pixels=max_pixels,
                     mask_polarity=mask_polarity)


def inpaint(image, mask, model=None, mask_polarity: Optional[str] = None, return_steps: bool = False, **kwargs):
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
