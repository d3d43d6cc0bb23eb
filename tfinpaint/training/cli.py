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
import math
import os
import sys
import time

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
    define("float", "__lambda_style__", None, "Override the recipe's 'style' loss weight (PConv; with "
           "--__lambda_perceptual__ 0 and --lambda_style 0 PConv trains without VGG16 weights).", flag_values,
           aliases=["lambda_style"])
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
    define("string", "init_from", None, "Start a new run from the generator and discriminators of this checkpoint "
           "folder (e.g. converted official weights): fresh optimizers, step 0. Ignored when --ckpt_dir already "
           "holds checkpoints (the run resumes).", flag_values)
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
    _say(f"no GPU found: batch size {batch_size}, {image_size or 'default'} crops "
         "(set --batch_size / --img_size to change)")
    return batch_size, image_size


class ConsoleProgress:
    """The trainer's reports on the terminal: a ``keras.utils.Progbar`` on a TTY, a plain line every ``every``
    steps otherwise (logs, pipes). A failing write (a pipe whose reader is gone, e.g. a killed ``tee``) switches
    the output off and never stops training."""

    def __init__(self, every: int, stream=None):
        self.every = max(1, every)
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.broken = False
        self.bar = None
        self.start = self.total = 0

    def _write(self, text: str, stream=None) -> None:
        stream = stream or self.stream
        if self.broken and stream is self.stream:
            return
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):  # BrokenPipeError, EIO of a closed terminal, a closed file
            if stream is self.stream:
                self.broken = True
                _silence(stream)

    def on_train_begin(self, start_step, total_steps):
        self.start, self.total = start_step, total_steps

    def on_phase_begin(self, index, phase, begin, end, weights):
        if self.bar is not None:
            self._write("\n")
        self._write(f"phase {index + 1}: {phase.name!r}: steps {begin + 1}-{end}, loss weights "
                    f"{', '.join(f'{k}={v:g}' for k, v in weights.items())}\n")
        self.bar = None  # a new bar per phase, created with the phase's loss names

    def on_step_end(self, step, logs, steps_per_sec):
        if self.broken:
            return
        if self.tty:
            try:
                if self.bar is None:
                    import keras

                    # Stateful: the bar shows each step's losses rather than running means.
                    self.bar = keras.utils.Progbar(self.total - self.start, unit_name="step",
                                                   stateful_metrics=list(logs))
                # Counted from this session's first step: Progbar's ETA assumes it started at zero.
                self.bar.update(step - self.start, values=list(logs.items()))
            except (OSError, ValueError):
                self.broken = True
                _silence(self.stream)
            return
        if step % self.every == 0 or step == self.total:
            losses = " ".join(f"{key} {value:.4g}" for key, value in logs.items())
            eta = (self.total - step) / steps_per_sec if steps_per_sec > 0 else float("nan")
            eta_text = "--" if math.isnan(eta) else time.strftime("%H:%M:%S", time.gmtime(eta))
            self._write(f"step {step}/{self.total} | {losses} | {steps_per_sec:.2f} steps/s | ETA {eta_text}\n")

    def on_checkpoint_saved(self, step, path):
        pass

    def on_stop_requested(self, signal_name):
        self._write(f"\n{signal_name}: stopping after this step and saving a checkpoint\n", sys.stderr)

    def on_train_end(self, result):
        if self.bar is not None:
            self._write("\n")


