"""Command-line start-up: TensorFlow's harmless start-up lines are hidden, real warnings and errors are not."""
import os
import subprocess
import sys

from tfinpaint import startup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Lines TensorFlow 2.21 printed here on a CPU-only machine (train.py, infer.py, tfinpaint), copied verbatim.
NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796457317.420314   14541 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. To turn "
    "them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796457317.425616   14541 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.",
    "I0000 00:00:1796457317.544394   14541 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 AVX512_FP16 AVX_VNNI AMX_TILE "
    "AMX_INT8 AMX_BF16 FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.",
    "E0000 00:00:1796457320.799671   14541 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed "
    "call to cuInit: UNKNOWN ERROR (303)",
    "E0000 00:00:1796457326.415005   14541 util.cc:131] oneDNN supports DT_INT32 only on platforms with AVX-512. "
    "Falling back to the default Eigen-based implementation if present.",
    "E0000 00:00:1796457337.446451   14541 meta_optimizer.cc:967] remapper failed: INVALID_ARGUMENT: Mutation::Apply "
    "error: fanout 'gradient_tape/sn_patch_gan_1/leaky_re_lu_11/LeakyRelu/LeakyReluGrad' exist for missing node",
]
REAL = [
    "E0000 00:00:1796457337.446451   14541 cuda_platform.cc:52] failed call to cuInit: CUDA_ERROR_OUT_OF_MEMORY",
    "E0000 00:00:1796457337.446451   14541 meta_optimizer.cc:967] layout failed: INVALID_ARGUMENT: something",
    "W0000 00:00:1796457337.446451   14541 op_kernel.cc:1857] OP_REQUIRES failed at conv_ops.cc: RESOURCE_EXHAUSTED",
    "UserWarning: mask m.png is 10x10, resized to 20x20 (nearest neighbour)",
    "Traceback (most recent call last):",
]


def test_harmless_lines_are_recognised_and_real_ones_are_not():
    assert all(startup.is_harmless(line, no_driver_seen=True) for line in NOISE)
    assert not any(startup.is_harmless(line, no_driver_seen=True) for line in REAL[1:])
    # A cuInit failure is harmless only where TensorFlow found no CUDA driver (no GPU to use).
    assert startup.is_harmless(NOISE[5], no_driver_seen=True) and not startup.is_harmless(NOISE[5], False)
    assert not startup.is_harmless(REAL[0], no_driver_seen=False)


def test_filter_hides_start_up_lines_but_shows_warnings_errors_and_partial_lines():
    script = "\n".join([
        "import os, sys, warnings",
        "from tfinpaint.startup import quiet_tensorflow_start_up",
        "quiet_tensorflow_start_up()",
        "import tensorflow as tf",
        "tf.config.list_physical_devices()",  # CUDA probing happens here
        f"os.write(2, {(NOISE[7] + chr(10)).encode()!r})",
        f"os.write(2, {(REAL[1] + chr(10)).encode()!r})",
        "warnings.warn('a real warning')",
        "tf.get_logger().warning('a tensorflow warning')",
        "sys.stderr.write('no newline at the end')",
        "raise SystemExit('infer: a one-line error')",
    ])
    env = {key: value for key, value in os.environ.items() if key not in ("TF_CPP_MIN_LOG_LEVEL", "TFINPAINT_TF_LOGS")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=env,
                            timeout=300)
    assert result.returncode == 1
    for word in ("absl::InitializeLog", "oneDNN", "cpu_feature_guard", "cuInit", "remapper"):
        assert word not in result.stderr, result.stderr
    for text in ("layout failed", "a real warning", "a tensorflow warning", "no newline at the end",
                 "infer: a one-line error"):
        assert text in result.stderr, result.stderr


def test_train_py_start_up_is_quiet_and_its_error_is_one_line(tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in ("TF_CPP_MIN_LOG_LEVEL", "TFINPAINT_TF_LOGS")}
    missing = str(tmp_path / "missing")
    result = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), "--__flist__", missing,
                             "--max_steps", "1", "--ckpt_dir", str(tmp_path / "ckpt")],
                            capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and missing in lines[0], result.stderr
