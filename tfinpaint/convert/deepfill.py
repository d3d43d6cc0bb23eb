"""Official DeepFill v1 / v2 names (JiahuiYu/generative_inpainting) for tfinpaint's variables.

Every generator tensor is ``inpaint_net/<layer>/{kernel,bias}``; the ``*_upsample`` layers sit one scope deeper
(``inpaint_net/<layer>/<layer>_conv/...``). tfinpaint's layers carry the official layer names, so the official
name of a variable follows from the layer name found in its path. TF1 and Keras share the conv and dense
layouts: no transpose.
"""
from __future__ import annotations

import re

from tfinpaint.convert.common import ConvertError, Target, flip_channels

GENERATOR_SCOPE = "inpaint_net/"
DISCRIMINATOR_SCOPE = "discriminator/"
_LAYER = re.compile(r"^(x|pm|all)?conv\d+(_[a-z]+)?$")
# Layers that see the image (input channels) or produce it (output channels): flipped for an RGB build.
_IMAGE_IN = ("conv1", "xconv1", "pmconv1")
_IMAGE_OUT = ("conv17", "allconv17")


# Consecutive layers whose widths tell v1 from v2 (any one pair present is enough).
_WIDTH_PAIRS = (("conv1", "conv2_downsample"), ("xconv1", "xconv2_downsample"), ("pmconv1", "pmconv2_downsample"),
                ("conv3", "conv4_downsample"), ("conv5", "conv6"), ("allconv11", "allconv12"))


def detect(shapes: dict):
    """"deepfill_v1", "deepfill_v2", "deepfill" (DeepFill, version undecidable) or None. v2's gated convs output
    features and gates, so a layer's input has half the channels of the previous layer's kernel output; v1's
    convs pass them all on."""
    if not any(name.startswith(GENERATOR_SCOPE) for name in shapes):
        return None
    for first, second in _WIDTH_PAIRS:
        out = shapes.get(f"{GENERATOR_SCOPE}{first}/kernel")
        into = shapes.get(f"{GENERATOR_SCOPE}{second}/kernel")
        if out is not None and into is not None and len(out) == 4 and len(into) == 4:
            if into[2] * 2 == out[3]:
                return "deepfill_v2"
            if into[2] == out[3]:
                return "deepfill_v1"
    return "deepfill"


def _official_layer_name(layer: str) -> str:
    return f"{layer}/{layer}_conv" if layer.endswith("_upsample") else layer


def _flip(layer: str, weight: str):
    if layer in _IMAGE_IN and weight == "kernel":
        return lambda value: flip_channels(value, axis=2)
    if layer in _IMAGE_OUT:
        return lambda value: flip_channels(value, axis=value.ndim - 1)
    return None


def generator_targets(generator, bgr: bool = True) -> dict:
    """``{official name: Target}`` for every variable of a built DeepFill v1 or v2 generator. With
    ``bgr=False`` the colour channels are flipped in the weights (for a generator built with ``bgr=False``)."""
    targets = {}
    for variable in generator.weights:
        parts = variable.path.split("/")
        layers = [part for part in parts[:-1] if _LAYER.match(part)]
        if not layers:
            raise ConvertError(f"tfinpaint variable {variable.path} has no counterpart in the official release")
        layer, weight = layers[-1], parts[-1]
        name = f"{GENERATOR_SCOPE}{_official_layer_name(layer)}/{weight}"
        targets[name] = Target(variable, None if bgr else _flip(layer, weight))
    return targets


def _critic_flip(layer, weight, bgr):
    if not bgr and layer == "conv1" and weight == "kernel":
        return lambda value: flip_channels(value, axis=2)
    return None


def v1_discriminator_targets(discriminators: dict, bgr: bool = True) -> dict:
    """The two WGAN-GP critics: ``discriminator/discriminator_{local,global}/convK`` and
    ``discriminator/dout_{local,global}_fc`` (tfinpaint's Dense layer is named ``score``)."""
    targets = {}
    for kind in ("local", "global"):
        for variable in discriminators[kind].weights:
            layer, weight = variable.path.split("/")[-2:]
            if layer == "score":
                name = f"{DISCRIMINATOR_SCOPE}dout_{kind}_fc/{weight}"
            else:
                name = f"{DISCRIMINATOR_SCOPE}discriminator_{kind}/{layer}/{weight}"
            targets[name] = Target(variable, _critic_flip(layer, weight, bgr))
    return targets


def v2_discriminator_targets(discriminators: dict, bgr: bool = True) -> dict:
    """The SN-PatchGAN: ``discriminator/sn_patch_gan/convK/{kernel,bias}`` and its power-iteration vector
    ``.../convK/kernel_sn/u`` (tfinpaint: ``sn_convK/u`` on the spectral-norm wrapper)."""
    targets = {}
    for variable in discriminators["sn_patch_gan"].weights:
        parts = variable.path.split("/")
        weight = parts[-1]
        convs = [part for part in parts[:-1] if re.match(r"^(sn_)?conv\d+$", part)]
        if not convs:
            raise ConvertError(f"tfinpaint variable {variable.path} has no counterpart in the official release")
        layer = convs[-1].replace("sn_", "")
        leaf = "kernel_sn/u" if weight == "u" else weight
        targets[f"{DISCRIMINATOR_SCOPE}sn_patch_gan/{layer}/{leaf}"] = Target(
            variable, _critic_flip(layer, weight, bgr))
    return targets


def parity_options(bgr: bool = True) -> dict:
    """Build options under which tfinpaint's DeepFill reproduces the official outputs (critics at 256)."""
    return {"bgr": bool(bgr), "align_corners": True, "image_size": 256}
