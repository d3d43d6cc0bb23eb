"""Seeded random hole-mask generators (float32 [H, W], 1 = hole, 0 = known) for any height and width.

Every generator takes ``rng``: a ``np.random.Generator`` (consumed in place) or an int seed (a fresh
``np.random.default_rng(seed)``), so the same seed always gives the same mask.

- ``free_form``: DeepFill v2 brush strokes (docs/architectures.md §2.7) with the official bugs fixed.
- ``bbox``: DeepFill v1/v2 random box with margins and random shrink (docs/architectures.md §1.8).
- ``single_bbox``: one rectangle of a fixed size, centred or at a random position.
- ``irregular``: Partial Convolutions (PConv-Keras) random lines, circles and elliptical arcs
  (docs/architectures.md §3.5).
- ``mixed``: union of ``bbox`` and ``free_form``, the DeepFill v2 training mask.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import cv2
import numpy as np

MASK_TYPES = ("free_form", "bbox", "single_bbox", "irregular")
ALL_MASK_TYPES = MASK_TYPES + ("mixed",)

# Bin edges of the hole-area histogram: [0, 0.1), [0.1, 0.2), ..., [0.9, 1.0].
AREA_BIN_EDGES = tuple(round(0.1 * i, 1) for i in range(11))


def as_generator(rng) -> np.random.Generator:
    """Returns ``rng`` itself if it is a ``np.random.Generator``, else a fresh generator seeded with it."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        if rng < 0:
            raise ValueError(f"mask seed must be >= 0, got {rng}")
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy.random.Generator or an int seed, got {type(rng).__name__}")


def _check_size(height, width) -> tuple[int, int]:
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"mask {name} must be a positive integer, got {value!r}")
    return int(height), int(width)


