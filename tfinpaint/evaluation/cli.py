"""``tfinpaint eval --gpath CKPT [--flist IMAGES] [--mlist MASKS] [--bins 0.01-0.1,0.1-0.2,...]``.

Builds a seeded evaluation mask set (or reads one), stores it with the results so that a run can be repeated
exactly, and reports L1, L2, PSNR and SSIM per hole-area bin and overall for the model and for OpenCV's Telea
and Navier-Stokes inpainting on the same images and masks, as Markdown (``results.md``) and JSON
(``results.json``).

* Images are resized (short side) and centre-cropped to ``--eval_size`` squares. Without ``--flist`` the
  sample photos installed with scikit-image and scikit-learn are used (as ``train.py`` does).
* New mask set: one mask per image and bin, seeded by (``--eval_seed``, image index, bin index), with a hole
  ratio inside its bin ``[low, high)``. It is written to ``<eval_dir>/masks`` with ``manifest.json`` (bins,
  size, seed, and the SHA-256 of every image and mask file).
* ``--mlist DIR`` where DIR holds a ``manifest.json`` reuses that mask set: same images (checked by content;
  with ``--flist`` the images are found by content in the new list, so a moved photo folder still works), same
  masks, hence identical numbers. ``--mlist`` with plain mask files (white = hole, see ``--mask_polarity``)
  pairs them with the images as ``infer`` does, crops them like the images and bins them by hole ratio.
* Every method gets the same input (the image with its hole pixels blanked) and is scored on the completed
  image (its prediction in the holes, the ground truth elsewhere).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import warnings

import cv2
import numpy as np
import tensorflow as tf
from absl import flags, logging

from tfinpaint import imageio
from tfinpaint.evaluation import metrics
from tfinpaint.flags_util import define

FLAGS = flags.FLAGS
DEFAULT_BINS = "0.01-0.1,0.1-0.2,0.2-0.3,0.3-0.4,0.4-0.5,0.5-0.6"
DEFAULT_SIZE = 256
DEFAULT_MASK_TYPE = "irregular"
MANIFEST = "manifest.json"
MASK_FOLDER = "masks"
METRIC_NAMES = ("l1", "l2", "psnr", "ssim")
BASELINES = {"opencv_telea": cv2.INPAINT_TELEA, "opencv_ns": cv2.INPAINT_NS}
# Neighbourhood radius (pixels) OpenCV's methods fill each pixel from; 3 is the value OpenCV's own examples use.
BASELINE_RADIUS = 3
NOTE_NO_FID = "FID omitted: pass --fid_weights with a local Keras InceptionV3 'notop' weights file (.h5)."
NOTE_FID = ("FID over all masks only (bins hold too few images), with Keras' ImageNet InceptionV3 rather than "
            "the TF-FID Inception graph: compare FID within this table, not with published values.")
NOTE_LPIPS = "LPIPS omitted: it needs LPIPS layer weights, which are not bundled (nothing is downloaded)."


def parse_bins(text: str) -> list:
    """``"0.01-0.1,0.1-0.2"`` -> ``[(0.01, 0.1), (0.1, 0.2)]``: increasing, non-overlapping ``[low, high)``
    intervals of the hole ratio inside [0, 1]."""
    parts = [part.strip() for part in str(text or "").split(",")]
    if not any(parts):
        raise ValueError("--bins: empty (expected LOW-HIGH,LOW-HIGH,..., e.g. 0.01-0.1,0.1-0.2)")
    bins = []
    for part in parts:
        low, _, high = part.partition("-")
        try:
            low_value, high_value = float(low), float(high)
        except ValueError:
            raise ValueError(f"--bins: cannot read {part!r} (expected LOW-HIGH, e.g. 0.1-0.2)") from None
        if not 0.0 <= low_value < high_value <= 1.0:
            raise ValueError(f"--bins: {part!r} must satisfy 0 <= low < high <= 1")
        if bins and low_value < bins[-1][1]:
            raise ValueError(f"--bins: {part!r} overlaps or precedes the bin before it "
                             "(give bins in increasing order without overlap)")
        bins.append((low_value, high_value))
    return bins


def bin_label(low: float, high: float) -> str:
    return f"{low:g}-{high:g}"


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
                      f"{image_shape[1]}x{image_shape[0]}; resized with nearest neighbour")
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
    raise ValueError(f"--bins: could not draw a {mask_type} mask with hole ratio in [{low:g}, {high:g}) at "
                     f"{size}x{size}; use wider bins, a larger --eval_size or another --eval_mask_type")


def file_sha256(path) -> str:
    """SHA-256 of a file's bytes (missing, truncated or corrupt images fail with one line naming the file)."""
    return hashlib.sha256(imageio.read_bytes_checked(path)).hexdigest()


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _mask_entry(image_path: str, hole: np.ndarray, relative_mask: str, mask_root: str, bin_index: int) -> dict:
    from tfinpaint import masks

    mask_path = os.path.join(mask_root, relative_mask)
    os.makedirs(os.path.dirname(mask_path), exist_ok=True)
    masks.write_mask(mask_path, hole)
    return {"image": os.path.abspath(image_path), "image_sha256": file_sha256(image_path),
            "mask": relative_mask, "mask_sha256": file_sha256(mask_path),
            "bin": bin_index, "ratio": float(np.mean(hole > 0.5))}


