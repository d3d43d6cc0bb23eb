"""Export of a checkpoint as a SavedModel or a TFLite model (the command: ``tfinpaint.export_cli``).

SavedModel
    The ``serving_default`` signature takes ``image`` (uint8 [H, W, 3] RGB, any H and W) and ``mask`` (uint8
    [H, W], > 127 = hole) and returns ``output`` (uint8 [H, W, 3]). Everything ``tfinpaint.load(...)(image, mask)``
    does happens inside the graph, so a process that never imports tfinpaint runs it with plain
    ``tf.saved_model.load(path).signatures["serving_default"](image=..., mask=...)``:

    * reflect padding to the model's size factor (the same index pattern as ``numpy.pad``: ``reflect``, or
      ``symmetric`` when a side is 1 pixel) and cropping back;
    * known pixels copied bit-exactly from the input; hole pixels ``round(clip(raw, 0, 1) * 255)``;
    * images larger than the model's working area (``Inpainter.max_pixels``) are handled like the Python API:
      the region around the holes' bounding box is downscaled to that area (area averages), inpainted and
      upscaled into the holes (OpenCV's INTER_CUBIC, reproduced with graph ops);
    * CRA/HiFill above 512 px runs the network at 512 on the long side and adds the full-resolution residual
      through contextual residual aggregation, as ``tfinpaint.models.cra.inpaint_high_res``.

TFLite (``--tflite_size``, default 256: TFLite needs static shapes here)
    The serving graph is traced at a fixed square size and converted with TFLite built-in ops first, then, only
    if that fails, with select TensorFlow ops (the Flex delegate, which the ``tensorflow`` 2.21 pip package's
    ``tf.lite.Interpreter`` does not link: an app must add ``tensorflow-lite-select-tf-ops``). Weights are frozen
    to constants before conversion. The trace makes two changes, both giving the same values:

    * contextual attention's ``tf.image.extract_patches`` (``ExtractImagePatches``, which has no TFLite kernel)
      becomes ``gather_patches``, one GATHER;
    * loops are unrolled (``tfinpaint.layers.static_trace``): the attention's chunks over query cells and
      DeepFill's row-tiled full-resolution ends (``--tflite_size`` above 512) become straight-line ops with
      constant indices, so the model holds no WHILE, no TensorList (a select TF op) and no dynamically shaped
      tensor.

    All five models convert with built-in ops only and run in the default ``tf.lite.Interpreter(model_path=...)``
    with its XNNPACK delegate (TF 2.21; checked at narrow widths with random weights; ``--verify`` runs it on a
    random image against the Python API: output within 1 grey level, known pixels equal). The attention models
    once failed there with "XNNPack delegate failed to reshape runtime": XNNPACK cannot prepare a MAXIMUM with a
    non-zero constant after a convolution, which the attention's key-norm floor was; it is now a select.
    ``cra``: only its fixed-size network path converts (``--tflite_size`` <= 512); the high-resolution path
    (residual aggregation at the input's own size) is SavedModel-only. Likewise the other models export sizes up
    to their working area (``Inpainter.max_pixels``: 1024 x 1024 for GLCIC and PConv, 2048 x 2048 for DeepFill);
    beyond it the region-around-the-holes path has mask-dependent shapes and ops without TFLite kernels
    (``ResizeArea``, ``Ceil``), so it is SavedModel-only and a larger ``--tflite_size`` is a one-line error.
"""
from __future__ import annotations

import contextlib
import math
import os

import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from tfinpaint.inference.api import load
from tfinpaint.layers.static_trace import unrolled_loops
from tfinpaint.settings import SettingError


def pad_indices(size, target, symmetric):
    """Source index of every position 0..target-1 along an axis of length ``size`` padded at its end, the
    pattern of ``numpy.pad(mode="symmetric")`` when ``symmetric`` else ``mode="reflect"`` (periodic, so any
    amount of padding works)."""
    positions = tf.range(target)

    def fold(period, mirror_offset):
        phase = positions % tf.maximum(period, 1)
        return tf.where(phase >= size, period - mirror_offset - phase, phase)

    return tf.where(symmetric, fold(2 * size, 1), fold(2 * size - 2, 0))


