"""``python infer.py --__gpath__ CKPT --__flist__ IMAGES [--__mlist__ MASKS] [--out DIR]`` (also
``tfinpaint infer``).

Masks pair with images by file-name stem, else by sorted order when the counts match; a single mask file
serves every image. Without masks, ``--__gen_masks__ true --__mask_type__ bbox|free_form|single_bbox`` makes
seeded masks. A bad image or mask is reported in one line and skipped; the exit code is 1 if anything was
skipped. Existing outputs are kept unless ``--overwrite``.
"""
from __future__ import annotations

import os
import sys
import time

import cv2
import numpy as np
from absl import flags

from tfinpaint import imageio
from tfinpaint.flags_util import define

FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS) -> None:
    define("string", "__gpath__", None, "Checkpoint folder written by train.py.", flag_values, aliases=["gpath"])
    define("string", "__flist__", None, "Folder (recursive) or text file listing the images.", flag_values,
           aliases=["flist"])
    define("string", "__mlist__", None, "Folder, text file or single mask file (white = hole).", flag_values,
           aliases=["mlist"])
    define("string", "out", "outputs", "Output folder.", flag_values)
    define("string", "model", None, "Model name; overrides the one stored in the checkpoint folder.", flag_values)
    define("enum", "mask_polarity", "hole", "hole: white = hole (DeepFill); valid: white = known (NVIDIA, HiFill).",
           flag_values, enum_values=["hole", "valid"])
    define("bool_value", "__gen_masks__", False, "Generate masks instead of reading --__mlist__.", flag_values)
    define("enum", "__mask_type__", "free_form", "Mask type for generated masks.", flag_values,
           enum_values=["free_form", "bbox", "single_bbox", "irregular", "mixed"])
    define("integer", "mask_seed", 0, "Seed of generated masks (mask i is seeded with (seed, i), as in tfinpaint masks).", flag_values)
    define("boolean", "save_steps", False, "Also write <name>_steps.png: masked | coarse | flow | output.",
           flag_values)
    define("boolean", "overwrite", False, "Replace existing output files.", flag_values)
    define("integer", "max_pixels", None, "Largest working area in pixels (default: per model).", flag_values)
    define("enum", "precision", "float32", "Network compute precision; bfloat16 lowers peak memory on CPU.",
           flag_values, enum_values=["float32", "bfloat16"])


define_flags()


def pair_masks(images: list, masks: list) -> list:
    """One mask path per image: by file-name stem, else by sorted order, else a single shared mask."""
    if len(masks) == 1:
        return masks * len(images)
    by_stem = {os.path.splitext(os.path.basename(path))[0]: path for path in masks}
    stems = [os.path.splitext(os.path.basename(path))[0] for path in images]
    if all(stem in by_stem for stem in stems):
        return [by_stem[stem] for stem in stems]
    if len(masks) == len(images):
        return list(masks)
    raise ValueError(f"cannot pair {len(masks)} masks with {len(images)} images: name masks like their images, "
                     "give as many masks as images, or give one mask for all")


def output_path(image_path: str, image_root: str, out_dir: str) -> str:
    """Same name and format as the input, keeping sub-folders of an input folder."""
    if os.path.isdir(image_root):
        relative = os.path.relpath(image_path, image_root)
    else:
        relative = os.path.basename(image_path)
    return os.path.join(out_dir, relative)


def steps_grid(steps: dict) -> np.ndarray:
    """Stages side by side (masked input | coarse | attention flow | output), each at the output's size."""
    height, width = steps["output"].shape[:2]
    panels = [steps[key] for key in ("masked", "coarse", "flow", "output") if key in steps]
    resized = [panel if panel.shape[:2] == (height, width)
               else cv2.resize(panel, (width, height), interpolation=cv2.INTER_NEAREST) for panel in panels]
    return np.concatenate(resized, axis=1)


