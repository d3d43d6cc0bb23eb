"""High-resolution benchmark (not a test): median latency, peak memory and graph traces per model and strategy on
12 and 24 megapixel photos with holes of 1, 5 and 10 % of the area.

    python benchmarks/high_res.py                                   # every model, its default strategy
    python benchmarks/high_res.py --models deepfill_v2 --strategies crop,resize,original --sizes 24
    python benchmarks/high_res.py --sizes 108 --areas 0.0067 --repeats 1     # 12000 x 9000, one 1200 x 600 hole

Photos are the built-in sample photos (scikit-image / scikit-learn), upscaled (bicubic) to 4000 x 3000 (12 MP),
6000 x 4000 (24 MP) or 12000 x 9000 (108 MP). Masks: 1 to 3 elliptical blobs (seeded) covering the requested share
of the area; ``--sizes 108`` uses one 1200 x 600 rectangle instead. Every (model, strategy, size) runs in a fresh
subprocess, so its peak resident memory (VmHWM of the whole process, TensorFlow included: about 0.7 GB before the
first image) is its own. Models have the paper widths and random weights (speed and memory do not depend on them).
Each photo of the case runs once to warm up, then ``--repeats`` times; latency is the median over all timed runs of
all photos and masks of that size (uint8 in, uint8 out through ``tfinpaint.inference.api.Inpainter``). "traces" is the
number of graphs compiled for the whole case (one per photo size would be many; the pipeline's graph takes any size).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = {"12": (3000, 4000), "24": (4000, 6000), "108": (9000, 12000)}
MODELS = ("glcic", "deepfill_v1", "pconv", "deepfill_v2", "cra")


def _peak_rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def blob_mask(height, width, area, blobs, seed):
    """1 to 3 ellipses of equal size covering ``area`` of the image in total, at seeded non-overlapping places."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), np.uint8)
    each = area * height * width / blobs
    axis_y = int(np.sqrt(each / np.pi / 1.5))
    axis_x = int(axis_y * 1.5)
    for index in range(blobs):
        column = (index + 0.5) / blobs
        centre = (int(width * column + rng.integers(-width // 20, width // 20 + 1)),
                  int(height * rng.uniform(0.3, 0.7)))
        cv2.ellipse(mask, centre, (axis_x, axis_y), float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return mask.astype(bool)


def photos(size_key, count):
    import cv2

    from tfinpaint import data, imageio

    height, width = SIZES[size_key]
    return [cv2.resize(imageio.read_image(path), (width, height), interpolation=cv2.INTER_CUBIC)
            for path in data.sample_images()[:count]]


def run_case(model, strategy, size_key, areas, repeats, photo_count) -> dict:
    import numpy as np

    from tfinpaint.inference.api import Inpainter, build_generator

    generator = build_generator(model, {})
    inpainter = Inpainter(generator, model, {}, hd_strategy=strategy)
    cases = []
    for index, image in enumerate(photos(size_key, photo_count)):
        height, width = image.shape[:2]
        if size_key == "108":
            hole = np.zeros((height, width), bool)
            hole[height // 2 - 300:height // 2 + 300, width // 2 - 600:width // 2 + 600] = True
            cases.append((image, hole))
            continue
        for area_index, area in enumerate(areas):
            cases.append((image, blob_mask(height, width, area, 1 + (index + area_index) % 3, seed=index)))
    times, first = [], []
    for image, hole in cases:
        start = time.perf_counter()
        result = inpainter(image, hole)
        first.append(time.perf_counter() - start)
        # Known pixels exact, checked in bands of rows so the check adds little to the peak memory measured.
        for top in range(0, hole.shape[0], 256):
            rows = slice(top, top + 256)
            assert np.array_equal(result[rows][~hole[rows]], image[rows][~hole[rows]])
        for _ in range(repeats):
            start = time.perf_counter()
            inpainter(image, hole)
            times.append(time.perf_counter() - start)
    return {"model": model, "strategy": inpainter.hd_settings.strategy, "size": size_key, "cases": len(cases),
            "median_s": statistics.median(times) if times else statistics.median(first),
            "first_run_s": first[0], "peak_rss_mb": _peak_rss_mb(), "traces": inpainter.traces}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--strategies", default="default", help="comma list of original,crop,resize,cra,default")
    parser.add_argument("--sizes", default="12,24", help="comma list of 12, 24, 108 (megapixels)")
    parser.add_argument("--areas", default="0.01,0.05,0.10", help="hole shares of the image area")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--photos", type=int, default=2, help="sample photos per size")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    areas = [float(value) for value in args.areas.split(",")]
    if args.case:
        model, strategy, size_key = args.case.split(":")
        result = run_case(model, None if strategy == "default" else strategy, size_key, areas, args.repeats,
                          args.photos)
        print("RESULT " + json.dumps(result))
        return
    print("| model | strategy | photo | cases | median latency (s) | first run (s) | peak RSS (MB) | traces |")
    print("|---|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        for strategy in args.strategies.split(","):
            if strategy == "cra" and model != "cra":
                continue
            for size_key in args.sizes.split(","):
                command = [sys.executable, os.path.abspath(__file__), "--case", f"{model}:{strategy}:{size_key}",
                           "--areas", args.areas, "--repeats", str(args.repeats), "--photos", str(args.photos)]
                done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
                lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
                if done.returncode or not lines:
                    error = (done.stderr.strip().splitlines() or ["no output"])[-1]
                    print(f"| {model} | {strategy} | {size_key} MP | failed: {error} |||||")
                    continue
                r = json.loads(lines[-1][len("RESULT "):])
                print(f"| {model} | {r['strategy']} | {size_key} MP | {r['cases']} | {r['median_s']:.2f} | "
                      f"{r['first_run_s']:.2f} | {r['peak_rss_mb']:.0f} | {r['traces']} |", flush=True)


if __name__ == "__main__":
    main()
