"""The official GLCIC completion network (satoshiiizuka/siggraph2017_inpainting, Torch7 ``.t7``) -> tfinpaint.

The file holds a table ``{model = nn.Sequential or nn.gModule, mean = 3 RGB values in [0, 1]}``. Its modules are
walked in order and checked against tfinpaint's layer order (conv -> batch norm -> ReLU per layer, a final conv
and sigmoid) before any weight is taken: 4 input planes, symmetric padding ``(k - 1) / 2 * dilation``, stride and
dilation equal, transposed convs without ``adj``. Layouts: ``SpatialConvolution`` ``[O, I, kH, kW]`` (MM variants
may store ``[O, I * kH * kW]``) -> Keras ``[kH, kW, I, O]``; ``SpatialFullConvolution`` ``[I, O, kH, kW]`` ->
``[kH, kW, O, I]``; batch norm ``running_var`` (older files: ``running_std``, the running inverse std).
"""
from __future__ import annotations

import keras
import numpy as np

from tfinpaint.convert.common import ConvertError, Target
from tfinpaint.convert.sources import TensorSource

_CONTAINERS = ("nn.Sequential", "nn.gModule")
_CONV = ("nn.SpatialConvolution", "nn.SpatialConvolutionMM", "nn.SpatialDilatedConvolution",
         "cudnn.SpatialConvolution", "cudnn.SpatialDilatedConvolution")
_FULL_CONV = ("nn.SpatialFullConvolution", "cudnn.SpatialFullConvolution")
_BATCH_NORM = ("nn.SpatialBatchNormalization", "cudnn.SpatialBatchNormalization")
_RELU = ("nn.ReLU", "cudnn.ReLU")
_SIGMOID = ("nn.Sigmoid", "cudnn.Sigmoid")
_SKIPPED = ("nn.Identity",)


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _class_name(obj) -> str:
    typename = getattr(obj, "torch_typename", None)
    return _text(typename()) if callable(typename) else type(obj).__name__


def _field(obj, key):
    """A field of a torchfile object or table, whichever of str / bytes keys it was stored with."""
    table = obj if isinstance(obj, dict) else getattr(obj, "_obj", None)
    if not isinstance(table, dict):
        return None
    for candidate in (key, key.encode("utf-8")):
        if candidate in table:
            return table[candidate]
    return None


def _leaves(module, src, out):
    name = _class_name(module)
    if name in _CONTAINERS:
        children = _field(module, "modules")
        if children is None:  # a gModule without a `modules` list: its nodes in forward order
            nodes = _field(module, "forwardnodes") or []
            children = [_field(_field(node, "data"), "module") for node in nodes]
        for child in children:
            if child is not None:
                _leaves(child, src, out)
    elif name in _SKIPPED:
        pass
    elif name in _CONV + _FULL_CONV + _BATCH_NORM + _RELU + _SIGMOID:
        out.append(module)
    else:
        raise ConvertError(f"{src}: unexpected module {name} in the model (tfinpaint's GLCIC holds only "
                           "convolutions, batch norm, ReLU and a final sigmoid)")
    return out


def _number(obj, key, default=None):
    value = _field(obj, key)
    return default if value is None else value


def _check(condition, src, index, message):
    if not condition:
        raise ConvertError(f"{src}: module {index + 1}: {message}")


def _expected_sequence(generator):
    """tfinpaint's completion network as (kind, keras layer) pairs, kinds "conv", "deconv", "bn", "relu"."""
    sequence = []
    for layer in generator.body.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            sequence.append(("deconv", layer))
        elif isinstance(layer, keras.layers.Conv2D):
            sequence.append(("conv", layer))
        elif isinstance(layer, keras.layers.BatchNormalization):
            sequence.append(("bn", layer))
        elif isinstance(layer, keras.layers.ReLU):
            sequence.append(("relu", layer))
    sequence.append(("sigmoid", None))
    return sequence


_KIND_CLASSES = {"conv": _CONV, "deconv": _FULL_CONV, "bn": _BATCH_NORM, "relu": _RELU, "sigmoid": _SIGMOID}
_KIND_WORDS = {"conv": "a convolution", "deconv": "a transposed convolution", "bn": "batch norm",
               "relu": "ReLU", "sigmoid": "the output sigmoid"}


def read_mean(root, src) -> list:
    mean = _field(root, "mean")
    if mean is None:
        raise ConvertError(f"{src}: no 'mean' entry (expected the official table {{model, mean}})")
    values = np.asarray(mean, dtype=np.float64).reshape(-1)
    if values.size != 3 or not np.all(np.isfinite(values)):
        raise ConvertError(f"{src}: 'mean' must hold 3 finite values (R, G, B), got {values.size}")
    return [float(value) for value in values]


