"""Evaluation mask sets: building them (seeded, binned by hole ratio, or from mask files), storing them with a
manifest, and loading them back with every image and mask checked by content.

A stored set is a folder with ``masks/*.png`` (white = hole, ``size`` x ``size``) and ``manifest.json``:
``bins``, ``size``, ``seed``, ``mask_type``, ``source``, one entry per mask (image path and SHA-256, mask path
and SHA-256, bin, hole ratio), the photos that were skipped as unreadable, and ``settings``: what the set was
made from (bins, size, seed, mask type or the mask files' contents, and every listed photo's content), so that a
later run can tell whether it asks for this very set.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings

import cv2
import numpy as np
from absl import logging

from tfinpaint import imageio
from tfinpaint.evaluation.config import SettingError

MANIFEST = "manifest.json"
MASK_FOLDER = "masks"
GENERATED = "generated"


def parse_bins(text) -> list:
    """``"0.01-0.1,0.1-0.2"`` (or pairs) -> ``[(0.01, 0.1), (0.1, 0.2)]``: increasing, non-overlapping
    ``[low, high)`` intervals of the hole ratio inside [0, 1]."""
    if not isinstance(text, (str, type(None))):
        text = ",".join(f"{low!r}-{high!r}" for low, high in text)
    parts = [part.strip() for part in str(text or "").split(",")]
    if not any(parts):
        raise SettingError("empty (expected LOW-HIGH,LOW-HIGH,..., e.g. 0.01-0.1,0.1-0.2)", "bins")
    bins = []
    for part in parts:
        low, _, high = part.partition("-")
        try:
            low_value, high_value = float(low), float(high)
        except ValueError:
            raise SettingError(f"cannot read {part!r} (expected LOW-HIGH, e.g. 0.1-0.2)", "bins") from None
        if not 0.0 <= low_value < high_value <= 1.0:
            raise SettingError(f"{part!r} must satisfy 0 <= low < high <= 1", "bins")
        if bins and low_value < bins[-1][1]:
            raise SettingError(f"{part!r} overlaps or precedes the bin before it "
                               "(give bins in increasing order without overlap)", "bins")
        bins.append((low_value, high_value))
    return bins


def bin_label(low: float, high: float) -> str:
    return f"{low:g}-{high:g}"


def bins_text(bins) -> str:
    return ",".join(bin_label(low, high) for low, high in bins)


def _square_crop(array: np.ndarray, size: int, interpolation: int) -> np.ndarray:
    """Short side resized to ``size``, then the centred ``size`` x ``size`` crop."""
    height, width = array.shape[:2]
    scale = size / min(height, width)
    resized = cv2.resize(array, (max(size, round(width * scale)), max(size, round(height * scale))),
                         interpolation=interpolation)
    top = (resized.shape[0] - size) // 2
    left = (resized.shape[1] - size) // 2
    return np.ascontiguousarray(resized[top:top + size, left:left + size])


def prepare_image(image: np.ndarray, size: int) -> np.ndarray:
    """An RGB ``uint8`` photo as its centred ``size`` x ``size`` square (area filter down, cubic up)."""
    interpolation = cv2.INTER_AREA if size < min(image.shape[:2]) else cv2.INTER_CUBIC
    return _square_crop(image, size, interpolation)


def prepare_mask(hole: np.ndarray, image_shape: tuple, size: int, name: str) -> np.ndarray:
    """A user's mask cropped exactly like its image. A mask that already is ``size`` x ``size`` is used as is;
    a mask of yet another size is first resized (nearest) to the image's size, with a warning."""
    if hole.shape == (size, size):
        return hole
    if hole.shape != tuple(image_shape):
        warnings.warn(f"{name}: mask size {hole.shape[1]}x{hole.shape[0]} differs from its image "
                      f"{image_shape[1]}x{image_shape[0]}; resized with nearest neighbour", stacklevel=2)
        hole = cv2.resize(hole, (image_shape[1], image_shape[0]), interpolation=cv2.INTER_NEAREST)
    return (_square_crop(hole, size, cv2.INTER_NEAREST) > 0.5).astype(np.float32)


