"""The flags module: each flag defined once, the original scripts' spellings parse, each command's --help lists
its own flags, each command builds one config object, and a library error comes out of a command with the
command's flag name."""
import ast
import os
import pathlib
import subprocess
import sys

import pytest
from absl import flags

from tfinpaint import flags as cli_flags
from tfinpaint.settings import SettingError

REPO = pathlib.Path(__file__).resolve().parents[1]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
COMMAND_MODULES = ["tfinpaint.masks.cli", "tfinpaint.training.cli", "tfinpaint.inference.cli", "tfinpaint.export_cli",
                   "tfinpaint.evaluation.cli", "tfinpaint.serve.cli", "tfinpaint.convert.cli"]


def _command(name):
    import importlib

    return importlib.import_module(name)


def _parse(module, *args):
    """A fresh FlagValues holding the flags that ``module`` declares, parsed from ``args``."""
    values = flags.FlagValues()
    cli_flags.declare("test", getattr(module, "COMMAND_FLAGS", module.FLAG_FOR_SETTING.values()), values)
    values(["prog", *args])
    return values


def test_every_flag_is_defined_in_the_flags_module_only():
    # Statically: no other module of the package calls an absl DEFINE.
    offenders = []
    for path in (REPO / "tfinpaint").rglob("*.py"):
        if path.name == "flags.py" and path.parent.name == "tfinpaint":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr.startswith("DEFINE"):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []
    # In one process importing every command: each flag and alias a command uses is registered once, by the
    # flags module, and spelled in the catalogue once.
    for name in COMMAND_MODULES:
        _command(name)
    spellings = [spelling for name, spec in cli_flags.CATALOGUE.items() for spelling in (name, *spec.aliases)]
    assert len(spellings) == len(set(spellings))
    registered = [(module, flag.name) for module, module_flags in flags.FLAGS.flags_by_module_dict().items()
                  for flag in module_flags if flag.name in spellings]
    assert {module for module, _ in registered} == {"tfinpaint.flags"}
    names = [name for _, name in registered]
    assert len(names) == len(set(names))  # each registered once
    # Every catalogued flag is used by some command, and every flag a command reads is in the catalogue.
    used = set(_command("tfinpaint.masks.cli").COMMAND_FLAGS)
    for name in COMMAND_MODULES:
        used |= set(_command(name).FLAG_FOR_SETTING.values())
    assert used == set(cli_flags.CATALOGUE) and used <= set(flags.FLAGS)


@pytest.mark.parametrize("module_name,argv,expected", [
    ("tfinpaint.inference.cli", ["--__gpath__", "ck", "--__flist__", "in", "--__mlist__", "m", "--out", "o"],
     {"checkpoint": "ck", "images": "in", "masks": "m", "out_dir": "o"}),
    ("tfinpaint.inference.cli", ["--gpath", "ck", "--flist", "in", "--__gen_masks__", "true", "--__mask_type__",
                                 "bbox"], {"checkpoint": "ck", "gen_masks": True, "mask_type": "bbox"}),
    ("tfinpaint.training.cli", ["--__lambda_l1__", "1.0", "--__lambda_gan__", "0.5", "--lambda_style", "0",
                                "--__flist__", "photos", "--__mlist__", "masks", "--img_size", "64", "--lr", "1e-4"],
     {"lambda_l1": 1.0, "lambda_gan": 0.5, "lambda_style": 0.0, "images": "photos", "masks": "masks",
      "image_size": 64, "learning_rate": 1e-4}),
    ("tfinpaint.masks.cli", ["--__gen_masks__", "true", "--__mask_type__", "bbox", "--num_masks", "3"],
     {"mask_type": "bbox", "count": 3}),
    ("tfinpaint.evaluation.cli", ["--gpath", "ck", "--__flist__", "in", "--eval_size", "64"],
     {"checkpoint": "ck", "images": "in", "size": 64, "bins": None, "seed": None}),
    ("tfinpaint.export_cli", ["--__gpath__", "ck", "--format", "tflite", "--tflite_size", "32"],
     {"checkpoint": "ck", "format": "tflite", "tflite_size": 32}),
    ("tfinpaint.serve.cli", ["--gpath", "a", "--gpath", "b", "--port", "9000"],
     {"checkpoints": ("a", "b"), "port": 9000}),
    ("tfinpaint.convert.cli", ["--src", "release", "--out", "converted", "--model", "glcic", "--nobgr"],
     {"src": "release", "out": "converted", "model": "glcic", "bgr": False, "discriminator": False}),
])
def test_seed_spellings_parse_into_one_config(module_name, argv, expected):
    module = _command(module_name)
    config = module.config_from_flags(_parse(module, *argv))
    assert {key: getattr(config, key) for key in expected} == expected


