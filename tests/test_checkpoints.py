"""Checkpoints keyed by variable path: what they hold, the first release's positional checkpoints, mismatches
(one line naming the first missing or extra variable, never a silent shift), truncated files and invalid
model.json (one line naming the file; training falls back to the newest intact checkpoint), discriminators by
path and ``--init_from``."""
import json
import logging
import os
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.test_trainer import REPO, SIZE, TinyGenerator, all_weights, build_tiny, random_batches, tiny_config
from tfinpaint import checkpoints
from tfinpaint.checkpoints import (
    CheckpointCorruptError,
    CheckpointMismatchError,
    read_model_config,
    restore_discriminators,
    restore_generator,
    save_generator,
)
from tfinpaint.training.checkpointing import ModelMismatchError
from tfinpaint.training.trainer import Trainer

TINY = "tests.test_trainer:build_tiny"
GENERATOR_KEYS = {f"{layer}/{weight}" for layer in ("coarse_hidden", "coarse_out", "refine_hidden", "refine_out")
                  for weight in ("kernel", "bias")}
ENV = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")


class TinyGeneratorWithInsertedLayer(TinyGenerator):
    """The tiny generator with one more layer in the middle of its refinement list."""

    def __init__(self, cnum=4, **kwargs):
        keras.Model.__init__(self, **kwargs)
        self.cnum = cnum
        self.coarse_hidden = keras.layers.Conv2D(cnum, 3, padding="same", activation="relu", name="coarse_hidden")
        self.coarse_out = keras.layers.Conv2D(3, 3, padding="same", name="coarse_out")
        self.refine = [keras.layers.Conv2D(cnum, 3, padding="same", activation="relu", name="refine_hidden"),
                       keras.layers.Conv2D(cnum, 1, name="inserted"),
                       keras.layers.Conv2D(3, 3, padding="same", name="refine_out")]


class TinyGeneratorRenamed(TinyGenerator):
    def __init__(self, cnum=4, **kwargs):
        keras.Model.__init__(self, **kwargs)
        self.cnum = cnum
        self.coarse_hidden = keras.layers.Conv2D(cnum, 3, padding="same", activation="relu", name="coarse_hidden")
        self.coarse_out = keras.layers.Conv2D(3, 3, padding="same", name="coarse_out")
        self.refine = [keras.layers.Conv2D(cnum, 3, padding="same", activation="relu", name="refine_hidden"),
                       keras.layers.Conv2D(3, 3, padding="same", name="refine_final")]


class TinyGeneratorReordered(TinyGenerator):
    """The same layers created in another order: ``model.weights`` lists them differently."""

    def __init__(self, cnum=4, **kwargs):
        keras.Model.__init__(self, **kwargs)
        self.cnum = cnum
        self.refine = [keras.layers.Conv2D(cnum, 3, padding="same", activation="relu", name="refine_hidden"),
                       keras.layers.Conv2D(3, 3, padding="same", name="refine_out")]
        self.coarse_out = keras.layers.Conv2D(3, 3, padding="same", name="coarse_out")
        self.coarse_hidden = keras.layers.Conv2D(cnum, 3, padding="same", activation="relu", name="coarse_hidden")


def built(generator_class=TinyGenerator, seed=0):
    keras.utils.set_random_seed(seed)
    generator = generator_class(4)
    generator(tf.zeros([1, SIZE, SIZE, 3]), tf.zeros([1, SIZE, SIZE, 1]))
    return generator


def by_key(generator):
    return {checkpoints.variable_key(variable): variable.numpy() for variable in generator.weights}


def stored_keys(path, section):
    prefix = section + "/"
    return {name[len(prefix):].split("/.ATTRIBUTES")[0] for name, _ in tf.train.list_variables(path)
            if name.startswith(prefix)}