def mask_in_bin(size: int, low: float, high: float, rng: np.random.Generator, mask_type: str,
                tries: int = 100) -> np.ndarray:
    """A ``size`` x ``size`` mask (float32, 1 = hole) with a hole ratio in ``[low, high)``.

    A target ratio is drawn uniformly in the bin, so that a bin is not represented only by masks piled up at
    one of its edges; a generated mask is then grown (3x3 dilation) or shrunk (3x3 erosion) step by step
    towards the target, and the step closest to it inside the bin is kept. When no step lands in the bin
    (e.g. a thin stroke vanishes under erosion), a new mask is drawn.
    """
    from tfinpaint import masks

    kernel = np.ones((3, 3), np.uint8)
    for _ in range(tries):
        target = rng.uniform(low, high)
        hole = (masks.generate(mask_type, size, size, rng) > 0.5).astype(np.uint8)
        grow = hole.mean() < target
        best, best_gap = None, None
        for _ in range(size):
            ratio = hole.mean()
            if ratio > 0 and low <= ratio < high and (best is None or abs(ratio - target) < best_gap):
                best, best_gap = hole, abs(ratio - target)
            if (ratio >= target) == grow or not hole.any():
                break  # reached (or passed) the target, or erosion removed every hole
            hole = cv2.dilate(hole, kernel) if grow else cv2.erode(hole, kernel)
        if best is not None:
            return best.astype(np.float32)
    raise SettingError(f"could not draw a {mask_type} mask with hole ratio in [{low:g}, {high:g}) at "
                       f"{size}x{size}; use wider <bins>, a larger <size> or another <mask_type>", "bins")


def file_sha256(path) -> str:
    """SHA-256 of an image file's bytes (missing, truncated or corrupt images fail with one line naming it)."""
    return hashlib.sha256(imageio.read_bytes_checked(path)).hexdigest()


def content_sha256(path):
    """SHA-256 of a file's bytes as they are, or None when it cannot be read: identifies what a set was made
    from, unreadable photos included."""
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except OSError:
        return None


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _reason(error: BaseException, *paths) -> str:
    """An error's message as one line, without the file names that the report puts in front of it."""
    text = " ".join(str(error).split()) or type(error).__name__
    for path in paths:
        text = text.replace(f"{os.fspath(path)}: ", "")
    return text


# ---- settings: what a set is made from ------------------------------------------------------------------


def _settings(source: str, bins, size: int, images: list, seed=None, mask_type=None, polarity=None,
              mask_files=None) -> dict:
    settings = {"source": source, "bins": [[float(low), float(high)] for low, high in bins], "size": int(size),
                "seed": seed, "mask_type": mask_type, "polarity": polarity,
                "images": [content_sha256(path) for path in images],
                "masks": None if mask_files is None else [None if path is None else content_sha256(path)
                                                          for path in mask_files]}
    return json.loads(json.dumps(settings))  # as it reads back from a manifest


def generated_settings(images: list, bins, size: int, seed: int, mask_type: str) -> dict:
    """The settings of a new seeded set over ``images`` (their contents, in order)."""
    return _settings(GENERATED, bins, size, images, seed=int(seed), mask_type=mask_type)


def file_settings(images: list, mask_files: list, bins, size: int, polarity: str) -> dict:
    """The settings of a set made from ``mask_files`` (paired with ``images``; None for an image without one)."""
    return _settings("files", bins, size, images, polarity=polarity, mask_files=mask_files)


def stored_settings(manifest: dict) -> dict:
    """The settings of a stored set; sets stored before settings were recorded get them from their entries
    (every photo of such a set was readable, and its mask files' contents were not recorded)."""
    if isinstance(manifest.get("settings"), dict):
        return manifest["settings"]
    generated = manifest.get("source") == GENERATED
    images = list(dict.fromkeys(entry["image_sha256"] for entry in manifest["entries"]))
    settings = {"source": GENERATED if generated else "files", "bins": manifest["bins"], "size": manifest["size"],
                "seed": manifest.get("seed"), "mask_type": manifest.get("mask_type"), "polarity": None,
                "images": images, "masks": None if generated else ["unrecorded"]}
    return json.loads(json.dumps(settings))


