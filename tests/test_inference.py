"""Inference API and infer CLI: any image size, bit-exact known pixels, bad inputs skipped, nothing overwritten."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

import tfinpaint
from tfinpaint import imageio, masks
from tfinpaint.checkpoints import save_generator
from tfinpaint.inference import api, cli
from tfinpaint.inference.cli import InferConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLCIC_OPTIONS = {"cnum": 4, "dnum": 4, "image_size": 64}


def make_checkpoint(folder, name="glcic", options=GLCIC_OPTIONS):
    generator = api.build_generator(name, dict(options))
    save_generator(folder, generator, name, options)
    return generator


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("ckpt"))
    make_checkpoint(folder)
    return folder


@pytest.fixture(scope="module")
def inpainter(checkpoint):
    return tfinpaint.load(checkpoint)


def random_case(height, width, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    hole = np.zeros((height, width), np.float32)
    hole[height // 4: height // 4 + max(1, height // 3), width // 5: width // 5 + max(1, width // 2)] = 1
    return image, hole


@pytest.mark.parametrize("height,width", [(17, 23), (1, 9), (37, 45), (64, 40)])
def test_any_size_keeps_known_pixels_bit_exact(inpainter, height, width):
    image, hole = random_case(height, width)
    result = inpainter(image, hole)
    assert result.shape == image.shape and result.dtype == np.uint8
    known = hole == 0
    np.testing.assert_array_equal(result[known], image[known])


def test_restored_weights_equal_saved_ones(tmp_path):
    saved = make_checkpoint(str(tmp_path))
    loaded = tfinpaint.load(str(tmp_path))
    for a, b in zip(saved.weights, loaded.generator.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert loaded.model_name == "glcic" and loaded.size_factor == 4


def test_output_is_the_network_prediction_in_holes(inpainter):
    image, hole = random_case(32, 48)
    stages = inpainter.run_network(image, hole)
    result = inpainter(image, hole)
    expected = np.clip(np.rint(stages["raw"] * 255), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(result[hole > 0], expected[hole > 0])
    # Without steps only the prediction leaves the graph (less memory), with the same values.
    raw_only = inpainter.run_network(image, hole, ("raw",))
    assert set(raw_only) == {"raw"} and {"raw", "output"} <= set(stages)
    np.testing.assert_array_equal(raw_only["raw"], stages["raw"])


def test_padding_reflects_and_crops_back():
    array = np.arange(15, dtype=np.float32).reshape(3, 5)
    padded = api._pad_to_multiple(array, 4)
    assert padded.shape == (4, 8)
    np.testing.assert_array_equal(padded[:3, :5], array)
    np.testing.assert_array_equal(padded[3, :5], array[1])  # reflection excludes the edge row
    np.testing.assert_array_equal(api._pad_to_multiple(np.ones((1, 3)), 8).shape, (8, 8))


def test_no_hole_returns_the_input(inpainter):
    image, _ = random_case(20, 20)
    np.testing.assert_array_equal(inpainter(image, np.zeros((20, 20))), image)


def test_large_image_uses_bounded_working_region(checkpoint, monkeypatch):
    inpainter = tfinpaint.load(checkpoint, max_pixels=32 * 32)
    seen = []
    original = inpainter.run_network

    def spy(image, hole, *args):
        seen.append(hole.shape)
        return original(image, hole, *args)

    monkeypatch.setattr(inpainter, "run_network", spy)
    image, _ = random_case(120, 200)
    hole = np.zeros((120, 200), np.float32)
    hole[50:70, 140:170] = 1
    result = inpainter(image, hole)
    assert seen and seen[0][0] * seen[0][1] <= 32 * 32
    np.testing.assert_array_equal(result[hole == 0], image[hole == 0])
    assert result.shape == image.shape


def test_inpaint_function_accepts_paths_and_polarity(tmp_path, checkpoint, inpainter):
    image, hole = random_case(24, 28)
    image_path = str(tmp_path / "photo.png")
    mask_path = str(tmp_path / "photo_mask.png")
    imageio.write_image(image_path, image)
    masks.write_mask(mask_path, 1 - hole)  # white = known
    from_paths = tfinpaint.inpaint(image_path, mask_path, model=inpainter, mask_polarity="valid")
    from_arrays = tfinpaint.inpaint(image, hole, model=checkpoint)
    np.testing.assert_array_equal(from_paths, from_arrays)
    with pytest.raises(ValueError, match="model="):
        tfinpaint.inpaint(image, hole)


def test_mask_of_another_size_is_resized_with_warning(inpainter):
    image, _ = random_case(40, 40)
    small = np.zeros((20, 20), np.float32)
    small[5:10, 5:10] = 1
    with pytest.warns(UserWarning, match="resized"):
        result = inpainter(image, small)
    hole = cv2.resize(small, (40, 40), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(result[hole == 0], image[hole == 0])


def test_pair_masks_by_stem_order_only_when_asked_or_single():
    images = ["a/x.png", "a/y.jpg"]
    assert cli.pair_masks(images, ["m/y.png", "m/x.png"]) == ["m/x.png", "m/y.png"]
    assert cli.pair_masks(images, ["m/only.png"]) == ["m/only.png", "m/only.png"]
    assert cli.pair_masks(images, ["m/y.png"]) == [None, "m/y.png"]  # a folder holding y's mask alone
    # No stem matches: order is used only when asked for, and only with equal counts.
    with pytest.raises(ValueError, match="pass pair_by_order to pair") as error:
        cli.pair_masks(images, ["m/1.png", "m/2.png"])
    assert "pass --pair_by_order to pair" in cli.error_line(error.value)  # the command spells it as its flag
    assert cli.pair_masks(images, ["m/1.png", "m/2.png"], by_order=True) == ["m/1.png", "m/2.png"]
    with pytest.raises(ValueError, match="as many masks as images"):
        cli.pair_masks(images, ["1.png", "2.png", "3.png"], by_order=True)
    # Some stems match: the others have no mask (never another image's), whatever by_order says.
    assert cli.pair_masks(["a.png", "b.png", "c.png"], ["a.png", "c.png", "d.png"], by_order=True) == \
        ["a.png", None, "c.png"]
    with pytest.raises(ValueError, match="ambiguous"):
        cli.pair_masks(images, ["m1/x.png", "m2/x.jpg"])


def _write_inputs(folder):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(1)
    odd = rng.integers(0, 256, (33, 47, 3), dtype=np.uint8)
    imageio.write_image(os.path.join(folder, "odd.png"), odd)
    gray = rng.integers(0, 256, (30, 26), dtype=np.uint8)
    cv2.imwrite(os.path.join(folder, "gray.png"), gray)
    rgba = rng.integers(0, 256, (28, 36, 4), dtype=np.uint8)
    cv2.imwrite(os.path.join(folder, "rgba.png"), rgba)
    deep = rng.integers(0, 65536, (24, 20, 3), dtype=np.uint16)
    cv2.imwrite(os.path.join(folder, "deep.png"), deep)
    ok, encoded = cv2.imencode(".jpg", odd)
    with open(os.path.join(folder, "corrupt.jpg"), "wb") as handle:
        handle.write(encoded.tobytes()[: len(encoded) // 2])
    return {"odd.png": odd.shape, "gray.png": (30, 26, 3), "rgba.png": (28, 36, 3), "deep.png": (24, 20, 3)}


def test_cli_run_on_a_folder_of_awkward_inputs(tmp_path, checkpoint, capsys):
    inputs = str(tmp_path / "in")
    shapes = _write_inputs(inputs)
    mask = np.zeros((16, 16), np.float32)
    mask[4:10, 6:12] = 1
    mask_path = str(tmp_path / "hole.png")
    masks.write_mask(mask_path, mask)  # one mask of another size for every image
    out = str(tmp_path / "out")
    with pytest.warns(UserWarning):
        counts = cli.run(InferConfig(checkpoint, inputs, out, masks=mask_path, save_steps=True))
    assert counts == {"written": 4, "skipped": 1, "kept": 0}
    log = capsys.readouterr().out
    assert "corrupt.jpg: skipped" in log and "truncated JPEG" in log
    for name, shape in shapes.items():
        result = imageio.read_image(os.path.join(out, name))
        assert result.shape == shape
        source = imageio.read_image(os.path.join(inputs, name))
        hole = cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
        np.testing.assert_array_equal(result[hole == 0], source[hole == 0])
        steps = imageio.read_image(os.path.join(out, os.path.splitext(name)[0] + "_steps.png"))
        assert steps.shape[0] == shape[0] and steps.shape[1] >= 2 * shape[1]
    assert not os.path.exists(os.path.join(out, "corrupt.jpg"))

    # A second run keeps what exists unless --overwrite.
    before = os.path.getmtime(os.path.join(out, "odd.png"))
    counts = cli.run(InferConfig(checkpoint, inputs, out, masks=mask_path))
    assert counts == {"written": 0, "skipped": 1, "kept": 4}
    assert os.path.getmtime(os.path.join(out, "odd.png")) == before


def test_cli_generated_masks_are_seeded(tmp_path, checkpoint):
    inputs = str(tmp_path / "in")
    os.makedirs(inputs)
    image, _ = random_case(40, 48)
    imageio.write_image(os.path.join(inputs, "a.png"), image)
    outputs = []
    for run_index in range(2):
        out = str(tmp_path / f"out{run_index}")
        cli.run(InferConfig(checkpoint, inputs, out, gen_masks=True, mask_type="bbox", mask_seed=3))
        outputs.append(imageio.read_image(os.path.join(out, "a.png")))
    np.testing.assert_array_equal(outputs[0], outputs[1])
    hole = masks.indexed_mask("bbox", 40, 48, 3, 0)
    np.testing.assert_array_equal(outputs[0][hole == 0], image[hole == 0])


def test_infer_py_command_line_exit_code(tmp_path, checkpoint):
    inputs = str(tmp_path / "in")
    _write_inputs(inputs)
    out = str(tmp_path / "out")
    command = [sys.executable, os.path.join(REPO, "infer.py"), "--__gpath__", checkpoint, "--__flist__", inputs,
               "--__gen_masks__", "true", "--__mask_type__", "single_bbox", "--out", out]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]  # the corrupt file was skipped
    assert "corrupt.jpg: skipped" in result.stdout
    assert sorted(os.listdir(out)) == ["deep.png", "gray.png", "odd.png", "rgba.png"]


def test_round_trip_train_checkpoint_infer_cli(tmp_path):
    """A few real training steps, then the infer CLI on awkward inputs with the checkpoint folder alone."""
    from functools import partial

    from tfinpaint import data
    from tfinpaint.training.trainer import TrainConfig, Trainer

    ckpt_dir = str(tmp_path / "ckpt")
    config = TrainConfig(batch_size=2, image_size=64, max_steps=3, ckpt_dir=ckpt_dir, save_every=0, log_every=0,
                         preview_every=0, progress=False)
    trainer = Trainer("glcic", {"cnum": 4, "dnum": 4, "image_size": 64}, config)
    make = partial(data.make_dataset, data.sample_images()[:4], trainer.image_size, mask_type="bbox", seed=0,
                   validate=False)
    trainer.fit(make)
    trained = [w.numpy() for w in trainer.generator.weights]

    inputs = str(tmp_path / "in")
    shapes = _write_inputs(inputs)
    mask = np.zeros((10, 14), np.float32)
    mask[2:7, 3:9] = 1
    mask_path = str(tmp_path / "hole.png")
    masks.write_mask(mask_path, mask)
    out = str(tmp_path / "out")
    with pytest.warns(UserWarning):
        counts = cli.run(InferConfig(ckpt_dir, inputs, out, masks=mask_path))
    assert counts == {"written": 4, "skipped": 1, "kept": 0}
    for name, shape in shapes.items():
        result = imageio.read_image(os.path.join(out, name))
        source = imageio.read_image(os.path.join(inputs, name))
        hole = cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
        assert result.shape == shape
        np.testing.assert_array_equal(result[hole == 0], source[hole == 0])
    loaded = tfinpaint.load(ckpt_dir)
    for expected, restored in zip(trained, loaded.generator.weights):
        np.testing.assert_array_equal(expected, restored.numpy())


def test_bfloat16_precision_restores_the_same_weights_and_keeps_known_pixels(checkpoint, inpainter):
    low = tfinpaint.load(checkpoint, precision="bfloat16")
    for a, b in zip(inpainter.generator.weights, low.generator.weights):
        assert b.dtype == "float32"
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    image, hole = random_case(32, 40)
    result = low(image, hole)
    np.testing.assert_array_equal(result[hole == 0], image[hole == 0])
    full = inpainter(image, hole).astype(np.int32)
    # bf16 keeps 8 mantissa bits: the predictions agree to a few grey levels on average.
    assert np.mean(np.abs(result.astype(np.int32) - full)) < 4.0
    with pytest.raises(ValueError, match="precision"):
        tfinpaint.load(checkpoint, precision="float16")


def _photo_and_valid_mask(folder, height=36, width=44):
    """A photo and its mask file in NVIDIA/HiFill polarity (white = known, black = hole)."""
    image, hole = random_case(height, width, seed=5)
    os.makedirs(folder, exist_ok=True)
    imageio.write_image(os.path.join(folder, "photo.png"), image)
    mask_path = os.path.join(os.path.dirname(folder), "photo_valid.png")
    masks.write_mask(mask_path, 1 - hole)
    return image, hole, mask_path


def test_infer_py_valid_polarity_mask_file_keeps_known_pixels(tmp_path, checkpoint, inpainter):
    """Regression: the CLI read the file with --mask_polarity valid and the inpainter inverted it again, so the
    hole was kept and the whole known area replaced (exit code 0)."""
    inputs = str(tmp_path / "in")
    image, hole, mask_path = _photo_and_valid_mask(inputs)
    out = str(tmp_path / "out")
    command = [sys.executable, os.path.join(REPO, "infer.py"), "--__gpath__", checkpoint, "--__flist__", inputs,
               "--__mlist__", mask_path, "--mask_polarity", "valid", "--out", out]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    written = imageio.read_image(os.path.join(out, "photo.png"))
    np.testing.assert_array_equal(written[hole == 0], image[hole == 0])
    # The hole is filled with the network's prediction, exactly as the API does with the hole array.
    np.testing.assert_array_equal(written, inpainter(image, hole))


def test_polarity_is_applied_once_through_the_api(tmp_path, checkpoint, inpainter):
    image, hole, mask_path = _photo_and_valid_mask(str(tmp_path / "in"))
    expected = inpainter(image, hole)
    valid_inpainter = tfinpaint.load(checkpoint, mask_polarity="valid")
    # An explicit polarity wins over the inpainter's own, and is applied once.
    np.testing.assert_array_equal(tfinpaint.inpaint(image, hole, model=valid_inpainter, mask_polarity="hole"),
                                  expected)
    # Without one, the inpainter's polarity reads the (white = known) file and array.
    np.testing.assert_array_equal(tfinpaint.inpaint(image, mask_path, model=valid_inpainter), expected)
    np.testing.assert_array_equal(valid_inpainter(image, 1 - hole), expected)
    np.testing.assert_array_equal(tfinpaint.inpaint(image, mask_path, model=checkpoint, mask_polarity="valid"),
                                  expected)


def test_cli_generated_masks_ignore_the_file_polarity(tmp_path, checkpoint):
    """Generated masks are hole masks: --mask_polarity (a property of mask files) must not invert them."""
    inputs = str(tmp_path / "in")
    os.makedirs(inputs)
    image, _ = random_case(40, 48)
    imageio.write_image(os.path.join(inputs, "a.png"), image)
    out = str(tmp_path / "out")
    cli.run(InferConfig(checkpoint, inputs, out, gen_masks=True, mask_type="bbox", mask_seed=3,
                        mask_polarity="valid"))
    hole = masks.indexed_mask("bbox", 40, 48, 3, 0)
    written = imageio.read_image(os.path.join(out, "a.png"))
    np.testing.assert_array_equal(written[hole == 0], image[hole == 0])


# --- Files as users give them: pairing, formats, orientation, outputs next to inputs (issue 11 items 2-4, 10).

START_UP_NOISE = ("cuInit", "oneDNN", "absl::InitializeLog", "cpu_feature_guard", "remapper failed")


def _distinct_masks(shape, count):
    """``count`` masks with holes in different places, so a mask paired with the wrong image shows."""
    holes = []
    for index in range(count):
        hole = np.zeros(shape, np.float32)
        top = 2 + 6 * index
        hole[top: top + 5, 3 + 4 * index: 12 + 4 * index] = 1
        holes.append(hole)
    return holes


def test_infer_py_pairs_masks_by_stem_and_skips_an_image_without_one(tmp_path, checkpoint, inpainter):
    """Images a, b, c with masks a, c, d: a and c get their own masks, b is reported and skipped, exit code 1.
    (The sorted-order fallback used to give b the mask c and c the mask d.)"""
    inputs, mask_dir, out = tmp_path / "in", tmp_path / "masks", tmp_path / "out"
    inputs.mkdir()
    mask_dir.mkdir()
    images = {}
    for index, name in enumerate("abc"):
        images[name], _ = random_case(30, 36, seed=10 + index)
        imageio.write_image(inputs / f"{name}.png", images[name])
    holes = dict(zip("acd", _distinct_masks((30, 36), 3)))
    for name, hole in holes.items():
        masks.write_mask(str(mask_dir / f"{name}.png"), hole)
    command = [sys.executable, os.path.join(REPO, "infer.py"), "--__gpath__", checkpoint, "--__flist__",
               str(inputs), "--__mlist__", str(mask_dir), "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    assert sorted(os.listdir(out)) == ["a.png", "c.png"]
    skipped = [line for line in result.stdout.splitlines() if "skipped" in line and "done" not in line]
    assert len(skipped) == 1 and "b.png" in skipped[0] and "no mask" in skipped[0]
    for name in "ac":
        written = imageio.read_image(out / f"{name}.png")
        np.testing.assert_array_equal(written, inpainter(images[name], holes[name]))
    # TensorFlow's start-up lines stay out of the command's output (item 10).
    assert not [word for word in START_UP_NOISE if word in result.stderr], result.stderr[-2000:]


def test_pair_by_order_is_used_only_when_asked(tmp_path, checkpoint):
    inputs, mask_dir = tmp_path / "in", tmp_path / "masks"
    inputs.mkdir()
    mask_dir.mkdir()
    for index, name in enumerate("ab"):
        imageio.write_image(inputs / f"{name}.png", random_case(20, 20, seed=index)[0])
        masks.write_mask(str(mask_dir / f"mask{index}.png"), _distinct_masks((20, 20), 2)[index])
    with pytest.raises(ValueError, match="pass pair_by_order") as error:
        cli.run(InferConfig(checkpoint, str(inputs), str(tmp_path / "out"), masks=str(mask_dir)))
    assert "pass --pair_by_order" in cli.error_line(error.value)
    counts = cli.run(InferConfig(checkpoint, str(inputs), str(tmp_path / "out"), masks=str(mask_dir),
                                 pair_by_order=True))
    assert counts == {"written": 2, "skipped": 0, "kept": 0}


def _jpeg_with_orientation(bgr, orientation):
    from tests.test_imageio import jpeg_with_exif, tiff_with_orientation

    return jpeg_with_exif(bgr, tiff_with_orientation(orientation))


def test_tfinpaint_infer_keeps_depth_alpha_exif_and_the_umask(tmp_path, checkpoint, inpainter):
    """Through the console command: a 16-bit RGBA PNG comes back 16-bit RGBA with known pixels exact at 16 bits
    and hole pixels = prediction * 257; a JPEG's EXIF block is kept; files get 0666 minus the umask."""
    from tests.test_imageio import tiff_with_orientation

    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    rng = np.random.default_rng(3)
    deep = rng.integers(0, 65536, (26, 34, 4), dtype=np.uint16)  # BGRA
    cv2.imwrite(str(inputs / "deep.png"), deep)
    photo = rng.integers(0, 256, (26, 34, 3), dtype=np.uint8)
    (inputs / "photo.jpg").write_bytes(_jpeg_with_orientation(photo, 1))
    hole = _distinct_masks((26, 34), 1)[0]
    mask_path = str(tmp_path / "hole.png")
    masks.write_mask(mask_path, hole)
    command = [sys.executable, "-m", "tfinpaint", "infer", "--__gpath__", checkpoint, "--__flist__", str(inputs),
               "--__mlist__", mask_path, "--out", str(out), "--jpeg_quality", "90"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300,
                            preexec_fn=lambda: os.umask(0o022))
    assert result.returncode == 0, result.stderr[-2000:]
    assert not [word for word in START_UP_NOISE if word in result.stderr], result.stderr[-2000:]

    written = cv2.imread(str(out / "deep.png"), cv2.IMREAD_UNCHANGED)
    assert written.dtype == np.uint16 and written.shape == deep.shape
    np.testing.assert_array_equal(written[hole == 0], deep[hole == 0])
    np.testing.assert_array_equal(written[:, :, 3], deep[:, :, 3])
    as_8_bit = imageio.read_image(inputs / "deep.png")
    prediction = inpainter(as_8_bit, hole).astype(np.uint16) * 257
    np.testing.assert_array_equal(written[:, :, 2::-1][hole == 1], prediction[hole == 1])

    data = (out / "photo.jpg").read_bytes()
    assert imageio.exif_block(data) == tiff_with_orientation(1)
    for name in ("deep.png", "photo.jpg"):
        assert os.stat(out / name).st_mode & 0o777 == 0o644


