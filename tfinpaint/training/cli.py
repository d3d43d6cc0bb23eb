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
import dataclasses
import inspect
import math
import os
import sys
import time

from absl import flags, logging

from tfinpaint import flags as cli_flags
from tfinpaint.masks import cli as mask_cli
from tfinpaint.settings import SettingError

FLAGS = flags.FLAGS
DEFAULT_MODEL = "deepfill_v2"
# Without a GPU, the paper batch sizes and crops would make a first run take hours; these keep a CPU run short.
CPU_BATCH_SIZE = 4
CPU_IMAGE_SIZE = 128


@dataclasses.dataclass(frozen=True)
class TrainCommandConfig:
    """What ``train.py`` is asked to do: the data, the model, the loss-weight overrides and the run's
    ``TrainConfig`` settings (None: the recipe's, or a CPU-friendly default without a GPU).

    images / masks / val_images: folders or text files (images None: the built-in sample photos; masks None:
    generated with ``mask_type``); model: a registry name, 'package.module:SPEC' (a ``ModelSpec``) or
    'package.module:build'; model_options: text 'key=value,...'; lambda_*: loss-weight overrides; the rest as
    the command's flags describe them.
    """

    images: str | None = None
    masks: str | None = None
    val_images: str | None = None
    mask_type: str = "free_form"
    mask_polarity: str = "hole"
    model: str | None = None
    cnum: int | None = None
    dnum: int | None = None
    model_options: str | None = None
    lambda_l1: float | None = None
    lambda_perceptual: float | None = None
    lambda_gan: float | None = None
    lambda_style: float | None = None
    batch_size: int | None = None
    image_size: int | None = None
    max_steps: int = 1000
    learning_rate: float | None = None
    logdir: str | None = None
    ckpt_dir: str | None = None
    init_from: str | None = None
    seed: int = 0
    save_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 10
    preview_every: int = 100
    val_every: int = 500
    mixed_precision: bool = False
    vgg_weights: str | None = None
    check_images: str = "quick"


# TrainCommandConfig setting -> flag: builds the config and spells the settings in error messages.
FLAG_FOR_SETTING = {
    "images": "__flist__",
    "masks": "__mlist__",
    "val_images": "val_flist",
    "mask_type": "__mask_type__",
    "mask_polarity": "mask_polarity",
    "model": "model",
    "cnum": "cnum",
    "dnum": "dnum",
    "model_options": "model_options",
    "lambda_l1": "__lambda_l1__",
    "lambda_perceptual": "__lambda_perceptual__",
    "lambda_gan": "__lambda_gan__",
    "lambda_style": "__lambda_style__",
    "batch_size": "batch_size",
    "image_size": "img_size",
    "max_steps": "max_steps",
    "learning_rate": "lr",
    "logdir": "logdir",
    "ckpt_dir": "ckpt_dir",
    "init_from": "init_from",
    "seed": "seed",
    "save_every": "save_every",
    "keep_checkpoints": "keep_checkpoints",
    "log_every": "log_every",
    "preview_every": "preview_every",
    "val_every": "val_every",
    "mixed_precision": "mixed_precision",
    "vgg_weights": "vgg_weights",
    "check_images": "check_images",
}
# train.py --__gen_masks__ true writes a mask dataset instead (the mask command's flags).
COMMAND_FLAGS = (*FLAG_FOR_SETTING.values(), *mask_cli.COMMAND_FLAGS)
cli_flags.declare("train", COMMAND_FLAGS)


def config_from_flags(flag_values: flags.FlagValues = FLAGS) -> TrainCommandConfig:
    return cli_flags.config_from_flags(TrainCommandConfig, FLAG_FOR_SETTING, flag_values)


def error_line(error: BaseException) -> str:
    """An error as one line, settings spelled as this command's flags."""
    return cli_flags.render_error(error, {**mask_cli.FLAG_FOR_SETTING, **FLAG_FOR_SETTING})


def parse_model_options(text) -> dict:
    """'levels=4,bgr=False' -> {"levels": 4, "bgr": False}; values are Python literals or plain strings."""
    options = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, separator, raw = item.partition("=")
        if not separator or not key.strip():
            raise SettingError(f"expected key=value, got {item!r}", "model_options")
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


def _resolve_sizes(config: TrainCommandConfig, build, spec, options: dict) -> tuple:
    """(batch size, image size) from the config, None meaning the recipe's; CPU-friendly defaults without a GPU."""
    import tensorflow as tf

    batch_size, image_size = config.batch_size, config.image_size
    if tf.config.list_logical_devices("GPU"):
        return batch_size, image_size
    if batch_size is None:
        batch_size = CPU_BATCH_SIZE
    if image_size is None and spec is not None:
        model_config = spec.make_config(**options)
        factor = int(model_config.size_factor)
        model_size = int(getattr(model_config, "image_size", CPU_IMAGE_SIZE))
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
            mask_cli.run(mask_cli.config_from_flags(FLAGS))
        except (OSError, ValueError) as error:
            print(f"{argv[0]}: error: {mask_cli.error_line(error)}", file=sys.stderr)
            sys.exit(1)
        return
    from tfinpaint.training.checkpointing import CheckpointSaveError, ModelMismatchError
    from tfinpaint.training.trainer import NonFiniteLossError

    try:
        code = run(config_from_flags())
    except ModelMismatchError as error:
        _say(f"{argv[0]}: error: {_mismatch_hint(error)}", sys.stderr)
        sys.exit(1)
    except (ValueError, OSError, CheckpointSaveError, NonFiniteLossError) as error:
        # bad flags, files, folders or checkpoints, a failed save: one line, no traceback
        _say(f"{argv[0]}: error: {error_line(error)}", sys.stderr)
        sys.exit(1)
    if code:
        sys.exit(code)