def settings_difference(stored: dict, asked: dict):
    """How ``asked`` differs from ``stored``, in words (the first difference), or None when they are equal."""
    if stored == asked:
        return None
    if stored.get("source") != asked.get("source"):
        kinds = {GENERATED: "generated masks"}
        return (f"it holds {kinds.get(stored.get('source'), 'masks from files')}, this run asks for "
                f"{kinds.get(asked.get('source'), 'masks from files')}")
    if stored.get("bins") != asked.get("bins"):
        return f"bins {bins_text(stored['bins'])} stored, {bins_text(asked['bins'])} asked"
    for key in ("size", "seed", "mask_type", "polarity"):
        if stored.get(key) != asked.get(key):
            return f"{key.replace('_', ' ')} {stored.get(key)} stored, {asked.get(key)} asked"
    if stored.get("images") != asked.get("images"):
        stored_images, asked_images = stored.get("images") or [], asked.get("images") or []
        if len(stored_images) != len(asked_images):
            return f"{len(stored_images)} photos stored, {len(asked_images)} asked"
        return "other photos (by content)"
    return "other mask files (by content)"


# ---- building -------------------------------------------------------------------------------------------


def _mask_entry(image_path: str, hole: np.ndarray, relative_mask: str, mask_root: str, bin_index: int) -> dict:
    from tfinpaint import masks

    mask_path = os.path.join(mask_root, relative_mask)
    os.makedirs(os.path.dirname(mask_path), exist_ok=True)
    masks.write_mask(mask_path, hole)
    return {"image": os.path.abspath(image_path), "image_sha256": file_sha256(image_path),
            "mask": relative_mask, "mask_sha256": file_sha256(mask_path),
            "bin": bin_index, "ratio": float(np.mean(hole > 0.5))}


def _skip(skipped: list, path: str, reason: str) -> None:
    # Reported by the caller (the run's results list them), not logged here, so that each shows once.
    skipped.append({"image": os.path.abspath(path), "reason": reason})


def build_mask_set(images: list, bins: list, size: int, seed: int, mask_type: str, out_dir: str):
    """One mask per image and bin, seeded by (seed, image index, bin index), written as PNGs under
    ``out_dir/masks``. A photo that cannot be read is skipped (its index stays reserved, so the other photos
    keep their masks). Returns (manifest entries, skipped photos as {"image", "reason"})."""
    entries, skipped = [], []
    for image_index, image_path in enumerate(images):
        try:
            imageio.read_image(image_path)  # decodes it: a photo that cannot be scored gets no masks
        except (ValueError, OSError) as error:
            _skip(skipped, image_path, _reason(error, image_path))
            continue
        for bin_index, (low, high) in enumerate(bins):
            rng = np.random.default_rng([seed, image_index, bin_index])
            hole = mask_in_bin(size, low, high, rng, mask_type)
            name = f"{MASK_FOLDER}/{image_index:05d}_{_stem(image_path)}_bin{bin_index}.png"
            entries.append(_mask_entry(image_path, hole, name, out_dir, bin_index))
    return entries, skipped


def pair_mask_files(images: list, mask_files: list) -> list:
    """One mask file per image (None where an image has none), paired as ``infer`` pairs them."""
    from tfinpaint.inference.cli import pair_masks

    return list(pair_masks(images, mask_files))