def build_mask_set(images: list, bins: list, size: int, seed: int, mask_type: str, out_dir: str) -> list:
    """One mask per image and bin, seeded by (seed, image index, bin index), written as PNGs under
    ``out_dir/masks``. Returns the manifest entries."""
    entries = []
    for image_index, image_path in enumerate(images):
        for bin_index, (low, high) in enumerate(bins):
            rng = np.random.default_rng([seed, image_index, bin_index])
            hole = mask_in_bin(size, low, high, rng, mask_type)
            name = f"{MASK_FOLDER}/{image_index:05d}_{_stem(image_path)}_bin{bin_index}.png"
            entries.append(_mask_entry(image_path, hole, name, out_dir, bin_index))
    return entries


def mask_set_from_files(images: list, mask_files: list, bins: list, size: int, polarity: str,
                        out_dir: str) -> list:
    """User mask files paired with the images (by name stem, by order, or one for all), cropped like their
    images, binned by hole ratio and stored under ``out_dir/masks``. Masks outside every bin are left out."""
    from tfinpaint import masks
    from tfinpaint.inference.cli import pair_masks

    entries, outside = [], 0
    for image_index, (image_path, mask_path) in enumerate(zip(images, pair_masks(images, mask_files))):
        image_shape = imageio.read_image(image_path).shape[:2]
        hole = prepare_mask(masks.read_mask(mask_path, polarity=polarity), image_shape, size, mask_path)
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
    if not entries:
        raise ValueError("--mlist: no mask has a hole ratio inside the --bins")
    return entries


