"""Inference benchmark (not a test): latency, peak memory, multiply-accumulates and achieved GFLOP/s per model.

    python benchmarks/inference.py                     # every model at 256, 512, 1024 (+ CRA at 2K, 4K, 8K)
    python benchmarks/inference.py --models deepfill_v2 --sizes 256,512,1024,2048
    python benchmarks/inference.py --models cra --sizes 7680x4320 --repeats 2

Sizes are ``S`` (S x S) or ``WxH``. Every (model, size) runs in a fresh subprocess, so its peak resident memory
(VmHWM, the whole process: Python, TensorFlow and the model included; ``import tensorflow`` alone is about
650 MB here, the "RSS before" column is the process just before the first inference) is its own. Models have the paper
widths and random weights (speed and memory do not depend on the values). Each case runs the public inference
path, ``tfinpaint.inference.api.Inpainter`` (uint8 image in, uint8 image out): DeepFill, GLCIC and PConv at full
resolution (``max_pixels`` = the image area, so no working-region downscale), CRA through its high-resolution
path (network at 512 on the long side + contextual residual aggregation) above 512 px. The mask is a centred
rectangle of a quarter of the image area.

Latency is the median of ``--repeats`` runs after one warm-up run (the warm-up traces the graph; its time is
shown as "first run"). Multiply-accumulates (MACs) are counted analytically from the layer shapes seen in one
eager forward pass at a small size: convolutions (including partial convolution's mask sums) scale with the
image area, contextual attention (scores + patch pasting; the fuse adds only additions) and attention transfer
with its square, so the count at any size follows exactly. CRA's full-resolution residual aggregation adds
3 x N^2 x r^2 MACs (N attention cells of r x r pixels). Achieved GFLOP/s = 2 x MACs / latency, next to this
machine's own float32 matmul (2048^3) and 3x3 convolution (1 x 256 x 256 x 64 -> 64) throughput measured at the
start of the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SIZES = {
    "glcic": ["256", "512", "1024"],
    "deepfill_v1": ["256", "512", "1024"],
    "pconv": ["256", "512", "1024"],
    "deepfill_v2": ["256", "512", "1024"],
    "cra": ["256", "512", "1024", "2048x1152", "3840x2160", "7680x4320"],
}
# MACs are counted at this side (a multiple of every model's size factor) and scaled.
COUNT_SIDE = 256


def parse_size(text: str):
    """'S' -> (S, S); 'WxH' -> (H, W)."""
    parts = text.lower().split("x")
    if len(parts) == 1:
        return int(parts[0]), int(parts[0])
    if len(parts) == 2:
        return int(parts[1]), int(parts[0])
    raise ValueError(f"bad size {text!r}: use S or WxH")


def _rss_mb(field: str) -> float:
    """VmRSS (current) or VmHWM (peak) of this process from /proc, in MB."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def count_macs(generator, height: int, width: int) -> dict:
    """MACs of one forward pass of ``generator`` at ``height`` x ``width``, split into the part that scales with
    the image area ("linear") and the attention part that scales with its square ("quadratic")."""
    import numpy as np
    import tensorflow as tf

    counts = {"linear": 0, "quadratic": 0}
    originals = []

    def record(layer, kind):
        original = layer.call

        def call(*args, **kwargs):
            outputs = original(*args, **kwargs)
            inputs = args[0]
            if kind == "Conv2D":
                out_shape = outputs.shape
                kh, kw, cin_per_group, _ = layer.kernel.shape
                counts["linear"] += int(np.prod(out_shape)) * kh * kw * cin_per_group
            elif kind == "Conv2DTranspose":
                kh, kw, cout, _ = layer.kernel.shape  # kernel [kh, kw, out, in]: every input pixel is spread
                counts["linear"] += int(np.prod(inputs.shape)) * kh * kw * cout
            elif kind == "Dense":
                counts["linear"] += int(np.prod(inputs.shape[:-1])) * int(np.prod(layer.kernel.shape))
            elif kind == "PConv2D":
                features = outputs[0]
                kh, kw, cin, cout = layer.kernel.shape
                positions = int(np.prod(features.shape[:3]))
                counts["linear"] += positions * kh * kw * cin * (cout + 1)  # + the mask-sum convolution
            elif kind == "ContextualAttention":
                batch, fh, fw, channels = inputs[0].shape
                cells = (fh // layer.rate) * (fw // layer.rate)
                per_pair = layer.ksize ** 2 * channels + layer._paste_kernel ** 2 * channels
                counts["quadratic"] += batch * cells * cells * per_pair
            elif kind == "AttentionTransfer":
                feature, attention = inputs
                batch, fh, fw, channels = feature.shape
                cells = attention.shape[-1]
                cell_pixels = fh * fw // cells
                counts["quadratic"] += 4 * batch * cells * cells * cell_pixels * channels  # 2r x 2r patches
            return outputs

        layer.call = call
        originals.append(layer)

    for layer in generator._flatten_layers(include_self=False, recursive=True):
        kind = type(layer).__name__
        if kind in ("Conv2D", "Conv2DTranspose", "Dense", "PConv2D", "ContextualAttention", "AttentionTransfer"):
            record(layer, kind)
    try:
        generator(tf.zeros([1, height, width, 3]), tf.zeros([1, height, width, 1]), training=False)
    finally:
        for layer in originals:
            del layer.call  # the class method again
    return counts


def run_one(model: str, height: int, width: int, repeats: int) -> dict:
    """Runs in the child process: builds the model, measures, returns one result row."""
    import numpy as np

    from tfinpaint.inference.api import Inpainter, build_generator

    generator = build_generator(model, {})
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    hole = np.zeros((height, width), np.float32)
    hole[height // 4:height // 4 + height // 2, width // 4:width // 4 + width // 2] = 1.0
    high_res = generator.default_hd_strategy == "cra" and max(height, width) > generator.working_size
    inpainter = Inpainter(generator, model, max_pixels=None if high_res else height * width)
    rss_before_mb = _rss_mb("VmRSS")
    start = time.perf_counter()
    inpainter(image, hole)  # warm-up: traces the graph
    first_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        inpainter(image, hole)
        times.append(time.perf_counter() - start)
    latency = float(np.median(times)) if times else first_s
    peak_mb = _rss_mb("VmHWM")  # read before the MAC count below adds its own allocations

    counts = count_macs(generator, COUNT_SIDE, COUNT_SIDE)
    if high_res:
        from tfinpaint.models.cra import ATTENTION_CELL, working_shape

        net_h, net_w = working_shape(height, width, generator.working_size)
        cells = (net_h // ATTENTION_CELL) * (net_w // ATTENTION_CELL)
        side = max(-(-height // (net_h // ATTENTION_CELL)), -(-width // (net_w // ATTENTION_CELL)))
        extra = 3 * cells * cells * side * side  # residual aggregation, one colour channel at a time
        note = f"network at {net_w}x{net_h} + residual aggregation ({side}px cells)"
    else:
        factor = inpainter.size_factor
        net_h, net_w = -(-height // factor) * factor, -(-width // factor) * factor
        extra, note = 0, ""
    scale = (net_h * net_w) / float(COUNT_SIDE * COUNT_SIDE)
    macs = counts["linear"] * scale + counts["quadratic"] * scale ** 2 + extra
    return {"model": model, "size": f"{width}x{height}", "latency_s": latency, "first_run_s": first_s,
            "runs": len(times), "peak_rss_mb": peak_mb, "rss_before_mb": rss_before_mb, "gmacs": macs / 1e9,
            "attention_share": (counts["quadratic"] * scale ** 2 + extra) / macs,
            "gflops_per_s": 2 * macs / 1e9 / latency, "note": note}


def machine_throughput() -> dict:
    """Best-of-10 GFLOP/s of a float32 2048^3 matmul and of a 3x3 conv (1 x 256 x 256 x 64 -> 64) here (best of
    several runs: on a shared machine other processes slow single runs down)."""
    import tensorflow as tf

    def best_of(fn, flops, runs=10):
        fn().numpy()
        best = float("inf")
        for _ in range(runs):
            start = time.perf_counter()
            fn().numpy()
            best = min(best, time.perf_counter() - start)
        return flops / best / 1e9

    a = tf.random.normal([2048, 2048])
    b = tf.random.normal([2048, 2048])
    x = tf.random.normal([1, 256, 256, 64])
    k = tf.random.normal([3, 3, 64, 64])
    return {"matmul_gflops_per_s": best_of(tf.function(lambda: tf.matmul(a, b), autograph=False), 2 * 2048 ** 3),
            "conv_gflops_per_s": best_of(tf.function(lambda: tf.nn.conv2d(x, k, 1, "SAME"), autograph=False),
                                         2 * 256 * 256 * 64 * 64 * 9)}


def _describe(throughput: dict) -> str:
    return (f"float32 matmul {throughput['matmul_gflops_per_s']:.1f} GFLOP/s, "
            f"conv3x3 {throughput['conv_gflops_per_s']:.1f} GFLOP/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_SIZES))
    parser.add_argument("--sizes", default=None, help="comma-separated S or WxH (default: per model)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after the warm-up")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "HEIGHT", "WIDTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, height, width = args.child[0], int(args.child[1]), int(args.child[2])
        print(json.dumps(run_one(model, height, width, args.repeats)))
        return
    with open("/proc/loadavg", encoding="ascii") as handle:
        load = handle.read().split()[:3]
    throughput = machine_throughput()
    print(f"machine: {os.cpu_count()} CPU cores (load average {' '.join(load)} at start); {_describe(throughput)}\n")
    header = ("| model | size (WxH) | latency (s) | first run (s) | peak RSS (MB) | RSS before (MB) | GMACs | "
              "attention share | GFLOP/s | % of conv peak | note |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1), flush=True)
    rows = []
    for model in args.models.split(","):
        for size in (args.sizes.split(",") if args.sizes else DEFAULT_SIZES[model]):
            height, width = parse_size(size)
            command = [sys.executable, os.path.abspath(__file__), "--child", model, str(height), str(width),
                       "--repeats", str(args.repeats)]
            path = REPO + os.pathsep + os.environ.get("PYTHONPATH", "")
            child = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path})
            if child.returncode != 0:
                reason = (child.stderr.strip().splitlines() or [f"exit code {child.returncode}"])[-1]
                print(f"| {model} | {width}x{height} | failed (exit {child.returncode}): {reason} |", flush=True)
                rows.append({"model": model, "size": f"{width}x{height}", "failed": reason})
                continue
            row = json.loads(child.stdout.strip().splitlines()[-1])
            rows.append(row)
            share = 100 * row["gflops_per_s"] / throughput["conv_gflops_per_s"]
            print(f"| {model} | {row['size']} | {row['latency_s']:.2f} | {row['first_run_s']:.2f} | "
                  f"{row['peak_rss_mb']:.0f} | {row['rss_before_mb']:.0f} | {row['gmacs']:.1f} | "
                  f"{100 * row['attention_share']:.0f}% | {row['gflops_per_s']:.1f} | {share:.0f}% | {row['note']} |",
                  flush=True)
    # Measured again at the end: a busy machine at the start would otherwise understate its throughput.
    at_end = machine_throughput()
    with open("/proc/loadavg", encoding="ascii") as handle:
        load_end = handle.read().split()[:3]
    print(f"\nat the end (load average {' '.join(load_end)}): {_describe(at_end)}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"throughput": throughput, "throughput_at_end": at_end, "load_average": load,
                       "load_average_at_end": load_end, "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
