"""``tfinpaint eval --gpath CKPT [--flist IMAGES] [--mlist MASKS] [--bins 0.01-0.1,0.1-0.2,...]``.

Scores a checkpoint and OpenCV's Telea and Navier-Stokes inpainting on a seeded, stored mask set (or on mask
files), per hole-area bin: L1, L2, PSNR, SSIM (FID with ``--fid_weights``). The flags make one ``EvalConfig``;
the work is ``tfinpaint.evaluation.runner.run``:

* mask sets: ``masksets`` (seeded per image and bin, or from mask files; manifest with every file's SHA-256);
* baselines: ``baselines``; scoring: ``scoring``; report: ``report`` (``results.md``, ``results.json``);
* ``--eval_dir``: replaced only once a run is complete; a folder holding a different mask set or another
  checkpoint's results is replaced only with ``--overwrite``; the same settings again reuse the stored set.

A photo that cannot be read is skipped, named on stderr, and makes the exit code 1; the rest is scored.
"""
from __future__ import annotations

import sys

from absl import flags

from tfinpaint.evaluation.config import (
    DEFAULT_BINS,
    DEFAULT_MASK_TYPE,
    DEFAULT_OUT_DIR,
    DEFAULT_SIZE,
    EvalConfig,
    SettingError,
)
from tfinpaint.flags_util import define

FLAGS = flags.FLAGS
# How this command spells each EvalConfig setting in its messages.
FLAG_NAMES = {"checkpoint": "--gpath", "images": "--flist", "out_dir": "--eval_dir", "masks": "--mlist",
              "bins": "--bins", "size": "--eval_size", "seed": "--eval_seed", "mask_type": "--eval_mask_type",
              "mask_polarity": "--mask_polarity", "fid_weights": "--fid_weights", "model": "--model",
              "overwrite": "--overwrite"}


def define_flags(flag_values=FLAGS) -> None:
    define("string", "__gpath__", None, "Checkpoint folder written by train.py.", flag_values, aliases=["gpath"])
    define("string", "__flist__", None, "Folder (recursive) or text file listing the images. Default: the sample "
           "photos installed with scikit-image and scikit-learn.", flag_values, aliases=["flist"])
    define("string", "__mlist__", None, "A stored eval mask set (folder with manifest.json, e.g. an earlier "
           "--eval_dir) or mask files (white = hole).", flag_values, aliases=["mlist"])
    define("string", "bins", DEFAULT_BINS, "Hole-ratio bins LOW-HIGH ([low, high)), comma separated.", flag_values)
    define("string", "eval_dir", DEFAULT_OUT_DIR, "Folder for the mask set, results.json and results.md; the same "
           "settings again reuse its mask set, other settings need --overwrite.", flag_values)
    define("integer", "eval_size", DEFAULT_SIZE, "Images are resized and centre-cropped to this square size.",
           flag_values)
    define("integer", "eval_seed", 0, "Seed of a new mask set.", flag_values)
    define("enum", "eval_mask_type", DEFAULT_MASK_TYPE, "Mask generator of a new mask set.", flag_values,
           enum_values=["free_form", "bbox", "single_bbox", "irregular", "mixed"])
    define("enum", "mask_polarity", "hole", "hole: white = hole (DeepFill); valid: white = known (NVIDIA, HiFill).",
           flag_values, enum_values=["hole", "valid"])
    define("string", "fid_weights", None, "Local Keras InceptionV3 'notop' weights file (.h5); enables FID.",
           flag_values)
    define("string", "model", None, "Model name; overrides the one stored in the checkpoint folder.", flag_values)
    define("boolean", "overwrite", False, "Replace an --eval_dir holding a different mask set or the results of "
           "another checkpoint.", flag_values)


define_flags()


def config_from_flags(flag_values=FLAGS) -> EvalConfig:
    """The flags as one EvalConfig; bins, size, seed and mask type only where given (a stored set has its own)."""
    def given(name):
        return flag_values[name].value if flag_values[name].present else None

    return EvalConfig(checkpoint=flag_values.__gpath__, images=flag_values.__flist__, out_dir=flag_values.eval_dir,
                      masks=flag_values.__mlist__, bins=given("bins"), size=given("eval_size"),
                      seed=given("eval_seed"), mask_type=given("eval_mask_type"),
                      mask_polarity=flag_values.mask_polarity, fid_weights=flag_values.fid_weights,
                      model=flag_values.model, overwrite=bool(flag_values.overwrite))


def run(gpath, flist=None, eval_dir=DEFAULT_OUT_DIR, mlist=None, bins_text=None, size=None, seed=None,
        mask_type=None, mask_polarity="hole", fid_weights=None, model=None, overwrite=False) -> dict:
    """The command as a function, with its flags' names (the names scripts of earlier releases call it with);
    the same as ``runner.run(EvalConfig(...))``."""
    from tfinpaint.evaluation import runner

    return runner.run(EvalConfig(checkpoint=gpath, images=flist, out_dir=eval_dir, masks=mlist, bins=bins_text,
                                 size=size, seed=seed, mask_type=mask_type, mask_polarity=mask_polarity,
                                 fid_weights=fid_weights, model=model, overwrite=overwrite))


def error_line(error: BaseException) -> str:
    """An error as one line, settings spelled as this command's flags."""
    if isinstance(error, SettingError):
        return error.render(FLAG_NAMES.get)
    text = " ".join(str(error).split())
    return text or type(error).__name__


def main(argv) -> None:
    import tensorflow as tf

    from tfinpaint.evaluation import report, runner

    if len(argv) > 1:
        raise SystemExit(f"eval: unexpected arguments {' '.join(argv[1:])}")
    if not FLAGS.__gpath__:
        raise SystemExit("eval: --gpath CKPT_DIR is required (a checkpoint folder written by train.py)")
    config = config_from_flags()
    try:
        results = runner.run(config)
    except (ValueError, OSError, RuntimeError, tf.errors.OpError) as error:
        raise SystemExit(f"eval: {error_line(error)}") from None
    print(report.markdown_report(results))
    for item in results["skipped"]:
        print(f"eval: skipped {item['image']}: {item['reason']}", file=sys.stderr)
    print(f"\nmask set, results.json and results.md in {config.out_dir}", file=sys.stderr)
    if results["skipped"]:
        sys.exit(1)