def test_a_checkpoint_names_what_it_holds_and_restores_by_name(tmp_path):
    source = built(seed=1)
    path = save_generator(tmp_path / "g", source, TINY, {"cnum": 4})
    # TensorFlow escapes "/" inside a key as ".S": the stored names are the variables' paths.
    assert {key.replace(".S", "/") for key in stored_keys(path, "generator")} == GENERATOR_KEYS
    assert read_model_config(tmp_path / "g") == {"model": TINY, "options": {"cnum": 4}}

    # Layers created in another order: each weight still lands on the layer of the same name.
    reordered = built(TinyGeneratorReordered, seed=2)
    assert [v.path.split("/", 1)[1] for v in reordered.weights] != [v.path.split("/", 1)[1] for v in source.weights]
    restore_generator(reordered, tmp_path / "g")
    expected = by_key(source)
    for key, value in by_key(reordered).items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)


@pytest.mark.parametrize("variant, message", [
    (TinyGeneratorWithInsertedLayer, "the checkpoint has no variable generator/inserted/kernel"),
    (TinyGeneratorRenamed, "the checkpoint has no variable generator/refine_final/kernel"),
])
def test_a_checkpoint_of_another_layout_is_a_one_line_error(tmp_path, variant, message):
    save_generator(tmp_path / "g", built(seed=1), TINY, {"cnum": 4})
    target = built(variant, seed=2)
    before = [variable.numpy().copy() for variable in target.weights]
    with pytest.raises(CheckpointMismatchError, match=message) as error:
        restore_generator(target, tmp_path / "g")
    assert "\n" not in str(error.value)
    for value, variable in zip(before, target.weights):  # nothing was half-restored
        np.testing.assert_array_equal(value, variable.numpy())


def test_an_extra_variable_in_the_checkpoint_is_named(tmp_path):
    save_generator(tmp_path / "g", built(TinyGeneratorWithInsertedLayer), TINY, {"cnum": 4})
    with pytest.raises(CheckpointMismatchError, match="holds variable generator/inserted/bias, which the model "
                                                      "does not have"):
        restore_generator(built(), tmp_path / "g")
    save_generator(tmp_path / "wide", built(seed=1), TINY, {"cnum": 4})
    wide = TinyGenerator(8)
    wide(tf.zeros([1, SIZE, SIZE, 3]), tf.zeros([1, SIZE, SIZE, 1]))
    with pytest.raises(CheckpointMismatchError, match=r"coarse_hidden/kernel has shape \[3, 3, 4, 4\] in the "
                                                      r"checkpoint, \[3, 3, 4, 8\] in the model"):
        restore_generator(wide, tmp_path / "wide")


def _write_first_release_generator(folder, generator, model_name, options):
    """Exactly what the first release's save_generator wrote: weights by position."""
    os.makedirs(folder, exist_ok=True)
    tf.train.Checkpoint(generator=list(generator.weights)).save(os.path.join(folder, "ckpt"))
    with open(os.path.join(folder, "model.json"), "w", encoding="utf-8") as handle:
        json.dump({"model": model_name, "options": dict(options)}, handle, indent=2)


