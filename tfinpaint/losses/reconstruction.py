"""Pixel reconstruction losses of the inpainting papers.

Conventions shared by every function here:

- Masks are 1 = hole, 0 = known, shaped ``[B, H, W, 1]`` (or anything that broadcasts against the images
  where stated). Weighting losses use the mask values as they are (soft masks allowed);
  ``spatial_discount`` and ``total_variation_hole`` need a set of hole pixels and threshold at 0.5.
- Inputs may be any float dtype (e.g. bfloat16 under a mixed policy); everything is computed in float32
  and the result is a scalar float32.
- Means are taken over the *local* batch and all other axes. Under ``tf.distribute`` the caller scales by
  the number of replicas (or uses ``tf.nn.compute_average_loss`` style weighting) as usual.
"""
from __future__ import annotations

import tensorflow as tf

from tfinpaint.losses._inputs import as_float32

__all__ = [
    "l1",
    "masked_l1",
    "spatial_discount",
    "discounted_l1",
    "masked_mse",
    "total_variation_hole",
]


def _require_rank4(tensor, function, argument, channels=None):
    """Static check of the ``[B, H, W, C]`` layout (skipped for dimensions unknown at trace time)."""
    shape = tensor.shape
    if shape.rank is not None and shape.rank != 4:
        raise ValueError(
            f"tfinpaint.losses.{function}: `{argument}` must be rank 4 [B, H, W, C], got shape {shape}"
        )
    if channels is not None and shape.rank == 4 and shape[-1] is not None and shape[-1] not in channels:
        expected = " or ".join(str(c) for c in channels)
        raise ValueError(
            f"tfinpaint.losses.{function}: `{argument}` must have {expected} channel(s), got shape {shape}"
        )


def _require_broadcastable(a, b, function, names):
    try:
        tf.broadcast_static_shape(a.shape, b.shape)
    except ValueError:
        raise ValueError(
            f"tfinpaint.losses.{function}: `{names[0]}` {a.shape} and `{names[1]}` {b.shape} do not broadcast"
        ) from None


def _abs_difference(x, y, function):
    x = as_float32(x, function, "x")
    y = as_float32(y, function, "y")
    _require_broadcastable(x, y, function, ("x", "y"))
    return tf.abs(x - y)


def _weighted_mean(values, weight, function, argument):
    weight = as_float32(weight, function, argument)
    _require_broadcastable(values, weight, function, ("x - y", argument))
    return tf.reduce_mean(values * weight)


def l1(x, y, weight=None):
    """Mean of ``|x - y| * weight`` over all elements (``weight`` broadcasts; ``None`` means plain L1).

    DeepFill v2's reconstruction loss is ``l1(x, y)`` on the whole image (docs/architectures.md §2.4).
    """
    difference = _abs_difference(x, y, "l1")
    if weight is None:
        return tf.reduce_mean(difference)
    return _weighted_mean(difference, weight, "l1", "weight")


def masked_l1(x, y, mask):
    """``(hole_l1, valid_l1)``: ``mean(|x - y| * mask)`` and ``mean(|x - y| * (1 - mask))``.

    Both are normalised by the count of ALL elements, not by the region size (PConv's L_hole / L_valid,
    docs/architectures.md §3.3, and HiFill's un-normalised hole L1, §5.9). Callers that want the region mean
    (DeepFill v1 / HiFill "ae" loss) divide ``valid_l1`` by ``mean(1 - mask)`` themselves.
    """
    difference = _abs_difference(x, y, "masked_l1")
    mask = as_float32(mask, "masked_l1", "mask")
    _require_broadcastable(difference, mask, "masked_l1", ("x - y", "mask"))
    return tf.reduce_mean(difference * mask), tf.reduce_mean(difference * (1.0 - mask))


