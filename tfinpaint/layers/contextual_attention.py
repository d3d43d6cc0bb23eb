"""Contextual attention (DeepFill v1/v2, Yu et al. 2018/2019) and HiFill's attention computing module (Yi et al.
2020), with a bounded-memory path for high resolutions.

Algorithm for one sample (docs/architectures.md §1.4; HiFill differences in brackets, §5.5 / §6.3), mask 1 = hole:

1. Downscale f and b by ``rate`` to the matching grid Hq x Wq (nearest with align_corners=True, as DeepFill's
   ``resize``) [strided: keep even rows / columns].
2. Keys: the ``ksize`` x ``ksize`` SAME patches of the downscaled b, each divided by max(||w||, 1e-4) [1e-8].
   Queries: the same patches of the downscaled f, *not* normalised (official behaviour).
3. Scores ``S[p, q] = <query_p, key_q>``; N = Hq * Wq query cells (rows) and source cells (columns).
4. Fuse (when ``fuse``): ``S1[i, j] = sum_d S[i + d, j + d]`` over raster indices, then the same diagonal sum
   with rows and columns re-indexed in column-major order. Raster "neighbours" wrap across grid rows (and
   column-major ones across grid columns); that artefact of the official reshape trick is kept for parity.
5. Valid sources ``mm``: no hole pixel in the key's window of the downscaled mask [mask max-pooled to the grid,
   then dilated by the window; mm = 1 - m]. ``A = softmax(scale * S2 * mm) * mm`` (masked logits are 0, not -inf,
   so rows sum to <= 1, exactly as the official code).
6. Paste: every query cell receives ``sum_q A[p, q] * P_q`` where P_q is the raw (2*rate) x (2*rate) patch of the
   full-resolution b at stride rate [(2*rate - 1) x (2*rate - 1)], overlap-added like conv2d_transpose (SAME),
   then divided by 4 [no division].

Deliberate deviations from the official code (docs/decisions.md): masks are per sample (official: the first sample's
mask for the whole batch), and the score matrix is processed in chunks of query cells when it would exceed the
memory budget. Chunking gives the same numbers as the one-shot computation: each chunk computes the raw scores of
the few extra query rows the fuse needs (its raster and column-major neighbours, including the wrap-around ones),
so memory grows linearly with image area. Chunks are square tiles of query cells, which keeps that overhead small.
Flow images use each sample's own maximum offset (official: a running maximum over the batch).

Fixed-size export (``tfinpaint.layers.static_trace.unrolled_loops``): when the input shapes are fully known while
tracing, the chunk plan (query order, fuse neighbour sets, paste targets) is computed in NumPy and each chunk is
emitted as straight-line ops with constant indices instead of one ``tf.while_loop`` whose tensors change size
per iteration, so a TFLite model holds no WHILE and every shape is static. Same numbers either way.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfinpaint.layers.static_trace import unrolling

# Score-sized float32 temporaries alive at once inside one chunk (raw tile, the fused tile and the gathered or
# shifted copies it is built from, logits, softmax): memory_budget_mb is divided by this many score rows.
_SCORE_TEMPORARIES = 8
# Default score-tile budget: at DeepFill's 1024 x 1024 (16384 attention cells) 64 MB is as fast as 256 MB and
# holds 170 MB less (benchmarks/contextual_attention.py); smaller budgets get slower with little memory gain.
DEFAULT_MEMORY_BUDGET_MB = 64


def _fuse_offsets(fuse_k):
    """Offsets d of the diagonal sum done by TF's SAME conv with an identity kernel of size ``fuse_k``."""
    before = (fuse_k - 1) // 2
    return list(range(-before, fuse_k - before))


def _shift_last_axis(x, d):
    """``out[..., j] = x[..., j + d]`` with zeros outside the range (a raster shift of source cells)."""
    if d == 0:
        return x
    zeros = tf.zeros_like(x[..., : abs(d)])
    if d > 0:
        return tf.concat([x[..., d:], zeros], axis=-1)
    return tf.concat([zeros, x[..., :d]], axis=-1)


