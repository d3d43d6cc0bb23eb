"""Image-quality metrics on RGB ``uint8`` images, as inpainting papers report them.

L1 and L2 are on [0, 1] values (L1 printed x100, as DeepFill / PConv tables do); PSNR and SSIM come from
``tf.image.psnr`` / ``tf.image.ssim`` with ``max_val=255`` on the whole completed image. FID uses an InceptionV3
whose weights the user supplies as a local file (nothing is downloaded).
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

# tf.image.ssim's Gaussian window is 11 x 11; smaller images make it fail deep inside TensorFlow.
SSIM_WINDOW = 11
INCEPTION_SIZE = 299
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _pair(prediction, target):
    prediction = np.asarray(prediction)
    target = np.asarray(target)
    if prediction.shape != target.shape:
        raise ValueError(f"metric inputs differ in shape: {prediction.shape} vs {target.shape}")
    return prediction, target


def l1_error(prediction, target) -> float:
    """Mean absolute error on [0, 1] values."""
    prediction, target = _pair(prediction, target)
    return float(np.mean(np.abs(prediction.astype(np.float64) - target.astype(np.float64))) / 255.0)


def l2_error(prediction, target) -> float:
    """Mean squared error on [0, 1] values."""
    prediction, target = _pair(prediction, target)
    return float(np.mean(((prediction.astype(np.float64) - target.astype(np.float64)) / 255.0) ** 2))


def psnr(prediction, target) -> float:
    """PSNR in dB (``tf.image.psnr``, max value 255); identical images give +inf."""
    prediction, target = _pair(prediction, target)
    return float(tf.image.psnr(tf.constant(prediction, tf.float32), tf.constant(target, tf.float32), 255.0))


def ssim(prediction, target) -> float:
    """SSIM (``tf.image.ssim``: 11x11 Gaussian window, sigma 1.5, k1 0.01, k2 0.03, mean over channels)."""
    prediction, target = _pair(prediction, target)
    if min(target.shape[:2]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {target.shape[:2]}")
    return float(tf.image.ssim(tf.constant(prediction, tf.float32), tf.constant(target, tf.float32), 255.0))


def all_metrics(prediction, target) -> dict:
    return {"l1": l1_error(prediction, target), "l2": l2_error(prediction, target),
            "psnr": psnr(prediction, target), "ssim": ssim(prediction, target)}


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), with the matrix square root taken through the
    symmetric form S1^(1/2) S2 S1^(1/2) (same eigenvalues as S1 S2, and numerically stable)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    values, vectors = np.linalg.eigh(sigma1)
    root1 = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    inner = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    trace_sqrt = np.sum(np.sqrt(np.clip(inner, 0, None)))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def load_inception(weights_path: str):
    """InceptionV3 pool features (2048-d) with weights from a local HDF5 file (the Keras
    ``inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5``, or a ``.weights.h5`` saved by Keras).

    The file is checked before the network is built, so a wrong path fails at once with one line.
    """
    import keras

    weights_path = os.fspath(weights_path)
    if not os.path.isfile(weights_path):
        raise ValueError(f"InceptionV3 weights {weights_path}: no such file")
    with open(weights_path, "rb") as handle:
        if handle.read(len(_HDF5_SIGNATURE)) != _HDF5_SIGNATURE:
            raise ValueError(f"InceptionV3 weights {weights_path}: not an HDF5 (.h5) weights file")
    try:
        return keras.applications.InceptionV3(include_top=False, weights=weights_path, pooling="avg",
                                              input_shape=(INCEPTION_SIZE, INCEPTION_SIZE, 3))
    except (ValueError, OSError, KeyError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"InceptionV3 weights {weights_path}: not InceptionV3 'notop' weights "
                         f"({first_line})") from None


def inception_statistics(model, images, batch_size: int = 16) -> tuple:
    """Mean and covariance of the features ``model`` gives RGB ``uint8`` images resized (bilinear) to 299 x 299
    and scaled to [-1, 1], InceptionV3's input range."""
    features = []
    for start in range(0, len(images), batch_size):
        batch = tf.constant(np.stack(images[start:start + batch_size]), tf.float32)
        batch = tf.image.resize(batch, (INCEPTION_SIZE, INCEPTION_SIZE))
        features.append(np.asarray(model(batch / 127.5 - 1.0, training=False), np.float64))
    features = np.concatenate(features)
    if len(features) < 2:
        raise ValueError("FID needs at least two images")
    return features.mean(axis=0), np.cov(features, rowvar=False)
