"""Mask-dataset command: writes N seeded PNG masks (255 = hole) and prints their hole-area statistics.

    tfinpaint masks --__mask_type__ bbox --num_masks 100 --mask_dir masks_out
    python train.py --__gen_masks__ true --__mask_type__ bbox

Mask i is drawn from a generator seeded with (--mask_seed, i), so the same seed always writes identical
files, and mask i does not depend on --num_masks. Existing files are never replaced without
--mask_overwrite.
"""
from __future__ import annotations

import dataclasses
import os
import sys

from absl import flags

from tfinpaint import flags as cli_flags
from tfinpaint.masks.generators import area_stats, indexed_mask
from tfinpaint.masks.io import write_mask
from tfinpaint.settings import SettingFileExistsError

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class MaskConfig:
    """One mask dataset: ``count`` masks of ``height`` x ``width`` from generator ``mask_type``, mask i seeded
    with (``seed``, i), written to ``out_dir`` (existing files are replaced only with ``overwrite``)."""

    out_dir: str = "masks_out"
    mask_type: str = "free_form"
    count: int = 100
    height: int = 256
    width: int = 256
    seed: int = 0
    overwrite: bool = False


# MaskConfig setting -> flag; "tfinpaint masks" and "train.py --__gen_masks__ true" read the same flags.
FLAG_FOR_SETTING = {"out_dir": "mask_dir", "mask_type": "__mask_type__", "count": "num_masks",
                    "height": "mask_height", "width": "mask_width", "seed": "mask_seed",
                    "overwrite": "mask_overwrite"}
COMMAND_FLAGS = ("__gen_masks__", *FLAG_FOR_SETTING.values())


def config_from_flags(flag_values: flags.FlagValues = FLAGS) -> MaskConfig:
    return cli_flags.config_from_flags(MaskConfig, FLAG_FOR_SETTING, flag_values)


def gen_masks_requested(flag_values: flags.FlagValues = FLAGS) -> bool:
    """Whether ``--__gen_masks__`` asks for a mask dataset (for the training command's dispatch)."""
    return bool(flag_values["__gen_masks__"].value)


def write_mask_dataset(
    mask_dir: str,
    mask_type: str,
    num_masks: int,
    height: int,
    width: int,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    """Writes ``mask_00000.png``... into ``mask_dir``; returns the hole-area statistics (``area_stats``).

    Raises FileExistsError (before writing anything) if a target file exists and ``overwrite`` is False.
    """
    digits = max(5, len(str(num_masks - 1)))
    paths = [os.path.join(mask_dir, f"mask_{index:0{digits}d}.png") for index in range(num_masks)]
    if not overwrite:
        existing = [path for path in paths if os.path.exists(path)]
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise SettingFileExistsError(f"{existing[0]} already exists{more}; pass <overwrite> to replace")
    os.makedirs(mask_dir, exist_ok=True)
    fractions = []
    for index, path in enumerate(paths):
        mask = indexed_mask(mask_type, height, width, seed, index)
        write_mask(path, mask)
        fractions.append(float(mask.mean()))
    return area_stats(fractions)


def format_stats(stats: dict) -> str:
    """A short text table of ``area_stats`` output."""
    lines = [
        f"hole area  mean {stats['mean']:.3f}  std {stats['std']:.3f}  "
        f"min {stats['min']:.3f}  max {stats['max']:.3f}",
        "  area       masks",
    ]
    lines += [f"  {low:.1f}-{high:.1f}  {count:6d}" for low, high, count in stats["histogram"]]
    return "\n".join(lines)


def run(config: MaskConfig) -> dict:
    """Writes the mask dataset ``config`` describes, prints the statistics and returns them."""
    stats = write_mask_dataset(config.out_dir, config.mask_type, config.count, config.height, config.width,
                               config.seed, overwrite=config.overwrite)
    print(f"wrote {config.count} {config.mask_type} masks of {config.height}x{config.width} (seed {config.seed}) "
          f"to {config.out_dir}")
    print(format_stats(stats))
    return stats


def error_line(error: BaseException) -> str:
    """An error as one line, settings spelled as this command's flags."""
    return cli_flags.render_error(error, FLAG_FOR_SETTING)


def main(argv) -> None:
    """``tfinpaint masks``: here --__gen_masks__ defaults to true (only an explicit false skips writing)."""
    if len(argv) > 1:
        print(f"{argv[0]}: error: unexpected arguments: {' '.join(argv[1:])}", file=sys.stderr)
        sys.exit(2)
    if FLAGS["__gen_masks__"].present and not gen_masks_requested():
        print("--__gen_masks__ is false: no masks written")
        return
    try:
        run(config_from_flags())
    except (OSError, ValueError) as error:
        print(f"{argv[0]}: error: {error_line(error)}", file=sys.stderr)
        sys.exit(1)


cli_flags.declare("masks", COMMAND_FLAGS)
