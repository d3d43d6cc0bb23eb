"""Monitoring of a training run: TensorBoard scalars and images, PNG preview grids, validation scores, and the
callback interface through which the trainer reports progress (the library never prints; the command line
turns these reports into output)."""
from __future__ import annotations

import os
import time

import numpy as np
import tensorflow as tf


class Callback:
    """Receives the trainer's reports; every method is optional. Exceptions raised by a callback are logged
    and never stop training (a closed terminal or pipe must not cost the run)."""

    def on_train_begin(self, start_step: int, total_steps: int) -> None:
        pass

    def on_phase_begin(self, index: int, phase, begin: int, end: int, weights: dict) -> None:
        pass

    def on_step_end(self, step: int, logs: dict, steps_per_sec: float) -> None:
        pass

    def on_checkpoint_saved(self, step: int, path: str) -> None:
        pass

    def on_stop_requested(self, signal_name: str) -> None:
        pass

    def on_train_end(self, result: dict) -> None:
        pass


class StepRate:
    """Steps per second over the last ~50 steps, leaving out the first step of the run (graph tracing)."""

    def __init__(self, start: int):
        self.window = [(time.perf_counter(), start)]
        self.rate = 0.0

    def update(self, step: int) -> float:
        self.window.append((time.perf_counter(), step))
        self.window = self.window[-50:]
        if len(self.window) > 2:
            (t0, s0), (t1, s1) = self.window[1], self.window[-1]
            self.rate = (s1 - s0) / max(t1 - t0, 1e-9)
        return self.rate


def _summary_metadata(plugin: str, data_class) -> bytes:
    # TensorBoard's own summary ops live in the tensorboard package, which TensorFlow does not install;
    # tf.summary.write with the plugin's metadata writes the same events without it.
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata(data_class=data_class)
    metadata.plugin_data.plugin_name = plugin
    return metadata.SerializeToString()


def write_scalar(tag: str, value: float, step: int) -> None:
    """A TensorBoard scalar on the default summary writer."""
    from tensorflow.core.framework import summary_pb2

    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step,
                     metadata=_summary_metadata("scalars", summary_pb2.DATA_CLASS_SCALAR))


def write_image(tag: str, image: np.ndarray, step: int) -> None:
    """A TensorBoard image (RGB uint8 [H, W, 3]) on the default summary writer."""
    from tensorflow.core.framework import summary_pb2

    encoded = tf.io.encode_png(image)
    tensor = tf.stack([tf.constant(str(image.shape[1])), tf.constant(str(image.shape[0])), encoded])
    tf.summary.write(tag, tensor, step=step, metadata=_summary_metadata("images",
                                                                         summary_pb2.DATA_CLASS_BLOB_SEQUENCE))


def _to_uint8(images) -> np.ndarray:
    return np.clip(np.rint(np.asarray(images, np.float32) * 255.0), 0, 255).astype(np.uint8)


def preview_grid(batch: dict, outputs: dict) -> np.ndarray:
    """RGB uint8 grid, one row per sample: input (holes white) | mask | coarse (or raw) | output."""
    image = np.asarray(batch["image"], np.float32)
    mask = np.asarray(batch["mask"], np.float32)
    masked = image * (1.0 - mask) + mask
    stage = outputs.get("coarse", outputs.get("raw"))
    columns = [masked, np.repeat(mask, 3, axis=-1), np.asarray(stage, np.float32),
               np.asarray(outputs["output"], np.float32)]
    rows = [np.concatenate([column[i] for column in columns], axis=1) for i in range(image.shape[0])]
    return _to_uint8(np.concatenate(rows, axis=0))


def write_png(path: str, image: np.ndarray) -> str:
    """Writes an RGB uint8 PNG through a temporary file and a rename, with the permissions of the umask."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.tmp{os.getpid()}"
    try:
        with open(temporary, "wb") as handle:
            handle.write(tf.io.encode_png(image).numpy())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def validation_scores(outputs: list, batches: list) -> dict:
    """Mean hole L1 and PSNR of composited outputs ({"output": ...} per batch) against the batches' images."""
    hole_l1, psnr = [], []
    for output, batch in zip(outputs, batches):
        image, mask = np.asarray(batch["image"]), np.asarray(batch["mask"])
        error = np.abs(output["output"] - image)
        hole_l1.append(float((error * mask).sum() / max(mask.sum() * 3.0, 1.0)))
        mse = np.mean((output["output"] - image) ** 2, axis=(1, 2, 3))
        psnr.append(float(np.mean(10.0 * np.log10(1.0 / np.maximum(mse, 1e-10)))))
    return {"val/l1_hole": float(np.mean(hole_l1)), "val/psnr": float(np.mean(psnr))}


class Monitor:
    """TensorBoard scalars, validation and preview grids of one training run (chief only).

    predict: ``batch -> {"output", "raw"/"coarse"}`` as NumPy; logdir: events and ``previews/step_*.png``.
    """

    def __init__(self, predict, logdir: str, log_every: int, preview_every: int, val_every: int, enabled: bool,
                 preview_batch=None, validation=()):
        self.predict, self.logdir = predict, logdir
        self.log_every, self.preview_every, self.val_every = log_every, preview_every, val_every
        self.enabled = enabled
        self.preview_batch, self.validation = preview_batch, list(validation)
        self.writer = tf.summary.create_file_writer(logdir) if enabled else tf.summary.create_noop_writer()

    def evaluate(self, batches: list) -> dict:
        return validation_scores([self.predict(batch) for batch in batches], batches)

    def write_preview(self, step: int) -> str:
        grid = preview_grid(self.preview_batch, self.predict(self.preview_batch))
        path = write_png(os.path.join(self.logdir, "previews", f"step_{step:07d}.png"), grid)
        with self.writer.as_default():
            write_image("preview", grid, step)
        return path

    def after_step(self, step: int, logs: dict, rate: float, learning_rates: dict) -> None:
        if not self.enabled:
            return
        with self.writer.as_default():
            if self.log_every and step % self.log_every == 0:
                for key, value in logs.items():
                    write_scalar(key, value, step)
                for key, value in learning_rates.items():
                    write_scalar(key, value, step)
                write_scalar("steps_per_sec", rate, step)
            if self.validation and self.val_every and step % self.val_every == 0:
                for key, value in self.evaluate(self.validation).items():
                    write_scalar(key, value, step)
        if self.preview_batch is not None and self.preview_every and step % self.preview_every == 0:
            self.write_preview(step)

    def at_end(self, step: int) -> None:
        if self.enabled and self.preview_batch is not None and self.preview_every:
            self.write_preview(step)
        self.writer.flush()
