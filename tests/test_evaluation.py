"""The eval command: seeded binned mask sets, exact reruns, baselines on the same inputs, metric sanity."""
import json
import os
import shutil
import subprocess
import sys

import cv2
import keras
import numpy as np
import pytest
from absl import flags

from tfinpaint.checkpoints import save_generator
from tfinpaint.evaluation import cli, masksets, metrics, report, scoring
from tfinpaint.evaluation.config import EvalConfig, SettingError
from tfinpaint.evaluation.runner import run
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
    cli.run(EvalConfig(str(setup["ckpt"]), out_dir=str(second), masks=str(first)))  # the command as a function
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
    cv2.imwrite(str(image_dir / "wide.png"), _photo(32, 48, 3))
    (mask_dir / "wide.png").write_bytes((mask_dir / "tall.png").read_bytes()[:40])  # truncated: skipped
    entries, skipped = masksets.mask_set_from_files(sorted(str(path) for path in image_dir.iterdir()),
                                      sorted(str(path) for path in mask_dir.iterdir()),
                                      masksets.parse_bins("0.05-0.2"), 32, "hole", str(tmp_path / "out"))
    assert len(entries) == 1 and entries[0]["image"].endswith("tall.png")
    assert [item["image"] for item in skipped] == [str(image_dir / "wide.png")]
    assert "wide.png" in skipped[0]["reason"] and "truncated PNG" in skipped[0]["reason"]
    stored = cv2.imread(str(tmp_path / "out" / entries[0]["mask"]), cv2.IMREAD_GRAYSCALE) > 127
    expected = np.zeros((32, 32), bool)
    expected[4:14, 0:10] = True
    np.testing.assert_array_equal(stored, expected)
    assert entries[0]["ratio"] == pytest.approx(100 / 1024)


# ---- the evaluation folder: never replaced by a different set, replaced only when complete ------------------

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _eval_cli(setup, *args, capsys=None):
    """Runs `tfinpaint eval` through its flag handling; returns (exit code, stderr, stdout)."""
    argv = ["tfinpaint eval", f"--gpath={setup['ckpt']}", f"--flist={setup['images']}", f"--bins={BINS}",
            f"--eval_size={SIZE}", "--model=glcic", *args]
    flags.FLAGS.unparse_flags()
    code = 0
    try:
        flags.FLAGS(argv)
        cli.main(["tfinpaint eval"])
    except SystemExit as stop:
        code = stop.code
    finally:
        flags.FLAGS.unparse_flags()
    out, err = capsys.readouterr() if capsys else ("", "")
    return code, err, out


