"""``tfinpaint convert`` on synthetic releases written with the official names and shapes (DeepFill v1/v2 and
HiFill TF1 checkpoints, HiFill's frozen GraphDef): every official tensor lands in the intended variable, the
folder loads and inpaints, the colour flip is exact, and bad inputs give one-line errors with nothing written."""
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf

import tfinpaint
from tests import convert_official_names as official
from tfinpaint import checkpoints
from tfinpaint.convert import ConvertError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ODD_SHAPE = (37, 45)


def _values(shapes, seed):
    """Distinct random values per tensor (a different seed per name), on the scale of trained weights."""
    rng = np.random.default_rng(seed)
    return {name: (rng.standard_normal(shape) * 0.05).astype(np.float32) for name, shape in sorted(shapes.items())}


def _save(prefix, values):
    """A TF1 name-based checkpoint (V2 format), as the official code writes it."""
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    names = sorted(values)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[values[name] for name in names])


def _save_with_saver(folder, values):
    """The same with ``tf.compat.v1.train.Saver`` in a graph, and the state file shipped as ``checkpoint.txt``
    naming an absolute path of the authors' machine (as the DeepFill releases do)."""
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.compat.v1.Variable(value, name=name) for name, value in sorted(values.items())]
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, os.path.join(folder, "snap-100"), write_state=False)
    with open(os.path.join(folder, "checkpoint.txt"), "w") as handle:
        handle.write('model_checkpoint_path: "/home/authors/model_logs/places2/snap-100"\n'
                     'all_model_checkpoint_paths: "/home/authors/model_logs/places2/snap-100"\n')


def _variable(model, components, leaf):
    """The single variable of ``model`` whose path holds every name in ``components`` and ends with ``leaf``."""
    found = [v for v in model.weights
             if v.path.split("/")[-1] == leaf and all(c in v.path.split("/")[:-1] for c in components)]
    assert len(found) == 1, (components, leaf, [v.path for v in found])
    return found[0]


def _deepfill_expected(generator, name):
    # inpaint_net/<layer>[/<layer>_conv]/<kernel|bias> -> the variable of tfinpaint's layer <layer>.
    parts = name.split("/")
    return _variable(generator, [parts[1]], parts[-1])


def _hifill_expected(generator, name):
    parts = name.split("/")
    leaf = parts[-1]
    if parts[-2].endswith(("_feat", "_gate")):  # coarse: <layer>_feat/w, <layer>/<layer>_conv_gate/biases
        layer = parts[1] if len(parts) == 4 else parts[1].rsplit("_", 1)[0]
        branch = "feature_conv" if parts[-2].endswith("_feat") else "gate_conv"
        return _variable(generator, [layer, branch], "kernel" if leaf == "w" else "bias")
    branch = "gate_conv" if leaf in ("pw", "ds_biases") else "feature_conv"
    return _variable(generator, [parts[1], branch], "kernel" if leaf in ("w", "pw") else "bias")


def _assert_every_tensor_landed(generator, values, expected):
    assert len(generator.weights) == len(values)
    for name, value in values.items():
        np.testing.assert_array_equal(expected(generator, name).numpy(), value, err_msg=name)


def _image_and_mask(seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, ODD_SHAPE + (3,), dtype=np.uint8)
    hole = np.zeros(ODD_SHAPE, np.float32)
    hole[9:24, 12:30] = 1.0
    return image, hole


def _check_inpaints(folder):
    inpainter = tfinpaint.load(folder)
    image, hole = _image_and_mask()
    out = inpainter(image, hole)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[hole == 0], image[hole == 0])
    return inpainter, out


@pytest.fixture(scope="module")
def v1_release(tmp_path_factory):
    """A DeepFill v1 release folder: generator, critics, Adam slots and the step counter."""
    folder = str(tmp_path_factory.mktemp("deepfill_v1_release"))
    generator = _values(official.table("deepfill_v1"), seed=1)
    critics = _values(official.table("deepfill_v1-discriminator"), seed=2)
    slots = {"inpaint_net/conv1/kernel/Adam": np.ones((5, 5, 5, 32), np.float32),
             "inpaint_net/conv1/kernel/Adam_1": np.ones((5, 5, 5, 32), np.float32),
             "beta1_power": np.float32(0.5), "global_step": np.float32(100)}
    _save_with_saver(folder, {**generator, **critics, **slots})
    return folder, generator, critics


