"""The trainer under tf.distribute: 2 replicas on two logical CPUs match one device on the same global batch, and
two local worker processes under MultiWorkerMirroredStrategy train in lockstep."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import tensorflow as tf

from tests.test_trainer import REPO, SIZE, all_weights, build_tiny, random_batches, tiny_config
from tfinpaint.training.trainer import Trainer


def _fixed_batch(batch_size=4):
    rng = np.random.default_rng(42)
    image = rng.random((batch_size, SIZE, SIZE, 3), dtype=np.float32)
    mask = np.zeros((batch_size, SIZE, SIZE, 1), np.float32)
    for i in range(batch_size):
        top, left = rng.integers(0, SIZE // 2, size=2)
        mask[i, top:top + SIZE // 2, left:left + SIZE // 2] = 1.0
    return {"image": tf.constant(image), "mask": tf.constant(mask)}


def test_two_replicas_match_one_device_on_the_same_global_batch(tmp_path, two_cpu_strategy):
    assert len(tf.config.list_logical_devices("CPU")) >= 2  # conftest splits the CPU
    single = Trainer(build_tiny, {}, tiny_config(tmp_path / "one"))
    mirrored = Trainer(build_tiny, {}, tiny_config(tmp_path / "two"),
                       strategy=two_cpu_strategy)
    assert single.num_replicas == 1 and mirrored.num_replicas == 2
    for source, target in ((single.generator, mirrored.generator),
                           (single.discriminators["critic"], mirrored.discriminators["critic"])):
        target.set_weights(source.get_weights())

    batch = _fixed_batch()
    logs = []
    for trainer in (single, mirrored):
        trainer.enter_phase(0)
        dataset = tf.data.Dataset.from_tensors(batch).repeat()  # every step sees the same global batch of 4
        iterator = iter(trainer.strategy.experimental_distribute_dataset(dataset))
        logs.append([trainer.train_step(iterator) for _ in range(2)])
    for one, two in zip(*logs):
        assert one.keys() == two.keys()
        for key in one:
            np.testing.assert_allclose(two[key], one[key], rtol=1e-5, atol=1e-6, err_msg=key)
    # Gradients are global-batch gradients too: the weights after two updates agree.
    for a, b in zip(all_weights(single), all_weights(mirrored)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)

    # The whole loop (distributed input, previews, checkpoints) runs under the 2-replica strategy.
    result = mirrored.fit(random_batches)
    assert result["step"] == 3 and all(np.isfinite(value) for value in result["losses"].values())
    previews = sorted(os.listdir(tmp_path / "two" / "ckpt" / "logs" / "previews"))
    assert previews == ["step_0000002.png", "step_0000003.png"]
    assert tf.train.latest_checkpoint(str(tmp_path / "two" / "ckpt")).endswith("ckpt-3")


_WORKER = """
import json, sys
import numpy as np
import tensorflow as tf
from tests.test_trainer import build_tiny, random_batches, tiny_config, all_weights
from tfinpaint.training.trainer import Trainer, default_strategy
import pathlib
strategy = default_strategy()
out = pathlib.Path(sys.argv[1])
trainer = Trainer(build_tiny, {}, tiny_config(out, max_steps=3, save_every=2, preview_every=0), strategy=strategy)
result = trainer.fit(random_batches)
np.savez(out / f"worker{trainer.task_id}.npz", *all_weights(trainer))
print(json.dumps({"replicas": trainer.num_replicas, "chief": trainer.is_chief, "step": result["step"],
                  "multi_worker": isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)}))
"""


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def test_two_workers_train_in_lockstep_on_localhost(tmp_path):
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
                   TF_CONFIG=json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp_path)], cwd=REPO, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=240)
            assert process.returncode == 0, stderr[-3000:]
            outputs.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    assert [output["chief"] for output in outputs] == [True, False]
    assert all(output == dict(outputs[0], chief=output["chief"]) for output in outputs)
    assert outputs[0]["multi_worker"] and outputs[0]["replicas"] == 2
    assert outputs[0]["step"] == 3
    first, second = (np.load(tmp_path / f"worker{index}.npz") for index in range(2))
    assert len(first.files) == len(second.files) > 0
    for key in first.files:
        np.testing.assert_array_equal(first[key], second[key])
    # Only the chief's checkpoints remain; the other worker's scratch folder is gone.
    ckpt_dir = tmp_path / "ckpt"
    assert tf.train.latest_checkpoint(str(ckpt_dir)).endswith("ckpt-3")
    assert not any(name.startswith(".worker") for name in os.listdir(ckpt_dir))


_STOPPABLE_WORKER = """
import json, sys
import tensorflow as tf
from tests.test_trainer import build_tiny, random_batches, tiny_config
from tfinpaint.training.trainer import Trainer, default_strategy
import pathlib
strategy = default_strategy()
out = pathlib.Path(sys.argv[1])
trainer = Trainer(build_tiny, {}, tiny_config(out, max_steps=100000, save_every=2, preview_every=0), strategy=strategy)
result = trainer.fit(random_batches)
print(json.dumps({"chief": trainer.is_chief, "step": result["step"], "stopped_by": result["stopped_by"]}))
"""


def test_a_signal_on_one_worker_stops_every_worker_after_the_same_step(tmp_path):
    """Saving is collective: a SIGTERM that reaches one worker only must not leave the others training (they
    would wait for each other forever). The workers agree, stop after the same step and the chief saves it."""
    import signal
    import time

    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
                   TF_CONFIG=json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen([sys.executable, "-c", _STOPPABLE_WORKER, str(tmp_path)], cwd=REPO, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    ckpt_dir = str(tmp_path / "ckpt")
    outputs = []
    try:
        deadline = time.time() + 240
        while int((tf.train.latest_checkpoint(ckpt_dir) or "-0").rsplit("-", 1)[1]) < 4:
            assert all(process.poll() is None for process in processes) and time.time() < deadline
            time.sleep(0.1)
        processes[1].send_signal(signal.SIGTERM)  # the worker that is not the chief
        for process in processes:
            stdout, stderr = process.communicate(timeout=120)
            assert process.returncode == 0, stderr[-3000:]
            outputs.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    chief, other = outputs
    assert chief["chief"] and not other["chief"]
    assert other["stopped_by"] == "SIGTERM" and chief["stopped_by"] == "SIGTERM (on another worker)"
    assert chief["step"] == other["step"] >= 4
    assert tf.train.latest_checkpoint(ckpt_dir).endswith(f"ckpt-{chief['step']}")