def test_train_gen_masks_spelling_reads_the_mask_settings():
    from tfinpaint.masks import cli as mask_cli
    from tfinpaint.training import cli as train_cli

    values = _parse(train_cli, "--__gen_masks__", "true", "--__mask_type__", "bbox", "--mask_dir", "out")
    assert mask_cli.gen_masks_requested(values)
    assert mask_cli.config_from_flags(values) == mask_cli.MaskConfig(out_dir="out", mask_type="bbox")


def test_a_single_checkpoint_command_takes_the_last_gpath_as_before():
    from tfinpaint.inference import cli

    # --gpath repeats for serve; infer, eval and export take the last one, as absl does for a repeated flag.
    assert cli.config_from_flags(_parse(cli, "--gpath", "a", "--__gpath__", "b")).checkpoint == "b"
    assert cli.config_from_flags(_parse(cli, "--flist", "x")).checkpoint is None


def test_library_errors_name_settings_and_commands_spell_flags(tmp_path):
    from tfinpaint import checkpoints, data
    from tfinpaint.inference import cli as infer_cli
    from tfinpaint.losses import perceptual
    from tfinpaint.training import cli as train_cli

    with pytest.raises(ValueError) as error:
        checkpoints.read_model_config(tmp_path)
    assert "--" not in str(error.value) and "give the model name" in str(error.value)
    assert "give the --model name to override" in infer_cli.error_line(error.value)
    with pytest.raises(FileNotFoundError) as error:
        perceptual.resolve_vgg16_weights(tmp_path / "nowhere.h5")
    assert str(error.value).startswith("vgg_weights: VGG16 weights file not found")
    assert train_cli.error_line(error.value).startswith("--vgg_weights: VGG16 weights file not found")
    assert train_cli.error_line(SettingError("x", "lambda_l1", "-1")) == "--__lambda_l1__ -1: x"
    assert train_cli.error_line(SettingError("give <images>")) == "give --flist"
    assert "--" not in str(SettingError("give <images>", "masks"))
    assert data  # imported: its sample-photo error is a SettingError on images (checked through train.py below)
    from tfinpaint.convert import cli as convert_cli
    from tfinpaint.convert.converter import convert

    with pytest.raises(ValueError) as error:
        convert(tmp_path, tmp_path / "out", model="nope")
    assert str(error.value).startswith("model 'nope': choose one of")
    assert convert_cli.error_line(error.value).startswith("--model 'nope': choose one of")


