"""The generic trainer with a tiny test-only model: losses, weight updates, phases and critic steps,
checkpoint round trips, resume, NaN handling, mixed precision, the CLI flags, and a few real steps of every
model of the zoo at small width."""
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinpaint.checkpoints import restore_generator
from tfinpaint.models.registry import ModelBundle
from tfinpaint.training.recipe import Phase, Recipe
from tfinpaint.training.trainer import NonFiniteLossError, TrainConfig, Trainer, phase_lengths

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 32


# ------------------------------------------------------------------------------------------------ tiny model
class TinyGenerator(keras.Model):
    """Two conv stages (coarse, refined) on the masked image and the mask. The refinement layers sit in a list,
    like most of the zoo's layers: Keras 3 hides those from TensorFlow's checkpoint object graph. Layers are
    named, as the zoo's are, so their paths (the checkpoint keys) do not depend on what the process built
    before."""

    size_factor = 4

    def __init__(self, cnum=4, **kwargs):
        super().__init__(**kwargs)
        self.cnum = cnum
        self.coarse_hidden = keras.layers.Conv2D(cnum, 3, padding="same", activation="relu", name="coarse_hidden")
        self.coarse_out = keras.layers.Conv2D(3, 3, padding="same", name="coarse_out")
        self.refine = [keras.layers.Conv2D(cnum, 3, padding="same", activation="relu", name="refine_hidden"),
                       keras.layers.Conv2D(3, 3, padding="same", name="refine_out")]

    def call(self, image, mask, training=None):
        image = tf.cast(image, self.compute_dtype)
        mask = tf.cast(mask, self.compute_dtype)
        x = tf.concat([image * (1.0 - mask), mask], axis=-1)
        coarse = tf.sigmoid(self.coarse_out(self.coarse_hidden(x)))
        blended = coarse * mask + image * (1.0 - mask)
        raw = tf.concat([blended, mask], axis=-1)
        for layer in self.refine:
            raw = layer(raw)
        raw = tf.sigmoid(raw)
        output = raw * mask + image * (1.0 - mask)
        return {key: tf.cast(value, tf.float32) for key, value in
                (("output", output), ("raw", raw), ("coarse", coarse))}

    def get_config(self):
        return {**super().get_config(), "cnum": self.cnum}


