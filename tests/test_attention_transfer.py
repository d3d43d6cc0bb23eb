"""AttentionTransfer (HiFill ATM) and aggregate_residual (CRA) against NumPy references
(docs/architectures.md §5.6, §5.7)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinpaint.layers.attention_transfer import AttentionTransfer, aggregate_residual
from tfinpaint.layers.contextual_attention import ContextualAttention


def reference_transfer(feature, attention, grid_h, grid_w):
    """conv2d_transpose(attention, 2r x 2r SAME patches, stride r) written as loops: patch of source q is
    feature[qy*r - r//2 + dy, qx*r - r//2 + dx]; query p adds A[p, q] * patch_q at the same offsets."""
    feature = np.asarray(feature, np.float64)
    attention = np.asarray(attention, np.float64)
    batch, height, width, channels = feature.shape
    r = height // grid_h
    k, before = 2 * r, r // 2
    out = np.zeros_like(feature)
    for i in range(batch):
        for p in range(grid_h * grid_w):
            for q in range(grid_h * grid_w):
                weight = attention[i, p, q]
                for dy in range(k):
                    for dx in range(k):
                        sy, sx = (q // grid_w) * r - before + dy, (q % grid_w) * r - before + dx
                        ty, tx = (p // grid_w) * r - before + dy, (p % grid_w) * r - before + dx
                        if 0 <= sy < height and 0 <= sx < width and 0 <= ty < height and 0 <= tx < width:
                            out[i, ty, tx] += weight * feature[i, sy, sx]
    return out


def reference_aggregate(residual, attention, grid_h, grid_w):
    residual = np.asarray(residual, np.float64)
    attention = np.asarray(attention, np.float64)
    batch, height, width, _ = residual.shape
    ch, cw = height // grid_h, width // grid_w
    out = np.zeros_like(residual)
    for i in range(batch):
        for p in range(grid_h * grid_w):
            py, px = p // grid_w, p % grid_w
            for q in range(grid_h * grid_w):
                qy, qx = q // grid_w, q % grid_w
                out[i, py * ch:(py + 1) * ch, px * cw:(px + 1) * cw] += (
                    attention[i, p, q] * residual[i, qy * ch:(qy + 1) * ch, qx * cw:(qx + 1) * cw]
                )
    return out


def _attention(rng, batch, cells):
    weights = rng.random((batch, cells, cells))
    weights[weights < 0.6] = 0.0  # sparse rows, like a masked softmax
    return (weights / np.maximum(weights.sum(-1, keepdims=True), 1e-9)).astype(np.float32)


@pytest.mark.parametrize("grid, r", [((3, 4), 1), ((3, 4), 2), ((2, 3), 4), ((2, 2), 3)])
def test_attention_transfer_matches_reference(grid, r):
    rng = np.random.default_rng(0)
    grid_h, grid_w = grid
    feature = rng.normal(size=(2, grid_h * r, grid_w * r, 3)).astype(np.float32)
    attention = _attention(rng, 2, grid_h * grid_w)
    out = AttentionTransfer()([feature, attention])
    np.testing.assert_allclose(out.numpy(), reference_transfer(feature, attention, grid_h, grid_w), atol=1e-5)


def test_attention_transfer_is_the_deepfill_paste_times_four():
    # DeepFill's contextual attention pastes 2r x 2r patches of b with stride r and divides by 4: the same
    # transfer applied to b with the layer's own attention matrix.
    rng = np.random.default_rng(1)
    f = (0.5 * rng.normal(size=(2, 12, 16, 3))).astype(np.float32)
    b = (0.5 * rng.normal(size=(2, 12, 16, 3))).astype(np.float32)
    mask = (rng.random((2, 12, 16, 1)) < 0.1).astype(np.float32)
    y, attention = ContextualAttention(return_attention=True)([f, b, mask])
    np.testing.assert_allclose(AttentionTransfer()([b, attention]).numpy() / 4.0, y.numpy(), atol=1e-5)


def test_one_hot_attention_copies_patches():
    # Query cell 0 takes all of source cell 5 = (row 1, col 2) on a 3 x 3 grid with r = 2 (4 x 4 patches, one
    # pixel of SAME padding before). Source patch: rows 1..4, cols 3..6 (col 6 is padding); pasted at rows -1..2,
    # cols -1..2, so out[0:3, 0:3] = feature[2:5, 4:7] with the padding column as zeros; nothing else is written.
    feature = np.arange(36, dtype=np.float32).reshape(1, 6, 6, 1)
    attention = np.zeros((1, 9, 9), np.float32)
    attention[0, 0, 5] = 1.0
    out = AttentionTransfer()([feature, attention]).numpy()[0, :, :, 0]
    expected = np.zeros((6, 6), np.float32)
    expected[0:3, 0:2] = feature[0, 2:5, 4:6, 0]
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("grid_shape", [None, (2, 3)])
def test_aggregate_residual_matches_reference(grid_shape):
    rng = np.random.default_rng(2)
    if grid_shape is None:  # square 3 x 3 cells on a 3 x 4 grid
        grid_h, grid_w, height, width = 3, 4, 9, 12
    else:  # rectangular 4 x 2 cells
        grid_h, grid_w, height, width = 2, 3, 8, 6
    residual = rng.normal(size=(2, height, width, 3)).astype(np.float32)
    attention = _attention(rng, 2, grid_h * grid_w)
    out = aggregate_residual(residual, attention, grid_shape=grid_shape)
    np.testing.assert_allclose(out.numpy(), reference_aggregate(residual, attention, grid_h, grid_w), atol=1e-5)


def test_identity_attention_keeps_the_residual():
    residual = np.random.default_rng(3).normal(size=(1, 16, 8, 3)).astype(np.float32)
    out = aggregate_residual(residual, np.eye(8, dtype=np.float32)[None])  # 4 x 2 grid of 4 x 4 cells
    np.testing.assert_allclose(out.numpy(), residual, atol=1e-6)


def test_dynamic_shapes_in_graph_mode():
    rng = np.random.default_rng(4)
    layer = AttentionTransfer()
    run = tf.function(
        lambda x, a: (layer([x, a]), aggregate_residual(x, a)),
        input_signature=[tf.TensorSpec([None, None, None, 2]), tf.TensorSpec([None, None, None])],
    )
    for (grid_h, grid_w), r in (((2, 3), 2), ((3, 2), 4)):
        feature = rng.normal(size=(1, grid_h * r, grid_w * r, 2)).astype(np.float32)
        attention = _attention(rng, 1, grid_h * grid_w)
        transferred, aggregated = run(feature, attention)
        np.testing.assert_allclose(
            transferred.numpy(), reference_transfer(feature, attention, grid_h, grid_w), atol=1e-5
        )
        np.testing.assert_allclose(
            aggregated.numpy(), reference_aggregate(feature, attention, grid_h, grid_w), atol=1e-5
        )


def test_get_config_keras_round_trip_and_bfloat16(tmp_path):
    layer = AttentionTransfer(name="atm")
    assert AttentionTransfer.from_config(layer.get_config()).get_config() == layer.get_config()
    x_in = keras.Input((None, None, 3))
    a_in = keras.Input((None, None))
    model = keras.Model([x_in, a_in], keras.layers.Conv2D(2, 3, padding="same")(layer([x_in, a_in])))
    path = tmp_path / "atm.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    rng = np.random.default_rng(5)
    feature = rng.normal(size=(2, 8, 12, 3)).astype(np.float32)
    attention = _attention(rng, 2, 24)
    np.testing.assert_allclose(restored([feature, attention]).numpy(), model([feature, attention]).numpy(), atol=1e-6)

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    out = AttentionTransfer()([feature, attention])
    assert out.dtype == tf.bfloat16
    reference = reference_transfer(
        tf.cast(tf.cast(feature, tf.bfloat16), tf.float32).numpy(),
        tf.cast(tf.cast(attention, tf.bfloat16), tf.float32).numpy(),
        4, 6,
    )
    np.testing.assert_allclose(tf.cast(out, tf.float32).numpy(), reference, atol=3e-2)


def test_clear_errors_on_bad_inputs():
    feature = np.zeros((1, 8, 8, 3), np.float32)
    attention = np.zeros((1, 16, 16), np.float32)
    with pytest.raises(ValueError, match="rank 4"):
        AttentionTransfer()([feature[0], attention])
    with pytest.raises(ValueError, match="rank 3"):
        AttentionTransfer()([feature, attention[0]])
    with pytest.raises(ValueError, match="square"):
        aggregate_residual(feature, np.zeros((1, 16, 15), np.float32))
    with pytest.raises(ValueError, match=r"\[feature, attention\]"):
        AttentionTransfer()([feature])
    with pytest.raises(tf.errors.InvalidArgumentError, match="equal size"):
        AttentionTransfer()([np.zeros((1, 8, 10, 3), np.float32), attention])
    with pytest.raises(tf.errors.InvalidArgumentError, match="equal size"):
        aggregate_residual(feature, np.zeros((1, 12, 12), np.float32))
