"""``convert``: released official weights -> an ordinary tfinpaint checkpoint folder.

Sources: a TF1 checkpoint (folder with a ``checkpoint`` / ``checkpoint.txt`` state file, or a prefix) for
DeepFill v1 / v2 and HiFill, HiFill's frozen ``hifill.pb``, GLCIC's Torch7 ``.t7``. The mapping is strict (see
``common.collect``); the folder is written only once every variable is filled, with the build options that
reproduce the official outputs recorded in its ``model.json``.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from tfinpaint import checkpoints
from tfinpaint.convert import deepfill, glcic_t7, hifill
from tfinpaint.convert.common import (
    ConvertError,
    assign,
    check_output_folder,
    collect,
    write_atomically,
)
from tfinpaint.convert.sources import load_t7, read_source
from tfinpaint.models import registry

MODELS = ("deepfill_v1", "deepfill_v2", "cra", "glcic")
DISPLAY_NAMES = {"deepfill_v1": "DeepFill v1", "deepfill_v2": "DeepFill v2", "cra": "HiFill (CRA)",
                 "glcic": "GLCIC"}
_ALIASES = {"hifill": "cra"}


def _canonical(model: str | None):
    if model is None:
        return None
    name = _ALIASES.get(model.lower(), model.lower())
    if name not in MODELS:
        raise ConvertError(f"choose one of {', '.join(MODELS)} (or leave it out to detect it)", "model", repr(model))
    return name


def detect_model(shapes: dict):
    """The model whose official tensor names ``shapes`` holds, or None."""
    return deepfill.detect(shapes) or hifill.detect(shapes)


def _build(name: str, options: dict):
    """The generator and discriminators, with their variables created."""
    bundle = registry.create(name, **options)
    side = max(bundle.generator.size_factor, 32)
    bundle.generator(tf.zeros([1, side, side, 3]), tf.zeros([1, side, side, 1]), training=False)
    for critic in bundle.discriminators.values():
        if not critic.weights:
            critic.build((None, None, None, 3))
    return bundle


def _mapping(name):
    if name in ("deepfill_v1", "deepfill_v2"):
        critics = deepfill.v1_discriminator_targets if name == "deepfill_v1" else deepfill.v2_discriminator_targets
        return deepfill, critics
    return hifill, hifill.discriminator_targets


def _is_t7(src: str) -> bool:
    return os.fspath(src).lower().endswith(".t7")


class _Conversion(NamedTuple):
    name: str
    options: dict
    bundle: object
    targets: dict
    values: dict
    ignored: list


def _from_t7(src: str, name, discriminator: bool) -> _Conversion:
    """GLCIC: the completion network of an official Torch7 file."""
    if name not in (None, "glcic"):
        raise ConvertError(f"{src}: this is a GLCIC Torch7 file; use <model> glcic")
    if discriminator:
        raise ConvertError(f"{src}: the GLCIC release holds only the completion network (no discriminator)")
    root = load_t7(src)
    options = {"mean": glcic_t7.read_mean(root, src)}
    bundle = _build("glcic", options)
    targets, source = glcic_t7.targets_and_source(root, bundle.generator, src)
    values, ignored = collect(targets, source, scopes=("",))
    # The mean lives in a (non-trainable) variable of the generator too: set it from the file.
    bundle.generator.mean.assign(np.asarray(options["mean"], dtype=np.float32))
    return _Conversion("glcic", options, bundle, targets, values, ignored)


def _not_t7(src: str):
    """--model glcic on something else: name the model it holds where it is one of ours."""
    readable = os.path.isdir(src) or os.path.exists(src + ".index") or src.endswith(".pb")
    detected = detect_model(read_source(src).shapes) if readable else None
    if detected in MODELS:
        raise ConvertError(f"{src}: this is a {DISPLAY_NAMES[detected]} checkpoint; use <model> {detected}")
    raise ConvertError(f"{src}: not a Torch7 .t7 file (the GLCIC release is completionnet_*.t7)")


def _from_tensors(src: str, name, discriminator: bool, bgr: bool) -> _Conversion:
    """DeepFill v1 / v2 and HiFill: a TF1 checkpoint or a frozen graph."""
    source = read_source(src)
    detected = detect_model(source.shapes)
    if detected == "deepfill":  # DeepFill, but the layers that tell v1 from v2 are missing
        if name not in ("deepfill_v1", "deepfill_v2"):
            raise ConvertError(f"{source.path}: a DeepFill checkpoint whose version cannot be told from its "
                               "tensors; pass <model> deepfill_v1 or deepfill_v2")
        detected = name
    if name is not None and detected is not None and detected != name:
        raise ConvertError(f"{source.path}: this is a {DISPLAY_NAMES[detected]} checkpoint; use <model> {detected}")
    if detected is None:
        found = ", ".join(sorted(source.shapes)[:5]) or "no float tensors"
        wanted = f"{DISPLAY_NAMES[name]} " if name else ""
        raise ConvertError(f"{source.path}: no official {wanted}tensor names found (found: {found}"
                           f"{', ...' if len(source.shapes) > 5 else ''})")
    if discriminator and source.kind == "frozen_graph":
        raise ConvertError(f"{source.path}: a frozen inference graph holds no discriminator; convert the "
                           "training checkpoint for <discriminator>")
    module, critic_targets = _mapping(detected)
    options = module.parity_options(bgr)
    bundle = _build(detected, options)
    targets = module.generator_targets(bundle.generator, bgr)
    if discriminator:
        targets.update(critic_targets(bundle.discriminators, bgr))
    values, ignored = collect(targets, source, scopes=(module.GENERATOR_SCOPE, module.DISCRIMINATOR_SCOPE),
                              ignore_scopes=() if discriminator else (module.DISCRIMINATOR_SCOPE,))
    return _Conversion(detected, options, bundle, targets, values, ignored)


def convert(src, out, model: str | None = None, discriminator: bool = False, overwrite: bool = False,
            bgr: bool = True) -> dict:
    """Converts released official weights at ``src`` into the tfinpaint checkpoint folder ``out``.

    model: "deepfill_v1", "deepfill_v2", "cra" (alias "hifill") or "glcic"; detected from the tensor names when
        None. discriminator: also convert the discriminator / critic (training from the released model with
        ``train.py --init_from``). overwrite: replace an existing ``out``. bgr: keep the official BGR channel
        order inside the network (True); False flips the colour channels in the weights instead.

    Returns a report: {"model", "src", "out", "options", "tensors" (converted), "parameters", "ignored"
    (names left out: optimizer slots, step counters, unrequested networks)}. Raises ``ConvertError`` (one line,
    nothing written) when the source does not hold exactly the model's tensors.
    """
    src = os.fspath(src)
    name = _canonical(model)
    check_output_folder(out, overwrite)
    if name == "glcic" and not _is_t7(src):
        _not_t7(src)
    if _is_t7(src):
        result = _from_t7(src, name, discriminator)
    else:
        result = _from_tensors(src, name, discriminator, bgr)
    assign(result.targets, result.values)
    bundle = result.bundle

    def write(folder):
        # Discriminators go in the same folder, so that train.py --init_from starts from all networks.
        checkpoints.save_generator(folder, bundle.generator, result.name, result.options,
                                   discriminators=bundle.discriminators if discriminator else None)

    write_atomically(out, overwrite, write)
    return {
        "model": result.name,
        "src": src,
        "out": os.path.abspath(os.fspath(out)),
        "options": result.options,
        "tensors": len(result.values),
        "parameters": int(sum(value.size for value in result.values.values())),
        "ignored": result.ignored,
    }
