"""``tfinpaint eval --gpath CKPT --flist IMAGES [--mlist MASKS] [--bins 0.01-0.1,0.1-0.2,...]``.

Builds a seeded evaluation mask set (or reads one: a folder holding a previous run's ``manifest.json``, or
plain mask files), stores it with the results so a run can be repeated exactly, and reports L1 (x100), L2,
PSNR and SSIM per hole-area bin and overall for the model and for OpenCV's Telea and Navier-Stokes
inpainting on the same images and masks, as Markdown and JSON.
"""
from __future__ import annotations

import json
import os
import sys

import cv2
import numpy as np
from absl import flags

from tfinpaint import imageio
from tfinpaint.evaluation import metrics
from tfinpaint.flags_util import define

FLAGS = flags.FLAGS
DEFAULT_BINS = "0.01-0.1,0.1-0.2,0.2-0.3,0.3-0.4,0.4-0.5,0.5-0.6"
MANIFEST = "manifest.json"
BASELINES = {"opencv_telea": cv2.INPAINT_TELEA, "opencv_ns": cv2.INPAINT_NS}


def parse_bins(text: str) -> list:
    bins = []
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        try:
            low_value, high_value = float(low), float(high)
        except ValueError:
            raise ValueError(f"--bins: cannot read {part!r} (expected LOW-HIGH, e.g. 0.1-0.2)") from None
        if not 0.0 <= low_value < high_value <= 1.0:
            raise ValueError(f"--bins: {part!r} must satisfy 0 <= low < high <= 1")
        bins.append((low_value, high_value))
    return bins


