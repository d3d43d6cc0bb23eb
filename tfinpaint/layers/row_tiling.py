"""Row-tiled evaluation of a chain of local layers: bounded inference memory at high resolution.

An encoder-decoder's full-resolution ends (DeepFill's first convolutions down to 1/4 resolution and its decoder
back up from 1/4) hold the largest tensors of the whole network: at 1024 x 1024 one 64-channel float32 feature
map is 268 MB, and a layer keeps several alive at once (input, convolution output, activation). These chains
only mix neighbouring rows, so they can be computed a band of output rows at a time, each band from a window of
input rows grown by a halo, and cropped back. With a halo at least as wide as the chain's receptive field the
result equals the untiled one (same operations on the same numbers; only the band edges, which are cropped, see
the windows' zero padding), while only one band's temporaries exist at a time.

A chain is a list of steps:

* ``Local(fn)``: a layer (or several) that keeps the height (stride-1 convolutions, activations);
* ``Downsample(fn)``: a layer whose stride-2 "SAME" convolution halves the height. Windows start on even rows
  and have even heights, so the stride grid and the "SAME" padding line up with those of the whole image;
* ``Upsample(resize)``: a nearest-neighbour x2 resize ``resize(x, size)``. Each output row copies one input row;
  which one is found by resizing a column of row indices with the very same function, so any nearest variant
  (pixel repeat, ``align_corners=True``) is reproduced exactly, and the window's rows are gathered from it.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from tfinpaint.layers.static_trace import unrolling

__all__ = ["Local", "Downsample", "Upsample", "map_row_tiles", "nearest_source_rows"]


class Local(NamedTuple):
    fn: Callable


class Downsample(NamedTuple):
    fn: Callable


class Upsample(NamedTuple):
    resize: Callable  # resize(x, size) -> x resized to size = [height, width], nearest neighbour


def nearest_source_rows(resize: Callable, in_rows, out_rows):
    """For every output row of ``resize`` (nearest neighbour) from ``in_rows`` to ``out_rows`` rows, the input
    row it copies: found by resizing a float32 column of row indices (exact up to 2**24 rows)."""
    column = tf.reshape(tf.cast(tf.range(in_rows), tf.float32), [1, -1, 1, 1])
    resized = resize(column, tf.stack([out_rows, 1]))
    return tf.cast(tf.reshape(resized, [-1]), tf.int32)


def _step_heights(height, steps: Sequence):
    heights = [height]
    for step in steps:
        if isinstance(step, Downsample):
            heights.append(heights[-1] // 2)
        elif isinstance(step, Upsample):
            heights.append(heights[-1] * 2)
        elif isinstance(step, Local):
            heights.append(heights[-1])
        else:
            raise TypeError(f"map_row_tiles: steps must be Local, Downsample or Upsample, got {type(step).__name__}")
    return heights


def map_row_tiles(x, steps: Sequence, tile_rows, halo_rows: int, dtype=None):
    """Applies ``steps`` to ``x`` [batch, height, width, channels] one band of ``tile_rows`` output rows at a
    time, each computed from a window grown by ``halo_rows`` output rows on both sides (clipped to the image).

    ``halo_rows`` must cover the chain's receptive field, in output rows; ``tile_rows`` may be a tensor. ``dtype``:
    the chain's output dtype (default ``x.dtype``; layers under a mixed policy may change it). Bands run one after
    another (``parallel_iterations=1``), so peak memory is one band's. Returns the chain's output.

    Inside ``static_trace.unrolled_loops()``, with the height and ``tile_rows`` known while tracing (Python ints),
    the bands are emitted one after another as straight-line ops with constant row windows instead of a while
    loop over a TensorArray (which a fixed-size TFLite model could only run with select TensorFlow ops).
    """
    if halo_rows < 0:
        raise ValueError(f"map_row_tiles: halo_rows must be >= 0, got {halo_rows}")
    if unrolling() and x.shape[1:3].is_fully_defined() and isinstance(tile_rows, (int, np.integer)):
        return _map_row_tiles_unrolled(x, steps, int(tile_rows), halo_rows)
    heights = _step_heights(tf.shape(x)[1], steps)
    sources = [nearest_source_rows(step.resize, heights[i], heights[i + 1]) if isinstance(step, Upsample) else None
               for i, step in enumerate(steps)]
    out_rows = heights[-1]
    tile_rows = tf.maximum(tf.cast(tile_rows, tf.int32), 1)
    tiles = (out_rows + tile_rows - 1) // tile_rows
    static = {}  # the output's static channel count, read while tracing the loop body

    def body(index, bands):
        first = index * tile_rows
        last = tf.minimum(first + tile_rows, out_rows)
        lo = tf.maximum(first - halo_rows, 0)
        hi = tf.minimum(last + halo_rows, out_rows)
        spans = _row_windows(steps, sources, lo, hi)
        y = x[:, spans[0][0]:spans[0][1]]
        for i, (step, source) in enumerate(zip(steps, sources)):
            if isinstance(step, Upsample):
                start, stop = spans[i + 1]
                y = tf.gather(y, source[start:stop] - spans[i][0], axis=1)
                # Rows are already in place; this resizes the width only (a nearest resize to the same height
                # is the identity on rows), with the full width, exactly as the untiled resize does.
                y = step.resize(y, tf.stack([tf.shape(y)[1], 2 * tf.shape(y)[2]]))
            else:
                y = step.fn(y)
        static["channels"] = y.shape[-1]
        band = y[:, first - lo:last - lo]
        # TensorArray.concat joins along the first axis: store each band rows-first.
        return index + 1, bands.write(index, tf.transpose(band, [1, 0, 2, 3]))

    bands = tf.TensorArray(dtype or x.dtype, size=tiles, infer_shape=False)
    _, bands = tf.while_loop(lambda index, _: index < tiles, body, (tf.constant(0), bands), parallel_iterations=1)
    result = tf.transpose(bands.concat(), [1, 0, 2, 3])
    result.set_shape([x.shape[0], None, None, static.get("channels")])
    return result


def _row_windows(steps, sources, lo, hi):
    """Row window [start, stop) of every step's input (and the chain's output last) for output rows [lo, hi)."""
    spans = [(lo, hi)]
    for step, source in zip(reversed(steps), reversed(sources)):
        start, stop = spans[0]
        if isinstance(step, Downsample):
            spans.insert(0, (2 * start, 2 * stop))
        elif isinstance(step, Upsample):
            spans.insert(0, (source[start], source[stop - 1] + 1))
        else:
            spans.insert(0, (start, stop))
    return spans


def _map_row_tiles_unrolled(x, steps: Sequence, tile_rows: int, halo_rows: int):
    """``map_row_tiles`` for a static height: the same bands, windows and crops, planned in Python."""
    heights = _step_heights(x.shape[1], steps)
    sources = []
    for i, step in enumerate(steps):
        source = None
        if isinstance(step, Upsample):
            with tf.init_scope():  # the row map is a constant of the size: compute it eagerly
                source = nearest_source_rows(step.resize, heights[i], heights[i + 1]).numpy()
        sources.append(source)
    out_rows = heights[-1]
    tile_rows = max(tile_rows, 1)
    bands = []
    for first in range(0, out_rows, tile_rows):
        last = min(first + tile_rows, out_rows)
        lo, hi = max(first - halo_rows, 0), min(last + halo_rows, out_rows)
        spans = _row_windows(steps, sources, lo, hi)
        y = x[:, spans[0][0]:spans[0][1]]
        for i, (step, source) in enumerate(zip(steps, sources)):
            if isinstance(step, Upsample):
                start, stop = spans[i + 1]
                y = tf.gather(y, source[start:stop] - spans[i][0], axis=1)
                y = step.resize(y, [y.shape[1], 2 * y.shape[2]])  # the width only, as in map_row_tiles
            else:
                y = step.fn(y)
        bands.append(y[:, first - lo:last - lo])
    return bands[0] if len(bands) == 1 else tf.concat(bands, axis=1)