def test_out_format_png_keeps_known_pixels_of_a_jpeg_exact_and_jpg_re_encodes(tmp_path, checkpoint):
    inputs = tmp_path / "in"
    inputs.mkdir()
    image, hole = random_case(32, 40, seed=7)
    cv2.imwrite(str(inputs / "photo.jpg"), image[:, :, ::-1])
    masks.write_mask(str(tmp_path / "photo.png"), hole)
    decoded = imageio.read_image(inputs / "photo.jpg")
    for out_format in ("png", "jpg"):
        out = tmp_path / out_format
        cli.run(InferConfig(checkpoint, str(inputs), str(out), masks=str(tmp_path / "photo.png"),
                            out_format=out_format, jpeg_quality=75))
        assert os.listdir(out) == [f"photo.{out_format}"]
        written = imageio.read_image(out / f"photo.{out_format}")
        exact = np.mean(np.all(written[hole == 0] == decoded[hole == 0], axis=1))
        if out_format == "png":
            assert exact == 1.0
        else:  # JPEG re-encodes the known pixels too (what the README says)
            assert exact < 1.0


def test_exif_orientation_6_photo_with_a_mask_drawn_as_displayed(tmp_path, checkpoint, inpainter):
    """A phone photo stored sideways (orientation 6) and a mask drawn on it as viewers show it: the hole lands
    where the mask says and the displayed image's known pixels are kept; the output is written upright."""
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    rows, cols = np.mgrid[0:28, 0:44]
    stored = np.stack([rows * 9, cols * 5, (rows + cols) * 3], axis=2).astype(np.uint8)  # smooth: JPEG keeps it
    data = _jpeg_with_orientation(stored[:, :, ::-1].copy(), 6)
    (inputs / "phone.jpg").write_bytes(data)
    displayed = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]  # OpenCV's view
    assert displayed.shape[:2] == (44, 28)
    hole = np.zeros((44, 28), np.float32)
    hole[4:14, 6:20] = 1  # near the displayed top
    masks.write_mask(str(tmp_path / "phone.png"), hole)
    counts = cli.run(InferConfig(checkpoint, str(inputs), str(out), masks=str(tmp_path / "phone.png"),
                                 out_format="png"))
    assert counts == {"written": 1, "skipped": 0, "kept": 0}
    written = imageio.read_image(out / "phone.png")
    assert written.shape == displayed.shape
    np.testing.assert_array_equal(written[hole == 0], displayed[hole == 0])
    np.testing.assert_array_equal(written, inpainter(displayed, hole))


