"""``tfinpaint export --gpath CKPT --format savedmodel|tflite --out PATH``.

The SavedModel's ``serving_default`` signature takes ``image`` (uint8 [H, W, 3] RGB, any H and W) and ``mask``
(uint8 [H, W], > 127 = hole) and returns ``output`` (uint8 [H, W, 3]); padding to the model's size multiple,
cropping back and compositing the known pixels bit-exactly all happen inside the graph, so a plain
``tf.saved_model.load`` in a process without tfinpaint runs it.

TFLite: converted from the same graph with a fixed input size (``--tflite_size``, TFLite needs static shapes
for these models' resizes), trying TFLite built-in ops first and adding select TensorFlow ops only when the
built-ins cannot express the graph (contextual attention's patch extraction and per-sample loop). The
converter's outcome per model is printed; models needing select ops require the Flex delegate at run time.
"""
from __future__ import annotations

import os

import tensorflow as tf
from absl import flags

from tfinpaint.flags_util import define

FLAGS = flags.FLAGS


def _reflect_pad_to(tensor, target_height, target_width):
    """Reflect-pads [1, H, W, C] at the bottom / right to the target size, in steps of at most (side - 1)
    pixels so that sides smaller than the padding still work (a 1-pixel side is repeated)."""

    def pad_axis(x, target, axis):
        def body(t):
            size = tf.shape(t)[axis]
            step = tf.minimum(target - size, tf.maximum(size - 1, 0))
            paddings = tf.scatter_nd([[axis]], [[0, 1]], [4, 2]) * step
            padded = tf.cond(step > 0, lambda: tf.pad(t, paddings, mode="REFLECT"),
                             lambda: tf.concat([t, tf.gather(t, [size - 1], axis=axis)], axis=axis))
            return [padded]

        return tf.while_loop(lambda t: tf.shape(t)[axis] < target, body, [x],
                             shape_invariants=[tf.TensorShape([None, None, None, None])])[0]

    return pad_axis(pad_axis(tensor, target_height, 1), target_width, 2)


class ServingModule(tf.Module):
    """The generator plus pre- and post-processing as one graph with a uint8 in / uint8 out signature."""

    def __init__(self, generator, size_factor: int):
        super().__init__()
        self.generator = generator
        self.size_factor = size_factor

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, name="image"),
                                  tf.TensorSpec([None, None], tf.uint8, name="mask")])
    def serve(self, image, mask):
        height = tf.shape(image)[0]
        width = tf.shape(image)[1]
        factor = self.size_factor
        target_h = (height + factor - 1) // factor * factor
        target_w = (width + factor - 1) // factor * factor
        hole = tf.cast(mask > 127, tf.float32)[None, :, :, None]
        image_unit = tf.cast(image, tf.float32)[None] / 255.0
        padded_image = _reflect_pad_to(image_unit, target_h, target_w)
        padded_hole = _reflect_pad_to(hole, target_h, target_w)
        padded_image.set_shape([1, None, None, 3])
        padded_hole.set_shape([1, None, None, 1])
        raw = self.generator(padded_image, padded_hole, training=False)["raw"]
        raw = tf.cast(raw, tf.float32)[0, :height, :width]
        predicted = tf.cast(tf.round(tf.clip_by_value(raw, 0.0, 1.0) * 255.0), tf.uint8)
        output = tf.where(mask[:, :, None] > 127, predicted, image)
        return {"output": output}


def export_savedmodel(inpainter, out_dir: str) -> str:
    module = ServingModule(inpainter.generator, inpainter.size_factor)
    tf.saved_model.save(module, out_dir, signatures={"serving_default": module.serve})
    return out_dir


def export_tflite(inpainter, out_path: str, size: int = 256) -> str:
    """Converts the serving graph at a fixed ``size`` x ``size``; returns which op set was needed."""
    module = ServingModule(inpainter.generator, inpainter.size_factor)
    concrete = module.serve.get_concrete_function(tf.TensorSpec([size, size, 3], tf.uint8),
                                                  tf.TensorSpec([size, size], tf.uint8))
    errors = []
    for op_sets, label in (([tf.lite.OpsSet.TFLITE_BUILTINS], "builtin ops"),
                           ([tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS],
                            "builtin + select TensorFlow ops (needs the Flex delegate)")):
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
        converter.target_spec.supported_ops = op_sets
        try:
            flatbuffer = converter.convert()
        except Exception as error:  # the converter raises assorted error types
            errors.append(f"{label}: {str(error).splitlines()[0]}")
            continue
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        with open(out_path, "wb") as handle:
            handle.write(flatbuffer)
        return label
    raise RuntimeError(f"TFLite conversion failed: {'; '.join(errors)}")


def define_flags(flag_values=FLAGS) -> None:
    define("string", "__gpath__", None, "Checkpoint folder written by train.py.", flag_values, aliases=["gpath"])
    define("enum", "format", "savedmodel", "Export format.", flag_values, enum_values=["savedmodel", "tflite"])
    define("string", "out", "outputs", "Output path (a folder for SavedModel, a .tflite file for TFLite).",
           flag_values)
    define("string", "model", None, "Model name; overrides the one stored in the checkpoint folder.", flag_values)
    define("integer", "tflite_size", 256, "Fixed input side of the TFLite model.", flag_values)


define_flags()


def main(argv) -> None:
    from tfinpaint.inference.api import load

    if len(argv) > 1:
        raise SystemExit(f"export: unexpected arguments {' '.join(argv[1:])}")
    if not FLAGS.__gpath__:
        raise SystemExit("export: --gpath CKPT_DIR is required")
    inpainter = load(FLAGS.__gpath__, model=FLAGS.model)
    if FLAGS.format == "savedmodel":
        print(f"SavedModel written to {export_savedmodel(inpainter, FLAGS.out)}")
    else:
        ops = export_tflite(inpainter, FLAGS.out, FLAGS.tflite_size)
        print(f"TFLite model ({inpainter.model_name}, {FLAGS.tflite_size}x{FLAGS.tflite_size}, {ops}) "
              f"written to {FLAGS.out}")