def prepare_image(image: np.ndarray, size: int) -> np.ndarray:
    """Short side resized to ``size`` (area filter), then the centred ``size`` x ``size`` crop."""
    height, width = image.shape[:2]
    scale = size / min(height, width)
    resized = cv2.resize(image, (max(size, round(width * scale)), max(size, round(height * scale))),
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    top = (resized.shape[0] - size) // 2
    left = (resized.shape[1] - size) // 2
    return np.ascontiguousarray(resized[top:top + size, left:left + size])


def mask_in_bin(size: int, low: float, high: float, rng: np.random.Generator, mask_type: str,
                tries: int = 200) -> np.ndarray:
    """A mask whose hole ratio lies in [low, high): generated, then grown or shrunk with 3x3 dilation /
    erosion; a fresh mask is drawn when a step jumps over the bin."""
    from tfinpaint import masks

    kernel = np.ones((3, 3), np.uint8)
    for _ in range(tries):
        hole = (masks.generate(mask_type, size, size, rng) > 0.5).astype(np.uint8)
        for _ in range(size):
            ratio = hole.mean()
            if low <= ratio < high:
                return hole.astype(np.float32)
            grown = cv2.dilate(hole, kernel) if ratio < low else cv2.erode(hole, kernel)
            if (ratio < low and grown.mean() >= high) or (ratio >= high and grown.mean() < low) or not grown.any():
                break
            hole = grown
    raise RuntimeError(f"could not draw a {mask_type} mask with hole ratio in [{low}, {high})")


def build_mask_set(images: list, bins: list, size: int, seed: int, mask_type: str, out_dir: str) -> list:
    """One mask per image and bin, seeded by (seed, image index, bin index); written as PNGs."""
    from tfinpaint import masks

    entries = []
    mask_dir = os.path.join(out_dir, "masks")
    for image_index, image_path in enumerate(images):
        stem = os.path.splitext(os.path.basename(image_path))[0]
        for bin_index, (low, high) in enumerate(bins):
            rng = np.random.default_rng([seed, image_index, bin_index])
            hole = mask_in_bin(size, low, high, rng, mask_type)
            mask_path = os.path.join(mask_dir, f"{image_index:05d}_{stem}_bin{bin_index}.png")
            masks.write_mask(mask_path, hole)
            entries.append({"image": os.path.abspath(image_path), "mask": os.path.relpath(mask_path, out_dir),
                            "bin": bin_index, "ratio": float(hole.mean())})
    return entries


def assign_bin(ratio: float, bins: list):
    for index, (low, high) in enumerate(bins):
        if low <= ratio < high:
            return index
    return None


def evaluate(inpainter, entries: list, bins: list, size: int, mask_root: str, fid_weights=None) -> dict:
    """Metrics per method and bin ("all" = every entry). Returns {"methods": {method: {bin: means}}}."""
    from tfinpaint import masks

    per_method = {"model": [], **{name: [] for name in BASELINES}}
    images_cache = {}
    completed = {name: [] for name in per_method}
    truths = []
    for entry in entries:
        if entry["image"] not in images_cache:
            images_cache[entry["image"]] = prepare_image(imageio.read_image(entry["image"]), size)
        truth = images_cache[entry["image"]]
        mask_path = entry["mask"] if os.path.isabs(entry["mask"]) else os.path.join(mask_root, entry["mask"])
        hole = masks.read_mask(mask_path, size=(size, size))
        hole_u8 = (hole > 0.5).astype(np.uint8)
        outputs = {"model": inpainter(truth, hole)}
        # The baselines see the same masked input: hole pixels are not given to them.
        masked = truth.copy()
        masked[hole_u8 > 0] = 0
        for name, flag in BASELINES.items():
            bgr = cv2.inpaint(np.ascontiguousarray(masked[:, :, ::-1]), hole_u8, 3, flag)
            outputs[name] = bgr[:, :, ::-1]
        truths.append(truth)
        for name, output in outputs.items():
            per_method[name].append({"bin": entry["bin"], **metrics.all_metrics(output, truth)})
            completed[name].append(output)
    results = {"bins": [f"{low:g}-{high:g}" for low, high in bins], "methods": {}}
    for name, rows in per_method.items():
        table = {}
        for key, selected in [("all", rows)] + [(results["bins"][i], [r for r in rows if r["bin"] == i])
                                                 for i in range(len(bins))]:
            if not selected:
                continue
            table[key] = {metric: float(np.mean([r[metric] for r in selected]))
                          for metric in ("l1", "l2", "psnr", "ssim")}
            table[key]["count"] = len(selected)
        results["methods"][name] = table
    if fid_weights:
        model = metrics.load_inception(fid_weights)
        real_stats = metrics.inception_statistics(model, truths)
        for name, images in completed.items():
            fake_stats = metrics.inception_statistics(model, images)
            results["methods"][name]["all"]["fid"] = metrics.frechet_distance(*real_stats, *fake_stats)
    else:
        results["note"] = ("FID omitted: pass --fid_weights with a local InceptionV3 (_notop) weights file; "
                           "LPIPS is not computed (it needs LPIPS layer weights, which are not bundled).")
    return results


def markdown_table(results: dict) -> str:
    has_fid = any("fid" in table.get("all", {}) for table in results["methods"].values())
    header = "| hole ratio | method | L1 (x100) | L2 | PSNR (dB) | SSIM |" + (" FID |" if has_fid else "") + " n |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for key in results["bins"] + ["all"]:
        for name, table in results["methods"].items():
            if key not in table:
                continue
            row = table[key]
            fid = (f" {row['fid']:.2f} |" if "fid" in row else " |") if has_fid else ""
            lines.append(f"| {key} | {name} | {100 * row['l1']:.2f} | {row['l2']:.4f} | {row['psnr']:.2f} | "
                         f"{row['ssim']:.4f} |{fid} {row['count']} |")
    if results.get("note"):
        lines += ["", results["note"]]
    return "\n".join(lines)


def define_flags(flag_values=FLAGS) -> None:
    define("string", "__gpath__", None, "Checkpoint folder written by train.py.", flag_values, aliases=["gpath"])
    define("string", "__flist__", None, "Folder (recursive) or text file listing the images.", flag_values,
           aliases=["flist"])
    define("string", "__mlist__", None, "A stored eval mask set (folder with manifest.json) or mask files.",
           flag_values, aliases=["mlist"])
    define("string", "bins", DEFAULT_BINS, "Hole-area bins LOW-HIGH, comma separated.", flag_values)
    define("string", "eval_dir", "eval_out", "Folder for the mask set, results.json and results.md.", flag_values)
    define("integer", "eval_size", 256, "Images are centre-cropped to this square size.", flag_values)
    define("integer", "eval_seed", 0, "Seed of the generated mask set.", flag_values)
    define("enum", "eval_mask_type", "irregular", "Mask generator for the eval set.", flag_values,
           enum_values=["free_form", "bbox", "single_bbox", "irregular", "mixed"])
    define("string", "fid_weights", None, "Local InceptionV3 _notop weights file; enables FID.", flag_values)
    define("string", "model", None, "Model name; overrides the one stored in the checkpoint folder.", flag_values)


define_flags()


def run(gpath, flist, eval_dir, mlist=None, bins_text=DEFAULT_BINS, size=256, seed=0, mask_type="irregular",
        fid_weights=None, model=None) -> dict:
    from tfinpaint.inference.api import load
    from tfinpaint import masks

    bins = parse_bins(bins_text)
    os.makedirs(eval_dir, exist_ok=True)
    mask_root = eval_dir
    if mlist and os.path.isfile(os.path.join(mlist, MANIFEST)):
        with open(os.path.join(mlist, MANIFEST), encoding="utf-8") as handle:
            manifest = json.load(handle)
        bins = [tuple(pair) for pair in manifest["bins"]]
        size = manifest["size"]
        entries = manifest["entries"]
        mask_root = mlist
    else:
        images = imageio.list_image_files(flist)
        if mlist:
            from tfinpaint.inference.cli import pair_masks

            mask_files = pair_masks(images, imageio.list_image_files(mlist))
            entries = []
            for image_path, mask_path in zip(images, mask_files):
                ratio = float(masks.read_mask(mask_path, size=(size, size)).mean())
                entries.append({"image": os.path.abspath(image_path), "mask": os.path.abspath(mask_path),
                                "bin": assign_bin(ratio, bins), "ratio": ratio})
            entries = [entry for entry in entries if entry["bin"] is not None]
        else:
            entries = build_mask_set(images, bins, size, seed, mask_type, eval_dir)
        manifest = {"bins": bins, "size": size, "seed": seed, "mask_type": mask_type, "entries": entries}
        with open(os.path.join(eval_dir, MANIFEST), "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=1)
    inpainter = load(gpath, model=model)
    results = evaluate(inpainter, entries, bins, size, mask_root, fid_weights)
    results["checkpoint"] = os.path.abspath(gpath)
    results["model"] = inpainter.model_name
    with open(os.path.join(eval_dir, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)
    table = markdown_table(results)
    with open(os.path.join(eval_dir, "results.md"), "w", encoding="utf-8") as handle:
        handle.write(table + "\n")
    return results


def main(argv) -> None:
    if len(argv) > 1:
        raise SystemExit(f"eval: unexpected arguments {' '.join(argv[1:])}")
    if not FLAGS.__gpath__ or not (FLAGS.__flist__ or FLAGS.__mlist__):
        raise SystemExit("eval: --gpath CKPT_DIR and --flist IMAGES are required")
    try:
        results = run(FLAGS.__gpath__, FLAGS.__flist__, FLAGS.eval_dir, mlist=FLAGS.__mlist__,
                      bins_text=FLAGS.bins, size=FLAGS.eval_size, seed=FLAGS.eval_seed,
                      mask_type=FLAGS.eval_mask_type, fid_weights=FLAGS.fid_weights, model=FLAGS.model)
    except ValueError as error:
        raise SystemExit(f"eval: {error}") from None
    print(markdown_table(results))
    print(f"\nmask set, results.json and results.md in {FLAGS.eval_dir}", file=sys.stderr)
