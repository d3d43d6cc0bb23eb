"""HiFill / CRA attention transfer (Yi et al. 2020, docs/architectures.md §5.6 and §5.7): reuse the attention matrix
computed once on the 1/rate matching grid to move content of other feature maps or of the full-resolution residual.

``attention`` is [B, N, N] with N = Hq * Wq cells in raster order (rows = query cells, columns = source cells), as
returned by ``ContextualAttention(..., return_attention=True)``. A feature map of H x W is split into cells of
r x r pixels with r = H / Hq = W / Wq (inferred from H * W / N = r^2).

- ``AttentionTransfer`` (ATM, [HFt] ``apply_attention``): 2r x 2r patches with stride r and TF 'SAME' padding,
  pasted like ``conv2d_transpose``: every output pixel is the plain **sum** (no averaging) of the up to four
  attention-weighted patches that cover it.
- ``aggregate_residual`` (CRA residual aggregation, [HFt] ``apply_attention2``): non-overlapping r x r cells,
  ``Res'_i = sum_j A[i, j] Res_j``.

Both are written as matmuls of the attention with cell blocks (no per-sample loop and no per-sample filters), so
they work for dynamic H/W and any batch size.
"""
from __future__ import annotations

import keras
import tensorflow as tf


def _check_pair(name, feature, attention):
    if feature.shape.rank != 4:
        raise ValueError(f"{name}: the feature map must be rank 4 [B, H, W, C], got shape {tuple(feature.shape)}")
    if attention.shape.rank != 3:
        raise ValueError(f"{name}: attention must be rank 3 [B, N, N], got shape {tuple(attention.shape)}")
    if attention.shape[1] is not None and attention.shape[2] is not None and attention.shape[1] != attention.shape[2]:
        raise ValueError(f"{name}: attention must be square [B, N, N], got shape {tuple(attention.shape)}")


def _cell_grid(name, height, width, cells, grid_shape=None):
    """(Hq, Wq, rh, rw) for an H x W map on a grid of ``cells`` cells; square cells unless grid_shape is given."""
    if grid_shape is not None:
        grid_h, grid_w = (tf.constant(int(v), tf.int32) for v in grid_shape)
        cell_h, cell_w = height // grid_h, width // grid_w
    else:
        ratio = tf.cast(height * width, tf.float64) / tf.cast(cells, tf.float64)
        cell_h = cell_w = tf.maximum(tf.cast(tf.round(tf.sqrt(ratio)), tf.int32), 1)
        grid_h, grid_w = height // cell_h, width // cell_w
    tf.debugging.assert_equal(
        tf.stack([grid_h * cell_h - height, grid_w * cell_w - width, grid_h * grid_w - cells]),
        0,
        message=f"{name}: the feature map's H x W must split into the attention's N cells of equal size",
    )
    return grid_h, grid_w, cell_h, cell_w


def _cells_as_rows(x, grid_h, grid_w, cell_h, cell_w):
    """[B, Hq*ch, Wq*cw, C] -> [B, Hq*Wq, ch*cw*C] (one row per cell, raster order)."""
    batch, channels = tf.shape(x)[0], tf.shape(x)[3]
    x = tf.reshape(x, tf.stack([batch, grid_h, cell_h, grid_w, cell_w, channels]))
    x = tf.transpose(x, [0, 1, 3, 2, 4, 5])
    return tf.reshape(x, tf.stack([batch, grid_h * grid_w, cell_h * cell_w * channels]))


def _rows_as_cells(rows, grid_h, grid_w, cell_h, cell_w, channels):
    """Inverse of ``_cells_as_rows``."""
    batch = tf.shape(rows)[0]
    x = tf.reshape(rows, tf.stack([batch, grid_h, grid_w, cell_h, cell_w, channels]))
    x = tf.transpose(x, [0, 1, 3, 2, 4, 5])
    return tf.reshape(x, tf.stack([batch, grid_h * cell_h, grid_w * cell_w, channels]))


def aggregate_residual(residual, attention, grid_shape=None):
    """CRA contextual residual aggregation: each r x r cell of ``residual`` becomes ``sum_j A[i, j] * cell_j``.

    residual [B, H, W, C], attention [B, N, N]; returns [B, H, W, C] in residual's dtype (computed in float32).
    ``grid_shape=(Hq, Wq)`` allows rectangular cells (H / Hq != W / Wq); by default cells are square.
    """
    residual = tf.convert_to_tensor(residual)
    attention = tf.convert_to_tensor(attention)
    _check_pair("aggregate_residual", residual, attention)
    shape = tf.shape(residual)
    grid_h, grid_w, cell_h, cell_w = _cell_grid(
        "aggregate_residual", shape[1], shape[2], tf.shape(attention)[1], grid_shape
    )
    rows = _cells_as_rows(tf.cast(residual, tf.float32), grid_h, grid_w, cell_h, cell_w)
    mixed = tf.matmul(tf.cast(attention, tf.float32), rows)
    out = _rows_as_cells(mixed, grid_h, grid_w, cell_h, cell_w, shape[3])
    out = tf.cast(out, residual.dtype)
    out.set_shape(residual.shape)
    return out


@keras.saving.register_keras_serializable(package="tfinpaint")
class AttentionTransfer(keras.layers.Layer):
    """HiFill attention transfer module; ``call([feature, attention]) -> [B, H, W, C]`` (no weights).

    Each source cell's 2r x 2r patch (stride r, TF 'SAME' padding: r // 2 before, r - r // 2 after) is pasted at
    every query cell with its attention weight; overlapping pastes are summed, as conv2d_transpose does.
    """

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise ValueError("AttentionTransfer expects inputs [feature, attention]")
        feature, attention = inputs
        _check_pair("AttentionTransfer", feature, attention)
        shape = tf.shape(feature)
        height, width, channels = shape[1], shape[2], shape[3]
        grid_h, grid_w, r, _ = _cell_grid("AttentionTransfer", height, width, tf.shape(attention)[1])
        before = r // 2
        # Padded to (Hq + 1) x (Wq + 1) blocks of r x r: the 2r x 2r patch of source cell q is then the 2 x 2
        # blocks starting at block q, and a query's paste lands on the 2 x 2 blocks starting at its own block.
        padded = tf.pad(
            tf.cast(feature, tf.float32),
            [[0, 0], [before, r - before], [before, r - before], [0, 0]],
        )
        attention = tf.cast(attention, tf.float32)
        out = None
        for dy in (0, 1):
            for dx in (0, 1):
                blocks = padded[:, dy * r : dy * r + grid_h * r, dx * r : dx * r + grid_w * r, :]
                moved = tf.matmul(attention, _cells_as_rows(blocks, grid_h, grid_w, r, r))
                moved = _rows_as_cells(moved, grid_h, grid_w, r, r, channels)
                moved = tf.pad(moved, [[0, 0], [dy * r, (1 - dy) * r], [dx * r, (1 - dx) * r], [0, 0]])
                out = moved if out is None else out + moved
        out = out[:, before : before + height, before : before + width, :]
        out = tf.cast(out, self.compute_dtype)
        out.set_shape(feature.shape)
        return out

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])