def spatial_discount(mask, gamma=0.9):
    """DeepFill's spatial discounting weights, ``[B, H, W, 1]`` float32.

    ``1`` on known pixels and ``gamma ** d`` on hole pixels, where ``d >= 1`` is the Chebyshev (chessboard)
    distance to the nearest known pixel of the same sample: the paper's definition ("distance to the nearest
    known pixel"), which works for any mask shape (docs/decisions.md). Pixels outside the image are NOT known, so a
    hole touching the image border is not discounted towards that border.

    A sample without any known pixel (all hole) falls back to treating the ring just outside the image as
    known, i.e. ``d = min(i + 1, H - i, j + 1, W - j)`` for row ``i``, column ``j``.

    Relation to the official v1 code (docs/architectures.md §1.6), which ignores the mask and discounts by the distance
    to the border of the 128x128 local crop: ``D_official[i, j] = gamma ** min(i, H - i, j, W - j)``. For a hole
    that fills the whole crop (no known pixel inside it) this function returns
    ``gamma ** min(i + 1, H - i, j + 1, W - j)``: the exponents are equal wherever the minimum comes from the
    bottom / right terms (``H - i``, ``W - j``) and ours is larger by exactly one where only the top / left
    terms attain it; the official map is asymmetric (top row weight 1, bottom row ``gamma``), this one is
    symmetric. For a hole strictly inside the crop the official code also discounts the known margin pixels,
    which keep weight 1 here.

    Implemented as repeated 3x3 max-pool dilation of the known set inside a ``tf.while_loop`` (one step per
    unit of distance, at most ``max(H, W)`` steps), so it runs in graph mode with dynamic shapes and under
    ``tf.distribute``. No gradient flows into the mask.
    """
    mask = as_float32(mask, "spatial_discount", "mask")
    _require_rank4(mask, "spatial_discount", "mask", channels=(1,))
    gamma = tf.convert_to_tensor(gamma, tf.float32)
    known = tf.stop_gradient(tf.cast(mask <= 0.5, tf.float32))

    # One-pixel ring around the image that counts as known only for samples with no known pixel at all.
    no_known = 1.0 - tf.reduce_max(known, axis=[1, 2, 3], keepdims=True)  # [B, 1, 1, 1]
    ring = 1.0 - tf.pad(tf.ones_like(known), [[0, 0], [1, 1], [1, 1], [0, 0]])
    reached = tf.pad(known, [[0, 0], [1, 1], [1, 1], [0, 0]]) + ring * no_known
    distance = tf.zeros_like(reached)
    # Interior pixels lie within max(H, W) - 1 steps of a known pixel (or 1 + half that of the fallback
    # ring), so this bound only guards against a non-terminating loop.
    max_steps = tf.maximum(tf.shape(mask)[1], tf.shape(mask)[2])

    def not_done(step, reached, distance):
        return tf.logical_and(step < max_steps, tf.reduce_min(reached[:, 1:-1, 1:-1, :]) < 0.5)

    def grow(step, reached, distance):
        # Every pixel still unreached is at least one step further away; a 3x3 max-pool grows the reached
        # set by exactly one unit of Chebyshev distance (TF max-pool ignores its SAME padding).
        distance = distance + (1.0 - reached)
        reached = tf.nn.max_pool2d(reached, ksize=3, strides=1, padding="SAME")
        return step + 1, reached, distance

    _, _, distance = tf.while_loop(not_done, grow, (tf.constant(0), reached, distance))
    distance = distance[:, 1:-1, 1:-1, :]
    return tf.stop_gradient(tf.pow(gamma, distance))


def discounted_l1(x, y, mask, gamma=0.9):
    """``mean(|x - y| * spatial_discount(mask, gamma))`` over all elements.

    Known pixels carry weight 1, like the near-border pixels of the official 128x128 crop; DeepFill v1
    applies it to the local patch (docs/architectures.md §1.6).
    """
    difference = _abs_difference(x, y, "discounted_l1")
    mask = as_float32(mask, "discounted_l1", "mask")
    _require_broadcastable(difference, mask, "discounted_l1", ("x - y", "mask"))
    return tf.reduce_mean(difference * spatial_discount(mask, gamma))


def masked_mse(x, y, mask):
    """GLCIC's weighted MSE: ``mean(((x - y) * mask) ** 2)`` over all elements (hole pixels only count;
    normalised by the count of all elements like GLCIC-PyTorch, docs/architectures.md §4.4)."""
    x = as_float32(x, "masked_mse", "x")
    y = as_float32(y, "masked_mse", "y")
    mask = as_float32(mask, "masked_mse", "mask")
    _require_broadcastable(x, y, "masked_mse", ("x", "y"))
    difference = x - y
    _require_broadcastable(difference, mask, "masked_mse", ("x - y", "mask"))
    return tf.reduce_mean(tf.square(difference * mask))


def total_variation_hole(image, mask):
    """PConv's L_tv (paper eq. 6, docs/architectures.md §3.3, docs/decisions.md): the total variation of ``image``
    (normally I_comp) restricted to the region P = the hole dilated by one pixel (3x3).

    Sums ``|I[i, j+1] - I[i, j]|`` over horizontally adjacent pairs and ``|I[i+1, j] - I[i, j]|`` over
    vertically adjacent pairs whose BOTH pixels lie in P, and divides by N_{I_comp} = B*H*W*C (the element
    count, the paper's normalisation). Pairs straddling the border of P are excluded (the Keras port's
    "P * I_comp over all pairs" would count them).

    image: [B, H, W, C]; mask: [B, H, W, 1] or [B, H, W, C], 1 = hole.
    """
    image = as_float32(image, "total_variation_hole", "image")
    mask = as_float32(mask, "total_variation_hole", "mask")
    _require_rank4(image, "total_variation_hole", "image")
    channels = (1,) if image.shape[-1] is None else (1, image.shape[-1])
    _require_rank4(mask, "total_variation_hole", "mask", channels=channels)
    hole = tf.cast(mask > 0.5, tf.float32)
    region = tf.stop_gradient(tf.nn.max_pool2d(hole, ksize=3, strides=1, padding="SAME"))
    horizontal = region[:, :, 1:, :] * region[:, :, :-1, :] * tf.abs(image[:, :, 1:, :] - image[:, :, :-1, :])
    vertical = region[:, 1:, :, :] * region[:, :-1, :, :] * tf.abs(image[:, 1:, :, :] - image[:, :-1, :, :])
    count = tf.cast(tf.size(image), tf.float32)
    return (tf.reduce_sum(horizontal) + tf.reduce_sum(vertical)) / count