def free_form_mask(
    height: int,
    width: int,
    rng,
    *,
    max_strokes: int = 3,
    min_num_vertex: int = 4,
    max_num_vertex: int = 12,
    mean_angle: float = 2 * math.pi / 5,
    angle_range: float = 2 * math.pi / 15,
    min_width: float = 12,
    max_width: float = 40,
    width_reference: int | None = 256,
    flip: bool = True,
) -> np.ndarray:
    """DeepFill v2 brush-stroke mask (official constants, docs/architectures.md §2.7).

    Per stroke: ``num_vertex ~ U_int[min_num_vertex, max_num_vertex)``; turning angles alternate between
    ``2π - U(a_min, a_max)`` and ``U(a_min, a_max)`` with ``a_min/max = mean_angle ∓ U(0, angle_range)``;
    segment lengths ``clip(N(R, ⌊R/2⌋), 0, 2R)`` with ``R = sqrt(H² + W²) / 8``; brush width
    ``int(U(min_width, max_width))``; a polyline plus a filled disc at every vertex.

    Differences from the official code, both bug fixes (docs/decisions.md):
    - the random left-right / top-bottom flips (50 % each) are applied; the official code discards them,
      which leaves every stroke drifting rightwards (cos of the mean turning angle is positive);
    - vertices are drawn in x ∈ [0, W), y ∈ [0, H); the official code swaps H and W there, which only
      matters for non-square images.

    ``width_reference``: the official widths (12..39 px) are meant for 256×256 training crops, while the
    segment length already scales with the image diagonal. To keep the stroke shape and hole-area
    distribution independent of the resolution, the widths are multiplied by ``min(H, W) / width_reference``
    (exactly the official widths at 256×256). ``width_reference=None`` keeps the fixed official pixel widths.
    """
    height, width = _check_size(height, width)
    rng = as_generator(rng)
    width_scale = 1.0 if width_reference is None else min(height, width) / width_reference
    average_radius = math.sqrt(height * height + width * width) / 8
    canvas = np.zeros((height, width), np.uint8)

    for _ in range(int(rng.integers(1, max_strokes + 1))):
        num_vertex = int(rng.integers(min_num_vertex, max_num_vertex))
        angle_min = mean_angle - rng.uniform(0, angle_range)
        angle_max = mean_angle + rng.uniform(0, angle_range)
        angles = rng.uniform(angle_min, angle_max, size=num_vertex)
        angles[0::2] = 2 * math.pi - angles[0::2]

        vertices = [(int(rng.integers(0, width)), int(rng.integers(0, height)))]
        for angle in angles:
            radius = np.clip(rng.normal(average_radius, average_radius // 2), 0, 2 * average_radius)
            x = np.clip(vertices[-1][0] + radius * math.cos(angle), 0, width)
            y = np.clip(vertices[-1][1] + radius * math.sin(angle), 0, height)
            vertices.append((int(x), int(y)))

        brush_width = max(1, int(rng.uniform(min_width, max_width) * width_scale))
        for start, end in zip(vertices[:-1], vertices[1:]):
            cv2.line(canvas, start, end, 1, thickness=brush_width)
        # Round joints between segments, as the official code's ellipse at every vertex.
        for vertex in vertices:
            cv2.circle(canvas, vertex, brush_width // 2, 1, thickness=-1)

    if flip:
        if rng.random() < 0.5:
            canvas = canvas[:, ::-1]
        if rng.random() < 0.5:
            canvas = canvas[::-1, :]
    return np.ascontiguousarray(canvas, dtype=np.float32)


def bbox_mask(
    height: int,
    width: int,
    rng,
    *,
    box: tuple[int, int] | None = None,
    margin: tuple[int, int] = (0, 0),
    max_delta: tuple[int, int] | None = None,
) -> np.ndarray:
    """DeepFill random box with random shrink (docs/architectures.md §1.8).

    ``box`` = (box_h, box_w), default (H//2, W//2) (128×128 at 256). ``margin`` = (vertical, horizontal).
    ``max_delta`` = (max_delta_h, max_delta_w), default box // 4 (32 at 256).
    ``top ~ U_int[margin_v, H - margin_v - box_h)`` (upper bound exclusive, as the official TF code), left
    likewise; ``δh ~ U_int[0, max_delta_h // 2]`` and ``δw`` likewise (inclusive); the hole is rows
    ``[top + δh, top + box_h - δh)`` × cols ``[left + δw, left + box_w - δw)``.
    """
    height, width = _check_size(height, width)
    rng = as_generator(rng)
    box_h, box_w = box if box is not None else (max(1, height // 2), max(1, width // 2))
    margin_v, margin_h = margin
    max_delta_h, max_delta_w = max_delta if max_delta is not None else (box_h // 4, box_w // 4)
    if box_h < 1 or box_w < 1 or box_h + 2 * margin_v > height or box_w + 2 * margin_h > width:
        raise ValueError(f"bbox {box_h}x{box_w} with margins {margin} does not fit a {height}x{width} mask")

    # When the box exactly fills the space between the margins the exclusive range is empty; the only
    # position is then the margin itself.
    top = int(rng.integers(margin_v, max(margin_v + 1, height - margin_v - box_h)))
    left = int(rng.integers(margin_h, max(margin_h + 1, width - margin_h - box_w)))
    delta_h = int(rng.integers(0, max_delta_h // 2 + 1))
    delta_w = int(rng.integers(0, max_delta_w // 2 + 1))

    mask = np.zeros((height, width), np.float32)
    mask[top + delta_h : top + box_h - delta_h, left + delta_w : left + box_w - delta_w] = 1.0
    return mask


def single_bbox_mask(
    height: int,
    width: int,
    rng,
    box: tuple[int, int] | None = None,
    random_position: bool = True,
) -> np.ndarray:
    """One rectangular hole of exactly ``box`` = (box_h, box_w) pixels (default H//2 × W//2).

    ``random_position``: top-left uniform over every position where the box fits; else centred.
    """
    height, width = _check_size(height, width)
    rng = as_generator(rng)
    box_h, box_w = box if box is not None else (max(1, height // 2), max(1, width // 2))
    if not (1 <= box_h <= height and 1 <= box_w <= width):
        raise ValueError(f"single_bbox {box_h}x{box_w} does not fit a {height}x{width} mask")
    if random_position:
        top = int(rng.integers(0, height - box_h + 1))
        left = int(rng.integers(0, width - box_w + 1))
    else:
        top, left = (height - box_h) // 2, (width - box_w) // 2
    mask = np.zeros((height, width), np.float32)
    mask[top : top + box_h, left : left + box_w] = 1.0
    return mask


def irregular_mask(height: int, width: int, rng) -> np.ndarray:
    """PConv-Keras ``MaskGenerator._generate_mask`` (docs/architectures.md §3.5): random lines, circles, elliptical
    arcs.

    All counts and sizes are inclusive integer ranges: 1..20 shapes of each kind, thickness and circle
    radius 3..size with ``size = int((H + W) * 0.03)``, ellipse axes up to (W, H), rotation and arc start /
    end angles 3..180 degrees. The source returns 1 = valid; this returns 1 = hole (the drawn pixels).
    """
    height, width = _check_size(height, width)
    rng = as_generator(rng)
    # The source assumes H, W >= 64 (size >= 3); clamp so that tiny masks still have a valid range.
    size = max(3, int((width + height) * 0.03))
    canvas = np.zeros((height, width), np.uint8)

    def randint(low, high):  # inclusive at both ends, as Python's random.randint in the source
        return int(rng.integers(low, high + 1))

    for _ in range(randint(1, 20)):
        x1, x2 = randint(1, width), randint(1, width)
        y1, y2 = randint(1, height), randint(1, height)
        cv2.line(canvas, (x1, y1), (x2, y2), 1, thickness=randint(3, size))
    for _ in range(randint(1, 20)):
        centre = (randint(1, width), randint(1, height))
        cv2.circle(canvas, centre, randint(3, size), 1, thickness=-1)
    for _ in range(randint(1, 20)):
        centre = (randint(1, width), randint(1, height))
        axes = (randint(1, width), randint(1, height))
        rotation, start_angle, end_angle = randint(3, 180), randint(3, 180), randint(3, 180)
        cv2.ellipse(canvas, centre, axes, rotation, start_angle, end_angle, 1, thickness=randint(3, size))
    return canvas.astype(np.float32)


def mixed_mask(height: int, width: int, rng) -> np.ndarray:
    """DeepFill v2 training mask: the union of ``bbox_mask`` and ``free_form_mask`` (docs/architectures.md §2.7)."""
    rng = as_generator(rng)
    return np.maximum(bbox_mask(height, width, rng), free_form_mask(height, width, rng))


_GENERATORS = {
    "free_form": free_form_mask,
    "bbox": bbox_mask,
    "single_bbox": single_bbox_mask,
    "irregular": irregular_mask,
    "mixed": mixed_mask,
}


def generate(mask_type: str, height: int, width: int, rng, **options) -> np.ndarray:
    """Dispatches to the generator named ``mask_type`` (one of ``ALL_MASK_TYPES``); returns float32 [H, W]."""
    if mask_type not in _GENERATORS:
        raise ValueError(f"unknown mask type {mask_type!r}; expected one of {', '.join(ALL_MASK_TYPES)}")
    return _GENERATORS[mask_type](height, width, rng, **options)


def indexed_mask(mask_type: str, height: int, width: int, seed: int, index: int, **options) -> np.ndarray:
    """Mask number ``index`` of the seeded mask set ``seed``, independent of how many masks are drawn.

    The generator is seeded with the pair (seed, index), so mask i of a set is the same whether the set
    holds 10 or 10,000 masks, and masks can be produced in any order or in parallel.
    """
    if seed < 0 or index < 0:
        raise ValueError(f"mask seed and index must be >= 0, got seed={seed}, index={index}")
    return generate(mask_type, height, width, np.random.default_rng((int(seed), int(index))), **options)


def area_stats(fractions: Iterable[float]) -> dict:
    """Summary of hole-area fractions: count, mean, std, min, max and a 10-bin histogram over [0, 1]."""
    values = np.asarray(list(fractions), np.float64)
    if values.size == 0:
        raise ValueError("hole-area statistics need at least one mask")
    counts, _ = np.histogram(values, bins=np.asarray(AREA_BIN_EDGES))
    return {
        "count": int(values.size),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        # One (low, high, count) triple per bin; the last bin includes 1.0.
        "histogram": [
            (AREA_BIN_EDGES[i], AREA_BIN_EDGES[i + 1], int(counts[i])) for i in range(len(AREA_BIN_EDGES) - 1)
        ],
    }


def hole_area_stats(masks) -> dict:
    """Hole-area statistics (see ``area_stats``) of an iterable of [H, W] masks or an [N, H, W] array."""
    return area_stats(float(np.mean(np.asarray(mask) > 0.5)) for mask in masks)
