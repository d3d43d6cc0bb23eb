"""Evaluation metrics against hand-computed values."""
import numpy as np
import pytest
import scipy.linalg

from tfinpaint.evaluation import metrics


def test_l1_l2_psnr_hand_computed():
    target = np.zeros((4, 4, 3), np.uint8)
    prediction = np.full((4, 4, 3), 10, np.uint8)
    assert metrics.l1_error(prediction, target) == pytest.approx(10 / 255)
    assert metrics.l2_error(prediction, target) == pytest.approx((10 / 255) ** 2)
    # MSE 100 on the 0..255 scale: 10 log10(255^2 / 100)
    assert metrics.psnr(prediction, target) == pytest.approx(10 * np.log10(255.0 ** 2 / 100.0), abs=1e-3)


def test_l1_counts_every_pixel_once():
    target = np.zeros((2, 2, 3), np.uint8)
    prediction = target.copy()
    prediction[0, 0, 0] = 255  # one of 12 values off by the full range
    assert metrics.l1_error(prediction, target) == pytest.approx(1 / 12)
    assert metrics.l2_error(prediction, target) == pytest.approx(1 / 12)


def test_ssim_constant_images_hand_computed():
    a, b = 100.0, 120.0
    target = np.full((16, 16, 3), a, np.uint8)
    prediction = np.full((16, 16, 3), b, np.uint8)
    c1 = (0.01 * 255) ** 2
    # Constant images: zero variances, so only the luminance term remains.
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert metrics.ssim(prediction, target) == pytest.approx(expected, abs=1e-4)
    assert metrics.ssim(target, target) == pytest.approx(1.0, abs=1e-6)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        metrics.l1_error(np.zeros((2, 2, 3)), np.zeros((2, 3, 3)))


def test_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 6))
    b = rng.normal(loc=0.3, size=(50, 6)) @ rng.normal(size=(6, 6)) * 0.5
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(scipy.linalg.sqrtm(s1 @ s2)))
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-6)
    assert metrics.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)


def test_psnr_of_identical_images_is_infinite_and_ssim_needs_the_window():
    image = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    assert metrics.psnr(image, image) == float("inf")
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim(image[:10, :10], image[:10, :10])