class TinyCritic(keras.Model):
    def __init__(self, dnum=4, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(dnum, 3, strides=2, padding="same", activation="relu", name="conv")
        self.score = keras.layers.Dense(1, name="score")

    def call(self, image, training=None):
        features = self.conv(tf.cast(image, self.compute_dtype))
        return tf.cast(self.score(tf.reduce_mean(features, axis=[1, 2])), tf.float32)


def tiny_generator_loss(models, batch, weights, training):
    outputs = models.generator(batch["image"], batch["mask"], training=training)
    l1 = tf.reduce_mean(tf.abs(outputs["raw"] - batch["image"])) + tf.reduce_mean(
        tf.abs(outputs["coarse"] - batch["image"]))
    gan = tf.reduce_mean(tf.nn.softplus(-models.discriminators["critic"](outputs["output"], training=training)))
    return {"l1": l1, "gan": gan, "total": weights["l1"] * l1 + weights["gan"] * gan}


def tiny_discriminator_loss(models, batch, weights, training):
    fake = tf.stop_gradient(models.generator(batch["image"], batch["mask"], training=training)["output"])
    critic = models.discriminators["critic"]
    real_score = critic(batch["image"], training=training)
    fake_score = critic(fake, training=training)
    bce = tf.reduce_mean(tf.nn.softplus(-real_score)) + tf.reduce_mean(tf.nn.softplus(fake_score))
    return {"bce": bce, "total": weights["gan"] * bce}


PHASE_STARTS = []


def _record_start(name):
    return lambda models: PHASE_STARTS.append(name)


def _send_sigterm(models):
    os.kill(os.getpid(), signal.SIGTERM)


def build_tiny(cnum=4, dnum=4, phases="gan", critic_steps=1, image_size=SIZE, sigterm_on_start=False):
    """A GAN recipe ("gan": one phase) or a GLCIC-like schedule ("three": G only, D only, joint).
    sigterm_on_start: the process sends itself SIGTERM when training starts."""
    if phases == "three":
        phase_list = [
            Phase("completion", steps=2, train_discriminator=False, loss_weights={"gan": 0.0},
                  on_start=_record_start("completion")),
            Phase("discriminator", steps=1, train_generator=False, on_start=_record_start("discriminator")),
            Phase("joint", steps=3, critic_steps=critic_steps, g_learning_rate=5e-3, d_learning_rate=2e-3,
                  on_start=_record_start("joint")),
        ]
    else:
        phase_list = [Phase("adversarial", critic_steps=critic_steps,
                            on_start=_send_sigterm if sigterm_on_start else None)]
    recipe = Recipe(
        generator_loss=tiny_generator_loss,
        discriminator_loss=tiny_discriminator_loss,
        loss_weights={"l1": 1.0, "gan": 0.1},
        g_optimizer={"class_name": "Adam", "learning_rate": 1e-2},
        d_optimizer={"class_name": "Adam", "learning_rate": 1e-2},
        phases=phase_list,
        image_size=image_size,
        batch_size=4,
    )
    return ModelBundle(TinyGenerator(cnum), {"critic": TinyCritic(dnum)}, recipe)


def random_batches(batch_size, shard=(1, 0), start_index=0, size=SIZE):
    """A deterministic stream of smooth random images with a square hole, element i from seed i."""

    def element(index):
        rng = np.random.default_rng(int(index))
        coarse = rng.random((size // 4, size // 4, 3), dtype=np.float32)
        image = np.repeat(np.repeat(coarse, 4, axis=0), 4, axis=1)
        mask = np.zeros((size, size, 1), np.float32)
        top, left = rng.integers(0, size // 2, size=2)
        mask[top:top + size // 2, left:left + size // 2] = 1.0
        return image, mask

    def load(index):
        image, mask = tf.numpy_function(element, [index], [tf.float32, tf.float32])
        return {"image": tf.ensure_shape(image, [size, size, 3]), "mask": tf.ensure_shape(mask, [size, size, 1])}

    stream = tf.data.Dataset.counter(start_index + 1_000_000 * shard[1])
    return stream.map(load).batch(batch_size, drop_remainder=True)


def tiny_config(tmp_path, **overrides):
    settings = dict(batch_size=4, image_size=SIZE, max_steps=3, ckpt_dir=str(tmp_path / "ckpt"), save_every=0,
                    log_every=1, preview_every=2, progress=False, seed=1)
    settings.update(overrides)
    return TrainConfig(**settings)


def all_weights(trainer):
    networks = [trainer.generator] + list(trainer.discriminators.values())
    return [variable.numpy().copy() for network in networks for variable in network.weights]


def event_tags(logdir):
    tags = set()
    for name in os.listdir(logdir):
        if name.startswith("events.out.tfevents"):
            for event in tf.compat.v1.train.summary_iterator(os.path.join(logdir, name)):
                tags.update(value.tag for value in event.summary.value)
    return tags


# ------------------------------------------------------------------------------------------------ phases
def test_phase_lengths_keep_nominal_lengths_and_extend_the_open_phase():
    phases = [Phase("a", steps=3), Phase("b", steps=None), Phase("c", steps=2)]
    assert phase_lengths(phases, 20) == [3, 15, 2]
    assert phase_lengths([Phase("a", steps=3), Phase("b", steps=5)], 20) == [3, 17]


def test_phase_lengths_scale_down_proportionally_with_at_least_one_step():
    glcic = [Phase("c", steps=90_000), Phase("d", steps=10_000), Phase("joint", steps=400_000)]
    assert phase_lengths(glcic, 50) == [9, 1, 40]
    assert phase_lengths(glcic, 1000) == [180, 20, 800]
    # 10 steps: 1.8 / 0.2 / 8 -> every phase at least one step, the total stays 10.
    lengths = phase_lengths(glcic, 10)
    assert sum(lengths) == 10 and min(lengths) >= 1
    assert phase_lengths(glcic, 2) == [1, 1, 1]  # never fewer steps than phases
    assert phase_lengths([Phase("a", steps=100), Phase("b", steps=None)], 10) == [5, 5]


# ------------------------------------------------------------------------------------------------ training
def test_training_updates_both_networks_writes_monitoring_and_restores(tmp_path):
    trainer = Trainer(build_tiny, {"cnum": 4}, tiny_config(tmp_path, val_every=3))
    before = all_weights(trainer)
    result = trainer.fit(random_batches, val_data=random_batches(4, start_index=10_000).take(2))
    assert result["step"] == 3 and set(result["losses"]) == {"d/bce", "d/total", "g/l1", "g/gan", "g/total"}
    assert all(np.isfinite(value) for value in result["losses"].values())
    generator_changed = [not np.array_equal(a, b) for a, b in zip(before, all_weights(trainer))]
    num_generator = len(trainer.generator.weights)
    assert all(generator_changed[:num_generator]) and all(generator_changed[num_generator:])
    assert int(trainer.g_optimizer.iterations.numpy()) == 3 and int(trainer.d_optimizer.iterations.numpy()) == 3

    ckpt_dir = tmp_path / "ckpt"
    with open(ckpt_dir / "model.json") as handle:
        stored = json.load(handle)
    assert stored["model"].endswith(":build_tiny") and stored["options"] == {"cnum": 4, "image_size": SIZE}
    previews = sorted(os.listdir(ckpt_dir / "logs" / "previews"))
    assert previews == ["step_0000002.png", "step_0000003.png"]
    assert tf.io.decode_png(tf.io.read_file(str(ckpt_dir / "logs" / "previews" / previews[-1]))).shape == (
        4 * SIZE, 4 * SIZE, 3)  # 4 samples x (input | mask | coarse | output)
    assert {"g/total", "g/l1", "d/bce", "lr/generator", "lr/discriminator", "steps_per_sec", "preview",
            "val/l1_hole", "val/psnr"} <= event_tags(ckpt_dir / "logs")

    # A new trainer on the folder restores identical weights, optimizer state and step.
    restored = Trainer(build_tiny, {"cnum": 4}, tiny_config(tmp_path, seed=7))
    assert restored.restored_from.endswith("ckpt-3") and int(restored.step.numpy()) == 3
    for a, b in zip(all_weights(trainer), all_weights(restored)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(trainer.g_optimizer.variables, restored.g_optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    # Inference restores the generator alone from the folder.
    generator = build_tiny(cnum=4).generator
    generator(tf.zeros([1, SIZE, SIZE, 3]), tf.zeros([1, SIZE, SIZE, 1]))
    assert restore_generator(generator, ckpt_dir).endswith("ckpt-3")
    for a, b in zip(trainer.generator.weights, generator.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    other = tf.train.Checkpoint(unrelated=tf.Variable(1.0)).save(str(tmp_path / "other" / "ckpt"))
    with pytest.raises(ValueError, match="does not hold this generator's weights"):
        restore_generator(generator, other)


def test_resume_continues_at_the_same_step_on_the_same_data(tmp_path):
    """3 steps + resume to 5 steps == 5 uninterrupted steps, data stream included."""
    straight = Trainer(build_tiny, {}, tiny_config(tmp_path / "a", max_steps=5, preview_every=0))
    straight.fit(random_batches)

    first = Trainer(build_tiny, {}, tiny_config(tmp_path / "b", max_steps=3, preview_every=0))
    first.fit(random_batches)
    consumed = []

    def recording(batch_size, shard, start_index):
        consumed.append(start_index)
        return random_batches(batch_size, shard, start_index)

    second = Trainer(build_tiny, {}, tiny_config(tmp_path / "b", max_steps=5, preview_every=0))
    assert int(second.step.numpy()) == 3
    result = second.fit(recording)
    assert result["step"] == 5 and int(second.g_optimizer.iterations.numpy()) == 5
    assert consumed == [3 * 2 * 4]  # 3 steps x (1 critic + 1 generator batch) x 4 images
    assert sorted(os.listdir(tmp_path / "b" / "ckpt"))[:4] == ["checkpoint", "ckpt-3.data-00000-of-00001",
                                                               "ckpt-3.index", "ckpt-5.data-00000-of-00001"]
    # Only the random streams of the losses could differ; this recipe has none, so the weights agree.
    for a, b in zip(all_weights(straight), all_weights(second)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_phases_critic_steps_learning_rates_and_hooks(tmp_path):
    PHASE_STARTS.clear()
    trainer = Trainer(build_tiny, {"phases": "three", "critic_steps": 2}, tiny_config(tmp_path, max_steps=6))
    assert trainer.lengths == [2, 1, 3]
    trainer.fit(random_batches)
    assert PHASE_STARTS == ["completion", "discriminator", "joint"]
    # G: 2 (completion) + 3 (joint); D: 1 (discriminator phase) + 3 x 2 critic steps.
    assert int(trainer.g_optimizer.iterations.numpy()) == 5
    assert int(trainer.d_optimizer.iterations.numpy()) == 7
    assert trainer.batches_consumed(6) == 2 * 1 + 1 * 1 + 3 * 3
    np.testing.assert_allclose(float(trainer.g_optimizer.learning_rate.numpy()), 5e-3)
    np.testing.assert_allclose(float(trainer.d_optimizer.learning_rate.numpy()), 2e-3)
    assert int(trainer.phase.numpy()) == 2

    # --lr scales the whole schedule; resuming inside the last phase re-runs only its hook.
    PHASE_STARTS.clear()
    resumed = Trainer(build_tiny, {"phases": "three", "critic_steps": 2},
                      tiny_config(tmp_path, max_steps=7, learning_rate=1e-3))
    resumed.fit(random_batches)
    assert PHASE_STARTS == ["joint"]
    np.testing.assert_allclose(float(resumed.g_optimizer.learning_rate.numpy()), 5e-4)
    assert int(resumed.d_optimizer.iterations.numpy()) == 9


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    Trainer(build_tiny, {}, tiny_config(tmp_path, max_steps=2, preview_every=0)).fit(random_batches)
    ckpt_dir = tmp_path / "ckpt"
    files_before = sorted(os.listdir(ckpt_dir))
    good = Trainer(build_tiny, {}, tiny_config(tmp_path, max_steps=2))
    broken = Trainer(build_tiny, {}, tiny_config(tmp_path, max_steps=4, save_every=1,
                                                  loss_weights={"l1": float("nan")}))
    with pytest.raises(NonFiniteLossError, match=r"step 3: loss .*g/total = nan.*ckpt-2"):
        broken.fit(random_batches)
    assert sorted(os.listdir(ckpt_dir)) == files_before
    assert tf.train.latest_checkpoint(str(ckpt_dir)).endswith("ckpt-2")
    again = Trainer(build_tiny, {}, tiny_config(tmp_path, max_steps=2))
    for a, b in zip(all_weights(good), all_weights(again)):
        np.testing.assert_array_equal(a, b)


def test_sigterm_saves_a_checkpoint_and_stops(tmp_path):
    previous = signal.getsignal(signal.SIGTERM)
    trainer = Trainer(build_tiny, {"sigterm_on_start": True}, tiny_config(tmp_path, max_steps=50, preview_every=0))
    result = trainer.fit(random_batches)
    assert result["stopped_by"] == "SIGTERM" and result["step"] == 1
    assert result["checkpoint"] == str(tmp_path / "ckpt" / "ckpt-1")
    assert signal.getsignal(signal.SIGTERM) is previous


def _write_photos(folder, count=3):
    rng = np.random.default_rng(0)
    folder.mkdir()
    for index in range(count):
        pixels = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
        tf.io.write_file(str(folder / f"photo{index}.png"), tf.io.encode_png(pixels))
    return folder


def _latest_step(ckpt_dir):
    latest = tf.train.latest_checkpoint(str(ckpt_dir))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


def test_cli_resumes_after_sigkill_without_corrupt_files(tmp_path):
    photos = _write_photos(tmp_path / "photos")
    ckpt_dir = tmp_path / "ckpt"
    command = [sys.executable, "train.py", "--model", "tests.test_trainer:build_tiny", "--__flist__", str(photos),
               "--img_size", "32", "--batch_size", "2", "--ckpt_dir", str(ckpt_dir), "--save_every", "3",
               "--keep_checkpoints", "2", "--preview_every", "0", "--__lambda_l1__", "2.0", "--__lambda_gan__", "0.5",
               "--val_flist", str(photos), "--val_every", "2"]
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    process = subprocess.Popen(command + ["--max_steps", "100000"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while _latest_step(ckpt_dir) < 9:
            assert process.poll() is None and time.time() < deadline, "training did not reach step 9"
            time.sleep(0.1)
        process.send_signal(signal.SIGKILL)  # no chance to clean up, possibly in the middle of a save
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    killed_at = _latest_step(ckpt_dir)
    state = tf.train.get_checkpoint_state(str(ckpt_dir))
    assert len(state.all_model_checkpoint_paths) == 2  # --keep_checkpoints 2
    for path in state.all_model_checkpoint_paths:
        stored = tf.train.load_checkpoint(path).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")
        assert stored == int(path.rsplit("-", 1)[1])

    finished = subprocess.run(command + ["--max_steps", str(killed_at + 3)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=240)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert f"resumed from {ckpt_dir / f'ckpt-{killed_at}'} at step {killed_at}" in finished.stdout
    assert "loss weights l1=2, gan=0.5" in finished.stdout  # "--__lambda_l1__ 2.0" with a space
    assert f"done at step {killed_at + 3}" in finished.stdout
    assert _latest_step(ckpt_dir) == killed_at + 3
    assert not [name for name in os.listdir(ckpt_dir) if "_temp" in name]


def test_cli_flags_parse_as_users_type_them():
    from absl import flags

    from tfinpaint.flags import declare
    from tfinpaint.training import cli

    values = flags.FlagValues()
    declare("train", cli.COMMAND_FLAGS, values)
    values(["train.py", "--__lambda_l1__", "1.0", "--flist", "photos", "--__mask_type__", "bbox",
            "--mixed_precision", "--__lambda_gan__=0.5", "--cnum", "16", "--__gen_masks__", "false"])
    assert values["__lambda_l1__"].value == 1.0 and values["__lambda_gan__"].value == 0.5
    assert values["__flist__"].value == "photos" and values["__mask_type__"].value == "bbox"
    assert values["mixed_precision"].value is True and values["__gen_masks__"].value is False
    assert values["model"].value is None and values["cnum"].value == 16  # None: cli.DEFAULT_MODEL
    assert values["__lambda_perceptual__"].value is None and values["max_steps"].value == 1000
    assert cli.parse_model_options("levels=4, bgr=False,name=x") == {"levels": 4, "bgr": False, "name": "x"}
    with pytest.raises(ValueError, match="expected key=value"):
        cli.parse_model_options("levels")


def test_validation_scores_known_cases(tmp_path):
    trainer = Trainer(build_tiny, {}, tiny_config(tmp_path))
    batch = next(iter(random_batches(4)))
    no_holes = {"image": batch["image"], "mask": tf.zeros_like(batch["mask"])}
    perfect = trainer.evaluate([no_holes])  # output == input exactly: no error, PSNR at its 100 dB cap
    assert perfect["val/l1_hole"] == 0.0 and perfect["val/psnr"] == pytest.approx(100.0)
    outputs = trainer.generator(batch["image"], batch["mask"], training=False)
    image, mask = batch["image"].numpy(), batch["mask"].numpy()
    error = np.abs(outputs["output"].numpy() - image)
    expected_l1 = (error * mask).sum() / (mask.sum() * 3)
    mse = ((outputs["output"].numpy() - image) ** 2).mean(axis=(1, 2, 3))
    scores = trainer.evaluate([batch])
    np.testing.assert_allclose(scores["val/l1_hole"], expected_l1, rtol=1e-5)
    np.testing.assert_allclose(scores["val/psnr"], np.mean(-10 * np.log10(mse)), rtol=1e-5)


@pytest.mark.parametrize("policy", [True, "mixed_float16"])
def test_mixed_precision_training_keeps_float32_variables(tmp_path, policy):
    """True on CPU means bfloat16; float16 (the GPU choice, forced here) adds dynamic loss scaling."""
    trainer = Trainer(build_tiny, {}, tiny_config(tmp_path, max_steps=2, mixed_precision=policy, preview_every=0))
    expected = "mixed_bfloat16" if policy is True else "mixed_float16"
    assert trainer.mixed_precision_policy == expected
    assert trainer.generator.compute_dtype == expected.split("_")[1]
    assert isinstance(trainer.g_optimizer, keras.optimizers.LossScaleOptimizer) == (expected == "mixed_float16")
    assert all(variable.dtype == "float32" for variable in trainer.generator.trainable_variables)
    before = all_weights(trainer)
    result = trainer.fit(random_batches)
    assert all(np.isfinite(value) for value in result["losses"].values())
    assert all(not np.array_equal(a, b) for a, b in zip(before, all_weights(trainer)))


def test_other_model_in_the_same_folder_is_a_clear_error(tmp_path):
    Trainer(build_tiny, {"cnum": 4}, tiny_config(tmp_path, max_steps=1, preview_every=0)).fit(random_batches)
    with pytest.raises(ValueError, match="holds checkpoints of model .*build_tiny.*cnum.*4"):
        Trainer(build_tiny, {"cnum": 8}, tiny_config(tmp_path))


def test_image_size_must_match_the_size_factor(tmp_path):
    with pytest.raises(ValueError, match="must be a positive multiple of 4"):
        Trainer(build_tiny, {}, tiny_config(tmp_path, image_size=30))


# ------------------------------------------------------------------------------------------------ the zoo
# Smallest widths and sizes each model accepts (GLCIC's critic needs a multiple of 64; PConv with 3 levels).
SMALL_MODELS = {
    "cra": ({"cnum": 8, "dnum": 8}, 32),
    "deepfill_v1": ({"cnum": 8, "dnum": 8}, 32),
    "deepfill_v2": ({"cnum": 8, "dnum": 8}, 32),
    "glcic": ({"cnum": 8, "dnum": 8}, 64),
    "pconv": ({"cnum": 8, "levels": 3}, 32),
}


@pytest.fixture(scope="module")
def random_vgg_weights(tmp_path_factory):
    """A randomly initialised VGG16 'notop' weights file: PConv's losses need one and nothing is downloaded."""
    path = tmp_path_factory.mktemp("vgg") / "random_vgg16_notop.weights.h5"
    keras.applications.VGG16(weights=None, include_top=False).save_weights(str(path))
    return str(path)


@pytest.fixture
def without_graph_optimizer():
    """Grappler's optimisation passes take longer than two steps of a small model run: switched off here."""
    saved = tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    yield
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": saved})


def test_every_registered_model_has_a_small_training_setting():
    from tfinpaint.models import names

    assert sorted(SMALL_MODELS) == names()


@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
def test_every_model_trains_and_restores(name, tmp_path, random_vgg_weights, without_graph_optimizer):
    """The last phase of each recipe (critic and generator updates) for two steps at small width: finite
    losses, every trained network changes, and a checkpoint restores the exact weights."""
    options, size = SMALL_MODELS[name]
    if name == "pconv":
        options = dict(options, vgg_weights=random_vgg_weights)
    trainer = Trainer(name, options, tiny_config(tmp_path, batch_size=2, image_size=size, max_steps=2))
    phase = trainer.enter_phase(len(trainer.recipe.phases) - 1)
    iterator = iter(trainer.distribute(lambda **kwargs: random_batches(size=size, **kwargs)))
    trained = ({"generator": trainer.generator} if phase.train_generator else {}) | (
        trainer.discriminators if phase.train_discriminator else {})
    before = {key: [v.numpy().copy() for v in network.trainable_variables] for key, network in trained.items()}
    logs = trainer.train_step(iterator)
    assert logs and all(np.isfinite(value) for value in logs.values()), logs
    for key, network in trained.items():
        changed = [not np.array_equal(a, v.numpy()) for a, v in zip(before[key], network.trainable_variables)]
        assert any(changed), f"{name}: no weight of {key} changed"
    trainer.step.assign(1)
    path = trainer.save()
    saved = all_weights(trainer)
    trainer.train_step(iterator)
    assert any(not np.array_equal(a, b) for a, b in zip(saved, all_weights(trainer)))
    trainer.checkpoint.restore(path).assert_existing_objects_matched()
    for a, b in zip(saved, all_weights(trainer)):
        np.testing.assert_array_equal(a, b)
    assert int(trainer.step.numpy()) == 1


def _tiny_command(photos, ckpt_dir, *extra):
    return [sys.executable, "train.py", "--model", "tests.test_trainer:build_tiny", "--__flist__", str(photos),
            "--img_size", "32", "--batch_size", "2", "--ckpt_dir", str(ckpt_dir), "--preview_every", "0", *extra]


CLI_ENV = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")


def test_cli_survives_a_closed_progress_pipe_and_ctrl_c_saves_and_exits_non_zero(tmp_path):
    """`train.py | tee log`, then Ctrl-C: tee dies first, so progress writes hit a closed pipe. Training goes
    on, the interrupt saves the promised checkpoint and the exit code says the run was interrupted."""
    photos = _write_photos(tmp_path / "photos")
    ckpt_dir = tmp_path / "ckpt"
    process = subprocess.Popen(_tiny_command(photos, ckpt_dir, "--max_steps", "100000", "--log_every", "1",
                                             "--save_every", "4"),
                               cwd=REPO, env=CLI_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        for line in process.stdout:  # the first progress line, then the reader goes away
            assert time.time() < deadline
            if line.startswith("step "):
                break
        process.stdout.close()
        while _latest_step(ckpt_dir) < 8:  # two more checkpoints: training went on after the pipe broke
            assert process.poll() is None and time.time() < deadline, process.stderr.read()[-3000:]
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGINT, stderr[-3000:]
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr[-3000:]
    stopped = [line for line in stderr.splitlines() if line.startswith("stopped by SIGINT at step ")]
    assert len(stopped) == 1, stderr[-3000:]
    step = int(stopped[0].split("at step ")[1].split(";")[0])
    assert _latest_step(ckpt_dir) == step >= 8 and stopped[0].endswith(f"checkpoint {ckpt_dir / f'ckpt-{step}'}")


_FAILING_DISK = """
import errno, os, sys
import tensorflow as tf
real_save = tf.train.CheckpointManager.save

def save(self, checkpoint_number=None, **kwargs):
    if checkpoint_number is not None and checkpoint_number >= 4:  # the disk fills up after step 2's save
        os.makedirs(os.path.join(self.directory, f"ckpt-{checkpoint_number}_temp"), exist_ok=True)
        with open(os.path.join(self.directory, f"ckpt-{checkpoint_number}.index"), "wb") as handle:
            handle.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_save(self, checkpoint_number=checkpoint_number, **kwargs)

tf.train.CheckpointManager.save = save
sys.argv = ["train.py"] + sys.argv[1:]
from absl import app
from tfinpaint.training.cli import main
app.run(main)
"""


def test_cli_failed_save_is_one_line_keeps_the_last_good_checkpoint_and_counts_lost_steps(tmp_path):
    photos = _write_photos(tmp_path / "photos")
    ckpt_dir = tmp_path / "ckpt"
    command = _tiny_command(photos, ckpt_dir, "--max_steps", "10", "--save_every", "2")
    finished = subprocess.run([sys.executable, "-c", _FAILING_DISK, *command[2:]], cwd=REPO, env=CLI_ENV,
                              capture_output=True, text=True, timeout=240)
    assert finished.returncode == 1, finished.stderr[-3000:]
    assert "Traceback" not in finished.stderr, finished.stderr[-3000:]
    last = finished.stderr.strip().splitlines()[-1]
    assert last == (f"train.py: error: {ckpt_dir}: saving the checkpoint of step 4 failed (No space left on "
                    f"device); the last good checkpoint {ckpt_dir / 'ckpt-2'} is kept: 2 step(s) lost"), last
    assert sorted(os.listdir(ckpt_dir)) == ["checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index", "logs",
                                            "model.json"]
    assert Trainer(build_tiny, {}, tiny_config(tmp_path, max_steps=10)).restored_from == str(ckpt_dir / "ckpt-2")


def test_cli_newcomer_sequence_clear_errors_and_file_permissions(tmp_path):
    """The README's order of commands: a narrow first run, then one with the default width into the same
    folder (an error that says what differs and how to fix it), a negative loss weight (refused), a run
    started from the first one's weights (--init_from). Files follow the umask (not 0600)."""
    photos = _write_photos(tmp_path / "photos")
    ckpt_dir = tmp_path / "ckpt"

    def run(*extra):
        return subprocess.run(_tiny_command(photos, ckpt_dir, *extra), cwd=REPO, env=CLI_ENV, capture_output=True,
                              text=True, timeout=240, preexec_fn=lambda: os.umask(0o022))

    first = run("--cnum", "8", "--max_steps", "1", "--preview_every", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    written = [os.path.join(folder, name) for folder, _, names in os.walk(ckpt_dir) for name in names]
    assert any(name.endswith(".png") for name in written) and any("tfevents" in name for name in written)
    modes = {os.path.relpath(path, ckpt_dir): oct(os.stat(path).st_mode & 0o777) for path in written}
    assert set(modes.values()) == {"0o644"}, modes

    second = run("--max_steps", "2")
    assert second.returncode == 1
    last = second.stderr.strip().splitlines()[-1]
    assert "cnum 8 there, unset (the default) in this run" in last, last
    assert "--ckpt_dir" in last and "--cnum 8" in last and "Traceback" not in second.stderr

    negative = run("--cnum", "8", "--max_steps", "2", "--__lambda_l1__", "-1")
    assert negative.returncode == 1
    assert negative.stderr.strip().splitlines()[-1] == (
        "train.py: error: --__lambda_l1__ -1: loss weights must be >= 0 (a negative weight makes training "
        "increase that loss)")

    started = subprocess.run(_tiny_command(photos, tmp_path / "second", "--cnum", "8", "--max_steps", "1",
                                           "--init_from", str(ckpt_dir)),
                             cwd=REPO, env=CLI_ENV, capture_output=True, text=True, timeout=240)
    assert started.returncode == 0, started.stderr[-3000:]
    assert f"initialised from {ckpt_dir}: fresh optimizers, step 0" in started.stdout
    assert _latest_step(tmp_path / "second") == 1


def test_cli_pconv_trains_without_vgg_weights_when_perceptual_and_style_are_off(tmp_path):
    photos = _write_photos(tmp_path / "photos")
    env = dict(CLI_ENV, KERAS_HOME=str(tmp_path / "keras_home"))  # no cached VGG16 file can be found
    command = [sys.executable, "train.py", "--model", "pconv", "--cnum", "8", "--model_options", "levels=3",
               "--__flist__", str(photos), "--img_size", "32", "--batch_size", "2", "--max_steps", "2",
               "--ckpt_dir", str(tmp_path / "ckpt"), "--preview_every", "0", "--__lambda_perceptual__", "0",
               "--lambda_style", "0"]
    finished = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "loss weights" in finished.stdout and "perceptual=0" in finished.stdout and "style=0" in finished.stdout
    assert _latest_step(tmp_path / "ckpt") == 2


class _FakeTerminal:
    """A text stream that says it is a terminal; ``broken`` makes every write fail like a closed pipe."""

    def __init__(self, broken=False):
        self.parts, self.broken = [], broken

    def isatty(self):
        return True

    def fileno(self):
        raise OSError("no file descriptor")

    def write(self, text):
        if self.broken:
            raise BrokenPipeError(32, "Broken pipe")
        self.parts.append(text)
        return len(text)

    def flush(self):
        if self.broken:
            raise BrokenPipeError(32, "Broken pipe")


def test_console_progress_draws_a_keras_progbar_on_a_terminal_and_survives_a_broken_one(monkeypatch):
    from tfinpaint.training import cli
    from tfinpaint.training.recipe import Phase

    terminal = _FakeTerminal()
    monkeypatch.setattr(sys, "stdout", terminal)  # keras.utils.Progbar writes to sys.stdout
    progress = cli.ConsoleProgress(every=1)
    progress.on_train_begin(2, 6)
    progress.on_phase_begin(0, Phase("adversarial"), 2, 6, {"l1": 1.0, "gan": 0.1})
    for step in (3, 4):
        progress.on_step_end(step, {"g/total": 0.5 / step}, 10.0)
        time.sleep(0.06)  # Progbar redraws at most every 50 ms
    progress.on_train_end({})
    output = "".join(terminal.parts)
    assert "phase 1: 'adversarial': steps 3-6, loss weights l1=1, gan=0.1" in output
    assert "2/4" in output and "\r" in output  # the bar counts this session's steps, redrawn in place
    assert "g/total: 0.1250" in output  # the step's own loss (stateful), not a running mean

    broken = _FakeTerminal(broken=True)
    monkeypatch.setattr(sys, "stdout", broken)
    progress = cli.ConsoleProgress(every=1)
    progress.on_train_begin(0, 3)
    progress.on_phase_begin(0, Phase("adversarial"), 0, 3, {"l1": 1.0})
    progress.on_step_end(1, {"g/total": 0.5}, 10.0)  # no exception: output is switched off
    assert progress.broken
