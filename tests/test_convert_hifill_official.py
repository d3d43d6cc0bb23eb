"""HiFill's official inference pipeline (tfinpaint.inference.hifill_official) and the CRA ``coarse_size`` option
that converted official checkpoints record."""
import numpy as np
import pytest
import tensorflow as tf

from tfinpaint.inference.hifill_official import aggregate_residual, inpaint_official
from tfinpaint.models import registry


class StubGenerator:
    """Output = the input with holes set to a known grey; attention = a fixed matrix. Records its inputs."""

    def __init__(self, attention, fill=0.25):
        self.attention = attention
        self.fill = fill
        self.calls = []

    def __call__(self, image, mask, training=None):
        self.calls.append((image.numpy(), mask.numpy()))
        output = image * (1.0 - mask) + self.fill * mask
        return {"output": output, "attention": tf.constant(self.attention[None])}


def _reference(raw, hole, multiple, attention, fill):
    """The sample's steps written plainly: per-pixel loops for the block mean and per-cell loops for the
    aggregation, OpenCV resizes as in the sample."""
    import cv2

    side = 512 * multiple
    raw = raw.astype(np.float32)
    known = 1.0 - hole
    large = cv2.resize(raw, (side, side), interpolation=cv2.INTER_LINEAR)
    large_known = cv2.resize(known, (side, side), interpolation=cv2.INTER_NEAREST)
    small = np.zeros((512, 512, 3), np.float32)
    for dy in range(multiple):
        for dx in range(multiple):
            small += large[dy::multiple, dx::multiple]
    small /= multiple * multiple
    small_hole = 1.0 - cv2.resize(known, (512, 512), interpolation=cv2.INTER_NEAREST)
    output = small * (1 - small_hole[:, :, None]) + fill * 255.0 * small_hole[:, :, None]
    base = cv2.resize(output, (side, side), interpolation=cv2.INTER_LINEAR)
    residual = (large - cv2.resize(small, (side, side), interpolation=cv2.INTER_LINEAR)) * large_known[:, :, None]
    cell = side // 32
    aggregated = np.zeros_like(residual)
    for query in range(1024):
        qy, qx = divmod(query, 32)
        for source in np.flatnonzero(attention[query]):
            sy, sx = divmod(source, 32)
            aggregated[qy * cell:(qy + 1) * cell, qx * cell:(qx + 1) * cell] += (
                attention[query, source] * residual[sy * cell:(sy + 1) * cell, sx * cell:(sx + 1) * cell])
    result = cv2.resize(np.clip(base + aggregated, 0, 255), (raw.shape[1], raw.shape[0]),
                        interpolation=cv2.INTER_LINEAR)
    blend = cv2.resize(small_hole, (raw.shape[1], raw.shape[0]), interpolation=cv2.INTER_LINEAR)[:, :, None]
    return (result * blend + raw * (1 - blend)).astype(np.uint8), small, small_hole


def test_official_pipeline_matches_the_plain_reference():
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (300, 700, 3), dtype=np.uint8)  # not square: the sample squashes it
    hole = np.zeros((300, 700), np.float32)
    hole[100:180, 250:420] = 1.0
    # Each cell takes its residual from another cell (a permutation), plus half of a fixed one.
    attention = np.zeros((1024, 1024), np.float32)
    attention[np.arange(1024), rng.permutation(1024)] = 0.5
    attention[:, 77] += 0.5
    stub = StubGenerator(attention)
    result, stages = inpaint_official(stub, raw, hole, multiple=2, return_stages=True)
    expected, small, small_hole = _reference(raw, hole, 2, attention, stub.fill)
    image_in, mask_in = stub.calls[0]
    assert image_in.shape == (1, 512, 512, 3) and mask_in.shape == (1, 512, 512, 1)
    np.testing.assert_allclose(image_in[0] * 255.0, small, atol=1e-3)
    np.testing.assert_array_equal(mask_in[0, :, :, 0], small_hole)
    # Float sums in another order can move a value across an integer: at most one level, on few pixels.
    difference = np.abs(result.astype(int) - expected.astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01
    # The soft blend is the official one: known pixels next to the hole change, far ones stay.
    assert np.array_equal(result[:50], raw[:50])
    assert (stages["blend"][hole == 0] > 0).any()


def test_aggregate_residual_moves_cells_by_the_attention():
    multiple = 1
    residual = np.zeros((512, 512, 1), np.float32)
    residual[16:32, 48:64] = 3.0  # cell (1, 3) = index 35
    attention = np.zeros((1024, 1024), np.float32)
    attention[0, 35] = 2.0  # cell 0 takes twice cell 35
    out = aggregate_residual(residual, attention, multiple)
    assert np.all(out[:16, :16] == 6.0) and np.count_nonzero(out) == 16 * 16


def test_official_pipeline_on_a_cra_generator_keeps_far_pixels():
    generator = registry.create("cra", bgr=True, coarse_size=256).generator
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, (123, 201, 3), dtype=np.uint8)
    hole = np.zeros((123, 201), np.uint8)
    hole[40:80, 60:120] = 255
    result = inpaint_official(generator, raw, hole, multiple=1)
    assert result.shape == raw.shape and result.dtype == np.uint8
    np.testing.assert_array_equal(result[:20], raw[:20])
    assert not np.array_equal(result[50:70, 80:100], raw[50:70, 80:100])


def test_coarse_size_option():
    """coarse_size=256 (official) and the default half-size rule agree at 512 x 512 only; the option survives
    get_config."""
    fixed = registry.create("cra", coarse_size=256).generator
    half = registry.create("cra").generator
    rng = np.random.default_rng(2)
    for source, target in zip(fixed.weights, half.weights):
        # He-scaled weights: the initial ones (std 0.05) give a flat grey output through 25 layers.
        shape = tuple(source.shape)
        scale = 1.5 / np.sqrt(np.prod(shape[:-1])) if len(shape) == 4 else 0.1
        value = (rng.standard_normal(shape) * scale).astype(np.float32)
        source.assign(value)
        target.assign(value)
    assert fixed.get_config()["coarse_size"] == 256 and half.get_config()["coarse_size"] is None
    for side, equal in ((512, True), (256, False)):
        image = tf.constant(rng.uniform(size=(1, side, side, 3)).astype(np.float32))
        mask = np.zeros((1, side, side, 1), np.float32)
        mask[:, side // 4: side // 2, side // 4: side // 2] = 1
        a = fixed(image, tf.constant(mask), training=False)["coarse"].numpy()
        b = half(image, tf.constant(mask), training=False)["coarse"].numpy()
        assert a.std() > 0.01, "a flat output would compare equal whatever the option"
        assert np.allclose(a, b, atol=1e-5) == equal, side
    with pytest.raises(ValueError, match="coarse_size"):
        registry.create("cra", coarse_size=250)