@pytest.mark.slow  # end-to-end command lines: convert, then infer.py
def test_deepfill_v1_release_folder_through_the_command_line(v1_release, tmp_path):
    folder, generator_values, _ = v1_release
    out = str(tmp_path / "converted")
    command = [sys.executable, "-m", "tfinpaint", "convert", "--src", folder, "--out", out]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-2000:]
    # Model detected from the names; 84 generator tensors; critics (20) and training state (4) ignored.
    assert "DeepFill v1: 84 tensors (3,601,542 values)" in result.stdout
    assert "24 other tensors ignored" in result.stdout
    config = checkpoints.read_model_config(out)
    assert config["model"] == "deepfill_v1"
    assert config["options"]["bgr"] is True and config["options"]["align_corners"] is True
    inpainter, expected = _check_inpaints(out)  # nothing set by the user: model.json carries the parity options
    _assert_every_tensor_landed(inpainter.generator, generator_values, _deepfill_expected)

    # The seed inference command takes the converted folder as it is, on real files.
    photos, masks, results = (tmp_path / name for name in ("photos", "masks", "results"))
    photos.mkdir()
    masks.mkdir()
    image, hole = _image_and_mask()
    cv2.imwrite(str(photos / "odd.png"), image[:, :, ::-1])
    cv2.imwrite(str(masks / "odd.png"), (hole * 255).astype(np.uint8))
    command = [sys.executable, "infer.py", "--__gpath__", out, "--__flist__", str(photos), "--__mlist__", str(masks),
               "--out", str(results)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_array_equal(cv2.imread(str(results / "odd.png"))[:, :, ::-1], expected)


def test_deepfill_v2_checkpoint_prefix_through_the_api(tmp_path):
    values = _values(official.table("deepfill_v2"), seed=3)
    prefix = str(tmp_path / "release" / "snap-0")
    _save(prefix, {**values, **_values(official.table("deepfill_v2-discriminator"), seed=4)})
    report = tfinpaint.convert(prefix, tmp_path / "converted")  # --model detected: v2 (gated widths)
    assert report["model"] == "deepfill_v2" and report["tensors"] == 84 and report["parameters"] == 4052478
    assert len(report["ignored"]) == 18  # the SN-PatchGAN, not asked for
    inpainter, _ = _check_inpaints(tmp_path / "converted")
    _assert_every_tensor_landed(inpainter.generator, values, _deepfill_expected)


@pytest.fixture(scope="module")
def hifill_release(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hifill_release")
    shapes = official.table("hifill")
    values = _values(shapes, seed=5)
    _save(str(folder / "model_logs" / "snap-0"), values)
    generator = {name: value for name, value in values.items() if name.startswith("generator/")}
    return folder / "model_logs", generator, values


def _frozen_graph(path, values, scope=""):
    """A frozen GraphDef like the Atlas hifill.pb: weights as Const nodes with their checkpoint names, next to
    placeholders and other (non-weight) constants; ``scope`` goes in front of every name."""
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.placeholder(tf.float32, [1, 512, 512, 3], name=scope + "img")
        tf.compat.v1.placeholder(tf.float32, [1, 512, 512, 1], name=scope + "mask")
        tf.constant([256, 256], name=scope + "generator/resize/size")
        tf.constant(np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1), name=scope + "generator/fuse_weight")
        for name, value in values.items():
            tf.identity(tf.constant(value, name=scope + name), name=scope + name + "/read")
    with open(path, "wb") as handle:
        handle.write(graph.as_graph_def().SerializeToString())


def test_hifill_checkpoint_and_frozen_graph(hifill_release, tmp_path):
    folder, generator_values, _ = hifill_release
    report = tfinpaint.convert(folder, tmp_path / "from_ckpt", model="hifill")
    assert report["model"] == "cra" and report["tensors"] == 192 and report["parameters"] == 2722791
    config = checkpoints.read_model_config(tmp_path / "from_ckpt")
    assert config["options"]["coarse_size"] == 256 and config["options"]["bgr"] is True
    inpainter, from_ckpt = _check_inpaints(tmp_path / "from_ckpt")
    _assert_every_tensor_landed(inpainter.generator, generator_values, _hifill_expected)

    pb = str(tmp_path / "hifill.pb")
    _frozen_graph(pb, generator_values)
    report = tfinpaint.convert(pb, tmp_path / "from_pb")
    assert report["model"] == "cra" and report["tensors"] == 192
    assert "generator/fuse_weight" in report["ignored"]  # a constant, not a weight
    _, from_pb = _check_inpaints(tmp_path / "from_pb")
    np.testing.assert_array_equal(from_pb, from_ckpt)


def test_frozen_graph_names_under_an_import_scope_keep_their_checkpoint_names(tmp_path):
    from tfinpaint.convert.sources import read_source

    pb = str(tmp_path / "imported.pb")
    weight = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
    _frozen_graph(pb, {"generator/c_en_down_128_feat/w": weight}, scope="import/")
    source = read_source(pb)
    assert "generator/c_en_down_128_feat/w" in source.shapes and "generator/fuse_weight" in source.shapes
    np.testing.assert_array_equal(source.get("generator/c_en_down_128_feat/w"), weight)
    with pytest.raises(ConvertError, match="imported.pb: a frozen inference graph holds no discriminator"):
        tfinpaint.convert(pb, tmp_path / "out", discriminator=True)


def test_frozen_graph_with_other_names_is_refused_with_what_was_found(tmp_path):
    pb = str(tmp_path / "other.pb")
    _frozen_graph(pb, {"net/layer1/weights": np.zeros((3, 3, 4, 8), np.float32)})
    # Float constants only: the int32 resize size is no candidate.
    with pytest.raises(ConvertError, match=r"no official tensor names found \(found: generator/fuse_weight, "
                                           r"net/layer1/weights\)"):
        tfinpaint.convert(pb, tmp_path / "out")
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("release", ["deepfill_v1", "hifill"])
def test_colour_flip_in_the_weights_gives_the_bgr_outputs(release, v1_release, hifill_release, tmp_path):
    """bgr=True (the network sees BGR) and bgr=False (colour channels flipped in the weights, network sees RGB)
    are the same function of the RGB input."""
    src = v1_release[0] if release == "deepfill_v1" else hifill_release[0]
    tfinpaint.convert(src, tmp_path / "bgr")
    report = tfinpaint.convert(src, tmp_path / "rgb", bgr=False)
    assert report["options"]["bgr"] is False
    image, hole = _image_and_mask(seed=1)
    bgr = tfinpaint.load(tmp_path / "bgr")
    rgb = tfinpaint.load(tmp_path / "rgb")
    # Different weights really were written (the flip touched the image layers) ...
    assert not all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(bgr.generator.weights, rgb.generator.weights))
    # ... and the networks agree to float rounding on every stage.
    image_f = tf.constant(image[None, :32, :32].astype(np.float32) / 255.0)
    hole_f = tf.constant(hole[None, :32, :32, None])
    out_bgr = bgr.generator(image_f, hole_f, training=False)
    out_rgb = rgb.generator(image_f, hole_f, training=False)
    for key in ("raw", "coarse"):
        np.testing.assert_allclose(out_rgb[key].numpy(), out_bgr[key].numpy(), atol=2e-5, err_msg=key)


