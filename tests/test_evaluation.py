"""The eval command: seeded binned mask sets, exact reruns, baselines on the same inputs, metric sanity."""
import json
import shutil

import cv2
import keras
import numpy as np
import pytest
from absl import flags

from tfinpaint.evaluation import cli, masksets, metrics, report, scoring
from tfinpaint.evaluation.config import EvalConfig, SettingError
from tfinpaint.evaluation.runner import run
from tfinpaint.checkpoints import save_generator
from tfinpaint.inference.api import build_generator

BINS = "0.05-0.2,0.2-0.4"
SIZE = 32
METHODS = ("glcic", "opencv_telea", "opencv_ns")


def _photo(height, width, seed):
    """A smooth synthetic photo (gradients and a disc), so that inpainting has structure to continue."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.stack([rows * 255 / height, cols * 255 / width, np.full((height, width), 40.0 * seed)], axis=2)
    cv2.circle(image, (width // 2, height // 3), min(height, width) // 4, rng.uniform(0, 255, 3).tolist(), -1)
    return np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    images = root / "images"
    images.mkdir()
    for index, (height, width) in enumerate([(40, 60), (48, 48), (64, 44)]):
        cv2.imwrite(str(images / f"photo{index}.png"), _photo(height, width, index)[:, :, ::-1])
    ckpt = root / "ckpt"
    generator = build_generator("glcic", {"cnum": 4})
    save_generator(ckpt, generator, "glcic", {"cnum": 4})

    # First run through the command's flag handling, as `tfinpaint eval ...` does.
    first = root / "first"
    argv = ["tfinpaint eval", f"--gpath={ckpt}", f"--flist={images}", f"--eval_dir={first}", f"--bins={BINS}",
            f"--eval_size={SIZE}", "--model=glcic"]
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(argv)
        cli.main(["tfinpaint eval"])
    finally:
        flags.FLAGS.unparse_flags()
    return {"root": root, "images": images, "ckpt": ckpt, "first": first}


def _results(folder):
    return json.loads((folder / "results.json").read_text())


def test_outputs_bins_and_rows(setup):
    first = setup["first"]
    results = _results(first)
    assert (first / "results.md").is_file() and (first / "manifest.json").is_file()
    assert results["bins"] == ["0.05-0.2", "0.2-0.4"]
    bins = masksets.parse_bins(BINS)
    assert len(results["entries"]) == 3 * len(bins)
    for entry in results["entries"]:
        # Read back independently of the library: white = hole.
        pixels = cv2.imread(str(first / entry["mask"]), cv2.IMREAD_GRAYSCALE)
        assert pixels.shape == (SIZE, SIZE)
        low, high = bins[entry["bin"]]
        assert low <= np.mean(pixels > 127) < high
    markdown = (first / "results.md").read_text()
    for method in METHODS:
        table = results["methods"][method]
        assert table["all"]["count"] == 6 and table["0.05-0.2"]["count"] == table["0.2-0.4"]["count"] == 3
        for label in results["bins"]:
            in_bin = [entry["metrics"][method]["l1"] for entry in results["entries"]
                      if results["bins"][entry["bin"]] == label]
            assert table[label]["l1"] == pytest.approx(np.mean(in_bin))
            row = f"| {label} | {method} | {100 * table[label]['l1']:.2f} | "
            assert row in markdown
        assert f"| all | {method} | {100 * table['all']['l1']:.2f} | " in markdown
    assert "FID omitted" in markdown and "LPIPS omitted" in markdown


def test_baselines_scored_on_the_same_masked_input(setup):
    first = setup["first"]
    entry = _results(first)["entries"][3]
    truth = masksets.prepare_image(cv2.imread(entry["image"])[:, :, ::-1], SIZE)
    hole = cv2.imread(str(first / entry["mask"]), cv2.IMREAD_GRAYSCALE) > 127
    masked = truth.copy()
    masked[hole] = 0
    bgr = cv2.inpaint(np.ascontiguousarray(masked[:, :, ::-1]), hole.astype(np.uint8), 3, cv2.INPAINT_TELEA)
    expected = np.abs(bgr[:, :, ::-1].astype(np.float64) - truth).mean() / 255.0
    assert entry["metrics"]["opencv_telea"]["l1"] == pytest.approx(expected, rel=1e-9)


def test_rerun_from_stored_mask_set_is_identical(setup):
    first, second = setup["first"], setup["root"] / "second"
    run(EvalConfig(str(setup["ckpt"]), out_dir=str(second), masks=str(first)))
    again, before = _results(second), _results(first)
    assert again["methods"] == before["methods"]
    assert [entry["metrics"] for entry in again["entries"]] == [entry["metrics"] for entry in before["entries"]]
    for entry in before["entries"]:  # the mask set travels with the new results
        assert (second / entry["mask"]).read_bytes() == (first / entry["mask"]).read_bytes()


def test_stored_mask_set_guards(setup, tmp_path):
    first = setup["first"]
    with pytest.raises(SettingError, match="^bins: differ from those of the stored mask set") as error:
        run(EvalConfig(str(setup["ckpt"]), out_dir=str(tmp_path / "a"), masks=str(first), bins="0.1-0.3"))
    assert error.value.setting == "bins" and not (tmp_path / "a").exists()
    # Moved photos are found by content; a changed photo is refused.
    moved = tmp_path / "moved"
    shutil.copytree(setup["images"], moved)
    manifest = masksets.load_mask_set(str(first), str(moved))
    assert all(entry["image"].startswith(str(moved)) for entry in manifest["entries"])
    cv2.imwrite(str(moved / "photo1.png"), np.zeros((48, 48, 3), np.uint8))
    with pytest.raises(ValueError, match="holds no image identical"):
        masksets.load_mask_set(str(first), str(moved))
    edited = tmp_path / "edited"
    shutil.copytree(first, edited)
    mask_file = edited / _results(first)["entries"][0]["mask"]
    cv2.imwrite(str(mask_file), np.zeros((SIZE, SIZE), np.uint8))
    with pytest.raises(ValueError, match="differs from the one recorded"):
        masksets.load_mask_set(str(edited))


@pytest.mark.parametrize("text, message", [
    ("0.3-0.1", "low < high"), ("0.1-0.2,0.15-0.3", "overlaps"), ("a-b", "cannot read"), ("", "empty"),
    ("0.1-1.5", "low < high"), ("0.1-0.2,", "cannot read"),
])
def test_bad_bins_are_one_line_errors(text, message):
    with pytest.raises(SettingError, match=message) as error:
        masksets.parse_bins(text)
    # The library names the setting, not a command-line flag; the command spells it as its flag.
    assert error.value.setting == "bins" and "--" not in str(error.value) and "\n" not in str(error.value)
    assert cli.error_line(error.value).startswith("--bins: ")


def test_bad_bins_through_the_command(setup):
    argv = ["tfinpaint eval", f"--gpath={setup['ckpt']}", "--bins=0.4-0.2"]
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(argv)
        with pytest.raises(SystemExit, match=r"^eval: --bins: '0.4-0.2' must satisfy"):
            cli.main(["tfinpaint eval"])
    finally:
        flags.FLAGS.unparse_flags()


@pytest.mark.parametrize("mask_type", ["irregular", "free_form", "bbox", "single_bbox"])
def test_mask_in_bin_is_seeded_and_inside_its_bin(mask_type):
    for low, high in [(0.01, 0.1), (0.3, 0.4), (0.5, 0.6)]:
        first = masksets.mask_in_bin(SIZE, low, high, np.random.default_rng([1, 2]), mask_type)
        again = masksets.mask_in_bin(SIZE, low, high, np.random.default_rng([1, 2]), mask_type)
        np.testing.assert_array_equal(first, again)
        assert low <= first.mean() < high


def _single_image_entries(setup):
    results = _results(setup["first"])
    entries = [entry for entry in results["entries"] if entry["image"].endswith("photo0.png")]
    truth = masksets.prepare_image(cv2.imread(entries[0]["image"])[:, :, ::-1], SIZE)
    return entries, truth


def test_perfect_inpainter_and_known_pixels(setup):
    entries, truth = _single_image_entries(setup)
    bins = masksets.parse_bins(BINS)
    seen = []

    def perfect(image, hole):
        seen.append((image.copy(), hole.copy()))
        return truth.copy()

    results = scoring.evaluate(perfect, entries, bins, SIZE, str(setup["first"]), name="perfect")
    row = results["methods"]["perfect"]["all"]
    assert row["l1"] == 0.0 and row["l2"] == 0.0 and row["psnr"] == float("inf")
    assert row["ssim"] == pytest.approx(1.0, abs=1e-6)
    for image, hole in seen:  # the inpainter sees known pixels only
        assert np.all(image[hole > 0.5] == 0)
        np.testing.assert_array_equal(image[hole < 0.5], truth[hole < 0.5])

    # An inpainter that paints everything white is scored on the completed image: known pixels come from
    # the ground truth, so L1 counts the hole pixels only (normalised by all pixels).
    white = scoring.evaluate(lambda image, hole: np.full_like(image, 255), entries, bins, SIZE,
                         str(setup["first"]), name="white")
    for entry in white["entries"]:
        hole = cv2.imread(str(setup["first"] / entry["mask"]), cv2.IMREAD_GRAYSCALE) > 127
        expected = np.sum((255.0 - truth) * hole[:, :, None]) / truth.size / 255.0
        assert entry["metrics"]["white"]["l1"] == pytest.approx(expected, rel=1e-9)


def test_fid_path_with_a_feature_stub(setup):
    entries, truth = _single_image_entries(setup)
    features = keras.Sequential([keras.Input((None, None, 3)), keras.layers.GlobalAveragePooling2D()])
    results = scoring.evaluate(lambda image, hole: truth.copy(), entries, masksets.parse_bins(BINS), SIZE,
                           str(setup["first"]), name="perfect", fid_model=features)
    assert results["methods"]["perfect"]["all"]["fid"] == pytest.approx(0.0, abs=1e-9)
    assert results["methods"]["opencv_ns"]["all"]["fid"] > 0.0
    assert "fid" not in results["methods"]["perfect"]["0.05-0.2"]
    assert "FID ↓" in report.markdown_table(results)


def test_inception_statistics_hand_computed():
    # Constant images stay constant under the 299x299 resize; the stub's features are then the scaled colours.
    colours = np.array([[0, 255, 51], [255, 0, 51], [102, 102, 51]], np.float64)
    images = [np.broadcast_to(colour.astype(np.uint8), (20, 30, 3)).copy() for colour in colours]
    # The centre pixel as the feature (a global average would add float32 summation error over 299^2 pixels).
    features = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Lambda(lambda x: x[:, 149, 149, :])])
    mean, covariance = metrics.inception_statistics(features, images, batch_size=2)
    scaled = colours / 127.5 - 1.0
    np.testing.assert_allclose(mean, scaled.mean(axis=0), atol=1e-6)
    centred = scaled - scaled.mean(axis=0)
    np.testing.assert_allclose(covariance, centred.T @ centred / 2, atol=1e-6)


def test_load_inception_rejects_bad_files(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        metrics.load_inception(str(tmp_path / "missing.h5"))
    not_hdf5 = tmp_path / "weights.h5"
    not_hdf5.write_bytes(b"<html>not weights</html>")
    with pytest.raises(ValueError, match="not an HDF5"):
        metrics.load_inception(str(not_hdf5))


def test_user_masks_are_cropped_like_their_images(tmp_path):
    image_dir, mask_dir = tmp_path / "images", tmp_path / "masks"
    image_dir.mkdir()
    mask_dir.mkdir()
    cv2.imwrite(str(image_dir / "tall.png"), _photo(64, 32, 1))
    cv2.imwrite(str(image_dir / "empty.png"), _photo(32, 32, 2))
    tall_mask = np.zeros((64, 32), np.uint8)
    tall_mask[20:30, 0:10] = 255  # 100 px; the 32x32 centre crop keeps rows 16..47
    cv2.imwrite(str(mask_dir / "tall.png"), tall_mask)
    cv2.imwrite(str(mask_dir / "empty.png"), np.zeros((32, 32), np.uint8))  # no hole: in no bin
    entries, skipped = masksets.mask_set_from_files(sorted(str(path) for path in image_dir.iterdir()),
                                      sorted(str(path) for path in mask_dir.iterdir()),
                                      masksets.parse_bins("0.05-0.2"), 32, "hole", str(tmp_path / "out"))
    assert skipped == [] and len(entries) == 1 and entries[0]["image"].endswith("tall.png")
    stored = cv2.imread(str(tmp_path / "out" / entries[0]["mask"]), cv2.IMREAD_GRAYSCALE) > 127
    expected = np.zeros((32, 32), bool)
    expected[4:14, 0:10] = True
    np.testing.assert_array_equal(stored, expected)
    assert entries[0]["ratio"] == pytest.approx(100 / 1024)
