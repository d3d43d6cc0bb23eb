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

from tfinpaint import flags as cli_flags
from tfinpaint.evaluation.config import EvalConfig

FLAGS = flags.FLAGS
# EvalConfig setting -> flag: builds the config and spells the settings in error messages.
FLAG_FOR_SETTING = {
    "checkpoint": "__gpath__",
    "images": "__flist__",
    "out_dir": "eval_dir",
    "masks": "__mlist__",
    "bins": "bins",
    "size": "eval_size",
    "seed": "eval_seed",
    "mask_type": "eval_mask_type",
    "mask_polarity": "mask_polarity",
    "fid_weights": "fid_weights",
    "model": "model",
    "overwrite": "overwrite",
}
# A stored mask set has its own bins, size, seed and mask type: these settings are None unless given.
STORED_WITH_MASK_SET = ("bins", "size", "seed", "mask_type")
cli_flags.declare("eval", FLAG_FOR_SETTING.values())


def config_from_flags(flag_values=FLAGS) -> EvalConfig:
    """The flags as one EvalConfig; bins, size, seed and mask type only where given (a stored set has its own)."""
    checkpoint = cli_flags.single(flag_values["__gpath__"].value)
    return cli_flags.config_from_flags(EvalConfig, FLAG_FOR_SETTING, flag_values, only_given=STORED_WITH_MASK_SET,
                                       checkpoint=checkpoint)


def run(config: EvalConfig) -> dict:
    """The command as a function: ``runner.run`` (kept here so that every command has ``run(config)``)."""
    from tfinpaint.evaluation import runner

    return runner.run(config)


def error_line(error: BaseException) -> str:
    """An error as one line, settings spelled as this command's flags."""
    return cli_flags.render_error(error, FLAG_FOR_SETTING)


def main(argv) -> None:
    import tensorflow as tf

    from tfinpaint.evaluation import report

    if len(argv) > 1:
        raise SystemExit(f"eval: unexpected arguments {' '.join(argv[1:])}")
    if not FLAGS.__gpath__:
        raise SystemExit("eval: --gpath CKPT_DIR is required (a checkpoint folder written by train.py)")
    try:
        config = config_from_flags()
        results = run(config)
    except (ValueError, OSError, RuntimeError, tf.errors.OpError) as error:
        raise SystemExit(f"eval: {error_line(error)}") from None
    print(report.markdown_report(results))
    for item in results["skipped"]:
        print(f"eval: skipped {item['image']}: {item['reason']}", file=sys.stderr)
    print(f"\nmask set, results.json and results.md in {config.out_dir}", file=sys.stderr)
    if results["skipped"]:
        sys.exit(1)
