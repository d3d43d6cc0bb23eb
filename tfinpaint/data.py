"""Training data: image lists, a cheap bad-file pre-scan and the tf.data pipeline.

A training batch is ``{"image": [B, H, W, 3] float32 RGB in [0, 1], "mask": [B, H, W, 1] float32, 1 = hole}``.

The training stream is a pure function of ``(seed, shard, element index)``: epoch ``e`` visits the files in a
permutation seeded by ``(seed, e)``, and element ``i`` gets its crop, flip and generated mask from seeds folded
with ``i``. A run resumed at element ``i`` (``start_index``) therefore sees exactly the data an uninterrupted
run would have seen, without checkpointing the pipeline.

Bad files never stop training: ``scan_images`` rejects empty, unreadable, non-image and truncated files up front
(header and trailer checks, a few bytes per file), with one warning per file and a count in the summary. A
file that passes this scan but fails to decode (corruption inside the data) is named in one warning the first
time it fails and left out for the rest of the run (``_DecodeWatch``); when no file is left, the stream ends
(the trainer reports it) instead of looping forever.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import threading
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from tfinpaint import imageio
from tfinpaint.settings import SettingError

IMAGE_EXTENSIONS = imageio.IMAGE_EXTENSIONS

# Colour photographs shipped inside the scikit-image and scikit-learn packages (no download needed).
# astronaut.png and chelsea.png are left out: their ICC profile makes libpng log a warning on every decode.
_SKIMAGE_PHOTOS = (
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "hubble_deep_field.jpg",
    "ihc.png",
)
_SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")

# Bad files named one by one in the log before the rest are only counted.
_MAX_NAMED_WARNINGS = 20

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def list_images(flist) -> list:
    """Image paths of a folder (recursive; jpg/jpeg/png/bmp/webp) or of a text file with one path per line.

    A missing source, or one without images, is a one-line ``ValueError`` naming it.
    """
    if flist is None or not str(flist).strip():
        raise ValueError("image list: no folder or file list given")
    return imageio.list_image_files(flist)


def sample_images() -> list:
    """The colour sample photos that scikit-image and scikit-learn install with themselves."""
    import skimage
    import sklearn

    folders = (
        (os.path.join(os.path.dirname(skimage.__file__), "data"), _SKIMAGE_PHOTOS),
        (os.path.join(os.path.dirname(sklearn.__file__), "datasets", "images"), _SKLEARN_PHOTOS),
    )
    paths = [os.path.join(folder, name) for folder, names in folders for name in names]
    paths = [path for path in paths if os.path.isfile(path)]
    if not paths:
        raise SettingError("no built-in sample photos found in the scikit-image / scikit-learn installation; "
                           "give <images> (a folder of photos)")
    return paths


def image_file_problem(path) -> str | None:
    """Why ``path`` cannot be a training image (empty, unreadable, not an image, truncated), or None.

    Reads only the first and last bytes of the file, so scanning a large dataset costs little.
    """
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            head = handle.read(32)
            handle.seek(max(0, size - 1024))
            tail = handle.read()
    except OSError as error:
        return f"cannot read file ({error.strerror or error})"
    if size == 0:
        return "empty file"
    if head.startswith(_PNG_SIGNATURE):
        if size < 33 or head[12:16] != b"IHDR":
            return "corrupt PNG (no IHDR header)"
        if b"IEND" not in tail[-64:]:
            return "truncated PNG (no IEND chunk)"
        return None
    if head.startswith(b"\xff\xd8\xff"):
        # Some cameras append data after the end-of-image marker, hence the 1 KB window.
        return None if b"\xff\xd9" in tail else "truncated JPEG (no end-of-image marker)"
    if head.startswith(b"BM") and len(head) >= 6:
        declared = int.from_bytes(head[2:6], "little")
        return f"truncated BMP ({size} of {declared} bytes)" if size < declared else None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        declared = int.from_bytes(head[4:8], "little") + 8
        return f"truncated WebP ({size} of {declared} bytes)" if size < declared else None
    return "not a JPEG, PNG, BMP or WebP image"


def _full_decode_problem(path) -> str | None:
    problem = image_file_problem(path)
    if problem:
        return problem
    try:
        # imageio's check walks every PNG chunk CRC; the TF decode is the one the pipeline will run.
        decode_image(tf.constant(imageio.read_bytes_checked(path)))
    except imageio.ImageReadError as error:
        return str(error).split(": ", 1)[-1]
    except (tf.errors.OpError, ValueError) as error:
        message = getattr(error, "message", str(error)).strip().splitlines()
        return f"cannot decode ({message[0] if message else type(error).__name__})"
    return None


@dataclasses.dataclass
class ScanReport:
    """Outcome of ``scan_images``: the usable files and the skipped ones with their reasons."""

    good: list
    skipped: list  # (path, reason) pairs
    what: str = "images"

    def summary(self) -> str:
        text = f"{len(self.good)} {self.what}"
        if self.skipped:
            text += f", {len(self.skipped)} skipped (unreadable, corrupt or truncated)"
        return text


def scan_images(paths: Sequence, full: bool = False, what: str = "images") -> ScanReport:
    """Splits ``paths`` into usable and bad files, logging one warning per bad file.

    full: also decode every file (thorough, but costs a full decode per file); by default only the header and
        trailer checks of ``image_file_problem`` run. Raises a one-line ``ValueError`` if no file is usable.
    """
    paths = [os.fspath(path) for path in paths]
    check = _full_decode_problem if full else image_file_problem
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        problems = list(pool.map(check, paths))
    good = [path for path, problem in zip(paths, problems) if problem is None]
    skipped = [(path, problem) for path, problem in zip(paths, problems) if problem is not None]
    for path, problem in skipped[:_MAX_NAMED_WARNINGS]:
        logging.warning("skipping %s: %s", path, problem)
    if len(skipped) > _MAX_NAMED_WARNINGS:
        logging.warning("skipping %d more bad %s", len(skipped) - _MAX_NAMED_WARNINGS, what)
    if not good:
        first = skipped[0][0] if skipped else "the list"
        raise ValueError(f"no usable {what}: all {len(paths)} files are bad (first: {first})")
    return ScanReport(good=good, skipped=skipped, what=what)


def decode_image(contents) -> tf.Tensor:
    """Decodes JPEG/PNG/BMP/WebP bytes to float32 RGB [H, W, 3] in [0, 1].

    Grayscale is replicated to three channels, alpha is dropped, 16-bit PNGs keep their full precision.
    """
    is_png = tf.equal(tf.strings.substr(contents, 0, 8), _PNG_SIGNATURE)

    def png():
        # uint16 decoding scales 8-bit PNGs by 257, so one path serves both bit depths.
        return tf.image.convert_image_dtype(tf.io.decode_png(contents, channels=3, dtype=tf.uint16), tf.float32)

    def other():
        # channels=0: WebP with alpha refuses a requested channel count, so channels are fixed up afterwards.
        image = tf.io.decode_image(contents, channels=0, dtype=tf.uint8, expand_animations=False)
        image = tf.cond(tf.shape(image)[-1] < 3, lambda: tf.repeat(image[..., :1], 3, axis=-1),
                        lambda: image[..., :3])
        return tf.image.convert_image_dtype(image, tf.float32)

    image = tf.cond(is_png, png, other)
    image.set_shape([None, None, 3])
    return image


def _as_size(image_size) -> tuple:
    if isinstance(image_size, (int, np.integer)):
        height = width = int(image_size)
    else:
        height, width = (int(side) for side in image_size)
    if height < 1 or width < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    return height, width


def _cover(image, height: int, width: int):
    """Upscales ``image`` (keeping its aspect ratio) just enough to cover ``height`` x ``width``."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.maximum(1.0, tf.reduce_max(tf.constant([height, width], tf.float32) / shape))
    new_shape = tf.cast(tf.math.ceil(shape * scale), tf.int32)
    return tf.cond(
        scale > 1.0,
        lambda: tf.clip_by_value(tf.image.resize(image, new_shape, method="bilinear", antialias=True), 0.0, 1.0),
        lambda: image,
    )


