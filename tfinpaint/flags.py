"""Every command-line flag of tfinpaint, defined once (``CATALOGUE``), and the glue from flags to a command's
config object.

A command lists the flags it reads in one table, setting -> flag name (``{"checkpoint": "__gpath__", ...}``),
and calls ``declare(command, table)`` when imported; ``config_from_flags`` then builds its config object
from the parsed flags and ``render_error`` spells the settings named by a library error as that command's
flags. Adding a flag to several commands is one entry here and, per command, one line in its table (and
the config field it fills).

The original scripts' spellings stay: ``--__flist__ DIR``, ``--__gpath__ CKPT``, ``--__lambda_l1__ 1.0``,
``--__gen_masks__ true`` (a boolean that takes a separate word), each with a plain alias where one is in use
(``--flist``, ``--gpath``, ``--lambda_style``).
"""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable, Mapping

from absl import flags

from tfinpaint.evaluation.config import DEFAULT_BINS, DEFAULT_MASK_TYPE, DEFAULT_OUT_DIR, DEFAULT_SIZE
from tfinpaint.imageio import DEFAULT_JPEG_QUALITY
from tfinpaint.masks.generators import ALL_MASK_TYPES
from tfinpaint.settings import SettingMessage

FLAGS = flags.FLAGS
_TRUE = ("1", "true", "t", "yes", "y", "on")
_FALSE = ("0", "false", "f", "no", "n", "off")


class _BoolWordParser(flags.ArgumentParser):
    """A boolean that takes a separate value (``--__gen_masks__ true``), as the original scripts' users type it."""

    syntactic_help = "true/false"

    def parse(self, argument):
        if isinstance(argument, bool):
            return argument
        text = str(argument).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"expected true or false, got {argument!r}")

    def flag_type(self):
        return "bool"


@dataclasses.dataclass(frozen=True)
class FlagSpec:
    """One flag: ``kind`` is string, integer, float, boolean (``--x`` / ``--nox``), bool_word
    (``--x true``), enum or multi_string; ``help_by_command`` replaces ``help`` where a command reads the
    flag differently; ``options`` go to absl (enum_values, lower_bound, upper_bound)."""

    kind: str
    default: object
    help: str
    aliases: tuple = ()
    help_by_command: Mapping = dataclasses.field(default_factory=dict)
    options: Mapping = dataclasses.field(default_factory=dict)


_MASK_TYPES = list(ALL_MASK_TYPES)
_POLARITY = "hole: white = hole (DeepFill); valid: white = known (NVIDIA, HiFill)."