def run(gpath, flist, out_dir, mlist=None, model=None, mask_polarity="hole", gen_masks=False,
        mask_type="free_form", mask_seed=0, save_steps=False, overwrite=False, max_pixels=None,
        precision="float32", stream=None) -> dict:
    """Inpaints every image of ``flist``; returns counts {"written", "skipped", "kept"}."""
    from tfinpaint import masks as mask_lib
    from tfinpaint.inference.api import _as_hole_mask, load

    stream = stream or sys.stdout
    images = imageio.list_image_files(flist)
    if mlist:
        mask_files = [mlist] if os.path.isfile(mlist) and mlist.lower().endswith(imageio.IMAGE_EXTENSIONS) \
            else imageio.list_image_files(mlist)
        mask_for = pair_masks(images, mask_files)
    elif gen_masks:
        mask_for = [None] * len(images)
    else:
        raise ValueError("give masks with --__mlist__ or generate them with --__gen_masks__ true")
    # The polarity is applied once, when a mask file is read below; the inpainter then gets hole arrays.
    inpainter = load(gpath, model=model, max_pixels=max_pixels, precision=precision)
    counts = {"written": 0, "skipped": 0, "kept": 0}
    started = time.time()
    for index, image_path in enumerate(images):
        target = output_path(image_path, flist, out_dir)
        prefix = f"[{index + 1}/{len(images)}] {image_path}"
        if os.path.exists(target) and not overwrite:
            counts["kept"] += 1
            print(f"{prefix}: {target} exists, kept (pass --overwrite to replace it)", file=stream)
            continue
        try:
            image = imageio.read_image(image_path)
            if mask_for[index] is None:
                hole = mask_lib.indexed_mask(mask_type, image.shape[0], image.shape[1], mask_seed, index)
            else:
                hole = _as_hole_mask(mask_for[index], image.shape[:2], mask_polarity, name=mask_for[index])
            if save_steps:
                result, steps = inpainter(image, hole, return_steps=True, mask_polarity="hole")
            else:  # the network's other stages are then never computed into memory
                result = inpainter(image, hole, mask_polarity="hole")
            imageio.write_image(target, result)
            if save_steps:
                stem, _ = os.path.splitext(target)
                imageio.write_image(f"{stem}_steps.png", steps_grid(steps))
        except (ValueError, OSError) as error:
            counts["skipped"] += 1
            reason = str(error).replace(f"{image_path}: ", "").replace("\n", " ")
            print(f"{prefix}: skipped: {reason}", file=stream)
            continue
        counts["written"] += 1
        elapsed = time.time() - started
        eta = elapsed / (index + 1) * (len(images) - index - 1)
        print(f"{prefix} -> {target} ({elapsed:.1f}s elapsed, ETA {eta:.1f}s)", file=stream)
    print(f"done: {counts['written']} written, {counts['skipped']} skipped, {counts['kept']} kept "
          f"(existing) in {out_dir}", file=stream)
    return counts


def main(argv) -> None:
    if len(argv) > 1:
        raise SystemExit(f"infer: unexpected arguments {' '.join(argv[1:])}")
    if not FLAGS.__gpath__ or not FLAGS.__flist__:
        raise SystemExit("infer: --__gpath__ CKPT_DIR and --__flist__ IMAGES are required")
    try:
        counts = run(FLAGS.__gpath__, FLAGS.__flist__, FLAGS.out, mlist=FLAGS.__mlist__, model=FLAGS.model,
                     mask_polarity=FLAGS.mask_polarity, gen_masks=FLAGS.__gen_masks__,
                     mask_type=FLAGS.__mask_type__, mask_seed=FLAGS.mask_seed, save_steps=FLAGS.save_steps,
                     overwrite=FLAGS.overwrite, max_pixels=FLAGS.max_pixels, precision=FLAGS.precision)
    except ValueError as error:
        raise SystemExit(f"infer: {error}") from None
    sys.exit(1 if counts["skipped"] else 0)
