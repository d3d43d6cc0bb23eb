"""Hole-mask generators and mask-file reading. Convention everywhere: float32, 1 = hole, 0 = known."""
from tfinpaint.masks.generators import (
    ALL_MASK_TYPES,
    MASK_TYPES,
    area_stats,
    as_generator,
    bbox_mask,
    free_form_mask,
    generate,
    hole_area_stats,
    indexed_mask,
    irregular_mask,
    mixed_mask,
    single_bbox_mask,
)
from tfinpaint.masks.io import POLARITIES, MaskReadError, read_mask, write_mask

__all__ = [
    "ALL_MASK_TYPES",
    "MASK_TYPES",
    "POLARITIES",
    "MaskReadError",
    "area_stats",
    "as_generator",
    "bbox_mask",
    "free_form_mask",
    "generate",
    "hole_area_stats",
    "indexed_mask",
    "irregular_mask",
    "mixed_mask",
    "read_mask",
    "single_bbox_mask",
    "write_mask",
]
