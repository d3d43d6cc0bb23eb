"""Small helpers shared by the model files: value ranges, local-patch cropping and DeepFill's row-tiled ends."""
from __future__ import annotations

import tensorflow as tf

from tfinpaint.layers.row_tiling import map_row_tiles
from tfinpaint.models.base import check_image_and_mask, composite  # noqa: F401 (shared by the model files)


def to_signed(image_unit):
    """[0, 1] -> [-1, 1] (DeepFill / HiFill internal range)."""
    return image_unit * 2.0 - 1.0


def to_unit(image_signed):
    """[-1, 1] -> [0, 1]."""
    return (image_signed + 1.0) * 0.5


def flip_channels(image):
    """RGB <-> BGR. Models ported from cv2-based TF1 code (official DeepFill / HiFill weights) see BGR."""
    return image[..., ::-1]


def to_internal(image, bgr):
    """Public RGB [0, 1] -> the networks' internal [-1, 1] (BGR when ``bgr``, for official-weight parity)."""
    return to_signed(flip_channels(image) if bgr else image)


def from_internal(signed, bgr):
    """The networks' internal [-1, 1] (BGR when ``bgr``) -> public float32 RGB [0, 1]."""
    unit = to_unit(tf.cast(signed, tf.float32))
    return flip_channels(unit) if bgr else unit


def hole_bbox_offsets(mask, patch_height, patch_width):
    """Top-left corners [B, 2] (int32) of a ``patch_height`` x ``patch_width`` window centred on each sample's
    hole bounding box, clamped inside the image (the local-discriminator patch of GLCIC and DeepFill v1).

    mask: [B, H, W, 1], 1 = hole. A sample without holes gets the centred window.
    """
    mask = tf.cast(mask > 0.5, tf.float32)
    height = tf.shape(mask)[1]
    width = tf.shape(mask)[2]
    rows = tf.reduce_max(mask, axis=[2, 3])  # [B, H]
    cols = tf.reduce_max(mask, axis=[1, 3])  # [B, W]

    def centre(profile, size):
        idx = tf.cast(tf.range(size), tf.float32)[None, :]
        has = tf.reduce_max(profile, axis=1) > 0
        first = tf.reduce_min(tf.where(profile > 0, idx, 1e9), axis=1)
        last = tf.reduce_max(tf.where(profile > 0, idx, -1.0), axis=1)
        mid = tf.where(has, (first + last) / 2.0, (tf.cast(size, tf.float32) - 1.0) / 2.0)
        return mid

    cy = centre(rows, height)
    cx = centre(cols, width)
    top = tf.cast(tf.round(cy - (patch_height - 1) / 2.0), tf.int32)
    left = tf.cast(tf.round(cx - (patch_width - 1) / 2.0), tf.int32)
    top = tf.clip_by_value(top, 0, tf.maximum(height - patch_height, 0))
    left = tf.clip_by_value(left, 0, tf.maximum(width - patch_width, 0))
    return tf.stack([top, left], axis=1)


def crop_patches(images, offsets, patch_height, patch_width):
    """Crops one ``patch_height`` x ``patch_width`` window per sample at ``offsets`` ([B, 2] top-left)."""
    rows = offsets[:, 0:1] + tf.range(patch_height)[None, :]  # [B, ph]
    cols = offsets[:, 1:2] + tf.range(patch_width)[None, :]  # [B, pw]
    rows_taken = tf.gather(images, rows, axis=1, batch_dims=1)  # [B, ph, W, C]
    return tf.gather(rows_taken, cols, axis=2, batch_dims=1)  # [B, ph, pw, C]


# Full-resolution pixels per band when DeepFill's full-resolution ends run row-tiled at inference
# (tfinpaint.layers.row_tiling): 256 rows at 1024 px wide. Smaller bands lower the peak a little more and add
# halo recomputation.
DEFAULT_TILE_PIXELS = 1024 * 256
# Halos of DeepFill v1/v2's banded ends (both have the same shape), in the chains' output rows: the band edges'
# zero padding reaches 2 rows into the encoder head's output (5x5 conv, then 3x3 convs with two stride-2 ones;
# 1/4 resolution) and 7 into the decoder tail's (two x2 upsamplings and five 3x3 convs; full resolution). One and
# three rows of margin; tests/test_row_tiling.py fails with less than the reach.
_HEAD_HALO = 3
_TAIL_HALO = 10


def check_tile_pixels(owner, tile_pixels) -> int:
    """``tile_pixels`` as an int, or a one-line ValueError naming ``owner``."""
    if int(tile_pixels) != tile_pixels or tile_pixels < 0:
        raise ValueError(f"{owner}: `tile_pixels` must be a non-negative integer, got {tile_pixels}")
    return int(tile_pixels)


def inference_tile_rows(image, tile_pixels, training, multiple=4, min_rows=32):
    """Rows per band (full resolution, a multiple of ``multiple``) for row-tiled inference, or None to run
    untiled: training always runs untiled, and so do images known to have at most ``tile_pixels`` pixels
    (``tile_pixels`` 0 turns tiling off)."""
    if training or not tile_pixels:
        return None
    height, width = image.shape[1:3]
    if height is not None and width is not None and height * width <= tile_pixels:
        return None
    if width is not None:  # a Python int, so that a fixed-size export can unroll the bands
        return max(int(tile_pixels) // width, min_rows) // multiple * multiple
    rows = tf.maximum(int(tile_pixels) // tf.shape(image)[2], min_rows)
    return rows // multiple * multiple


def map_full_resolution_end(x, steps, tile_rows, head, dtype):
    """A DeepFill full-resolution end, banded: the encoder ``head`` (full resolution down to 1/4, bands of
    ``tile_rows // 4`` output rows) or the decoder tail (1/4 back up to full resolution, bands of ``tile_rows``)."""
    rows, halo = (tile_rows // 4, _HEAD_HALO) if head else (tile_rows, _TAIL_HALO)
    return map_row_tiles(x, steps, rows, halo, dtype)