def mask_set_from_files(images: list, mask_files: list, bins: list, size: int, polarity: str, out_dir: str):
    """User mask files paired with the images (see ``pair_mask_files``), cropped like their images, binned by
    hole ratio and stored under ``out_dir/masks``. Masks outside every bin are left out; a photo or mask that
    cannot be read is skipped. Returns (manifest entries, skipped photos as {"image", "reason"})."""
    from tfinpaint import masks

    entries, skipped, outside = [], [], 0
    for image_index, (image_path, mask_path) in enumerate(zip(images, pair_mask_files(images, mask_files))):
        if mask_path is None:
            _skip(skipped, image_path, "no mask file for it")
            continue
        try:
            image_shape = imageio.read_image(image_path).shape[:2]
            hole = prepare_mask(masks.read_mask(mask_path, polarity=polarity), image_shape, size, mask_path)
        except (ValueError, OSError) as error:
            _skip(skipped, image_path, _reason(error, image_path))
            continue
        ratio = float(hole.mean())
        bin_index = next((index for index, (low, high) in enumerate(bins) if ratio > 0 and low <= ratio < high),
                         None)
        if bin_index is None:
            outside += 1
            continue
        name = f"{MASK_FOLDER}/{image_index:05d}_{_stem(image_path)}.png"
        entries.append(_mask_entry(image_path, hole, name, out_dir, bin_index))
    if outside:
        logging.warning("%d of %d masks have a hole ratio outside every bin and are left out", outside, len(images))
    if not entries and not skipped:
        raise SettingError("no mask has a hole ratio inside the <bins>", "masks")
    return entries, skipped


# ---- storing and loading --------------------------------------------------------------------------------


def read_manifest(mask_dir: str) -> dict:
    """A stored set's manifest, with bins as tuples; one-line ValueError naming the file if unreadable."""
    path = os.path.join(mask_dir, MANIFEST)
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
        bins = [tuple(pair) for pair in manifest["bins"]]
        size = int(manifest["size"])
        entries = [dict(entry) for entry in manifest["entries"]]
        for entry in entries:
            missing = [key for key in ("image", "image_sha256", "mask", "mask_sha256", "bin") if key not in entry]
            if missing:
                raise KeyError(missing[0])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a readable tfinpaint mask-set manifest ({type(error).__name__})") from None
    return {**manifest, "bins": bins, "size": size, "entries": entries, "skipped": manifest.get("skipped", [])}


def is_mask_set(folder) -> bool:
    return bool(folder) and os.path.isfile(os.path.join(folder, MANIFEST))


def load_mask_set(mask_dir: str, images=None) -> dict:
    """Reads a stored mask set and checks that its images and masks are byte-identical to those it was made
    from. With ``images`` (a folder or list), each photo is looked up by content there (it may have moved)."""
    manifest = read_manifest(mask_dir)
    path = os.path.join(mask_dir, MANIFEST)
    by_content = None
    if images:
        by_content = {}
        for image in imageio.list_image_files(images):
            by_content.setdefault(content_sha256(image), os.path.abspath(image))
    for entry in manifest["entries"]:
        if by_content is not None:
            if entry["image_sha256"] not in by_content:
                raise SettingError(f"holds no image identical to {entry['image']} of the mask set", "images",
                                   images)
            entry["image"] = by_content[entry["image_sha256"]]
        elif content_sha256(entry["image"]) != entry["image_sha256"]:
            raise SettingError(f"{entry['image']}: changed or missing since the mask set was made "
                               "(give <images> with the original photos)")
        mask_path = os.path.join(mask_dir, entry["mask"])
        if content_sha256(mask_path) != entry["mask_sha256"]:
            raise ValueError(f"{mask_path}: differs from the one recorded in {path}")
    manifest["settings"] = stored_settings(manifest)
    return manifest


def write_manifest(folder: str, manifest: dict) -> None:
    with open(os.path.join(folder, MANIFEST), "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=1, allow_nan=False)
        handle.write("\n")


def copy_masks(entries: list, source_dir: str, target_dir: str) -> None:
    """Copies a stored set's mask files into ``target_dir`` (same relative paths)."""
    for entry in entries:
        target = os.path.join(target_dir, entry["mask"])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(os.path.join(source_dir, entry["mask"]), target)
