"""The training data pipeline: listing, the bad-file scan, decoding of every pixel format, crops and masks."""
import logging
import os

import cv2
import numpy as np
import pytest

from tfinpaint import data

CROP = 32


def _write(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return str(path)


@pytest.fixture
def image_folder(tmp_path):
    """Good images of constant, distinct colours in every format, plus bad files. Returns (folder, expected
    RGB colours in [0, 1] of the good files, bad file names)."""
    folder = tmp_path / "images"
    colours = {}
    # cv2 writes BGR(A): the expected colours are RGB.
    _write(folder / "rgb.jpg", np.full((40, 50, 3), (40, 80, 200), np.uint8))
    colours["rgb.jpg"] = None  # JPEG is lossy: checked approximately
    _write(folder / "sub" / "gray.png", np.full((36, 44), 77, np.uint8))
    colours["gray.png"] = (77 / 255,) * 3
    rgba = np.zeros((34, 40, 4), np.uint8)
    rgba[..., :3] = (30, 20, 10)
    rgba[..., 3] = np.arange(40, dtype=np.uint8)[None, :] * 6  # alpha must be ignored
    _write(folder / "sub" / "deeper" / "rgba.png", rgba)
    colours["rgba.png"] = (10 / 255, 20 / 255, 30 / 255)
    _write(folder / "deep16.png", np.full((33, 35, 3), (1000, 30000, 65535), np.uint16))
    colours["deep16.png"] = (65535 / 65535, 30000 / 65535, 1000 / 65535)
    _write(folder / "small.bmp", np.full((20, 24, 3), (0, 128, 255), np.uint8))  # smaller than the crop
    colours["small.bmp"] = (1.0, 128 / 255, 0.0)
    webp = np.zeros((32, 40, 4), np.uint8)
    webp[..., :3] = (250, 250, 250)
    webp[..., 3] = 255
    ok, encoded = cv2.imencode(".webp", webp, [cv2.IMWRITE_WEBP_QUALITY, 101])  # lossless, with alpha
    assert ok
    (folder / "alpha.webp").write_bytes(encoded.tobytes())
    colours["alpha.webp"] = (250 / 255,) * 3

    bad = {}
    (folder / "corrupt.jpg").write_bytes(os.urandom(500))
    bad["corrupt.jpg"] = "not a JPEG, PNG, BMP or WebP image"
    noise = folder / "noise.png"
    _write(noise, np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    (folder / "truncated.png").write_bytes(noise.read_bytes()[:-100])
    noise.unlink()
    bad["truncated.png"] = "truncated PNG"
    jpeg = (folder / "rgb.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    bad["truncated.jpg"] = "truncated JPEG"
    (folder / "empty.png").write_bytes(b"")
    bad["empty.png"] = "empty file"
    (folder / "notes.txt").write_text("not an image")  # ignored: wrong extension
    return folder, colours, bad


def test_list_images_folder_text_file_and_errors(image_folder, tmp_path):
    folder, colours, bad = image_folder
    listed = data.list_images(str(folder))
    assert sorted(os.path.basename(path) for path in listed) == sorted(list(colours) + list(bad))
    listing = tmp_path / "list.txt"
    listing.write_text("images/sub/gray.png\n\n" + str(folder / "rgb.jpg") + "\n")
    assert data.list_images(str(listing)) == [str(tmp_path / "images/sub/gray.png"), str(folder / "rgb.jpg")]
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"^{empty}: contains no images"):
        data.list_images(str(empty))
    with pytest.raises(ValueError, match="nowhere: no such folder"):
        data.list_images(str(tmp_path / "nowhere"))


def test_sample_images_are_installed_colour_photos():
    paths = data.sample_images()
    assert len(paths) >= 8 and all(os.path.isfile(path) for path in paths)
    assert data.scan_images(paths).skipped == []


def test_bad_files_are_skipped_with_one_warning_each_and_counted(image_folder, caplog):
    folder, colours, bad = image_folder
    with caplog.at_level(logging.WARNING):
        report = data.scan_images(data.list_images(str(folder)))
    assert sorted(os.path.basename(path) for path in report.good) == sorted(colours)
    skipped = {os.path.basename(path): reason for path, reason in report.skipped}
    assert set(skipped) == set(bad)
    for name, reason in bad.items():
        assert skipped[name].startswith(reason)
        assert sum(name in record.getMessage() for record in caplog.records) == 1
    assert report.summary() == "6 images, 4 skipped (unreadable, corrupt or truncated)"
    with pytest.raises(ValueError, match="no usable images: all 1 files are bad"):
        data.scan_images([str(folder / "empty.png")])


def test_every_format_decodes_to_rgb_unit_range_crops(image_folder):
    folder, colours, _ = image_folder
    paths = data.list_images(str(folder))
    dataset = data.make_dataset(paths, CROP, batch_size=6, seed=3)
    batch = next(iter(dataset))
    images = batch["image"].numpy()
    assert images.shape == (6, CROP, CROP, 3) and batch["mask"].shape == (6, CROP, CROP, 1)
    assert images.dtype == np.float32 and images.min() >= 0.0 and images.max() <= 1.0
    # One epoch is a permutation: each good file once. Every file has one colour, so each crop is constant.
    pixels = images.reshape(6, -1, 3)
    unmatched = list(range(6))
    for name, colour in colours.items():
        if colour is None:
            continue
        hits = [i for i in unmatched if np.abs(pixels[i] - np.asarray(colour, np.float32)).max() < 1e-6]
        assert len(hits) == 1, (name, colour)
        unmatched.remove(hits[0])
    (jpeg,) = unmatched  # lossy, so only close to its colour
    np.testing.assert_allclose(pixels[jpeg].mean(axis=0), (200 / 255, 80 / 255, 40 / 255), atol=3 / 255)


def test_a_file_corrupt_inside_its_data_is_dropped_not_fatal(image_folder, tmp_path):
    folder, _, _ = image_folder
    good = str(folder / "deep16.png")
    damaged = bytearray((folder / "sub" / "gray.png").read_bytes())
    idat = damaged.index(b"IDAT")
    damaged[idat + 6: idat + 12] = b"\x00" * 6  # breaks the compressed data and the CRC, keeps IEND
    broken = tmp_path / "broken.png"
    broken.write_bytes(bytes(damaged))
    assert data.image_file_problem(str(broken)) is None  # the quick scan cannot see it...
    dataset = data.make_dataset([good, str(broken)], CROP, batch_size=4, seed=0)
    batch = next(iter(dataset))  # ...and training goes on without it
    np.testing.assert_allclose(batch["image"].numpy()[..., 0], 1.0)
    report = data.scan_images([good, str(broken)], full=True)
    assert report.good == [good] and report.skipped[0][1].startswith("corrupt PNG")


def test_crops_and_generated_masks_are_seeded_and_resumable():
    paths = data.sample_images()[:3]
    first = list(data.make_dataset(paths, CROP, 2, mask_type="free_form", seed=5).take(3))
    again = list(data.make_dataset(paths, CROP, 2, mask_type="free_form", seed=5).take(3))
    other = next(iter(data.make_dataset(paths, CROP, 2, mask_type="free_form", seed=6)))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["mask"], b["mask"])
    assert not np.array_equal(first[0]["mask"], other["mask"])
    masks = np.concatenate([batch["mask"].numpy() for batch in first])
    assert set(np.unique(masks)) <= {0.0, 1.0} and 0 < masks.mean() < 1
    # Resuming at element 4 continues the very same stream (crops, order across epochs, masks).
    resumed = next(iter(data.make_dataset(paths, CROP, 2, mask_type="free_form", seed=5, start_index=4)))
    np.testing.assert_array_equal(resumed["image"], first[2]["image"])
    np.testing.assert_array_equal(resumed["mask"], first[2]["mask"])


def test_mask_files_are_read_resized_and_follow_the_polarity(tmp_path):
    mask = np.zeros((64, 48), np.uint8)
    mask[:, :24] = 255  # left half white
    mask_path = _write(tmp_path / "masks" / "m.png", mask)
    image_path = _write(tmp_path / "img.png", np.full((40, 40, 3), 128, np.uint8))
    hole = next(iter(data.make_dataset([image_path], CROP, 1, mask_paths=[mask_path], training=False)))["mask"]
    expected = np.zeros((CROP, CROP), np.float32)
    expected[:, : CROP // 2] = 1.0
    np.testing.assert_array_equal(hole.numpy()[0, ..., 0], expected)
    valid = next(iter(data.make_dataset([image_path], CROP, 1, mask_paths=[mask_path], training=False,
                                        mask_polarity="valid")))["mask"]
    np.testing.assert_array_equal(valid.numpy()[0, ..., 0], 1.0 - expected)


def test_evaluation_pass_is_one_ordered_centre_cropped_pass(image_folder):
    folder, _, _ = image_folder
    paths = data.scan_images(data.list_images(str(folder))).good
    batches = list(data.make_dataset(paths, CROP, 4, training=False, drop_remainder=False, seed=1))
    assert [len(batch["image"]) for batch in batches] == [4, 2]
    repeat = list(data.make_dataset(paths, CROP, 4, training=False, drop_remainder=False, seed=1))
    for a, b in zip(batches, repeat):
        np.testing.assert_array_equal(a["mask"], b["mask"])


def test_bad_arguments_are_one_line_errors(tmp_path):
    image_path = _write(tmp_path / "img.png", np.full((40, 40, 3), 128, np.uint8))
    with pytest.raises(ValueError, match="unknown mask type 'stars'"):
        data.make_dataset([image_path], CROP, 2, mask_type="stars")
    with pytest.raises(ValueError, match="image list is empty"):
        data.make_dataset([], CROP, 2)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        data.make_dataset([image_path], CROP, 0)


def _corrupt_jpeg(path, seed=1):
    """A JPEG with valid headers (up to the start of scan) and a garbage body: the quick scan passes it
    (start and end-of-image markers are there), the decoder does not."""
    pixels = np.random.default_rng(seed).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".jpg", pixels)
    assert ok
    encoded = encoded.tobytes()
    start_of_scan = encoded.index(b"\xff\xda")
    garbage = np.random.default_rng(seed + 1).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(encoded[:start_of_scan] + garbage + b"\xff\xd9")
    assert data.image_file_problem(str(path)) is None
    return str(path)


def test_a_file_that_fails_to_decode_is_named_once_and_dropped_for_the_run(tmp_path, caplog):
    good = _write(tmp_path / "good.png", np.full((40, 40, 3), 200, np.uint8))
    broken = _corrupt_jpeg(tmp_path / "broken.jpg")
    with caplog.at_level(logging.WARNING):
        # 12 elements = 6 epochs of the two files: the broken one comes up in each epoch's permutation.
        batches = list(data.make_dataset([good, broken], CROP, batch_size=3, seed=0).take(4))
    images = np.concatenate([batch["image"].numpy() for batch in batches])
    np.testing.assert_allclose(images, 200 / 255, atol=1e-6)  # only the good file's pixels
    named = [record.getMessage() for record in caplog.records if "broken.jpg" in record.getMessage()]
    assert len(named) == 1 and "cannot be decoded" in named[0], named


def test_no_decodable_file_ends_the_stream_instead_of_looping(tmp_path):
    broken = [_corrupt_jpeg(tmp_path / f"broken{index}.jpg", seed=index) for index in range(2)]
    dataset = data.make_dataset(broken, CROP, batch_size=2, seed=0)
    assert list(dataset.take(1)) == []  # ends (an endless training stream used to spin here forever)


def test_cli_with_only_undecodable_files_is_a_one_line_error(tmp_path):
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    broken = _corrupt_jpeg(tmp_path / "photos" / "broken.jpg")
    command = [sys.executable, "train.py", "--model", "tests.test_trainer:build_tiny", "--__flist__",
               str(tmp_path / "photos"), "--img_size", "32", "--batch_size", "2", "--max_steps", "3",
               "--ckpt_dir", str(tmp_path / "ckpt")]
    env = dict(os.environ, PYTHONPATH=repo, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    finished = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=240)
    assert finished.returncode == 1, finished.stderr[-3000:]
    lines = finished.stderr.strip().splitlines()
    assert lines[-1].startswith("train.py: error: ") and "no image in it decodes" in lines[-1], lines[-5:]
    assert sum(broken in line for line in lines) == 1, lines  # named once
    assert len(finished.stderr) < 5000 and "Traceback" not in finished.stderr