def _run(*args):
    return subprocess.run([sys.executable, *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)


HELP_CASES = {
    ("infer.py",): (["__gpath__", "__flist__", "__mlist__", "out", "__gen_masks__", "jpeg_quality"], ["eval_dir"]),
    ("train.py",): (["__lambda_l1__", "__flist__", "max_steps", "__gen_masks__", "mask_dir"], ["eval_dir", "port"]),
    ("-m", "tfinpaint", "masks"): (["__mask_type__", "num_masks", "mask_dir"], ["max_steps", "out"]),
    ("-m", "tfinpaint", "export"): (["__gpath__", "format", "tflite_size", "verify"], ["max_steps", "port"]),
    ("-m", "tfinpaint", "eval"): (["__gpath__", "bins", "eval_dir", "fid_weights"], ["max_steps", "port"]),
    ("-m", "tfinpaint", "serve"): (["__gpath__", "host", "port", "max_pixels"], ["max_steps", "eval_dir"]),
    ("-m", "tfinpaint", "convert"): (["src", "out", "model", "discriminator", "bgr", "overwrite"], ["max_steps"]),
}


@pytest.mark.parametrize("command", list(HELP_CASES), ids=lambda command: " ".join(command))
def test_help_lists_the_command_s_own_flags(command):
    result = _run(*command, "--help")  # absl's --help exits with 1
    assert "Traceback" not in result.stderr and "Try --helpfull" in result.stdout, result.stderr[-2000:]
    listed = {line.split(":")[0].strip().replace("--[no]", "--") for line in result.stdout.splitlines()
              if line.startswith("  --")}
    present, absent = HELP_CASES[command]
    assert {f"--{name}" for name in present} <= listed, listed
    assert not {f"--{name}" for name in absent} & listed


def test_help_of_train_lists_every_setting_flag():
    from tfinpaint.training import cli as train_cli

    result = _run("train.py", "--help")
    for name in train_cli.FLAG_FOR_SETTING.values():
        assert f"--{name}" in result.stdout or f"--[no]{name}" in result.stdout, name


def test_library_error_through_the_command_line_names_the_flag(tmp_path):
    # infer.py on a folder that is no checkpoint: checkpoints.py names the setting, infer prints the flag.
    photos = tmp_path / "photos"
    photos.mkdir()
    import numpy as np

    from tfinpaint import imageio

    imageio.write_image(photos / "a.png", np.zeros((8, 8, 3), np.uint8))
    result = _run("infer.py", "--__gpath__", str(tmp_path), "--__flist__", str(photos), "--__gen_masks__", "true",
                  "--out", str(tmp_path / "out"))
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("infer: ") and "model.json: missing" in lines[-1]
    assert "give the --model name to override" in lines[-1] and "Traceback" not in result.stderr
    # train.py with a negative loss weight: the run names lambda_l1, train.py prints --__lambda_l1__.
    result = _run("train.py", "--__lambda_l1__", "-1", "--ckpt_dir", str(tmp_path / "ckpt"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == ("train.py: error: --__lambda_l1__ -1: loss weights must be "
                                                      ">= 0 (a negative weight makes training increase that loss)")


def test_export_command_reads_its_config_and_spells_library_errors_as_flags(tmp_path):
    from tfinpaint.checkpoints import save_generator
    from tfinpaint.inference.api import build_generator

    # export.run names the setting (tflite_size); `tfinpaint export` prints the flag.
    result = _run("-m", "tfinpaint", "export", "--gpath", str(tmp_path), "--format", "tflite", "--tflite_size", "0")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "export: --tflite_size 0: must be positive"
    # A real SavedModel export of a tiny checkpoint through the seed spelling --__gpath__.
    ckpt = tmp_path / "ckpt"
    save_generator(ckpt, build_generator("glcic", {"cnum": 4}), "glcic", {"cnum": 4})
    result = _run("-m", "tfinpaint", "export", "--__gpath__", str(ckpt), "--out", str(tmp_path / "saved"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "SavedModel (glcic) written to" in result.stdout and (tmp_path / "saved" / "saved_model.pb").is_file()


def test_train_py_gen_masks_seed_spelling_writes_masks_and_refuses_to_replace_them(tmp_path):
    from tfinpaint import masks

    out = tmp_path / "m"
    command = ("train.py", "--__gen_masks__", "true", "--__mask_type__", "bbox", "--num_masks", "2",
               "--mask_height", "32", "--mask_width", "48", "--mask_dir", str(out))
    result = _run(*command)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(os.listdir(out)) == ["mask_00000.png", "mask_00001.png"]
    first = (out / "mask_00001.png").read_bytes()
    assert (masks.read_mask(out / "mask_00001.png") == masks.indexed_mask("bbox", 32, 48, 0, 1)).all()
    # Again with another seed: the mask command names the setting, train.py prints the flag; nothing replaced.
    result = _run(*command, "--mask_seed", "1")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].endswith("already exists (and 1 more); pass --mask_overwrite to "
                                                           "replace")
    assert (out / "mask_00001.png").read_bytes() == first
