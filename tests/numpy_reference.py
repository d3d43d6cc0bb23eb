"""Independent NumPy references for layer tests (written from the formulas, float64 inside).

Shared helper: other layer and model tests may import it (`from tests.numpy_reference import ...`).
"""
import numpy as np


def _pair(value):
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"numpy_reference: expected an int or a pair, got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def tf_same_padding(size, kernel, stride, dilation):
    """(before, after) padding of TF 'SAME': output = ceil(size / stride); the odd pixel goes after."""
    out = -(-size // stride)
    effective_kernel = (kernel - 1) * dilation + 1
    total = max((out - 1) * stride + effective_kernel - size, 0)
    return total // 2, total - total // 2


def conv2d_nhwc(x, kernel, bias=None, stride=1, dilation=1, padding="SAME"):
    """2-D cross-correlation, x [B,H,W,Cin], kernel [kh,kw,Cin,Cout] -> [B,Ho,Wo,Cout] (float64).

    padding: "SAME" (TensorFlow rule, asymmetric when the total padding is odd), "VALID", an int p
    (p zeros on every side) or a pair (ph, pw) (symmetric per axis).
    """
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    if x.ndim != 4 or kernel.ndim != 4 or x.shape[-1] != kernel.shape[2]:
        raise ValueError(f"conv2d_nhwc: bad shapes x={x.shape} kernel={kernel.shape}")
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    kh, kw = kernel.shape[:2]
    _, height, width, _ = x.shape
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "SAME":
            pads_h = tf_same_padding(height, kh, sh, dh)
            pads_w = tf_same_padding(width, kw, sw, dw)
        elif mode == "VALID":
            pads_h = pads_w = (0, 0)
        else:
            raise ValueError(f"conv2d_nhwc: unknown padding {padding!r}")
    else:
        ph, pw = _pair(padding)
        pads_h, pads_w = (ph, ph), (pw, pw)
    xp = np.pad(x, ((0, 0), pads_h, pads_w, (0, 0)))
    out_h = (xp.shape[1] - ((kh - 1) * dh + 1)) // sh + 1
    out_w = (xp.shape[2] - ((kw - 1) * dw + 1)) // sw + 1
    out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[3]))
    for i in range(kh):
        for j in range(kw):
            window = xp[:, i * dh: i * dh + (out_h - 1) * sh + 1: sh, j * dw: j * dw + (out_w - 1) * sw + 1: sw, :]
            out += window @ kernel[i, j]
    if bias is not None:
        out += np.asarray(bias, np.float64)
    return out


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))


def elu(z):
    z = np.asarray(z, np.float64)
    return np.where(z > 0, z, np.expm1(np.minimum(z, 0.0)))


def relu(z):
    return np.maximum(np.asarray(z, np.float64), 0.0)


def upsample_nearest_x2(x):
    """x2 nearest upsampling of [B,H,W,C] with the half-pixel / floor rule: each pixel becomes a 2x2 block."""
    return np.repeat(np.repeat(np.asarray(x, np.float64), 2, axis=1), 2, axis=2)


def upsample_nearest_x2_align_corners(x):
    """x2 nearest with TF1 align_corners=True: out[i] = in[round(i * (H-1) / (2H-1))]."""
    x = np.asarray(x, np.float64)
    height, width = x.shape[1:3]
    rows = np.round(np.arange(2 * height) * (height - 1) / max(2 * height - 1, 1)).astype(int)
    cols = np.round(np.arange(2 * width) * (width - 1) / max(2 * width - 1, 1)).astype(int)
    return x[:, rows][:, :, cols]


def upsample_bilinear_x2_tf1(x):
    """x2 bilinear with TF1 resize_bilinear defaults (align_corners=False, half_pixel_centers=False).

    Source coordinate of output index i is i/2: even outputs copy a pixel, odd outputs average it with
    the next one, and the last odd output repeats the edge pixel (the neighbour index is clamped).
    """
    x = np.asarray(x, np.float64)

    def along(a, axis):
        n = a.shape[axis]
        low = np.arange(2 * n) // 2
        high = np.minimum(low + 1, n - 1)
        frac = (np.arange(2 * n) % 2) * 0.5
        shape = [1] * a.ndim
        shape[axis] = 2 * n
        frac = frac.reshape(shape)
        return np.take(a, low, axis=axis) * (1 - frac) + np.take(a, high, axis=axis) * frac

    return along(along(x, 1), 2)


def tv_over_dilated_hole(image, mask):
    """PConv TV (paper eq. 6): |differences| of adjacent pairs with both pixels inside the 1-pixel (3x3)
    dilation of the hole (mask [B, H, W, 1], > 0.5 = hole), divided by the element count."""
    batch, height, width, channels = image.shape
    hole = mask[..., 0] > 0.5
    region = np.zeros_like(hole)
    for b, i, j in np.argwhere(hole):
        region[b, max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2] = True
    total = 0.0
    for b in range(batch):
        for i in range(height):
            for j in range(width):
                if j + 1 < width and region[b, i, j] and region[b, i, j + 1]:
                    total += np.abs(image[b, i, j + 1] - image[b, i, j]).sum()
                if i + 1 < height and region[b, i, j] and region[b, i + 1, j]:
                    total += np.abs(image[b, i + 1, j] - image[b, i, j]).sum()
    return total / image.size
