"""One training loop for every model of the zoo, driven by the model's ``Recipe``.

Per phase the trainer compiles a discriminator step and a generator step (``tf.function``); one training step is
``critic_steps`` discriminator updates, each on a fresh batch, then one generator update on another fresh batch.
The phases run in sequence, their nominal lengths scaled to ``max_steps`` (``phase_lengths``).

Distribution: the steps run under a ``tf.distribute`` strategy (MirroredStrategy over the visible GPUs,
MultiWorkerMirroredStrategy when ``TF_CONFIG`` names several workers, the default strategy otherwise). The
recipes' losses are means over the per-replica batch, so every loss is divided by the number of replicas before
its gradient and the per-replica values are summed: gradients and logged values are those of the global batch.

Checkpoints (``tf.train.CheckpointManager`` in ``ckpt_dir``) hold the generator, the discriminators, both
optimizers, the step, the phase and the trainer's ``tf.random.Generator``; ``model.json`` beside them names the
model and its build options, so inference rebuilds the generator from the folder alone. A new ``Trainer`` on a
folder with checkpoints resumes from the newest one at the same step.
"""
from __future__ import annotations

import dataclasses
import glob
import importlib
import inspect
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from tfinpaint.checkpoints import MODEL_CONFIG_FILE, checkpoint_variables
from tfinpaint.training.recipe import ModelSet, Recipe, make_optimizer


class NonFiniteLossError(RuntimeError):
    """Training stopped because a loss became NaN or infinite; the last good checkpoint is kept."""


@dataclasses.dataclass
class TrainConfig:
    """Run settings; ``None`` means "the recipe's value".

    batch_size: global batch (split over the replicas). image_size: training crop side or (height, width).
    learning_rate: replaces the recipe's base learning rates; per-phase rates are scaled by the same factor.
    loss_weights: user overrides of the recipe's loss weights ({"l1": 1.0, ...}).
    save_every / log_every / preview_every / val_every: in steps; 0 disables (a checkpoint is still written at
        the end and on SIGINT/SIGTERM).
    mixed_precision: True: ``mixed_float16`` with loss scaling on GPU, ``mixed_bfloat16`` on CPU; or a Keras
        policy name ("float32", "mixed_bfloat16", "mixed_float16").
    """

    batch_size: Optional[int] = None
    image_size: Optional[object] = None
    max_steps: int = 1000
    learning_rate: Optional[float] = None
    loss_weights: dict = dataclasses.field(default_factory=dict)
    ckpt_dir: str = "checkpoints"
    logdir: Optional[str] = None
    seed: int = 0
    save_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 10
    preview_every: int = 100
    val_every: int = 0
    mixed_precision: object = False
    progress: bool = True


def phase_lengths(phases, max_steps: int) -> list:
    """Steps of each phase for a run of ``max_steps`` steps.

    Phases with a nominal length keep it when the run is long enough; open phases (``steps=None``) share the
    rest, and without an open phase the last phase runs until ``max_steps``. A shorter run scales every phase
    proportionally (an open phase counts as long as the average fixed phase). Every phase gets at least one
    step, so a run never has fewer steps than phases.
    """
    if not phases:
        raise ValueError("the recipe has no phases")
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    fixed = [phase.steps for phase in phases if phase.steps is not None]
    if any(steps < 1 for steps in fixed):
        raise ValueError(f"phase lengths must be >= 1, got {fixed}")
    open_count = len(phases) - len(fixed)
    fixed_total = sum(fixed)
    if fixed_total + open_count <= max_steps:
        if open_count == 0:
            lengths = [phase.steps for phase in phases]
            lengths[-1] += max_steps - fixed_total
            return lengths
        share, extra = divmod(max_steps - fixed_total, open_count)
        lengths, seen = [], 0
        for phase in phases:
            if phase.steps is None:
                lengths.append(share + (1 if seen < extra else 0))
                seen += 1
            else:
                lengths.append(phase.steps)
        return lengths
    open_weight = fixed_total / len(fixed) if fixed else 1.0
    weights = [float(phase.steps) if phase.steps is not None else open_weight for phase in phases]
    scale = max_steps / sum(weights)
    raw = [weight * scale for weight in weights]
    lengths = [max(1, math.floor(value)) for value in raw]
    # Largest remainders first until the lengths add up (the minimum of one step may overshoot instead).
    order = sorted(range(len(raw)), key=lambda i: raw[i] - math.floor(raw[i]), reverse=True)
    for index in order:
        if sum(lengths) >= max_steps:
            break
        lengths[index] += 1
    while sum(lengths) > max(max_steps, len(phases)):
        largest = max(range(len(lengths)), key=lambda i: lengths[i])
        lengths[largest] -= 1
    return lengths


