"""Training speed per model: steps/s and peak memory of the trainer's own steps, float32 and bf16, plus the
images/s of the data pipeline alone (is the pipeline fast enough to feed the steps?).

    python benchmarks/train_step.py                         # every model, 256x256, batch 4
    python benchmarks/train_step.py --models deepfill_v2 --size 128 --steps 5 --precisions float32

Each (model, precision) runs in a fresh process, so that its peak memory is its own (GPU: TensorFlow's peak
allocator statistic; CPU: the process's peak resident memory). Training steps read one batch cached in memory,
so they measure the model, not the pipeline; a step is the recipe's last phase (critic updates + one generator
update). PConv's perceptual losses use a randomly initialised VGG16 (only speed matters here).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up banners would break up the table

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRECISIONS = {"float32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def _peak_memory_mb() -> float:
    import resource

    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure_model(name: str, precision: str, size: int, batch: int, steps: int, warmup: int, cnum=None) -> dict:
    """Steps/s and peak memory of ``steps`` training steps after ``warmup`` (tracing) steps."""
    import keras
    import numpy as np
    import tensorflow as tf

    from tfinpaint.training.trainer import TrainConfig, Trainer

    options = {} if cnum is None else {"cnum": cnum}
    workdir = tempfile.mkdtemp(prefix="tfinpaint-bench-")
    if name == "pconv":
        vgg_path = os.path.join(workdir, "random_vgg16_notop.weights.h5")
        keras.applications.VGG16(weights=None, include_top=False).save_weights(vgg_path)
        options["vgg_weights"] = vgg_path
    config = TrainConfig(batch_size=batch, image_size=size, max_steps=warmup + steps,
                         ckpt_dir=os.path.join(workdir, "ckpt"), save_every=0, preview_every=0, progress=False,
                         mixed_precision=PRECISIONS[precision])
    trainer = Trainer(name, options, config)
    rng = np.random.default_rng(0)
    mask = np.zeros((batch, size, size, 1), np.float32)
    mask[:, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1.0
    cached = {"image": tf.constant(rng.random((batch, size, size, 3), dtype=np.float32)), "mask": tf.constant(mask)}
    trainer.enter_phase(len(trainer.recipe.phases) - 1)
    per_replica = batch // trainer.num_replicas
    iterator = iter(trainer.distribute(
        lambda batch_size, shard, start_index: tf.data.Dataset.from_tensors(
            {key: value[:per_replica] for key, value in cached.items()}).repeat()))
    for _ in range(warmup):
        trainer.train_step(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        logs = trainer.train_step(iterator)  # returns floats: every step is synchronised
    elapsed = time.perf_counter() - start
    phase = trainer.recipe.phases[-1]
    images_per_step = batch * ((phase.critic_steps if phase.train_discriminator else 0) + phase.train_generator)
    return {"model": name, "precision": precision, "steps_per_s": steps / elapsed,
            "images_per_s": steps * images_per_step / elapsed, "peak_mb": _peak_memory_mb(),
            "finite": all(np.isfinite(value) for value in logs.values())}


def measure_pipeline(size: int, batch: int, batches: int = 50) -> float:
    """Images/s of ``tfinpaint.data.make_dataset`` on the built-in sample photos (decode, crop, flip, masks)."""
    from tfinpaint import data

    iterator = iter(data.make_dataset(data.sample_images(), size, batch, mask_type="free_form", seed=0))
    for _ in range(5):  # fill the prefetch buffer and let autotuning settle
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch / (time.perf_counter() - start)


def _run_worker(args, name, precision) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--worker", name, "--precisions", precision,
               "--size", str(args.size), "--batch", str(args.batch), "--steps", str(args.steps),
               "--warmup", str(args.warmup)]
    if args.cnum:
        command += ["--cnum", str(args.cnum)]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return {"model": name, "precision": precision, "error": last[:120]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="comma-separated (default: every model)")
    parser.add_argument("--precisions", default="float32,bf16", help=f"comma-separated of {', '.join(PRECISIONS)}")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (graph tracing)")
    parser.add_argument("--cnum", type=int, default=None, help="generator width (default: the paper's)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.path.insert(0, REPO)
        print(json.dumps(measure_model(args.worker, args.precisions, args.size, args.batch, args.steps, args.warmup,
                                       args.cnum)))
        return

    sys.path.insert(0, REPO)
    import tensorflow as tf

    from tfinpaint.models import names

    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    models = args.models.split(",") if args.models else names()
    precisions = args.precisions.split(",")
    print(f"device: {devices[0].name} ({len(devices)} visible), {os.cpu_count()} CPU cores; "
          f"{args.size}x{args.size}, batch {args.batch}, {args.steps} timed steps"
          + (f", cnum {args.cnum}" if args.cnum else ""))
    print(f"{'model':<12} {'precision':<9} {'steps/s':>8} {'images/s':>9} {'peak MB':>9}")
    for name in models:
        for precision in precisions:
            row = _run_worker(args, name, precision)
            if "error" in row:
                print(f"{name:<12} {precision:<9} failed: {row['error']}")
                continue
            flag = "" if row["finite"] else "  (non-finite loss)"
            print(f"{name:<12} {precision:<9} {row['steps_per_s']:8.2f} {row['images_per_s']:9.1f} "
                  f"{row['peak_mb']:9.0f}{flag}", flush=True)
    pipeline = measure_pipeline(args.size, args.batch)
    print(f"data pipeline alone (sample photos, decode + crop + flip + free_form masks): {pipeline:.0f} images/s; "
          "images/s above is what training consumes (batch x batches per step)")


if __name__ == "__main__":
    main()