def test_infer_py_refuses_to_write_over_its_inputs(tmp_path, checkpoint):
    inputs = tmp_path / "in"
    inputs.mkdir()
    image, hole = random_case(20, 24)
    imageio.write_image(inputs / "a.png", image)
    before = (inputs / "a.png").read_bytes()
    command = [sys.executable, os.path.join(REPO, "infer.py"), "--__gpath__", checkpoint, "--__flist__",
               str(inputs), "--__gen_masks__", "true", "--out", str(inputs), "--overwrite"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode != 0
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1 and "would replace the input" in error_lines[0] and "a.png" in error_lines[0]
    assert "choose an --out folder" in error_lines[0]  # the library names the setting, the command its flag
    assert (inputs / "a.png").read_bytes() == before and os.listdir(inputs) == ["a.png"]
    # Two inputs that would land on one output are refused too.
    imageio.write_image(inputs / "a.jpg", image)
    with pytest.raises(ValueError, match="both be written"):
        cli.run(InferConfig(checkpoint, str(inputs), str(tmp_path / "out"), gen_masks=True, out_format="png"))


def test_api_rejects_float_images_outside_0_1_and_nan(inpainter):
    image, hole = random_case(16, 20)
    as_float = image.astype(np.float32) / 255.0
    np.testing.assert_array_equal(inpainter(as_float, hole), inpainter(image, hole))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        inpainter(image.astype(np.float32), hole)  # 0..255 floats are not silently clipped to white
    as_float[3, 4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        tfinpaint.inpaint(as_float, hole, model=inpainter)