def _silence(stream) -> None:
    """Points a dead output stream at /dev/null, so that later writes (and the flush at exit) succeed."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _say(text: str, stream=None) -> None:
    """print() that survives a closed stdout (the progress output may have found it gone)."""
    stream = stream or sys.stdout
    try:
        print(text, file=stream, flush=True)
    except (OSError, ValueError):
        _silence(stream)


_OPTION_FLAGS = {"model": "--model", "cnum": "--cnum", "dnum": "--dnum", "image_size": "--img_size"}


def _mismatch_hint(error) -> str:
    """How to fix a checkpoint folder of another model, in flags."""
    resume = []
    for key, (stored, _) in error.differences.items():
        flag = _OPTION_FLAGS.get(key)
        if stored is None:
            resume.append(f"without {flag or f'{key} in --model_options'}")
        elif flag:
            resume.append(f"{flag} {stored}")
        else:
            resume.append(f"--model_options {key}={stored!r}")
    return (f"{error}. For a new run pass another folder (--ckpt_dir checkpoints/NEW_NAME); to resume this one "
            f"use {', '.join(resume)}")


def _signal_exit_code(name: str) -> int:
    import signal

    return 128 + int(getattr(signal, name.split()[0], signal.SIGTERM))


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
    from tfinpaint.training.checkpointing import CheckpointSaveError, ModelMismatchError
    from tfinpaint.training.trainer import NonFiniteLossError

    try:
        code = _train()
    except ModelMismatchError as error:
        _say(f"{argv[0]}: error: {_mismatch_hint(error)}", sys.stderr)
        sys.exit(1)
    except (ValueError, OSError, CheckpointSaveError, NonFiniteLossError) as error:
        # bad flags, files, folders or checkpoints, a failed save: one line, no traceback
        _say(f"{argv[0]}: error: {error}", sys.stderr)
        sys.exit(1)
    if code:
        sys.exit(code)


def _tensorboard_hint(logdir: str) -> str:
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        return f"pip install tensorboard, then: tensorboard --logdir {logdir}"
    return f"tensorboard --logdir {logdir}"


def _train() -> int:
    """Trains from the flags; returns the exit code (non-zero when stopped by a signal)."""
    # The strategy comes first: MultiWorkerMirroredStrategy must exist before TensorFlow runs anything.
    import tensorflow as tf

    from tfinpaint.training.trainer import TrainConfig, Trainer, default_strategy

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
                _say(f"warning: model {model} has no option {name!r}; --{name} ignored", sys.stderr)
                continue
            options[name] = _value(name)
    loss_weights = {"l1": _value("__lambda_l1__"), "perceptual": _value("__lambda_perceptual__"),
                    "gan": _value("__lambda_gan__"), "style": _value("__lambda_style__")}
    loss_weights = {key: value for key, value in loss_weights.items() if value is not None}
    for key, value in loss_weights.items():
        if value < 0:  # checked before the data scan and the build: a typo should fail at once
            raise ValueError(f"--__lambda_{key}__ {value:g}: loss weights must be >= 0 (a negative weight "
                             "makes training increase that loss)")
    batch_size, image_size = _resolve_sizes(build, spec, options)

    flist = _value("__flist__")
    paths = data.list_images(flist) if flist else data.sample_images()
    report = data.scan_images(paths, full=_value("check_images") == "full")
    source = flist or "built-in sample photos"
    mask_paths = None
    if _value("__mlist__"):
        mask_report = data.scan_images(data.list_images(_value("__mlist__")), what="masks")
        mask_paths = mask_report.good
        _say(f"masks: {mask_report.summary()} from {_value('__mlist__')}")
    _say(f"data: {report.summary()} from {source}")

    ckpt_dir = _value("ckpt_dir") or os.path.join("checkpoints", model.replace(":", "_").replace(".", "_"))
    config = TrainConfig(
        batch_size=batch_size,
        image_size=image_size,
        max_steps=_value("max_steps"),
        learning_rate=_value("lr"),
        loss_weights=loss_weights,
        ckpt_dir=ckpt_dir,
        logdir=_value("logdir"),
        seed=_value("seed"),
        save_every=_value("save_every"),
        keep_checkpoints=_value("keep_checkpoints"),
        log_every=_value("log_every"),
        preview_every=_value("preview_every"),
        val_every=_value("val_every"),
        mixed_precision=bool(_value("mixed_precision")),
        init_from=_value("init_from"),
    )
    trainer = Trainer(model, options, config, strategy=strategy)
    size = trainer.image_size
    make = partial(data.make_dataset, report.good, size, mask_type=_value("__mask_type__"), mask_paths=mask_paths,
                   mask_polarity=_value("mask_polarity"), seed=_value("seed"), validate=False)
    val_data = None
    if _value("val_flist"):
        val_report = data.scan_images(data.list_images(_value("val_flist")), what="validation images")
        _say(f"validation: {val_report.summary()} from {_value('val_flist')}")
        val_data = data.make_dataset(val_report.good, size, trainer.config.batch_size,
                                     mask_type=_value("__mask_type__"), seed=_value("seed"), training=False,
                                     drop_remainder=False, validate=False)
    _say(f"model {model} {options}: {trainer.num_replicas} replica(s), batch {trainer.config.batch_size}, "
         f"{size[0]}x{size[1]}, phases "
         f"{', '.join(f'{p.name} ({n})' for p, n in zip(trainer.recipe.phases, trainer.lengths))}")
    if trainer.restored_from:
        _say(f"resumed from {trainer.restored_from} at step {int(trainer.step.numpy())}")
    elif trainer.initialized_from:
        _say(f"initialised from {trainer.initialized_from}: fresh optimizers, step 0")
    _say(f"checkpoints: {trainer.ckpt_dir}\nlogs and previews: {trainer.logdir} ({_tensorboard_hint(trainer.logdir)})")
    progress = ConsoleProgress(_value("log_every"))
    result = trainer.fit(make, val_data=val_data, callbacks=[progress] if trainer.is_chief else [])
    if result["already_done"]:
        _say(f"{trainer.ckpt_dir}: already trained to step {result['step']} (--max_steps "
             f"{trainer.total_steps}); nothing to do")
        return 0
    if result["stopped_by"]:
        _say(f"stopped by {result['stopped_by']} at step {result['step']}; checkpoint {result['checkpoint']}",
             sys.stderr)
        return _signal_exit_code(result["stopped_by"])
    _say(f"done at step {result['step']}; checkpoint {result['checkpoint']}")
    return 0
