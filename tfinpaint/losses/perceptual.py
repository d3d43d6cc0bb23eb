"""VGG16 feature losses of Partial Convolutions (Liu et al., ECCV 2018; docs/architectures.md §3.3).

Masks are the library's convention: 1 = hole, 0 = known. Images are RGB in [0, 1].

VGG16 weights are never downloaded: ``load_vgg16_features`` reads a local file (``--vgg_weights PATH``) or the
file Keras itself caches (``$KERAS_HOME/models/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``, by default
under ``~/.keras``), and otherwise says what to do.
"""
from __future__ import annotations

import os

import keras
import tensorflow as tf

from tfinpaint.losses.reconstruction import masked_l1, total_variation_hole
from tfinpaint.settings import SettingError, SettingFileNotFoundError

__all__ = [
    "VGG_CACHE_FILENAME",
    "VGGPreprocess",
    "DEFAULT_PCONV_WEIGHTS",
    "keras_vgg16_cache_path",
    "resolve_vgg16_weights",
    "load_vgg16_features",
    "gram_matrix",
    "pconv_loss",
]

VGG_CACHE_FILENAME = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
FEATURE_LAYERS = ("block1_pool", "block2_pool", "block3_pool")
# Paper weights (eq. 7): L_valid + 6 L_hole + 0.05 L_perc + 120 (L_style_out + L_style_comp) + 0.1 L_tv.
DEFAULT_PCONV_WEIGHTS = {"valid": 1.0, "hole": 6.0, "perceptual": 0.05, "style": 120.0, "tv": 0.1}

_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


def keras_vgg16_cache_path():
    """Where ``keras.applications.VGG16(weights="imagenet", include_top=False)`` keeps its weights file."""
    keras_home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(keras_home, "models", VGG_CACHE_FILENAME)


def resolve_vgg16_weights(weights_path=None):
    """Path of the VGG16 weights file to use; raises FileNotFoundError with a one-line fix when there is none."""
    if weights_path:
        path = os.path.expanduser(str(weights_path))
        if not os.path.isfile(path):
            raise SettingFileNotFoundError(
                f"VGG16 weights file not found: {path} (expected a Keras VGG16 include_top=False '.h5' or "
                f"'.weights.h5' file)", "vgg_weights"
            )
        return path
    cached = keras_vgg16_cache_path()
    if os.path.isfile(cached):
        return cached
    raise SettingFileNotFoundError(
        f"No VGG16 weights for the PConv perceptual/style losses: give <vgg_weights> PATH (a Keras VGG16 "
        f"include_top=False '.h5' or '.weights.h5' file) or copy {VGG_CACHE_FILENAME} to {cached}; "
        f"tfinpaint never downloads"
    )


