"""``python infer.py --__gpath__ CKPT --__flist__ IMAGES [--__mlist__ MASKS] [--out DIR]`` (also
``tfinpaint infer``).

Masks pair with images by file-name stem; an image without a mask is reported and skipped. Sorted order is
used only with ``--pair_by_order`` and only when no stem matches at all; a single mask file given as
``--__mlist__`` serves every image. Without masks, ``--__gen_masks__ true --__mask_type__ bbox`` (or
free_form, single_bbox, ...) makes seeded masks. A bad image or mask is reported in one line and skipped;
the exit code is 1 if anything was skipped.

Outputs: ``--out_format same`` keeps each input's format; PNG outputs keep the input's bit depth and alpha
channel with the known pixels bit-exact, JPEG outputs re-encode every pixel (``--jpeg_quality``). EXIF is
kept in JPEG and PNG outputs, orientation reset to 1 (images are read upright and written upright).
Existing outputs are kept unless ``--overwrite``; an output that would replace an input is refused.
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
OUT_FORMATS = ("same", "png", "jpg")


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
    define("integer", "mask_seed", 0, "Seed of generated masks (mask i is seeded with (seed, i), as in "
           "tfinpaint masks).", flag_values)
    define("boolean", "save_steps", False, "Also write <name>_steps.png: masked | coarse | flow | output.",
           flag_values)
    define("boolean", "overwrite", False, "Replace existing output files.", flag_values)
    define("boolean", "pair_by_order", False, "Pair masks with images by sorted order when no mask file name "
           "matches an image name (and the counts are equal).", flag_values)
    define("enum", "out_format", "same", "Output format: same as the input, png (lossless; keeps 16 bits and "
           "alpha) or jpg (re-encodes the known pixels too).", flag_values, enum_values=list(OUT_FORMATS))
    define("integer", "jpeg_quality", imageio.DEFAULT_JPEG_QUALITY, "Quality of JPEG outputs (1-100).",
           flag_values, lower_bound=1, upper_bound=100)
    define("integer", "max_pixels", None, "Largest working area in pixels (default: per model).", flag_values)
    define("enum", "precision", "float32", "Network compute precision; bfloat16 lowers peak memory on CPU.",
           flag_values, enum_values=["float32", "bfloat16"])


define_flags()


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def pair_masks(images: list, masks: list, by_order: bool = False) -> list:
    """One mask path per image, None for an image without one.

    Masks pair by file-name stem. A lone mask named like none of the images serves every image; sorted order
    is used only when ``by_order`` is asked for and no stem matches at all (order alone silently mismatches a
    folder with a missing or extra mask).
    """
    if len(masks) == 1 and _stem(masks[0]) not in {_stem(path) for path in images}:
        return masks * len(images)
    by_stem = {}
    for path in masks:
        if _stem(path) in by_stem:
            raise ValueError(f"masks {by_stem[_stem(path)]} and {path} have the same name; which one pairs "
                             f"with image {_stem(path)!r} is ambiguous")
        by_stem[_stem(path)] = path
    paired = [by_stem.get(_stem(path)) for path in images]
    if any(mask is not None for mask in paired):
        return paired
    if not by_order:
        raise ValueError(f"no mask file is named like an image ({len(masks)} masks, {len(images)} images): name "
                         "masks like their images (photo.jpg -> photo.png), or pass --pair_by_order to pair them "
                         "by sorted order")
    if len(masks) != len(images):
        raise ValueError(f"--pair_by_order needs as many masks as images ({len(masks)} masks, "
                         f"{len(images)} images)")
    return list(masks)


def output_path(image_path: str, image_root: str, out_dir: str, out_format: str = "same") -> str:
    """Same name as the input, keeping sub-folders of an input folder; the extension follows ``out_format``."""
    if os.path.isdir(image_root):
        relative = os.path.relpath(image_path, image_root)
    else:
        relative = os.path.basename(image_path)
    if out_format not in OUT_FORMATS:
        raise ValueError(f"output format must be one of {', '.join(OUT_FORMATS)}, got {out_format!r}")
    if out_format != "same":
        stem, extension = os.path.splitext(relative)
        if extension.lower() not in ((".png",) if out_format == "png" else imageio.JPEG_EXTENSIONS):
            relative = f"{stem}.{out_format}"
    return os.path.join(out_dir, relative)


def _same_file(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def check_outputs(images: list, targets: list, mask_files: list) -> None:
    """Refuses an output that would replace one of the inputs (e.g. ``--out`` = the input folder), and two
    inputs that would write the same output (e.g. a.jpg and a.png with ``--out_format png``)."""
    inputs = {os.path.realpath(path): path for path in list(images) + list(mask_files)}
    seen = {}
    for image_path, target in zip(images, targets):
        real = os.path.realpath(target)
        if real in inputs:
            raise ValueError(f"output {target} would replace the input {inputs[real]}; choose an --out folder "
                             "that holds no input")
        if real in seen:
            raise ValueError(f"{seen[real]} and {image_path} would both be written to {target}; use "
                             "--out_format same or rename one")
        seen[real] = image_path


def steps_grid(steps: dict) -> np.ndarray:
    """Stages side by side (masked input | coarse | attention flow | output), each at the output's size."""
    height, width = steps["output"].shape[:2]
    panels = [steps[key] for key in ("masked", "coarse", "flow", "output") if key in steps]
    resized = [panel if panel.shape[:2] == (height, width)
               else cv2.resize(panel, (width, height), interpolation=cv2.INTER_NEAREST) for panel in panels]
    return np.concatenate(resized, axis=1)


