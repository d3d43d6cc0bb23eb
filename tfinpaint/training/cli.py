"""``python train.py`` / ``tfinpaint train``: train an inpainting model, or write a mask dataset.

    python train.py --max_steps 50 --cnum 16                  # DeepFill v2 on the built-in sample photos
    python train.py --model glcic --__flist__ photos/ --__mask_type__ bbox
    python train.py --__lambda_l1__ 1.0 --__lambda_gan__ 0.1  # override the recipe's loss weights
    python train.py --__gen_masks__ true --__mask_type__ bbox # mask dataset (see ``tfinpaint masks``)

Flag spellings follow the original scripts (``--__flist__``, ``--__lambda_l1__ 1.0`` with a space). Training
resumes automatically from the newest checkpoint in ``--ckpt_dir``.
"""
from __future__ import annotations

import ast
import inspect
import os
import sys

from absl import flags, logging

from tfinpaint import flags_util
from tfinpaint.masks import cli as mask_cli

FLAGS = flags.FLAGS
DEFAULT_MODEL = "deepfill_v2"
# Without a GPU, the paper batch sizes and crops would make a first run take hours; these keep a CPU run short.
CPU_BATCH_SIZE = 4
CPU_IMAGE_SIZE = 128


def define_flags(flag_values=FLAGS) -> None:
    mask_cli.define_flags(flag_values)
    define = flags_util.define
    define("string", "__flist__", None, "Training images: a folder (recursive; jpg/jpeg/png/bmp/webp) or a text "
           "file of paths. Default: the sample photos installed with scikit-image and scikit-learn.",
           flag_values, aliases=["flist"])
    define("string", "__mlist__", None, "Mask files (folder or text file; white = hole). Default: masks generated "
           "on the fly with --__mask_type__.", flag_values, aliases=["mlist"])
    define("string", "val_flist", None, "Validation images (folder or text file), scored every --val_every steps.",
           flag_values)
    define("enum", "mask_polarity", "hole", "hole: white = hole (DeepFill); valid: white = known (NVIDIA, HiFill).",
           flag_values, enum_values=["hole", "valid"])
    define("float", "__lambda_l1__", None, "Override the recipe's 'l1' loss weight.", flag_values)
    define("float", "__lambda_perceptual__", None, "Override the recipe's 'perceptual' loss weight.", flag_values)
    define("float", "__lambda_gan__", None, "Override the recipe's 'gan' loss weight.", flag_values)
    define("string", "model", DEFAULT_MODEL, "Model: cra, deepfill_v1, deepfill_v2, glcic, pconv, or "
           "'package.module:SPEC' (a tfinpaint.models.ModelSpec) for a custom model.", flag_values)
    define("integer", "cnum", None, "Generator base width (default: the paper's).", flag_values)
    define("integer", "dnum", None, "Discriminator base width (default: the paper's).", flag_values)
    define("string", "model_options", None, "More build options, e.g. 'levels=4,bgr=False'.", flag_values)
    define("integer", "batch_size", None, f"Global batch size (default: the paper's on GPU, {CPU_BATCH_SIZE} on "
           "CPU).", flag_values)
    define("integer", "img_size", None, f"Training crop side (default: the model's on GPU, {CPU_IMAGE_SIZE} "
           "on CPU, rounded to the model's size multiple).", flag_values)
    define("integer", "max_steps", 1000, "Total training steps (generator iterations) over all phases.", flag_values)
    define("float", "lr", None, "Base learning rate (default: the recipe's; per-phase rates scale with it).",
           flag_values)
    define("string", "logdir", None, "TensorBoard logs and PNG previews (default: <ckpt_dir>/logs).", flag_values)
    define("string", "ckpt_dir", None, "Checkpoint folder (default: checkpoints/<model>); training resumes from "
           "the newest checkpoint in it.", flag_values)
    define("integer", "seed", 0, "Seed of the weights, the data order, crops and generated masks.", flag_values)
    define("integer", "save_every", 500, "Checkpoint every N steps (also at the end and on Ctrl-C/SIGTERM).",
           flag_values)
    define("integer", "keep_checkpoints", 3, "Checkpoints kept.", flag_values)
    define("integer", "log_every", 10, "TensorBoard scalars / progress lines every N steps.", flag_values)
    define("integer", "preview_every", 100, "PNG preview grid every N steps.", flag_values)
    define("integer", "val_every", 500, "Validation every N steps (with --val_flist).", flag_values)
    define("boolean", "mixed_precision", False, "mixed_float16 with loss scaling on GPU, mixed_bfloat16 on CPU.",
           flag_values)
    define("string", "vgg_weights", None, "Local VGG16 'notop' weights file for PConv's perceptual/style losses.",
           flag_values)
    define("enum", "check_images", "quick", "Bad-file scan before training: quick (headers and end markers) or "
           "full (decode every file).", flag_values, enum_values=["quick", "full"])


define_flags()


def _value(name):
    return FLAGS[name].value


def parse_model_options(text) -> dict:
    """'levels=4,bgr=False' -> {"levels": 4, "bgr": False}; values are Python literals or plain strings."""
    options = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, separator, raw = item.partition("=")
        if not separator or not key.strip():
            raise ValueError(f"--model_options: expected key=value, got {item!r}")
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            value = raw.strip()
        options[key.strip()] = value
    return options


def _build_function(model: str):
    """(build function, the model's ``ModelSpec`` or None for a custom build function) of a model name or a
    'module:attribute' path."""
    from tfinpaint.training.trainer import resolve_model

    build = resolve_model(model)[1]
    return build, getattr(build, "spec", None)


