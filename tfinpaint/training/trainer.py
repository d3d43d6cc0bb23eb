"""One training loop for every model of the zoo, driven by the model's ``Recipe``.

Per phase the trainer compiles a discriminator step and a generator step (``tf.function``); one training step is
``critic_steps`` discriminator updates, each on a fresh batch, then one generator update on another fresh batch.
The phases run in sequence, their nominal lengths scaled to ``max_steps``.

The jobs live in their own modules: ``schedule`` (phase lengths, learning rates, data consumed),
``steps`` (the strategy and the compiled steps), ``checkpointing`` (what a checkpoint holds, resume, saving,
model.json) and ``monitoring`` (TensorBoard, previews, validation, the progress callbacks). This module ties
them together; it never prints: it logs (absl) and reports through ``monitoring.Callback`` objects.

Distribution: the steps run under a ``tf.distribute`` strategy (MirroredStrategy over the visible GPUs,
MultiWorkerMirroredStrategy when ``TF_CONFIG`` names several workers, the default strategy otherwise).

Checkpoints (``tf.train.CheckpointManager`` in ``ckpt_dir``) hold the generator, the discriminators, both
optimizers, the step, the phase and the trainer's ``tf.random.Generator``; ``model.json`` beside them names the
model and its build options, so inference rebuilds the generator from the folder alone. A new ``Trainer`` on a
folder with checkpoints resumes from the newest intact one at the same step.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import os
import shutil
import signal
import threading
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from tfinpaint.training import checkpointing
from tfinpaint.training.checkpointing import CheckpointSaveError, ModelMismatchError, TrainingCheckpoint  # noqa: F401 (public)
from tfinpaint.training.monitoring import (  # noqa: F401 (public)
    Callback,
    Monitor,
    StepRate,
    preview_grid,
    validation_scores,
    write_image,
    write_scalar,
)
from tfinpaint.training.recipe import ModelSet, Recipe, make_optimizer
from tfinpaint.training.schedule import Schedule, phase_lengths  # noqa: F401 (public)
from tfinpaint.training.steps import default_strategy, make_step, task_info  # noqa: F401 (public)


class NonFiniteLossError(RuntimeError):
    """Training stopped because a loss became NaN or infinite; the last good checkpoint is kept."""


class DataExhaustedError(ValueError):
    """The training data stream ended: no image in it decodes any more."""


@dataclasses.dataclass
class TrainConfig:
    """Run settings; ``None`` means "the recipe's value".

    batch_size: global batch (split over the replicas). image_size: training crop side or (height, width).
    learning_rate: replaces the recipe's base learning rates; per-phase rates are scaled by the same factor.
    loss_weights: user overrides of the recipe's loss weights ({"l1": 1.0, ...}); each must be >= 0.
    save_every / log_every / preview_every / val_every: in steps; 0 disables (a checkpoint is still written at
        the end and on SIGINT/SIGTERM).
    mixed_precision: True: ``mixed_float16`` with loss scaling on GPU, ``mixed_bfloat16`` on CPU; or a Keras
        policy name ("float32", "mixed_bfloat16", "mixed_float16").
    progress: log a progress line every ``log_every`` steps when ``fit`` gets no callbacks.
    init_from: a checkpoint folder whose generator and discriminators start a new run (fresh optimizers,
        step 0); ignored when ``ckpt_dir`` already holds checkpoints (the run resumes).
    """

    batch_size: int | None = None
    image_size: object | None = None
    max_steps: int = 1000
    learning_rate: float | None = None
    loss_weights: dict = dataclasses.field(default_factory=dict)
    ckpt_dir: str = "checkpoints"
    logdir: str | None = None
    seed: int = 0
    save_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 10
    preview_every: int = 100
    val_every: int = 0
    mixed_precision: object = False
    progress: bool = True
    init_from: str | None = None


def resolve_model(model) -> tuple:
    """(name stored in model.json, build function ``(**options) -> ModelBundle``) of a model as
    ``tfinpaint.models.get`` resolves it (a registry name, a ``"module:attribute"`` path to a ``ModelSpec``, a
    ``ModelSpec``), or of a custom build function (given itself or as ``"module:function"``). A spec's build
    function carries the spec as its ``spec`` attribute."""
    from tfinpaint.models import registry

    if isinstance(model, str) and ":" in model:
        try:
            target = getattr(importlib.import_module(model.partition(":")[0]), model.partition(":")[2])
        except (ImportError, AttributeError) as error:
            raise ValueError(f"model {model}: cannot import the build function ({error})") from None
        if not isinstance(target, registry.ModelSpec):
            return model, target
    elif callable(model) and not isinstance(model, registry.ModelSpec):
        return f"{model.__module__}:{model.__qualname__}", model
    spec = registry.get(model)  # one-line error for unknown names

    def build(**options):
        config = spec.make_config(**options)
        return registry.ModelBundle(spec.build_generator(config), spec.build_discriminators(config),
                                    spec.make_recipe(config))

    build.spec = spec
    return registry.stored_name(model), build


def _option_names(build) -> tuple:
    """The options a build function accepts: its spec's config fields, else its parameters."""
    spec = getattr(build, "spec", None)
    return spec.config_class.option_names() if spec is not None else tuple(inspect.signature(build).parameters)