def default_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy when TF_CONFIG names several tasks, MirroredStrategy over the visible GPUs,
    else the default (single-device) strategy."""
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    if sum(len(tasks) for name, tasks in cluster.items() if name in ("chief", "worker")) > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if tf.config.list_logical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


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
            raise ValueError(f"--model {model}: cannot import the build function ({error})") from None
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


def _task_info(strategy) -> tuple:
    """(is_chief, task_id) of this process in a multi-worker cluster; (True, 0) otherwise."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if not task_type:
        return True, 0
    task_id = int(resolver.task_id or 0)
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief), task_id


class _Progress:
    """A one-line progress bar on a terminal; plain log lines every ``every`` steps otherwise."""

    def __init__(self, total: int, start: int, every: int, enabled: bool, stream=None):
        self.total, self.start, self.every, self.enabled = total, start, max(1, every), enabled
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.window = [(time.perf_counter(), start)]
        self.last_draw = 0.0
        self.rate = 0.0

    def update(self, step: int, logs: dict) -> float:
        now = time.perf_counter()
        self.window.append((now, step))
        # Rate over the last ~50 steps, leaving out the first step of the run (graph tracing).
        self.window = self.window[-50:]
        if len(self.window) > 2:
            (t0, s0), (t1, s1) = self.window[1], self.window[-1]
            self.rate = (s1 - s0) / max(t1 - t0, 1e-9)
        if not self.enabled:
            return self.rate
        if self.tty and (now - self.last_draw > 0.2 or step == self.total):
            self.last_draw = now
            self.stream.write("\r" + self.line(step, logs, bar=True) + "\x1b[K")
            self.stream.flush()
        elif not self.tty and (step % self.every == 0 or step == self.total):
            self.stream.write(self.line(step, logs, bar=False) + "\n")
            self.stream.flush()
        return self.rate

    def line(self, step: int, logs: dict, bar: bool) -> str:
        done = step / self.total
        text = f"step {step}/{self.total}"
        if bar:
            filled = int(done * 20)
            text += f" [{'#' * filled}{'.' * (20 - filled)}] {done:4.0%}"
        losses = " ".join(f"{key} {value:.4g}" for key, value in logs.items())
        eta = (self.total - step) / self.rate if self.rate > 0 else float("nan")
        eta_text = "--" if math.isnan(eta) else time.strftime("%H:%M:%S", time.gmtime(eta))
        return f"{text} | {losses} | {self.rate:.2f} steps/s | ETA {eta_text}"

    def close(self):
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _summary_metadata(plugin: str, data_class) -> bytes:
    # TensorBoard's own summary ops live in the tensorboard package, which TensorFlow no longer installs;
    # tf.summary.write with the plugin's metadata writes the same events without it.
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata(data_class=data_class)
    metadata.plugin_data.plugin_name = plugin
    return metadata.SerializeToString()


def write_scalar(tag: str, value: float, step: int) -> None:
    """A TensorBoard scalar on the default summary writer."""
    from tensorflow.core.framework import summary_pb2

    tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step,
                     metadata=_summary_metadata("scalars", summary_pb2.DATA_CLASS_SCALAR))