def test_discriminators_convert_with_the_generator(v1_release, hifill_release, tmp_path):
    """--discriminator: each critic tensor lands in its variable of the saved folder (checked with an independent
    rule per release, after restoring into freshly built networks)."""
    from tfinpaint.convert import deepfill, hifill
    from tfinpaint.convert.converter import _build
    from tfinpaint.convert.sources import read_source

    v2_prefix = str(tmp_path / "v2_release" / "snap")
    _save(v2_prefix, {**_values(official.table("deepfill_v2"), seed=10),
                      **_values(official.table("deepfill_v2-discriminator"), seed=6)})
    cases = [("deepfill_v1", v1_release[0], 84 + 20), ("deepfill_v2", v2_prefix, 84 + 18),
             ("cra", hifill_release[0], 192 + 14)]
    for name, src, count in cases:
        out = tmp_path / name
        report = tfinpaint.convert(src, out, discriminator=True)
        assert report["model"] == name and report["tensors"] == count
        assert checkpoints.read_model_config(out)["model"] == name
        options = (deepfill if name.startswith("deepfill") else hifill).parity_options()
        bundle = _build(name, options)
        checkpoints.restore_discriminators(bundle.discriminators, out)
        source = read_source(src)
        critic_names = [n for n in source.shapes if n.startswith("discriminator/")]
        assert len(critic_names) == sum(len(c.weights) for c in bundle.discriminators.values())
        for official_name in critic_names:
            parts = official_name.split("/")
            if name == "deepfill_v1":
                kind = "local" if "local" in parts[1] else "global"
                critic = bundle.discriminators[kind]
                variable = (getattr(critic.body.layers[-1], parts[-1]) if parts[1].startswith("dout_")
                            else _variable(critic, [parts[2]], parts[3]))
            elif name == "deepfill_v2":
                critic = bundle.discriminators["sn_patch_gan"]
                variable = (_variable(critic, ["sn_" + parts[2]], "u") if parts[-1] == "u"
                            else _variable(critic, [parts[2]], parts[3]))
            else:
                critic = bundle.discriminators["critic"]
                leaf = {"w": "kernel", "biases": "bias"}.get(parts[2], parts[2])
                variable = _variable(critic, [parts[1]], leaf)
            np.testing.assert_array_equal(variable.numpy(), source.get(official_name), err_msg=official_name)


