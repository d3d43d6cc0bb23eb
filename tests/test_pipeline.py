"""The inference pipeline's placement of predictions: a stub network whose prediction is the input image itself, on
an image that is a smooth function of absolute coordinates, so any shift, flip, squash or scale error of a crop,
resize or paste shows in the hole pixels; known pixels must stay the input's bytes."""
import numpy as np
import pytest
import tensorflow as tf

from tfinpaint.inference.pipeline import HDSettings, InpaintingPipeline, hole_groups

FACTOR = 8
CELL = 4  # attention cell of the stub at the working size


class IdentityNetwork:
    """Predicts the (padded) input image; checks that its inputs are padded to the size factor."""

    variables = []

    def __init__(self, shift=0):
        self.shift = shift
        self.calls = []

    def __call__(self, image, mask, training=False):
        tf.debugging.assert_equal(tf.shape(image)[1:3] % FACTOR, 0, message="input not padded to the size factor")
        tf.debugging.assert_equal(tf.shape(mask)[1:3], tf.shape(image)[1:3])
        raw = tf.roll(image, self.shift, axis=2) if self.shift else image
        grid = tf.shape(image)[1] // CELL * (tf.shape(image)[2] // CELL)
        return {"raw": raw, "output": raw, "coarse": raw * 0.5, "attention": tf.eye(grid)[None]}


def smooth_image(height, width):
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    red = 128 + 100 * np.sin(cols / 19.0 + 0.3)
    green = 128 + 100 * np.cos(rows / 23.0)
    blue = 255 * (rows + 2 * cols) / (height + 2 * width)
    return np.clip(np.rint(np.stack([red, green, blue], axis=-1)), 0, 255).astype(np.uint8)


def holes(height, width, boxes):
    hole = np.zeros((height, width), bool)
    for top, bottom, left, right in boxes:
        hole[top:bottom, left:right] = True
    return hole


def run(settings, image, hole, network=None, stages=()):
    network = network or IdentityNetwork()
    pipeline = InpaintingPipeline(network, FACTOR, settings, attention_cell=CELL)
    output, steps = pipeline(tf.constant(image), tf.constant(hole), stages)
    return output.numpy(), {key: value.numpy() for key, value in steps.items()}, pipeline


CASES = {
    # odd, non-square; holes touching the top-left corner, the right border and the bottom border
    "corner_and_borders": (203, 341, [(0, 20, 0, 31), (90, 131, 300, 341), (180, 203, 100, 150)]),
    "tall_single": (297, 117, [(100, 161, 30, 80)]),
}
STRATEGY_SETTINGS = {
    "original": HDSettings("original"),
    "crop_native": HDSettings("crop", working_size=512, crop_margin=16, trigger_size=64),
    "crop_downscaled": HDSettings("crop", working_size=48, crop_margin=24, trigger_size=64),
    "resize": HDSettings("resize", resize_limit=150, trigger_size=64),
    "cra": HDSettings("cra", working_size=96),
}
# Mean / max absolute error (grey levels) in the holes allowed for each strategy: exact without resampling,
# else the error of down- and upscaling the smooth image.
TOLERANCE = {"original": (0, 0), "crop_native": (0, 0), "crop_downscaled": (0.5, 4), "resize": (0.5, 4),
             "cra": (0.5, 8)}


@pytest.mark.parametrize("strategy", sorted(STRATEGY_SETTINGS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_predictions_land_where_the_holes_are(strategy, case):
    height, width, boxes = CASES[case]
    image = smooth_image(height, width)
    hole = holes(height, width, boxes)
    output, _, _ = run(STRATEGY_SETTINGS[strategy], image, hole)
    assert output.shape == image.shape and output.dtype == np.uint8
    np.testing.assert_array_equal(output[~hole], image[~hole])
    error = np.abs(output[hole].astype(np.int32) - image[hole])
    mean_limit, max_limit = TOLERANCE[strategy]
    assert error.mean() <= mean_limit and error.max() <= max_limit, (error.mean(), error.max())


@pytest.mark.parametrize("strategy", ["crop_downscaled", "resize", "cra"])
def test_placement_check_detects_a_two_pixel_shift(strategy):
    """The tolerance is far below what a misplacement costs: the same run with a network that shifts its
    prediction by 2 pixels fails it."""
    height, width, boxes = CASES["corner_and_borders"]
    image, hole = smooth_image(height, width), holes(height, width, boxes)
    output, _, _ = run(STRATEGY_SETTINGS[strategy], image, hole, IdentityNetwork(shift=2))
    error = np.abs(output[hole].astype(np.int32) - image[hole])
    assert error.mean() > 4 * TOLERANCE[strategy][0]


def test_crop_strategy_groups_distant_holes_and_merges_close_ones():
    hole = holes(300, 400, [(10, 20, 10, 20), (10, 20, 40, 50), (250, 260, 350, 380)])
    boxes = hole_groups(tf.constant(hole), margin=16).numpy()
    # The first two holes are 20 px apart (< 2 x 16): one group; the third is far away: its own group.
    assert sorted(map(tuple, boxes)) == [(0, 32, 0, 64), (240, 272, 336, 384)]
    network = IdentityNetwork()
    seen = []
    original_call = network.__class__.__call__

    class Spy(IdentityNetwork):
        def __call__(self, image, mask, training=False):
            seen.append(tuple(image.shape[1:3]))
            return original_call(self, image, mask, training)

    image = smooth_image(300, 400)
    pipeline = InpaintingPipeline(Spy(), FACTOR, HDSettings("crop", crop_margin=16, trigger_size=64))
    output, _ = pipeline.inpaint(tf.constant(image), tf.constant(hole))
    np.testing.assert_array_equal(output.numpy(), image)
    # Two network runs on the crops, not the image: the exact hole extent grown by the 16 px margin, clipped to
    # the image and padded to multiples of 8: rows 0-36 x cols 0-66 -> 40 x 72; rows 234-276 x cols 334-396 -> 48 x 64.
    assert sorted(seen) == [(40, 72), (48, 64)]


def test_one_trace_for_many_sizes_and_the_first_stages():
    settings = HDSettings("crop", working_size=64, crop_margin=8, trigger_size=32)
    pipeline = InpaintingPipeline(IdentityNetwork(), FACTOR, settings, attention_cell=CELL)
    for height, width in [(40, 50), (77, 31), (129, 200), (20, 20)]:
        image = smooth_image(height, width)
        hole = holes(height, width, [(5, 12, 6, 15)])
        output, steps = pipeline(tf.constant(image), tf.constant(hole), ("coarse",))
        np.testing.assert_array_equal(output.numpy()[~hole], image[~hole])
        assert set(steps) == {"coarse"}
    assert pipeline.traces == 1


def test_no_hole_returns_the_image_for_every_strategy():
    image = smooth_image(90, 130)
    hole = np.zeros((90, 130), bool)
    for settings in STRATEGY_SETTINGS.values():
        output, _, _ = run(settings, image, hole)
        np.testing.assert_array_equal(output, image)


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ValueError, match="hd_strategy must be one of"):
        HDSettings("tiles")
    with pytest.raises(ValueError, match="hd_crop_margin must be a non-negative integer"):
        HDSettings("crop", crop_margin=-1)
    with pytest.raises(ValueError, match="hd_resize_limit must be a positive integer"):
        HDSettings("resize", resize_limit=0)
    with pytest.raises(ValueError, match="cra strategy"):
        InpaintingPipeline(IdentityNetwork(), FACTOR, HDSettings("cra"))
