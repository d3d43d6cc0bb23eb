"""Export of a checkpoint as a SavedModel or a TFLite model (the command: ``tfinpaint.export_cli``).

SavedModel
    The ``serving_default`` signature takes ``image`` (uint8 [H, W, 3] RGB, any H and W) and ``mask`` (uint8
    [H, W], > 127 = hole) and returns ``output`` (uint8 [H, W, 3]). Everything ``tfinpaint.load(...)(image, mask)``
    does happens inside the graph, so a process that never imports tfinpaint runs it with plain
    ``tf.saved_model.load(path).signatures["serving_default"](image=..., mask=...)``:

    The graph is the inference pipeline itself (``tfinpaint.inference.pipeline``, the one ``tfinpaint.load`` runs),
    with the inpainter's high-resolution strategy (``--hd_strategy`` and its settings, else the model's own), so
    the SavedModel and the Python API give the same bytes: reflect padding to the size factor, the strategy's
    crops or resizing, the prediction pasted into the hole pixels only (known pixels are the input's bytes).

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
    A TFLite model has one fixed size, at which the pipeline's ``original`` strategy runs (the whole image at
    once); ``--tflite_size`` may therefore not exceed the size up to which the inpainter's own strategy runs the
    whole image too (``hd_trigger_size`` for crop and resize, the working size for cra), so that the TFLite model
    and the API agree. Larger photos: SavedModel.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from tfinpaint.inference.api import load
from tfinpaint.layers.static_trace import unrolled_loops
from tfinpaint.settings import SettingError


class ServingModule(tf.Module):
    """An ``Inpainter``'s pipeline as a uint8-in / uint8-out serving graph."""

    def __init__(self, inpainter, hd_strategy=None):
        super().__init__()
        self.pipeline = inpainter.pipeline(hd_strategy)

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, name="image"),
                                  tf.TensorSpec([None, None], tf.uint8, name="mask")])
    def serve(self, image, mask):
        """image uint8 [H, W, 3] RGB, mask uint8 [H, W] (> 127 = hole) -> {"output": uint8 [H, W, 3]}."""
        return {"output": self.inpaint(image, mask)}

    def inpaint(self, image, mask):
        # Compared on int32: TFLite's built-in GREATER takes no uint8.
        return self.pipeline.inpaint(image, tf.cast(mask, tf.int32) > 127)[0]


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
    settings = inpainter.hd_settings
    whole_up_to = {"original": None, "cra": settings.working_size}.get(settings.strategy, settings.trigger_size)
    if whole_up_to is not None and size > whole_up_to:
        raise SettingError(f"for {inpainter.model_name} must be <= {whole_up_to}: larger images take its "
                           f"{settings.strategy} strategy, whose shapes depend on the image and the mask (export a "
                           "SavedModel for them, or choose <hd_strategy> original)", "tflite_size", size)
    module = ServingModule(inpainter, "original")
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
        verify: bool = False, hd=None) -> str:
    """Exports the checkpoint folder ``gpath``; returns what was written (one line per step). ``hd``: the
    high-resolution settings (``hd_strategy``, ...) of ``tfinpaint.load``."""
    if export_format not in ("savedmodel", "tflite"):
        raise SettingError("must be savedmodel or tflite", "format", repr(export_format))
    if export_format == "tflite" and tflite_size < 1:
        raise SettingError("must be positive", "tflite_size", tflite_size)
    inpainter = load(gpath, model=model, **(hd or {}))
    if export_format == "savedmodel":
        return f"SavedModel ({inpainter.model_name}) written to {export_savedmodel(inpainter, out)}"
    ops = export_tflite(inpainter, out, tflite_size)
    report = f"TFLite model ({inpainter.model_name}, {tflite_size}x{tflite_size}, {ops}) written to {out}"
    if verify:
        difference = verify_tflite(inpainter, out, tflite_size)
        report += (f"\nverified in tf.lite.Interpreter: known pixels equal, largest difference from the Keras model "
                   f"{difference} grey level(s)")
    return report