class _LogProgress(Callback):
    """Progress lines through absl logging (the default reporter of library use)."""

    def __init__(self, total: int, every: int):
        self.total, self.every = total, max(1, every)

    def on_step_end(self, step, logs, steps_per_sec):
        if step % self.every == 0 or step == self.total:
            losses = " ".join(f"{key} {value:.4g}" for key, value in logs.items())
            logging.info("step %d/%d | %s | %.2f steps/s", step, self.total, losses, steps_per_sec)


class Trainer:
    """Builds a model from the zoo (or a custom build function), restores its newest checkpoint and trains it.

    model: registry name, ``"module:function"`` or a build function ``(**options) -> ModelBundle``.
    model_options: build options (e.g. ``{"cnum": 16}``), stored in model.json.
    """

    def __init__(self, model="deepfill_v2", model_options: dict | None = None,
                 config: TrainConfig | None = None, strategy: tf.distribute.Strategy | None = None):
        import keras

        self.config = config = dataclasses.replace(config or TrainConfig())
        self._check_loss_weights()
        self.model_name, build = resolve_model(model)
        self.model_options = dict(model_options or {})
        side = config.image_size
        if (side is not None and "image_size" not in self.model_options
                and "image_size" in _option_names(build)
                and (isinstance(side, (int, np.integer)) or len(set(side)) == 1)):
            # The models size their crop-dependent layers (GLCIC's and CRA's critics) from this build option.
            self.model_options["image_size"] = int(side if isinstance(side, (int, np.integer)) else side[0])
        self.ckpt_dir = os.path.abspath(config.ckpt_dir)
        # Before anything is built: a folder of another model is the commonest mistake, and cheap to catch.
        checkpointing.check_model_folder(self.ckpt_dir, self.model_name, self.model_options)
        self.strategy = strategy or default_strategy()
        self.is_chief, self.task_id = task_info(self.strategy)
        self.num_replicas = self.strategy.num_replicas_in_sync
        self.mixed_precision_policy = None
        if isinstance(config.mixed_precision, str):
            self.mixed_precision_policy = None if config.mixed_precision == "float32" else config.mixed_precision
        elif config.mixed_precision:
            self.mixed_precision_policy = "mixed_float16" if tf.config.list_logical_devices("GPU") else "mixed_bfloat16"
        # The policy must be in force before any layer is built.
        keras.mixed_precision.set_global_policy(self.mixed_precision_policy or "float32")
        keras.utils.set_random_seed(config.seed)

        with self.strategy.scope():
            bundle = build(**self.model_options)
            self.generator, discriminators, self.recipe = bundle
            self.discriminators = dict(sorted((discriminators or {}).items()))
            self.models = ModelSet(self.generator, self.discriminators)
            self._check_recipe()
            if config.batch_size is None:
                config.batch_size = self.recipe.batch_size
            if config.image_size is None:
                config.image_size = self.recipe.image_size
            self.image_size = self._check_image_size(config.image_size)
            if config.batch_size % self.num_replicas:
                raise ValueError(f"batch size {config.batch_size} is not divisible by the {self.num_replicas} replicas")
            self.schedule = Schedule(self.recipe, config.max_steps, config.learning_rate)
            self.lengths = self.schedule.lengths
            self.total_steps = self.schedule.total_steps
            self._warn_unknown_weights()
            self._build_networks()
            self.g_optimizer = self._make_optimizer(self.recipe.g_optimizer)
            self.g_optimizer.build(self.generator.trainable_variables)
            self.d_optimizer = None
            if self.discriminators:
                self.d_optimizer = self._make_optimizer(self.recipe.d_optimizer)
                self.d_optimizer.build(self._discriminator_variables())

        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.phase = tf.Variable(0, dtype=tf.int64, trainable=False, name="phase")
        self.rng = tf.random.Generator.from_seed(config.seed)
        self.logdir = os.path.abspath(config.logdir or os.path.join(config.ckpt_dir, "logs"))
        # In a cluster only the chief writes the real checkpoints; the other workers save (all must take part)
        # into a private folder that is deleted again.
        self._write_dir = self.ckpt_dir if self.is_chief else os.path.join(self.ckpt_dir, f".worker{self.task_id}")
        if self.is_chief:
            checkpointing.prepare_folder(
                self.ckpt_dir, {"model": self.model_name, "options": self.model_options},
                dict(image_size=list(self.image_size), size_factor=int(getattr(self.generator, "size_factor", 1)),
                     mixed_precision=self.mixed_precision_policy))
        self.checkpointing = TrainingCheckpoint(
            self.generator, self.discriminators, self.g_optimizer, self.d_optimizer, self.step, self.phase,
            self.rng, self.ckpt_dir, self._write_dir, config.keep_checkpoints)
        self.checkpoint, self.manager = self.checkpointing.checkpoint, self.checkpointing.manager
        self.restored_from = self.checkpointing.restore_latest()
        self.initialized_from = None
        if config.init_from:
            if self.restored_from:
                logging.warning("%s already holds checkpoints: resuming from %s, not initialising from %s",
                                self.ckpt_dir, self.restored_from, config.init_from)
            else:
                checkpointing.initialise_networks(os.fspath(config.init_from), self.model_name, self.generator,
                                                  self.discriminators)
                self.initialized_from = os.fspath(config.init_from)
        self._stop_signal = None
        self._any_stop_fn = None
        self._callbacks: list = []

    # ----------------------------------------------------------------------------------------- set-up
    def _check_loss_weights(self):
        for key, value in self.config.loss_weights.items():
            if value is not None and float(value) < 0:
                raise ValueError(f"loss weight {key!r} must be >= 0, got {value:g} (a negative weight would "
                                 "make training increase that loss)")

    def _check_recipe(self):
        recipe = self.recipe
        if not isinstance(recipe, Recipe):
            raise TypeError(f"model {self.model_name}: build() must return a Recipe, got {type(recipe).__name__}")
        for phase in recipe.phases:
            if not (phase.train_generator or phase.train_discriminator):
                raise ValueError(f"phase {phase.name!r} trains neither the generator nor the discriminator")
            if phase.train_discriminator and (not self.discriminators or recipe.discriminator_loss is None):
                raise ValueError(f"phase {phase.name!r} trains a discriminator, but model {self.model_name} has none")
            if phase.critic_steps < 1:
                raise ValueError(f"phase {phase.name!r}: critic_steps must be >= 1, got {phase.critic_steps}")

    def _check_image_size(self, image_size) -> tuple:
        if isinstance(image_size, (int, np.integer)):
            size = (int(image_size), int(image_size))
        else:
            size = tuple(int(side) for side in image_size)
        factor = int(getattr(self.generator, "size_factor", 1))
        if any(side < factor or side % factor for side in size):
            raise ValueError(f"image size {size[0]}x{size[1]} must be a positive multiple of {factor} "
                             f"for model {self.model_name}")
        return size

    def _warn_unknown_weights(self):
        known = set(self.recipe.loss_weights) | set(self.recipe.override_aliases)
        for phase in self.recipe.phases:
            known.update(phase.loss_weights)
        for key, value in self.config.loss_weights.items():
            if value is not None and key not in known:
                logging.warning("model %s has no loss weight %r (it uses %s); the override is ignored",
                                self.model_name, key, ", ".join(sorted(known)))

    def _build_networks(self):
        """Creates every weight by running both losses once on a dummy batch: only the recipe knows how the
        discriminators are called. Needed before optimizers are built and checkpoints restored."""
        height, width = self.image_size
        mask = np.zeros([1, height, width, 1], np.float32)
        mask[:, height // 4: height // 2, width // 4: width // 2] = 1.0
        batch = {"image": tf.fill([1, height, width, 3], 0.5), "mask": tf.constant(mask)}
        weights = self.recipe.weights_for(self.recipe.phases[0], self.config.loss_weights)
        self.recipe.generator_loss(self.models, batch, weights, training=False)
        if self.discriminators and self.recipe.discriminator_loss is not None:
            self.recipe.discriminator_loss(self.models, batch, weights, training=False)

    def _discriminator_variables(self) -> list:
        return [variable for network in self.discriminators.values() for variable in network.trainable_variables]

    def _make_optimizer(self, optimizer_config: dict):
        import keras

        if optimizer_config is None:
            raise ValueError(f"model {self.model_name}: the recipe has discriminators but no d_optimizer")
        optimizer = make_optimizer(optimizer_config, self.config.learning_rate)
        if self.mixed_precision_policy == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        return optimizer

    # ----------------------------------------------------------------------------------------- phases
    def phase_bounds(self) -> list:
        """(first step, end step) of every phase."""
        return self.schedule.bounds()

    def batches_consumed(self, step: int) -> int:
        """Global batches the first ``step`` steps drew from the data stream."""
        return self.schedule.batches_consumed(step)

    def enter_phase(self, index: int):
        """Runs the phase's on_start hook, sets its learning rates and compiles its steps."""
        phase = self._current_phase = self.recipe.phases[index]
        self.phase.assign(index)
        if phase.on_start is not None:
            phase.on_start(self.models)
        g_rate, d_rate = self.schedule.learning_rates(index)
        self.g_optimizer.learning_rate = g_rate
        if self.d_optimizer is not None:
            self.d_optimizer.learning_rate = d_rate
        weights = self.recipe.weights_for(phase, self.config.loss_weights)
        self._d_step = make_step(self.strategy, self.models, self.recipe.discriminator_loss, self.d_optimizer,
                                 self._discriminator_variables(), weights) if phase.train_discriminator else None
        self._g_step = make_step(self.strategy, self.models, self.recipe.generator_loss, self.g_optimizer,
                                 self.generator.trainable_variables, weights) if phase.train_generator else None
        return phase

    def train_step(self, iterator) -> dict:
        """One step of the current phase (``enter_phase`` first): critic updates, then the generator update.
        Returns the losses as floats ("d/..." of the last critic update, "g/...")."""
        logs = {}
        if self._d_step is not None:
            for _ in range(self._current_phase.critic_steps):
                d_logs = self._d_step(iterator)
            logs.update({f"d/{key}": value for key, value in d_logs.items()})
        if self._g_step is not None:
            logs.update({f"g/{key}": value for key, value in self._g_step(iterator).items()})
        return {key: float(value) for key, value in logs.items()}

    def _learning_rate_logs(self) -> dict:
        rates = {"lr/generator": float(self.g_optimizer.learning_rate.numpy())}
        if self.d_optimizer is not None:
            rates["lr/discriminator"] = float(self.d_optimizer.learning_rate.numpy())
        return rates

    # ----------------------------------------------------------------------------------------- data
    def distribute(self, data: Callable, start_step: int = 0):
        """A distributed dataset from ``data(batch_size=per-replica batch, shard=(pipelines, index),
        start_index=elements this pipeline already produced)`` -> tf.data.Dataset of per-replica batches."""
        global_batch = self.config.batch_size
        consumed = self.batches_consumed(start_step)

        def dataset_fn(context: tf.distribute.InputContext):
            per_replica = context.get_per_replica_batch_size(global_batch)
            replicas_per_pipeline = context.num_replicas_in_sync // context.num_input_pipelines
            return data(batch_size=per_replica, shard=(context.num_input_pipelines, context.input_pipeline_id),
                        start_index=consumed * per_replica * replicas_per_pipeline)

        return self.strategy.distribute_datasets_from_function(dataset_fn)

    # ----------------------------------------------------------------------------------------- saving
    @property
    def _last_saved_step(self) -> int:
        return self.checkpointing.last_saved_step

    def save(self) -> str | None:
        """Writes a checkpoint for the current step (every worker must call it in a cluster). A failed write
        raises ``CheckpointSaveError`` and keeps the last good checkpoint."""
        step = int(self.step.numpy())
        path = self.checkpointing.save(step)
        if not self.is_chief:
            shutil.rmtree(self._write_dir, ignore_errors=True)
            return None
        self._report("on_checkpoint_saved", step, path)
        return path

    def _request_stop(self, signum, frame):
        if self._stop_signal is not None:  # second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self._stop_signal = signal.Signals(signum).name
        logging.info("%s: stopping after this step and saving a checkpoint", self._stop_signal)
        self._report("on_stop_requested", self._stop_signal)

    def _stop_agreed(self) -> bool:
        """Whether to stop after this step. In a cluster a signal may reach one worker only (or each at another
        step), while saving is a collective operation: the workers agree every step, as TensorFlow's
        PreemptionCheckpointHandler does, so that all of them stop, and save, after the same step."""
        if not isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return self._stop_signal is not None
        if self._any_stop_fn is None:
            strategy = self.strategy

            @tf.function
            def any_stop(flag):
                per_replica = strategy.run(lambda: tf.identity(flag))
                return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

            self._any_stop_fn = any_stop
        stop = int(self._any_stop_fn(tf.constant(0 if self._stop_signal is None else 1, tf.int32)).numpy()) > 0
        if stop and self._stop_signal is None:
            self._stop_signal = "SIGTERM (on another worker)"
        return stop

    def _install_signal_handlers(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, self._request_stop)
        return previous

    def _report(self, method: str, *args) -> None:
        """Calls ``method`` on every callback; a failing callback (a closed pipe, a full terminal log) is
        logged and dropped, never allowed to stop training."""
        for callback in list(self._callbacks):
            try:
                getattr(callback, method)(*args)
            except Exception as error:  # noqa: BLE001 - reporting must never end a run
                logging.warning("progress reporter %s failed (%s: %s); it is switched off",
                                type(callback).__name__, type(error).__name__, error)
                self._callbacks.remove(callback)

    # ----------------------------------------------------------------------------------------- monitoring
    def _predict(self, batch: dict) -> dict:
        if not hasattr(self, "_predict_fn"):
            self._predict_fn = tf.function(
                lambda image, mask: {key: tf.cast(value, tf.float32) for key, value in
                                     self.generator(image, mask, training=False).items()
                                     if key in ("output", "raw", "coarse")})
        return {key: value.numpy() for key, value in self._predict_fn(batch["image"], batch["mask"]).items()}

    def evaluate(self, batches: list) -> dict:
        """Mean hole L1 and PSNR of the composited output over fixed validation batches."""
        return validation_scores([self._predict(batch) for batch in batches], batches)

    # ----------------------------------------------------------------------------------------- the loop
    def fit(self, data: Callable, val_data: tf.data.Dataset | None = None, preview_batch: dict | None = None,
            val_batches: int = 4, callbacks: Sequence[Callback] | None = None) -> dict:
        """Trains until ``max_steps`` (or a SIGINT/SIGTERM, which saves a checkpoint first).

        data: see ``distribute``. val_data: a finite dataset of validation batches (the first ``val_batches``
        are used every ``val_every`` steps). preview_batch: the batch shown in previews (default: the first
        validation batch, else the first training batch). callbacks: progress reporters (``Callback``); by
        default progress lines are logged when ``config.progress`` is set.
        Returns {"step", "losses", "checkpoint", "stopped_by", "already_done"}.
        """
        config = self.config
        start = int(self.step.numpy())
        result = {"step": start, "losses": {}, "checkpoint": tf.train.latest_checkpoint(self.ckpt_dir),
                  "stopped_by": None, "already_done": start >= self.total_steps}
        if callbacks is None:
            callbacks = [_LogProgress(self.total_steps, config.log_every)] if config.progress else []
        self._callbacks = list(callbacks) if self.is_chief else []
        if result["already_done"]:
            logging.info("%s: already trained to step %d (max_steps %d); nothing to do", self.ckpt_dir, start,
                         self.total_steps)
            self._report("on_train_end", result)
            return result
        # Fresh, reproducible random streams for this session (a resumed run does not replay step 0's).
        import keras

        keras.utils.set_random_seed(int(self.rng.uniform_full_int([], tf.int64).numpy() % (2 ** 31)))
        validation = list(val_data.take(val_batches)) if (val_data is not None and self.is_chief) else []
        if preview_batch is None and self.is_chief and config.preview_every:
            try:
                preview_batch = validation[0] if validation else next(iter(
                    data(batch_size=min(4, config.batch_size), shard=(1, 0), start_index=0)))
            except StopIteration:
                raise DataExhaustedError("the training data is empty: no image in it decodes") from None
        monitor = Monitor(self._predict, self.logdir, config.log_every, config.preview_every, config.val_every,
                          self.is_chief, preview_batch, validation)
        iterator = iter(self.distribute(data, start))
        self._stop_signal = None
        previous_handlers = self._install_signal_handlers()
        rate = StepRate(start)
        step = start
        logs = {}
        self._report("on_train_begin", start, self.total_steps)
        try:
            for index, (phase, (begin, end)) in enumerate(zip(self.recipe.phases, self.phase_bounds())):
                if step >= end:
                    continue
                self.enter_phase(index)
                self._report("on_phase_begin", index, phase, begin, end,
                             self.recipe.weights_for(phase, config.loss_weights))
                while step < end:
                    try:
                        logs = self.train_step(iterator)
                    except tf.errors.OutOfRangeError:
                        raise DataExhaustedError(f"the training data ran out at step {step + 1}: no image in it "
                                                 "decodes any more") from None
                    bad = {key: value for key, value in logs.items() if not math.isfinite(value)}
                    if bad:
                        raise NonFiniteLossError(
                            f"step {step + 1}: loss {', '.join(f'{k} = {v}' for k, v in bad.items())}; training "
                            f"stopped without saving this state (last good checkpoint: "
                            f"{tf.train.latest_checkpoint(self.ckpt_dir) or 'none'}). Lower the learning rate "
                            "or the loss weights, or check the data.")
                    step += 1
                    self.step.assign(step)
                    steps_per_sec = rate.update(step)
                    self._report("on_step_end", step, logs, steps_per_sec)
                    monitor.after_step(step, logs, steps_per_sec, self._learning_rate_logs())
                    if config.save_every and step % config.save_every == 0:
                        self.save()
                    if self._stop_agreed():
                        break
                if self._stop_signal:
                    break
            if self._last_saved_step != step:
                self.save()
            monitor.at_end(step)
        finally:
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
            monitor.writer.flush()
        result.update(step=step, losses=logs, checkpoint=tf.train.latest_checkpoint(self.ckpt_dir),
                      stopped_by=self._stop_signal)
        self._report("on_train_end", result)
        return result
