"""ContextualAttention against a NumPy reference written from the spec (docs/architectures.md §1.4, §5.5, §6.3)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinpaint.layers.contextual_attention import ContextualAttention, flow_to_rgb


# ----------------------------------------------------------------------------------------------------------------
# NumPy reference: one sample at a time, the score matrix materialised, the fuse done with the official
# reshape / transpose trick on the full (N x N) matrix, the paste with explicit loops. float64 inside.
def _nearest_indices(size_in, size_out, align_corners):
    if not align_corners:
        return np.arange(size_out) * (size_in // size_out)
    # TF1 resize_nearest_neighbor(align_corners=True): float32 scale, round half away from zero, clamp.
    scale = np.float32(size_in - 1) / np.float32(size_out - 1) if size_out > 1 else np.float32(size_in / size_out)
    products = (np.arange(size_out).astype(np.float32) * scale).astype(np.float64)
    return np.minimum(np.floor(products + 0.5).astype(int), size_in - 1)


def _resize_nearest(x, out_h, out_w, align_corners):
    rows = _nearest_indices(x.shape[0], out_h, align_corners)
    cols = _nearest_indices(x.shape[1], out_w, align_corners)
    return x[rows][:, cols]


def _patch(x, top, left, k):
    """k x k window of x [H, W, C] starting at (top, left), zeros outside."""
    out = np.zeros((k, k, x.shape[2]))
    for dy in range(k):
        for dx in range(k):
            yy, xx = top + dy, left + dx
            if 0 <= yy < x.shape[0] and 0 <= xx < x.shape[1]:
                out[dy, dx] = x[yy, xx]
    return out


def _diagonal_sum(matrix, fuse_k):
    """conv2d of the matrix with a fuse_k x fuse_k identity kernel, TF SAME padding."""
    before = (fuse_k - 1) // 2
    n_rows, n_cols = matrix.shape
    out = np.zeros_like(matrix)
    for a in range(fuse_k):
        d = a - before
        for i in range(n_rows):
            for j in range(n_cols):
                if 0 <= i + d < n_rows and 0 <= j + d < n_cols:
                    out[i, j] += matrix[i + d, j + d]
    return out


def reference_contextual_attention(f, b, mask, mode="deepfill", rate=2, ksize=3, fuse_k=3, fuse=True, scale=10.0,
                                   align_corners=None):
    f = np.asarray(f, np.float64)
    b = np.asarray(b, np.float64)
    mask = np.asarray(mask, np.float64)
    if align_corners is None:
        align_corners = mode == "deepfill"
    kp = 2 * rate if mode == "deepfill" else 2 * rate - 1
    floor = 1e-4 if mode == "deepfill" else 1e-8
    batch, height, width, channels = f.shape
    gh, gw = height // rate, width // rate
    n = gh * gw
    half = (ksize - 1) // 2
    pad_top = max(kp - rate, 0) // 2
    ys, attentions = [], []
    for i in range(batch):
        f_small = _resize_nearest(f[i], gh, gw, align_corners)
        b_small = _resize_nearest(b[i], gh, gw, align_corners)
        keys = np.stack([_patch(b_small, q // gw - half, q % gw - half, ksize).ravel() for q in range(n)])
        keys = keys / np.maximum(np.linalg.norm(keys, axis=1, keepdims=True), floor)
        queries = np.stack([_patch(f_small, p // gw - half, p % gw - half, ksize).ravel() for p in range(n)])
        scores = queries @ keys.T
        if fuse:
            scores = _diagonal_sum(scores, fuse_k)
            swapped = scores.reshape(gh, gw, gh, gw).transpose(1, 0, 3, 2).reshape(n, n)
            swapped = _diagonal_sum(swapped, fuse_k)
            scores = swapped.reshape(gw, gh, gw, gh).transpose(1, 0, 3, 2).reshape(n, n)
        if mode == "deepfill":
            m = _resize_nearest(mask[i], height, width, align_corners)
            m = _resize_nearest(m, gh, gw, align_corners)[..., 0]
            valid = np.array([_patch(m[..., None], q // gw - half, q % gw - half, ksize).mean() == 0 for q in range(n)])
        else:
            fh, fw = mask.shape[1] // gh, mask.shape[2] // gw
            cells = mask[i, :, :, 0].reshape(gh, fh, gw, fw).max(axis=(1, 3))
            # ksize x ksize max-pool, SAME (padding ignored), centred on each cell
            top = [max(q // gw - half, 0) for q in range(n)]
            left = [max(q % gw - half, 0) for q in range(n)]
            dilated = np.array([cells[top[q]: q // gw - half + ksize, left[q]: q % gw - half + ksize].max()
                                for q in range(n)])
            valid = 1.0 - dilated
        valid = valid.astype(np.float64)
        logits = scores * valid[None, :] * scale
        weights = np.exp(logits - logits.max(axis=1, keepdims=True))
        weights = weights / weights.sum(axis=1, keepdims=True) * valid[None, :]
        raw = np.stack([_patch(b[i], (q // gw) * rate - pad_top, (q % gw) * rate - pad_top, kp) for q in range(n)])
        out = np.zeros((height, width, channels))
        for p in range(n):
            pasted = np.tensordot(weights[p], raw, axes=1)  # [kp, kp, C]
            for dy in range(kp):
                for dx in range(kp):
                    yy = (p // gw) * rate - pad_top + dy
                    xx = (p % gw) * rate - pad_top + dx
                    if 0 <= yy < height and 0 <= xx < width:
                        out[yy, xx] += pasted[dy, dx]
        ys.append(out / (4.0 if mode == "deepfill" else 1.0))
        attentions.append(weights)
    return np.stack(ys), np.stack(attentions)


# ----------------------------------------------------------------------------------------------------------------
def _masks(kind, batch, height, width, hole_fraction, rng):
    if kind == "random":
        return (rng.random((batch, height, width, 1)) < hole_fraction).astype(np.float32)
    if kind == "all_hole":
        return np.ones((batch, height, width, 1), np.float32)
    if kind == "all_known":
        return np.zeros((batch, height, width, 1), np.float32)
    # per_sample: three different masks in one batch (a box, nothing, a random scatter)
    masks = np.zeros((batch, height, width, 1), np.float32)
    masks[0, height // 4: height // 2, width // 4: width // 2 + 1] = 1.0
    masks[2] = (rng.random((height, width, 1)) < hole_fraction).astype(np.float32)
    return masks


@pytest.mark.parametrize("mode", ["deepfill", "hifill"])
@pytest.mark.parametrize("mask_kind", ["random", "all_hole", "all_known", "per_sample"])
def test_matches_numpy_reference(mode, mask_kind):
    rng = np.random.default_rng(1)
    # Moderate feature norms: with softmax scale 10 the logits stay ~10, so float32 round-off stays < 1e-5.
    f = (0.5 * rng.normal(size=(3, 12, 16, 4))).astype(np.float32)
    b = (0.5 * rng.normal(size=(3, 12, 16, 4))).astype(np.float32)
    # hifill: the mask may be any integer multiple of the 6 x 8 matching grid; use 4x (24 x 32). The hole
    # fractions leave between 8 % and 100 % of the source cells valid.
    if mode == "deepfill":
        mask = _masks(mask_kind, 3, 12, 16, 0.06, rng)
    else:
        mask = _masks(mask_kind, 3, 24, 32, 0.015, rng)
    layer = ContextualAttention(mode=mode, return_attention=True)
    y, attention = layer([f, b, mask])
    y_ref, attention_ref = reference_contextual_attention(f, b, mask, mode=mode)
    np.testing.assert_allclose(attention.numpy(), attention_ref, atol=1e-5)
    np.testing.assert_allclose(y.numpy(), y_ref, atol=1e-5)
    if mask_kind == "all_hole":  # no valid background: nothing to copy from
        np.testing.assert_array_equal(y.numpy(), 0.0)
    if mask_kind == "all_known":  # every source valid: plain softmax rows
        np.testing.assert_allclose(attention.numpy().sum(axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    "options",
    [
        dict(fuse=False),
        dict(fuse_k=5, ksize=5),
        dict(rate=1, align_corners=False),
        dict(mode="deepfill", align_corners=False),
        dict(mode="hifill", align_corners=True, rate=3),
    ],
)
def test_matches_reference_for_other_options(options):
    rng = np.random.default_rng(2)
    f = (0.5 * rng.normal(size=(2, 12, 18, 3))).astype(np.float32)
    b = (0.5 * rng.normal(size=(2, 12, 18, 3))).astype(np.float32)
    mask = (rng.random((2, 12, 18, 1)) < 0.25).astype(np.float32)
    y = ContextualAttention(**options)([f, b, mask])
    reference_keys = ("mode", "rate", "ksize", "fuse_k", "fuse", "align_corners")
    ref_options = {k: v for k, v in options.items() if k in reference_keys}
    y_ref, _ = reference_contextual_attention(f, b, mask, **ref_options)
    np.testing.assert_allclose(y.numpy(), y_ref, atol=1e-5)


@pytest.mark.parametrize("height, width", [(2, 12), (12, 2), (2, 2)])
def test_degenerate_grids_match_reference(height, width):
    # One-row, one-column and one-cell matching grids: every fuse neighbour wraps or falls off the end.
    rng = np.random.default_rng(7)
    f = (0.5 * rng.normal(size=(2, height, width, 3))).astype(np.float32)
    mask = np.zeros((2, height, width, 1), np.float32)
    mask[0, :, : width // 2] = 1.0
    for mode in ("deepfill", "hifill"):
        y = ContextualAttention(mode=mode, query_chunk_size=2)([f, f, mask])
        y_ref, _ = reference_contextual_attention(f, f, mask, mode=mode)
        np.testing.assert_allclose(y.numpy(), y_ref, atol=1e-5)


def test_deepfill_mask_at_other_resolution_is_resized_like_official_resize_mask_like():
    rng = np.random.default_rng(3)
    f = (0.5 * rng.normal(size=(1, 8, 12, 2))).astype(np.float32)
    mask_full = (rng.random((1, 32, 48, 1)) < 0.3).astype(np.float32)
    y = ContextualAttention()([f, f, mask_full])
    y_ref, _ = reference_contextual_attention(f, f, mask_full)
    np.testing.assert_allclose(y.numpy(), y_ref, atol=1e-5)


def _copy_scene():
    """Block-constant (2x2) features; the top-left 12x12 pixels repeat the bottom-right ones, hole at [4:8, 4:8]."""
    rng = np.random.default_rng(4)
    cells = rng.normal(size=(12, 12, 8)).astype(np.float32) * 1.5
    cells[0:6, 0:6] = cells[6:12, 6:12]
    features = np.repeat(np.repeat(cells, 2, axis=0), 2, axis=1)[None]
    mask = np.zeros((1, 24, 24, 1), np.float32)
    mask[0, 4:8, 4:8] = 1.0
    return features, mask


def test_hole_is_copied_from_the_identical_known_patch():
    features, mask = _copy_scene()
    layer = ContextualAttention(return_flow=True, return_attention=True)
    y, flow, attention = layer([features, features, mask])
    # Each hole pixel equals the pixel 12 rows / 12 columns further (6 cells on the matching grid).
    np.testing.assert_allclose(y.numpy()[0, 4:8, 4:8], features[0, 16:20, 16:20], atol=1e-4)
    best = attention.numpy()[0].argmax(axis=1)
    for cy in (2, 3):
        for cx in (2, 3):
            p = cy * 12 + cx
            assert best[p] == (cy + 6) * 12 + cx + 6
            assert attention.numpy()[0, p, best[p]] > 0.999
    # The flow image colour-codes the argmax offsets: the hole shows the (+6, +6) colour.
    cells = np.arange(144)
    offsets = np.stack([best // 12 - cells // 12, best % 12 - cells % 12], -1).reshape(1, 12, 12, 2)
    expected = np.repeat(np.repeat(flow_to_rgb(offsets).numpy(), 2, axis=1), 2, axis=2)
    np.testing.assert_allclose(flow.numpy(), expected, atol=1e-6)
    assert flow.shape == (1, 24, 24, 3) and flow.numpy().min() >= 0.0 and flow.numpy().max() <= 1.0


def test_flow_colours_hand_computed():
    # Zero offset -> white. Straight up (dy=-1, dx=0) at the maximum radius -> wheel entry 27 (cyan-blue
    # ramp, step 2 of 11: G = 255 - floor(255 * 2 / 11) = 209), unattenuated because the radius is 1.
    offsets = np.array([[[[0, 0], [-1, 0]]]], np.float32)
    rgb = flow_to_rgb(offsets).numpy()[0, 0]
    np.testing.assert_allclose(rgb[0], [1.0, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(rgb[1], np.array([0, 209, 255]) / 255.0, atol=1e-6)


def _chunking_inputs():
    rng = np.random.default_rng(5)
    f = (0.5 * rng.normal(size=(2, 10, 14, 3))).astype(np.float32)  # 5 x 7 matching grid, N = 35
    b = (0.5 * rng.normal(size=(2, 10, 14, 3))).astype(np.float32)
    mask = np.zeros((2, 10, 14, 1), np.float32)
    mask[0, 3:8, 4:10] = 1.0
    mask[1] = (rng.random((10, 14, 1)) < 0.4).astype(np.float32)
    return f, b, mask


def _three_input_call(layer):
    """``layer`` as a function of (features, background, mask), the signature tf.function traces."""
    return lambda f_, b_, m_: layer([f_, b_, m_])


@pytest.mark.parametrize("mode", ["deepfill", "hifill"])
def test_chunked_equals_unchunked_in_graph_mode_with_dynamic_shapes(mode):
    f, b, mask = _chunking_inputs()
    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    mask_spec = tf.TensorSpec([None, None, None, 1], tf.float32)
    y_ref, attention_ref = reference_contextual_attention(f, b, mask, mode=mode)
    # None: the whole 35 x 35 matrix at once. 1, 4 (2x2 tiles), 6 (3x2), 9 (3x3), 13 (3x4 -> 12), 20 (4x5), 34:
    # irregular edge tiles and chunk sizes that do not divide N = 35. Graph mode with None dims for three of them
    # (tracing is the slow part), eager for the rest.
    for chunk in (None, 1, 4, 6, 9, 13, 20, 34):
        layer = ContextualAttention(mode=mode, query_chunk_size=chunk, return_flow=True, return_attention=True)
        run = _three_input_call(layer)
        if chunk in (None, 6, 13):
            run = tf.function(run, input_signature=[spec, spec, mask_spec])
        y, flow, attention = (t.numpy() for t in run(f, b, mask))
        np.testing.assert_allclose(y, y_ref, atol=1e-5)
        np.testing.assert_allclose(attention, attention_ref, atol=1e-5)
        if chunk is None:
            flow_whole = flow
        np.testing.assert_allclose(flow, flow_whole, atol=1e-6)


def test_memory_budget_controls_chunking_without_changing_results():
    f, b, mask = _chunking_inputs()
    whole = ContextualAttention()([f, b, mask]).numpy()
    tiny = ContextualAttention(memory_budget_mb=1e-3)([f, b, mask]).numpy()  # a few query cells per chunk
    np.testing.assert_allclose(tiny, whole, atol=1e-5)
    layer = ContextualAttention(memory_budget_mb=1e-3)
    assert int(layer._chunk_size(tf.constant(35))) < 35
    assert int(ContextualAttention()._chunk_size(tf.constant(35))) == 35


def test_gradients_reach_both_inputs_equal_across_chunking_and_are_finite():
    f, b, mask = _chunking_inputs()
    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    mask_spec = tf.TensorSpec([None, None, None, 1], tf.float32)

    def gradients(layer, f_, b_, m_):
        with tf.GradientTape() as tape:
            tape.watch([f_, b_])
            loss = tf.reduce_sum(tf.square(layer([f_, b_, m_])))
        return tape.gradient(loss, [f_, b_])

    whole = gradients(ContextualAttention(), tf.constant(f), tf.constant(b), mask)  # eager, one chunk
    chunked_layer = ContextualAttention(query_chunk_size=6)
    chunked = tf.function(lambda f_, b_, m_: gradients(chunked_layer, f_, b_, m_),
                          input_signature=[spec, spec, mask_spec])(f, b, mask)  # graph, 6 chunks
    for grad_whole, grad_chunked in zip(whole, chunked):
        assert np.all(np.isfinite(grad_whole.numpy())) and np.abs(grad_whole.numpy()).sum() > 0
        np.testing.assert_allclose(grad_chunked.numpy(), grad_whole.numpy(), atol=1e-4)
    zeros = tf.zeros([1, 8, 8, 3])  # all-zero keys: the norm floor must not turn the gradient into NaN
    grad_zero, _ = gradients(chunked_layer, zeros, zeros, mask[:1, :8, :8])
    assert np.all(np.isfinite(grad_zero.numpy()))


def test_get_config_and_keras_round_trip(tmp_path):
    layer = ContextualAttention(mode="hifill", rate=2, memory_budget_mb=64, return_flow=True, query_chunk_size=7)
    clone = ContextualAttention.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()

    f_in = keras.Input((None, None, 4))
    m_in = keras.Input((None, None, 1))
    y, flow = ContextualAttention(return_flow=True, name="ca")([f_in, f_in, m_in])
    model = keras.Model([f_in, m_in], [keras.layers.Conv2D(2, 1)(y), flow])
    path = tmp_path / "ca.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    rng = np.random.default_rng(6)
    f = rng.normal(size=(2, 8, 12, 4)).astype(np.float32)
    mask = (rng.random((2, 8, 12, 1)) < 0.3).astype(np.float32)
    for got, want in zip(restored([f, mask]), model([f, mask])):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-6)
    assert restored.get_layer("ca").get_config() == model.get_layer("ca").get_config()


def test_mixed_bfloat16_policy():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    f, b, mask = _chunking_inputs()
    layer = ContextualAttention(return_flow=True)
    y, flow = layer([f, b, mask])
    assert y.dtype == tf.bfloat16 and flow.dtype == tf.float32
    # Inputs are rounded to bfloat16 by the layer call; scores and softmax then run in float32.
    f16 = tf.cast(tf.cast(f, tf.bfloat16), tf.float32).numpy()
    b16 = tf.cast(tf.cast(b, tf.bfloat16), tf.float32).numpy()
    y_ref, _ = reference_contextual_attention(f16, b16, mask)
    np.testing.assert_allclose(tf.cast(y, tf.float32).numpy(), y_ref, atol=3e-2)


def test_clear_errors_on_bad_inputs():
    layer = ContextualAttention()
    f = np.zeros((1, 8, 8, 3), np.float32)
    mask = np.zeros((1, 8, 8, 1), np.float32)
    with pytest.raises(ValueError, match="rank 4"):
        layer([f[0], f, mask])
    with pytest.raises(ValueError, match="channels differ"):
        layer([f, np.zeros((1, 8, 8, 2), np.float32), mask])
    with pytest.raises(ValueError, match="mask must be rank 4"):
        layer([f, f, mask[0]])
    with pytest.raises(ValueError, match="mask must have 1 channel"):
        layer([f, f, np.zeros((1, 8, 8, 3), np.float32)])
    with pytest.raises(ValueError, match="multiples of rate"):
        layer([np.zeros((1, 7, 8, 3), np.float32)] * 2 + [mask])
    with pytest.raises(ValueError, match="same height and width"):
        layer([f, np.zeros((1, 8, 10, 3), np.float32), mask])
    with pytest.raises(ValueError, match=r"\[f, b, mask\]"):
        layer([f, f])
    with pytest.raises(ValueError, match="mode"):
        ContextualAttention(mode="other")
    with pytest.raises(ValueError, match="stride"):
        ContextualAttention(stride=2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="integer multiple"):
        ContextualAttention(mode="hifill")([f, f, np.zeros((1, 10, 10, 1), np.float32)])