CATALOGUE: dict = {
    # ---- inputs and outputs
    "__gpath__": FlagSpec("multi_string", None, "Checkpoint folder written by train.py.", ("gpath",),
                          {"serve": "Checkpoint folder to serve; repeat the flag for several models."}),
    "__flist__": FlagSpec("string", None, "Folder (recursive) or text file listing the images.", ("flist",), {
        "train": "Training images: a folder (recursive; jpg/jpeg/png/bmp/webp) or a text file of paths. Default: "
                 "the sample photos installed with scikit-image and scikit-learn.",
        "eval": "Folder (recursive) or text file listing the images. Default: the sample photos installed with "
                "scikit-image and scikit-learn."}),
    "__mlist__": FlagSpec("string", None, "Folder, text file or single mask file (white = hole).", ("mlist",), {
        "train": "Mask files (folder or text file; white = hole). Default: masks generated on the fly with "
                 "--__mask_type__.",
        "eval": "A stored eval mask set (folder with manifest.json, e.g. an earlier --eval_dir) or mask files "
                "(white = hole)."}),
    "val_flist": FlagSpec("string", None, "Validation images (folder or text file), scored every --val_every "
                          "steps."),
    "out": FlagSpec("string", "outputs", "Output folder.", (), {
        "export": "Output path (a folder for SavedModel, a .tflite file for TFLite).",
        "convert": "Checkpoint folder to write (tfinpaint.load, infer.py, eval and export read it); required."}),
    "overwrite": FlagSpec("boolean", False, "Replace existing output files.", (), {
        "eval": "Replace an --eval_dir holding a different mask set or the results of another checkpoint.",
        "convert": "Replace --out if it exists."}),
    "model": FlagSpec("string", None, "Model name; overrides the one stored in the checkpoint folder.", (), {
        "train": "Model: cra, deepfill_v1, deepfill_v2 (default), glcic, pconv, or 'package.module:SPEC' (a "
                 "tfinpaint.models.ModelSpec) for a custom model.",
        "convert": "Model of the release: deepfill_v1, deepfill_v2, cra (or hifill), glcic; detected from the "
                   "tensor names when left out."}),
    "mask_polarity": FlagSpec("enum", "hole", _POLARITY, options={"enum_values": ["hole", "valid"]}),
    "precision": FlagSpec("enum", "float32", "Network compute precision; bfloat16 lowers peak memory on CPU.",
                          options={"enum_values": ["float32", "bfloat16"]}),
    "max_pixels": FlagSpec("integer", None, "Largest image accepted, in pixels (larger ones get 413; default "
                           "50000000)."),
    # ---- high-resolution strategy (tfinpaint.inference.pipeline); None: the model's own
    "hd_strategy": FlagSpec("enum", None, "High-resolution strategy: original, crop, resize or cra (CRA/HiFill "
                            "only); default: the model's own.",
                            options={"enum_values": ["original", "crop", "resize", "cra"]}),
    "hd_crop_margin": FlagSpec("integer", None, "crop: pixels of context around each group of holes (default: "
                               "a quarter of the model's working size).", options={"lower_bound": 0}),
    "hd_resize_limit": FlagSpec("integer", None, "resize: long side the image is downscaled to (default: twice "
                                "the model's working size).", options={"lower_bound": 1}),
    "hd_trigger_size": FlagSpec("integer", None, "crop / resize apply to images whose long side exceeds this "
                                "(default: twice the model's working size).", options={"lower_bound": 1}),
    # ---- generated masks
    "__gen_masks__": FlagSpec("bool_word", False, "Write a mask dataset and exit (true/false).", (), {
        "infer": "Generate seeded masks instead of reading --__mlist__ (true/false)."}),
    "__mask_type__": FlagSpec("enum", "free_form", "Mask generator.", options={"enum_values": _MASK_TYPES}),
    "mask_seed": FlagSpec("integer", 0, "Seed of the masks: mask i is seeded with (seed, i), so the same seed "
                          "gives the same masks.", options={"lower_bound": 0}),
    "num_masks": FlagSpec("integer", 100, "Number of masks to write.", options={"lower_bound": 1}),
    "mask_height": FlagSpec("integer", 256, "Mask height in pixels.", options={"lower_bound": 1}),
    "mask_width": FlagSpec("integer", 256, "Mask width in pixels.", options={"lower_bound": 1}),
    "mask_dir": FlagSpec("string", "masks_out", "Output folder of the PNG masks."),
    "mask_overwrite": FlagSpec("boolean", False, "Replace mask files that already exist."),
    # ---- infer
    "save_steps": FlagSpec("boolean", False, "Also write <name>_steps.png: masked | coarse | flow | output."),
    "pair_by_order": FlagSpec("boolean", False, "Pair masks with images by sorted order when no mask file name "
                              "matches an image name (and the counts are equal)."),
    "out_format": FlagSpec("enum", "same", "Output format: same as the input, png (lossless; keeps 16 bits and "
                           "alpha) or jpg (re-encodes the known pixels too).",
                           options={"enum_values": ["same", "png", "jpg"]}),
    "jpeg_quality": FlagSpec("integer", DEFAULT_JPEG_QUALITY, "Quality of JPEG outputs (1-100).",
                             options={"lower_bound": 1, "upper_bound": 100}),
    # ---- train
    "__lambda_l1__": FlagSpec("float", None, "Override the recipe's 'l1' loss weight."),
    "__lambda_perceptual__": FlagSpec("float", None, "Override the recipe's 'perceptual' loss weight."),
    "__lambda_gan__": FlagSpec("float", None, "Override the recipe's 'gan' loss weight."),
    "__lambda_style__": FlagSpec("float", None, "Override the recipe's 'style' loss weight (PConv; with "
                                 "--__lambda_perceptual__ 0 and --lambda_style 0 PConv trains without VGG16 "
                                 "weights).", ("lambda_style",)),
    "cnum": FlagSpec("integer", None, "Generator base width (default: the paper's)."),
    "dnum": FlagSpec("integer", None, "Discriminator base width (default: the paper's)."),
    "model_options": FlagSpec("string", None, "More build options, e.g. 'levels=4,bgr=False'."),
    "batch_size": FlagSpec("integer", None, "Global batch size (default: the paper's on GPU, 4 on CPU)."),
    "img_size": FlagSpec("integer", None, "Training crop side (default: the model's on GPU, 128 on CPU, rounded "
                         "to the model's size multiple)."),
    "max_steps": FlagSpec("integer", 1000, "Total training steps (generator iterations) over all phases."),
    "lr": FlagSpec("float", None, "Base learning rate (default: the recipe's; per-phase rates scale with it)."),
    "logdir": FlagSpec("string", None, "TensorBoard logs and PNG previews (default: <ckpt_dir>/logs)."),
    "ckpt_dir": FlagSpec("string", None, "Checkpoint folder (default: checkpoints/<model>); training resumes from "
                         "the newest checkpoint in it."),
    "init_from": FlagSpec("string", None, "Start a new run from the generator and discriminators of this "
                          "checkpoint folder (e.g. converted official weights): fresh optimizers, step 0. Ignored "
                          "when --ckpt_dir already holds checkpoints (the run resumes)."),
    "seed": FlagSpec("integer", 0, "Seed of the weights, the data order, crops and generated masks."),
    "save_every": FlagSpec("integer", 500, "Checkpoint every N steps (also at the end and on Ctrl-C/SIGTERM)."),
    "keep_checkpoints": FlagSpec("integer", 3, "Checkpoints kept."),
    "log_every": FlagSpec("integer", 10, "TensorBoard scalars / progress lines every N steps."),
    "preview_every": FlagSpec("integer", 100, "PNG preview grid every N steps."),
    "val_every": FlagSpec("integer", 500, "Validation every N steps (with --val_flist)."),
    "mixed_precision": FlagSpec("boolean", False, "mixed_float16 with loss scaling on GPU, mixed_bfloat16 on "
                                "CPU."),
    "vgg_weights": FlagSpec("string", None, "Local VGG16 'notop' weights file for PConv's perceptual/style "
                            "losses."),
    "check_images": FlagSpec("enum", "quick", "Bad-file scan before training: quick (headers and end markers) or "
                             "full (decode every file).", options={"enum_values": ["quick", "full"]}),
    # ---- export
    "format": FlagSpec("enum", "savedmodel", "Export format.", options={"enum_values": ["savedmodel", "tflite"]}),
    "tflite_size": FlagSpec("integer", 256, "Fixed input side of the TFLite model."),
    "verify": FlagSpec("boolean", False, "TFLite: run the exported model in tf.lite.Interpreter and compare it "
                       "with the Keras model on a random image."),
    # ---- eval
    "bins": FlagSpec("string", DEFAULT_BINS, "Hole-ratio bins LOW-HIGH ([low, high)), comma separated."),
    "eval_dir": FlagSpec("string", DEFAULT_OUT_DIR, "Folder for the mask set, results.json and results.md; the same "
                         "settings again reuse its mask set, other settings need --overwrite."),
    "eval_size": FlagSpec("integer", DEFAULT_SIZE, "Images are resized and centre-cropped to this square size."),
    "eval_seed": FlagSpec("integer", 0, "Seed of a new mask set."),
    "eval_mask_type": FlagSpec("enum", DEFAULT_MASK_TYPE, "Mask generator of a new mask set.",
                               options={"enum_values": _MASK_TYPES}),
    "fid_weights": FlagSpec("string", None, "Local Keras InceptionV3 'notop' weights file (.h5); enables FID."),
    # ---- convert
    "src": FlagSpec("string", None, "The download: a TF1 checkpoint folder (state file 'checkpoint' or "
                    "'checkpoint.txt') or prefix, HiFill's frozen hifill.pb, or a GLCIC .t7 file."),
    "discriminator": FlagSpec("boolean", False, "Also convert the discriminator / critic tensors (to fine-tune "
                              "with train.py --init_from OUT)."),
    "bgr": FlagSpec("boolean", True, "Keep the official BGR channel order inside the network; --nobgr flips the "
                    "colour channels in the weights instead (same outputs)."),
    # ---- serve
    "host": FlagSpec("string", "127.0.0.1", "Address to bind (0.0.0.0 exposes the server to the network)."),
    "port": FlagSpec("integer", 8080, "Port to listen on."),
}


