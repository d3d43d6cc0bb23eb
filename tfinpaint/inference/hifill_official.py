"""HiFill's official inference pipeline (the authors' ``GPU_CPU/test.py`` sample), run on a tfinpaint CRA generator,
so that converted official weights give the official outputs.

Unlike tfinpaint's default high-resolution path (the pipeline's ``cra`` strategy: aspect ratio kept,
known pixels bit-exact), the sample:

1. resizes the photo (bilinear) and the mask (nearest) to a square of ``multiple * 512`` (the aspect ratio is
   not kept);
2. averages ``multiple x multiple`` blocks down to 512 x 512; the 512 mask is a nearest resize of the raw mask;
3. runs the network at 512 (its coarse stage at a fixed 256 x 256: build the generator with ``coarse_size=256``,
   which converted checkpoints record);
4. residual = (large image - bilinear upsample of the 512 image) on known pixels; each of the 32 x 32 cells gets
   the attention-weighted sum of the cells' residuals (one matmul with the [1024, 1024] attention);
5. result = bilinear upsample of the 512 output + aggregated residual, clipped to [0, 255], resized (bilinear)
   to the raw size;
6. blended with the bilinear upsample of the 512 hole mask (a soft blend that also alters known pixels next to
   the holes) and truncated to uint8.

Resizes use OpenCV like the sample. The frozen graph's ``mask_processed`` output is taken to be the 512 hole mask
the network was given (the released graph's exact post-processing of the mask is not documented).
"""
from __future__ import annotations

import cv2
import numpy as np
import tensorflow as tf

INPUT_SIZE = 512
ATTENTION_GRID = 32  # the attention's cells per side at 512 x 512 (cells of 16 px)
DEFAULT_MULTIPLE = 6


def _blocks(array, side):
    """[S, S, C] -> [S / side, S / side, side, side, C]: the side x side blocks in row-major order."""
    height, width, channels = array.shape
    return array.reshape(height // side, side, width // side, side, channels).transpose(0, 2, 1, 3, 4)


def aggregate_residual(residual, attention, multiple):
    """Each 32 x 32 grid cell's residual replaced by the attention-weighted sum of all cells' residuals.

    residual: [S, S, C] float32 with S = multiple * 512; attention: [1024, 1024] (rows: query cells, columns:
    source cells, row-major).
    """
    cell = multiple * INPUT_SIZE // ATTENTION_GRID
    channels = residual.shape[2]
    patches = _blocks(residual, cell).reshape(ATTENTION_GRID * ATTENTION_GRID, -1)
    mixed = np.matmul(attention, patches).reshape(ATTENTION_GRID, ATTENTION_GRID, cell, cell, channels)
    return mixed.transpose(0, 2, 1, 3, 4).reshape(ATTENTION_GRID * cell, ATTENTION_GRID * cell, channels)


def _hole_fraction(mask, shape):
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask[:, :, 0]
    if mask.shape != tuple(shape):
        raise ValueError(f"hifill_official: the mask must be H x W = {tuple(shape)}, got {mask.shape}")
    if mask.dtype == np.uint8:
        return mask.astype(np.float32) / 255.0
    return np.clip(mask.astype(np.float32), 0.0, 1.0)


def inpaint_official(generator, image, mask, multiple=DEFAULT_MULTIPLE, return_stages=False):
    """Inpaints ``image`` exactly as the official HiFill sample does (see the module docstring).

    generator: a built ``CRAGenerator`` (or a ``tfinpaint.load`` inpainter holding one).
    image: H x W x 3 uint8 RGB. mask: H x W (or H x W x C, channel 0 used) with 1 / 255 = hole; like the sample,
        grey levels are not thresholded. multiple: the square side is ``multiple * 512`` (the sample uses 6).
    Returns H x W x 3 uint8 (and a dict of the intermediate arrays with ``return_stages``).
    """
    generator = getattr(generator, "generator", generator)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"hifill_official: image must be H x W x 3 uint8, got {image.dtype} {image.shape}")
    if int(multiple) != multiple or multiple < 1:
        raise ValueError(f"hifill_official: multiple must be a positive integer, got {multiple}")
    multiple = int(multiple)
    height, width = image.shape[:2]
    raw = image.astype(np.float32)
    known = 1.0 - _hole_fraction(mask, (height, width))
    side = multiple * INPUT_SIZE

    large = cv2.resize(raw, (side, side), interpolation=cv2.INTER_LINEAR)
    large_known = cv2.resize(known, (side, side), interpolation=cv2.INTER_NEAREST)[:, :, None]
    small = _blocks(large, multiple).mean(axis=(2, 3))
    small_hole = 1.0 - cv2.resize(known, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_NEAREST)

    outputs = generator(tf.constant(small[None] / 255.0), tf.constant(small_hole[None, :, :, None]),
                        training=False)
    small_output = outputs["output"][0].numpy() * 255.0
    attention = tf.cast(outputs["attention"], tf.float32)[0].numpy()
    cells = ATTENTION_GRID * ATTENTION_GRID
    if attention.shape != (cells, cells):
        raise ValueError(f"hifill_official: expected a [{cells}, {cells}] attention at 512 x 512, got "
                         f"{list(attention.shape)}")

    base = cv2.resize(small_output, (side, side), interpolation=cv2.INTER_LINEAR)
    low = cv2.resize(small, (side, side), interpolation=cv2.INTER_LINEAR)
    residual = aggregate_residual((large - low) * large_known, attention, multiple)
    result = np.clip(base + residual, 0.0, 255.0)
    result = cv2.resize(result, (width, height), interpolation=cv2.INTER_LINEAR)
    blend = cv2.resize(small_hole, (width, height), interpolation=cv2.INTER_LINEAR)[:, :, None]
    inpainted = (result * blend + raw * (1.0 - blend)).astype(np.uint8)  # truncation, as the sample
    if not return_stages:
        return inpainted
    return inpainted, {"small_image": small, "small_hole": small_hole, "small_output": small_output,
                       "attention": attention, "blend": blend[:, :, 0]}
