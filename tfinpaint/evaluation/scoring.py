"""Scoring: every method (the model and the baselines) inpaints the same masked inputs of a mask set, and is
measured on the completed image (its prediction in the holes, the ground truth elsewhere)."""
from __future__ import annotations

import os

import numpy as np
from absl import logging

from tfinpaint import imageio
from tfinpaint.evaluation import metrics
from tfinpaint.evaluation.baselines import baseline_inpainters
from tfinpaint.evaluation.masksets import bin_label, prepare_image

METRIC_NAMES = ("l1", "l2", "psnr", "ssim")
NOTE_NO_FID = "FID omitted: no local Keras InceptionV3 'notop' weights file (.h5) was given."
NOTE_FID = ("FID over all masks only (bins hold too few images), with Keras' ImageNet InceptionV3 rather than "
            "the TF-FID Inception graph: compare FID within this table, not with published values.")
NOTE_LPIPS = "LPIPS omitted: it needs LPIPS layer weights, which are not bundled (nothing is downloaded)."


def masked_input(truth: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The input every method gets: hole pixels blanked, so that none can see the ground truth there."""
    masked = truth.copy()
    masked[hole > 0.5] = 0
    return masked


def _summary(rows: list) -> dict:
    summary = {name: float(np.mean([row[name] for row in rows])) for name in METRIC_NAMES}
    summary["count"] = len(rows)
    return summary


def _checked_hole(mask_path: str, entry: dict, bins: list, size: int) -> np.ndarray:
    """A stored mask, checked against the set's size and the entry's bin."""
    from tfinpaint import masks

    hole = masks.read_mask(mask_path)
    if hole.shape != (size, size):
        raise ValueError(f"{mask_path}: {hole.shape[1]}x{hole.shape[0]}, but the mask set is {size}x{size}")
    if not 0 <= entry["bin"] < len(bins):
        raise ValueError(f"{mask_path}: bin {entry['bin']} does not exist (mask set has {len(bins)} bins)")
    low, high = bins[entry["bin"]]
    ratio = float(hole.mean())
    if not (ratio > 0 and low <= ratio < high):
        raise ValueError(f"{mask_path}: hole ratio {ratio:.4f} outside its bin {bin_label(low, high)}")
    return hole


def evaluate(inpainter, entries: list, bins: list, size: int, mask_root: str, name: str = "model",
             fid_model=None) -> dict:
    """Scores ``inpainter`` and the baselines on the entries of a mask set.

    inpainter: callable ``(image, hole) -> completed image``: image the RGB ``uint8`` [size, size, 3] photo
        with its hole pixels blanked, hole float32 [size, size] with 1 = hole (``tfinpaint.load(...)`` fits).
    mask_root: the folder the entries' mask paths are relative to.
    fid_model: optional feature network (``metrics.load_inception``); adds FID to the overall rows.
    Returns {"bins": labels, "methods": {method: {"all" | label: means and "count"}}, "entries": [...],
    "notes": [...]}; per-bin rows hold the mean over that bin's masks, "all" over every mask.
    """
    methods = {name: inpainter, **baseline_inpainters()}
    labels = [bin_label(low, high) for low, high in bins]
    images = {}
    scored, completed, truths = [], {method: [] for method in methods}, []
    for index, entry in enumerate(entries):
        if entry["image"] not in images:
            images[entry["image"]] = prepare_image(imageio.read_image(entry["image"]), size)
        truth = images[entry["image"]]
        mask_path = os.path.join(mask_root, entry["mask"])
        hole = _checked_hole(mask_path, entry, bins, size)
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
        scored.append({**entry, "ratio": float(hole.mean()), "metrics": scores})
        logging.info("[%d/%d] %s with %s", index + 1, len(entries), entry["image"], entry["mask"])

    results = {"bins": labels, "methods": {}, "entries": scored, "notes": []}
    for method in methods:
        table = {"all": _summary([entry["metrics"][method] for entry in scored])}
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