def write_image(tag: str, image: np.ndarray, step: int) -> None:
    """A TensorBoard image (RGB uint8 [H, W, 3]) on the default summary writer."""
    from tensorflow.core.framework import summary_pb2

    encoded = tf.io.encode_png(image)
    tensor = tf.stack([tf.constant(str(image.shape[1])), tf.constant(str(image.shape[0])), encoded])
    tf.summary.write(tag, tensor, step=step, metadata=_summary_metadata("images",
                                                                         summary_pb2.DATA_CLASS_BLOB_SEQUENCE))


def _to_uint8(images) -> np.ndarray:
    return np.clip(np.rint(np.asarray(images, np.float32) * 255.0), 0, 255).astype(np.uint8)


def preview_grid(batch: dict, outputs: dict) -> np.ndarray:
    """RGB uint8 grid, one row per sample: input (holes white) | mask | coarse (or raw) | output."""
    image = np.asarray(batch["image"], np.float32)
    mask = np.asarray(batch["mask"], np.float32)
    masked = image * (1.0 - mask) + mask
    stage = outputs.get("coarse", outputs.get("raw"))
    columns = [masked, np.repeat(mask, 3, axis=-1), np.asarray(stage, np.float32),
               np.asarray(outputs["output"], np.float32)]
    rows = [np.concatenate([column[i] for column in columns], axis=1) for i in range(image.shape[0])]
    return _to_uint8(np.concatenate(rows, axis=0))