@keras.saving.register_keras_serializable(package="tfinpaint")
class VGGPreprocess(keras.layers.Layer):
    """RGB [0, 1] -> the input normalisation the VGG16 weights were trained with.

    ``"caffe"``: Keras' own VGG16 weights (converted from the original Caffe model; what
    ``keras.applications.vgg16.preprocess_input`` does): BGR, [0, 255], minus the BGR ImageNet mean.
    ``"torch"``: torchvision VGG16 weights (the PConv paper's): RGB, ``(x - mean) / std``.
    """

    def __init__(self, mode="caffe", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("caffe", "torch"):
            raise ValueError(f"VGG preprocessing must be 'caffe' or 'torch', got {mode!r}")
        self.mode = mode

    def call(self, images):
        images = tf.cast(images, self.compute_dtype)
        if self.mode == "torch":
            mean = tf.constant(_TORCH_MEAN, self.compute_dtype)
            std = tf.constant(_TORCH_STD, self.compute_dtype)
            return (images - mean) / std
        return images[..., ::-1] * 255.0 - tf.constant(_CAFFE_BGR_MEAN, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config["mode"] = self.mode
        return config


def load_vgg16_features(weights_path=None, preprocessing="caffe"):
    """Frozen Keras model: RGB [0, 1] images [B, H, W, 3] -> [pool1, pool2, pool3] of ImageNet VGG16.

    Weights come from ``weights_path`` (a Keras VGG16 ``include_top=False`` file, legacy ``.h5`` or Keras 3
    ``.weights.h5``), else from the Keras cache file when present; otherwise FileNotFoundError says what to do.

    ``preprocessing`` must match the weights: ``"caffe"`` (default) for Keras' VGG16 weights, the only ones the
    cache file can hold; ``"torch"`` (ImageNet mean/std on RGB, as in the paper's PyTorch code) for weights
    converted from torchvision.
    """
    path = resolve_vgg16_weights(weights_path)
    backbone = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    try:
        backbone.load_weights(path)
    except Exception as error:  # h5py / Keras raise many types; the user needs the file name and the reason.
        reason = " ".join(str(error).split())
        raise SettingError(f"cannot load VGG16 weights from {path}: {reason}", "vgg_weights") from None
    pools = keras.Model(backbone.input, [backbone.get_layer(name).output for name in FEATURE_LAYERS])
    images = keras.Input((None, None, 3), name="rgb_unit")
    features = pools(VGGPreprocess(preprocessing)(images))
    model = keras.Model(images, features, name="vgg16_pool1_to_pool3")
    model.trainable = False
    return model


def gram_matrix(features):
    """[B, H, W, C] -> [B, C, C] Gram matrices F^T F / (C * H * W) (the paper's K_p), in float32."""
    features = tf.cast(features, tf.float32)
    if features.shape.rank != 4:
        raise ValueError(f"gram_matrix: features must be rank 4 [B, H, W, C], got shape {features.shape}")
    shape = tf.shape(features)
    count = tf.cast(shape[1] * shape[2] * shape[3], tf.float32)
    return tf.einsum("bhwc,bhwd->bcd", features, features) / count


def _merged_weights(weights):
    merged = dict(DEFAULT_PCONV_WEIGHTS)
    unknown = sorted(set(weights or {}) - set(DEFAULT_PCONV_WEIGHTS))
    if unknown:
        raise ValueError(
            f"pconv_loss: unknown weight key(s) {unknown}; expected a subset of {sorted(DEFAULT_PCONV_WEIGHTS)}"
        )
    merged.update(weights or {})
    return merged


def _is_zero(weight):
    return isinstance(weight, (int, float)) and weight == 0


def _check_image(tensor, argument):
    if tensor.shape.rank != 4 or tensor.shape[-1] not in (None, 3):
        raise ValueError(f"pconv_loss: `{argument}` must be [B, H, W, 3] RGB, got shape {tensor.shape}")


def pconv_loss(output, target, mask, vgg, weights=None):
    """Partial Convolutions loss (paper eqs. 1-7).

    output: raw network prediction I_out [B, H, W, 3] (unclipped); target: I_gt; mask: [B, H, W, 1], 1 = hole.
    vgg: model from ``load_vgg16_features`` (may be None when the perceptual and style weights are 0).
    weights: overrides of ``DEFAULT_PCONV_WEIGHTS`` (keys valid, hole, perceptual, style, tv); a term whose
    weight is the Python number 0 is not computed.

    Returns scalar float32 tensors: valid, hole, perceptual, style_out, style_comp, tv, total. L1 terms are
    normalised by all elements (not the region size), perceptual terms by each feature map's C*H*W, style terms
    are the mean absolute Gram difference with Gram = F^T F / (C*H*W).
    """
    weights = _merged_weights(weights)
    output = tf.cast(output, tf.float32)
    target = tf.cast(target, tf.float32)
    mask = tf.cast(mask, tf.float32)
    _check_image(output, "output")
    _check_image(target, "target")
    if mask.shape.rank != 4 or mask.shape[-1] not in (None, 1):
        raise ValueError(f"pconv_loss: `mask` must be [B, H, W, 1] with 1 = hole, got shape {mask.shape}")

    hole, valid = masked_l1(output, target, mask)
    # I_comp = M * I_gt + (1 - M) * I_out with M = 1 - mask (paper: 1 = valid).
    composite = mask * output + (1.0 - mask) * target
    zero = tf.constant(0.0, tf.float32)
    perceptual = style_out = style_comp = zero
    if not (_is_zero(weights["perceptual"]) and _is_zero(weights["style"])):
        if vgg is None:
            raise ValueError("pconv_loss: a VGG16 feature model is required when the perceptual or style weight is "
                             "non-zero (see tfinpaint.losses.perceptual.load_vgg16_features)")
        batch = tf.shape(output)[0]
        # One VGG pass over [I_out; I_comp; I_gt].
        stacked = vgg(tf.concat([output, composite, target], axis=0))
        for level in stacked:
            level = tf.cast(level, tf.float32)
            feat_out, feat_comp, feat_gt = level[:batch], level[batch : 2 * batch], level[2 * batch :]
            perceptual += tf.reduce_mean(tf.abs(feat_out - feat_gt)) + tf.reduce_mean(tf.abs(feat_comp - feat_gt))
            gram_gt = gram_matrix(feat_gt)
            style_out += tf.reduce_mean(tf.abs(gram_matrix(feat_out) - gram_gt))
            style_comp += tf.reduce_mean(tf.abs(gram_matrix(feat_comp) - gram_gt))
    tv = zero if _is_zero(weights["tv"]) else total_variation_hole(composite, mask)

    total = (
        weights["valid"] * valid
        + weights["hole"] * hole
        + weights["perceptual"] * perceptual
        + weights["style"] * (style_out + style_comp)
        + weights["tv"] * tv
    )
    return {
        "valid": valid,
        "hole": hole,
        "perceptual": perceptual,
        "style_out": style_out,
        "style_comp": style_comp,
        "tv": tv,
        "total": total,
    }