def _resolve_sizes(build, spec, options: dict) -> tuple:
    """(batch size, image size) from the flags, None meaning the recipe's; CPU-friendly defaults without a GPU."""
    import tensorflow as tf

    batch_size, image_size = _value("batch_size"), _value("img_size")
    if tf.config.list_logical_devices("GPU"):
        return batch_size, image_size
    if batch_size is None:
        batch_size = CPU_BATCH_SIZE
    if image_size is None and spec is not None:
        config = spec.make_config(**options)
        factor = int(config.size_factor)
        model_size = int(getattr(config, "image_size", CPU_IMAGE_SIZE))
        image_size = max(factor, min(model_size, CPU_IMAGE_SIZE) // factor * factor)
    print(f"no GPU found: batch size {batch_size}, {image_size or 'default'} crops "
          "(set --batch_size / --img_size to change)")
    return batch_size, image_size


def main(argv) -> None:
    if len(argv) > 1:
        print(f"{argv[0]}: error: unexpected arguments: {' '.join(argv[1:])}", file=sys.stderr)
        sys.exit(2)
    if mask_cli.gen_masks_requested(FLAGS):
        try:
            mask_cli.run_from_flags(FLAGS)
        except (OSError, ValueError) as error:
            print(f"{argv[0]}: error: {error}", file=sys.stderr)
            sys.exit(1)
        return
    try:
        _train()
    except (ValueError, OSError) as error:  # bad flags, files or folders: one line, no traceback
        print(f"{argv[0]}: error: {error}", file=sys.stderr)
        sys.exit(1)


def _train() -> None:
    # The strategy comes first: MultiWorkerMirroredStrategy must exist before TensorFlow runs anything.
    from tfinpaint.training.trainer import NonFiniteLossError, TrainConfig, Trainer, default_strategy

    import tensorflow as tf

    # TensorFlow's INFO lines (some through absl logging) would drown the progress output.
    tf.get_logger().setLevel("WARNING")
    logging.set_verbosity(logging.WARNING)
    strategy = default_strategy()
    from functools import partial

    from tfinpaint import data

    model = _value("model") or DEFAULT_MODEL
    build, spec = _build_function(model)
    parameters = spec.config_class.option_names() if spec is not None else inspect.signature(build).parameters
    options = parse_model_options(_value("model_options"))
    for name in ("cnum", "dnum", "vgg_weights"):
        if _value(name) is not None:
            if name not in parameters:
                print(f"warning: model {model} has no option {name!r}; --{name} ignored", file=sys.stderr)
                continue
            options[name] = _value(name)
    batch_size, image_size = _resolve_sizes(build, spec, options)

    flist = _value("__flist__")
    paths = data.list_images(flist) if flist else data.sample_images()
    report = data.scan_images(paths, full=_value("check_images") == "full")
    source = flist or "built-in sample photos"
    mask_paths = None
    if _value("__mlist__"):
        mask_report = data.scan_images(data.list_images(_value("__mlist__")), what="masks")
        mask_paths = mask_report.good
        print(f"masks: {mask_report.summary()} from {_value('__mlist__')}")
    print(f"data: {report.summary()} from {source}")

    ckpt_dir = _value("ckpt_dir") or os.path.join("checkpoints", model.replace(":", "_").replace(".", "_"))
    config = TrainConfig(
        batch_size=batch_size,
        image_size=image_size,
        max_steps=_value("max_steps"),
        learning_rate=_value("lr"),
        loss_weights={"l1": _value("__lambda_l1__"), "perceptual": _value("__lambda_perceptual__"),
                      "gan": _value("__lambda_gan__")},
        ckpt_dir=ckpt_dir,
        logdir=_value("logdir"),
        seed=_value("seed"),
        save_every=_value("save_every"),
        keep_checkpoints=_value("keep_checkpoints"),
        log_every=_value("log_every"),
        preview_every=_value("preview_every"),
        val_every=_value("val_every"),
        mixed_precision=bool(_value("mixed_precision")),
    )
    config.loss_weights = {key: value for key, value in config.loss_weights.items() if value is not None}
    trainer = Trainer(model, options, config, strategy=strategy)
    size = trainer.image_size
    make = partial(data.make_dataset, report.good, size, mask_type=_value("__mask_type__"), mask_paths=mask_paths,
                   mask_polarity=_value("mask_polarity"), seed=_value("seed"), validate=False)
    val_data = None
    if _value("val_flist"):
        val_report = data.scan_images(data.list_images(_value("val_flist")), what="validation images")
        print(f"validation: {val_report.summary()} from {_value('val_flist')}")
        val_data = data.make_dataset(val_report.good, size, trainer.config.batch_size,
                                     mask_type=_value("__mask_type__"), seed=_value("seed"), training=False,
                                     drop_remainder=False, validate=False)
    print(f"model {model} {options}: {trainer.num_replicas} replica(s), batch {trainer.config.batch_size}, "
          f"{size[0]}x{size[1]}, phases {', '.join(f'{p.name} ({n})' for p, n in zip(trainer.recipe.phases, trainer.lengths))}")
    if trainer.restored_from:
        print(f"resumed from {trainer.restored_from} at step {int(trainer.step.numpy())}")
    print(f"checkpoints: {trainer.ckpt_dir}\nlogs and previews: {trainer.logdir} "
          f"(tensorboard --logdir {trainer.logdir})")
    try:
        result = trainer.fit(make, val_data=val_data)
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    stopped = f" (stopped by {result['stopped_by']})" if result["stopped_by"] else ""
    print(f"done at step {result['step']}{stopped}; checkpoint {result['checkpoint']}")
