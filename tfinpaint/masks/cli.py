"""Mask-dataset command: writes N seeded PNG masks (255 = hole) and prints their hole-area statistics.

    tfinpaint masks --__mask_type__ bbox --num_masks 100 --mask_dir masks_out
    python train.py --__gen_masks__ true --__mask_type__ bbox

Mask i is drawn from a generator seeded with (--mask_seed, i), so the same seed always writes identical
files, and mask i does not depend on --num_masks. Existing files are never replaced without
--mask_overwrite.
"""
from __future__ import annotations

import os
import sys

from absl import flags

from tfinpaint.flags_util import define
from tfinpaint.masks.generators import ALL_MASK_TYPES, area_stats, indexed_mask
from tfinpaint.masks.io import write_mask


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines the mask-dataset flags on ``flag_values``; flags that already exist are left alone."""
    # "bool_value": a boolean that takes a separate value ("--__gen_masks__ true"), unlike absl booleans.
    define("bool_value", "__gen_masks__", False, "Write a mask dataset and exit (true/false).", flag_values)
    define("enum", "__mask_type__", "free_form", "Mask generator.", flag_values, enum_values=list(ALL_MASK_TYPES))
    define("integer", "num_masks", 100, "Number of masks to write.", flag_values, lower_bound=1)
    define("integer", "mask_height", 256, "Mask height in pixels.", flag_values, lower_bound=1)
    define("integer", "mask_width", 256, "Mask width in pixels.", flag_values, lower_bound=1)
    define("integer", "mask_seed", 0, "Seed of the mask set (same seed = same files).", flag_values, lower_bound=0)
    define("string", "mask_dir", "masks_out", "Output folder of the PNG masks.", flag_values)
    define("bool", "mask_overwrite", False, "Replace mask files that already exist.", flag_values)


def gen_masks_requested(flag_values: flags.FlagValues = flags.FLAGS) -> bool:
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
            raise FileExistsError(f"{existing[0]} already exists{more}; pass --mask_overwrite to replace")
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


def run_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> dict:
    """Writes the mask dataset the (parsed) flags describe, prints the statistics and returns them."""
    mask_type = flag_values["__mask_type__"].value
    num_masks = flag_values["num_masks"].value
    height, width = flag_values["mask_height"].value, flag_values["mask_width"].value
    seed, mask_dir = flag_values["mask_seed"].value, flag_values["mask_dir"].value
    stats = write_mask_dataset(
        mask_dir, mask_type, num_masks, height, width, seed, overwrite=flag_values["mask_overwrite"].value
    )
    print(f"wrote {num_masks} {mask_type} masks of {height}x{width} (seed {seed}) to {mask_dir}")
    print(format_stats(stats))
    return stats


def main(argv) -> None:
    """``tfinpaint masks``: here --__gen_masks__ defaults to true (only an explicit false skips writing)."""
    if len(argv) > 1:
        print(f"{argv[0]}: error: unexpected arguments: {' '.join(argv[1:])}", file=sys.stderr)
        sys.exit(2)
    if flags.FLAGS["__gen_masks__"].present and not gen_masks_requested():
        print("--__gen_masks__ is false: no masks written")
        return
    try:
        run_from_flags(flags.FLAGS)
    except (OSError, ValueError) as error:
        print(f"{argv[0]}: error: {error}", file=sys.stderr)
        sys.exit(1)


define_flags()