def load_mask_set(mask_dir: str, flist=None) -> dict:
    """Reads a stored mask set and checks that its images and masks are byte-identical to those it was made
    from. With ``flist``, each image is looked up by content in that list (the photos may have moved)."""
    path = os.path.join(mask_dir, MANIFEST)
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
        bins = [tuple(pair) for pair in manifest["bins"]]
        size = int(manifest["size"])
        entries = [dict(entry) for entry in manifest["entries"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a readable tfinpaint mask-set manifest ({type(error).__name__})") from None
    by_content = None
    if flist:
        by_content = {file_sha256(image): os.path.abspath(image) for image in imageio.list_image_files(flist)}
    for entry in entries:
        if by_content is not None:
            if entry["image_sha256"] not in by_content:
                raise ValueError(f"--flist {flist}: holds no image identical to {entry['image']} of the mask set")
            entry["image"] = by_content[entry["image_sha256"]]
        elif file_sha256(entry["image"]) != entry["image_sha256"]:
            raise ValueError(f"{entry['image']}: changed since the mask set was made "
                             "(pass --flist with the original images)")
        mask_path = os.path.join(mask_dir, entry["mask"])
        if file_sha256(mask_path) != entry["mask_sha256"]:
            raise ValueError(f"{mask_path}: differs from the one recorded in {path}")
    return {**manifest, "bins": bins, "size": size, "entries": entries}


def masked_input(truth: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The input every method gets: hole pixels blanked, so that none can see the ground truth there."""
    masked = truth.copy()
    masked[hole > 0.5] = 0
    return masked


def opencv_inpainter(flag: int):
    """An inpainter ``(rgb_uint8, hole) -> rgb_uint8`` running OpenCV's method ``flag`` (Telea or NS)."""
    def fill(image, hole):
        hole_u8 = (np.asarray(hole) > 0.5).astype(np.uint8)
        bgr = cv2.inpaint(np.ascontiguousarray(image[:, :, ::-1]), hole_u8, BASELINE_RADIUS, flag)
        return np.ascontiguousarray(bgr[:, :, ::-1])

    return fill


def _summary(rows: list) -> dict:
    summary = {name: float(np.mean([row[name] for row in rows])) for name in METRIC_NAMES}
    summary["count"] = len(rows)
    return summary


def evaluate(inpainter, entries: list, bins: list, size: int, mask_root: str, name: str = "model",
             fid_model=None) -> dict:
    """Scores ``inpainter`` and the OpenCV baselines on the entries of a mask set.

    inpainter: callable ``(image, hole) -> completed image``: image the RGB ``uint8`` [size, size, 3] photo
        with its hole pixels blanked, hole float32 [size, size] with 1 = hole (``tfinpaint.load(...)`` fits).
    fid_model: optional feature network (``metrics.load_inception``); adds FID to the overall rows.
    Returns {"bins": labels, "methods": {method: {"all" | label: means and "count"}}, "entries": [...],
    "notes": [...]}; per-bin rows hold the mean over that bin's masks, "all" over every mask.
    """
    from tfinpaint import masks

    methods = {name: inpainter, **{baseline: opencv_inpainter(flag) for baseline, flag in BASELINES.items()}}
    labels = [bin_label(low, high) for low, high in bins]
    images = {}
    scored, completed, truths = [], {method: [] for method in methods}, []
    for index, entry in enumerate(entries):
        if entry["image"] not in images:
            images[entry["image"]] = prepare_image(imageio.read_image(entry["image"]), size)
        truth = images[entry["image"]]
        mask_path = os.path.join(mask_root, entry["mask"])
        hole = masks.read_mask(mask_path)
        if hole.shape != (size, size):
            raise ValueError(f"{mask_path}: {hole.shape[1]}x{hole.shape[0]}, but the mask set is {size}x{size}")
        if not 0 <= entry["bin"] < len(bins):
            raise ValueError(f"{mask_path}: bin {entry['bin']} does not exist (mask set has {len(bins)} bins)")
        low, high = bins[entry["bin"]]
        ratio = float(hole.mean())
        if not (ratio > 0 and low <= ratio < high):
            raise ValueError(f"{mask_path}: hole ratio {ratio:.4f} outside its bin {labels[entry['bin']]}")
        masked = masked_input(truth, hole)
        scores = {}
        for method, fill in methods.items():
            output = np.asarray(fill(masked.copy(), hole.copy()))
            if output.shape != truth.shape or output.dtype != np.uint8:
                raise ValueError(f"{method}: returned {output.dtype} {output.shape}, expected uint8 {truth.shape}")
            # Scored on the completed image: prediction in the holes, ground truth elsewhere.
            result = np.where(hole[:, :, None] > 0.5, output, truth)
            scores[method] = metrics.all_metrics(result, truth)
            if fid_model is not None:
                completed[method].append(result)
        if fid_model is not None:
            truths.append(truth)
        scored.append({**entry, "ratio": ratio, "metrics": scores})
        logging.info("[%d/%d] %s", index + 1, len(entries), mask_path)

    results = {"bins": labels, "methods": {}, "entries": scored, "notes": []}
    for method in methods:
        rows = [entry["metrics"][method] for entry in scored]
        table = {"all": _summary(rows)}
        for bin_index, label in enumerate(labels):
            in_bin = [entry["metrics"][method] for entry in scored if entry["bin"] == bin_index]
            if in_bin:
                table[label] = _summary(in_bin)
        results["methods"][method] = table
    if fid_model is not None:
        real = metrics.inception_statistics(fid_model, truths)
        for method, images_done in completed.items():
            fake = metrics.inception_statistics(fid_model, images_done)
            results["methods"][method]["all"]["fid"] = metrics.frechet_distance(*real, *fake)
        results["notes"].append(NOTE_FID)
    else:
        results["notes"].append(NOTE_NO_FID)
    results["notes"].append(NOTE_LPIPS)
    return results


def _number(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else str(value)


def markdown_table(results: dict) -> str:
    """Rows grouped by hole-ratio bin, then "all"; L1 and L2 as percentages of the [0, 1] range."""
    has_fid = any("fid" in table["all"] for table in results["methods"].values())
    columns = ["hole ratio", "method", "L1 ×100 ↓", "L2 ×100 ↓", "PSNR (dB) ↑", "SSIM ↑"]
    columns += ["FID ↓"] if has_fid else []
    columns += ["masks"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for key in results["bins"] + ["all"]:
        for method, table in results["methods"].items():
            if key not in table:
                continue
            row = table[key]
            cells = [key, method, _number(100 * row["l1"], 2), _number(100 * row["l2"], 3),
                     _number(row["psnr"], 2), _number(row["ssim"], 4)]
            if has_fid:
                cells.append(_number(row["fid"], 2) if "fid" in row else "")
            cells.append(str(row["count"]))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(results: dict) -> str:
    mask_set = results["mask_set"]
    images = len({entry["image"] for entry in results["entries"]})
    origin = (f"{mask_set['mask_type']} masks, seed {mask_set['seed']}" if mask_set.get("mask_type")
              else "masks from files")
    lines = [f"Model `{results['model']}` ({results['checkpoint']}), {len(results['entries'])} masks on "
             f"{images} images at {results['size']}x{results['size']} ({origin}; mask set in "
             f"{mask_set['dir']}).", "", markdown_table(results), ""]
    lines += [f"- {note}" for note in results["notes"]]
    return "\n".join(lines)


def _json_ready(value):
    """Non-finite floats (the PSNR of a perfect completion is +inf) as strings: JSON has no infinity."""
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _write_json(path: str, value) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(_json_ready(value), handle, indent=1, allow_nan=False)
        handle.write("\n")


def _copy_masks(entries: list, source_dir: str, target_dir: str) -> None:
    if os.path.realpath(source_dir) == os.path.realpath(target_dir):
        return
    for entry in entries:
        target = os.path.join(target_dir, entry["mask"])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(os.path.join(source_dir, entry["mask"]), target)


def define_flags(flag_values=FLAGS) -> None:
    define("string", "__gpath__", None, "Checkpoint folder written by train.py.", flag_values, aliases=["gpath"])
    define("string", "__flist__", None, "Folder (recursive) or text file listing the images. Default: the sample "
           "photos installed with scikit-image and scikit-learn.", flag_values, aliases=["flist"])
    define("string", "__mlist__", None, "A stored eval mask set (folder with manifest.json, e.g. an earlier "
           "--eval_dir) or mask files (white = hole).", flag_values, aliases=["mlist"])
    define("string", "bins", DEFAULT_BINS, "Hole-ratio bins LOW-HIGH ([low, high)), comma separated.", flag_values)
    define("string", "eval_dir", "eval_out", "Folder for the mask set, results.json and results.md.", flag_values)
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


define_flags()


def run(gpath, flist=None, eval_dir="eval_out", mlist=None, bins_text=None, size=None, seed=None,
        mask_type=None, mask_polarity="hole", fid_weights=None, model=None) -> dict:
    """The eval command as a function. ``bins_text``, ``size``, ``seed`` and ``mask_type`` left at None take
    their defaults for a new mask set and the stored values for a reused one (giving other values is an
    error there, as the numbers would no longer be comparable)."""
    from tfinpaint import data
    from tfinpaint.inference.api import load

    reuse = bool(mlist) and os.path.isfile(os.path.join(mlist, MANIFEST))
    if reuse:
        if seed is not None or mask_type is not None:
            raise ValueError(f"--eval_seed / --eval_mask_type make a new mask set; {mlist} is a stored one")
        manifest = load_mask_set(mlist, flist)
        if bins_text is not None and parse_bins(bins_text) != manifest["bins"]:
            raise ValueError(f"--bins differs from the bins of the stored mask set {mlist} (omit --bins)")
        if size is not None and size != manifest["size"]:
            raise ValueError(f"--eval_size {size} differs from the stored mask set's {manifest['size']} "
                             "(omit --eval_size)")
        bins, size = manifest["bins"], manifest["size"]
    else:
        bins = parse_bins(DEFAULT_BINS if bins_text is None else bins_text)
        size = DEFAULT_SIZE if size is None else int(size)
        seed = 0 if seed is None else int(seed)
        mask_type = mask_type or DEFAULT_MASK_TYPE
        if size < metrics.SSIM_WINDOW:
            raise ValueError(f"--eval_size {size}: must be at least {metrics.SSIM_WINDOW} (SSIM's window)")
        if seed < 0:
            raise ValueError(f"--eval_seed {seed}: must be >= 0")
        images = imageio.list_image_files(flist) if flist else data.sample_images()
        if not flist:
            logging.info("no --flist: evaluating on the %d built-in sample photos", len(images))

    # Everything that can fail fast (checkpoint, FID weights) is loaded before the masks are made.
    try:
        inpainter = load(gpath, model=model)
    except (AssertionError, tf.errors.OpError) as error:
        # tf.train.Checkpoint reports a mismatch with every unmatched variable's value: keep the gist.
        raise ValueError(f"--gpath {gpath}: checkpoint does not fit the model{f' {model}' if model else ''} "
                         f"({_one_line(error)[:160]}...)") from None
    fid_model = metrics.load_inception(fid_weights) if fid_weights else None
    os.makedirs(eval_dir, exist_ok=True)
    if reuse:
        _copy_masks(manifest["entries"], mlist, eval_dir)
    elif mlist:
        entries = mask_set_from_files(images, imageio.list_image_files(mlist), bins, size, mask_polarity, eval_dir)
        manifest = {"bins": bins, "size": size, "seed": None, "mask_type": None,
                    "source": os.path.abspath(mlist), "entries": entries}
    else:
        entries = build_mask_set(images, bins, size, seed, mask_type, eval_dir)
        manifest = {"bins": bins, "size": size, "seed": seed, "mask_type": mask_type, "source": "generated",
                    "entries": entries}
    _write_json(os.path.join(eval_dir, MANIFEST), manifest)

    results = evaluate(inpainter, manifest["entries"], bins, size, eval_dir, name=inpainter.model_name,
                       fid_model=fid_model)
    results.update(model=inpainter.model_name, checkpoint=os.path.abspath(gpath), size=size,
                   mask_set={"dir": os.path.abspath(eval_dir), "seed": manifest.get("seed"),
                             "mask_type": manifest.get("mask_type"), "source": manifest.get("source"),
                             "reused_from": os.path.abspath(mlist) if reuse else None})
    _write_json(os.path.join(eval_dir, "results.json"), results)
    with open(os.path.join(eval_dir, "results.md"), "w", encoding="utf-8") as handle:
        handle.write(markdown_report(results) + "\n")
    return results


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def main(argv) -> None:
    if len(argv) > 1:
        raise SystemExit(f"eval: unexpected arguments {' '.join(argv[1:])}")
    if not FLAGS.__gpath__:
        raise SystemExit("eval: --gpath CKPT_DIR is required (a checkpoint folder written by train.py)")

    def given(name):
        return FLAGS[name].value if FLAGS[name].present else None

    try:
        results = run(FLAGS.__gpath__, FLAGS.__flist__, FLAGS.eval_dir, mlist=FLAGS.__mlist__,
                      bins_text=given("bins"), size=given("eval_size"), seed=given("eval_seed"),
                      mask_type=given("eval_mask_type"), mask_polarity=FLAGS.mask_polarity,
                      fid_weights=FLAGS.fid_weights, model=FLAGS.model)
    except (ValueError, OSError, RuntimeError, tf.errors.OpError) as error:
        raise SystemExit(f"eval: {_one_line(error)}") from None
    print(markdown_report(results))
    print(f"\nmask set, results.json and results.md in {FLAGS.eval_dir}", file=sys.stderr)