def pad_to_multiple(image, hole, factor):
    """Pads [H, W, C] ``image`` and [H, W] ``hole`` at the bottom / right to multiples of ``factor`` exactly as
    ``tfinpaint.inference.api`` does with numpy (reflect; symmetric on both axes when a side is 1 pixel)."""
    height, width = _height_width(image)
    symmetric = tf.minimum(height, width) <= 1
    rows = pad_indices(height, (height + factor - 1) // factor * factor, symmetric)
    cols = pad_indices(width, (width + factor - 1) // factor * factor, symmetric)

    def pad(x):
        return tf.gather(tf.gather(x, rows, axis=0), cols, axis=1)

    return pad(image), pad(hole)


def _cubic_taps(in_size, out_size):
    """Source rows (clamped at the border) and weights of OpenCV's INTER_CUBIC along one axis: half-pixel
    centres, Keys' kernel with a = -0.75 (TensorFlow's bicubic uses a = -0.5)."""
    a = -0.75
    scale = tf.cast(in_size, tf.float64) / tf.cast(out_size, tf.float64)
    position = (tf.cast(tf.range(out_size), tf.float64) + 0.5) * scale - 0.5
    start = tf.floor(position)
    t = position - start
    w0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
    w1 = ((a + 2) * t - (a + 3)) * t * t + 1
    w2 = ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1
    weights = tf.stack([w0, w1, w2, 1 - w0 - w1 - w2], axis=1)
    rows = tf.cast(start, tf.int32)[:, None] + tf.range(-1, 3)[None, :]
    return tf.clip_by_value(rows, 0, in_size - 1), tf.cast(weights, tf.float32)


def resize_cubic_like_opencv(image, height, width):
    """[H, W, C] float32 resized as ``cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)``."""
    rows, weights = _cubic_taps(tf.shape(image)[0], height)
    image = tf.einsum("hk,hkwc->hwc", weights, tf.gather(image, rows, axis=0))
    cols, weights = _cubic_taps(tf.shape(image)[1], width)
    return tf.einsum("wk,hwkc->hwc", weights, tf.gather(image, cols, axis=1))


def _height_width(image):
    """(H, W) of [H, W, ...]: Python ints where the shape is static, so size tests fold away while tracing."""
    dynamic = tf.shape(image)
    return tuple(image.shape[axis] if image.shape[axis] is not None else dynamic[axis] for axis in (0, 1))


def _static_cond(predicate, true_fn, false_fn):
    """tf.cond that picks the branch while tracing when the predicate is known (fixed-size TFLite graphs then
    hold only the branch they use)."""
    static = tf.get_static_value(predicate)
    if static is not None:
        return true_fn() if bool(static) else false_fn()
    return tf.cond(predicate, true_fn, false_fn)


class ServingModule(tf.Module):
    """An ``Inpainter``'s generator plus its pre- and post-processing as one uint8-in / uint8-out graph."""

    def __init__(self, inpainter):
        super().__init__()
        # Only the weights are tracked: saving a tracked Keras model would also trace its own default
        # signature, which cannot call a generator that takes (image, mask).
        object.__setattr__(self, "generator", inpainter.generator)
        self.weights = list(inpainter.generator.variables)
        self._model_name = inpainter.model_name
        self._hd_strategy = inpainter.hd_strategy
        self._working_size = int(inpainter.working_size)
        self._size_factor = int(inpainter.size_factor)
        self._max_pixels = int(inpainter.max_pixels)

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, name="image"),
                                  tf.TensorSpec([None, None], tf.uint8, name="mask")])
    def serve(self, image, mask):
        """image uint8 [H, W, 3] RGB, mask uint8 [H, W] (> 127 = hole) -> {"output": uint8 [H, W, 3]}."""
        return {"output": self.inpaint(image, mask)}

    def inpaint(self, image, mask):
        tf.debugging.assert_equal(tf.shape(mask), tf.shape(image)[:2],
                                  message="export serving signature: mask must be H x W of the image")
        # Comparisons and selects run on int32: TFLite's built-in GREATER and SELECT_V2 take no uint8.
        hole = tf.cast(mask, tf.int32) > 127
        height, width = _height_width(image)
        if self._hd_strategy == "cra":
            prediction = _static_cond(tf.maximum(height, width) > self._working_size,
                                      lambda: self._cra_high_res(image, hole),
                                      lambda: self._to_levels(self._predict(image, hole)))
        else:
            prediction = _static_cond(height * width <= self._max_pixels,
                                      lambda: self._to_levels(self._predict(image, hole)),
                                      lambda: self._to_levels(self._predict_region(image, hole)))
        composite = tf.where(hole[:, :, None], prediction, tf.cast(image, tf.int32))
        return tf.cast(composite, tf.uint8)

    @staticmethod
    def _to_levels(unit):
        """[0, 1] floats -> int32 grey levels (int32, not uint8: TFLite's float -> uint8 cast is unreliable)."""
        return tf.cast(tf.round(tf.clip_by_value(unit, 0.0, 1.0) * 255.0), tf.int32)

    def _predict(self, image, hole):
        """Raw prediction float32 [H, W, 3] in [0, 1] of the network run on the whole (padded) image."""
        height, width = _height_width(image)
        padded_image, padded_hole = pad_to_multiple(image, tf.cast(hole, tf.float32), self._size_factor)
        padded_image = tf.cast(padded_image, tf.float32) / 255.0
        raw = self.generator(padded_image[None], padded_hole[None, :, :, None], training=False)["raw"]
        return tf.cast(raw, tf.float32)[0, :height, :width]

    def _predict_region(self, image, hole):
        """The API's large-image strategy: the holes' bounding box grown by its own size (+ 8 px) on each side,
        downscaled to ``max_pixels``, inpainted, upscaled back and placed in a full-size prediction (only its
        hole pixels are used)."""
        height, width = tf.shape(image)[0], tf.shape(image)[1]

        def extent(any_hole, size):
            indices = tf.cast(tf.reshape(tf.where(any_hole), [-1]), tf.int32)
            empty = tf.equal(tf.size(indices), 0)
            # No hole at all: the whole axis (the composite then keeps every input pixel anyway).
            first = tf.where(empty, 0, tf.reduce_min(indices))
            last = tf.where(empty, size, tf.reduce_max(indices) + 1)
            grow = tf.cast(tf.math.ceil(tf.cast(last - first, tf.float64)), tf.int32) + 8
            return tf.maximum(0, first - grow), tf.minimum(size, last + grow)

        top, bottom = extent(tf.reduce_any(hole, axis=1), height)
        left, right = extent(tf.reduce_any(hole, axis=0), width)
        crop_image = image[top:bottom, left:right]
        crop_hole = tf.cast(hole[top:bottom, left:right], tf.float32)
        crop_h, crop_w = bottom - top, right - left
        area = tf.cast(crop_h * crop_w, tf.float64)
        scale = tf.minimum(tf.constant(1.0, tf.float64), tf.sqrt(self._max_pixels / area))
        small_h = tf.maximum(1, tf.cast(tf.round(tf.cast(crop_h, tf.float64) * scale), tf.int32))
        small_w = tf.maximum(1, tf.cast(tf.round(tf.cast(crop_w, tf.float64) * scale), tf.int32))
        # OpenCV's INTER_AREA (the API's resize) rounds its uint8 averages its own way: a few pixels differ by 1.
        small_image = tf.image.resize(crop_image, [small_h, small_w], method="area")
        small_image = tf.cast(tf.clip_by_value(tf.round(small_image), 0.0, 255.0), tf.uint8)
        # Any hole pixel inside a downscaled pixel makes it a hole, so no hole pixel is left unpredicted.
        small_hole = tf.image.resize(crop_hole[:, :, None], [small_h, small_w], method="area")[:, :, 0] > 0
        small = tf.clip_by_value(self._predict(small_image, small_hole), 0.0, 1.0)
        region = resize_cubic_like_opencv(small, crop_h, crop_w)
        return tf.pad(region, [[top, height - bottom], [left, width - right], [0, 0]])

    def _cra_high_res(self, image, hole):
        """``tfinpaint.models.cra.inpaint_high_res`` as graph ops: the network at 512 on the long side, the
        high-frequency residual aggregated at full resolution with the attention matrix. Returns int32 grey
        levels [H, W, 3] (used in the holes only)."""
        from tfinpaint.layers.attention_transfer import aggregate_residual
        from tfinpaint.models import cra

        factor = self._size_factor
        cell = int(getattr(self.generator, "attention_cell", cra.ATTENTION_CELL))
        height, width = _height_width(image)
        scale = self._working_size / tf.cast(tf.maximum(height, width), tf.float64)

        def short(side):
            # Python's round() in cra.working_shape rounds half to even, as tf.round does.
            return tf.maximum(factor, tf.cast(tf.round(tf.cast(side, tf.float64) * scale / factor), tf.int32) * factor)

        small_h = tf.where(height >= width, self._working_size, short(height))
        small_w = tf.where(height >= width, short(width), self._working_size)
        grid_h, grid_w = small_h // cell, small_w // cell
        hole_u8 = tf.cast(hole, tf.uint8)[None, :, :, None]
        small_image = tf.image.resize(image[None], [small_h, small_w], method="area")[0] / 255.0
        small_hole = tf.cast(tf.image.resize(hole_u8, [small_h, small_w], method="area")[0] > 0, tf.float32)
        outputs = self.generator(small_image[None], small_hole[None], training=False)
        small_output = tf.cast(outputs["output"], tf.float32)
        attention = tf.cast(outputs["attention"], tf.float32)

        side = tf.maximum((height + grid_h - 1) // grid_h, (width + grid_w - 1) // grid_w)
        big_h, big_w = grid_h * side, grid_w * side
        resized = tf.logical_or(tf.not_equal(big_h, height), tf.not_equal(big_w, width))
        big_hole = tf.cond(resized,
                           lambda: tf.image.resize(hole_u8, [big_h, big_w], method="bilinear") > 0,
                           lambda: hole[None, :, :, None])
        channels = []
        for channel in range(3):
            plane = image[None, :, :, channel:channel + 1]
            large = tf.cond(resized,
                            lambda: tf.image.resize(plane, [big_h, big_w], method="bilinear") / 255.0,
                            lambda: tf.cast(plane, tf.float32) / 255.0)
            base = tf.image.resize(small_image[None, :, :, channel:channel + 1], [big_h, big_w], method="bilinear")
            residual = tf.where(big_hole, 0.0, large - base)
            upsampled = tf.image.resize(small_output[:, :, :, channel:channel + 1], [big_h, big_w], method="bilinear")
            value = tf.clip_by_value(upsampled + aggregate_residual(residual, attention), 0.0, 1.0) * 255.0
            if channels:
                # One channel at a time (as inpaint_high_res) bounds the float32 working set at 8K.
                with tf.control_dependencies([channels[-1]]):
                    value = tf.identity(value)
            # Back to the input's size before rounding, as inpaint_high_res does.
            value = tf.cond(resized, lambda: tf.image.resize(value, [height, width], method="bilinear"),
                            lambda: value)
            channels.append(tf.cast(tf.round(value), tf.int32)[0, :, :, 0])
        return tf.stack(channels, axis=-1)


def export_savedmodel(inpainter, out_dir: str) -> str:
    """Writes ``inpainter`` as a SavedModel with the uint8 ``serving_default`` signature; returns ``out_dir``."""
    module = ServingModule(inpainter)
    tf.saved_model.save(module, out_dir, signatures={"serving_default": module.serve})
    return out_dir


def gather_patches(images, sizes, strides, rates, padding, name=None):
    """``tf.image.extract_patches`` (rates 1) as one GATHER, which TFLite has as a built-in op (it has no
    ``ExtractImagePatches``). Same values and layout: [B, out_h, out_w, k_h * k_w * C] ordered (row, column,
    channel) within a patch, zeros outside the image."""
    del name
    if list(rates) != [1, 1, 1, 1]:
        raise ValueError(f"gather_patches: only rates [1, 1, 1, 1] are supported, got {rates}")
    k_h, k_w, s_h, s_w = sizes[1], sizes[2], strides[1], strides[2]
    shape = tf.shape(images)
    height, width, channels = shape[1], shape[2], images.shape[-1]
    if padding.upper() == "SAME":
        out_h, out_w = (height + s_h - 1) // s_h, (width + s_w - 1) // s_w
        pad_h = tf.maximum((out_h - 1) * s_h + k_h - height, 0)
        pad_w = tf.maximum((out_w - 1) * s_w + k_w - width, 0)
    else:
        out_h, out_w = (height - k_h) // s_h + 1, (width - k_w) // s_w + 1
        pad_h = pad_w = tf.constant(0)
    padded = tf.pad(images, [[0, 0], [pad_h // 2, pad_h - pad_h // 2], [pad_w // 2, pad_w - pad_w // 2], [0, 0]])
    padded_w = width + pad_w
    rows = tf.range(out_h)[:, None, None, None] * s_h + tf.range(k_h)[None, None, :, None]
    cols = tf.range(out_w)[None, :, None, None] * s_w + tf.range(k_w)[None, None, None, :]
    flat_index = tf.reshape(rows * padded_w + cols, [-1])  # (out row, out col, patch row, patch col)
    patches = tf.gather(tf.reshape(padded, [shape[0], -1, channels]), flat_index, axis=1)
    return tf.reshape(patches, [shape[0], out_h, out_w, k_h * k_w * channels])


@contextlib.contextmanager
def _builtin_patch_extraction():
    """While tracing for TFLite, ``tf.image.extract_patches`` (contextual attention's keys and paste patches) is
    ``gather_patches``, so that DeepFill and CRA convert with built-in ops only."""
    original = tf.image.extract_patches
    tf.image.extract_patches = gather_patches
    try:
        yield
    finally:
        tf.image.extract_patches = original


BUILTIN_OPS = "builtin ops"
SELECT_OPS = "builtin + select TensorFlow ops (needs the Flex delegate)"


def export_tflite(inpainter, out_path: str, size: int = 256) -> str:
    """Converts the serving graph at a fixed ``size`` x ``size``, built-in ops first, then with select TF ops.
    Writes ``out_path`` and returns which op set it needed (``BUILTIN_OPS`` or ``SELECT_OPS``)."""
    if inpainter.hd_strategy == "cra" and size > inpainter.working_size:
        raise SettingError(f"for {inpainter.model_name} must be <= {inpainter.working_size} (its high-resolution "
                           "path depends on the input size and exports to SavedModel only)", "tflite_size", size)
    if inpainter.hd_strategy != "cra" and size * size > inpainter.max_pixels:
        raise SettingError(f"for {inpainter.model_name} must be <= {math.isqrt(inpainter.max_pixels)} (larger images "
                           "take the region-around-the-holes path, whose size depends on the mask and exports to "
                           "SavedModel only)", "tflite_size", size)
    module = ServingModule(inpainter)
    with _builtin_patch_extraction(), unrolled_loops():
        concrete = tf.function(module.inpaint).get_concrete_function(
            tf.TensorSpec([size, size, 3], tf.uint8, name="image"), tf.TensorSpec([size, size], tf.uint8, name="mask"))
    # Weights become constants first: left to the converter, some stay resource variables whose READ_VARIABLE
    # nodes the interpreter never initialises (garbage / NaN outputs under XNNPACK).
    concrete = convert_variables_to_constants_v2(concrete)
    errors = []
    for op_sets, label in (([tf.lite.OpsSet.TFLITE_BUILTINS], BUILTIN_OPS),
                           ([tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS], SELECT_OPS)):
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
        converter.target_spec.supported_ops = op_sets
        try:
            flatbuffer = converter.convert()
        except Exception as error:  # the converter raises assorted error types
            errors.append(f"{label}: {_first_line(error)}")
            continue
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        with open(out_path, "wb") as handle:
            handle.write(flatbuffer)
        return label
    raise RuntimeError(f"TFLite conversion of {inpainter.model_name} failed: {'; '.join(errors)}")


def _first_line(error) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def run_tflite(path: str, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Runs an exported TFLite model on one image (uint8 [S, S, 3]) and mask (uint8 [S, S], > 127 = hole) in the
    default ``tf.lite.Interpreter`` (XNNPACK on), as an app would. A model that does not load or prepare there
    is a one-line RuntimeError naming the file."""
    try:
        interpreter = tf.lite.Interpreter(model_path=path)
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as error:
        raise RuntimeError(f"export: {path} does not run in the default tf.lite.Interpreter: "
                           f"{_first_line(error)}") from None
    by_name = {detail["name"]: detail["index"] for detail in interpreter.get_input_details()}
    for name, value in (("image", image), ("mask", mask)):
        index = next(index for key, index in by_name.items() if name in key)
        interpreter.set_tensor(index, np.ascontiguousarray(value, dtype=np.uint8))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def verify_tflite(inpainter, path: str, size: int, seed: int = 0) -> int:
    """Largest per-pixel difference (grey levels) between the TFLite model and ``inpainter`` on a random image
    with a centred rectangular hole; a one-line RuntimeError if a known pixel differs from the input."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4:size * 3 // 4, size // 3:size * 2 // 3] = 255
    lite = run_tflite(path, image, mask)
    keras_output = inpainter(image, mask)
    if not np.array_equal(lite[mask <= 127], image[mask <= 127]):
        raise RuntimeError(f"export: {path} changed known pixels")
    return int(np.abs(lite.astype(np.int16) - keras_output.astype(np.int16)).max())


def run(gpath: str, export_format: str = "savedmodel", out: str = "outputs", model=None, tflite_size: int = 256,
        verify: bool = False) -> str:
    """Exports the checkpoint folder ``gpath``; returns what was written (one line per step)."""
    if export_format not in ("savedmodel", "tflite"):
        raise SettingError("must be savedmodel or tflite", "format", repr(export_format))
    if export_format == "tflite" and tflite_size < 1:
        raise SettingError("must be positive", "tflite_size", tflite_size)
    inpainter = load(gpath, model=model)
    if export_format == "savedmodel":
        return f"SavedModel ({inpainter.model_name}) written to {export_savedmodel(inpainter, out)}"
    ops = export_tflite(inpainter, out, tflite_size)
    report = f"TFLite model ({inpainter.model_name}, {tflite_size}x{tflite_size}, {ops}) written to {out}"
    if verify:
        difference = verify_tflite(inpainter, out, tflite_size)
        report += (f"\nverified in tf.lite.Interpreter: known pixels equal, largest difference from the Keras model "
                   f"{difference} grey level(s)")
    return report
