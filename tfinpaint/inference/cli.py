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

import dataclasses
import os
import sys
import time

import cv2
import numpy as np
from absl import flags

from tfinpaint import flags as cli_flags
from tfinpaint import imageio
from tfinpaint.settings import SettingError

FLAGS = flags.FLAGS
OUT_FORMATS = ("same", "png", "jpg")


@dataclasses.dataclass(frozen=True)
class InferConfig:
    """One inference run.

    checkpoint: checkpoint folder written by training; images: folder (recursive) or text file listing them;
    out_dir: output folder. masks: folder, text file or one mask file (white = hole with ``mask_polarity``
    "hole"); or ``gen_masks`` with ``mask_type`` and ``mask_seed``. model: overrides the stored model name.
    max_pixels, precision: load-time options of ``tfinpaint.load``. The rest: see the command's flags.
    """

    checkpoint: str
    images: str
    out_dir: str = "outputs"
    masks: str | None = None
    model: str | None = None
    mask_polarity: str = "hole"
    gen_masks: bool = False
    mask_type: str = "free_form"
    mask_seed: int = 0
    save_steps: bool = False
    overwrite: bool = False
    pair_by_order: bool = False
    out_format: str = "same"
    jpeg_quality: int = imageio.DEFAULT_JPEG_QUALITY
    max_pixels: int | None = None
    precision: str = "float32"


# InferConfig setting -> flag: builds the config and spells the settings in error messages.
FLAG_FOR_SETTING = {
    "checkpoint": "__gpath__",
    "images": "__flist__",
    "out_dir": "out",
    "masks": "__mlist__",
    "model": "model",
    "mask_polarity": "mask_polarity",
    "gen_masks": "__gen_masks__",
    "mask_type": "__mask_type__",
    "mask_seed": "mask_seed",
    "save_steps": "save_steps",
    "overwrite": "overwrite",
    "pair_by_order": "pair_by_order",
    "out_format": "out_format",
    "jpeg_quality": "jpeg_quality",
    "max_pixels": "max_pixels",
    "precision": "precision",
}
cli_flags.declare("infer", FLAG_FOR_SETTING.values())


def config_from_flags(flag_values: flags.FlagValues = FLAGS) -> InferConfig:
    checkpoint = cli_flags.single(flag_values["__gpath__"].value)
    return cli_flags.config_from_flags(InferConfig, FLAG_FOR_SETTING, flag_values, checkpoint=checkpoint)


def error_line(error: BaseException) -> str:
    """An error as one line, settings spelled as this command's flags."""
    return cli_flags.render_error(error, FLAG_FOR_SETTING)


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
        raise SettingError(f"no mask file is named like an image ({len(masks)} masks, {len(images)} images): "
                           "name masks like their images (photo.jpg -> photo.png), or pass <pair_by_order> to pair "
                           "them by sorted order")
    if len(masks) != len(images):
        raise SettingError(f"needs as many masks as images ({len(masks)} masks, {len(images)} images)",
                           "pair_by_order")
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
    """Refuses an output that would replace one of the inputs (e.g. the output folder = the input folder), and two
    inputs that would write the same output (e.g. a.jpg and a.png with ``--out_format png``)."""
    inputs = {os.path.realpath(path): path for path in list(images) + list(mask_files)}
    seen = {}
    for image_path, target in zip(images, targets):
        real = os.path.realpath(target)
        if real in inputs:
            raise SettingError(f"output {target} would replace the input {inputs[real]}; choose an <out_dir> "
                               "folder that holds no input")
        if real in seen:
            raise SettingError(f"{seen[real]} and {image_path} would both be written to {target}; use "
                               "<out_format> same or rename one")
        seen[real] = image_path


def steps_grid(steps: dict) -> np.ndarray:
    """Stages side by side (masked input | coarse | attention flow | output), each at the output's size."""
    height, width = steps["output"].shape[:2]
    panels = [steps[key] for key in ("masked", "coarse", "flow", "output") if key in steps]
    resized = [panel if panel.shape[:2] == (height, width)
               else cv2.resize(panel, (width, height), interpolation=cv2.INTER_NEAREST) for panel in panels]
    return np.concatenate(resized, axis=1)


def run(config: InferConfig, stream=None) -> dict:
    """Inpaints every image of ``config.images``; returns counts {"written", "skipped", "kept"}."""
    from tfinpaint import masks as mask_lib
    from tfinpaint.inference.api import _as_hole_mask, load

    stream = stream or sys.stdout
    flist, mlist, out_dir = config.images, config.masks, config.out_dir
    if not 1 <= int(config.jpeg_quality) <= 100:
        raise SettingError("must be 1..100", "jpeg_quality", config.jpeg_quality)
    images = imageio.list_image_files(flist)
    mask_files = []
    if mlist:
        if os.path.isfile(mlist) and mlist.lower().endswith(imageio.IMAGE_EXTENSIONS):
            mask_files = [mlist]  # one mask file named on the command line serves every image
            mask_for = mask_files * len(images)
        else:
            mask_files = imageio.list_image_files(mlist)
            mask_for = pair_masks(images, mask_files, by_order=config.pair_by_order)
    elif config.gen_masks:
        mask_for = [None] * len(images)
    else:
        raise SettingError("give masks with <masks> or generate them with <gen_masks> true")
    targets = [output_path(path, flist, out_dir, config.out_format) for path in images]
    check_outputs(images, targets, mask_files)
    # The polarity is applied once, when a mask file is read below; the inpainter then gets hole arrays.
    inpainter = load(config.checkpoint, model=config.model, max_pixels=config.max_pixels,
                     precision=config.precision)
    counts = {"written": 0, "skipped": 0, "kept": 0}
    started = time.time()
    for index, (image_path, target) in enumerate(zip(images, targets)):
        prefix = f"[{index + 1}/{len(images)}] {image_path}"
        if mlist and mask_for[index] is None:
            counts["skipped"] += 1
            print(f"{prefix}: skipped: no mask named {_stem(image_path)}.* in {mlist}", file=stream)
            continue
        if os.path.exists(target) and not config.overwrite:
            counts["kept"] += 1
            print(f"{prefix}: {target} exists, kept (pass --overwrite to replace it)", file=stream)
            continue
        try:
            photo = imageio.read_photo(image_path)
            image = photo.rgb
            if mask_for[index] is None:
                hole = mask_lib.indexed_mask(config.mask_type, image.shape[0], image.shape[1], config.mask_seed,
                                             index)
            else:
                hole = _as_hole_mask(mask_for[index], image.shape[:2], config.mask_polarity, name=mask_for[index])
            if config.save_steps:
                result, steps = inpainter(image, hole, return_steps=True, mask_polarity="hole")
            else:  # the network's other stages are then never computed into memory
                result = inpainter(image, hole, mask_polarity="hole")
            imageio.write_image(target, imageio.compose(photo, result, hole), exif=photo.exif,
                                jpeg_quality=config.jpeg_quality)
            if config.save_steps:
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
        counts = run(config_from_flags())
    except ValueError as error:
        raise SystemExit(f"infer: {error_line(error)}") from None
    sys.exit(1 if counts["skipped"] else 0)