def run(gpath, flist, out_dir, mlist=None, model=None, mask_polarity="hole", gen_masks=False,
        mask_type="free_form", mask_seed=0, save_steps=False, overwrite=False, max_pixels=None,
        precision="float32", pair_by_order=False, out_format="same",
        jpeg_quality=imageio.DEFAULT_JPEG_QUALITY, stream=None) -> dict:
    """Inpaints every image of ``flist``; returns counts {"written", "skipped", "kept"}."""
    from tfinpaint import masks as mask_lib
    from tfinpaint.inference.api import _as_hole_mask, load

    stream = stream or sys.stdout
    if not 1 <= int(jpeg_quality) <= 100:
        raise ValueError(f"--jpeg_quality must be 1..100, got {jpeg_quality}")
    images = imageio.list_image_files(flist)
    mask_files = []
    if mlist:
        if os.path.isfile(mlist) and mlist.lower().endswith(imageio.IMAGE_EXTENSIONS):
            mask_files = [mlist]  # one mask file named on the command line serves every image
            mask_for = mask_files * len(images)
        else:
            mask_files = imageio.list_image_files(mlist)
            mask_for = pair_masks(images, mask_files, by_order=pair_by_order)
    elif gen_masks:
        mask_for = [None] * len(images)
    else:
        raise ValueError("give masks with --__mlist__ or generate them with --__gen_masks__ true")
    targets = [output_path(path, flist, out_dir, out_format) for path in images]
    check_outputs(images, targets, mask_files)
    # The polarity is applied once, when a mask file is read below; the inpainter then gets hole arrays.
    inpainter = load(gpath, model=model, max_pixels=max_pixels, precision=precision)
    counts = {"written": 0, "skipped": 0, "kept": 0}
    started = time.time()
    for index, (image_path, target) in enumerate(zip(images, targets)):
        prefix = f"[{index + 1}/{len(images)}] {image_path}"
        if mlist and mask_for[index] is None:
            counts["skipped"] += 1
            print(f"{prefix}: skipped: no mask named {_stem(image_path)}.* in {mlist}", file=stream)
            continue
        if os.path.exists(target) and not overwrite:
            counts["kept"] += 1
            print(f"{prefix}: {target} exists, kept (pass --overwrite to replace it)", file=stream)
            continue
        try:
            photo = imageio.read_photo(image_path)
            image = photo.rgb
            if mask_for[index] is None:
                hole = mask_lib.indexed_mask(mask_type, image.shape[0], image.shape[1], mask_seed, index)
            else:
                hole = _as_hole_mask(mask_for[index], image.shape[:2], mask_polarity, name=mask_for[index])
            if save_steps:
                result, steps = inpainter(image, hole, return_steps=True, mask_polarity="hole")
            else:  # the network's other stages are then never computed into memory
                result = inpainter(image, hole, mask_polarity="hole")
            imageio.write_image(target, imageio.compose(photo, result, hole), exif=photo.exif,
                                jpeg_quality=jpeg_quality)
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
                     overwrite=FLAGS.overwrite, max_pixels=FLAGS.max_pixels, precision=FLAGS.precision,
                     pair_by_order=FLAGS.pair_by_order, out_format=FLAGS.out_format,
                     jpeg_quality=FLAGS.jpeg_quality)
    except ValueError as error:
        raise SystemExit(f"infer: {error}") from None
    sys.exit(1 if counts["skipped"] else 0)