def _column_major_neighbour(index, d, height, width):
    """Raster index of the cell ``d`` steps away from ``index`` in column-major order, or -1 past either end.
    ``index`` is a tensor, or a NumPy array for a plan made while tracing at a fixed size."""
    where = np.where if isinstance(index, np.ndarray) else tf.where
    y = index // width
    x = index % width
    shifted = x * height + y + d
    valid = (shifted >= 0) & (shifted < height * width)
    shifted = where(valid, shifted, 0)
    return where(valid, (shifted % height) * width + shifted // height, -1)


def _permute_sources_column_major(x, d, height, width):
    """``out[..., q] = x[..., n_d(q)]`` where n_d is the column-major neighbour (zero where it does not exist).

    For |d| == 1 the permutation is three contiguous slices (15x faster than a gather on the last axis).
    """
    n = height * width
    if d == 1:
        # rows 0..H-2 -> the cell below (q + W); last row -> top of the next column (q - (N - W) + 1).
        return tf.concat([x[..., width:], x[..., 1:width], tf.zeros_like(x[..., :1])], axis=-1)
    if d == -1:
        return tf.concat([tf.zeros_like(x[..., :1]), x[..., n - width : n - 1], x[..., : n - width]], axis=-1)
    neighbour = _column_major_neighbour(tf.range(n), d, height, width)
    gathered = tf.gather(x, tf.maximum(neighbour, 0), axis=-1)
    return gathered * tf.cast(neighbour >= 0, x.dtype)


def _positions(indices, size):
    """Inverse map of an index set: ``pos[i]`` = row of i in ``indices``; every other i in [0, size] maps to row
    ``len(indices)``, where callers append a zero row (``size`` stands for "no such cell")."""
    if isinstance(indices, np.ndarray):
        positions = np.full(size + 1, len(indices), np.int32)
        positions[indices] = np.arange(len(indices), dtype=np.int32)
        return positions
    count = tf.shape(indices)[0]
    pos = tf.fill([size + 1], count)
    pos = tf.tensor_scatter_nd_update(pos, indices[:, None], tf.range(count))
    return pos


def _index_set(candidates, size):
    """Sorted unique members of ``candidates`` that lie in [0, size)."""
    if isinstance(candidates, np.ndarray):
        return np.unique(candidates[(candidates >= 0) & (candidates < size)]).astype(np.int32)
    valid = tf.boolean_mask(candidates, (candidates >= 0) & (candidates < size))
    flags = tf.scatter_nd(valid[:, None], tf.ones_like(valid), [size])
    return tf.cast(tf.reshape(tf.where(flags > 0), [-1]), tf.int32)


def _length(indices):
    """Number of indices: a Python int for a NumPy plan, else a scalar tensor."""
    return len(indices) if isinstance(indices, np.ndarray) else tf.shape(indices)[0]


def _concat(parts):
    return np.concatenate(parts) if isinstance(parts[0], np.ndarray) else tf.concat(parts, 0)


def _flow_colour_wheel():
    """Middlebury colour wheel (55 hues), RGB in [0, 1]."""
    # (length, fixed channel values, ramped channel, ramp direction): red -> yellow -> green -> cyan -> blue ->
    # magenta -> red.
    ramps = [
        (15, [255, None, 0], 1, +1),
        (6, [None, 255, 0], 0, -1),
        (4, [0, 255, None], 2, +1),
        (11, [0, None, 255], 1, -1),
        (13, [None, 0, 255], 0, +1),
        (6, [255, 0, None], 2, -1),
    ]
    blocks = []
    for length, fixed, channel, direction in ramps:
        ramp = np.floor(255.0 * np.arange(length) / length)
        block = np.zeros((length, 3))
        for c, value in enumerate(fixed):
            if value is not None:
                block[:, c] = value
        block[:, channel] = ramp if direction > 0 else 255.0 - ramp
        blocks.append(block)
    return (np.concatenate(blocks, axis=0) / 255.0).astype(np.float32)


_COLOUR_WHEEL = _flow_colour_wheel()


def flow_to_rgb(offsets):
    """Colour-codes [B, H, W, 2] (dy, dx) offsets (Middlebury wheel, per-sample max radius) -> [B, H, W, 3] in
    [0, 1]. Hue = direction, saturation = length."""
    offsets = tf.cast(offsets, tf.float32)
    radius = tf.sqrt(tf.reduce_sum(tf.square(offsets), axis=-1))
    max_radius = tf.reduce_max(radius, axis=[1, 2], keepdims=True)
    scale = 1.0 / (max_radius + np.finfo(np.float64).eps)
    u = offsets[..., 0] * scale
    v = offsets[..., 1] * scale
    rad = radius * scale
    wheel = tf.constant(_COLOUR_WHEEL)
    ncols = _COLOUR_WHEEL.shape[0]
    angle = tf.atan2(-v, -u) / np.pi
    position = (angle + 1.0) / 2.0 * (ncols - 1)
    k0 = tf.cast(tf.floor(position), tf.int32)
    k1 = tf.where(k0 + 1 == ncols, 0, k0 + 1)
    frac = (position - tf.floor(position))[..., None]
    colour = (1.0 - frac) * tf.gather(wheel, k0) + frac * tf.gather(wheel, k1)
    inside = (rad <= 1.0)[..., None]
    colour = tf.where(inside, 1.0 - rad[..., None] * (1.0 - colour), colour * 0.75)
    return tf.floor(255.0 * colour) / 255.0


@keras.saving.register_keras_serializable(package="tfinpaint")
class ContextualAttention(keras.layers.Layer):
    """Contextual attention; ``call([f, b, mask])`` with f, b [B, H, W, C] and mask [B, Hm, Wm, 1] (1 = hole).

    Returns ``y`` (shape of f, compute dtype) or a tuple ``(y, flow)`` / ``(y, attention)`` /
    ``(y, flow, attention)``. ``flow`` [B, H, W, 3] float32 in [0, 1] colour-codes each cell's strongest source;
    ``attention`` [B, Hq*Wq, Hq*Wq] float32 (rows = query cells, columns = source cells, raster order).

    Args:
        ksize: matching patch size. stride: must be 1 (the only value DeepFill and HiFill use).
        rate: downscale factor of the matching grid; H and W must be multiples of it.
        fuse_k, fuse: the diagonal score propagation (official: 3, True).
        softmax_scale: softmax temperature multiplier (official: 10).
        mode: ``"deepfill"`` (4x4 paste patches, /4, key-norm floor 1e-4, mask resized with nearest to f's
            size then to the grid) or ``"hifill"`` (3x3 paste patches, no /4, floor 1e-8, mask of any integer
            multiple of the grid size, max-pooled to it then dilated).
        align_corners: grid downscale of f and b (and of the mask in deepfill mode): True = nearest with
            align_corners (DeepFill's official resize: needed for parity with its weights), False = strided
            subsampling (keep rows/columns 0, rate, 2*rate, ...: HiFill's). None picks the mode's official one.
        memory_budget_mb: approximate memory per sample for the score tiles; when the whole N x N score matrix
            (with its temporaries) would exceed it, query cells are processed in chunks. Same results either way.
        query_chunk_size: force at most this many query cells per chunk (overrides the budget; mainly for tests).
    """

    def __init__(
        self,
        ksize=3,
        stride=1,
        rate=2,
        fuse_k=3,
        softmax_scale=10.0,
        fuse=True,
        mode="deepfill",
        return_flow=False,
        return_attention=False,
        memory_budget_mb=DEFAULT_MEMORY_BUDGET_MB,
        align_corners=None,
        query_chunk_size=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if mode not in ("deepfill", "hifill"):
            raise ValueError(f"ContextualAttention: mode must be 'deepfill' or 'hifill', got {mode!r}")
        if int(stride) != 1:
            raise ValueError(
                f"ContextualAttention: only stride=1 is supported (DeepFill and HiFill use 1), got {stride!r}"
            )
        for name, value in (("ksize", ksize), ("rate", rate), ("fuse_k", fuse_k)):
            if int(value) != value or int(value) < 1:
                raise ValueError(f"ContextualAttention: {name} must be a positive integer, got {value!r}")
        if not float(memory_budget_mb) > 0:
            raise ValueError(f"ContextualAttention: memory_budget_mb must be > 0, got {memory_budget_mb!r}")
        if query_chunk_size is not None and int(query_chunk_size) < 1:
            raise ValueError(f"ContextualAttention: query_chunk_size must be >= 1 or None, got {query_chunk_size!r}")
        self.ksize = int(ksize)
        self.stride = 1
        self.rate = int(rate)
        self.fuse_k = int(fuse_k)
        self.softmax_scale = float(softmax_scale)
        self.fuse = bool(fuse)
        self.mode = mode
        self.return_flow = bool(return_flow)
        self.return_attention = bool(return_attention)
        self.memory_budget_mb = float(memory_budget_mb)
        self.align_corners = None if align_corners is None else bool(align_corners)
        self.query_chunk_size = None if query_chunk_size is None else int(query_chunk_size)
        if mode == "deepfill":
            self._paste_kernel, self._norm_floor, self._paste_divisor = 2 * self.rate, 1e-4, 4.0
        else:
            self._paste_kernel, self._norm_floor, self._paste_divisor = 2 * self.rate - 1, 1e-8, 1.0
        self._use_align_corners = (mode == "deepfill") if self.align_corners is None else self.align_corners

    # ------------------------------------------------------------------ input checks
    def _check_inputs(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 3:
            raise ValueError("ContextualAttention expects inputs [f, b, mask]")
        f, b, mask = inputs
        for name, tensor in (("f", f), ("b", b), ("mask", mask)):
            if tensor.shape.rank != 4:
                raise ValueError(
                    f"ContextualAttention: {name} must be rank 4 [B, H, W, C], got shape {tuple(tensor.shape)}"
                )
        if f.shape[-1] is None or b.shape[-1] is None:
            raise ValueError("ContextualAttention: the channel dimension of f and b must be known")
        if f.shape[-1] != b.shape[-1]:
            raise ValueError(
                f"ContextualAttention: f and b channels differ: f {tuple(f.shape)} vs b {tuple(b.shape)}"
            )
        for axis in (1, 2):
            if f.shape[axis] is not None and b.shape[axis] is not None and f.shape[axis] != b.shape[axis]:
                raise ValueError(
                    f"ContextualAttention: f and b must have the same height and width, got f {tuple(f.shape)} "
                    f"and b {tuple(b.shape)}"
                )
            if f.shape[axis] is not None and f.shape[axis] % self.rate:
                raise ValueError(
                    f"ContextualAttention: height and width of f must be multiples of rate={self.rate}, "
                    f"got f {tuple(f.shape)}"
                )
        if mask.shape[-1] is not None and mask.shape[-1] != 1:
            raise ValueError(f"ContextualAttention: mask must have 1 channel, got mask {tuple(mask.shape)}")

    # ------------------------------------------------------------------ pieces of the algorithm
    def _downscale(self, x, grid_h, grid_w):
        if self._use_align_corners:
            return tf.compat.v1.image.resize_nearest_neighbor(x, tf.stack([grid_h, grid_w]), align_corners=True)
        return x[:, :: self.rate, :: self.rate, :]

    def _valid_sources(self, mask, height, width, grid_h, grid_w):
        """[B, N] float32: 1 where a key's window holds no hole (deepfill), 1 - dilated pooled mask (hifill)."""
        mask = tf.cast(mask, tf.float32)
        window = [1, self.ksize, self.ksize, 1]
        if self.mode == "deepfill":
            size = tf.stack([height, width])
            if self._use_align_corners:
                mask = tf.compat.v1.image.resize_nearest_neighbor(mask, size, align_corners=True)
            else:
                mask = tf.image.resize(mask, size, method="nearest")
            mask = self._downscale(mask, grid_h, grid_w)
            # Official: mean of the zero-padded window == 0; for masks in [0, 1] that is "window max == 0".
            window_max = tf.nn.max_pool2d(mask, window, 1, "SAME")
            valid = tf.cast(tf.equal(window_max, 0.0), tf.float32)
        else:
            mask_h, mask_w = tf.shape(mask)[1], tf.shape(mask)[2]
            tf.debugging.assert_equal(
                tf.stack([mask_h % grid_h, mask_w % grid_w]),
                0,
                message="ContextualAttention (hifill): the mask size must be an integer multiple of the H/rate x "
                "W/rate matching grid",
            )
            fh, fw = mask_h // grid_h, mask_w // grid_w
            batch = tf.shape(mask)[0]
            cells = tf.reduce_max(tf.reshape(mask, [batch, grid_h, fh, grid_w, fw]), axis=[2, 4])[..., None]
            valid = 1.0 - tf.nn.max_pool2d(cells, window, 1, "SAME")
        return tf.reshape(valid, [tf.shape(valid)[0], -1])

    def _query_patch_indices(self, cells, grid_w):
        """Flat indices into the SAME-padded downscaled f of the ksize x ksize window of each query cell."""
        k = self.ksize
        padded_w = grid_w + k - 1
        y = cells // grid_w
        x = cells % grid_w
        dy, dx = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
        return (y[:, None] + dy.reshape(1, -1)) * padded_w + x[:, None] + dx.reshape(1, -1)

    def _chunk_size(self, cells):
        """Query cells per chunk for a grid of ``cells`` cells: an int32 scalar tensor, or a Python int when
        ``cells`` is one (a plan made while tracing at a fixed size)."""
        if isinstance(cells, (int, np.integer)):
            if self.query_chunk_size is not None:
                return min(int(cells), self.query_chunk_size)
            rows = max(int(self.memory_budget_mb * 2**20) // (int(cells) * 4 * _SCORE_TEMPORARIES), 1)
            return min(rows, int(cells))
        n = tf.cast(cells, tf.int64)
        if self.query_chunk_size is not None:
            return tf.cast(tf.minimum(n, self.query_chunk_size), tf.int32)
        budget = tf.constant(int(self.memory_budget_mb * 2**20), tf.int64)
        row_bytes = n * 4 * _SCORE_TEMPORARIES
        rows = tf.maximum(budget // row_bytes, 1)
        return tf.cast(tf.minimum(rows, n), tf.int32)

    @staticmethod
    def _tile_order(grid_h, grid_w, chunk):
        """Query order grouping cells into th x tw tiles (chunk ~ th * tw): a square tile needs the fewest extra
        neighbour rows for the fuse. Returns (order [N], cells per chunk); NumPy and Python ints when the grid
        size and ``chunk`` are Python ints."""
        n = grid_h * grid_w
        if all(isinstance(v, (int, np.integer)) for v in (grid_h, grid_w, chunk)):
            side = int(np.floor(np.sqrt(np.float64(chunk))))
            tile_w = grid_w if chunk >= n else min(max(side, 1), grid_w)
            tile_h = grid_h if chunk >= n else max(chunk // tile_w, 1)
            tiles_x = (grid_w + tile_w - 1) // tile_w
            y, x = np.divmod(np.arange(n, dtype=np.int64), grid_w)
            key = ((y // tile_h) * tiles_x + x // tile_w) * (tile_h * tile_w) + (y % tile_h) * tile_w + x % tile_w
            return np.argsort(key, kind="stable").astype(np.int32), tile_h * tile_w
        side = tf.cast(tf.floor(tf.sqrt(tf.cast(chunk, tf.float64))), tf.int32)
        tile_w = tf.where(chunk >= n, grid_w, tf.clip_by_value(side, 1, grid_w))
        tile_h = tf.where(chunk >= n, grid_h, tf.maximum(chunk // tile_w, 1))
        tiles_x = (grid_w + tile_w - 1) // tile_w
        cells = tf.range(n)
        y, x = cells // grid_w, cells % grid_w
        key = ((y // tile_h) * tiles_x + x // tile_w) * (tile_h * tile_w) + (y % tile_h) * tile_w + x % tile_w
        return tf.argsort(key, stable=True), tile_h * tile_w

    def _fused_scores(self, queries_padded, keys, inverse_norms, cells, grid_h, grid_w):
        """Fused scores [B, len(cells), N] of the query cells ``cells`` against every source cell."""
        n = grid_h * grid_w
        batch = tf.shape(keys)[0]

        def raw_scores(rows):
            patches = tf.gather(queries_padded, self._query_patch_indices(rows, grid_w), axis=1)
            patches = tf.reshape(patches, [batch, _length(rows), -1])
            return tf.matmul(patches, keys, transpose_b=True) * inverse_norms

        if not self.fuse:
            return raw_scores(cells)
        offsets = _fuse_offsets(self.fuse_k)
        neighbours = {d: _column_major_neighbour(cells, d, grid_h, grid_w) for d in offsets}
        # S1 rows needed: the column-major neighbours of the chunk; raw rows needed: their raster neighbours.
        needed = _index_set(_concat(list(neighbours.values())), n)
        raw_rows = _index_set(_concat([needed + d for d in offsets]), n)
        raw = raw_scores(raw_rows)
        raw = tf.concat([raw, tf.zeros_like(raw[:, :1])], axis=1)  # zero row for out-of-range neighbours
        raw_pos = _positions(raw_rows, n)

        def row_of(table, positions, index):
            in_range = (index >= 0) & (index < n)
            if isinstance(index, np.ndarray):
                return tf.gather(table, positions[np.where(in_range, index, n)], axis=1)
            return tf.gather(table, tf.gather(positions, tf.where(in_range, index, n)), axis=1)

        pass1 = None
        for d in offsets:  # S1[i, j] = sum_d S[i + d, j + d] (raster order, zero outside)
            term = _shift_last_axis(row_of(raw, raw_pos, needed + d), d)
            pass1 = term if pass1 is None else pass1 + term
        del raw
        pass1 = tf.concat([pass1, tf.zeros_like(pass1[:, :1])], axis=1)
        needed_pos = _positions(needed, n)
        fused = None
        for d in offsets:  # S2[p, q] = sum_d S1[cm_d(p), cm_d(q)] (column-major neighbours)
            term = _permute_sources_column_major(row_of(pass1, needed_pos, neighbours[d]), d, grid_h, grid_w)
            fused = term if fused is None else fused + term
        return fused

    # ------------------------------------------------------------------ forward
    def call(self, inputs):
        self._check_inputs(inputs)
        f, b, mask = inputs
        f32 = tf.cast(f, tf.float32)
        b32 = tf.cast(b, tf.float32)
        shape = tf.shape(f32)
        batch, height, width, channels = shape[0], shape[1], shape[2], f.shape[-1]
        # Fixed-size export: Python ints, so that the chunk loop below unrolls with constant indices.
        static = unrolling() and f.shape[:3].is_fully_defined()
        if static:
            batch, height, width = f.shape[:3]
        tf.debugging.assert_equal(
            tf.shape(b32)[:3], shape[:3], message="ContextualAttention: f and b must have the same batch, H and W"
        )
        tf.debugging.assert_equal(
            tf.stack([height % self.rate, width % self.rate]),
            0,
            message=f"ContextualAttention: height and width of f must be multiples of rate={self.rate}",
        )
        grid_h, grid_w = height // self.rate, width // self.rate
        n = grid_h * grid_w

        # Keys: ksize x ksize patches of the downscaled b, normalised by 1 / sqrt(max(sum w^2, floor^2)) (the
        # official 1 / max(||w||, floor), with a finite gradient for all-zero patches). The norms come from the
        # image (a k x k box sum of squared pixels, the same SAME zero padding) and scale the scores' columns, so
        # no other key-sized tensor is ever held (the keys are 9x the downscaled b).
        k = self.ksize
        b_small = self._downscale(b32, grid_h, grid_w)
        keys = tf.image.extract_patches(b_small, [1, k, k, 1], [1, 1, 1, 1], [1, 1, 1, 1], "SAME")
        keys = tf.reshape(keys, [batch, n, k * k * channels])
        sum_sq = tf.nn.conv2d(tf.reduce_sum(tf.square(b_small), axis=-1, keepdims=True), tf.ones([k, k, 1, 1]),
                              1, "SAME")
        # max(sum_sq, floor^2) as a select: TFLite's XNNPACK delegate fails to prepare a MAXIMUM with a non-zero
        # constant after a convolution (TF 2.21). Same value and gradient as tf.maximum.
        floor_sq = self._norm_floor**2
        inverse_norms = tf.math.rsqrt(tf.where(sum_sq >= floor_sq, sum_sq, floor_sq))
        inverse_norms = tf.reshape(inverse_norms, [batch, 1, n])
        # Queries are gathered per chunk from the SAME-padded downscaled f (never materialised as patches).
        before, after = (k - 1) // 2, k - 1 - (k - 1) // 2
        queries = tf.pad(self._downscale(f32, grid_h, grid_w), [[0, 0], [before, after], [before, after], [0, 0]])
        queries = tf.reshape(queries, [batch, -1, channels])

        valid = self._valid_sources(mask, height, width, grid_h, grid_w)  # [B, N]

        kp, s = self._paste_kernel, self.rate
        pad_top = max(kp - s, 0) // 2  # TF SAME for sizes divisible by the stride
        # Paste patches (kp <= 2s pixels from s * q - pad_top) span cells q and q + 1 of b padded by pad_top and
        # cut into s x s blocks. Keeping the blocks ((gh + 1) x (gw + 1) x s*s*C, about b's size) instead of the
        # N x kp*kp*C patch matrix (4x b's size for DeepFill) saves memory; `paste` below gets the same values.
        blocks_h, blocks_w = grid_h + 1, grid_w + 1
        blocks = tf.pad(b32, [[0, 0], [pad_top, blocks_h * s - height - pad_top],
                              [pad_top, blocks_w * s - width - pad_top], [0, 0]])
        if s > 1:  # (space_to_depth needs blocks of at least 2)
            blocks = tf.nn.space_to_depth(blocks, s)
        blocks = tf.reshape(blocks, [batch, blocks_h * blocks_w, s * s * channels])

        def paste(weights):
            """sum_q weights[p, q] * (kp x kp patch of b at source cell q) -> [B, count, kp, kp, C]."""
            count = weights.shape[1] if static else tf.shape(weights)[1]
            weights = tf.reshape(weights, [batch, count, grid_h, grid_w])
            rows = []
            for dy in (0, 1):
                row = []
                for dx in (0, 1):
                    # Block q + (dy, dx) of every source q: shift the weights by (dy, dx) instead of the blocks.
                    shifted = tf.pad(weights, [[0, 0], [0, 0], [dy, 1 - dy], [dx, 1 - dx]])
                    part = tf.matmul(tf.reshape(shifted, [batch, count, blocks_h * blocks_w]), blocks)
                    row.append(tf.reshape(part, [batch, count, s, s, channels]))
                rows.append(tf.concat(row, axis=3))
            return tf.concat(rows, axis=2)[:, :, :kp, :kp]

        chunk = self._chunk_size(n)
        order, chunk = self._tile_order(grid_h, grid_w, chunk)
        num_chunks = (n + chunk - 1) // chunk
        dump = height * width  # out-of-image paste targets land in this extra row
        dy, dx = np.meshgrid(np.arange(kp), np.arange(kp), indexing="ij")
        dy, dx = dy.reshape(1, -1), dx.reshape(1, -1)

        def attend(cells, out, best, attention):
            """Attention of the query cells ``cells`` (a tensor, or NumPy in a fixed-size plan), accumulated."""
            scores = self._fused_scores(queries, keys, inverse_norms, cells, grid_h, grid_w)
            scores = scores * valid[:, None, :]
            weights = tf.nn.softmax(scores * self.softmax_scale, axis=-1) * valid[:, None, :]
            count = _length(cells)
            contributions = tf.reshape(paste(weights), [batch, count * kp * kp, channels])
            rows = (cells // grid_w)[:, None] * s - pad_top + dy
            cols = (cells % grid_w)[:, None] * s - pad_top + dx
            inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
            where = np.where if static else tf.where
            target = tf.reshape(where(inside, rows * width + cols, dump), [-1, 1])
            out = tf.tensor_scatter_nd_add(out, target, tf.transpose(contributions, [1, 0, 2]))
            if self.return_flow:
                argmax = tf.argmax(weights, axis=-1, output_type=tf.int32)  # [B, count]
                best = tf.tensor_scatter_nd_update(best, cells[:, None], tf.transpose(argmax))
            if self.return_attention:
                attention = tf.tensor_scatter_nd_update(attention, cells[:, None], tf.transpose(weights, [1, 0, 2]))
            return out, best, attention

        def body(i, out, best, attention):
            return (i + 1, *attend(order[i * chunk : tf.minimum((i + 1) * chunk, n)], out, best, attention))

        out = tf.zeros(tf.stack([dump + 1, batch, channels]), tf.float32)
        best = tf.zeros(tf.stack([n, batch]) if self.return_flow else [0, 0], tf.int32)
        attention = tf.zeros(tf.stack([n, batch, n]) if self.return_attention else [0, 0, 0], tf.float32)
        if static:
            for start in range(0, n, chunk):
                out, best, attention = attend(order[start : start + chunk], out, best, attention)
        else:
            # parallel_iterations=1: concurrent iterations would multiply the score-tile memory.
            _, out, best, attention = tf.while_loop(
                lambda i, *_: i < num_chunks,
                body,
                [tf.constant(0), out, best, attention],
                parallel_iterations=1,
            )
        y = tf.reshape(out[:dump], tf.stack([height, width, batch, channels]))
        y = tf.transpose(y, [2, 0, 1, 3]) / self._paste_divisor
        y = tf.cast(y, self.compute_dtype)
        y.set_shape(f.shape)
        results = [y]
        if self.return_flow:
            results.append(self._flow_image(best, grid_h, grid_w, height, width, f.shape))
        if self.return_attention:
            attention = tf.transpose(attention, [1, 0, 2])
            attention.set_shape([f.shape[0], None, None])
            results.append(attention)
        return results[0] if len(results) == 1 else tuple(results)

    def _flow_image(self, best, grid_h, grid_w, height, width, static_shape):
        best = tf.transpose(best)  # [B, N]
        batch = tf.shape(best)[0]
        cells = tf.range(grid_h * grid_w)[None, :]
        offsets = tf.stack([best // grid_w - cells // grid_w, best % grid_w - cells % grid_w], axis=-1)
        offsets = tf.reshape(offsets, tf.stack([batch, grid_h, grid_w, 2]))
        flow = tf.image.resize(flow_to_rgb(offsets), tf.stack([height, width]), method="nearest")
        flow.set_shape([static_shape[0], static_shape[1], static_shape[2], 3])
        return flow

    def compute_output_shape(self, input_shape):
        f_shape = tuple(input_shape[0])
        outputs = [f_shape]
        if self.return_flow:
            outputs.append((*f_shape[:3], 3))
        if self.return_attention:
            cells = None
            if f_shape[1] is not None and f_shape[2] is not None:
                cells = (f_shape[1] // self.rate) * (f_shape[2] // self.rate)
            outputs.append((f_shape[0], cells, cells))
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "ksize": self.ksize,
                "stride": self.stride,
                "rate": self.rate,
                "fuse_k": self.fuse_k,
                "softmax_scale": self.softmax_scale,
                "fuse": self.fuse,
                "mode": self.mode,
                "return_flow": self.return_flow,
                "return_attention": self.return_attention,
                "memory_budget_mb": self.memory_budget_mb,
                "align_corners": self.align_corners,
                "query_chunk_size": self.query_chunk_size,
            }
        )
        return config
