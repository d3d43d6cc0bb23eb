"""An evaluation run: settings -> mask set (reused, or built) -> scores of the model and the baselines ->
report, all written into a staged folder that replaces ``out_dir`` only once complete."""
from __future__ import annotations

import dataclasses
import os

from absl import logging

from tfinpaint import imageio
from tfinpaint.evaluation import masksets, metrics, report
from tfinpaint.evaluation.config import (
    DEFAULT_BINS,
    DEFAULT_MASK_TYPE,
    DEFAULT_SEED,
    DEFAULT_SIZE,
    EvalConfig,
    SettingError,
)
from tfinpaint.evaluation.output_folder import StagedFolder, holds_asked_set
from tfinpaint.evaluation.scoring import evaluate


@dataclasses.dataclass
class _Plan:
    """The mask set a run asks for: a stored one (``stored``) or one to build from ``images``."""

    bins: list
    size: int
    settings: dict
    stored: dict | None = None
    images: list | None = None
    mask_files: list | None = None
    seed: int | None = None
    mask_type: str | None = None


def _plan(config: EvalConfig) -> _Plan:
    if masksets.is_mask_set(config.masks):
        if config.seed is not None or config.mask_type is not None:
            raise SettingError("is a stored mask set: <seed> and <mask_type> apply to new sets only", "masks",
                               config.masks)
        stored = masksets.load_mask_set(config.masks, config.images)
        if config.bins is not None and masksets.parse_bins(config.bins) != stored["bins"]:
            raise SettingError(f"differ from those of the stored mask set {config.masks} (leave <bins> out)",
                               "bins")
        if config.size is not None and int(config.size) != stored["size"]:
            raise SettingError(f"differs from the stored mask set's {stored['size']} (leave <size> out)", "size",
                               config.size)
        return _Plan(stored["bins"], stored["size"], stored["settings"], stored=stored)

    bins = masksets.parse_bins(DEFAULT_BINS if config.bins is None else config.bins)
    size = DEFAULT_SIZE if config.size is None else int(config.size)
    seed = DEFAULT_SEED if config.seed is None else int(config.seed)
    mask_type = config.mask_type or DEFAULT_MASK_TYPE
    if size < metrics.SSIM_WINDOW:
        raise SettingError(f"must be at least {metrics.SSIM_WINDOW} (SSIM's window)", "size", size)
    if seed < 0:
        raise SettingError("must be >= 0", "seed", seed)
    from tfinpaint import data
    from tfinpaint.masks import ALL_MASK_TYPES

    if mask_type not in ALL_MASK_TYPES:
        raise SettingError(f"unknown (expected one of {', '.join(ALL_MASK_TYPES)})", "mask_type", mask_type)
    images = imageio.list_image_files(config.images) if config.images else data.sample_images()
    if not config.images:
        logging.info("no images given: evaluating on the %d built-in sample photos", len(images))
    if config.masks:
        mask_files = masksets.pair_mask_files(images, imageio.list_image_files(config.masks))
        settings = masksets.file_settings(images, mask_files, bins, size, config.mask_polarity)
        return _Plan(bins, size, settings, images=images, mask_files=mask_files)
    settings = masksets.generated_settings(images, bins, size, seed, mask_type)
    return _Plan(bins, size, settings, images=images, seed=seed, mask_type=mask_type)


def _load_model(config: EvalConfig):
    import tensorflow as tf

    from tfinpaint.inference.api import load

    try:
        return load(config.checkpoint, model=config.model)
    except (AssertionError, tf.errors.OpError) as error:
        # tf.train.Checkpoint reports a mismatch with every unmatched variable's value: keep the gist.
        gist = " ".join(str(error).split())[:160] or type(error).__name__
        model = f" {config.model}" if config.model else ""
        raise SettingError(f"checkpoint does not fit the model{model} ({gist}...)", "checkpoint",
                           config.checkpoint) from None


def _stage_mask_set(plan: _Plan, config: EvalConfig, reuse_target: bool, folder: str) -> dict:
    """Writes the asked mask set into ``folder`` (copied from where it is stored, or built); its manifest."""
    if reuse_target:
        try:
            stored = masksets.load_mask_set(config.out_dir, config.images)
        except ValueError:
            if not config.overwrite:
                raise
            logging.warning("%s: stored mask set unusable, making it anew", config.out_dir)
            return _stage_mask_set(plan, config, False, folder)
        masksets.copy_masks(stored["entries"], config.out_dir, folder)
        manifest = stored
    elif plan.stored is not None:
        masksets.copy_masks(plan.stored["entries"], config.masks, folder)
        manifest = plan.stored
    else:
        if plan.mask_files is not None:
            entries, skipped = masksets.mask_set_from_files(plan.images, plan.mask_files, plan.bins, plan.size,
                                                            config.mask_polarity, folder)
            origin = {"seed": None, "mask_type": None, "source": os.path.abspath(config.masks),
                      "polarity": config.mask_polarity}
        else:
            entries, skipped = masksets.build_mask_set(plan.images, plan.bins, plan.size, plan.seed,
                                                       plan.mask_type, folder)
            origin = {"seed": plan.seed, "mask_type": plan.mask_type, "source": masksets.GENERATED}
        if not entries:
            raise SettingError(f"none of the {len(plan.images)} photos could be used (first: "
                               f"{skipped[0]['image']}: {skipped[0]['reason']})", "images", config.images)
        manifest = {"bins": plan.bins, "size": plan.size, **origin, "settings": plan.settings,
                    "entries": entries, "skipped": skipped}
    manifest = {**manifest, "settings": plan.settings}  # equal to a reused set's, by the check before
    masksets.write_manifest(folder, manifest)
    return manifest


def run(config: EvalConfig) -> dict:
    """Runs the evaluation described by ``config``; returns the results (also written to ``config.out_dir``).

    Raises ``SettingError`` (or a one-line ``ValueError`` / ``OSError`` naming a file) before anything is
    written when a setting is invalid, when ``out_dir`` holds a different mask set or another checkpoint's
    results (without ``overwrite``), or when the checkpoint does not load. Photos that cannot be read are
    skipped and listed under ``results["skipped"]``.
    """
    plan = _plan(config)
    reuse_target = holds_asked_set(config.out_dir, plan.settings, config.checkpoint, config.overwrite)
    # Everything that can fail fast (checkpoint, FID weights) is loaded before the masks are made.
    inpainter = _load_model(config)
    fid_model = metrics.load_inception(config.fid_weights) if config.fid_weights else None
    with StagedFolder(config.out_dir) as staging:
        manifest = _stage_mask_set(plan, config, reuse_target, staging.path)
        results = evaluate(inpainter, manifest["entries"], plan.bins, plan.size, staging.path,
                           name=inpainter.model_name, fid_model=fid_model)
        reused_from = (os.path.abspath(config.masks) if plan.stored is not None
                       else os.path.abspath(config.out_dir) if reuse_target else None)
        results.update(model=inpainter.model_name, checkpoint=os.path.abspath(config.checkpoint), size=plan.size,
                       mask_set={"dir": os.path.abspath(config.out_dir), "seed": manifest.get("seed"),
                                 "mask_type": manifest.get("mask_type"), "source": manifest.get("source"),
                                 "reused_from": reused_from},
                       skipped=list(manifest.get("skipped", [])))
        report.write_results(staging.path, results)
        staging.commit()
    return results
