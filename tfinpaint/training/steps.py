"""Step compilation under ``tf.distribute``: the strategy, which process writes, and the compiled update steps.

The recipes' losses are means over the per-replica batch, so every loss is divided by the number of replicas
before its gradient and the per-replica values are summed: gradients and logged values are those of the global
batch.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable

import tensorflow as tf


def default_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy when TF_CONFIG names several tasks, MirroredStrategy over the visible GPUs,
    else the default (single-device) strategy."""
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    if sum(len(tasks) for name, tasks in cluster.items() if name in ("chief", "worker")) > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if tf.config.list_logical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def task_info(strategy) -> tuple:
    """(writes checkpoints and logs, task id) of this process: the strategy's ``should_checkpoint`` (the chief
    of a cluster; always true on one machine) and its index among the workers."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_id = int(getattr(resolver, "task_id", 0) or 0) if getattr(resolver, "task_type", None) else 0
    return bool(strategy.extended.should_checkpoint), task_id


def make_step(strategy, models, loss_fn: Callable, optimizer, variables: list, weights: dict):
    """A tf.function taking a distributed iterator: one update on the next global batch; returns the
    global-batch mean of every loss term."""
    import keras

    replicas = strategy.num_replicas_in_sync
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
