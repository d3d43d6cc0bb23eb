"""Mask generators (docs/architectures.md §1.8, §2.7, §3.5), mask-file reading (decisions.md) and the mask-dataset
CLI."""
import math
import os
import subprocess
import sys
import warnings

import cv2
import numpy as np
import pytest
from absl import flags

import tfinpaint
from tfinpaint import masks
from tfinpaint.flags import declare
from tfinpaint.masks import cli as mask_cli

SIZES = [(96, 160), (200, 120), (40, 70)]


def _bounding_box(mask):
    rows, cols = np.nonzero(mask)
    return rows.min(), rows.max() + 1, cols.min(), cols.max() + 1


def _has_full_window(mask, side):
    """True if some side x side window of the mask is entirely hole (summed-area table)."""
    table = np.pad(mask.astype(np.int64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    sums = table[side:, side:] - table[:-side, side:] - table[side:, :-side] + table[:-side, :-side]
    return bool((sums == side * side).any())


# ---------------------------------------------------------------- generators


@pytest.mark.parametrize("mask_type", masks.ALL_MASK_TYPES)
def test_same_seed_same_mask_and_different_seeds_differ(mask_type):
    first = masks.generate(mask_type, 96, 160, 7)
    np.testing.assert_array_equal(first, masks.generate(mask_type, 96, 160, 7))
    np.testing.assert_array_equal(first, masks.generate(mask_type, 96, 160, np.random.default_rng(7)))
    others = [masks.generate(mask_type, 96, 160, seed) for seed in range(8, 12)]
    assert any(not np.array_equal(first, other) for other in others)


def test_generator_is_consumed_so_successive_masks_differ():
    rng = np.random.default_rng(3)
    first, second = masks.generate("free_form", 64, 64, rng), masks.generate("free_form", 64, 64, rng)
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("mask_type", masks.ALL_MASK_TYPES)
@pytest.mark.parametrize("size", SIZES)
def test_any_size_gives_binary_float32_masks_with_holes(mask_type, size):
    for seed in range(5):
        mask = masks.generate(mask_type, *size, seed)
        assert mask.shape == size and mask.dtype == np.float32
        assert set(np.unique(mask)) <= {0.0, 1.0}
        assert 0 < mask.mean() < 1


def test_bbox_at_256_follows_deepfill_shrink_rule():
    sides = []
    for seed in range(300):
        mask = masks.bbox_mask(256, 256, seed)
        top, bottom, left, right = _bounding_box(mask)
        # One solid rectangle of side 128 - 2*delta, delta in 0..16 (docs/architectures.md §1.8).
        assert mask.sum() == (bottom - top) * (right - left)
        sides += [bottom - top, right - left]
        assert 0.14 <= mask.mean() <= 0.25
    sides = np.array(sides)
    assert sides.min() == 96 and sides.max() == 128 and np.all(sides % 2 == 0)


def test_bbox_non_square_margins_and_scaled_default_box():
    for seed in range(100):
        mask = masks.bbox_mask(96, 160, seed)  # box 48x80, max deltas 12 and 20
        top, bottom, left, right = _bounding_box(mask)
        assert 36 <= bottom - top <= 48 and 60 <= right - left <= 80
        mask = masks.bbox_mask(100, 100, seed, box=(40, 40), margin=(10, 20), max_delta=(0, 0))
        top, bottom, left, right = _bounding_box(mask)
        assert (bottom - top, right - left) == (40, 40)
        assert top >= 10 and bottom <= 90 and left >= 20 and right <= 80
    with pytest.raises(ValueError, match="does not fit"):
        masks.bbox_mask(64, 64, 0, box=(50, 50), margin=(10, 0))


def test_single_bbox_exact_size_centred_and_random():
    centred = masks.single_bbox_mask(96, 160, 0, random_position=False)
    expected = np.zeros((96, 160), np.float32)
    expected[24:72, 40:120] = 1
    np.testing.assert_array_equal(centred, expected)
    corners = set()
    for seed in range(50):
        mask = masks.single_bbox_mask(96, 160, seed, box=(30, 50))
        top, bottom, left, right = _bounding_box(mask)
        assert mask.sum() == 30 * 50 and (bottom - top, right - left) == (30, 50)
        corners.add((top, left))
    assert len(corners) > 40


def test_free_form_area_range_at_256():
    areas = np.array([masks.free_form_mask(256, 256, seed).mean() for seed in range(50)])
    assert areas.min() > 0.01 and areas.max() < 0.5
    assert 0.1 < areas.mean() < 0.25


def test_free_form_widths_scale_with_resolution():
    area_256 = np.mean([masks.free_form_mask(256, 256, seed).mean() for seed in range(40)])
    area_512 = np.mean([masks.free_form_mask(512, 512, seed).mean() for seed in range(40)])
    fixed_512 = np.mean(
        [masks.free_form_mask(512, 512, seed, width_reference=None).mean() for seed in range(40)]
    )
    # Lengths scale with the diagonal and widths with min(H, W): same hole fraction at any resolution.
    assert 0.9 < area_512 / area_256 < 1.1
    # Official fixed pixel widths: about half the fraction at twice the side.
    assert fixed_512 / area_256 < 0.7


def test_free_form_flips_are_applied():
    variants = set()
    for seed in range(40):
        plain = masks.free_form_mask(64, 96, seed, flip=False)
        flipped = masks.free_form_mask(64, 96, seed)
        candidates = [plain, plain[:, ::-1], plain[::-1, :], plain[::-1, ::-1]]
        matches = [i for i, candidate in enumerate(candidates) if np.array_equal(flipped, candidate)]
        assert matches, "flipped mask must be a flip of the same strokes"
        variants.add(matches[0])
    assert variants == {0, 1, 2, 3}

    # Without flips every stroke drifts rightwards (cos of the 72° mean turn is positive); with the
    # flips applied the horizontal centre of mass is unbiased.
    def mean_centre_x(flip):
        columns = np.arange(128) + 0.5
        centres = []
        for seed in range(200):
            mask = masks.free_form_mask(128, 128, seed, flip=flip)
            centres.append((mask.sum(0) * columns).sum() / mask.sum() / 128)
        return np.mean(centres)

    assert mean_centre_x(False) > 0.56
    assert abs(mean_centre_x(True) - 0.5) < 0.04


def test_free_form_non_square_strokes_start_anywhere():
    # The official code draws the start vertex with H and W swapped, so on a 64x512 image strokes never
    # reach the right quarter and on a 512x64 image never the bottom quarter (without flips).
    wide = [masks.free_form_mask(64, 512, seed, flip=False) for seed in range(60)]
    tall = [masks.free_form_mask(512, 64, seed, flip=False) for seed in range(60)]
    assert np.mean([mask[:, 384:].any() for mask in wide]) > 0.5
    assert np.mean([mask[384:, :].any() for mask in tall]) > 0.4


def test_irregular_area_range_and_hole_polarity():
    areas = np.array([masks.irregular_mask(256, 256, seed).mean() for seed in range(50)])
    # 1 = hole = the drawn shapes, which cover well under half the image on average (the source's
    # 1 = valid output would average above one half).
    assert areas.min() > 0.02 and areas.max() < 0.8
    assert 0.2 < areas.mean() < 0.45


def test_mixed_is_bbox_union_strokes():
    for seed in range(20):
        mask = masks.generate("mixed", 256, 256, seed)
        assert _has_full_window(mask, 96)  # the shrunk DeepFill box is at least 96x96
    mixed_area = np.mean([masks.generate("mixed", 256, 256, seed).mean() for seed in range(50)])
    bbox_area = np.mean([masks.generate("bbox", 256, 256, seed).mean() for seed in range(50)])
    assert mixed_area > bbox_area + 0.05


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown mask type 'stars'.*free_form"):
        masks.generate("stars", 64, 64, 0)
    with pytest.raises(TypeError, match="rng must be"):
        masks.generate("bbox", 64, 64, "seed")
    with pytest.raises(ValueError, match="seed must be >= 0"):
        masks.generate("bbox", 64, 64, -1)
    with pytest.raises(ValueError, match="width must be a positive integer"):
        masks.generate("bbox", 64, 0, 0)


def test_indexed_mask_is_independent_of_set_size_and_order():
    later = masks.indexed_mask("free_form", 64, 64, seed=5, index=3)
    np.testing.assert_array_equal(later, masks.indexed_mask("free_form", 64, 64, seed=5, index=3))
    assert not np.array_equal(later, masks.indexed_mask("free_form", 64, 64, seed=5, index=4))
    assert not np.array_equal(later, masks.indexed_mask("free_form", 64, 64, seed=6, index=3))


def test_hole_area_stats_hand_computed():
    fractions = [0.0, 0.25, 0.5, 1.0]
    stack = np.zeros((4, 4, 4), np.float32)
    for mask, fraction in zip(stack, fractions):
        mask.flat[: int(fraction * 16)] = 1
    stats = masks.hole_area_stats(stack)
    assert stats["count"] == 4 and stats["min"] == 0.0 and stats["max"] == 1.0
    assert stats["mean"] == pytest.approx(0.4375)
    assert stats["std"] == pytest.approx(math.sqrt(0.546875 / 4))
    counts = [count for _, _, count in stats["histogram"]]
    assert counts == [1, 0, 1, 0, 0, 1, 0, 0, 0, 1]
    assert stats["histogram"][0][:2] == (0.0, 0.1) and stats["histogram"][-1][:2] == (0.9, 1.0)


# ---------------------------------------------------------------- reading and writing


def _write_png(path, pixels):
    ok, encoded = cv2.imencode(".png", pixels)
    assert ok
    encoded.tofile(str(path))
    return str(path)


def test_gray_threshold_boundary_and_polarity(tmp_path):
    path = _write_png(tmp_path / "gray.png", np.array([[0, 127, 128, 255]], np.uint8))
    np.testing.assert_array_equal(masks.read_mask(path), [[0, 0, 1, 1]])
    np.testing.assert_array_equal(masks.read_mask(path, polarity="valid"), [[1, 1, 0, 0]])
    assert masks.read_mask(path).dtype == np.float32
    with pytest.raises(ValueError, match="polarity"):
        masks.read_mask(path, polarity="white")


def test_sixteen_bit_threshold_scaled(tmp_path):
    # 127 on the 8-bit scale is 127 * 257 = 32639 on the 16-bit scale.
    path = _write_png(tmp_path / "deep.png", np.array([[0, 32639, 32640, 65535]], np.uint16))
    np.testing.assert_array_equal(masks.read_mask(path), [[0, 0, 1, 1]])


def test_colour_mask_uses_max_over_channels(tmp_path):
    pixels = np.array([[[0, 0, 200], [100, 100, 100], [0, 0, 0], [0, 250, 0]]], np.uint8)
    path = _write_png(tmp_path / "colour.png", pixels)
    np.testing.assert_array_equal(masks.read_mask(path), [[1, 0, 0, 1]])


def test_rgba_alpha_only_and_colour_masks(tmp_path):
    alpha_only = np.zeros((1, 4, 4), np.uint8)
    alpha_only[0, :, 3] = [255, 0, 128, 127]
    path = _write_png(tmp_path / "alpha.png", alpha_only)
    np.testing.assert_array_equal(masks.read_mask(path), [[1, 0, 1, 0]])
    np.testing.assert_array_equal(masks.read_mask(path, polarity="valid"), [[0, 1, 0, 1]])

    white_paint = np.full((1, 4, 4), 255, np.uint8)  # constant white colour, shape in alpha
    white_paint[0, :, 3] = [0, 255, 0, 255]
    path = _write_png(tmp_path / "paint.png", white_paint)
    np.testing.assert_array_equal(masks.read_mask(path), [[0, 1, 0, 1]])

    opaque_colour = np.zeros((1, 4, 4), np.uint8)
    opaque_colour[0, :, 3] = 255
    opaque_colour[0, :, 1] = [255, 0, 0, 200]
    path = _write_png(tmp_path / "opaque.png", opaque_colour)
    np.testing.assert_array_equal(masks.read_mask(path), [[1, 0, 0, 1]])


def test_jpeg_mask_is_thresholded(tmp_path):
    pixels = np.zeros((32, 48), np.uint8)
    pixels[8:24, 16:40] = 255
    ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    path = tmp_path / "mask.jpg"
    encoded.tofile(str(path))
    np.testing.assert_array_equal(masks.read_mask(path), pixels > 127)


def test_size_mismatch_resizes_nearest_with_warning(tmp_path):
    small = (np.arange(24).reshape(4, 6) % 3 == 0).astype(np.uint8) * 255
    path = _write_png(tmp_path / "small.png", small)
    with pytest.warns(UserWarning, match=r"small\.png is 4x6, resized to 8x12"):
        resized = masks.read_mask(path, size=(8, 12))
    np.testing.assert_array_equal(resized, np.repeat(np.repeat(small > 127, 2, axis=0), 2, axis=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(masks.read_mask(path, size=(4, 6)), small > 127)


def _assert_one_line_error(path, match):
    with pytest.raises(masks.MaskReadError) as info:
        masks.read_mask(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and match in message
    assert isinstance(info.value, ValueError)


def test_mask_file_with_exif_orientation_is_read_as_displayed(tmp_path):
    """A mask saved by a phone app sideways with orientation 6 reads upright, like the photo it was drawn on."""
    from tests.test_imageio import jpeg_with_exif, tiff_with_orientation

    stored = np.zeros((24, 40), np.uint8)
    stored[2:8, 30:38] = 255  # near the stored top-right corner: the displayed bottom-right after 90 degrees
    path = tmp_path / "mask.jpg"
    path.write_bytes(jpeg_with_exif(cv2.cvtColor(stored, cv2.COLOR_GRAY2BGR), tiff_with_orientation(6), 100))
    hole = masks.read_mask(path)
    assert hole.shape == (40, 24)
    np.testing.assert_array_equal(hole, np.rot90(stored, -1) > 127)  # rot90(-1): clockwise


def test_truncated_corrupt_and_missing_files(tmp_path):
    mask = masks.generate("free_form", 64, 64, 0)
    good = tmp_path / "good.png"
    masks.write_mask(good, mask)
    data = good.read_bytes()

    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    _assert_one_line_error(truncated, "truncated PNG")
    no_end = tmp_path / "no_end.png"
    no_end.write_bytes(data[:-12])  # only the IEND chunk is missing: OpenCV would decode it silently
    _assert_one_line_error(no_end, "truncated PNG")

    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    bad_crc = tmp_path / "bad_crc.png"
    bad_crc.write_bytes(bytes(flipped))
    _assert_one_line_error(bad_crc, "corrupt PNG")

    ok, encoded = cv2.imencode(".jpg", (mask * 255).astype(np.uint8))
    cut_jpeg = tmp_path / "cut.jpg"
    cut_jpeg.write_bytes(encoded.tobytes()[:-100])
    _assert_one_line_error(cut_jpeg, "truncated JPEG")

    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image at all")
    _assert_one_line_error(garbage, "not a decodable image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    _assert_one_line_error(empty, "empty file")
    _assert_one_line_error(tmp_path / "missing.png", "no such file")


def test_write_then_read_round_trip_with_non_ascii_path(tmp_path):
    mask = masks.generate("irregular", 40, 70, 1)
    path = tmp_path / "máscara_ü.png"
    masks.write_mask(path, mask[:, :, None])
    stored = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_UNCHANGED)
    assert stored.dtype == np.uint8 and stored.shape == (40, 70)
    np.testing.assert_array_equal(stored, mask * 255)
    np.testing.assert_array_equal(masks.read_mask(path), mask)
    with pytest.raises(ValueError, match="must have shape"):
        masks.write_mask(tmp_path / "bad.png", np.zeros((2, 2, 3)))


# ---------------------------------------------------------------- CLI


def _flag_values(*args):
    flag_values = flags.FlagValues()
    declare("masks", mask_cli.COMMAND_FLAGS, flag_values)
    declare("train", mask_cli.COMMAND_FLAGS, flag_values)  # the training command declares them again
    flag_values(["prog", *args])
    return flag_values


def _parsed_flags(*args):
    return mask_cli.config_from_flags(_flag_values(*args))


def test_cli_in_process_writes_seeded_files_and_prints_stats(tmp_path, capsys):
    common = ["--__gen_masks__", "true", "--__mask_type__", "bbox", "--num_masks", "3",
              "--mask_height", "64", "--mask_width", "96"]
    config = _parsed_flags(*common, "--mask_dir", str(tmp_path / "a"))
    assert config == mask_cli.MaskConfig(str(tmp_path / "a"), "bbox", 3, 64, 96, 0, False)
    stats = mask_cli.run(config)
    out = capsys.readouterr().out
    assert "wrote 3 bbox masks of 64x96" in out and "hole area" in out and "0.1-0.2" in out

    names = sorted(os.listdir(tmp_path / "a"))
    assert names == ["mask_00000.png", "mask_00001.png", "mask_00002.png"]
    read = [masks.read_mask(tmp_path / "a" / name) for name in names]
    for index, mask in enumerate(read):
        np.testing.assert_array_equal(mask, masks.indexed_mask("bbox", 64, 96, 0, index))
    assert stats["count"] == 3 and stats["mean"] == pytest.approx(np.mean([m.mean() for m in read]))

    mask_cli.run(_parsed_flags(*common, "--mask_dir", str(tmp_path / "b")))
    mask_cli.run(_parsed_flags(*common, "--mask_dir", str(tmp_path / "c"), "--mask_seed", "1"))
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert any((tmp_path / "a" / n).read_bytes() != (tmp_path / "c" / n).read_bytes() for n in names)

    with pytest.raises(FileExistsError, match="mask_00000.png already exists.*pass overwrite to replace") as error:
        mask_cli.run(_parsed_flags(*common, "--mask_dir", str(tmp_path / "a"), "--mask_seed", "1"))
    assert "pass --mask_overwrite to replace" in mask_cli.error_line(error.value)
    mask_cli.run(
        _parsed_flags(*common, "--mask_dir", str(tmp_path / "a"), "--mask_seed", "1", "--mask_overwrite")
    )
    replaced = (tmp_path / "a" / "mask_00001.png").read_bytes()
    assert replaced == (tmp_path / "c" / "mask_00001.png").read_bytes()


def test_gen_masks_flag_accepts_separated_boolean_words():
    words = [("true", True), ("YES", True), ("1", True), ("false", False), ("no", False), ("0", False)]
    for word, expected in words:
        assert mask_cli.gen_masks_requested(_flag_values("--__gen_masks__", word)) is expected
    assert not mask_cli.gen_masks_requested(_flag_values())
    with pytest.raises(flags.IllegalFlagValueError, match="__gen_masks__"):
        _flag_values("--__gen_masks__", "maybe")


def test_console_script_subprocess(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(tfinpaint.__file__)))
    command = [sys.executable, "-m", "tfinpaint.cli", "masks", "--num_masks", "3",
               "--__mask_type__", "irregular", "--mask_height", "48", "--mask_width", "80",
               "--mask_dir", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "hole area" in result.stdout
    assert len(os.listdir(tmp_path / "out")) == 3
    np.testing.assert_array_equal(
        masks.read_mask(tmp_path / "out" / "mask_00002.png"),
        masks.indexed_mask("irregular", 48, 80, 0, 2),
    )
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert again.returncode == 1
    assert again.stderr.strip().count("\n") == 0 and "--mask_overwrite" in again.stderr