def test_a_positional_checkpoint_of_the_first_release_still_loads(tmp_path):
    source = built(seed=3)
    _write_first_release_generator(tmp_path / "old", source, TINY, {"cnum": 4})
    assert stored_keys(tf.train.latest_checkpoint(str(tmp_path / "old")), "generator") == {str(i) for i in range(8)}
    target = built(seed=4)
    restore_generator(target, tmp_path / "old")
    for a, b in zip(source.weights, target.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # A model with one more layer is refused, not shifted.
    with pytest.raises(CheckpointMismatchError, match="stores generator by position .* with 8 "
                                                      "variables; the model has 10"):
        restore_generator(built(TinyGeneratorWithInsertedLayer), tmp_path / "old")


def test_a_training_checkpoint_of_the_first_release_resumes_exactly(tmp_path):
    straight = Trainer(build_tiny, {}, tiny_config(tmp_path / "straight", max_steps=3, preview_every=0))
    straight.fit(random_batches)

    first = Trainer(build_tiny, {}, tiny_config(tmp_path / "first", max_steps=2, preview_every=0))
    first.fit(random_batches)
    # The same state written as the first release's trainer wrote it, into a folder of its own.
    old_dir = tmp_path / "old" / "ckpt"
    old_dir.mkdir(parents=True)
    shutil.copy(tmp_path / "first" / "ckpt" / "model.json", old_dir / "model.json")
    objects = dict(generator=list(first.generator.weights), g_optimizer=list(first.g_optimizer.variables),
                   step=first.step, phase=first.phase, rng=first.rng,
                   discriminators={key: list(network.weights) for key, network in first.discriminators.items()},
                   d_optimizer=list(first.d_optimizer.variables))
    tf.train.CheckpointManager(tf.train.Checkpoint(**objects), str(old_dir), max_to_keep=3).save(checkpoint_number=2)

    resumed = Trainer(build_tiny, {}, tiny_config(tmp_path / "old", max_steps=3, preview_every=0))
    assert resumed.restored_from.endswith("ckpt-2") and int(resumed.step.numpy()) == 2
    for a, b in zip(all_weights(first), all_weights(resumed)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(first.g_optimizer.variables, resumed.g_optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    resumed.fit(random_batches)
    for a, b in zip(all_weights(straight), all_weights(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # The new checkpoint is keyed by path.
    assert "coarse_hidden.Skernel" in stored_keys(str(old_dir / "ckpt-3"), "generator")
    assert any(key.endswith("momentum") for key in stored_keys(str(old_dir / "ckpt-3"), "g_optimizer"))


def _truncate(path):
    with open(path, "rb") as handle:
        contents = handle.read()
    with open(path, "wb") as handle:
        handle.write(contents[: len(contents) // 2])


def test_a_truncated_checkpoint_is_named_and_training_falls_back_to_the_previous_one(tmp_path, caplog):
    Trainer(build_tiny, {}, tiny_config(tmp_path, max_steps=2, save_every=1, preview_every=0)).fit(random_batches)
    data_file = str(tmp_path / "ckpt" / "ckpt-2.data-00000-of-00001")
    _truncate(data_file)
    with pytest.raises(CheckpointCorruptError, match=f"{data_file}: truncated or corrupt checkpoint data"):
        restore_generator(built(), tmp_path / "ckpt")
    with caplog.at_level(logging.WARNING):
        resumed = Trainer(build_tiny, {}, tiny_config(tmp_path, max_steps=3, preview_every=0))
    assert resumed.restored_from.endswith("ckpt-1") and int(resumed.step.numpy()) == 1
    assert any(data_file in record.getMessage() and "falling back" in record.getMessage()
               for record in caplog.records)
    assert resumed.fit(random_batches)["step"] == 3


def test_invalid_model_json_is_named(tmp_path):
    import tfinpaint

    save_generator(tmp_path / "g", built(), "glcic", {"cnum": 4})
    path = str(tmp_path / "g" / "model.json")
    for contents, reason in (("{not json", "invalid model.json"), ('["glcic"]', 'expected an object with a "model"'),
                             (b"\xff\xfe", "not UTF-8")):
        with open(path, "wb") as handle:
            handle.write(contents if isinstance(contents, bytes) else contents.encode())
        with pytest.raises(ValueError, match=f"{path}: .*{reason}"):
            read_model_config(tmp_path / "g")
        with pytest.raises(ValueError, match=f"{path}: "):
            tfinpaint.load(str(tmp_path / "g"))
    with pytest.raises(ValueError, match=f"{path}: invalid model.json"):
        Trainer(build_tiny, {}, tiny_config(tmp_path, ckpt_dir=str(tmp_path / "g")))


def test_init_from_copies_generator_and_discriminators_with_a_fresh_run(tmp_path, caplog):
    source = Trainer(build_tiny, {}, tiny_config(tmp_path / "source", max_steps=2, preview_every=0))
    source.fit(random_batches)
    save_generator(tmp_path / "converted", source.generator, TINY, {}, discriminators=source.discriminators)

    run = Trainer(build_tiny, {}, tiny_config(tmp_path / "run", max_steps=1, preview_every=0,
                                               init_from=str(tmp_path / "converted")))
    assert run.restored_from is None and run.initialized_from == str(tmp_path / "converted")
    assert int(run.step.numpy()) == 0 and int(run.g_optimizer.iterations.numpy()) == 0
    for a, b in zip(all_weights(source), all_weights(run)):
        np.testing.assert_array_equal(a, b)
    assert run.fit(random_batches)["step"] == 1
    # Resuming the run ignores --init_from.
    again = Trainer(build_tiny, {}, tiny_config(tmp_path / "run", max_steps=2, preview_every=0,
                                                 init_from=str(tmp_path / "converted")))
    assert again.restored_from.endswith("ckpt-1") and again.initialized_from is None

    # The discriminators by path, on their own.
    critic = build_tiny().discriminators
    critic["critic"](tf.zeros([1, SIZE, SIZE, 3]))
    restore_discriminators(critic, tmp_path / "converted")
    for a, b in zip(source.discriminators["critic"].weights, critic["critic"].weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    # A folder with the generator alone: the critic starts from scratch, with a warning.
    save_generator(tmp_path / "generator_only", source.generator, TINY, {})
    with caplog.at_level(logging.WARNING):
        partial = Trainer(build_tiny, {}, tiny_config(tmp_path / "partial", init_from=str(tmp_path / "generator_only")))
    assert any("start from scratch" in record.getMessage() for record in caplog.records)
    for a, b in zip(source.generator.weights, partial.generator.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ModelMismatchError, match="glcic"):
        save_generator(tmp_path / "other", source.generator, "glcic", {})
        Trainer(build_tiny, {}, tiny_config(tmp_path / "third", init_from=str(tmp_path / "other")))


def _run(args, **kwargs):
    return subprocess.run([sys.executable, *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300,
                          **kwargs)


def test_infer_and_eval_name_a_truncated_checkpoint_or_another_model_in_one_line(tmp_path):
    from tfinpaint import models

    bundle = models.create("glcic", cnum=4, dnum=4)
    bundle.generator(tf.zeros([1, 64, 64, 3]), tf.zeros([1, 64, 64, 1]))
    save_generator(tmp_path / "glcic", bundle.generator, "glcic", {"cnum": 4, "dnum": 4})
    photos = tmp_path / "photos"
    photos.mkdir()
    tf.io.write_file(str(photos / "a.png"), tf.io.encode_png(np.full((40, 48, 3), 90, np.uint8)))

    # Another model's checkpoint: one line, none of TensorFlow's warnings about unmatched objects.
    other = _run(["infer.py", "--__gpath__", str(tmp_path / "glcic"), "--__flist__", str(photos), "--model",
                  "deepfill_v2", "--__gen_masks__", "true", "--out", str(tmp_path / "out")])
    assert other.returncode != 0
    # TensorFlow's C++ start-up lines (I0000 ..., E0000 ...) are not the subject here; its Python warnings are.
    lines = [line for line in other.stderr.strip().splitlines() if line.strip() and not re.match(
        r"([IWE]\d{4} |WARNING: All log messages before absl)", line)]
    assert len(lines) <= 3 and "the checkpoint has no variable generator/" in lines[-1], other.stderr[-2000:]

    _truncate(str(tmp_path / "glcic" / "ckpt-1.data-00000-of-00001"))
    data_file = str(tmp_path / "glcic" / "ckpt-1.data-00000-of-00001")
    for command in (["infer.py", "--__gpath__", str(tmp_path / "glcic"), "--__flist__", str(photos),
                     "--__gen_masks__", "true", "--out", str(tmp_path / "out")],
                    ["-m", "tfinpaint", "eval", "--gpath", str(tmp_path / "glcic"), "--__flist__", str(photos),
                     "--eval_dir", str(tmp_path / "eval"), "--eval_size", "64"]):
        finished = _run(command)
        assert finished.returncode != 0
        assert "Traceback" not in finished.stderr and "IndexError" not in finished.stderr, finished.stderr[-2000:]
        last = finished.stderr.strip().splitlines()[-1]
        assert f"{data_file}: truncated or corrupt checkpoint data" in last, finished.stderr[-2000:]
