"""Official HiFill / CRA names (duxingren14/Hifill-tensorflow, and the Atlas200dk frozen ``hifill.pb``).

* Coarse gated convs (1-channel gate): ``generator/<layer>_{feat,gate}/{w,biases}``; the coarse up-sampling
  blocks: ``generator/<layer>/<layer>_conv_{feat,gate}/{w,biases}``.
* Refine convs (a 3x3 feature conv gated by a 1x1 "pointwise" conv): ``generator/<layer>/{w,biases}`` for the
  features and ``generator/<layer>/{pw,ds_biases}`` for the gate; the refine up-sampling blocks:
  ``generator/<layer>/<layer>_conv/...``.
* Critic: ``discriminator/convK/{w,biases}``, ``discriminator/linear/{kernel,bias}``.

tfinpaint's layer names equal the official scope names; kernels are HWIO in both: no transpose.
"""
from __future__ import annotations

import re

from tfinpaint.convert.common import ConvertError, Target, flip_channels

GENERATOR_SCOPE = "generator/"
DISCRIMINATOR_SCOPE = "discriminator/"
_LAYER = re.compile(r"^(c|re)_[A-Za-z0-9_]+$")
_UPSAMPLE = re.compile(r"^(c_de_up_\d+|c_de_toRGB|re_de_up__\d+|re_de_toRGB__\d+)$")
_REFINE_LEAVES = {("feature_conv", "kernel"): "w", ("feature_conv", "bias"): "biases",
                  ("gate_conv", "kernel"): "pw", ("gate_conv", "bias"): "ds_biases"}
_COARSE_LEAVES = {"kernel": "w", "bias": "biases"}
_IMAGE_IN = ("c_en_down_128", "re_en_down_256")
_IMAGE_OUT = ("c_de_toRGB", "re_de_toRGB__256")
# The official coarse stage resizes its input to a fixed 256 x 256 (tfinpaint's default: half the input).
OFFICIAL_COARSE_SIZE = 256


def detect(shapes: dict):
    return "cra" if any(name.startswith(GENERATOR_SCOPE + "c_en_down_128") for name in shapes) else None


def _official_name(parts):
    layers = [part for part in parts[:-1] if _LAYER.match(part)]
    branches = [part for part in parts[:-1] if part in ("feature_conv", "gate_conv")]
    if not layers or not branches:
        return None, None
    layer, branch, weight = layers[-1], branches[-1], parts[-1]
    if weight not in ("kernel", "bias"):
        return None, None
    upsample = bool(_UPSAMPLE.match(layer))
    if layer.startswith("c_"):
        suffix = "feat" if branch == "feature_conv" else "gate"
        scope = f"{layer}/{layer}_conv_{suffix}" if upsample else f"{layer}_{suffix}"
        return layer, f"{GENERATOR_SCOPE}{scope}/{_COARSE_LEAVES[weight]}"
    scope = f"{layer}/{layer}_conv" if upsample else layer
    return layer, f"{GENERATOR_SCOPE}{scope}/{_REFINE_LEAVES[(branch, weight)]}"


def _flip(layer, name):
    leaf = name.rsplit("/", 1)[-1]
    if layer in _IMAGE_IN and leaf in ("w", "pw"):
        return lambda value: flip_channels(value, axis=2)
    # Output layers: the colour features, and the refine toRGB's per-channel gates (the coarse gate is 1-channel).
    if layer in _IMAGE_OUT and not name.endswith("_gate/w") and not name.endswith("_gate/biases"):
        return lambda value: flip_channels(value, axis=value.ndim - 1)
    return None


def generator_targets(generator, bgr: bool = True) -> dict:
    targets = {}
    for variable in generator.weights:
        layer, name = _official_name(variable.path.split("/"))
        if name is None:
            raise ConvertError(f"tfinpaint variable {variable.path} has no counterpart in the official release")
        targets[name] = Target(variable, None if bgr else _flip(layer, name))
    return targets


def _flip_input(value):
    return flip_channels(value, axis=2)


def discriminator_targets(discriminators: dict, bgr: bool = True) -> dict:
    targets = {}
    for variable in discriminators["critic"].weights:
        layer, weight = variable.path.split("/")[-2:]
        leaf = weight if layer == "linear" else _COARSE_LEAVES[weight]
        flip = not bgr and layer == "conv1" and weight == "kernel"
        targets[f"{DISCRIMINATOR_SCOPE}{layer}/{leaf}"] = Target(variable, _flip_input if flip else None)
    return targets


def parity_options(bgr: bool = True) -> dict:
    """The official network: BGR, coarse stage at a fixed 256 x 256, critic at 512."""
    return {"bgr": bool(bgr), "coarse_size": OFFICIAL_COARSE_SIZE, "image_size": 512}
