"""Time and peak memory of ContextualAttention alone, at the feature sizes DeepFill v2 sees for 256..2048 inputs.

The layer runs on f = b = [1, H/4, W/4, 96] (DeepFill v2's attention branch; the mask is a centred square hole of
a quarter of the area), compiled with tf.function over dynamic H/W. Each configuration runs in a fresh subprocess
so that its peak resident memory (``ru_maxrss``) is its own; the baseline is the same process just before the
first call (TensorFlow, the inputs and the traced function already in memory).

    python benchmarks/contextual_attention.py                    # 256, 512, 1024 inputs
    python benchmarks/contextual_attention.py --sizes 256 2048 --budgets 256 64 --unchunked_max 512

"unchunked" uses a budget large enough for the whole score matrix (run only up to --unchunked_max, since the
N x N matrix needs 4 * N^2 bytes times the temporaries: 1 GiB for N = 16384 at a 1024 input).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

CHANNELS = 96


def _child(size, budget_mb, repeats):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    from tfinpaint.layers.contextual_attention import ContextualAttention

    side = size // 4
    rng = np.random.default_rng(0)
    f = tf.constant(rng.normal(size=(1, side, side, CHANNELS)).astype(np.float32))
    mask = np.zeros((1, side, side, 1), np.float32)
    mask[:, side // 4: 3 * side // 4, side // 4: 3 * side // 4] = 1.0
    mask = tf.constant(mask)
    layer = ContextualAttention(memory_budget_mb=budget_mb)
    spec = tf.TensorSpec([None, None, None, CHANNELS], tf.float32)
    run = tf.function(
        lambda x, m: layer([x, x, m]), input_signature=[spec, tf.TensorSpec([None, None, None, 1], tf.float32)]
    )
    run.get_concrete_function()
    baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(f, mask).numpy()
        times.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    cells = (side // 2) ** 2
    chunk = int(layer._chunk_size(tf.constant(cells)))
    print(json.dumps(dict(size=size, feature=side, cells=cells, budget_mb=budget_mb, chunk=min(chunk, cells),
                          seconds=min(times), baseline_mb=baseline_mb, peak_mb=peak_mb)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024], help="input sizes (DeepFill)")
    parser.add_argument("--budgets", type=float, nargs="+", default=[256.0], help="memory_budget_mb values")
    parser.add_argument("--unchunked_max", type=int, default=512, help="largest input size run unchunked")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per configuration (min reported)")
    parser.add_argument("--child", nargs=3, metavar=("SIZE", "BUDGET", "REPEATS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(int(args.child[0]), float(args.child[1]), int(args.child[2]))
        return

    print(f"{'input':>6} {'f (HxWx96)':>11} {'N cells':>8} {'path':>16} {'chunk':>6} {'time s':>7} "
          f"{'baseline MB':>11} {'peak MB':>8} {'layer MB':>8}")
    for size in args.sizes:
        configs = [(f"chunked {b:g} MB", b) for b in args.budgets]
        if size <= args.unchunked_max:
            configs.append(("unchunked", 1e9))
        for label, budget in configs:
            command = [sys.executable, os.path.abspath(__file__), "--child", str(size), str(budget), str(args.repeats)]
            env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            result = subprocess.run(command, capture_output=True, text=True, env=env)
            lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
            if result.returncode or not lines:
                print(f"{size:>6} {label:>16}: failed ({result.stderr.strip().splitlines()[-1:]})")
                continue
            r = json.loads(lines[-1])
            print(f"{size:>6} {r['feature']:>5}x{r['feature']:<5} {r['cells']:>8} {label:>16} {r['chunk']:>6} "
                  f"{r['seconds']:>7.2f} {r['baseline_mb']:>11.0f} {r['peak_mb']:>8.0f} "
                  f"{r['peak_mb'] - r['baseline_mb']:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