def _define(name: str, spec: FlagSpec, help_text: str, flag_values: flags.FlagValues) -> None:
    if spec.kind == "bool_word":
        flags.DEFINE(_BoolWordParser(), name, spec.default, help_text, flag_values=flag_values)
    elif spec.kind == "enum":
        options = dict(spec.options)
        flags.DEFINE_enum(name, spec.default, options.pop("enum_values"), help_text, flag_values=flag_values,
                          **options)
    else:
        define = {"string": flags.DEFINE_string, "integer": flags.DEFINE_integer, "float": flags.DEFINE_float,
                  "boolean": flags.DEFINE_boolean, "multi_string": flags.DEFINE_multi_string}[spec.kind]
        define(name, spec.default, help_text, flag_values=flag_values, **spec.options)
    for alias in spec.aliases:
        flags.DEFINE_alias(alias, name, flag_values=flag_values)


# The high-resolution settings, named alike in configs and flags (infer, eval, export, serve take them).
HD_FLAGS = ("hd_strategy", "hd_crop_margin", "hd_resize_limit", "hd_trigger_size")


def declare(command: str, names: Iterable[str], flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines the catalogue's flags ``names`` that ``flag_values`` does not hold yet (several commands may be
    imported into one process: tests, ``train.py`` running the mask command) and makes them the key flags of
    the script being run, which ``--help`` lists."""
    for name in names:
        spec = CATALOGUE[name]
        if name not in flag_values:
            _define(name, spec, spec.help_by_command.get(command, spec.help), flag_values)
        for key in (name, *spec.aliases):
            flag_values.register_key_flag_for_module(sys.argv[0], flag_values[key])


def spelling(name: str) -> str:
    """How messages spell a flag: its plain alias where it has one (``--gpath``), else its name."""
    spec = CATALOGUE[name]
    return f"--{spec.aliases[0] if spec.aliases else name}"


def config_from_flags(config_class, table: Mapping[str, str], flag_values: flags.FlagValues = FLAGS,
                      only_given: Iterable[str] = (), **fixed):
    """``config_class`` built from the parsed flags: setting ``s`` takes the value of flag ``table[s]``;
    settings in ``only_given`` take None unless their flag was on the command line; ``fixed`` wins."""
    values = {}
    for setting, name in table.items():
        if setting in fixed:
            continue
        if setting in only_given and not flag_values[name].present:
            values[setting] = None
        else:
            values[setting] = flag_values[name].value
    return config_class(**values, **fixed)


def render_error(error: BaseException, table: Mapping[str, str]) -> str:
    """An error as one line; the settings that a library error names are spelled as this command's flags."""
    if isinstance(error, SettingMessage):
        return error.render(lambda setting: spelling(table[setting]) if setting in table else None)
    text = " ".join(str(error).split())
    return text or type(error).__name__


def single(value):
    """The value of a repeatable flag (``--gpath`` repeats for ``serve``) where a command takes one: the last
    one given, as for any other flag given twice."""
    if value is None or isinstance(value, str):
        return value
    values = list(value)
    return values[-1] if values else None