def targets_and_source(root, generator, src):
    """Walks the file's model against ``generator`` (a built tfinpaint GLCIC generator); returns
    ``(targets, source)`` for ``common.collect``: names ``"<module number>:<class>.<field>"``."""
    model = _field(root, "model")
    if model is None:
        raise ConvertError(f"{src}: no 'model' entry (expected the official table {{model, mean}})")
    leaves = _leaves(model, src, [])
    expected = _expected_sequence(generator)
    tensors, targets = {}, {}

    def add(index, module, field, array, variable, transform=None):
        name = f"{index + 1}:{_class_name(module)}.{field}"
        tensors[name] = np.asarray(array)
        targets[name] = Target(variable, transform)

    for index, (kind, layer) in enumerate(expected):
        if index >= len(leaves):
            raise ConvertError(f"{src}: the model ends after {len(leaves)} modules; expected "
                               f"{_KIND_WORDS[kind]} next ({len(expected)} modules in all)")
        module = leaves[index]
        name = _class_name(module)
        if name not in _KIND_CLASSES[kind]:
            hint = ""
            if kind == "bn" and name in _RELU:
                hint = " (ReLU before batch norm: tfinpaint's GLCIC is conv -> batch norm -> ReLU)"
            raise ConvertError(f"{src}: module {index + 1} is {name}, expected {_KIND_WORDS[kind]}{hint}")
        if kind in ("conv", "deconv"):
            _add_conv(src, index, module, kind, layer, add)
        elif kind == "bn":
            _add_batch_norm(src, index, module, layer, add)
    if len(leaves) > len(expected):
        raise ConvertError(f"{src}: module {len(expected) + 1} ({_class_name(leaves[len(expected)])}) follows "
                           "the output sigmoid; tfinpaint's GLCIC ends there")
    source = TensorSource(src, "t7", {k: v.shape for k, v in tensors.items()},
                          {k: np.float32 for k in tensors}, lambda key: tensors[key].astype(np.float32))
    return targets, source


def _add_conv(src, index, module, kind, layer, add):
    k_w, k_h = _number(module, "kW"), _number(module, "kH")
    d_w, d_h = _number(module, "dW", 1), _number(module, "dH", 1)
    pad_w, pad_h = _number(module, "padW", 0), _number(module, "padH", 0)
    n_in, n_out = _number(module, "nInputPlane"), _number(module, "nOutputPlane")
    _check(None not in (k_w, k_h, n_in, n_out), src, index, "missing kW/kH/nInputPlane/nOutputPlane")
    _check(k_w == k_h and (d_w, d_h) == tuple(layer.strides), src, index,
           f"kernel {k_h}x{k_w} stride {d_h}x{d_w}, expected a square kernel with stride {tuple(layer.strides)}")
    _check((k_h, k_w) == tuple(layer.kernel_size), src, index,
           f"kernel {k_h}x{k_w}, expected {tuple(layer.kernel_size)}")
    if index == 0:
        _check(n_in == 4, src, index, f"{n_in} input planes, expected 4 (RGB + mask)")
    if kind == "conv":
        dil_w, dil_h = _number(module, "dilationW", 1), _number(module, "dilationH", 1)
        _check((dil_h, dil_w) == tuple(layer.dilation_rate), src, index,
               f"dilation {dil_h}x{dil_w}, expected {tuple(layer.dilation_rate)}")
        pad = (k_w - 1) // 2 * dil_w
        _check((pad_w, pad_h) == (pad, pad), src, index, f"padding {pad_h}x{pad_w}, expected symmetric {pad}")
        weight = np.asarray(_field(module, "weight"), dtype=np.float32)
        if weight.ndim == 2:  # SpatialConvolutionMM: [O, I * kH * kW]
            _check(weight.size == n_out * n_in * k_h * k_w, src, index, f"weight of shape {list(weight.shape)}")
            weight = weight.reshape(n_out, n_in, k_h, k_w)
        add(index, module, "weight", weight, layer.kernel, lambda value: np.transpose(value, (2, 3, 1, 0)))
    else:
        adj = (_number(module, "adjW", 0), _number(module, "adjH", 0))
        _check(adj == (0, 0), src, index, f"adjW/adjH = {adj}, expected 0")
        _check((pad_w, pad_h) == ((k_w - d_w) // 2,) * 2, src, index,
               f"padding {pad_h}x{pad_w}, expected {(k_w - d_w) // 2} (output twice the input)")
        weight = np.asarray(_field(module, "weight"), dtype=np.float32)  # [I, O, kH, kW]
        add(index, module, "weight", weight, layer.kernel, lambda value: np.transpose(value, (2, 3, 1, 0)))
    bias = _field(module, "bias")
    _check(bias is not None, src, index, "no bias (tfinpaint's convolutions have one)")
    add(index, module, "bias", bias, layer.bias)


def _add_batch_norm(src, index, module, layer, add):
    weight, bias = _field(module, "weight"), _field(module, "bias")
    _check(weight is not None and bias is not None, src, index, "batch norm without affine weight and bias")
    mean = _field(module, "running_mean")
    eps = float(_number(module, "eps", 1e-5))
    variance = _field(module, "running_var")
    if variance is None:
        inverse_std = _field(module, "running_std")
        _check(inverse_std is not None and mean is not None, src, index, "batch norm without running statistics")
        variance = 1.0 / np.square(np.asarray(inverse_std, dtype=np.float64)) - eps
    _check(mean is not None, src, index, "batch norm without running_mean")
    # Keras adds its own epsilon: fold the file's so that variance + epsilon is unchanged.
    variance = np.asarray(variance, dtype=np.float64) + eps - layer.epsilon
    add(index, module, "weight", weight, layer.gamma)
    add(index, module, "bias", bias, layer.beta)
    add(index, module, "running_mean", mean, layer.moving_mean)
    add(index, module, "running_var", variance, layer.moving_variance)