def _tensorboard_hint(logdir: str) -> str:
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        return f"pip install tensorboard, then: tensorboard --logdir {logdir}"
    return f"tensorboard --logdir {logdir}"


def run(config: TrainCommandConfig) -> int:
    """Trains as ``config`` says; returns the exit code (non-zero when stopped by a signal)."""
    # The strategy comes first: MultiWorkerMirroredStrategy must exist before TensorFlow runs anything.
    import tensorflow as tf

    from tfinpaint.training.trainer import TrainConfig, Trainer, default_strategy

    # TensorFlow's INFO lines (some through absl logging) would drown the progress output.
    tf.get_logger().setLevel("WARNING")
    logging.set_verbosity(logging.WARNING)
    strategy = default_strategy()
    from functools import partial

    from tfinpaint import data

    model = config.model or DEFAULT_MODEL
    build, spec = _build_function(model)
    parameters = spec.config_class.option_names() if spec is not None else inspect.signature(build).parameters
    options = parse_model_options(config.model_options)
    for name in ("cnum", "dnum", "vgg_weights"):
        if getattr(config, name) is not None:
            if name not in parameters:
                _say(f"warning: model {model} has no option {name!r}; {cli_flags.spelling(name)} ignored",
                     sys.stderr)
                continue
            options[name] = getattr(config, name)
    loss_weights = {"l1": config.lambda_l1, "perceptual": config.lambda_perceptual, "gan": config.lambda_gan,
                    "style": config.lambda_style}
    loss_weights = {key: value for key, value in loss_weights.items() if value is not None}
    for key, value in loss_weights.items():
        if value < 0:  # checked before the data scan and the build: a typo should fail at once
            raise SettingError("loss weights must be >= 0 (a negative weight makes training increase that loss)",
                               f"lambda_{key}", f"{value:g}")
    batch_size, image_size = _resolve_sizes(config, build, spec, options)

    flist = config.images
    paths = data.list_images(flist) if flist else data.sample_images()
    report = data.scan_images(paths, full=config.check_images == "full")
    source = flist or "built-in sample photos"
    mask_paths = None
    if config.masks:
        mask_report = data.scan_images(data.list_images(config.masks), what="masks")
        mask_paths = mask_report.good
        _say(f"masks: {mask_report.summary()} from {config.masks}")
    _say(f"data: {report.summary()} from {source}")

    ckpt_dir = config.ckpt_dir or os.path.join("checkpoints", model.replace(":", "_").replace(".", "_"))
    train_config = TrainConfig(
        batch_size=batch_size,
        image_size=image_size,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        loss_weights=loss_weights,
        ckpt_dir=ckpt_dir,
        logdir=config.logdir,
        seed=config.seed,
        save_every=config.save_every,
        keep_checkpoints=config.keep_checkpoints,
        log_every=config.log_every,
        preview_every=config.preview_every,
        val_every=config.val_every,
        mixed_precision=bool(config.mixed_precision),
        init_from=config.init_from,
    )
    trainer = Trainer(model, options, train_config, strategy=strategy)
    size = trainer.image_size
    make = partial(data.make_dataset, report.good, size, mask_type=config.mask_type, mask_paths=mask_paths,
                   mask_polarity=config.mask_polarity, seed=config.seed, validate=False)
    val_data = None
    if config.val_images:
        val_report = data.scan_images(data.list_images(config.val_images), what="validation images")
        _say(f"validation: {val_report.summary()} from {config.val_images}")
        val_data = data.make_dataset(val_report.good, size, trainer.config.batch_size,
                                     mask_type=config.mask_type, seed=config.seed, training=False,
                                     drop_remainder=False, validate=False)
    _say(f"model {model} {options}: {trainer.num_replicas} replica(s), batch {trainer.config.batch_size}, "
         f"{size[0]}x{size[1]}, phases "
         f"{', '.join(f'{p.name} ({n})' for p, n in zip(trainer.recipe.phases, trainer.lengths))}")
    if trainer.restored_from:
        _say(f"resumed from {trainer.restored_from} at step {int(trainer.step.numpy())}")
    elif trainer.initialized_from:
        _say(f"initialised from {trainer.initialized_from}: fresh optimizers, step 0")
    _say(f"checkpoints: {trainer.ckpt_dir}\nlogs and previews: {trainer.logdir} ({_tensorboard_hint(trainer.logdir)})")
    progress = ConsoleProgress(config.log_every)
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