def _tree(folder):
    """Every file under ``folder`` with its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def _leftovers(parent):
    return sorted(path.name for path in parent.iterdir() if path.name.startswith("."))


def test_other_settings_refuse_a_stored_set_and_same_settings_reuse_it(setup, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default --eval_dir eval_out, as a user runs it twice
    code, _, _ = _eval_cli(setup, capsys=capsys)
    assert code == 0
    stored = tmp_path / "eval_out"
    before = _tree(stored)
    # The same settings as the module's first run, written elsewhere: the same masks (seeded), same numbers.
    assert {name: data for name, data in before.items() if name.startswith("masks/")} == \
        {name: data for name, data in _tree(setup["first"]).items() if name.startswith("masks/")}

    for other in ("--eval_seed=1", "--bins=0.1-0.3", "--eval_size=48", "--eval_mask_type=bbox"):
        code = _eval_cli(setup, other)[0]
        assert isinstance(code, str) and code.startswith("eval: --eval_dir eval_out: holds a different mask set (")
        assert "pass --overwrite to replace it" in code and "\n" not in code
        assert _tree(stored) == before
    # One more photo in the folder is another set too.
    images = tmp_path / "more_images"
    shutil.copytree(setup["images"], images)
    cv2.imwrite(str(images / "photo3.png"), _photo(40, 40, 3)[:, :, ::-1])
    code = _eval_cli(setup, f"--flist={images}")[0]
    assert "holds a different mask set (3 photos stored, 4 asked)" in code
    # The results of another checkpoint are not replaced either.
    other_ckpt = tmp_path / "other_ckpt"
    shutil.copytree(setup["ckpt"], other_ckpt)
    code = _eval_cli(setup, f"--gpath={other_ckpt}")[0]
    assert code.startswith("eval: --eval_dir eval_out: holds the results of another checkpoint (")
    assert _tree(stored) == before and _leftovers(tmp_path) == []

    # The same settings again reuse the stored set: an exact rerun, the set untouched.
    code, _, out = _eval_cli(setup, capsys=capsys)
    assert code == 0 and "| all | glcic |" in out
    after = _tree(stored)
    results_files = ("results.json", "results.md")
    assert {name: data for name, data in after.items() if name not in results_files} == \
        {name: data for name, data in before.items() if name not in results_files}
    rerun = _results(stored)
    assert rerun["mask_set"]["reused_from"] == str(stored)
    assert [entry["metrics"] for entry in rerun["entries"]] == \
        [entry["metrics"] for entry in _results(setup["first"])["entries"]]

    # --overwrite replaces it with the new set.
    code = _eval_cli(setup, "--eval_seed=1", "--overwrite", capsys=capsys)[0]
    assert code == 0
    manifest = json.loads((stored / "manifest.json").read_text())
    assert manifest["seed"] == 1 and manifest["settings"]["seed"] == 1
    assert _tree(stored) != after and _leftovers(tmp_path) == []


@pytest.mark.parametrize("failure", ["scoring", "results file"])
def test_a_run_failing_half_way_leaves_the_earlier_set_unchanged(setup, tmp_path, monkeypatch, failure):
    stored = tmp_path / "eval"
    shutil.copytree(setup["first"], stored)
    before = _tree(stored)
    if failure == "scoring":
        real, calls = metrics.all_metrics, []

        def fails_on_the_fourth_mask(result, truth):
            calls.append(1)
            if len(calls) > 3 * len(METHODS):
                raise RuntimeError("simulated failure while scoring")
            return real(result, truth)

        monkeypatch.setattr(metrics, "all_metrics", fails_on_the_fourth_mask)
        expected = "eval: simulated failure while scoring"
    else:
        real_write = report.write_results

        def disk_full(folder, results):
            real_write(folder, results)  # written, then the disk fills up (half of results.md is there)
            with open(f"{folder}/results.md", "r+b") as handle:
                handle.truncate(10)
            raise OSError(28, "No space left on device", f"{folder}/results.md")

        monkeypatch.setattr(report, "write_results", disk_full)
        expected = "eval: [Errno 28] No space left on device"
    # Other settings with --overwrite: the new set is staged beside the old one, which stays until the end.
    code = _eval_cli(setup, f"--eval_dir={stored}", "--eval_seed=3", "--overwrite")[0]
    assert isinstance(code, str) and code.startswith(expected) and "\n" not in code
    assert _tree(stored) == before  # masks, manifest and results byte-for-byte as they were
    assert masksets.load_mask_set(str(stored))["settings"]["seed"] == 0  # its manifest still matches its masks
    assert _leftovers(tmp_path) == []


def test_commit_puts_the_old_folder_back_when_the_swap_fails(tmp_path, monkeypatch):
    from tfinpaint.evaluation import output_folder

    target = tmp_path / "eval"
    target.mkdir()
    (target / "results.md").write_text("old")
    real_rename, calls = output_folder.os.rename, []

    def second_rename_fails(source, destination):
        calls.append(source)
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        real_rename(source, destination)

    with output_folder.StagedFolder(str(target)) as staging:
        (tmp_path / staging.path / "results.md").write_text("new")
        monkeypatch.setattr(output_folder.os, "rename", second_rename_fails)
        with pytest.raises(OSError, match="Input/output"):
            staging.commit()
        monkeypatch.setattr(output_folder.os, "rename", real_rename)
    assert (target / "results.md").read_text() == "old" and _leftovers(tmp_path) == []


def test_folder_with_foreign_files_is_refused(setup, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(SettingError, match="holds files that no evaluation wrote \\(notes.txt\\)") as error:
        run(EvalConfig(str(setup["ckpt"]), images=str(setup["images"]), out_dir=str(folder), bins=BINS, size=SIZE,
                       overwrite=True))
    assert error.value.setting == "out_dir" and (folder / "notes.txt").read_text() == "keep me"
    assert sorted(path.name for path in folder.iterdir()) == ["notes.txt"]


def test_a_set_stored_before_settings_were_recorded_is_reused(setup, tmp_path):
    stored = tmp_path / "old"
    shutil.copytree(setup["first"], stored)
    manifest = json.loads((stored / "manifest.json").read_text())
    del manifest["settings"], manifest["skipped"]
    (stored / "manifest.json").write_text(json.dumps(manifest))
    results = run(EvalConfig(str(setup["ckpt"]), images=str(setup["images"]), out_dir=str(stored), bins=BINS,
                             size=SIZE))
    assert results["mask_set"]["reused_from"] == str(stored)
    assert [entry["metrics"] for entry in results["entries"]] == \
        [entry["metrics"] for entry in _results(setup["first"])["entries"]]


def test_corrupt_photo_is_skipped_and_the_rest_scored(setup, tmp_path):
    """Through `python -m tfinpaint eval` on real files: a truncated PNG and a text file named .jpg."""
    images = tmp_path / "images"
    shutil.copytree(setup["images"], images)
    whole = (images / "photo0.png").read_bytes()
    (images / "zz_truncated.png").write_bytes(whole[: len(whole) // 2])
    (images / "zz_text.jpg").write_text("not a photo")
    out = tmp_path / "eval"
    command = [sys.executable, "-m", "tfinpaint", "eval", "--gpath", str(setup["ckpt"]), "--flist", str(images),
               "--bins", BINS, "--eval_size", str(SIZE), "--eval_dir", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    assert result.returncode == 1, result.stderr[-2000:]
    skipped_lines = [line for line in result.stderr.splitlines() if line.startswith("eval: skipped ")]
    assert len(skipped_lines) == 2, result.stderr[-2000:]
    assert skipped_lines[0].startswith(f"eval: skipped {images / 'zz_text.jpg'}: ")
    assert skipped_lines[1].startswith(f"eval: skipped {images / 'zz_truncated.png'}: truncated PNG")
    assert "| all | glcic |" in result.stdout
    results = _results(out)
    assert {entry["image"] for entry in results["entries"]} == {str(images / f"photo{i}.png") for i in range(3)}
    assert results["methods"]["glcic"]["all"]["count"] == 6
    assert [item["image"] for item in results["skipped"]] == [str(images / "zz_text.jpg"),
                                                               str(images / "zz_truncated.png")]
    assert "2 photos skipped" in (out / "results.md").read_text()
    # The readable photos keep their indices, hence the masks of the run without the corrupt files.
    for entry in results["entries"]:
        assert (out / entry["mask"]).read_bytes() == (setup["first"] / entry["mask"]).read_bytes()
    assert [entry["metrics"] for entry in results["entries"]] == \
        [entry["metrics"] for entry in _results(setup["first"])["entries"]]


def test_bins_as_pairs_read_like_text():
    assert masksets.parse_bins([(0.05, 0.2), [0.2, 0.4]]) == masksets.parse_bins(BINS) == [(0.05, 0.2), (0.2, 0.4)]
    with pytest.raises(SettingError, match="overlaps"):
        masksets.parse_bins([(0.1, 0.3), (0.2, 0.4)])
