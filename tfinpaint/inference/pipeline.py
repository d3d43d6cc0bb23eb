"""The inference pipeline: one TensorFlow graph from a uint8 photo and its hole mask to the completed uint8 photo.

``tfinpaint.load(...)`` (the ``Inpainter``) and the exported SavedModel both run this module's graph, so the API and
the export give the same bytes. Everything around the network happens here:

* reflect padding of the network input to the model's size factor, and cropping back;
* the high-resolution strategy (names as in IOPaint, which photo-editing users know):

  - ``original``: the network sees the whole image at full resolution;
  - ``crop``: each group of holes (holes closer than twice the margin form one group) is cut out with its bounding
    box grown by ``crop_margin`` pixels of context; a crop whose long side exceeds the model's working size is
    downscaled to it (area averages), inpainted, and its prediction upscaled back (bicubic);
  - ``resize``: the whole image is downscaled to ``resize_limit`` on its long side, inpainted and upscaled back;
  - ``cra``: CRA/HiFill's own (network at the working size, the high-frequency residual aggregated at full
    resolution with the network's attention, Yi et al. 2020);

  ``crop`` and ``resize`` apply only above ``trigger_size`` (long side); smaller images run ``original``;
* compositing: the prediction is rounded to grey levels and pasted into the hole pixels only, so known pixels are
  the input's own bytes whatever the strategy.

The graph takes dynamic height and width, so one trace serves every photo size (``traces`` counts them).
"""
from __future__ import annotations

import dataclasses

import tensorflow as tf

STRATEGIES = ("original", "crop", "resize", "cra")
# Grid cell (pixels) on which holes are grouped for the crop strategy; boxes are refined to exact pixels after.
_GROUP_CELL = 16


@dataclasses.dataclass(frozen=True)
class HDSettings:
    """How an image larger than the model's working size reaches the network (see the module docstring).

    strategy: one of ``STRATEGIES``. working_size: longest side a crop may have at the network (larger crops are
    downscaled to it); for ``cra`` the side the network runs at. crop_margin: context pixels around each hole group.
    resize_limit: long side of the ``resize`` strategy's network input. trigger_size: images whose long side is at
    most this run ``original`` under ``crop`` and ``resize``.
    """

    strategy: str = "original"
    working_size: int = 512
    crop_margin: int = 128
    resize_limit: int = 1024
    trigger_size: int = 1024

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"hd_strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        for name in ("working_size", "crop_margin", "resize_limit", "trigger_size"):
            value = getattr(self, name)
            lowest = 0 if name == "crop_margin" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                kind = "non-negative" if lowest == 0 else "positive"
                raise ValueError(f"hd_{name} must be a {kind} integer, got {value!r}")


def pad_indices(size, target, symmetric):
    """Source index of each position 0..target-1 along an axis of length ``size`` padded at its end, as
    ``numpy.pad(mode="symmetric")`` when ``symmetric`` else ``mode="reflect"`` (periodic, so any padding works)."""
    positions = tf.range(target)

    def fold(period, mirror_offset):
        phase = positions % tf.maximum(period, 1)
        return tf.where(phase >= size, period - mirror_offset - phase, phase)

    return tf.where(symmetric, fold(2 * size, 1), fold(2 * size - 2, 0))


def height_width(image):
    """(H, W) of [H, W, ...]: Python ints where the shape is static, so a fixed-size trace (TFLite) folds them."""
    dynamic = tf.shape(image)
    return tuple(image.shape[axis] if image.shape[axis] is not None else dynamic[axis] for axis in (0, 1))