@pytest.mark.slow  # end-to-end: convert with --discriminator, then a one-step train.py --init_from run
def test_discriminator_conversion_then_train_init_from(tmp_path):
    """DeepFill v2 (its SN-PatchGAN is fully convolutional, so a 64 x 64 run can start from the released critic):
    convert generator and critic, then one training step starts from exactly those weights."""
    generator = _values(official.table("deepfill_v2"), seed=7)
    critic = _values(official.table("deepfill_v2-discriminator"), seed=8)
    prefix = str(tmp_path / "release" / "snap-0")
    _save(prefix, {**generator, **critic})
    out = tmp_path / "converted"
    report = tfinpaint.convert(prefix, out, discriminator=True)
    assert report["tensors"] == 84 + 18 and report["ignored"] == []

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(9)
    for index in range(2):
        cv2.imwrite(str(photos / f"{index}.png"), rng.integers(0, 256, (80, 96, 3), dtype=np.uint8))
    run = tmp_path / "run"
    command = [sys.executable, "train.py", "--model", "deepfill_v2", "--__flist__", str(photos), "--img_size", "64",
               "--batch_size", "1", "--max_steps", "1", "--ckpt_dir", str(run), "--preview_every", "0",
               "--init_from", str(out), "--model_options", "bgr=True,align_corners=True"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=500, check=False,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"initialised from {out}" in result.stdout

    # One Adam step (lr 1e-4) away from the released weights: far closer than any fresh initialisation.
    from tfinpaint.convert.converter import _build

    bundle = _build("deepfill_v2", {"bgr": True, "align_corners": True})
    checkpoints.restore_generator(bundle.generator, run)
    checkpoints.restore_discriminators(bundle.discriminators, run)
    for name, value in generator.items():
        np.testing.assert_allclose(_deepfill_expected(bundle.generator, name).numpy(), value, atol=2e-3,
                                   err_msg=name)
    patch_gan = bundle.discriminators["sn_patch_gan"]
    for name, value in critic.items():
        parts = name.split("/")
        variable = (_variable(patch_gan, ["sn_" + parts[2]], "u") if parts[-1] == "u"
                    else _variable(patch_gan, [parts[2]], parts[3]))
        if parts[-1] != "u":  # u moves by a power iteration per step, not by the optimizer
            np.testing.assert_allclose(variable.numpy(), value, atol=2e-3, err_msg=name)


def _release_variant(tmp_path, v1_release, change):
    """A copy of the v1 generator release with one change applied to its {name: value} dict."""
    _, generator, _ = v1_release
    values = dict(generator)
    change(values)
    prefix = str(tmp_path / "variant" / "snap")
    _save(prefix, values)
    return prefix


def _one_line_error(call, pattern):
    with pytest.raises(ConvertError, match=pattern) as caught:
        call()
    assert "\n" not in str(caught.value)


def _nothing_written(parent):
    leftovers = [name for name in os.listdir(parent) if name.startswith(".out.")]
    assert not os.path.exists(os.path.join(parent, "out")) and not leftovers


def test_bad_releases_give_one_line_errors_and_write_nothing(v1_release, tmp_path):
    out = tmp_path / "out"
    convert = tfinpaint.convert

    missing = _release_variant(tmp_path / "a", v1_release, lambda v: v.pop("inpaint_net/conv5/bias"))
    _one_line_error(lambda: convert(missing, out),
                    r"snap: missing tensor inpaint_net/conv5/bias \(needed for .*conv5/bias\)")

    # Without conv2_downsample the version is still told from the other layers' widths.
    missing = _release_variant(tmp_path / "a2", v1_release, lambda v: v.pop("inpaint_net/conv2_downsample/kernel"))
    _one_line_error(lambda: convert(missing, out), r"snap: missing tensor inpaint_net/conv2_downsample/kernel")

    def wrong_shape(values):
        values["inpaint_net/pmconv3/kernel"] = np.zeros((3, 3, 32, 65), np.float32)
    prefix = _release_variant(tmp_path / "b", v1_release, wrong_shape)
    _one_line_error(lambda: convert(prefix, out),
                    r"tensor inpaint_net/pmconv3/kernel has shape \[3, 3, 32, 65\], expected \[3, 3, 32, 64\]")

    def extra(values):
        values["inpaint_net/conv18/kernel"] = np.zeros((3, 3, 3, 3), np.float32)
    prefix = _release_variant(tmp_path / "c", v1_release, extra)
    _one_line_error(lambda: convert(prefix, out), r"extra tensor inpaint_net/conv18/kernel")

    def double(values):
        values["inpaint_net/conv2_downsample/bias"] = values["inpaint_net/conv2_downsample/bias"].astype(np.float64)
    prefix = _release_variant(tmp_path / "d", v1_release, double)
    _one_line_error(lambda: convert(prefix, out), r"inpaint_net/conv2_downsample/bias is float64, expected float32")

    _one_line_error(lambda: convert(v1_release[0], out, model="cra"),
                    r"this is a DeepFill v1 checkpoint; use model deepfill_v1")
    _one_line_error(lambda: convert(v1_release[0], out, model="glcic"),
                    r"this is a DeepFill v1 checkpoint; use model deepfill_v1")
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(lambda: convert(empty, out), r"empty: no checkpoint found")
    _one_line_error(lambda: convert(tmp_path / "nowhere", out), r"nowhere: no such file or folder")
    _nothing_written(tmp_path)


@pytest.mark.slow  # end-to-end command line
def test_truncated_data_file_through_the_command_line(v1_release, tmp_path):
    folder = tmp_path / "release"
    shutil.copytree(v1_release[0], folder)
    data = next(name for name in os.listdir(folder) if ".data-" in name)
    with open(folder / data, "r+b") as handle:
        handle.truncate(os.path.getsize(folder / data) // 2)
    command = [sys.executable, "-m", "tfinpaint", "convert", "--src", str(folder), "--out", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("tfinpaint convert: error: ") and "snap-100: cannot read tensor" in last, result.stderr
    assert "Traceback" not in result.stderr
    _nothing_written(tmp_path)


def test_existing_output_is_kept_unless_overwrite(v1_release, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _one_line_error(lambda: tfinpaint.convert(v1_release[0], out), r"out: already exists; pass overwrite to replace it")
    assert os.listdir(out) == ["notes.txt"]
    tfinpaint.convert(v1_release[0], out, overwrite=True)
    assert "notes.txt" not in os.listdir(out) and "model.json" in os.listdir(out)
    assert [name for name in os.listdir(tmp_path) if name != "out"] == []