def _seed(seed: int, shard: int, salt: int, index):
    """A stateless-op seed for element ``index`` of stream ``salt`` in shard ``shard``."""
    base = tf.constant([seed, shard * 16 + salt], tf.int64)
    return tf.random.experimental.stateless_fold_in(base, tf.cast(index, tf.int64))


def _path_stream(items: list, seed: int, shard: int, salt: int, training: bool, start_index: int):
    """Training: an endless stream visiting ``items`` in a fresh seeded permutation every epoch, starting at
    element ``start_index``. Otherwise: ``items`` once, in order."""
    table = tf.constant(items)
    if not training:
        return tf.data.Dataset.from_tensor_slices(table)
    count = len(items)

    def epoch(index):
        order = tf.argsort(tf.random.stateless_uniform([count], seed=_seed(seed, shard, salt, index)))
        return tf.data.Dataset.from_tensor_slices(tf.gather(table, order))

    stream = tf.data.Dataset.range(start_index // count, np.iinfo(np.int64).max).flat_map(epoch)
    return stream.skip(start_index % count)


class _DecodeWatch:
    """Training files that failed to decode in this pipeline: each is named once and then skipped.

    ``admit`` runs before an element is decoded: 1 = decode it, 0 = skip it (a known bad file), -1 = end the
    stream (no image file, or no mask file, is left). ``failed`` runs for an element whose decode failed.
    """

    def __init__(self, paths: list, mask_paths: list | None):
        self.images, self.masks = set(paths), set(mask_paths or ())
        self.bad_images, self.bad_masks = set(), set()
        self.lock = threading.Lock()
        self.ended = False

    def _exhausted(self) -> bool:
        return len(self.bad_images) >= len(self.images) or bool(self.masks) and len(self.bad_masks) >= len(self.masks)

    def admit(self, path, mask_path=b"") -> np.int64:
        with self.lock:
            if self._exhausted():
                if not self.ended:
                    self.ended = True
                    what = "image" if len(self.bad_images) >= len(self.images) else "mask"
                    logging.error("no %s file left that decodes: all %d failed", what,
                                  len(self.images) if what == "image" else len(self.masks))
                return np.int64(-1)
            bad = path.decode("utf-8") in self.bad_images or mask_path.decode("utf-8") in self.bad_masks
            return np.int64(0 if bad else 1)

    def mask_failed(self, mask_path: str, reason: str) -> None:
        with self.lock:
            if mask_path not in self.bad_masks:
                self.bad_masks.add(mask_path)
                logging.warning("dropping mask %s: %s; it is left out for the rest of the run", mask_path, reason)

    def failed(self, path, mask_path=b"") -> np.int64:
        path, mask_path = path.decode("utf-8"), mask_path.decode("utf-8")
        with self.lock:
            if mask_path in self.bad_masks or path in self.bad_images:
                return np.int64(0)  # the mask was at fault (named when it failed), or already named
            self.bad_images.add(path)
        logging.warning("dropping %s: it passed the quick scan but cannot be decoded (corrupt image data); it is "
                        "left out for the rest of the run", path)
        return np.int64(0)


def make_dataset(
    paths: Sequence,
    image_size,
    batch_size: int,
    mask_type: str = "free_form",
    mask_paths: Sequence | None = None,
    seed: int = 0,
    training: bool = True,
    drop_remainder: bool = True,
    mask_polarity: str = "hole",
    shard: tuple = (1, 0),
    start_index: int = 0,
    validate: bool = True,
    prefetch: bool = True,
) -> tf.data.Dataset:
    """Batches of ``{"image", "mask"}`` for training (endless, shuffled, augmented) or evaluation (one pass).

    paths: image files; mask_paths: mask files (white = hole, or white = known with ``mask_polarity="valid"``);
        without them masks are generated with ``tfinpaint.masks.generate(mask_type, ...)``.
    image_size: crop side, or (height, width). Images smaller than the crop are first upscaled (aspect kept);
        training crops are random with a random horizontal flip, evaluation crops are centred.
    shard: (number of input pipelines, this pipeline's index): each pipeline reads its own slice of the files
        and draws its own random stream (multi-worker training).
    start_index: elements this pipeline already produced in an earlier run (resume).
    validate: pre-scan the files (``scan_images``) and drop bad ones with a warning.
    """
    from tfinpaint import masks as mask_lib

    height, width = _as_size(image_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    num_shards, shard_index = (int(value) for value in shard)
    paths = [os.fspath(path) for path in paths]
    if not paths:
        raise ValueError("make_dataset: the image list is empty")
    if validate:
        paths = scan_images(paths).good
    if num_shards > 1 and len(paths) >= num_shards:
        paths = paths[shard_index::num_shards]
    if mask_paths is not None:
        mask_paths = [os.fspath(path) for path in mask_paths]
        if not mask_paths:
            raise ValueError("make_dataset: the mask list is empty")
        if validate:
            mask_paths = scan_images(mask_paths, what="masks").good
    elif mask_type not in mask_lib.ALL_MASK_TYPES:
        raise ValueError(f"unknown mask type {mask_type!r}; expected one of {', '.join(mask_lib.ALL_MASK_TYPES)}")

    def generated_mask(index):
        rng = np.random.default_rng((seed, shard_index, int(index)))
        return mask_lib.generate(mask_type, height, width, rng).astype(np.float32)

    watch = _DecodeWatch(paths, mask_paths)

    def file_mask(path):
        import cv2

        try:
            mask = mask_lib.read_mask(path.decode("utf-8"), polarity=mask_polarity)
        except Exception as error:
            watch.mask_failed(path.decode("utf-8"), str(error).split(": ", 1)[-1])
            raise
        if mask.shape != (height, width):
            # Mask sets are usually drawn at one fixed size; training at another size rescales them silently.
            mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
        return mask.astype(np.float32)

    def load(index, path, mask_path=None):
        image = _cover(decode_image(tf.io.read_file(path)), height, width)
        if training:
            image = tf.image.stateless_random_crop(image, [height, width, 3], seed=_seed(seed, shard_index, 2, index))
            image = tf.image.stateless_random_flip_left_right(image, seed=_seed(seed, shard_index, 3, index))
        else:
            top = (tf.shape(image)[0] - height) // 2
            left = (tf.shape(image)[1] - width) // 2
            image = image[top:top + height, left:left + width]
        if mask_path is None:
            mask = tf.numpy_function(generated_mask, [index], tf.float32, stateful=False)
        else:
            mask = tf.numpy_function(file_mask, [mask_path], tf.float32, stateful=False)
            if training:
                mask = tf.image.stateless_random_flip_left_right(mask[..., None], seed=_seed(seed, shard_index, 4,
                                                                                             index))[..., 0]
        image = tf.ensure_shape(image, [height, width, 3])
        mask = tf.ensure_shape(tf.cast(mask > 0.5, tf.float32), [height, width])[..., None]
        return {"image": image, "mask": mask}

    indices = tf.data.Dataset.counter(start_index) if training else tf.data.Dataset.range(len(paths))
    parts = [indices, _path_stream(paths, seed, shard_index, 0, training, start_index)]
    if mask_paths is not None:
        if training:
            parts.append(_path_stream(mask_paths, seed, shard_index, 1, training, start_index))
        else:
            parts.append(tf.data.Dataset.from_tensor_slices(tf.constant(mask_paths)).repeat())
    dataset = tf.data.Dataset.zip(tuple(parts))

    def admit(*element):
        return tf.numpy_function(watch.admit, list(element[1:]), tf.int64, stateful=True)

    def failure(*element):
        flag = tf.numpy_function(watch.failed, list(element[1:]), tf.int64, stateful=True)
        return {"image": tf.zeros([height, width, 3]), "mask": tf.zeros([height, width, 1]),
                "ok": tf.equal(flag, 1)}

    def load_flagged(*element):
        return dict(load(*element), ok=tf.constant(True))

    def decode_or_flag(*element):
        # Exactly one element per file, in order: the decoded one, or (when decoding raised) a flagged
        # placeholder that names the file once. tf.data has no try/except; ignore_errors on a one-element
        # dataset followed by the placeholder is its equivalent.
        loaded = tf.data.Dataset.from_tensors(element).map(load_flagged)
        return loaded.ignore_errors().concatenate(
            tf.data.Dataset.from_tensors(element).map(failure)).take(1)

    def with_status(*element):
        return element, admit(*element)

    def not_ended(element, status):
        return status >= 0

    def to_decode(element, status):
        return status > 0

    def without_status(element, status):
        return element

    def decoded(element):
        return element["ok"]

    def batch_keys(element):
        return {"image": element["image"], "mask": element["mask"]}

    # Second line of defence behind scan_images: a file corrupt inside its data is named once and dropped.
    dataset = dataset.map(with_status).take_while(not_ended).filter(to_decode).map(without_status)
    dataset = dataset.interleave(decode_or_flag, cycle_length=tf.data.AUTOTUNE, block_length=1,
                                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.filter(decoded).map(batch_keys)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE) if prefetch else dataset