def pad_to_multiple(image, hole, factor):
    """Pads [H, W, C] ``image`` and [H, W] ``hole`` at the bottom / right to multiples of ``factor`` by reflection
    (symmetric on both axes when a side is 1 pixel, since a 1-pixel side has nothing to reflect)."""
    height, width = height_width(image)
    symmetric = tf.minimum(height, width) <= 1
    rows = pad_indices(height, (height + factor - 1) // factor * factor, symmetric)
    cols = pad_indices(width, (width + factor - 1) // factor * factor, symmetric)

    def pad(x):
        return tf.gather(tf.gather(x, rows, axis=0), cols, axis=1)

    return pad(image), pad(hole)


def _to_levels(unit):
    """[0, 1] floats -> int32 grey levels (int32: TFLite's float -> uint8 cast is unreliable)."""
    return tf.cast(tf.round(tf.clip_by_value(unit, 0.0, 1.0) * 255.0), tf.int32)


def _scaled_side(side, scale):
    return tf.maximum(1, tf.cast(tf.round(tf.cast(side, tf.float64) * scale), tf.int32))


def _downscale(image, hole, scale):
    """Area-averaged uint8 image and hole of ``scale`` (<= 1) times the size; a small pixel is a hole if any
    pixel under it is, so no hole pixel is left unpredicted."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    size = tf.stack([_scaled_side(height, scale), _scaled_side(width, scale)])
    small = tf.image.resize(image, size, method="area")
    small = tf.cast(tf.clip_by_value(tf.round(small), 0.0, 255.0), tf.uint8)
    small_hole = tf.image.resize(tf.cast(hole, tf.float32)[:, :, None], size, method="area")[:, :, 0] > 0
    return small, small_hole


def _upscale(prediction, height, width):
    return tf.clip_by_value(tf.image.resize(prediction, tf.stack([height, width]), method="bicubic"), 0.0, 1.0)


def hole_groups(hole, margin, cell=_GROUP_CELL):
    """Cell-aligned boxes [N, 4] (top, bottom, left, right; int32) around groups of holes: holes closer than about
    ``2 * margin`` pixels share a group. Computed on a grid of ``cell``-pixel cells by propagating labels through the
    dilated hole cells, so it is graph code with no Python loop over pixels."""
    height, width = tf.shape(hole)[0], tf.shape(hole)[1]
    grid_h, grid_w = (height + cell - 1) // cell, (width + cell - 1) // cell
    padded = tf.pad(hole, [[0, grid_h * cell - height], [0, grid_w * cell - width]])
    occupied = tf.reduce_any(tf.reshape(padded, tf.stack([grid_h, cell, grid_w, cell])), axis=[1, 3])
    radius = (int(margin) + cell - 1) // cell
    dilated = tf.nn.max_pool2d(tf.cast(occupied, tf.float32)[None, :, :, None], 2 * radius + 1, 1, "SAME")[0, :, :, 0]
    dilated = dilated > 0
    # Every dilated cell starts with its own label; each round takes the largest label among its neighbours.
    indices = tf.reshape(tf.range(1, grid_h * grid_w + 1, dtype=tf.float32), tf.stack([grid_h, grid_w]))
    labels = tf.where(dilated, indices, 0.0)

    def spread(current, _):
        grown = tf.where(dilated, tf.nn.max_pool2d(current[None, :, :, None], 3, 1, "SAME")[0, :, :, 0], 0.0)
        return grown, tf.reduce_any(tf.not_equal(grown, current))

    labels, _ = tf.while_loop(lambda _, changed: changed, spread, (labels, tf.constant(True)))
    cells = tf.cast(tf.where(occupied), tf.int32)  # hole cells [M, 2]
    ids, group = tf.unique(tf.gather_nd(labels, cells))
    count = tf.size(ids)
    first = tf.math.unsorted_segment_min(cells, group, count)
    last = tf.math.unsorted_segment_max(cells, group, count)
    top, left = first[:, 0] * cell, first[:, 1] * cell
    bottom = tf.minimum((last[:, 0] + 1) * cell, height)
    right = tf.minimum((last[:, 1] + 1) * cell, width)
    return tf.stack([top, bottom, left, right], axis=1)


def _exact_box(hole, box):
    """The box shrunk to the exact extent of the hole pixels inside it."""
    region = hole[box[0]:box[1], box[2]:box[3]]
    rows = tf.cast(tf.reshape(tf.where(tf.reduce_any(region, axis=1)), [-1]), tf.int32)
    cols = tf.cast(tf.reshape(tf.where(tf.reduce_any(region, axis=0)), [-1]), tf.int32)
    return (box[0] + rows[0], box[0] + rows[-1] + 1, box[2] + cols[0], box[2] + cols[-1] + 1)


class InpaintingPipeline(tf.Module):
    """A generator plus everything around it, as one graph: ``pipeline(image_uint8, hole_bool) -> uint8``.

    generator: called as ``generator(image [1, h, w, 3] float [0, 1], mask [1, h, w, 1], training=False)``
    returning a dict with at least ``"raw"`` (and ``"output"`` / ``"attention"`` for the ``cra`` strategy).
    size_factor: network input sides are padded to its multiples. attention_cell: pixels per attention cell of a
    CRA generator at its working size.
    """

    def __init__(self, generator, size_factor: int, settings: HDSettings | None = None,
                 attention_cell: int | None = None):
        super().__init__()
        # Only the weights are tracked: a tracked Keras model would trace its own default signature on save.
        object.__setattr__(self, "generator", generator)
        self.weights = list(generator.variables)
        self.size_factor = int(size_factor)
        self.settings = settings or HDSettings()
        if self.settings.strategy == "cra" and not attention_cell:
            raise ValueError("the cra strategy needs a generator with contextual residual aggregation (CRA/HiFill)")
        if self.settings.strategy == "cra" and self.settings.working_size % self.size_factor:
            raise ValueError(f"the cra strategy's working_size must be a multiple of {self.size_factor}, got "
                             f"{self.settings.working_size}")
        self.attention_cell = attention_cell
        self.traces = 0
        # Untracked: a SavedModel of this module must not save these tf.functions (the export traces its own).
        object.__setattr__(self, "_functions", {})

    # -- entry points ------------------------------------------------------------------------------------------
    def function(self, stages=()):
        """The compiled graph returning the uint8 output and the working-resolution ``stages`` of the network
        (float32 [h, w, 3] in [0, 1]) of the first network run. One trace for any image size."""
        stages = tuple(stages)
        if stages not in self._functions:
            def run(image, hole):
                self.traces += 1  # runs only while tracing
                return self.inpaint(image, hole, stages)

            self._functions[stages] = tf.function(run, input_signature=[
                tf.TensorSpec([None, None, 3], tf.uint8, name="image"),
                tf.TensorSpec([None, None], tf.bool, name="hole")])
        return self._functions[stages]

    def __call__(self, image, hole, stages=()):
        return self.function(stages)(image, hole)

    # -- graph code --------------------------------------------------------------------------------------------
    def inpaint(self, image, hole, stages=()):
        """image uint8 [H, W, 3], hole bool [H, W] -> (uint8 [H, W, 3], {stage: float32 [h, w, 3]}); a stage the
        network does not have comes back empty ([0, 0, 3]); without holes the image comes back as it is."""
        tf.debugging.assert_equal(tf.shape(hole), tf.shape(image)[:2], message="the mask must be H x W of the image")

        def nothing():
            unit = tf.cast(image, tf.float32) / 255.0
            return image, {key: unit for key in stages}

        if self.settings.strategy in ("original", "resize"):
            return self._strategy(image, hole, stages)  # pastes nothing where there is no hole
        return tf.cond(tf.reduce_any(hole), lambda: self._strategy(image, hole, stages), nothing)

    def _strategy(self, image, hole, stages):
        strategy = self.settings.strategy
        long_side = tf.maximum(tf.shape(image)[0], tf.shape(image)[1])
        if strategy == "cra":
            return self._cra(image, hole, stages)
        if strategy == "original":
            return self._whole(image, hole, stages, 1.0)
        small = long_side <= self.settings.trigger_size
        if strategy == "resize":
            limit = self.settings.resize_limit / tf.cast(long_side, tf.float64)
            scale = tf.minimum(tf.constant(1.0, tf.float64), limit)
            return self._whole(image, hole, stages, tf.where(small, tf.constant(1.0, tf.float64), scale))
        return tf.cond(small, lambda: self._whole(image, hole, stages, 1.0), lambda: self._crops(image, hole, stages))

    def network(self, image, hole, stages=()):
        """The network on a uint8 image of any size: padded to the size factor, cropped back. Returns float32
        [h, w, 3] "raw" plus ``stages``."""
        height, width = height_width(image)
        padded_image, padded_hole = pad_to_multiple(image, tf.cast(hole, tf.float32), self.size_factor)
        outputs = self.generator(tf.cast(padded_image, tf.float32)[None] / 255.0, padded_hole[None, :, :, None],
                                 training=False)
        return {key: tf.cast(outputs[key], tf.float32)[0, :height, :width] if key in outputs else tf.zeros([0, 0, 3])
                for key in ("raw", *stages)}

    def _network_at_scale(self, image, hole, scale, stages):
        """The network on ``image`` downscaled by ``scale`` (no resampling at 1); the raw prediction comes back
        at the image's size."""
        height, width = tf.shape(image)[0], tf.shape(image)[1]

        def native():
            return self.network(image, hole, stages)

        def scaled():
            small, small_hole = _downscale(image, hole, scale)
            outputs = self.network(small, small_hole, stages)
            outputs["raw"] = _upscale(outputs["raw"], height, width)
            return outputs

        if isinstance(scale, float):
            return native() if scale >= 1.0 else scaled()
        return tf.cond(scale < 1.0, scaled, native)

    def _whole(self, image, hole, stages, scale):
        outputs = self._network_at_scale(image, hole, scale, stages)
        levels = _to_levels(outputs.pop("raw"))
        return tf.cast(tf.where(hole[:, :, None], levels, tf.cast(image, tf.int32)), tf.uint8), outputs

    def _crops(self, image, hole, stages):
        boxes = hole_groups(hole, self.settings.crop_margin)
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        margin = int(self.settings.crop_margin)

        def paste(result, index, with_stages):
            top, bottom, left, right = _exact_box(hole, boxes[index])
            top, left = tf.maximum(top - margin, 0), tf.maximum(left - margin, 0)
            bottom, right = tf.minimum(bottom + margin, height), tf.minimum(right + margin, width)
            crop, crop_hole = image[top:bottom, left:right], hole[top:bottom, left:right]
            long_side = tf.cast(tf.maximum(bottom - top, right - left), tf.float64)
            scale = tf.minimum(tf.constant(1.0, tf.float64), self.settings.working_size / long_side)
            outputs = self._network_at_scale(crop, crop_hole, scale, stages if with_stages else ())
            where = tf.where(crop_hole)
            values = tf.gather_nd(tf.cast(_to_levels(outputs.pop("raw")), tf.uint8), where)
            offset = tf.cast(tf.stack([top, left]), tf.int64)
            return tf.tensor_scatter_nd_update(result, where + offset, values), outputs

        def paste_rest(result, start):
            _, result = tf.while_loop(lambda index, _: index < tf.shape(boxes)[0],
                                      lambda index, current: (index + 1, paste(current, index, False)[0]),
                                      (tf.constant(start), result))
            return result

        if not stages:
            return paste_rest(image, 0), {}
        result, outputs = paste(image, 0, True)  # the stages of the first group's network run
        return paste_rest(result, 1), outputs

    def _cra(self, image, hole, stages):
        """CRA/HiFill at high resolution: the network at ``working_size`` on the long side, the high-frequency
        residual aggregated at full resolution with the network's attention matrix; images at most that size
        run whole."""
        working = int(self.settings.working_size)
        long_side = tf.maximum(tf.shape(image)[0], tf.shape(image)[1])
        return tf.cond(long_side > working, lambda: self._cra_high_res(image, hole, stages),
                       lambda: self._whole(image, hole, stages, 1.0))

    def _cra_high_res(self, image, hole, stages):
        """Only the cells around the holes are computed at full resolution: the residual of every source cell is
        streamed one row of cells at a time into the attention-weighted sums of the cells the holes need, so memory
        stays a few bands of the image whatever its size (108 MP included)."""
        factor, cell, working = self.size_factor, int(self.attention_cell), int(self.settings.working_size)
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        scale = working / tf.cast(tf.maximum(height, width), tf.float64)

        def short(side):
            # The short side is the multiple of the factor nearest to keeping the aspect ratio.
            return tf.maximum(factor, tf.cast(tf.round(tf.cast(side, tf.float64) * scale / factor), tf.int32) * factor)

        small_h = tf.where(height >= width, working, short(height))
        small_w = tf.where(height >= width, short(width), working)
        grid_h, grid_w = small_h // cell, small_w // cell
        small_image, small_hole = _area_downscale(image, hole, small_h, small_w)
        outputs = self.generator(small_image[None], tf.cast(small_hole, tf.float32)[None, :, :, None], training=False)
        small_output = tf.cast(outputs["output"], tf.float32)[0]
        attention = tf.cast(outputs["attention"], tf.float32)[0]

        # A full-resolution grid of square cells (side `side`) with the working image's proportions, at least the
        # image's size; the image is resampled to it (bilinear; the identity when the sizes agree).
        side = tf.maximum((height + grid_h - 1) // grid_h, (width + grid_w - 1) // grid_w)
        big_h, big_w = grid_h * side, grid_w * side

        # The cells whose pixels the holes' bounding box reads when the grid is resampled back to the image.
        rows = tf.cast(tf.reshape(tf.where(tf.reduce_any(hole, axis=1)), [-1]), tf.int32)
        cols = tf.cast(tf.reshape(tf.where(tf.reduce_any(hole, axis=0)), [-1]), tf.int32)
        top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        row_lower, row_upper, _ = _bilinear_taps(big_h, height, top, bottom - top)
        col_lower, col_upper, _ = _bilinear_taps(big_w, width, left, right - left)
        cell_top, cell_bottom = row_lower[0] // side, row_upper[-1] // side + 1
        cell_left, cell_right = col_lower[0] // side, col_upper[-1] // side + 1
        block_rows, block_cols = cell_bottom - cell_top, cell_right - cell_left
        wanted = tf.reshape((tf.range(cell_top, cell_bottom)[:, None] * grid_w
                             + tf.range(cell_left, cell_right)[None, :]), [-1])
        weights = tf.gather(attention, wanted)  # [cells wanted, N]
        hole_u8 = tf.cast(hole, tf.uint8)[:, :, None]

        def source_band(band, total):
            start = band * side
            residual_rows = _resize_band(image, height, width, big_h, big_w, start, side) / 255.0
            base = _resize_band(small_image, small_h, small_w, big_h, big_w, start, side)
            band_hole = _resize_band(hole_u8, height, width, big_h, big_w, start, side) > 0
            residual = tf.where(band_hole, 0.0, residual_rows - base)  # [side, big_w, 3]
            residual = tf.reshape(tf.transpose(tf.reshape(residual, tf.stack([side, grid_w, side, 3])), [1, 0, 2, 3]),
                                  tf.stack([grid_w, side * side * 3]))
            band_weights = weights[:, band * grid_w:(band + 1) * grid_w]
            return band + 1, total + tf.matmul(band_weights, residual)

        total = tf.zeros(tf.stack([tf.size(wanted), side * side * 3]))
        _, total = tf.while_loop(lambda band, _: band < grid_h, source_band, (tf.constant(0), total),
                                 parallel_iterations=1)
        aggregated = tf.reshape(tf.transpose(tf.reshape(total, tf.stack([block_rows, block_cols, side, side, 3])),
                                             [0, 2, 1, 3, 4]), tf.stack([block_rows * side, block_cols * side, 3]))
        region_top, region_left = cell_top * side, cell_left * side
        upsampled = _resize_region(small_output, small_h, small_w, big_h, big_w, region_top, block_rows * side,
                                   region_left, block_cols * side)
        value = tf.clip_by_value(upsampled + aggregated, 0.0, 1.0) * 255.0
        # Back to the input's size (bilinear) over the holes' bounding box, before rounding.
        value = _resize_region(value, big_h, big_w, height, width, top, bottom - top, left, right - left,
                               offset=(region_top, region_left))
        levels = tf.cast(tf.round(value), tf.uint8)
        where = tf.where(hole[top:bottom, left:right])
        result = tf.tensor_scatter_nd_update(image, where + tf.cast(tf.stack([top, left]), tf.int64),
                                             tf.gather_nd(levels, where))
        steps = {key: tf.cast(outputs[key], tf.float32)[0] if key in outputs else tf.zeros([0, 0, 3]) for key in stages}
        return result, steps


def _bilinear_taps(in_size, out_size, start, count):
    """Source rows (lower, upper) and weights of ``tf.image.resize(..., "bilinear")`` (half-pixel centres, no
    antialiasing) for output positions ``start .. start + count - 1`` of an axis resized from ``in_size`` to
    ``out_size``. Equal sizes give the identity exactly."""
    scale = tf.cast(in_size, tf.float32) / tf.cast(out_size, tf.float32)
    position = (tf.cast(tf.range(start, start + count), tf.float32) + 0.5) * scale - 0.5
    floor = tf.floor(position)
    lower = tf.maximum(tf.cast(floor, tf.int32), 0)
    upper = tf.minimum(tf.cast(tf.math.ceil(position), tf.int32), in_size - 1)
    return lower, upper, position - floor


def _resize_region(x, in_h, in_w, out_h, out_w, top, rows, left, cols, offset=(0, 0)):
    """Rows ``top ..`` and columns ``left ..`` of ``x`` [H', W', C] bilinearly resized from ``in_h x in_w`` to
    ``out_h x out_w``, where ``x`` holds the input from row / column ``offset`` on (only what those outputs read)."""
    lower, upper, weight = _bilinear_taps(in_h, out_h, top, rows)
    # Rows are gathered before the cast, so a uint8 image is never converted whole.
    a = tf.cast(tf.gather(x, lower - offset[0], axis=0), tf.float32)
    b = tf.cast(tf.gather(x, upper - offset[0], axis=0), tf.float32)
    x = a + (b - a) * weight[:, None, None]
    lower, upper, weight = _bilinear_taps(in_w, out_w, left, cols)
    a, b = tf.gather(x, lower - offset[1], axis=1), tf.gather(x, upper - offset[1], axis=1)
    return a + (b - a) * weight[None, :, None]


def _resize_band(x, in_h, in_w, out_h, out_w, top, rows):
    """Full-width rows ``top .. top + rows - 1`` of ``x`` bilinearly resized to ``out_h x out_w`` (float32)."""
    return _resize_region(x, in_h, in_w, out_h, out_w, top, rows, 0, out_w)


def _area_downscale(image, hole, height, width, band=256):
    """``tf.image.resize(image, (height, width), "area")`` / 255 and the small hole (any hole pixel under a small
    pixel), computed one band of input rows at a time as products with box-filter matrices, so a 108 MP photo is
    never held as float32 whole."""
    in_h, in_w = tf.shape(image)[0], tf.shape(image)[1]

    def box(in_size, out_size):
        # Overlap of input pixel [x, x + 1) with output pixel i's span [i s, (i + 1) s), divided by s.
        ratio = tf.cast(in_size, tf.float64) / tf.cast(out_size, tf.float64)
        starts = tf.cast(tf.range(out_size), tf.float64)[:, None] * ratio
        pixels = tf.cast(tf.range(in_size), tf.float64)[None, :]
        overlap = tf.minimum(pixels + 1.0, starts + ratio) - tf.maximum(pixels, starts)
        return tf.cast(tf.maximum(overlap, 0.0) / ratio, tf.float32)

    rows, cols = box(in_h, height), box(in_w, width)

    def add_band(start, image_sum, hole_sum):
        stop = tf.minimum(start + band, in_h)
        pixels = tf.concat([tf.cast(image[start:stop], tf.float32), tf.cast(hole[start:stop], tf.float32)[:, :, None]],
                           axis=2)
        narrowed = tf.einsum("wx,bxc->bwc", cols, pixels)
        summed = tf.einsum("hb,bwc->hwc", rows[:, start:stop], narrowed)
        return stop, image_sum + summed[:, :, :3], hole_sum + summed[:, :, 3]

    _, image_sum, hole_sum = tf.while_loop(
        lambda start, *_: start < in_h, add_band,
        (tf.constant(0), tf.zeros(tf.stack([height, width, 3])), tf.zeros(tf.stack([height, width]))),
        parallel_iterations=1)
    return image_sum / 255.0, hole_sum > 0
