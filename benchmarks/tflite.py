"""TFLite export benchmark (not a test): conversion time, file size and latency in the default interpreter.

    python benchmarks/tflite.py                                   # every model at 256, paper widths
    python benchmarks/tflite.py --models deepfill_v2 --size 512 --cnum 16 --threads 2

Each model gets random weights (speed does not depend on the values), is exported with
``tfinpaint.export.export_tflite`` at ``--size`` x ``--size`` and run in ``tf.lite.Interpreter(model_path=...)``
with no options but ``num_threads`` (the XNNPACK delegate is on, as in an app). Latency is the median of
``--repeats`` invocations after one warm-up; "vs API" is the largest difference in grey levels from the Python
API on the same random image and centred hole (``export.verify_tflite``).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfinpaint import export  # noqa: E402
from tfinpaint.inference import api  # noqa: E402

MODELS = ("glcic", "pconv", "deepfill_v1", "deepfill_v2", "cra")


def _randomise(generator, seed=0):
    rng = np.random.default_rng(seed)
    for variable in generator.trainable_variables:
        shape = tuple(variable.shape)
        scale = np.sqrt(2.0 / np.prod(shape[:-1])) if len(shape) >= 2 else 0.1
        value = rng.normal(0.0, scale, shape) + (len(shape) < 2 and "gamma" in variable.path)
        variable.assign(value.astype(np.float32))


def bench(name, size, cnum, threads, repeats, folder):
    options = {"cnum": cnum} if cnum else {}
    if name == "glcic":
        options["image_size"] = max(64, (size + 63) // 64 * 64)
    generator = api.build_generator(name, dict(options))
    _randomise(generator)
    inpainter = api.Inpainter(generator, name, options)
    path = os.path.join(folder, f"{name}.tflite")
    start = time.perf_counter()
    ops = export.export_tflite(inpainter, path, size)
    convert_s = time.perf_counter() - start
    interpreter = tf.lite.Interpreter(model_path=path, num_threads=threads)
    interpreter.allocate_tensors()
    rng = np.random.default_rng(1)
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], rng.integers(0, 256, detail["shape"]).astype(np.uint8))
    interpreter.invoke()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    difference = export.verify_tflite(inpainter, path, size)
    return ops, convert_s, os.path.getsize(path) / 2**20, 1000 * float(np.median(times)), difference


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--cnum", type=int, default=0, help="generator width (0: the paper width)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"TFLite, {args.size} x {args.size}, cnum {args.cnum or 'paper'}, {args.threads} thread(s), "
          f"default interpreter (XNNPACK), median of {args.repeats}")
    print(f"{'model':<12} {'ops':<12} {'convert s':>9} {'MB':>7} {'latency ms':>10} {'vs API':>6}")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            ops, convert_s, size_mb, latency_ms, difference = bench(name, args.size, args.cnum, args.threads,
                                                                    args.repeats, folder)
            ops = "builtin" if ops == export.BUILTIN_OPS else "select TF"
            print(f"{name:<12} {ops:<12} {convert_s:>9.1f} {size_mb:>7.1f} {latency_ms:>10.0f} {difference:>6}")


if __name__ == "__main__":
    main()