class Trainer:
    """Builds a model from the zoo (or a custom build function), restores its newest checkpoint and trains it.

    model: registry name, ``"module:function"`` or a build function ``(**options) -> ModelBundle``.
    model_options: build options (e.g. ``{"cnum": 16}``), stored in model.json.
    """

    def __init__(self, model="deepfill_v2", model_options: Optional[dict] = None,
                 config: Optional[TrainConfig] = None, strategy: Optional[tf.distribute.Strategy] = None):
        import keras

        self.config = config = dataclasses.replace(config or TrainConfig())
        self.model_name, build = resolve_model(model)
        self.model_options = dict(model_options or {})
        side = config.image_size
        if (side is not None and "image_size" not in self.model_options
                and "image_size" in _option_names(build)
                and (isinstance(side, (int, np.integer)) or len(set(side)) == 1)):
            # The models size their crop-dependent layers (GLCIC's and CRA's critics) from this build option.
            self.model_options["image_size"] = int(side if isinstance(side, (int, np.integer)) else side[0])
        self.strategy = strategy or default_strategy()
        self.is_chief, self.task_id = _task_info(self.strategy)
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
            self.lengths = phase_lengths(self.recipe.phases, config.max_steps)
            self.total_steps = sum(self.lengths)
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
        objects = dict(generator=checkpoint_variables(self.generator), g_optimizer=list(self.g_optimizer.variables),
                       step=self.step, phase=self.phase, rng=self.rng)
        if self.discriminators:
            objects.update(discriminators={key: checkpoint_variables(network)
                                           for key, network in self.discriminators.items()},
                           d_optimizer=list(self.d_optimizer.variables))
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.ckpt_dir = os.path.abspath(config.ckpt_dir)
        self.logdir = os.path.abspath(config.logdir or os.path.join(config.ckpt_dir, "logs"))
        # In a cluster only the chief writes the real checkpoints; the other workers save (all must take part)
        # into a private folder that is deleted again.
        self._write_dir = self.ckpt_dir if self.is_chief else os.path.join(self.ckpt_dir, f".worker{self.task_id}")
        self._check_model_config()
        self.manager = tf.train.CheckpointManager(self.checkpoint, self._write_dir, max_to_keep=config.keep_checkpoints)
        self.restored_from = self._restore()
        self._stop_signal = None
        self._last_saved_step = int(self.step.numpy()) if self.restored_from else -1

    # ----------------------------------------------------------------------------------------- set-up
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
                print(f"warning: model {self.model_name} has no loss weight {key!r} "
                      f"(it uses {', '.join(sorted(known))}); the override is ignored", file=sys.stderr)

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

    def _base_learning_rate(self, optimizer_config: dict) -> float:
        return float(optimizer_config.get("learning_rate", 1e-3))

    def _make_optimizer(self, optimizer_config: dict):
        import keras

        if optimizer_config is None:
            raise ValueError(f"model {self.model_name}: the recipe has discriminators but no d_optimizer")
        optimizer = make_optimizer(optimizer_config, self.config.learning_rate)
        if self.mixed_precision_policy == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        return optimizer

    def _check_model_config(self):
        description = {"model": self.model_name, "options": self.model_options}
        path = os.path.join(self.ckpt_dir, MODEL_CONFIG_FILE)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                stored = json.load(handle)

            def architecture(model, options):  # the VGG file only feeds a loss; it may move between runs
                return model, {key: value for key, value in options.items() if key != "vgg_weights"}

            if architecture(stored.get("model"), stored.get("options", {})) != architecture(**description):
                raise ValueError(f"{self.ckpt_dir} holds checkpoints of model {stored.get('model')} "
                                 f"{stored.get('options', {})}, not {self.model_name} {self.model_options}; "
                                 "pass another --ckpt_dir or the same model flags")
        if not self.is_chief:
            return
        os.makedirs(self.ckpt_dir, exist_ok=True)
        # Leftovers of a save that was killed half-way (the checkpoint state file never pointed to them).
        for leftover in glob.glob(os.path.join(self.ckpt_dir, "*_temp*")):
            shutil.rmtree(leftover, ignore_errors=True) if os.path.isdir(leftover) else os.remove(leftover)
        factor = int(getattr(self.generator, "size_factor", 1))
        info = dict(description, image_size=list(self.image_size), size_factor=factor,
                    mixed_precision=self.mixed_precision_policy)
        temporary = path + ".tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(info, handle, indent=2)
        os.replace(temporary, path)

    def _restore(self) -> Optional[str]:
        latest = tf.train.latest_checkpoint(self.ckpt_dir)
        if not latest:
            return None
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        return latest

    # ----------------------------------------------------------------------------------------- phases
    def phase_bounds(self) -> list:
        """(first step, end step) of every phase."""
        bounds, begin = [], 0
        for length in self.lengths:
            bounds.append((begin, begin + length))
            begin += length
        return bounds

    def _batches_per_step(self, phase) -> int:
        return (phase.critic_steps if phase.train_discriminator else 0) + (1 if phase.train_generator else 0)

    def batches_consumed(self, step: int) -> int:
        """Global batches the first ``step`` steps drew from the data stream."""
        total = 0
        for phase, (begin, end) in zip(self.recipe.phases, self.phase_bounds()):
            total += max(0, min(step, end) - begin) * self._batches_per_step(phase)
        return total

    def _learning_rates(self, index: int) -> tuple:
        """Learning rates in force in phase ``index``: the latest phase override so far, else the base rate,
        all scaled by the user's --lr relative to the recipe's base rate."""
        rates = []
        for attribute, optimizer_config in (("g_learning_rate", self.recipe.g_optimizer),
                                            ("d_learning_rate", self.recipe.d_optimizer)):
            if optimizer_config is None:
                rates.append(None)
                continue
            base = self._base_learning_rate(optimizer_config)
            rate = base
            for phase in self.recipe.phases[: index + 1]:
                if getattr(phase, attribute) is not None:
                    rate = float(getattr(phase, attribute))
            scale = self.config.learning_rate / base if self.config.learning_rate else 1.0
            rates.append(rate * scale)
        return tuple(rates)

    def enter_phase(self, index: int):
        """Runs the phase's on_start hook, sets its learning rates and compiles its steps."""
        phase = self._current_phase = self.recipe.phases[index]
        self.phase.assign(index)
        if phase.on_start is not None:
            phase.on_start(self.models)
        g_rate, d_rate = self._learning_rates(index)
        self.g_optimizer.learning_rate = g_rate
        if self.d_optimizer is not None:
            self.d_optimizer.learning_rate = d_rate
        weights = self.recipe.weights_for(phase, self.config.loss_weights)
        self._d_step = self._make_step(self.recipe.discriminator_loss, self.d_optimizer,
                                       self._discriminator_variables(), weights) if phase.train_discriminator else None
        self._g_step = self._make_step(self.recipe.generator_loss, self.g_optimizer,
                                       self.generator.trainable_variables, weights) if phase.train_generator else None
        return phase

    def _make_step(self, loss_fn: Callable, optimizer, variables: list, weights: dict):
        """A tf.function taking a distributed iterator: one update on the next global batch; returns the
        global-batch mean of every loss term."""
        import keras

        strategy = self.strategy
        replicas = self.num_replicas
        models = self.models
        scaled_loss = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

        def replica_step(batch):
            with tf.GradientTape() as tape:
                losses = loss_fn(models, batch, weights, training=True)
                total = tf.cast(losses["total"], tf.float32) / replicas
                objective = optimizer.scale_loss(total) if scaled_loss else total
            gradients = tape.gradient(objective, variables)
            optimizer.apply_gradients([(g, v) for g, v in zip(gradients, variables) if g is not None])
            return {key: tf.cast(value, tf.float32) / replicas for key, value in losses.items()}

        @tf.function
        def step(iterator):
            per_replica = strategy.run(replica_step, args=(next(iterator),))
            return {key: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
                    for key, value in per_replica.items()}

        return step

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
    def save(self) -> Optional[str]:
        """Writes a checkpoint for the current step (every worker must call it in a cluster)."""
        step = int(self.step.numpy())
        path = self.manager.save(checkpoint_number=step)
        if not self.is_chief:
            shutil.rmtree(self._write_dir, ignore_errors=True)
            return None
        self._last_saved_step = step
        return path

    def _request_stop(self, signum, frame):
        if self._stop_signal is not None:  # second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self._stop_signal = signal.Signals(signum).name
        print(f"\n{self._stop_signal}: stopping after this step and saving a checkpoint", file=sys.stderr)

    def _install_signal_handlers(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, self._request_stop)
        return previous

    # ----------------------------------------------------------------------------------------- monitoring
    def _predict(self, batch: dict) -> dict:
        if not hasattr(self, "_predict_fn"):
            self._predict_fn = tf.function(
                lambda image, mask: {key: tf.cast(value, tf.float32) for key, value in
                                     self.generator(image, mask, training=False).items()
                                     if key in ("output", "raw", "coarse")})
        return {key: value.numpy() for key, value in self._predict_fn(batch["image"], batch["mask"]).items()}

    def write_preview(self, batch: dict, writer, step: int) -> str:
        from tfinpaint import imageio

        grid = preview_grid(batch, self._predict(batch))
        path = os.path.join(self.logdir, "previews", f"step_{step:07d}.png")
        imageio.write_image(path, grid)
        with writer.as_default():
            write_image("preview", grid, step)
        return path

    def evaluate(self, batches: list) -> dict:
        """Mean hole L1 and PSNR of the composited output over fixed validation batches."""
        hole_l1, psnr = [], []
        for batch in batches:
            outputs = self._predict(batch)
            image, mask = np.asarray(batch["image"]), np.asarray(batch["mask"])
            error = np.abs(outputs["output"] - image)
            hole_l1.append(float((error * mask).sum() / max(mask.sum() * 3.0, 1.0)))
            mse = np.mean((outputs["output"] - image) ** 2, axis=(1, 2, 3))
            psnr.append(float(np.mean(10.0 * np.log10(1.0 / np.maximum(mse, 1e-10)))))
        return {"val/l1_hole": float(np.mean(hole_l1)), "val/psnr": float(np.mean(psnr))}

    # ----------------------------------------------------------------------------------------- the loop
    def fit(self, data: Callable, val_data: Optional[tf.data.Dataset] = None, preview_batch: Optional[dict] = None,
            val_batches: int = 4) -> dict:
        """Trains until ``max_steps`` (or a SIGINT/SIGTERM, which saves a checkpoint first).

        data: see ``distribute``. val_data: a finite dataset of validation batches (the first ``val_batches``
        are used every ``val_every`` steps). preview_batch: the batch shown in previews (default: the first
        validation batch, else the first training batch).
        Returns {"step", "losses", "checkpoint", "stopped_by"}.
        """
        config = self.config
        start = int(self.step.numpy())
        result = {"step": start, "losses": {}, "checkpoint": tf.train.latest_checkpoint(self.ckpt_dir),
                  "stopped_by": None}
        if start >= self.total_steps:
            print(f"{self.ckpt_dir}: already trained to step {start} (max_steps {self.total_steps}); nothing to do")
            return result
        # Fresh, reproducible random streams for this session (a resumed run does not replay step 0's).
        import keras

        keras.utils.set_random_seed(int(self.rng.uniform_full_int([], tf.int64).numpy() % (2 ** 31)))
        writer = tf.summary.create_file_writer(self.logdir) if self.is_chief else tf.summary.create_noop_writer()
        validation = list(val_data.take(val_batches)) if (val_data is not None and self.is_chief) else []
        if preview_batch is None and self.is_chief and config.preview_every:
            preview_batch = validation[0] if validation else next(iter(
                data(batch_size=min(4, config.batch_size), shard=(1, 0), start_index=0)))
        iterator = iter(self.distribute(data, start))
        self._stop_signal = None
        previous_handlers = self._install_signal_handlers()
        progress = _Progress(self.total_steps, start, config.log_every, config.progress and self.is_chief)
        step = start
        logs = {}
        try:
            for index, (phase, (begin, end)) in enumerate(zip(self.recipe.phases, self.phase_bounds())):
                if step >= end:
                    continue
                self.enter_phase(index)
                if self.is_chief and config.progress:
                    weights = self.recipe.weights_for(phase, config.loss_weights)
                    print(f"phase {index + 1}/{len(self.recipe.phases)} {phase.name!r}: steps {begin + 1}-{end}, "
                          f"loss weights {', '.join(f'{k}={v:g}' for k, v in weights.items())}")
                while step < end:
                    logs = self.train_step(iterator)
                    bad = {key: value for key, value in logs.items() if not math.isfinite(value)}
                    if bad:
                        raise NonFiniteLossError(
                            f"step {step + 1}: loss {', '.join(f'{k} = {v}' for k, v in bad.items())}; training "
                            f"stopped without saving this state (last good checkpoint: "
                            f"{tf.train.latest_checkpoint(self.ckpt_dir) or 'none'}). Lower the learning rate "
                            "(--lr) or the loss weights, or check the data.")
                    step += 1
                    self.step.assign(step)
                    rate = progress.update(step, logs)
                    self._monitor(step, logs, rate, writer, preview_batch, validation)
                    if config.save_every and step % config.save_every == 0:
                        self.save()
                    if self._stop_signal:
                        break
                if self._stop_signal:
                    break
            if self._last_saved_step != step:
                self.save()
            if self.is_chief and preview_batch is not None and config.preview_every:
                self.write_preview(preview_batch, writer, step)
        finally:
            progress.close()
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
            writer.flush()
        result.update(step=step, losses=logs, checkpoint=tf.train.latest_checkpoint(self.ckpt_dir),
                      stopped_by=self._stop_signal)
        return result

    def _monitor(self, step, logs, rate, writer, preview_batch, validation):
        config = self.config
        if not self.is_chief:
            return
        with writer.as_default():
            if config.log_every and step % config.log_every == 0:
                for key, value in logs.items():
                    write_scalar(key, value, step)
                write_scalar("lr/generator", self.g_optimizer.learning_rate.numpy(), step)
                if self.d_optimizer is not None:
                    write_scalar("lr/discriminator", self.d_optimizer.learning_rate.numpy(), step)
                write_scalar("steps_per_sec", rate, step)
            if validation and config.val_every and step % config.val_every == 0:
                for key, value in self.evaluate(validation).items():
                    write_scalar(key, value, step)
        if preview_batch is not None and config.preview_every and step % config.preview_every == 0:
            self.write_preview(preview_batch, writer, step)
